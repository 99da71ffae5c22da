"""Learning-curve theory of kernel ridge regression (Bordelon, Canatar & Pehlevan).

Pure functions of the population spectrum: eigenvalues ``eta`` (shape (N,)),
squared target weights ``v2`` (shape (N,) or (N, C)), sample sizes ``p``
(scalar or array), ridge ``lam`` and label-noise variance ``sigma2``.

Conventions
-----------
* ``lam`` is the ridge of ``(K + lam I)`` with ``K`` the *unnormalized* p x p
  Gram matrix (Canatar et al.). A ridge ``lam'`` on ``K/p`` is ``lam = p lam'``;
  neural-tangents' relative ``diag_reg`` is ``lam = diag_reg * trace(K) / p``.
* ``sigma2`` is the noise variance *per output*. With C outputs the noise term of
  ``E_g`` is multiplied by C (``E_g`` is the sum over outputs); this is the
  convention of the Canatar et al. Fig. 2 data (``MNIST_GaussRBF_theory.npz``,
  10 outputs), which the tests reproduce to ~3e-7.
* Ridgeless (``lam = 0``) with ``p >= n_nz`` (number of nonzero ``eta``): the
  self-consistent equation has only the root ``kappa = 0`` (the limit lam -> 0+).
  Then every nonzero mode is learned exactly, ``gamma = n_nz / p`` and
  ``E_g = (sum of zero-mode power + C sigma2 gamma) / (1 - gamma)``, infinite at
  ``p = n_nz`` unless that numerator vanishes (then 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
from scipy.optimize import brentq
from scipy.special import logsumexp

from ..linop import check_ridge
from .validate import as_sizes, as_spectrum, as_targets, check_nonneg

__all__ = ["LearningCurve", "solve_kappa", "gamma", "mode_errors", "generalization_error",
           "training_error", "learning_curve", "white_spectrum_error"]


@dataclass(frozen=True)
class LearningCurve:
    """Theory predictions on a grid of sample sizes (P points, N modes).

    Attributes
    ----------
    p, kappa, gamma, Eg, Etrain : ndarray, shape (P,)
        Sample sizes, self-consistent kappa, gamma, generalization error
        (clean target, summed over outputs) and training error (vs noisy labels).
    mode_errors : ndarray, shape (P, N)
        Per-mode contributions; ``mode_errors.sum(axis=1) == Eg``.
    learnability : ndarray, shape (P, N)
        ``p eta / (p eta + kappa)`` (the eigenlearning ``L_rho``).
    lam, sigma2 : float
    n_outputs : int
    """

    p: np.ndarray
    kappa: np.ndarray
    gamma: np.ndarray
    Eg: np.ndarray
    Etrain: np.ndarray
    mode_errors: np.ndarray
    learnability: np.ndarray
    lam: float
    sigma2: float
    n_outputs: int


def _kappa_one(eta_nz: np.ndarray, p: float, lam: float, w: Optional[np.ndarray] = None) -> float:
    """Root of F(k) = 1 - lam/k - sum w eta/(p eta + k) for one p (F increasing in k).

    ``eta_nz`` holds the nonzero eigenvalues only, ``w`` their multiplicities (default 1).
    """
    if w is None:
        w = np.ones_like(eta_nz)
    n = float(w.sum())
    if eta_nz.size == 0 or n == 0:
        return lam
    if lam == 0.0 and p >= n:
        return 0.0

    pe = p * eta_nz

    def f(k: float) -> float:
        # 1 - sum L/p with sum L = n_l - sum_learned r + sum_unlearned L (r = k/(pe + k) = 1 - L):
        # every sum is of small terms, so no cancellation however wide the spectrum is.
        den = pe + k
        learned = pe > k
        small = (float(np.sum(w[learned] * k / den[learned]))
                 - float(np.sum(w[~learned] * pe[~learned] / den[~learned])))
        reg = lam / k if lam > 0 else 0.0  # k may underflow to 0 when lam = 0
        return (p - float(w[learned].sum()) + small) / p - reg

    hi = lam + float(w @ eta_nz)  # F(hi) > 0: lam/k + sum < (lam + sum eta)/k = 1
    log_lo = np.log(lam) if lam > 0 else -np.inf  # F(lam) = -sum(...) < 0
    if p < n:  # eta/(p eta + k) >= (1 - k/(p eta))/p  =>  F <= 0 for k <= p (n - p)/sum(1/eta)
        log_lo = max(log_lo, float(np.log(p * (n - p)) - logsumexp(-np.log(eta_nz), b=w)))
    log_hi = float(np.log(hi))
    if log_lo >= log_hi:
        return hi
    while f(float(np.exp(log_lo))) > 0.0:  # round-off at a (nearly) tight bound: step down
        log_lo -= 1.0
    if f(float(np.exp(log_hi))) <= 0.0:  # huge ridge: F(hi) > 0 holds exactly; the root
        return hi                          # is within round-off of hi
    # Brent in u = log k: the bracket may span hundreds of decades (tiny eigenvalues), where
    # bisection in k would stall; then Newton in k polishes log-space round-off (~|u| eps).
    u = brentq(lambda uu: f(float(np.exp(uu))), log_lo, log_hi, xtol=1e-15,
               rtol=4 * np.finfo(float).eps, maxiter=500)
    lo = float(np.exp(log_lo))
    k = float(np.clip(np.exp(u), lo, hi))
    if k == 0.0:  # root below the smallest subnormal (lam = 0 only)
        return 0.0
    fk = f(k)
    for _ in range(3):
        den = pe + k
        kdf = lam / k + float(np.sum(w * (eta_nz / den) * (k / den)))  # k F'(k), no under/overflow
        if not kdf > 0.0:
            break
        k_new = k * (1.0 - fk / kdf)
        if not lo <= k_new <= hi:
            break
        f_new = f(k_new)
        if abs(f_new) >= abs(fk):
            break
        k, fk = k_new, f_new
    return k


def solve_kappa(eta: Any, p: Any, lam: float = 0.0) -> np.ndarray | float:
    """Solve the self-consistent equation ``kappa = lam + kappa sum eta/(p eta + kappa)``.

    Parameters
    ----------
    eta : array_like, shape (N,)
        Population eigenvalues, >= 0 (zero modes are allowed and ignored).
    p : float or array_like, shape (P,)
        Number(s) of training samples, > 0 (non-integers allowed).
    lam : float
        Ridge >= 0 (see the module conventions).

    Returns
    -------
    kappa : float or ndarray, shape like ``p``
        The unique root ``kappa >= lam``; 0 for ``lam = 0`` and ``p >= n_nz``.

    Notes
    -----
    Solved by Brent's method in ``log kappa`` on the increasing, O(1)-scaled form
    ``1 - lam/kappa - sum eta/(p eta + kappa) = 0`` in the bracket
    ``[max(lam, p (n_nz - p)/sum(1/eta)), lam + sum(eta)]`` (both ends are proven
    bounds), then polished by safeguarded Newton steps in ``kappa``; the result is
    accurate to ~1e-15 relative times the root's condition number.

    References
    ----------
    Canatar, Bordelon & Pehlevan, "Spectral bias and task-model alignment explain
    generalization in kernel regression", Nat. Commun. 12, 2914 (2021), the implicit
    equation for kappa accompanying Eq. (4).
    """
    e = as_spectrum(eta)
    ps, scalar = as_sizes(p)
    lam = check_ridge(lam, "lam")
    nz = e[e > 0]
    out = np.array([_kappa_one(nz, float(pi), lam) for pi in ps])
    return float(out[0]) if scalar else out.reshape(np.shape(p))


def _core(e: np.ndarray, ps: np.ndarray, lam: float,
          w: Optional[np.ndarray] = None) -> dict[str, np.ndarray]:
    """kappa (P,), learnability L (P,N), r = kappa/(p eta+kappa) (P,N), gamma, lam/kappa;
    ``w`` (N,): mode multiplicities in the sums over modes (default 1)."""
    w = np.ones_like(e) if w is None else w
    nz = e > 0
    kappa = np.array([_kappa_one(e[nz], float(pi), lam, w[nz]) for pi in ps])
    pe = ps[:, None] * e[None, :]
    denom = pe + kappa[:, None]
    zero_mode = np.broadcast_to(e[None, :] == 0, denom.shape)
    # r = 1, L = 0 on zero modes (never learned; 0/0 avoided); denom > 0 elsewhere. Both are
    # computed directly (not as 1 - the other) to keep their relative precision.
    r = np.divide(kappa[:, None], denom, out=np.ones_like(denom), where=~zero_mode)
    L = np.divide(pe, denom, out=np.zeros_like(denom), where=~zero_mode)
    gam = (L * L) @ w / ps  # = sum w p eta^2 / (p eta + kappa)^2
    # 1 - gamma without cancellation: p - sum L^2 = (p - n_l) + sum_l r (1 + L) - sum_u L^2.
    learned = pe > kappa[:, None]
    omg = (ps - learned @ w + np.where(learned, r * (1.0 + L), -L * L) @ w) / ps
    # lam/kappa; in the kappa -> 0 limit (lam = 0, p >= n_nz) it is 1 - n_nz/p.
    lok = np.divide(lam, kappa, out=1.0 - float(w[nz].sum()) / ps, where=kappa > 0)
    return {"kappa": kappa, "L": L, "r": r, "gamma": gam, "one_minus_gamma": omg,
            "lam_over_kappa": lok}


def _over_one_minus_gamma(num: np.ndarray, omg: np.ndarray) -> np.ndarray:
    """num / (1 - gamma), broadcast over trailing axes; inf (or 0 if num == 0) at gamma >= 1."""
    d = omg.reshape(omg.shape + (1,) * (num.ndim - omg.ndim))
    ok = np.broadcast_to(d > 0, num.shape)
    fallback = np.where(num == 0, 0.0, np.inf)
    return np.divide(num, d, out=fallback, where=ok)


def learning_curve(eta: Any, v2: Any, p: Any, lam: float = 0.0, sigma2: float = 0.0,
                   n_outputs: int | None = None, *,
                   multiplicity: Optional[Any] = None) -> LearningCurve:
    """All theory quantities on a grid of sample sizes.

    Parameters
    ----------
    eta : array_like, shape (N,)
        Population eigenvalues, >= 0.
    v2 : array_like, shape (N,) or (N, C)
        Squared target weights ``v_rho^2``; 1-d means already summed over outputs
        (then give ``n_outputs``).
    p : float or array_like, shape (P,)
        Training-set sizes.
    lam, sigma2 : float
        Ridge and per-output noise variance, both >= 0.
    n_outputs : int, optional
        C, the number of outputs (defaults to ``v2.shape[1]`` or 1).
    multiplicity : array_like, shape (N,), optional
        How many modes each entry stands for (default 1 each), >= 0 and not necessarily
        integer: a spectral *measure* given by quadrature nodes (see
        :mod:`ntkscale.spectral.quadrature`). Every sum over modes in the equations for
        ``kappa`` and ``gamma`` is weighted by it; ``v2`` is the target power of the whole
        entry, so an entry of multiplicity 0 carries target power only.

    Returns
    -------
    LearningCurve
        With ``Eg = kappa^2/(1-gamma) sum v^2/(p eta + kappa)^2 + C sigma2 gamma/(1-gamma)``
        and ``Etrain = (lam/kappa)^2 (Eg + C sigma2)``.

    References
    ----------
    Bordelon, Canatar & Pehlevan, "Spectrum dependent learning curves in kernel
    regression and wide neural networks", ICML 2020 (per-mode errors);
    Canatar et al., Nat. Commun. 12, 2914 (2021), Eq. (4) and Methods (training error).
    """
    e = as_spectrum(eta)
    v, c = as_targets(v2, e.size, n_outputs)
    ps, _ = as_sizes(p)
    lam = check_ridge(lam, "lam")
    sigma2 = check_nonneg(sigma2, "sigma2")
    w = None
    if multiplicity is not None:
        w = np.asarray(multiplicity, dtype=np.float64)
        if w.shape != e.shape or not np.all(np.isfinite(w)) or np.any(w < 0):
            raise ValueError(f"multiplicity must be finite, >= 0 and of shape {e.shape}, got {w.shape}")
    core = _core(e, ps, lam, w)
    L, r, gam, omg = core["L"], core["r"], core["gamma"], core["one_minus_gamma"]
    num_modes = r * r * v[None, :] + c * sigma2 * (L * L) * (1.0 if w is None else w) / ps[:, None]
    per_mode = _over_one_minus_gamma(num_modes, omg)
    num = num_modes.sum(axis=1)
    eg = _over_one_minus_gamma(num, omg)
    lok = core["lam_over_kappa"]
    # (lam/kappa)^2/(1-gamma) stays finite when lam = 0, p = n_nz (lam/kappa = 1-gamma = 0).
    kappa = core["kappa"]
    coef = np.where(kappa > 0, _over_one_minus_gamma(lok * lok, omg), lok)
    etrain = coef * num + lok * lok * c * sigma2
    return LearningCurve(p=ps, kappa=kappa, gamma=gam, Eg=eg, Etrain=etrain,
                         mode_errors=per_mode, learnability=L, lam=lam, sigma2=sigma2,
                         n_outputs=c)


def _shaped(x: np.ndarray, p: Any) -> np.ndarray | float:
    return float(x[0]) if np.ndim(p) == 0 else x.reshape(np.shape(p))


def gamma(eta: Any, p: Any, lam: float = 0.0) -> np.ndarray | float:
    """``gamma = sum_rho p eta_rho^2 / (p eta_rho + kappa)^2``, shape like ``p``.

    References
    ----------
    Canatar et al., Nat. Commun. 12, 2914 (2021), definition of gamma next to Eq. (4).
    """
    e = as_spectrum(eta)
    ps, _ = as_sizes(p)
    return _shaped(_core(e, ps, check_ridge(lam, "lam"))["gamma"], p)


def mode_errors(eta: Any, v2: Any, p: Any, lam: float = 0.0, sigma2: float = 0.0,
                n_outputs: int | None = None) -> np.ndarray:
    """Per-mode contributions to ``E_g``, shape (P, N) (or (N,) for scalar ``p``).

    ``E_rho = [kappa^2 v_rho^2/(p eta_rho + kappa)^2 + C sigma2 p eta_rho^2/(p eta_rho
    + kappa)^2] / (1 - gamma)``, so that ``sum_rho E_rho = E_g``.

    References
    ----------
    Canatar et al., Nat. Commun. 12, 2914 (2021), Eq. (4).
    """
    out = learning_curve(eta, v2, p, lam, sigma2, n_outputs).mode_errors
    return out[0] if np.ndim(p) == 0 else out


def generalization_error(eta: Any, v2: Any, p: Any, lam: float = 0.0, sigma2: float = 0.0,
                         n_outputs: int | None = None) -> np.ndarray | float:
    """Generalization error ``E_g`` (clean target, summed over outputs), shape like ``p``.

    See :func:`learning_curve` for parameters and the formula.

    References
    ----------
    Canatar et al., Nat. Commun. 12, 2914 (2021), Eq. (4).
    """
    return _shaped(learning_curve(eta, v2, p, lam, sigma2, n_outputs).Eg, p)


def training_error(eta: Any, v2: Any, p: Any, lam: float = 0.0, sigma2: float = 0.0,
                   n_outputs: int | None = None) -> np.ndarray | float:
    """Training error ``(lam/kappa)^2 (E_g + C sigma2)`` vs the noisy labels, shape like ``p``.

    Notes
    -----
    ``MNIST_GaussRBF_theory.npz`` (arr_4) adds the noise once, ``(lam/kappa)^2
    (E_g + sigma2)``, although its ``E_g`` counts it C times; we add it C times
    (consistent with a sum over outputs; for C = 1 both agree).

    References
    ----------
    Canatar et al., Nat. Commun. 12, 2914 (2021), Methods;
    Simon et al., "The eigenlearning framework", TMLR 2023 (train MSE estimate).
    """
    return _shaped(learning_curve(eta, v2, p, lam, sigma2, n_outputs).Etrain, p)


def white_spectrum_error(alpha: Any, sigma2: float = 0.0,
                         target_power: float = 1.0) -> np.ndarray | float:
    """Ridgeless ``E_g`` for N equal eigenvalues ``1/N`` and ``alpha = p/N``.

    ``E_g = P (1 - alpha) + sigma2 alpha/(1 - alpha)`` for ``alpha < 1``,
    ``sigma2/(alpha - 1)`` for ``alpha > 1`` (P = total target power); at
    ``alpha = 1`` it is inf (0 without noise).

    References
    ----------
    Canatar et al., Nat. Commun. 12, 2914 (2021), white-spectrum example;
    Hastie et al., "Surprises in high-dimensional ridgeless least squares
    interpolation", Ann. Statist. 50 (2022) (isotropic features).
    """
    a = np.asarray(alpha, dtype=np.float64)
    if np.any(a <= 0) or not np.all(np.isfinite(a)):
        raise ValueError(f"alpha must be finite and > 0, got {alpha!r}")
    s2 = check_nonneg(sigma2, "sigma2")
    pw = check_nonneg(target_power, "target_power")
    d = np.abs(1.0 - a)
    noise = np.divide(s2 * np.minimum(a, 1.0), d, out=np.full_like(a, np.inf if s2 > 0 else 0.0),
                      where=d > 0)
    out = np.where(a < 1, pw * (1.0 - a), 0.0) + noise
    return float(out) if out.ndim == 0 else out
