"""Full-n GCV forecast and the scaling-law extrapolation (ntkscale.spectral.forecast), issue 21.

Oracles: the textbook GCV on all eigenpairs (selection.gcv), a synthetic power-law spectrum whose
tail the model must reproduce, held-out risks of real kernel regressions, and a scaling law with
known parameters.
"""

from __future__ import annotations

import numpy as np
import pytest

from ntkscale.spectral import gcv
from ntkscale.spectral.forecast import fit_scaling_law, full_n_forecast, spectrum_gcv


def _gram(n, seed=0, d=20):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    y = np.sin(X[:, 0]) + 0.3 * X[:, 1] * X[:, 2] + 0.1 * rng.standard_normal(n)
    D = ((X[:, None, :] - X[None]) ** 2).sum(-1)
    return np.exp(-D / (2 * d)), y


def test_spectrum_gcv_equals_gcv_on_all_pairs():
    K, y = _gram(300)
    s, V = np.linalg.eigh(K)
    n = len(K)
    for lam in (1e-3, 1e-1, 3.0):
        ref = gcv(s, V, y, lam)
        got = spectrum_gcv(s / n, (V.T @ y) ** 2 / n, lam, n)
        assert got == pytest.approx(ref, rel=1e-10)


def test_spectrum_gcv_missing_modes_are_zero_eigenvalues():
    # modes beyond the given ones: eigenvalue 0, no power; equal to padding explicitly
    eta = np.array([1.0, 0.5, 0.1])
    v2 = np.array([0.3, 0.2, 0.1])
    pad = spectrum_gcv(np.r_[eta, np.zeros(7)], np.r_[v2, np.zeros(7)], 0.2, 10)
    assert spectrum_gcv(eta, v2, 0.2, 10) == pytest.approx(pad, rel=1e-14)
    with pytest.raises(ValueError, match="ridge > 0"):
        spectrum_gcv(eta, v2, 0.0, 10)


def test_full_forecast_on_a_known_power_law_tail():
    # eigenvalues ∝ ρ^-1.5 and target power ∝ ρ^-1.5 on n modes: the tail model's laws are exact
    # (continuity + mass gives α = 1.5, β = α), so the forecast from the top k equals the
    # GCV of the whole spectrum.
    n, k, a = 4000, 100, 1.5
    r = np.arange(1, n + 1, dtype=float)
    eta, v2 = r ** -a, 0.3 * r ** -a
    lam = 1e-3 * n * eta.sum() / n
    exact = spectrum_gcv(eta, v2, lam, n)
    fc = full_n_forecast(eta[:k], v2[:k], eta.sum(), v2.sum(), n, lam)
    assert fc.tail.alpha == pytest.approx(a, rel=1e-6)
    assert fc.gcv == pytest.approx(exact, rel=1e-6)
    assert fc.band[0] <= fc.gcv <= fc.band[1]
    # a wrong tail (all of its mass at rank k + 1) moves the forecast: the check can fail
    e_bad = np.r_[eta[:k], eta[k:].sum(), np.zeros(n - k - 1)]
    assert abs(spectrum_gcv(e_bad, v2, lam, n) / exact - 1) > 0.05


def test_full_forecast_tracks_heldout_risk_of_real_regressions():
    # kernel ridge regression on a synthetic task: the forecast from the top 40 pairs of the
    # training Gram is within 15 % of the held-out MSE of the fit (measured: 0.199 vs 0.200;
    # GCV's own finite-n error is the larger part of the allowance, the tail model the rest).
    # A misplaced factor n in eq. (1) or a forecast of the noiseless E_g would be off by > 2x.
    K_all, y_all = _gram(1400, seed=3)
    n = 400
    K, Kx = K_all[:n, :n], K_all[n:, :n]
    y, yx = y_all[:n], y_all[n:]
    lam = 1e-2 * n
    alpha = np.linalg.solve(K + lam * np.eye(n), y)
    heldout = float(np.mean((Kx @ alpha - yx) ** 2))
    s, V = np.linalg.eigh(K)
    s, V = s[::-1], V[:, ::-1]
    fc = full_n_forecast(s[:40] / n, (V[:, :40].T @ y) ** 2 / n, np.trace(K) / n, y @ y / n, n, lam)
    assert fc.gcv == pytest.approx(heldout, rel=0.15)
    assert 0.0 <= fc.tail_share <= 1.0


def test_scaling_law_recovers_known_parameters():
    rng = np.random.default_rng(0)
    p = np.array([250, 500, 1000, 2000, 4000, 8000], float)
    true = 0.05 + 3.0 * p ** -0.45
    sem = 0.01 * true
    E = true + sem * rng.standard_normal(p.size)
    law = fit_scaling_law(p, E, sem)
    gam, se = law.exponent
    assert abs(gam - 0.45) < 3 * se + 0.02
    mid, lo, hi = law.predict([16000, 80000])
    truth = 0.05 + 3.0 * np.array([16000, 80000]) ** -0.45
    assert np.all(lo <= truth) and np.all(truth <= hi)
    assert np.all(lo < mid) and np.all(mid < hi)
    # a law fitted to a different exponent excludes the truth: the band can fail
    bad = fit_scaling_law(p, 0.05 + 3.0 * p ** -0.8, sem)
    _, lo_b, hi_b = bad.predict([80000])
    assert not (lo_b[0] <= truth[1] <= hi_b[0])


def test_scaling_law_rejects_too_few_points():
    with pytest.raises(ValueError, match=">= 4 distinct sizes"):
        fit_scaling_law([1, 2, 3], [3.0, 2.0, 1.0])


def test_scaling_law_band_holds_its_forecast_when_the_fit_ends_on_a_bound():
    """The 15k Fashion-MNIST GCV points (benchmarks/RESULTS.md §00000e.4) end the fit on c = 0;
    normal draws from the covariance then gave a band [0.151, 0.97] around a forecast of 0.149
    at 30k. The bootstrap band brackets the forecast and stays finite and narrow."""
    p = [1875, 3750, 7500, 15000]
    E = [0.2322, 0.2120, 0.1869, 0.1671]
    sem = [0.00562, 0.00197, 0.00147, 0.00104]
    law = fit_scaling_law(p, E, sem)
    assert law.params[2] < 1e-6  # c on its bound
    mid, lo, hi = law.predict([30000, 60000])
    assert np.all(lo <= mid) and np.all(mid <= hi)
    assert np.all(hi < 0.2) and np.all(lo > 0.05)  # not the [0.15, 0.97] of the covariance draws
