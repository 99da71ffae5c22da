"""NTKRegressor / NTKClassifier: sklearn's own checks, dense oracles, a real dataset,
the stored-Gram path on a 2-process cluster, and bad input."""

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.exceptions import NotFittedError
from sklearn.kernel_ridge import KernelRidge
from sklearn.utils.estimator_checks import parametrize_with_checks

from ntkscale import stax
from ntkscale.estimators import NTKClassifier, NTKRegressor
from ntkscale.storage import StoreMismatchError

ARCH = stax.serial(stax.Dense(128, W_std=2**0.5, b_std=0.1), stax.Relu(),
                   stax.Dense(128, W_std=2**0.5, b_std=0.1), stax.Relu(), stax.Dense(1))


@parametrize_with_checks([NTKRegressor(), NTKClassifier()])
def test_sklearn_check_estimator(estimator, check):
    # every check runs; none is skipped or expected to fail (the pandas and array-API
    # checks skip themselves when those packages are absent)
    check(estimator)


def _data(n=160, m=40, d=9, C=2, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n + m, d))
    Y = np.stack([np.sin(X[:, 0]) + 0.1 * X[:, 1] ** 2, X[:, 2] * X[:, 3]], axis=1)[:, :C]
    return X[:n], Y[:n], X[n:], Y[n:]


def test_matches_sklearn_kernel_ridge_on_the_same_kernel():
    X, Y, Xt, _ = _data()
    lam = 0.05
    ours = NTKRegressor(ARCH, ridge=lam).fit(X, Y)
    K = ARCH.kernel_fn(X, None, "ntk", dtype=np.float64)
    Kt = ARCH.kernel_fn(Xt, X, "ntk", dtype=np.float64)
    ref = KernelRidge(alpha=lam, kernel="precomputed").fit(K, Y)
    np.testing.assert_allclose(ours.predict(Xt), ref.predict(Kt), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ours.alpha_, ref.dual_coef_, rtol=1e-9, atol=1e-12)
    assert ours.ridge_ == lam and ours.solver_ == "cholesky"


def test_relative_ridge_is_neural_tangents_diag_reg():
    X, Y, _, _ = _data()
    est = NTKRegressor(ARCH, ridge=1e-2, relative_ridge=True).fit(X, Y[:, 0])
    K = ARCH.kernel_fn(X, None, "ntk", dtype=np.float64)
    assert est.ridge_ == pytest.approx(1e-2 * np.trace(K) / len(K), rel=1e-12)
    assert est.predict(X).shape == (len(X),)


def test_ridgeless_interpolates_and_multi_output():
    X, Y, Xt, _ = _data()
    est = NTKRegressor(ARCH, ridge=0.0).fit(X, Y)
    assert est.solver_ == "eigh"
    np.testing.assert_allclose(est.predict(X), Y, atol=1e-7)  # train residual ~ 0
    single = [NTKRegressor(ARCH, ridge=0.0).fit(X, Y[:, c]).predict(Xt) for c in range(2)]
    np.testing.assert_allclose(est.predict(Xt), np.stack(single, axis=1), rtol=1e-10, atol=1e-12)


def test_posterior_std_matches_dense_formulas():
    X, Y, Xt, _ = _data(n=80, m=15)
    lam = 1e-3
    I = np.eye(len(X))

    def nn(a, b):
        return ARCH.kernel_fn(a, b, "nngp", dtype=np.float64)

    def nt(a, b):
        return ARCH.kernel_fn(a, b, "ntk", dtype=np.float64)

    # NNGP posterior
    _, std = NTKRegressor(ARCH, kernel="nngp", ridge=lam).fit(X, Y).predict(Xt, return_std=True)
    var = np.diag(nn(Xt, None)) - np.einsum("ij,ji->i", nn(Xt, X),
                                            np.linalg.solve(nn(X, None) + lam * I, nn(X, Xt)))
    np.testing.assert_allclose(std, np.sqrt(var), rtol=1e-6)
    # NTK-GP at t = inf (Lee et al. 2019), with the ridge in Θ + λI
    _, std = NTKRegressor(ARCH, kernel="ntk", ridge=lam).fit(X, Y).predict(Xt, return_std=True)
    A = nt(Xt, X) @ np.linalg.inv(nt(X, None) + lam * I)
    cov = nn(Xt, None) + A @ nn(X, None) @ A.T - A @ nn(X, Xt) - (A @ nn(X, Xt)).T
    np.testing.assert_allclose(std, np.sqrt(np.diag(cov)), rtol=1e-6)
    # at the training points the NNGP posterior with a tiny ridge is (almost) certain
    _, s_train = NTKRegressor(ARCH, kernel="nngp", ridge=1e-8).fit(X, Y).predict(X[:5], return_std=True)
    assert np.all(s_train < 1e-3)


