"""The learning-curve theory of a pool Gram: its spectrum (all pairs, or the top k and the
tail past them) into the Canatar et al. theory, and the map to the held-out error.

:func:`theory_learning_curve` predicts ``E_g`` for the pool's measure (all M rows, training rows
included); :func:`heldout_error` maps it to the error off the training set, which
:func:`ntkscale.spectral.curves.learning_curves` compares with sub-block fits (conventions:
:mod:`ntkscale.spectral.curves`).
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from ..linop import check_ridge
from .spectrum import empirical_spectrum
from .theory import LearningCurve, learning_curve
from .validate import check_nonneg

__all__ = ["theory_learning_curve", "heldout_error"]


def _mean_diag(op: Any) -> float:  # of a Gram operator or a dense array
    return float(np.mean(op.diag() if hasattr(op, "diag") else np.diagonal(np.asarray(op))))


def _targets(y: Any, m: int) -> np.ndarray:
    Y = np.asarray(y, dtype=np.float64)
    Y = Y[:, None] if Y.ndim == 1 else Y
    if Y.ndim != 2 or Y.shape[0] != m or not np.all(np.isfinite(Y)):
        raise ValueError(f"y must be finite with shape ({m},) or ({m}, C) (one row per Gram row), "
                         f"got shape {np.shape(y)}")
    return Y


def _sizes(p_grid: Any) -> np.ndarray:
    ps = np.asarray(p_grid).reshape(-1)
    if ps.size == 0 or not np.all(np.isfinite(ps)) or np.any(ps != np.round(ps)) or np.any(ps < 1):
        raise ValueError(f"p_grid must hold integers >= 1, got {p_grid!r}")
    return ps.astype(np.int64)


def _spectrum(src: Any, Y: np.ndarray, trace: Optional[float]) -> tuple[np.ndarray, ...]:
    """eta (k,), v2 per output (k, C), tail trace of K/M, tail power (C,), mean diag of K_M."""
    m = Y.shape[0]
    if hasattr(src, "evals") and hasattr(src, "evecs"):
        s, V = src.evals, src.evecs
    elif isinstance(src, tuple) and len(src) == 2:
        s, V = src
    else:  # a Gram: dense eigendecomposition (divide and conquer, ~10x faster than MRRR)
        K = np.asarray(src.to_numpy() if hasattr(src, "to_numpy") else src, dtype=np.float64)
        s, V = np.linalg.eigh((K + K.T) / 2)
    s, V = np.asarray(s, dtype=np.float64), np.asarray(V, dtype=np.float64)
    if V.ndim != 2 or V.shape[0] != m or s.shape != (V.shape[1],):
        raise ValueError(f"eigenvectors must have shape ({m}, k) with one eigenvalue per column, "
                         f"got evals {s.shape}, evecs {V.shape}")
    if V.shape[1] == m:
        sp = empirical_spectrum(s, V, Y)
        return sp.eta, sp.v2_per_output, 0.0, np.zeros(Y.shape[1]), float(np.sum(sp.eta))
    if trace is None:
        raise ValueError(f"a partial eigendecomposition ({V.shape[1]} of {m} pairs) needs "
                         "trace=trace(K_M) (e.g. op.diag().sum()) for the tail of the spectrum")
    order = np.argsort(-s, kind="stable")
    eta = np.clip(s[order], 0.0, None) / m
    v2 = (V[:, order].T @ Y) ** 2 / m  # shape: (k, C)
    tail_power = np.clip(np.sum(Y * Y, axis=0) / m - v2.sum(axis=0), 0.0, None)
    return eta, v2, max(float(trace) / m - float(eta.sum()), 0.0), tail_power, float(trace) / m


def theory_learning_curve(op_or_eigs: Any, y: Any, p_grid: Any, ridge: float = 0.0,
                          noise_std: float = 0.0, *, relative_ridge: bool = False,
                          trace: Optional[float] = None, tail: str = "ridge",
                          n_modes: Optional[int] = None, tail_alpha: Optional[float] = None,
                          quadrature: Any = None) -> LearningCurve:
    """Canatar et al. ``E_g`` from the spectrum of ``K_M / M`` of the pool.

    Parameters
    ----------
    op_or_eigs : GramOperator, ndarray (M, M), ``(evals, evecs)`` or an object with
        ``.evals`` / ``.evecs`` (e.g. :class:`ntkscale.solvers.eigen.EigResult`)
        A Gram is eigendecomposed densely (M×M in memory). Eigenpairs are of the
        unnormalized ``K_M``; with k < M pairs the theory is truncated: the tail acts
        as an extra ridge ``Σ_{ρ>k} η̂_ρ = trace/M − Σ_{ρ<=k} η̂_ρ`` (valid while
        ``p η̂_{k+1} << κ``) and its target power as one never-learned mode.
    y : array_like, shape (M,) or (M, C)
        Noiseless targets of the pool.
    p_grid : array_like, shape (P,)
    ridge, relative_ridge : float, bool
        Absolute λ of ``(K_pp + λI)`` as in the experiment, or ``λ = ridge · trace(K_M)/M``.
    noise_std : float
        Label-noise std per output (``sigma2 = noise_std²``; C outputs count it C times).
    trace : float, optional
        ``trace(K_M)``; needed for a partial eigendecomposition.
    tail : {'ridge', 'powerlaw', 'quadrature'}
        How a partial decomposition's tail enters: ``'ridge'``, the tail's eigenvalue mass as
        an extra ridge and its target power as one never-learned mode (valid while
        ``p η_{k+1} << κ``); ``'powerlaw'``, the spectrum continued by
        :mod:`ntkscale.spectral.tail` (power laws that carry exactly the known tail mass and
        target power) to ``n_modes`` ranks (default M), so modes past k are learned as p grows;
        ``'quadrature'``, the tail's measures from ``quadrature`` (a measurement, not a model).
    quadrature : TailQuadrature, optional
        ``tail='quadrature'``: :func:`ntkscale.spectral.quadrature.tail_quadrature` of the
        pool's Gram past the same eigenvectors.
    n_modes : int, optional
        ``tail='powerlaw'``: last modelled rank (default M; more extrapolates past the pool).
    tail_alpha : float, optional
        ``tail='powerlaw'``: another tail exponent (the band: ``TailModel.alpha_fit``).

    Returns
    -------
    LearningCurve
        ``.Eg`` (P,) predicts the test MSE vs the noiseless target. Truncated with
        ``tail='ridge'``: one extra zero mode (the tail power) in ``mode_errors``; ``lam``
        includes the tail ridge.

    References
    ----------
    Canatar, Bordelon & Pehlevan, Nat. Commun. 12, 2914 (2021), Eq. (4) and Methods;
    Bordelon, Canatar & Pehlevan, ICML 2020.
    """
    src = op_or_eigs
    V = src.evecs if hasattr(src, "evecs") else (src[1] if isinstance(src, tuple) else src)
    Y = _targets(y, int(V.shape[0] if hasattr(V, "shape") else np.shape(V)[0]))
    eta, v2, tail_trace, tail_power, mean_diag = _spectrum(src, Y, trace)
    lam = check_ridge(ridge) * (mean_diag if relative_ridge else 1.0)
    sigma2 = check_nonneg(noise_std, "noise_std") ** 2
    if tail not in ("ridge", "powerlaw", "quadrature"):
        raise ValueError(f"tail must be 'ridge', 'powerlaw' or 'quadrature', got {tail!r}")
    if tail == "quadrature" and eta.size < Y.shape[0]:
        if quadrature is None:
            raise ValueError("tail='quadrature' needs quadrature=tail_quadrature(op, evecs, y) "
                             "(ntkscale.spectral.quadrature)")
        from .quadrature import quadrature_spectrum

        eta, v2, mult = quadrature_spectrum(eta, v2, quadrature)
        return learning_curve(eta, v2, _sizes(p_grid).astype(np.float64), lam=lam, sigma2=sigma2,
                              n_outputs=Y.shape[1], multiplicity=mult)
    if tail == "powerlaw" and eta.size < Y.shape[0]:
        from .tail import complete_spectrum, fit_tail

        model = fit_tail(eta, v2, tail_trace, tail_power, Y.shape[0])
        eta, v2 = complete_spectrum(eta, v2, model, n_modes, tail_alpha)
        return learning_curve(eta, v2, _sizes(p_grid).astype(np.float64), lam=lam, sigma2=sigma2,
                              n_outputs=Y.shape[1])
    if tail_trace > 0 or np.any(tail_power > 0):
        eta, v2 = np.append(eta, 0.0), np.vstack([v2, tail_power[None, :]])
    return learning_curve(eta, v2, _sizes(p_grid).astype(np.float64), lam=lam + tail_trace,
                          sigma2=sigma2, n_outputs=Y.shape[1])


def heldout_error(curve: LearningCurve, pool_size: int,
                  ridge: Optional[float] = None) -> np.ndarray:
    """Theory of the test error on the pool rows *outside* the training set.

    :func:`theory_learning_curve` predicts ``E_pool``, the error averaged over all M rows.
    For a uniformly random training subset of p rows, ``E_pool = f·E_tr + (1 − f)·E_out``
    with ``f = p/M`` and the training error vs the *noiseless* targets, in the same theory,
    ``E_tr = E_train + Cσ² − 2Cσ²·λ/κ`` (cross term ``−σ² λ tr((K + λI)⁻¹)`` per output, and
    ``λ tr((K + λI)⁻¹)/p → λ/κ``). Hence ``E_out = (E_pool − f·E_tr)/(1 − f)``.

    Parameters
    ----------
    curve : LearningCurve
        From :func:`theory_learning_curve` of the pool (M rows).
    pool_size : int
        M; every ``curve.p`` must be below it.
    ridge : float, optional
        The true absolute λ (default ``curve.lam``). Give it for a truncated theory: its
        ``curve.lam`` includes the tail trace, which is no ridge at the training rows.

    Returns
    -------
    ndarray, shape (P,)
        ``inf`` where ``curve.Eg`` is.

    References
    ----------
    Canatar, Bordelon & Pehlevan, Nat. Commun. 12, 2914 (2021), Methods (training error);
    Simon et al., "The eigenlearning framework", TMLR 2023 (``tr(λ(K + λI)⁻¹)/p = λ/κ``).
    """
    m = int(pool_size)
    if m != pool_size or np.any(curve.p >= m):
        raise ValueError(f"pool_size must be an integer above every p (max p = {curve.p.max():g}), "
                         f"got {pool_size!r}")
    lam = curve.lam if ridge is None else check_ridge(ridge)
    scale = lam / curve.lam if curve.lam > 0 else 1.0  # true λ/κ from the theory's λ/κ
    c_s2, eg = curve.n_outputs * curve.sigma2, curve.Eg
    with np.errstate(divide="ignore", invalid="ignore"):  # inf Eg: handled by the last line
        lok = scale * np.sqrt(np.where(eg + c_s2 > 0, curve.Etrain / (eg + c_s2), 0.0))  # λ/κ
        train_clean = lok * lok * (eg + c_s2) + c_s2 * (1.0 - 2.0 * lok)
        f = curve.p / m
        out = (eg - f * train_clean) / (1.0 - f)
    return np.where(np.isfinite(eg), out, np.inf)
