"""Eigenlearning (Simon, Dickens, Karkada & DeWeese): learnabilities and the conservation law.

The same theory as :mod:`ntkscale.spectral.theory`, in the variables of Simon
et al.: the effective regularization ``kappa_s = kappa / p`` solves the
conservation law ``sum_rho L_rho + lam/kappa_s = p`` with learnabilities
``L_rho = eta_rho/(eta_rho + kappa_s)``. (The paper calls ``kappa_s`` "kappa"
and the ridge "delta"; we keep ``kappa`` for Canatar's unscaled constant.) This
module solves it with its own algorithm (monotone Newton iteration, vectorized
over ``p``) so that the two modules check each other. Conventions (``lam``,
``sigma2`` per output, C outputs) are those of :mod:`ntkscale.spectral.theory`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import logsumexp

from ..linop import check_ridge
from .validate import as_sizes, as_spectrum, as_targets, check_nonneg

__all__ = ["EigenlearningPrediction", "effective_regularization", "learnabilities",
           "conservation_residual", "overfitting_coefficient", "eigenlearning_predict"]


@dataclass(frozen=True)
class EigenlearningPrediction:
    """Eigenlearning predictions on P sample sizes for N modes.

    Attributes
    ----------
    p, kappa_s, E0 : ndarray, shape (P,)
        Sample sizes, effective regularization ``kappa/p``, overfitting
        coefficient ``p/(p - sum L^2)``.
    learnability : ndarray, shape (P, N)
    test_mse : ndarray, shape (P,)
        Expected test MSE against *noisy* labels, ``E0 (sum (1-L)^2 v^2 + C sigma2)``.
    Eg : ndarray, shape (P,)
        Against the clean target, ``test_mse - C sigma2``.
    train_mse : ndarray, shape (P,)
        ``(lam/(p kappa_s))^2 test_mse``.
    """

    p: np.ndarray
    kappa_s: np.ndarray
    learnability: np.ndarray
    E0: np.ndarray
    test_mse: np.ndarray
    Eg: np.ndarray
    train_mse: np.ndarray


def _newton_kappa_s(nz: np.ndarray, ps: np.ndarray, lam: float, maxiter: int = 500) -> np.ndarray:
    """Solve g(d) = sum nz/(nz + d) + lam/d - p = 0 for every p at once.

    g is decreasing and convex in d, so Newton's iteration started left of the
    root (g > 0) increases monotonically to it (tangents lie below g).
    """
    n = nz.size
    kappa_s = np.zeros_like(ps)
    active = (lam > 0) | (ps < n)  # otherwise kappa_s = 0 (lam = 0, p >= n_nz)
    if n == 0:
        return np.where(ps > 0, lam / ps, 0.0)
    log_inv = float(logsumexp(-np.log(nz)))  # log sum(1/eta), without overflow
    with np.errstate(divide="ignore"):  # log(0) = -inf for p >= n: that bound is vacuous
        lo = np.maximum(lam / ps, np.exp(np.log(np.maximum(n - ps, 0.0)) - log_inv))
    # Proven lower bounds (g(lo) >= 0); a subnormal floor keeps d > 0 (if the root is even
    # smaller, g < 0 there, the step below is 0 and the floor is returned).
    d = np.where(active, np.maximum(lo, np.finfo(float).smallest_subnormal), 0.0)
    todo = active.copy()
    prev = np.full(ps.shape, np.inf)
    for _ in range(maxiter):
        if not np.any(todo):
            break
        dt = d[todo][:, None]
        den = nz[None, :] + dt
        q = nz[None, :] / den
        # sum q - p = (n_l - p) - sum_learned r + sum_unlearned q, r = d/(eta + d) = 1 - q:
        # sums of small terms only, accurate however many decades the spectrum spans.
        learned = nz[None, :] > dt
        g = (learned.sum(axis=1) - ps[todo] + np.sum(np.where(learned, -dt / den, q), axis=1)
             + lam / dt[:, 0])
        ddg = (q * (dt / den)).sum(axis=1) + lam / dt[:, 0]  # -d g'(d), scaled: no underflow
        ratio = np.divide(g, ddg, out=np.zeros_like(g), where=ddg > 0)
        step = dt[:, 0] * np.maximum(ratio, 0.0)  # g >= 0 left of the root; round-off can flip
        new = dt[:, 0] + step
        # Converged: step at round-off, or steps stopped shrinking once tiny (round-off noise
        # in g keeps the sign positive and would otherwise creep on).
        done = (step <= 4 * np.finfo(float).eps * new) | ((step >= prev[todo])
                                                          & (step <= 1e-12 * new))
        prev[todo] = step
        d[todo] = new
        idx = np.flatnonzero(todo)
        todo[idx[done]] = False
    if np.any(todo):  # not seen in practice (<150 iterations even over 300 decades)
        raise RuntimeError(f"Newton iteration for kappa_s did not converge in {maxiter} steps "
                           f"(p = {ps[todo][:3]}, lam = {lam}); use theory.solve_kappa(...)/p")
    kappa_s[active] = d[active]
    return kappa_s


def effective_regularization(eta: Any, p: Any, lam: float = 0.0) -> np.ndarray | float:
    """Effective regularization ``kappa_s = kappa/p``, shape like ``p``.

    Parameters
    ----------
    eta : array_like, shape (N,)
        Population eigenvalues, >= 0.
    p : float or array_like, shape (P,)
        Training-set sizes, > 0.
    lam : float
        Ridge of ``(K + lam I)``, >= 0.

    Returns
    -------
    kappa_s : float or ndarray
        Root of ``sum eta/(eta + kappa_s) + lam/kappa_s = p``; 0 for ``lam = 0``, ``p >= n_nz``.

    References
    ----------
    Simon, Dickens, Karkada & DeWeese, "The eigenlearning framework: a conservation
    law perspective on kernel ridge regression and wide neural networks", TMLR 2023
    (arXiv:2110.03922), the eigenlearning equations (definition of kappa).
    """
    e = as_spectrum(eta)
    ps, scalar = as_sizes(p)
    d = _newton_kappa_s(e[e > 0], ps, check_ridge(lam, "lam"))
    return float(d[0]) if scalar else d.reshape(np.shape(p))


def learnabilities(eta: Any, kappa_s: Any) -> np.ndarray:
    """``L_rho = eta_rho/(eta_rho + kappa_s)``, shape (P, N) (or (N,) for scalar kappa_s).

    Zero modes have L = 0; for ``kappa_s = 0`` nonzero modes have L = 1.

    References
    ----------
    Simon et al., TMLR 2023, definition of learnability (eigenlearning equations).
    """
    e = as_spectrum(eta)
    d = np.asarray(kappa_s, dtype=np.float64)
    dd = d.reshape(-1)[:, None]
    den = e[None, :] + dd
    out = np.divide(e[None, :], den, out=np.zeros(den.shape), where=den > 0)
    return out[0] if d.ndim == 0 else out


def conservation_residual(L: Any, p: Any, lam: float, kappa_s: Any) -> np.ndarray | float:
    """``sum_rho L_rho + lam/kappa_s - p`` (0 when the conservation law holds).

    ``L`` has shape (P, N) or (N,); ``lam/kappa_s`` is taken as 0 when ``lam = 0``.

    References
    ----------
    Simon et al., TMLR 2023, the learnability conservation law.
    """
    Ls = np.atleast_2d(np.asarray(L, dtype=np.float64))
    ps = np.asarray(p, dtype=np.float64).reshape(-1)
    d = np.asarray(kappa_s, dtype=np.float64).reshape(-1)
    lam = check_ridge(lam, "lam")
    if lam > 0 and np.any(d <= 0):
        raise ValueError("kappa_s must be > 0 when lam > 0")
    reg = np.divide(lam, d, out=np.zeros_like(d), where=d > 0)
    res = Ls.sum(axis=1) + reg - ps
    return float(res[0]) if np.ndim(p) == 0 else res


def overfitting_coefficient(L: Any, p: Any) -> np.ndarray | float:
    """``E0 = p/(p - sum_rho L_rho^2)`` (= 1/(1 - gamma)); inf when ``sum L^2 = p``.

    References
    ----------
    Simon et al., TMLR 2023, overfitting coefficient of the eigenlearning equations.
    """
    Ls = np.atleast_2d(np.asarray(L, dtype=np.float64))
    ps = np.asarray(p, dtype=np.float64).reshape(-1)
    den = ps - np.sum(Ls * Ls, axis=1)
    e0 = np.divide(ps, den, out=np.full_like(den, np.inf), where=den > 0)
    return float(e0[0]) if np.ndim(p) == 0 else e0


def eigenlearning_predict(eta: Any, v2: Any, p: Any, lam: float = 0.0, sigma2: float = 0.0,
                          n_outputs: int | None = None) -> EigenlearningPrediction:
    """Test/train MSE predictions of eigenlearning on a grid of sample sizes.

    Parameters
    ----------
    eta : array_like, shape (N,)
    v2 : array_like, shape (N,) or (N, C)
        Squared target weights (1-d: summed over outputs; give ``n_outputs``).
    p : float or array_like, shape (P,)
    lam, sigma2 : float
        Ridge and per-output noise variance.
    n_outputs : int, optional

    Returns
    -------
    EigenlearningPrediction

    References
    ----------
    Simon et al., TMLR 2023, eigenlearning equations for test and train MSE.
    """
    e = as_spectrum(eta)
    v, c = as_targets(v2, e.size, n_outputs)
    ps, _ = as_sizes(p)
    lam = check_ridge(lam, "lam")
    sigma2 = check_nonneg(sigma2, "sigma2")
    kappa_s = _newton_kappa_s(e[e > 0], ps, lam)
    L = np.atleast_2d(learnabilities(e, kappa_s))
    den = e[None, :] + kappa_s[:, None]
    # 1 - L computed directly (relative precision for well-learned modes); 1 on zero modes.
    r = np.divide(kappa_s[:, None], den, out=np.ones(den.shape),
                  where=np.broadcast_to(e[None, :] > 0, den.shape))
    learned = e[None, :] > kappa_s[:, None]
    # p - sum L^2 = (p - n_l) + sum_l r (1 + L) - sum_u L^2: no cancellation near p = n_nz.
    p_minus = ps - learned.sum(axis=1) + np.sum(np.where(learned, r * (1.0 + L), -L * L), axis=1)
    e0 = np.divide(ps, p_minus, out=np.full_like(ps, np.inf), where=p_minus > 0)
    bias = np.sum(r * r * v[None, :], axis=1)
    num = bias + c * sigma2
    finite = np.isfinite(e0)
    test = np.where(finite, np.where(finite, e0, 0.0) * num, np.where(num > 0, np.inf, 0.0))
    # lam/(p kappa_s); in the kappa_s -> 0 limit (lam = 0, p >= n_nz) it is 1 - n_nz/p.
    lpd = np.divide(lam, ps * kappa_s, out=1.0 - np.sum(e > 0) / ps, where=kappa_s > 0)
    # kappa_s > 0 implies sum L^2 < p (E0 finite); at kappa_s = 0, (lam/(p kappa_s))^2 E0
    # -> 1 - n_nz/p.
    coef = np.where(kappa_s > 0, lpd * lpd * np.where(finite, e0, 0.0), lpd)
    train = coef * num
    return EigenlearningPrediction(p=ps, kappa_s=kappa_s, learnability=L, E0=e0, test_mse=test,
                                   Eg=test - c * sigma2, train_mse=train)
