"""The shared trial loop (ntkscale.spectral.subsets): disjoint nested splits, the same blocks
from the cached Gram and from per-trial reads, and the same subsets in the learning-curve
and the ridge-wise double-descent experiments."""

import numpy as np
import pytest

from ntkscale.linop import DenseGram
from ntkscale.spectral.curves import empirical_learning_curve
from ntkscale.spectral.double_descent import ridgewise_double_descent
from ntkscale.spectral.subsets import pinv_weights, subsample_trials

rng = np.random.default_rng(1)
A = rng.standard_normal((40, 6))
K = A @ A.T  # shape: (40, 40), rank 6
Y = rng.standard_normal((40, 2))


@pytest.mark.parametrize("cache_bytes", [0, 2**30])
def test_trials_are_disjoint_splits_with_their_gram_blocks(cache_bytes):
    got = list(subsample_trials(DenseGram(K), 12, 9, 2, 3, noise_std=0.5, seed=7, cache_bytes=cache_bytes))
    assert len(got) == 3
    for tr in got:
        assert tr.train.shape == (12,) and tr.test.shape == (9,) and tr.noise.shape == (12, 2)
        assert not set(tr.train) & set(tr.test)
        np.testing.assert_array_equal(tr.block, K[np.ix_(np.concatenate([tr.train, tr.test]), tr.train)])
    assert not np.array_equal(got[0].train, got[1].train)


def test_same_seed_same_trials_whichever_read_path():
    a = list(subsample_trials(DenseGram(K), 12, 9, 2, 2, noise_std=0.5, seed=3, cache_bytes=0))
    b = list(subsample_trials(DenseGram(K), 12, 9, 2, 2, noise_std=0.5, seed=3))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.train, y.train)
        np.testing.assert_array_equal(x.noise, y.noise)
        np.testing.assert_array_equal(x.block, y.block)


def test_both_experiments_draw_the_same_subsets():
    # ridgeless: both fit the same min-norm interpolant on the same subsets and noise
    s2, p, nt = 0.09, 10, 15
    curve = empirical_learning_curve(K, Y, [p], ridge=0.0, n_trials=4, n_test=nt,
                                     noise_std=np.sqrt(s2), seed=11)
    dd = ridgewise_double_descent(K, Y, [0.0], p, noise=s2, trials=4, test_size=nt, seed=11)
    np.testing.assert_allclose(dd.errors, curve.errors, rtol=1e-8)


def test_pinv_weights_drop_the_null_space_only_when_ridgeless():
    d = np.array([1e-20, 1e-3, 2.0])
    np.testing.assert_array_equal(pinv_weights(d, 0.0, mean_diag=1.0), [0.0, 1e3, 0.5])
    np.testing.assert_array_equal(pinv_weights(d, 1e-9, mean_diag=1.0), [0.0, 1e3, 0.5])
    np.testing.assert_array_equal(pinv_weights(d, 0.0, mean_diag=1e5), [0.0, 0.0, 0.5])


def test_plain_arrays_read_by_blocks_when_not_cached():
    # a plain (M, M) array has no take(): trials read it by blocks (regression: AttributeError)
    rng = np.random.default_rng(3)
    A = rng.standard_normal((60, 8))
    K = A @ A.T / 8 + 0.1 * np.eye(60)
    y = rng.standard_normal(60)
    a = empirical_learning_curve(K, y, [10, 20], ridge=0.1, n_trials=2, n_test=20, cache_bytes=0)
    b = empirical_learning_curve(K, y, [10, 20], ridge=0.1, n_trials=2, n_test=20)
    np.testing.assert_allclose(a.errors, b.errors, rtol=1e-12)
    dd = ridgewise_double_descent(K, y, [1e-2, 1e-1], 20, trials=2, test_size=20, cache_bytes=0)
    dd_cached = ridgewise_double_descent(K, y, [1e-2, 1e-1], 20, trials=2, test_size=20)
    np.testing.assert_allclose(dd.errors, dd_cached.errors, rtol=1e-12)


def test_groups_keep_twins_on_one_side_of_the_split():
    """An image and its mirror share a group: no test row's twin is trained on. Every row its
    own group draws exactly what no groups draws."""
    twins = np.arange(40) % 20  # rows i and i + 20 are twins
    for tr in subsample_trials(DenseGram(K), 12, 9, 2, 4, seed=5, groups=twins):
        assert not set(twins[tr.train]) & set(twins[tr.test])
        assert tr.test.shape == (9,)
        np.testing.assert_array_equal(tr.block, K[np.ix_(np.concatenate([tr.train, tr.test]), tr.train)])
    a = list(subsample_trials(DenseGram(K), 12, 9, 2, 2, seed=3, groups=np.arange(40)))
    b = list(subsample_trials(DenseGram(K), 12, 9, 2, 2, seed=3))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.train, y.train)
        np.testing.assert_array_equal(x.test, y.test)
    with pytest.raises(ValueError, match="share no group"):
        next(subsample_trials(DenseGram(K), 31, 9, 2, 1, seed=0, groups=twins))  # >= 16 groups trained
    with pytest.raises(ValueError, match="one group per pool row"):
        next(subsample_trials(DenseGram(K), 12, 9, 2, 1, groups=twins[:30]))


def test_duplicated_pool_the_groups_measure_the_error_on_new_samples():
    """A pool of 150 noisy points and their exact copies (the copy keeps the label, as a mirror
    image does). Without groups a test row whose copy was trained on is nearly fitted, so the
    held-out error is about half the error on new points; with groups it is the error on new
    points, checked against fits of as many distinct points (150 rows of 300 hold ~113 distinct
    points) tested on fresh draws. Bounds: 6 trials, measured ratios 1.7-2.4 and 0.83-1.35 over
    3 data seeds."""
    r = np.random.default_rng(0)
    f = lambda z: np.sin(3 * z[:, :1]) * np.cos(2 * z[:, 1:])  # noqa: E731
    gram = lambda z: np.exp(-np.sum((z[:, None] - z[None]) ** 2, -1) / 0.1)  # noqa: E731
    x, e = r.uniform(-1, 1, (150, 2)), 0.5 * r.standard_normal((150, 1))
    X, y = np.concatenate([x, x]), np.concatenate([f(x) + e, f(x) + e])
    kw = dict(ridge=1e-3, relative_ridge=True, n_trials=6, n_test=40, seed=2)
    plain = empirical_learning_curve(gram(X), y, [150], **kw).mean[0]
    grouped = empirical_learning_curve(gram(X), y, [150], groups=np.arange(300) % 150, **kw).mean[0]
    assert grouped > 1.5 * plain, (grouped, plain)
    xs = r.uniform(-1, 1, (2500, 2))
    fresh = empirical_learning_curve(gram(xs), f(xs) + 0.5 * r.standard_normal((2500, 1)), [113],
                                     ridge=1e-3, relative_ridge=True, n_trials=6, n_test=2000, seed=2).mean[0]
    assert 0.6 < grouped / fresh < 1.6, (grouped, fresh)
