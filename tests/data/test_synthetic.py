"""Synthetic sources: sphere sampling, zonal harmonics, the ReLU teacher, and their loading.

Oracles: closed forms (harmonic-space dimensions, Legendre polynomials, the 1-D quadrature
of P_k^2 against the density (1 - t^2)^((d-3)/2) of u·z), exact polynomial spans (least
squares), positive homogeneity, and Monte Carlo of E f^2 with tolerances of >= 5 standard
errors (measured spreads quoted at each test).
"""

from math import comb

import numpy as np
import pytest
from scipy import integrate, special

from ntkscale.data import load_dataset, validate_data
from ntkscale.data.synthetic import (gegenbauer, harmonic_dim, harmonics_target, make_synthetic,
                                     relu_teacher, sphere_points)


@pytest.mark.parametrize("d", [2, 3, 4, 7, 30])
def test_harmonic_dims(d):
    for K in range(0, 7):
        # harmonics of degree <= K = polynomials of degree <= K restricted to the sphere
        assert sum(harmonic_dim(d, k) for k in range(K + 1)) == comb(K + d - 1, K) + (comb(K + d - 2, K - 1) if K else 0)
    if d == 3:
        assert [harmonic_dim(3, k) for k in range(5)] == [1, 3, 5, 7, 9]
    if d == 4:
        assert [harmonic_dim(4, k) for k in range(5)] == [1, 4, 9, 16, 25]


@pytest.mark.parametrize("d", [2, 3, 5, 12])
@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_gegenbauer_norm_matches_the_addition_theorem(d, k):
    """E_u P_k(u·z)^2 = 1/N(d, k), by quadrature over t = u·z (density ∝ (1 - t^2)^((d-3)/2))."""
    w = lambda t: (1 - t * t) ** ((d - 3) / 2)  # noqa: E731
    num = integrate.quad(lambda t: gegenbauer(k, d, np.array(t)) ** 2 * w(t), -1, 1, limit=200)[0]
    den = integrate.quad(w, -1, 1, limit=200)[0]
    assert num / den == pytest.approx(1 / harmonic_dim(d, k), rel=1e-8)
    assert gegenbauer(k, d, np.array(1.0)) == pytest.approx(1.0, rel=1e-14)
    if d == 3:
        t = np.linspace(-1, 1, 11)
        np.testing.assert_allclose(gegenbauer(k, 3, t), special.eval_legendre(k, t), rtol=1e-12, atol=1e-14)


def test_sphere_points_norm_and_isotropy():
    X = sphere_points(20000, 4, np.random.default_rng(0))
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 2.0, rtol=1e-14)
    # E x x^T = I for norm sqrt(d); entry standard errors ~ 0.01, tolerance 0.05
    np.testing.assert_allclose(X.T @ X / len(X), np.eye(4), atol=0.05)


def _quadratic_features(X):
    d = X.shape[1]
    return np.column_stack([np.ones(len(X)), X] + [X[:, i] * X[:, j] for i in range(d) for j in range(i, d)])


def test_harmonics_target_is_a_polynomial_of_its_degree():
    rng = np.random.default_rng(1)
    X = sphere_points(400, 5, rng)
    f1, f2 = harmonics_target(5, 1, rng)(X), harmonics_target(5, 2, rng)(X)

    def rel_residual(F, y):
        return np.linalg.norm(F @ np.linalg.lstsq(F, y, rcond=None)[0] - y) / np.linalg.norm(y)

    lin = np.column_stack([np.ones(len(X)), X])
    assert rel_residual(lin, f1) < 1e-12  # degree 1: exactly linear
    assert rel_residual(_quadratic_features(X), f2) < 1e-12  # degree <= 2: exactly quadratic
    assert rel_residual(lin, f2) > 0.3  # and not linear (half its power is in degree 2)


def test_harmonics_target_has_unit_power_on_average():
    rng = np.random.default_rng(2)
    X = sphere_points(500, 6, rng)
    powers = [np.mean(harmonics_target(6, 3, rng)(X) ** 2) for _ in range(400)]
    # measured spread of one draw ~ 0.4, so the mean of 400 has s.e. ~ 0.02; tolerance 0.15
    assert np.mean(powers) == pytest.approx(1.0, abs=0.15)


def test_relu_teacher_homogeneous_with_he_variance():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((8, 7)) * np.linspace(0.5, 2.0, 8)[:, None]
    f = relu_teacher(7, 32, 2, rng)
    np.testing.assert_allclose(f(2.5 * x), 2.5 * f(x), rtol=1e-12)  # no biases: f(cx) = c f(x)
    sq = np.array([relu_teacher(7, 32, 2, rng)(x) ** 2 for _ in range(2000)])  # shape (2000, 8)
    ratio = sq.mean(axis=0) / (np.sum(x ** 2, axis=1) / 7)
    # E_W f(x)^2 = |x|^2/d at any width; per-point s.e. ~ 0.04 (measured), tolerance 0.2
    np.testing.assert_allclose(ratio, 1.0, atol=0.2)


def test_noise_is_added_to_the_same_function():
    kw = dict(target="teacher", teacher_width=64, teacher_depth=1)
    X0, y0, _ = make_synthetic("sphere", 4000, 6, np.random.default_rng(4), noise=0.0, **kw)
    X1, y1, meta = make_synthetic("sphere", 4000, 6, np.random.default_rng(4), noise=0.5, **kw)
    np.testing.assert_array_equal(X0, X1)
    assert np.std(y1 - y0) == pytest.approx(0.5, rel=0.05)  # s.e. of a std over 4000: ~1.1 %
    _, lab, _ = make_synthetic("sphere", 4000, 6, np.random.default_rng(4), classification=True, **kw)
    np.testing.assert_array_equal(lab, np.where(y0 > 0, 1, -1))
    assert meta["noise"] == 0.5 and meta["signal_variance"] > 0


def test_load_synthetic_sources():
    ds = load_dataset(validate_data({"source": "sphere", "d": 9, "n_train": 120, "degree": 2}), seed=1)
    assert ds.X_train.shape == (120, 9) and ds.X_test.shape == (30, 9)  # test_fraction 0.2
    assert ds.task == "regression" and ds.y_train.dtype == np.float64
    np.testing.assert_allclose(np.linalg.norm(ds.X_test, axis=1), 3.0, rtol=1e-14)  # preprocess none
    assert ds.info["n_generated"] == 150 and ds.info["generator"]["degree"] == 2
    ts = load_dataset(validate_data({"source": "teacher-student", "d": 4, "n": 100, "n_test": 10,
                                     "task": "classification", "teacher_depth": 3}), seed=1)
    assert ts.X_train.shape == (90, 4) and set(ts.classes.tolist()) == {-1, 1}
    again = load_dataset(validate_data({"source": "teacher-student", "d": 4, "n": 100, "n_test": 10,
                                        "task": "classification", "teacher_depth": 3}), seed=1)
    np.testing.assert_array_equal(ts.X_train, again.X_train)
    with pytest.raises(Exception, match=r"'data.n_train' = 95 is larger than the 90 rows left"):
        load_dataset(validate_data({"source": "sphere", "n": 100, "n_train": 95, "test_fraction": 0.1}))