def test_gcv_and_loo_pick_a_ridge_on_the_grid():
    X, Y, _, _ = _data()
    Y = Y + 0.3 * np.random.default_rng(5).standard_normal(Y.shape)  # noise: a ridge helps
    for rule in ("gcv", "loo"):
        est = NTKRegressor(ARCH, ridge=rule, ridge_grid=np.logspace(-4, 1, 11), relative_ridge=True).fit(X, Y)
        sel = est.ridge_selection_
        assert sel.method == rule and est.ridge_ == sel.ridge and est.ridge_ > 0
        assert sel.score == pytest.approx(np.min(sel.scores))


def test_digits_classification_accuracy():
    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    clf = NTKClassifier(ridge=0.0).fit(X[:1000], y[:1000])
    acc = clf.score(X[1000:], y[1000:])
    # measured 0.974 (ridgeless, default depth-3 ReLU NTK) on this split
    assert acc > 0.95, acc
    assert clf.decision_function(X[1000:1010]).shape == (10, 10)


@pytest.mark.cluster
def test_stored_path_on_cluster_matches_memory(client, tmp_path):
    X, Y, Xt, _ = _data(n=150, m=30)
    lam = 1e-3
    mem = NTKRegressor(ARCH, ridge=lam).fit(X, Y)
    kw = dict(ridge=lam, store=str(tmp_path / "g"), tile=64, client=client, store_dtype="float64")
    est = NTKRegressor(ARCH, store_nngp=True, **kw).fit(X, Y)
    np.testing.assert_allclose(est.alpha_, mem.alpha_, rtol=1e-8, atol=1e-10)
    m1, s1 = est.predict(Xt, return_std=True)
    m0, s0 = mem.predict(Xt, return_std=True)
    np.testing.assert_allclose(m1, m0, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(s1, s0, rtol=1e-6)
    # same data again: the store is reused; other data: refused
    est.fit(X, Y)
    with pytest.raises(StoreMismatchError, match="other data"):
        NTKRegressor(ARCH, store_nngp=True, **kw).fit(X + 1e-3, Y)


def _nan_at_3(y):
    y = y.copy()
    y[3] = np.nan
    return y


@pytest.mark.parametrize("kwargs, y_fn, match", [
    ({}, _nan_at_3, "NaN"),
    ({}, lambda y: y[:-1], "inconsistent numbers of samples"),
    ({"ridge": -1.0}, lambda y: y, ">= 0"),
    ({"ridge": "aic"}, lambda y: y, "'gcv' or 'loo'"),
    ({"kernel": "rbf"}, lambda y: y, "'ntk' or 'nngp'"),
    ({"solver": "qr"}, lambda y: y, "solver must be one of"),
])
def test_bad_input(kwargs, y_fn, match):
    X, Y, _, _ = _data()
    with pytest.raises(ValueError, match=match):
        NTKRegressor(ARCH, **kwargs).fit(X, y_fn(Y))


def test_predict_before_fit_and_feature_mismatch():
    X, Y, Xt, _ = _data()
    with pytest.raises(NotFittedError):
        NTKRegressor(ARCH).predict(Xt)
    est = NTKRegressor(ARCH).fit(X, Y)
    with pytest.raises(ValueError, match="features"):
        est.predict(Xt[:, :3])
