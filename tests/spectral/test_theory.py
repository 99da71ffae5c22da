"""Learning-curve theory: closed forms, the Canatar et al. oracle, high precision, Monte Carlo."""

from __future__ import annotations

from pathlib import Path

import mpmath
import numpy as np
import pytest

from ntkscale.spectral import (generalization_error, learning_curve, mode_errors, solve_kappa,
                               training_error, white_spectrum_error)

ORACLE = Path("/work/shared/oracles/MNIST_GaussRBF_theory.npz")


@pytest.mark.parametrize("alpha", [0.25, 0.5, 0.9, 1.1, 2.0, 5.0])
@pytest.mark.parametrize("sigma2", [0.0, 0.3])
def test_white_spectrum_closed_form(alpha: float, sigma2: float) -> None:
    n_modes = 200
    eta = np.full(n_modes, 1.0 / n_modes)
    v2 = np.full(n_modes, 1.0 / n_modes)  # total target power 1
    eg = generalization_error(eta, v2, alpha * n_modes, lam=0.0, sigma2=sigma2)
    # Exact algebra on both sides (kappa = 1 - alpha has a closed form): round-off only.
    assert eg == pytest.approx(white_spectrum_error(alpha, sigma2), rel=1e-12, abs=1e-15)


def test_white_spectrum_outputs_and_training_error() -> None:
    # C = 3 outputs: the noise term is counted once per output.
    n_modes, c, sigma2 = 100, 3, 0.2
    eta = np.full(n_modes, 1.0 / n_modes)
    v2 = np.full((n_modes, c), 1.0 / n_modes)
    for alpha in (0.5, 3.0):
        p = alpha * n_modes
        expected = white_spectrum_error(alpha, c * sigma2, target_power=c)
        assert generalization_error(eta, v2, p, 0.0, sigma2) == pytest.approx(expected, rel=1e-12)
    # Ridgeless least squares with p > N features: E[train MSE] = sigma2 (1 - N/p) per output
    # (residual projector has trace p - N); exact, so only round-off.
    p = 3.0 * n_modes
    assert training_error(eta, v2, p, 0.0, sigma2) == pytest.approx(c * sigma2 * (1 - 1 / 3),
                                                                    rel=1e-12)
    # Below the threshold the ridgeless interpolant has zero training error.
    assert training_error(eta, v2, 0.5 * n_modes, 0.0, sigma2) == 0.0
    # At alpha = 1 with noise the ridgeless error diverges, and the API says so without warnings.
    assert np.isinf(generalization_error(eta, v2, float(n_modes), 0.0, sigma2))


def _oracle() -> dict:
    d = np.load(ORACLE, allow_pickle=True)
    return {"p": d["arr_0"].astype(np.float64), "eta": d["arr_1"], "w": d["arr_2"] / 1e4,
            "eg": d["arr_3"], "etrain": d["arr_4"], "params": d["arr_5"].item()}


@pytest.mark.skipif(not ORACLE.exists(), reason="shared oracle data not present")
def test_reproduces_canatar_oracle() -> None:
    o = _oracle()
    prm = o["params"]
    c = 10  # MNIST one-hot outputs; arr_2 holds the weights already summed over them
    for ik in range(len(prm["ker_var"])):
        for il, lam in enumerate(prm["lamb"]):
            for isg, std in enumerate(prm["noise_std"]):
                s2 = float(std) ** 2  # noise_std is per output
                lc = learning_curve(o["eta"][ik], o["w"][ik], o["p"], lam, s2, n_outputs=c)
                # The oracle was produced by an independent (float32-input) code; the stored
                # values agree to ~3e-7, so 1e-5 leaves margin while catching any formula slip
                # (C sigma2 vs sigma2 in the noise term changes E_g by 30-80 %).
                np.testing.assert_allclose(lc.Eg, o["eg"][ik, il, isg], rtol=1e-5)
                # arr_4 is the training error with the noise added ONCE, (lam/kappa)^2 (E_g +
                # sigma2), while E_g counts it C times; we add it C times. Undo the difference.
                lok2 = (lam / lc.kappa) ** 2
                np.testing.assert_allclose(lc.Etrain - lok2 * (c - 1) * s2,
                                           o["etrain"][ik, il, isg], rtol=1e-5)


