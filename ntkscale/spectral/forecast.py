"""Test-error forecasts past the computed spectrum: the full-n GCV/KARE risk and scaling laws.

Two questions a user brings to a pool of n samples, answered from training data only:

1. **What test error will the full-n fit reach?** The pool theory (:mod:`.theory`) cannot answer
   at ``p = n``: the pool Gram ``K_n`` has only n modes, so at ``p = n`` every mode looks
   learnable and ``E_g`` collapses (measured on a depth-3 ReLU NTK of 6000 Fashion-MNIST images:
   0.002-0.065 for ridges 1e-4-1e-1 × mean diagonal, against a measured 0.22). The estimator
   that is consistent at ``p = n`` is generalized cross-validation, which equals the kernel
   alignment risk estimator (KARE) at ``z = λ/n``:

       GCV(λ) = (1/n) ‖(I − S) y‖² / (1 − tr S / n)²,   S = K (K + λI)⁻¹,

   and in the eigenbasis of ``K_n/n`` (``η_ρ = s_ρ/n``, ``v²_ρ = ‖V_ρᵀ y‖²/n``), with
   ``w_ρ = λ / (n η_ρ + λ)``,

       GCV(λ) = Σ_ρ w_ρ² v²_ρ / ((1/n) Σ_ρ w_ρ)².                                  (1)

   It estimates the risk against *noisy* labels (what a test MSE measures), noise included.
   :func:`spectrum_gcv` evaluates (1) on a spectrum completed past the top k pairs by the tail
   model (:mod:`.tail`); :func:`full_n_forecast` adds the band (the tail's other exponent) and
   says how much of (1) the modelled tail carries.
2. **What would more data buy?** :func:`fit_scaling_law` fits ``E(p) = c + a p^(−γ)`` to risk
   estimates at sub-sizes of the pool with their standard errors; :meth:`ScalingLaw.predict`
   extrapolates with a band (parametric bootstrap of the points). The estimates to use are the
   held-out errors of kernel regressions on random sub-blocks
   (:func:`ntkscale.spectral.curves.empirical_learning_curve`, unbiased at each size): from a
   15 000-image Fashion-MNIST pool they forecast the measured test MSE at 30k, 60k and 120k
   within 4-9 %, where sub-block GCVs (biased low at finite n) were 17-25 % low
   (benchmarks/RESULTS.md §00000e.4, §00000g). Evaluated at the pool's own n, the law is also
   the full-n forecast that (1) misses by 22-29 % there.

GCV assumes exchangeable rows: with augmented copies (mirror images) a row's twin stays in the
training set and GCV turns optimistic, as leave-one-out does.

References
----------
Craven & Wahba, Numer. Math. 31, 377 (1979); Golub, Heath & Wahba, Technometrics 21, 215 (1979);
Jacot, Simsek, Spadaro, Hongler & Gabriel, "Kernel alignment risk estimator", NeurIPS 2020;
Hestness et al., "Deep learning scaling is predictable, empirically" (2017) (``c + a p^(−γ)``);
Bahri, Dyer, Kaplan, Lee & Sharma, "Explaining neural scaling laws" (2021).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
from scipy.optimize import curve_fit

from .quadrature import TailQuadrature, quadrature_spectrum
from .tail import TailModel, complete_spectrum, fit_tail

__all__ = ["spectrum_gcv", "FullForecast", "full_n_forecast", "ScalingLaw", "fit_scaling_law"]


def spectrum_gcv(eta: Any, v2: Any, lam: float, n: int, multiplicity: Optional[Any] = None) -> float:
    """GCV / KARE risk of ridge ``lam`` from a spectrum of ``K_n/n``, eq. (1) of the module.

    Parameters
    ----------
    eta : array_like, shape (N,)
        Eigenvalues of ``K_n / n`` (N ≤ n; missing modes count as zero eigenvalues with no
        target power).
    v2 : array_like, shape (N,) or (N, C)
        Target power per mode, ``‖V_ρᵀ y‖² / n`` (summed over outputs when 2-d).
    lam : float
        Absolute ridge of ``K + λI`` (> 0).
    n : int
        Number of samples (modes of the Gram).
    multiplicity : array_like, shape (N,), optional
        Modes each entry stands for (a quadrature's weights, see
        :func:`ntkscale.spectral.quadrature.quadrature_spectrum`); default 1 each.

    Returns
    -------
    float
        The GCV estimate of the test MSE (summed over outputs, noise included).
    """
    e = np.asarray(eta, dtype=np.float64).reshape(-1)
    w2 = np.asarray(v2, dtype=np.float64)
    w2 = w2.sum(axis=1) if w2.ndim == 2 else w2.reshape(-1)
    if lam <= 0:
        raise ValueError(f"spectrum_gcv needs a ridge > 0, got {lam!r} (at λ = 0 use gcv() with all pairs)")
    mu = np.ones_like(e) if multiplicity is None else np.asarray(multiplicity, dtype=np.float64).reshape(-1)
    if mu.sum() > n * (1 + 1e-9) or w2.shape != e.shape or mu.shape != e.shape:
        raise ValueError(f"eta, v2 (and multiplicity) must have the same length and count ≤ n = {n} modes, "
                         f"got {e.shape}, {w2.shape}, {mu.shape}")
    w = lam / (n * np.clip(e, 0.0, None) + lam)
    mean_w = (float(mu @ w) + (n - float(mu.sum()))) / n
    return float(w * w @ w2) / mean_w ** 2


@dataclass(frozen=True)
class FullForecast:
    """The full-n risk forecast (see :func:`full_n_forecast`).

    Attributes
    ----------
    n : int
    ridge : float
    gcv : float
        GCV of the completed spectrum: the tail by Lanczos quadrature when given, else the
        tail model's exponent.
    band : tuple of float
        ``(low, high)``: quadrature with all and with half its steps and the power-law tail
        (when a quadrature is given); else over the tail's two exponents (continuity and
        window fit).
    gcv_top_only : float
        GCV with the tail's eigenvalues set to zero (its power kept): how much the tail's
        shape matters.
    tail_share : float
        Fraction of GCV's numerator ``Σ w² v²`` carried by the modelled ranks (> 0.5: the tail
        model dominates the forecast).
    tail : TailModel
    """

    n: int
    ridge: float
    gcv: float
    band: tuple[float, float]
    gcv_top_only: float
    tail_share: float
    tail: TailModel
    tail_method: str = "powerlaw"
    gcv_powerlaw: Optional[float] = None

    def record(self) -> dict:
        """Flat metrics."""
        return {"n": self.n, "ridge": self.ridge, "gcv": self.gcv, "gcv_band": list(self.band),
                "gcv_top_only": self.gcv_top_only, "tail_share": self.tail_share,
                "tail_alpha": self.tail.alpha, "tail_alpha_fit": self.tail.alpha_fit, "k": self.tail.k,
                "tail_method": self.tail_method,
                **({"gcv_powerlaw": self.gcv_powerlaw} if self.gcv_powerlaw is not None else {})}


def full_n_forecast(eta: Any, v2: Any, trace: float, y_power: Any, n: int, lam: float,
                    quadrature: Optional[TailQuadrature] = None) -> FullForecast:
    """GCV risk at the full n from the top-k spectrum of ``K_n/n`` and two exact totals.

    Parameters
    ----------
    eta : array_like, shape (k,)
        Top eigenvalues of ``K_n / n``, descending (k < n).
    v2 : array_like, shape (k,) or (k, C)
        ``(V_ρᵀ y_c)² / n``.
    trace : float
        ``trace(K_n) / n`` (the mean diagonal): the tail's mass is ``trace − Σ η``.
    y_power : float or array_like, shape (C,)
        ``‖y_c‖² / n``: the tail's target power is ``y_power − Σ_ρ v²_ρc``.
    n : int
    lam : float
        The fit's absolute ridge (> 0).
    quadrature : TailQuadrature, optional
        The tail measured by Lanczos quadrature past the same k eigenvectors
        (:func:`ntkscale.spectral.quadrature.tail_quadrature`); replaces the power-law model.

    Returns
    -------
    FullForecast
    """
    e = np.asarray(eta, dtype=np.float64).reshape(-1)
    w = np.asarray(v2, dtype=np.float64)
    w = w[:, None] if w.ndim == 1 else w
    R = np.atleast_1d(np.asarray(y_power, dtype=np.float64)) - w.sum(axis=0)
    model = fit_tail(e, w, float(trace) - float(e.sum()), np.clip(R, 0.0, None), int(n))
    e_c, w_c = complete_spectrum(e, w, model)
    g = spectrum_gcv(e_c, w_c, lam, n)
    e_b, w_b = complete_spectrum(e, w, model, alpha=model.alpha_fit)
    g_b = spectrum_gcv(e_b, w_b, lam, n)
    e_0 = np.concatenate([e, np.zeros(n - e.size)])
    g_0 = spectrum_gcv(e_0, w_c, lam, n)
    if quadrature is not None:
        e_q, w_q, mu = quadrature_spectrum(e, w, quadrature)
        e_h, w_h, mu_h = quadrature_spectrum(e, w, quadrature, steps=max(1, quadrature.steps // 2))
        g_q, g_h = spectrum_gcv(e_q, w_q, lam, n, mu), spectrum_gcv(e_h, w_h, lam, n, mu_h)
        ww = lam / (n * e_q + lam)
        num = ww * ww * w_q.sum(axis=1)
        share = float(num[e.size:].sum() / num.sum()) if num.sum() > 0 else 0.0
        return FullForecast(n=int(n), ridge=float(lam), gcv=g_q, band=(min(g_q, g_h, g), max(g_q, g_h, g)),
                            gcv_top_only=g_0, tail_share=share, tail=model, tail_method="quadrature",
                            gcv_powerlaw=g)
    ww = lam / (n * e_c + lam)
    num = ww * ww * w_c.sum(axis=1)
    share = float(num[e.size:].sum() / num.sum()) if num.sum() > 0 else 0.0
    return FullForecast(n=int(n), ridge=float(lam), gcv=g, band=(min(g, g_b), max(g, g_b)),
                        gcv_top_only=g_0, tail_share=share, tail=model)


def _law(p: np.ndarray, log_a: float, gam: float, c: float) -> np.ndarray:
    return c + np.exp(log_a) * p ** (-gam)


@dataclass(frozen=True)
class ScalingLaw:
    """``E(p) = c + a p^(−γ)`` fitted to risk estimates.

    Attributes
    ----------
    params : ndarray, shape (3,)
        ``(log a, γ, c)``.
    cov : ndarray, shape (3, 3)
        Their covariance (scaled by the fit's residual variance when no errors were given).
    p, E, sem : ndarray, shape (P,)
        The points fitted.
    """

    params: np.ndarray
    cov: np.ndarray
    p: np.ndarray
    E: np.ndarray
    sem: np.ndarray

    @property
    def exponent(self) -> tuple[float, float]:
        """``(γ, standard error of γ)``."""
        return float(self.params[1]), float(np.sqrt(max(self.cov[1, 1], 0.0)))

    def predict(self, p: Any, *, level: float = 0.9, draws: int = 400,
                seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Forecast at sizes ``p`` (shape (Q,)): ``(E, low, high)``, each shape (Q,).

        The band is the central ``level`` interval of ``E(p)`` over ``draws`` refits of the law
        to the points moved by their errors (parametric bootstrap, ``E_i + sem_i z``): it keeps
        the fit's bounds (``c >= 0``, ``γ > 0``), where normal draws from the covariance would
        not, e.g. when the fit ends on ``c = 0`` (then the covariance's draws of ``c`` were
        clipped and of ``γ`` crossed zero: a band that missed its own forecast). Without errors
        (``sem`` all 0) the draws come from the covariance, ``c`` clipped at 0.
        """
        q = np.asarray(p, dtype=np.float64).reshape(-1)
        mid = _law(q, *self.params)
        rng = np.random.default_rng(seed)
        if np.any(self.sem > 0):
            vals = []
            for _ in range(draws):
                Eb = np.clip(self.E + self.sem * rng.standard_normal(self.E.size), 1e-12, None)
                try:
                    vals.append(_law(q, *_fit(self.p, Eb, self.sem)[0]))
                except RuntimeError:  # (curve_fit found no optimum for this draw)
                    continue
            vals = np.asarray(vals)
        else:
            cov = 0.5 * (self.cov + self.cov.T)
            th = rng.multivariate_normal(self.params, cov, size=draws, check_valid="ignore")
            th[:, 2] = np.clip(th[:, 2], 0.0, None)
            vals = th[:, 2:3] + np.exp(th[:, 0:1]) * q[None, :] ** (-th[:, 1:2])
        lo, hi = np.quantile(vals, [(1 - level) / 2, (1 + level) / 2], axis=0)
        return mid, lo, hi


def _fit(ps: np.ndarray, Es: np.ndarray, s: Optional[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Weighted least squares ``(params, cov)`` of :func:`_law` within its bounds."""
    # start: a pure power law through the two ends, c at a fraction of the smallest risk
    g0 = float(np.clip(np.log(Es[0] / Es[-1]) / np.log(ps[-1] / ps[0]), 0.05, 2.0))
    x0 = [float(np.log(Es[0] * ps[0] ** g0)), g0, 0.1 * float(Es.min())]
    bounds = ([-np.inf, 1e-3, 0.0], [np.inf, 4.0, float(Es.max())])
    params, cov = curve_fit(_law, ps, Es, p0=x0, sigma=s, absolute_sigma=s is not None,
                            bounds=bounds, maxfev=20000)
    return np.asarray(params), np.asarray(cov)


def fit_scaling_law(p: Any, E: Any, sem: Optional[Any] = None) -> ScalingLaw:
    """Weighted least squares fit of ``E(p) = c + a p^(−γ)`` (``a > 0``, ``γ ∈ (0, 4)``, ``c ≥ 0``).

    Parameters
    ----------
    p : array_like, shape (P,)
        Training-set sizes (P ≥ 4 distinct).
    E : array_like, shape (P,)
        Risk estimates at those sizes (> 0).
    sem : array_like, shape (P,), optional
        Their standard errors (weights, taken as absolute); default: equal weights, the
        covariance scaled by the residual variance.

    Returns
    -------
    ScalingLaw
    """
    ps = np.asarray(p, dtype=np.float64).reshape(-1)
    Es = np.asarray(E, dtype=np.float64).reshape(-1)
    if ps.shape != Es.shape or np.unique(ps).size < 4 or np.any(ps <= 0) or np.any(Es <= 0):
        raise ValueError(f"fit_scaling_law needs >= 4 distinct sizes p > 0 and risks E > 0 of the same "
                         f"length, got p {ps.shape}, E {Es.shape}")
    s = None if sem is None else np.clip(np.asarray(sem, dtype=np.float64).reshape(-1), 1e-12, None)
    params, cov = _fit(ps, Es, s)
    if not np.all(np.isfinite(cov)):
        cov = np.where(np.isfinite(cov), cov, 0.0)
    return ScalingLaw(params=np.asarray(params), cov=np.asarray(cov), p=ps, E=Es,
                      sem=np.zeros_like(Es) if s is None else s)
