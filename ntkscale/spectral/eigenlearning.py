"""Eigenlearning (Simon, Dickens, Karkada & DeWeese): learnabilities and the conservation law.

The same theory as :mod:`ntkscale.spectral.theory`, in the variables of Simon
et al.: the effective regularization ``delta = kappa_S = kappa / p`` solves the
conservation law ``sum_rho L_rho + lam/delta = p`` with learnabilities
``L_rho = eta_rho/(eta_rho + delta)``. This module solves it with its own
algorithm (monotone Newton iteration, vectorized over ``p``) so that the two
modules check each other. Conventions (``lam``, ``sigma2`` per output, C
outputs) are those of :mod:`ntkscale.spectral.theory`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ._checks import as_sizes, as_spectrum, as_targets, check_nonneg

__all__ = ["EigenlearningPrediction", "effective_regularization", "learnabilities",
           "conservation_residual", "overfitting_coefficient", "eigenlearning_predict"]


@dataclass(frozen=True)
class EigenlearningPrediction:
    """Eigenlearning predictions on P sample sizes for N modes.

    Attributes
    ----------
    p, delta, E0 : ndarray, shape (P,)
        Sample sizes, effective regularization ``kappa/p``, overfitting
        coefficient ``p/(p - sum L^2)``.
    learnability : ndarray, shape (P, N)
    test_mse : ndarray, shape (P,)
        Expected test MSE against *noisy* labels, ``E0 (sum (1-L)^2 v^2 + C sigma2)``.
    Eg : ndarray, shape (P,)
        Against the clean target, ``test_mse - C sigma2``.
    train_mse : ndarray, shape (P,)
        ``(lam/(p delta))^2 test_mse``.
    """

    p: np.ndarray
    delta: np.ndarray
    learnability: np.ndarray
    E0: np.ndarray
    test_mse: np.ndarray
    Eg: np.ndarray
    train_mse: np.ndarray


def _newton_delta(nz: np.ndarray, ps: np.ndarray, lam: float, maxiter: int = 500) -> np.ndarray:
    """Solve g(d) = sum nz/(nz + d) + lam/d - p = 0 for every p at once.

    g is decreasing and convex in d, so Newton's iteration started left of the
    root (g > 0) increases monotonically to it (tangents lie below g).
    """
    n = nz.size
    delta = np.zeros_like(ps)
    active = (lam > 0) | (ps < n)  # otherwise delta = 0 (lam = 0, p >= n_nz)
    if n == 0:
        return np.where(ps > 0, lam / ps, 0.0)
    emin = float(nz.min())
    inv_scaled = float(np.sum(emin / nz))  # sum(1/eta) = inv_scaled/emin, without overflow
    lo = np.maximum(lam / ps, np.where(ps < n, (n - ps) * emin / inv_scaled, 0.0))
    d = np.where(active, lo, 0.0)  # proven lower bounds: g(lo) >= 0
    todo = active.copy()
    for _ in range(maxiter):
        if not np.any(todo):
            break
        dt = d[todo][:, None]
        q = nz[None, :] / (nz[None, :] + dt)
        g = q.sum(axis=1) + lam / dt[:, 0] - ps[todo]
        dg = -(nz[None, :] / (nz[None, :] + dt) ** 2).sum(axis=1) - lam / dt[:, 0] ** 2
        step = np.maximum(-g / dg, 0.0)  # g >= 0 left of the root; round-off can flip it
        new = dt[:, 0] + step
        done = step <= 1e-16 * new
        d[todo] = new
        idx = np.flatnonzero(todo)
        todo[idx[done]] = False
    delta[active] = d[active]
    return delta


def effective_regularization(eta: Any, p: Any, lam: float = 0.0) -> np.ndarray | float:
    """Effective regularization ``delta = kappa/p``, shape like ``p``.

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
    delta : float or ndarray
        Root of ``sum eta/(eta + delta) + lam/delta = p``; 0 for ``lam = 0``, ``p >= n_nz``.

    References
    ----------
    Simon, Dickens, Karkada & DeWeese, "The eigenlearning framework: a conservation
    law perspective on kernel ridge regression and wide neural networks", TMLR 2023, Eq. (6).
    """
    e = as_spectrum(eta)
    ps, scalar = as_sizes(p)
    d = _newton_delta(e[e > 0], ps, check_nonneg(lam, "lam"))
    return float(d[0]) if scalar else d.reshape(np.shape(p))


def learnabilities(eta: Any, delta: Any) -> np.ndarray:
    """``L_rho = eta_rho/(eta_rho + delta)``, shape (P, N) (or (N,) for scalar delta).

    Zero modes have L = 0; for ``delta = 0`` nonzero modes have L = 1.

    References
    ----------
    Simon et al., TMLR 2023, Eq. (5).
    """
    e = as_spectrum(eta)
    d = np.asarray(delta, dtype=np.float64)
    dd = d.reshape(-1)[:, None]
    den = e[None, :] + dd
    out = np.divide(e[None, :], den, out=np.zeros(den.shape), where=den > 0)
    return out[0] if d.ndim == 0 else out


def conservation_residual(L: Any, p: Any, lam: float, delta: Any) -> np.ndarray | float:
    """``sum_rho L_rho + lam/delta - p`` (0 when the conservation law holds).

    ``L`` has shape (P, N) or (N,); ``lam/delta`` is taken as 0 when ``lam = 0``.

    References
    ----------
    Simon et al., TMLR 2023, Eq. (6).
    """
    Ls = np.atleast_2d(np.asarray(L, dtype=np.float64))
    ps = np.asarray(p, dtype=np.float64).reshape(-1)
    d = np.asarray(delta, dtype=np.float64).reshape(-1)
    lam = check_nonneg(lam, "lam")
    if lam > 0 and np.any(d <= 0):
        raise ValueError("delta must be > 0 when lam > 0")
    reg = np.divide(lam, d, out=np.zeros_like(d), where=d > 0)
    res = Ls.sum(axis=1) + reg - ps
    return float(res[0]) if np.ndim(p) == 0 else res


def overfitting_coefficient(L: Any, p: Any) -> np.ndarray | float:
    """``E0 = p/(p - sum_rho L_rho^2)`` (= 1/(1 - gamma)); inf when ``sum L^2 = p``.

    References
    ----------
    Simon et al., TMLR 2023, Eq. (8).
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
    Simon et al., TMLR 2023, Eqs. (6)-(10).
    """
    e = as_spectrum(eta)
    v, c = as_targets(v2, e.size, n_outputs)
    ps, _ = as_sizes(p)
    lam = check_nonneg(lam, "lam")
    sigma2 = check_nonneg(sigma2, "sigma2")
    delta = _newton_delta(e[e > 0], ps, lam)
    L = np.atleast_2d(learnabilities(e, delta))
    e0 = np.atleast_1d(overfitting_coefficient(L, ps))
    bias = np.sum((1.0 - L) ** 2 * v[None, :], axis=1)
    num = bias + c * sigma2
    finite = np.isfinite(e0)
    test = np.where(finite, np.where(finite, e0, 0.0) * num, np.where(num > 0, np.inf, 0.0))
    # lam/(p delta); in the delta -> 0 limit (lam = 0, p >= n_nz) it is 1 - n_nz/p.
    lpd = np.divide(lam, ps * delta, out=1.0 - np.sum(e > 0) / ps, where=delta > 0)
    # delta > 0 implies sum L^2 < p (E0 finite); at delta = 0, (lam/(p delta))^2 E0 -> 1 - n_nz/p.
    coef = np.where(delta > 0, lpd * lpd * np.where(finite, e0, 0.0), lpd)
    train = coef * num
    return EigenlearningPrediction(p=ps, delta=delta, learnability=L, E0=e0, test_mse=test,
                                   Eg=test - c * sigma2, train_mse=train)
