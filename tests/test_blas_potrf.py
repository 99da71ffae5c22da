"""ntkscale._blas.potrf: the blocked Cholesky above the order OpenBLAS factors safely with
threads equals LAPACK's unblocked one (the order limit lowered so small matrices take the
blocked path)."""

import numpy as np
import pytest
import scipy.linalg as sla

from ntkscale import _blas


def _spd(n, seed=0, dtype=np.float64):
    r = np.random.default_rng(seed)
    X = r.standard_normal((n, 40))
    return np.asarray(np.exp(-0.05 * ((X[:, None] - X[None]) ** 2).sum(-1)) + 1e-2 * np.eye(n), dtype=dtype)


@pytest.mark.parametrize("n,limit", [(350, 100), (300, 100), (257, 128), (90, 100)])
@pytest.mark.parametrize("lower", [False, True])
def test_blocked_factor_equals_lapack(monkeypatch, n, limit, lower):
    monkeypatch.setattr(_blas, "POTRF_THREADED_MAX", limit)
    K = _spd(n)
    c, info = _blas.potrf(np.array(K, order="F"), lower=lower)
    ref = sla.cholesky(K, lower=lower)
    assert info == 0
    # float64 Cholesky is backward stable: the factors agree to rounding amplified by cond(K)
    np.testing.assert_allclose(c, ref, rtol=0, atol=1e-10 * np.abs(ref).max())
    np.testing.assert_array_equal(np.tril(c, -1) if not lower else np.triu(c, 1), 0.0)


def test_blocked_factor_float32_and_in_place(monkeypatch):
    monkeypatch.setattr(_blas, "POTRF_THREADED_MAX", 64)
    K = _spd(200, seed=1, dtype=np.float32)
    A = np.array(K, order="F")
    c, info = _blas.potrf(A)
    assert info == 0 and c is A and c.dtype == np.float32
    np.testing.assert_allclose(c.T @ c, K, rtol=0, atol=2e-5 * np.abs(K).max())


@pytest.mark.parametrize("bad", [30, 150, 299])  # in the first block, the second, the last
def test_not_positive_definite_reports_the_leading_minor(monkeypatch, bad):
    """LAPACK's info: the order of the first leading minor that is not positive definite."""
    monkeypatch.setattr(_blas, "POTRF_THREADED_MAX", 100)
    K = _spd(300, seed=2)
    K[bad, bad] = -1.0  # the leading minors up to `bad` are positive definite
    _, info = _blas.potrf(np.array(K, order="F"))
    _, ref = sla.lapack.dpotrf(np.array(K, order="F"))
    assert info == ref == bad + 1