def test_mode_errors_sum_to_eg() -> None:
    rng = np.random.default_rng(1)
    eta = np.sort(rng.random(50) ** 4)[::-1]
    eta[-5:] = 0.0  # zero modes carry unlearnable power
    v2 = rng.random((50, 2))
    p = np.array([3.0, 20.0, 44.0, 45.0, 80.0])
    for lam in (0.0, 1e-3):
        lc = learning_curve(eta, v2, p, lam, sigma2=0.1)
        finite = np.isfinite(lc.Eg)
        # Same terms summed in a different order: round-off only.
        np.testing.assert_allclose(lc.mode_errors.sum(axis=1)[finite], lc.Eg[finite], rtol=1e-12)
        assert mode_errors(eta, v2, 20.0, lam, 0.1).shape == (50,)
    # lam = 0 at p = n_nz = 45: kappa = 0, gamma = 1 -> E_g = inf (noise); p > 45 finite again.
    lc0 = learning_curve(eta, v2, p, 0.0, sigma2=0.1)
    assert lc0.kappa[3] == 0.0 and np.isinf(lc0.Eg[3]) and np.isfinite(lc0.Eg[4])


def _kappa_mp(eta: np.ndarray, p: float, lam: float, dps: int = 50) -> float:
    """Root by bisection in log kappa at ``dps`` digits (naive sum form: needs enough digits)."""
    with mpmath.workdps(dps):
        e = [mpmath.mpf(float(x)) for x in eta if x > 0]
        lam_mp = mpmath.mpf(lam)

        def f(k: mpmath.mpf) -> mpmath.mpf:
            return 1 - lam_mp / k - mpmath.fsum(x / (p * x + k) for x in e)

        lo, hi = mpmath.log(mpmath.mpf("1e-330")), mpmath.log(lam_mp + mpmath.fsum(e))
        for _ in range(200):  # plain bisection: slow but unconditionally right
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if f(mpmath.exp(mid)) < 0 else (lo, mid)
        return float(mpmath.exp((lo + hi) / 2))


@pytest.mark.parametrize("lam", [0.0, 1e-6, 0.3])
def test_kappa_vs_high_precision(lam: float) -> None:
    eta = np.concatenate([np.arange(1, 13, dtype=float) ** -2.0, np.zeros(3)])  # 12 nonzero
    for p in (1.0, 5.5, 11.9):
        # Brent in log kappa + Newton polish: ~eps relative; the root's condition number is
        # < 100 here, so 1e-13 bounds float64 round-off (not method error).
        assert solve_kappa(eta, p, lam) == pytest.approx(_kappa_mp(eta, p, lam), rel=1e-13)


@pytest.mark.parametrize("lam", [0.0, 1e-150])
def test_kappa_spectrum_spanning_300_decades(lam: float) -> None:
    # 1 - sum eta/(p eta + kappa) cancels catastrophically in float64 here; the solver's
    # learned/unlearned split must not. The reference needs ~330 digits for the naive form.
    eta = 10.0 ** -(25.0 * np.arange(13))
    for p in (1.0, 4.5, 12.5):
        ref = _kappa_mp(eta, p, lam, dps=340)
        assert solve_kappa(eta, p, lam) == pytest.approx(ref, rel=1e-13)


