"""The guard around large LAPACK Cholesky calls (ntkscale._blas): OpenBLAS's threaded potrf
segfaults at n >= 16 384 on the AVX-512 CI-class VM, with one thread it factors."""

from __future__ import annotations

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from ntkscale._blas import POTRF_THREADED_MAX, potrf_threads


def _blas_threads() -> list[int]:
    return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]


def test_one_blas_thread_above_the_threshold_only():
    before = _blas_threads()
    with potrf_threads(POTRF_THREADED_MAX):
        assert _blas_threads() == before  # at the threshold: as they were
    with potrf_threads(POTRF_THREADED_MAX + 1):
        assert set(_blas_threads()) == {1}
    assert _blas_threads() == before  # restored


@pytest.mark.slow
def test_dense_cholesky_solve_at_n_20000_does_not_crash():
    """solve(K, y, solver='cholesky') at n = 20 000 in memory: LAPACK's threaded dpotrf at this
    order kills this process (SIGSEGV, 2 threads, measured); the blocked ``_blas.potrf`` factors
    it with every call threaded, exact to refinement."""
    from ntkscale.solvers import solve

    n = 20_000
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, 32)) / 6
    sq = (X * X).sum(1)
    K = np.exp(-0.5 * (sq[:, None] + sq[None, :] - 2 * X @ X.T))
    y = rng.standard_normal(n)
    res = solve(K, y, 1e-3, solver="cholesky")
    assert res.residual < 1e-10
