"""Eigenlearning vs Canatar theory: two solvers, two sets of formulas, one answer."""

from __future__ import annotations

import numpy as np
import pytest

from ntkscale.spectral import (conservation_residual, effective_regularization,
                               eigenlearning_predict, learnabilities, learning_curve,
                               overfitting_coefficient, solve_kappa)


def _spectrum(n: int = 300, zeros: int = 20) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    eta = np.concatenate([np.arange(1, n + 1, dtype=float) ** -1.3, np.zeros(zeros)])
    scale = np.concatenate([eta[:n] ** 0.5, np.full(zeros, 1e-3)])  # some power in zero modes
    v2 = rng.random((n + zeros, 3)) * scale[:, None]
    return eta, v2


@pytest.mark.parametrize("lam", [0.0, 1e-4, 0.1])
def test_agrees_with_canatar(lam: float) -> None:
    eta, v2 = _spectrum()
    p = np.array([1.0, 7.0, 50.0, 299.0, 301.0, 1000.0, 1e5])
    p = p[(lam > 0) | (p != 300.0)]
    lc = learning_curve(eta, v2, p, lam, sigma2=0.05)
    el = eigenlearning_predict(eta, v2, p, lam, sigma2=0.05)
    # Independent root finders (Brent on kappa vs monotone Newton on kappa_s), both ~1e-15
    # relative; the error formulas differ algebraically, so agreement is at round-off.
    np.testing.assert_allclose(el.kappa_s * p, lc.kappa, rtol=1e-12, atol=0)
    np.testing.assert_allclose(el.learnability, lc.learnability, rtol=1e-11, atol=1e-14)
    np.testing.assert_allclose(el.E0, 1.0 / (1.0 - lc.gamma), rtol=1e-10)
    np.testing.assert_allclose(el.Eg, lc.Eg, rtol=1e-10)
    np.testing.assert_allclose(el.test_mse, lc.Eg + 3 * 0.05, rtol=1e-10)
    np.testing.assert_allclose(el.train_mse, lc.Etrain, rtol=1e-10, atol=1e-300)


@pytest.mark.parametrize("lam", [0.0, 1e-3, 1.0])
def test_conservation_law(lam: float) -> None:
    eta, _ = _spectrum()
    p = np.array([2.0, 40.0, 250.0])
    kappa_s = effective_regularization(eta, p, lam)
    L = learnabilities(eta, kappa_s)
    res = conservation_residual(L, p, lam, kappa_s)
    # sum of 320 learnabilities, each with ~eps relative error: residual ~1e-13 * p at most.
    assert np.max(np.abs(res) / p) < 1e-12
    # Learnabilities lie in [0, 1] and zero modes are never learned.
    assert np.all((L >= 0) & (L <= 1)) and np.all(L[:, -20:] == 0)
    assert effective_regularization(eta, 2.0, lam) == pytest.approx(kappa_s[0], rel=1e-15)


def test_overfitting_coefficient_is_dkappa_dlam() -> None:
    eta, _ = _spectrum()
    for p in (10.0, 200.0):
        lam, h = 1e-2, 1e-6
        deriv = (solve_kappa(eta, p, lam + h) - solve_kappa(eta, p, lam - h)) / (2 * h)
        e0 = overfitting_coefficient(learnabilities(eta, effective_regularization(eta, p, lam)), p)
        # Central difference: O(h^2) truncation and O(eps kappa/h) ~ 1e-10 round-off.
        assert e0 == pytest.approx(deriv, rel=1e-7)


def test_ridgeless_overparameterized_limit() -> None:
    eta, v2 = _spectrum(n=50, zeros=10)
    el = eigenlearning_predict(eta, v2, np.array([50.0, 100.0]), 0.0, sigma2=0.2)
    # kappa_s = 0: every nonzero mode learned (L = 1), E0 = p/(p - n_nz): inf at p = n_nz.
    assert np.all(el.kappa_s == 0) and np.all(el.learnability[:, :50] == 1)
    assert np.isinf(el.E0[0]) and el.E0[1] == pytest.approx(2.0, rel=1e-15)
    assert el.train_mse[0] == 0.0  # interpolation exactly at p = n_nz


def test_wide_spectrum_agreement() -> None:
    # 300 decades: both solvers sum only small terms (learned/unlearned split); Newton and Brent
    # then agree to a few eps although 1 - sum L/p cancels completely in the naive form.
    eta = 10.0 ** -(25.0 * np.arange(13))
    p = np.array([1.0, 4.5, 12.5])
    for lam in (0.0, 1e-150):
        np.testing.assert_allclose(effective_regularization(eta, p, lam) * p,
                                   solve_kappa(eta, p, lam), rtol=1e-13)
