"""Empirical spectra from a Gram eigendecomposition, and power-law fits.

From an eigendecomposition of the M x M Gram ``K_M = V diag(s) V^T`` of M
samples, ``eta_hat = s/M`` estimates the population eigenvalues and
``phi_rho(x_i) = sqrt(M) V_{i rho}`` the eigenfunctions, so the target weights
are ``v_rho = <f*, phi_rho> = (V^T y)_rho / sqrt(M)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .validate import check_eigh, clean_gram_evals

__all__ = ["EmpiricalSpectrum", "PowerLawFit", "empirical_spectrum", "fit_power_law"]


@dataclass(frozen=True)
class EmpiricalSpectrum:
    """Spectrum and target weights estimated from M samples (C outputs).

    Attributes
    ----------
    eta : ndarray, shape (M,)
        Eigenvalues of ``K/M``, descending, round-off negatives clipped to 0.
    v2 : ndarray, shape (M,)
        Squared target weights summed over outputs.
    v2_per_output : ndarray, shape (M, C)
    cumulative_power : ndarray, shape (M,)
        ``C(k) = sum_{rho <= k} v2_rho / sum_rho v2_rho`` (task-model alignment;
        all zeros for an all-zero target).
    """

    eta: np.ndarray
    v2: np.ndarray
    v2_per_output: np.ndarray
    cumulative_power: np.ndarray


@dataclass(frozen=True)
class PowerLawFit:
    """``eta_k ~ prefactor * k**(-exponent)``, fitted on ranks ``kmin <= k <= kmax`` (1-based).

    Attributes
    ----------
    exponent, prefactor : float
    kmin, kmax : int
        The window actually used.
    r2 : float
        Coefficient of determination of the log-log fit.
    """

    exponent: float
    prefactor: float
    kmin: int
    kmax: int
    r2: float


def empirical_spectrum(evals: Any, evecs: Any, y: Any) -> EmpiricalSpectrum:
    """Empirical eigenvalues and target weights from ``np.linalg.eigh`` of the Gram.

    Parameters
    ----------
    evals : array_like, shape (M,)
        Eigenvalues of the M x M Gram matrix ``K`` (any order; not divided by M).
    evecs : array_like, shape (M, M)
        Orthonormal eigenvectors (columns), as returned by ``np.linalg.eigh``.
    y : array_like, shape (M,) or (M, C)
        Targets at the M samples.

    Returns
    -------
    EmpiricalSpectrum
        ``eta = s/M`` and ``v2_per_output[rho, c] = ((V^T y_c)_rho)^2 / M``,
        both in descending order of ``eta``.

    References
    ----------
    Canatar, Bordelon & Pehlevan, Nat. Commun. 12, 2914 (2021), Methods
    ("Kernel eigenvalues and target weights from data").
    """
    s, v = check_eigh(evals, evecs)
    m = s.size
    yy = np.asarray(y, dtype=np.float64)
    y2 = yy[:, None] if yy.ndim == 1 else yy
    if y2.ndim != 2 or y2.shape[0] != m:
        raise ValueError(f"y must have shape ({m},) or ({m}, C), got {yy.shape}")
    order = np.argsort(-s, kind="stable")
    eta = clean_gram_evals(s)[order] / m
    proj = v[:, order].T @ y2  # shape: (M, C)
    per_out = proj * proj / m
    v2 = per_out.sum(axis=1)
    total = float(v2.sum())
    cum = np.cumsum(v2) / total if total > 0 else np.zeros_like(v2)
    return EmpiricalSpectrum(eta=eta, v2=v2, v2_per_output=per_out, cumulative_power=cum)


def fit_power_law(evals: Any, kmin: int = 1, kmax: int | None = None) -> PowerLawFit:
    """Least-squares fit of ``log eta_k = log A - alpha log k`` over a rank window.

    Parameters
    ----------
    evals : array_like, shape (N,)
        Eigenvalues (sorted descending here; rank k = 1 is the largest).
    kmin, kmax : int
        Inclusive 1-based rank window (``kmax`` defaults to N). All eigenvalues
        in the window must be > 0, and the window must hold at least 2 ranks.

    Returns
    -------
    PowerLawFit
        ``exponent = alpha`` (> 0 for a decaying spectrum), ``prefactor = A``.

    References
    ----------
    Bordelon, Canatar & Pehlevan, ICML 2020 (power-law spectra ``eta_k ~ k^-alpha``
    and the resulting learning-curve exponents);
    Spigler, Geiger & Wyart, "Asymptotic learning curves of kernel methods", J. Stat.
    Mech. (2020) 124001.
    """
    e = np.sort(np.asarray(evals, dtype=np.float64).reshape(-1))[::-1]
    n = e.size
    kmax = n if kmax is None else int(kmax)
    kmin = int(kmin)
    if not 1 <= kmin < kmax <= n:
        raise ValueError(f"need 1 <= kmin < kmax <= {n} (number of eigenvalues), "
                         f"got kmin={kmin}, kmax={kmax}")
    w = e[kmin - 1:kmax]
    if not np.all(w > 0) or not np.all(np.isfinite(w)):
        raise ValueError(f"eigenvalues in ranks [{kmin}, {kmax}] must be finite and > 0; "
                         "lower kmax below the numerical-zero tail")
    lx = np.log(np.arange(kmin, kmax + 1, dtype=np.float64))
    ly = np.log(w)
    a = np.stack([np.ones_like(lx), lx], axis=1)
    (c0, c1), *_ = np.linalg.lstsq(a, ly, rcond=None)
    res = ly - (c0 + c1 * lx)
    ss = float(np.sum((ly - ly.mean()) ** 2))
    r2 = 1.0 - float(res @ res) / ss if ss > 0 else 1.0
    return PowerLawFit(exponent=float(-c1), prefactor=float(np.exp(c0)), kmin=kmin, kmax=kmax,
                       r2=r2)
