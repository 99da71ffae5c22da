"""Empirical spectra / target weights from a Gram eigh, and power-law fits."""

from __future__ import annotations

import numpy as np
import pytest

from ntkscale.spectral import empirical_spectrum, fit_power_law


def _gram(m: int = 60, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(m, 5))
    k = np.exp(-0.5 * np.sum((x[:, None] - x[None]) ** 2, axis=-1) / 5)  # Gaussian RBF Gram
    return k, x


def test_empirical_spectrum_identities() -> None:
    k, x = _gram()
    m = k.shape[0]
    y = np.stack([np.sin(x[:, 0]), x[:, 1] ** 2], axis=1)
    s, v = np.linalg.eigh(k)  # ascending; the function sorts
    sp = empirical_spectrum(s, v, y)
    assert np.all(np.diff(sp.eta) <= 0)
    # Orthonormal V: traces and norms are preserved exactly up to round-off.
    assert sp.eta.sum() == pytest.approx(np.trace(k) / m, rel=1e-12)
    np.testing.assert_allclose(sp.v2_per_output.sum(axis=0), np.sum(y * y, axis=0) / m, rtol=1e-12)
    np.testing.assert_allclose(sp.v2, sp.v2_per_output.sum(axis=1), rtol=1e-15)
    assert sp.cumulative_power[-1] == pytest.approx(1.0, rel=1e-12)
    # Reconstruction K/M = sum_rho eta_rho phi_rho phi_rho^T / M with phi = sqrt(M) V.
    order = np.argsort(-s, kind="stable")
    phi = np.sqrt(m) * v[:, order]
    np.testing.assert_allclose((phi * sp.eta) @ phi.T / m, k / m, atol=1e-13)


def test_target_on_one_eigenfunction() -> None:
    k, _ = _gram(m=40, seed=1)
    s, v = np.linalg.eigh(k)
    m = k.shape[0]
    j = np.argsort(-s)[2]  # third-largest mode
    y = 0.7 * np.sqrt(m) * v[:, j]  # f* = 0.7 phi_3
    sp = empirical_spectrum(s, v, y)
    # All weight sits on rank 3 with v^2 = 0.49; others at round-off level.
    assert sp.v2[2] == pytest.approx(0.49, rel=1e-12)
    assert np.sum(np.delete(sp.v2, 2)) < 1e-25
    assert sp.v2_per_output.shape == (m, 1)


def test_roundoff_negatives_clipped_and_indefinite_rejected() -> None:
    v = np.linalg.qr(np.random.default_rng(2).normal(size=(5, 5)))[0]
    sp = empirical_spectrum(np.array([3.0, 1.0, 0.5, 0.0, -1e-15]), v, np.ones(5))
    assert sp.eta.min() == 0.0
    with pytest.raises(ValueError, match="not PSD"):
        empirical_spectrum(np.array([3.0, 1.0, 0.5, 0.0, -0.1]), v, np.ones(5))
    with pytest.raises(ValueError, match="y must have shape"):
        empirical_spectrum(np.ones(5), v, np.ones(4))


def test_power_law_exact_and_noisy() -> None:
    k = np.arange(1, 1001, dtype=float)
    eta = 3.0 * k ** -1.5
    fit = fit_power_law(eta[::-1], 1, 1000)  # order must not matter
    # Exact power law: least squares in log-log is exact up to round-off.
    assert fit.exponent == pytest.approx(1.5, rel=1e-12)
    assert fit.prefactor == pytest.approx(3.0, rel=1e-11)
    assert (fit.kmin, fit.kmax) == (1, 1000) and fit.r2 == pytest.approx(1.0, abs=1e-12)
    rng = np.random.default_rng(0)
    noisy = eta * np.exp(0.1 * rng.normal(size=eta.size))
    fit = fit_power_law(noisy, 10, 1000)
    # Slope std error = 0.1/sqrt(sum (log k - mean)^2) ~ 0.004 on ranks 10..1000: 0.02 = 5 sigma.
    assert fit.exponent == pytest.approx(1.5, abs=0.02)


def test_power_law_window_excludes_head_and_tail() -> None:
    k = np.arange(1, 501, dtype=float)
    eta = k ** -1.5
    eta[:5] = 1.0  # flat head (e.g. a constant mode)
    eta[400:] = 0.0  # numerically rank-deficient tail
    assert fit_power_law(eta, 10, 400).exponent == pytest.approx(1.5, rel=1e-12)
    assert abs(fit_power_law(eta, 1, 400).exponent - 1.5) > 0.05  # the head biases the fit
    with pytest.raises(ValueError, match="> 0"):
        fit_power_law(eta, 10, 450)
    with pytest.raises(ValueError, match="kmin < kmax"):
        fit_power_law(eta, 10, 10)
