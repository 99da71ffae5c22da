"""Linearized training dynamics of wide networks on MSE (neural-tangents conventions).

Loss ``(1/2)(1/N)||f - y||^2`` with ``N = y.size`` (all samples x outputs), time
``t = steps x learning_rate``. With the train NTK ``Theta = V diag(s) V^T``
(n x n, shared by all C outputs) every eigen-residual decays independently:

* gradient flow: ``r_rho(t) = exp(-s_rho t/N) r_rho(0)``;
* gradient descent: ``r_rho(k) = (1 - lr s_rho/N)^k r_rho(0)`` (stable for ``lr < 2N/s_max``);

and a test point moves by ``Theta_xX V diag(phi) V^T (y - f0)`` with
``phi_rho = (1 - decay_rho)/s_rho`` (-> ``t/N``, resp. ``lr k/N``, for ``s_rho = 0``).
Eigenvalues below ``rcond * s_max`` (default ``n eps``) count as exact zeros. At
``t = inf`` zero modes keep their residual and contribute nothing to test points
(pseudo-inverse): for a PSD joint kernel ``Theta_xX`` vanishes on the null space
of ``Theta``, so this is the limit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .validate import check_eigh, clean_gram_evals

__all__ = ["Predictions", "gradient_flow", "gradient_descent", "mse_loss", "ntk_gp"]


@dataclass(frozen=True)
class Predictions:
    """Network outputs along training; T times, n train / m test points, C outputs.

    Attributes
    ----------
    t : ndarray, shape (T,)
        Times ``steps x learning_rate``.
    train : ndarray, shape (T, n, C) (or (T, n) for 1-d ``y``)
    test : ndarray or None, shape (T, m, C) (or (T, m))
    train_loss : ndarray, shape (T,)
        ``(1/2) mean((f_train - y)^2)``.
    """

    t: np.ndarray
    train: np.ndarray
    test: np.ndarray | None
    train_loss: np.ndarray


def mse_loss(f: Any, y: Any) -> np.ndarray | float:
    """``(1/2) mean((f - y)^2)`` over the axes of ``y``; leading extra axes of ``f`` (time) stay.

    References
    ----------
    neural-tangents, ``predict.gradient_descent_mse`` (loss convention).
    """
    ff = np.asarray(f, dtype=np.float64)
    yy = np.asarray(y, dtype=np.float64)
    d = ff - yy
    axes = tuple(range(d.ndim - yy.ndim, d.ndim))
    out = 0.5 * np.mean(d * d, axis=axes)
    return float(out) if np.ndim(out) == 0 else out


def _setup(evals: Any, evecs: Any, y: Any, f0_train: Any, f0_test: Any, k_test_train: Any,
           rcond: float | None) -> dict[str, Any]:
    s, v = check_eigh(evals, evecs)
    s = clean_gram_evals(s, rcond)
    yy = np.asarray(y, dtype=np.float64)
    y2 = yy[:, None] if yy.ndim == 1 else yy
    n = s.size
    if y2.ndim != 2 or y2.shape[0] != n:
        raise ValueError(f"y must have shape ({n},) or ({n}, C), got {yy.shape}")
    f0 = (np.zeros_like(y2) if f0_train is None
          else np.asarray(f0_train, np.float64).reshape(y2.shape))
    out = {"s": s, "v": v, "y": y2, "f0": f0, "r0": v.T @ (f0 - y2), "N": yy.size,
           "squeeze": yy.ndim == 1, "B": None, "f0x": None}
    if k_test_train is not None:
        kx = np.asarray(k_test_train, dtype=np.float64)
        if kx.ndim != 2 or kx.shape[1] != n:
            raise ValueError(f"k_test_train must have shape (m, {n}), got {kx.shape}")
        out["B"] = kx @ v  # shape: (m, n)
        m = kx.shape[0]
        out["f0x"] = (np.zeros((m, y2.shape[1])) if f0_test is None
                      else np.asarray(f0_test, np.float64).reshape(m, y2.shape[1]))
    elif f0_test is not None:
        raise ValueError("f0_test given without k_test_train (the test-train NTK)")
    return out


def _gf_factors(s: np.ndarray, t: np.ndarray, n_total: int) -> tuple[np.ndarray, np.ndarray]:
    """decay exp(-s t/N) and phi = (1 - decay)/s (-> t/N at s = 0), shapes (T, n)."""
    shape = (t.size, s.size)
    pos = np.broadcast_to(s[None, :] > 0, shape)
    fin = np.broadcast_to(np.isfinite(t)[:, None], shape)
    tt = np.broadcast_to(t[:, None], shape)
    inf_t = pos & ~fin  # t = inf on a nonzero mode: fully decayed
    with np.errstate(over="ignore"):  # s t -> inf is harmless: decay 0, phi 1/s below
        x = np.multiply(s[None, :], tt, out=np.zeros(shape), where=pos & fin) / n_total
    decay = np.where(inf_t, 0.0, np.exp(-x))  # zero modes: x = 0, decay 1
    one_minus = np.where(inf_t, 1.0, -np.expm1(-x))  # 1 - decay without cancellation
    # x <= 1: phi = (t/N) (1 - e^-x)/x (-> t/N as x -> 0, also for zero modes, finite t);
    # x > 1 or t = inf: (1 - e^-x)/s directly (safe if s t overflows); zero modes at t = inf: 0
    # (pseudo-inverse, see the module notes).
    ratio = np.divide(one_minus, x, out=np.ones(shape), where=x > 0)
    small = np.multiply(tt / n_total, ratio, out=np.zeros(shape), where=fin & (x <= 1))
    large = np.divide(one_minus, np.broadcast_to(s, shape), out=np.zeros(shape), where=pos)
    phi = np.where(fin & (x <= 1), small, large)
    return decay, phi


def _assemble(st: dict[str, Any], t: np.ndarray, decay: np.ndarray, phi: np.ndarray,
              scalar: bool) -> Predictions:
    v, r0 = st["v"], st["r0"]
    train = st["y"][None] + np.einsum("ik,tkc->tic", v, decay[:, :, None] * r0[None])
    test = None
    if st["B"] is not None:
        test = st["f0x"][None] - np.einsum("ik,tkc->tic", st["B"], phi[:, :, None] * r0[None])
    loss = np.atleast_1d(mse_loss(train, st["y"]))
    if st["squeeze"]:
        train = train[..., 0]
        test = None if test is None else test[..., 0]
    if scalar:
        train = train[0]
        test = None if test is None else test[0]
    return Predictions(t=t, train=train, test=test, train_loss=loss)


def gradient_flow(evals: Any, evecs: Any, y: Any, t: Any, f0_train: Any = None,
                  f0_test: Any = None, k_test_train: Any = None,
                  rcond: float | None = None) -> Predictions:
    """Train/test predictions of the linearized network under gradient flow on MSE.

    Parameters
    ----------
    evals : array_like, shape (n,)
        Eigenvalues of the train NTK ``Theta`` (not divided by n).
    evecs : array_like, shape (n, n)
    y : array_like, shape (n,) or (n, C)
        Train targets; ``N = y.size`` sets the time scale.
    t : float or array_like, shape (T,)
        Times >= 0; ``np.inf`` gives the converged (kernel regression) solution.
    f0_train : array_like, shape like ``y``, optional
        Outputs at initialization (default 0).
    f0_test : array_like, shape (m,) or (m, C), optional
    k_test_train : array_like, shape (m, n), optional
        Test-train NTK ``Theta_xX``; required for test predictions.
    rcond : float, optional
        Relative threshold below which eigenvalues count as zero (default ``n eps``).

    Returns
    -------
    Predictions
        Without the time axis when ``t`` is a scalar.

    References
    ----------
    Lee et al., "Wide neural networks of any depth evolve as linear models under
    gradient descent", NeurIPS 2019 (closed-form linearized dynamics); neural-tangents
    ``predict.gradient_descent_mse``.
    """
    ts = np.asarray(t, dtype=np.float64).reshape(-1)
    if np.any(np.isnan(ts)) or np.any(ts < 0):
        raise ValueError(f"t must be >= 0 (np.inf allowed), got {t!r}")
    st = _setup(evals, evecs, y, f0_train, f0_test, k_test_train, rcond)
    decay, phi = _gf_factors(st["s"], ts, st["N"])
    return _assemble(st, ts, decay, phi, np.ndim(t) == 0)


def gradient_descent(evals: Any, evecs: Any, y: Any, learning_rate: float, steps: Any,
                     f0_train: Any = None, f0_test: Any = None, k_test_train: Any = None,
                     rcond: float | None = None) -> Predictions:
    """Predictions after ``steps`` full-batch GD steps ``f <- f - (lr/N) Theta (f - y)``.

    Parameters are those of :func:`gradient_flow`, with ``learning_rate`` > 0 and
    ``steps`` a non-negative integer or integer array, shape (T,). Raises
    ``ValueError`` unless ``learning_rate < 2 N / s_max`` (divergence otherwise).

    Returns
    -------
    Predictions
        ``t = steps * learning_rate``.

    References
    ----------
    Lee et al., NeurIPS 2019 (discrete-time linearized dynamics); neural-tangents
    ``predict.gradient_descent_mse`` (discrete-time branch).
    """
    ks = np.asarray(steps).reshape(-1)
    if not np.issubdtype(ks.dtype, np.integer) or np.any(ks < 0):
        raise ValueError(f"steps must be non-negative integers, got {steps!r}")
    lr = float(learning_rate)
    st = _setup(evals, evecs, y, f0_train, f0_test, k_test_train, rcond)
    s, n_total = st["s"], st["N"]
    smax = float(s.max()) if s.size else 0.0
    if not lr > 0 or lr * smax >= 2.0 * n_total:
        raise ValueError(f"learning_rate must be in (0, 2N/s_max) = (0, {2 * n_total / smax:.6g}) "
                         f"for stable GD (N = y.size = {n_total}), got {learning_rate!r}")
    u = lr * s / n_total  # shape: (n,)
    kf = ks.astype(np.float64)[:, None]
    pos = np.broadcast_to(s > 0, (ks.size, s.size))
    small = np.broadcast_to(u < 1, pos.shape)
    logb = np.log1p(-np.where(u < 1, u, 0.0))  # log(1 - u) where u < 1 (unused lanes: 0)
    em1 = np.expm1(np.where(small, kf * logb[None, :], 0.0))  # (1-u)^k - 1, accurate for small u
    decay = np.where(small, em1 + 1.0, np.power(1.0 - u[None, :], kf))
    num = np.where(small, -em1, 1.0 - decay)  # 1 - (1-u)^k
    phi = np.divide(num, np.broadcast_to(s, pos.shape), out=np.zeros(pos.shape), where=pos)
    phi = np.where(pos, phi, lr * kf / n_total)  # zero modes: lr k / N
    return _assemble(st, lr * ks.astype(np.float64), decay, phi, np.ndim(steps) == 0)


def ntk_gp(evals: Any, evecs: Any, k_test_train: Any, nngp_train_train: Any,
           nngp_test_train: Any, nngp_test_test: Any, y: Any, t: Any,
           rcond: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of the infinite ensemble of wide networks trained by gradient flow.

    ``A_t = Theta_xX Theta^-1 (I - exp(-Theta t/N))``; mean ``A_t y``; covariance
    ``K_xx + A_t K_XX A_t^T - (A_t K_Xx + K_xX A_t^T)`` (K = NNGP).

    Parameters
    ----------
    evals, evecs : array_like, shapes (n,), (n, n)
        Eigendecomposition of the train NTK ``Theta_XX``.
    k_test_train : array_like, shape (m, n)
        Test-train NTK ``Theta_xX``.
    nngp_train_train, nngp_test_train, nngp_test_test : array_like
        NNGP blocks ``K_XX`` (n, n), ``K_xX`` (m, n), ``K_xx`` (m, m).
    y : array_like, shape (n,) or (n, C)
    t : float or array_like, shape (T,)
        Times >= 0 (``np.inf`` allowed).
    rcond : float, optional

    Returns
    -------
    mean : ndarray, shape (T, m, C) (or (T, m) for 1-d ``y``; no T axis for scalar ``t``)
    cov : ndarray, shape (T, m, m)
        Shared by all outputs. At ``t = 0`` it equals ``K_xx``.

    References
    ----------
    Lee et al., NeurIPS 2019, Eq. (16);
    neural-tangents ``predict.gradient_descent_mse_ensemble``.
    """
    ts = np.asarray(t, dtype=np.float64).reshape(-1)
    if np.any(np.isnan(ts)) or np.any(ts < 0):
        raise ValueError(f"t must be >= 0 (np.inf allowed), got {t!r}")
    st = _setup(evals, evecs, y, None, None, k_test_train, rcond)
    v, b, n = st["v"], st["B"], st["s"].size
    m = b.shape[0]
    kxx_tr = np.asarray(nngp_train_train, dtype=np.float64)
    k_xt = np.asarray(nngp_test_train, dtype=np.float64)
    k_tt = np.asarray(nngp_test_test, dtype=np.float64)
    if kxx_tr.shape != (n, n) or k_xt.shape != (m, n) or k_tt.shape != (m, m):
        raise ValueError(f"NNGP blocks must have shapes ({n}, {n}), ({m}, {n}), ({m}, {m}); got "
                         f"{kxx_tr.shape}, {k_xt.shape}, {k_tt.shape}")
    _, phi = _gf_factors(st["s"], ts, st["N"])
    kr = v.T @ kxx_tr @ v  # NNGP train block in the NTK eigenbasis, shape: (n, n)
    kxr = k_xt @ v  # shape: (m, n)
    zy = v.T @ st["y"]  # shape: (n, C)
    mean = np.einsum("ik,tkc->tic", b, phi[:, :, None] * zy[None])
    cov = np.empty((ts.size, m, m))
    for i, ph in enumerate(phi):
        a = b * ph[None, :]  # A_t V, shape: (m, n)
        cross = a @ kxr.T  # A_t K_Xx, shape: (m, m)
        cov[i] = k_tt + a @ kr @ a.T - cross - cross.T
    if st["squeeze"]:
        mean = mean[..., 0]
    if np.ndim(t) == 0:
        return mean[0], cov[0]
    return mean, cov