def test_kappa_ridgeless_beyond_rank_and_continuity() -> None:
    eta = np.concatenate([np.arange(1, 21, dtype=float) ** -1.5, np.zeros(5)])  # n_nz = 20
    p = np.array([20.0, 25.0, 100.0])
    np.testing.assert_array_equal(solve_kappa(eta, p, 0.0), 0.0)
    # lam -> 0+: kappa ~ lam/(1 - n_nz/p) and E_g, E_train are continuous at lam = 0.
    v2 = np.ones(25) / 25
    lam = 1e-12
    k = solve_kappa(eta, p[1:], lam)
    np.testing.assert_allclose(k, lam / (1 - 20 / p[1:]), rtol=1e-6)  # O(kappa/eta_min) terms
    a, b = learning_curve(eta, v2, p[1:], 0.0, 0.1), learning_curve(eta, v2, p[1:], lam, 0.1)
    np.testing.assert_allclose(a.Eg, b.Eg, rtol=1e-8)
    np.testing.assert_allclose(a.Etrain, b.Etrain, rtol=1e-8)


def test_kappa_large_p_and_residual() -> None:
    eta = np.arange(1, 2001, dtype=float) ** -1.2
    p = np.logspace(0, 12, 25)
    for lam in (0.0, 1e-3):
        k = solve_kappa(eta, p, lam)
        pos = k > 0
        resid = k[pos] - lam - k[pos] * np.sum(eta / (p[pos, None] * eta + k[pos, None]), axis=1)
        # Relative residual of the fixed-point equation at float64 round-off (N = 2000 terms).
        assert np.max(np.abs(resid) / k[pos]) < 1e-12
    # Huge p with a ridge: kappa -> lam from above; E_g -> 0.
    assert solve_kappa(eta, 1e12, 1e-3) == pytest.approx(1e-3, rel=1e-6)


def test_monte_carlo_gaussian_features() -> None:
    """Average KRR error on Gaussian features vs theory (asymptotically exact in N, p)."""
    rng = np.random.default_rng(0)
    n_modes, trials = 400, 40
    eta = np.arange(1, n_modes + 1) ** -1.5
    eta /= eta.sum()
    v = rng.normal(size=n_modes) * np.sqrt(eta)
    for p, lam, s2 in [(100, 1e-2, 0.1), (200, 0.05, 0.5)]:
        eg, tr = [], []
        for _ in range(trials):
            phi = rng.normal(size=(p, n_modes))  # phi_rho(x_i): orthonormal under the population
            y = phi @ v + np.sqrt(s2) * rng.normal(size=p)
            a = eta * (phi.T @ np.linalg.solve((phi * eta) @ phi.T + lam * np.eye(p), y))
            eg.append(np.sum((a - v) ** 2))
            tr.append(np.mean((phi @ a - y) ** 2))
        lc = learning_curve(eta, v * v, p, lam, s2)
        # Standard error of the 40-trial mean is ~2 % here, finite-size bias ~1 %: 10 % is ~4 sigma.
        assert np.mean(eg) == pytest.approx(lc.Eg[0], rel=0.10)
        assert np.mean(tr) == pytest.approx(lc.Etrain[0], rel=0.10)


def test_input_validation() -> None:
    eta = np.array([1.0, 0.5])
    with pytest.raises(ValueError, match="lam"):
        solve_kappa(eta, 3.0, -1.0)
    with pytest.raises(ValueError, match="p "):
        solve_kappa(eta, 0.0, 0.1)
    with pytest.raises(ValueError, match="eta"):
        solve_kappa(np.array([1.0, -0.1]), 3.0, 0.1)
    with pytest.raises(ValueError, match="n_outputs"):
        generalization_error(eta, np.ones((2, 3)), 3.0, n_outputs=2)


def test_kappa_at_a_huge_ridge_is_the_ridge():
    """lam >> sum(eta): kappa = lam + sum(eta) - O(sum(eta)²/lam); F(hi) rounds to 0 there
    (it used to stop brentq with a sign error at lam ~ 1e9 sum(eta))."""
    from ntkscale.spectral import solve_kappa

    eta = 1.0 / np.arange(1, 101) ** 2
    for lam in (1e7, 1e9, 1e12):
        k = solve_kappa(eta, 50.0, lam)
        assert np.isclose(k, lam + eta.sum(), rtol=1e-12)
