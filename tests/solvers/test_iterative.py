"""Nyström, PCG, ridgeless and solver='auto' against dense oracles (scipy / numpy)."""

import numpy as np
import pytest
import scipy.linalg as sla

from ntkscale import stax
from ntkscale.operator import DenseGram, StoredGram
from ntkscale.solvers import (ConvergenceWarning, NotConvergedError, minnorm_cg, minnorm_eigh, nystrom,
                              pcg, pcg_path, solve)
from ntkscale.tiling import build_gram

ARCH = stax.serial(stax.Dense(256, W_std=2**0.5, b_std=0.1), stax.Relu(),
                   stax.Dense(256, W_std=2**0.5, b_std=0.1), stax.Relu(), stax.Dense(1))


def _gram(n=300, d=20, seed=0):
    X = np.random.default_rng(seed).standard_normal((n, d))
    return X, np.asarray(ARCH.kernel_fn(X, None, "ntk"), dtype=np.float64)


@pytest.fixture(scope="module")
def problem():
    X, K = _gram()
    Y = np.random.default_rng(1).standard_normal((K.shape[0], 3))
    return X, K, Y


def test_nystrom_exact_on_low_rank():
    rng = np.random.default_rng(0)
    A = rng.standard_normal((200, 15))
    K = A @ A.T
    ny = nystrom(DenseGram(K), 20, seed=1)
    # rank 15 < sketch 20: the approximation is exact up to the stabilizing shift
    np.testing.assert_allclose(ny.matvec(np.eye(200)), K, atol=1e-8 * np.abs(K).max())
    np.testing.assert_allclose(ny.lam[:15], np.linalg.eigvalsh(K)[::-1][:15], rtol=1e-9)
    np.testing.assert_allclose(ny.U.T @ ny.U, np.eye(20), atol=1e-10)


def test_nystrom_top_eigenvalues_of_ntk(problem):
    _, K, _ = problem
    exact = np.linalg.eigvalsh(K)[::-1]
    ny = nystrom(DenseGram(K), 60, power_iters=2, seed=0, oversample=20)
    assert ny.passes == 3
    # d = 20 Gaussian data: after the top eigenvalue the spectrum is flat (λ2..λ10 within
    # 30 %), so the gaps are small; with 2 power steps the top 10 are still within 1e-4
    np.testing.assert_allclose(ny.lam[:10], exact[:10], rtol=1e-4)
    assert abs(ny.lam[0] / exact[0] - 1) < 1e-10  # the isolated top one is exact
    assert np.all(ny.lam <= exact[:60] * (1 + 1e-9))  # Nyström never overestimates


@pytest.mark.parametrize("rel_ridge", [1e-1, 1e-3])
def test_pcg_matches_cholesky(problem, rel_ridge):
    _, K, Y = problem
    ridge = rel_ridge * np.mean(np.diag(K))
    ref = sla.cho_solve(sla.cho_factor(K + ridge * np.eye(len(K))), Y)
    plain = pcg(DenseGram(K), Y, ridge, tol=1e-10, maxiter=2000)
    pre = pcg(DenseGram(K), Y, ridge, precond=nystrom(DenseGram(K), 50), tol=1e-10)
    for res in (plain, pre):
        assert res.converged and res.residual < 1e-9
        # forward error <= cond * backward error; cond(K + ridge I) <= 1/rel_ridge here
        np.testing.assert_allclose(res.x, ref, rtol=0, atol=1e-9 / rel_ridge * np.abs(ref).max())
    # d = 20 Gaussian data has a flat spectrum tail, so rank 50 helps less than on real
    # data; still clearly fewer iterations
    assert pre.iterations < 0.6 * plain.iterations, (pre.iterations, plain.iterations)
    assert pre.info["rank"] == 50 and len(pre.history) == pre.iterations + 1


def test_pcg_on_stored_gram_equals_dense(problem, tmp_path):
    X, K, Y = problem
    build_gram(ARCH, X, tmp_path / "g", tile=64, dtype=np.float64, client="sync")
    ridge = 1e-2 * np.mean(np.diag(K))
    with StoredGram(tmp_path / "g", "ntk", client="sync") as op:
        res = pcg(op, Y[:, 0], ridge, precond=nystrom(op, 40), tol=1e-10)
        assert res.passes == op.passes - 1  # the sketch pass is not the solve's
    ref = np.linalg.solve(K + ridge * np.eye(len(K)), Y[:, 0])
    assert res.x.shape == (len(K),)
    np.testing.assert_allclose(res.x, ref, atol=1e-7 * np.abs(ref).max())


def test_pcg_warm_start_and_path(problem):
    _, K, Y = problem
    mean = np.mean(np.diag(K))
    ridges = [1e-1 * mean, 1e-2 * mean, 1e-3 * mean]
    results = pcg_path(DenseGram(K), Y, ridges, rank=40, tol=1e-10)
    for r, res in zip(ridges, results):
        ref = np.linalg.solve(K + r * np.eye(len(K)), Y)
        np.testing.assert_allclose(res.x, ref, atol=1e-6 * np.abs(ref).max())
        assert res.info["sketch_passes"] == 1
    again = pcg(DenseGram(K), Y, ridges[1], x0=results[1].x, tol=1e-8)
    assert again.iterations <= 1


def test_pcg_reports_non_convergence(problem):
    _, K, Y = problem
    ridge = 1e-6 * np.mean(np.diag(K))
    with pytest.warns(ConvergenceWarning, match="stopped after 3 iterations"):
        res = pcg(DenseGram(K), Y, ridge, tol=1e-12, maxiter=3)
    assert not res.converged and res.residual > 1e-12
    with pytest.raises(NotConvergedError, match="raise maxiter"):
        pcg(DenseGram(K), Y, ridge, tol=1e-12, maxiter=3, raise_on_fail=True)


def test_ridgeless_equals_pinv_on_singular_gram():
    X, _ = _gram(120, seed=3)
    X = np.vstack([X, X[:30]])  # 30 duplicate rows: K is singular (rank 120)
    K = np.asarray(ARCH.kernel_fn(X, None, "ntk"), dtype=np.float64)
    y = np.random.default_rng(2).standard_normal((150, 2))
    # the duplicate rows of K agree to ~2e-8 only (arccos near 1), leaving 30 eigenvalues
    # of 4e-9..2e-8 (next: 0.55); our default cutoff (1e-7 x mean diag) drops them, and
    # pinv does the same with rcond=1e-9
    ref = np.linalg.pinv(K, rcond=1e-9, hermitian=True) @ y
    res = minnorm_eigh(DenseGram(K), y)
    assert res.info["rank"] == 120
    np.testing.assert_allclose(res.x, ref, atol=1e-8 * np.abs(ref).max())
    # y has components outside range(K) (duplicates with different labels): no interpolation
    assert res.residual > 1e-3
    # CG from zero on a consistent singular system finds the minimum-norm solution
    # (exactly singular PSD matrix of rank 120: no near-zero noise eigenvalues)
    rng = np.random.default_rng(4)
    B = rng.standard_normal((150, 120))
    A = B @ B.T
    yc = A @ rng.standard_normal(150)
    cg = minnorm_cg(DenseGram(A), yc, tol=1e-12, maxiter=5000)
    np.testing.assert_allclose(cg.x, np.linalg.pinv(A, hermitian=True) @ yc, atol=1e-7 * np.abs(cg.x).max())
    assert cg.method == "cg-minnorm" and cg.residual < 1e-11


def test_ridgeless_interpolates_nonsingular(problem):
    _, K, Y = problem
    res = solve(DenseGram(K), Y, 0.0)
    assert res.info["solver"] == "eigh" and "in memory" in res.info["auto"]
    assert res.residual < 1e-8  # train residual ~ 0: the fit interpolates


def test_auto_picks_pcg_for_large_ridge(problem, tmp_path):
    X, K, Y = problem
    build_gram(ARCH, X, tmp_path / "g", tile=128, dtype=np.float64, client="sync")
    with StoredGram(tmp_path / "g", "ntk", client="sync") as op:
        ridge = 0.1 * np.mean(np.diag(K))
        res = solve(op, Y, ridge, n_dense=100, pcg_min_n=200, pcg_rank=30, tol=1e-10)
        # the store computes its columns from its inputs: preconditioner 'auto' is RPCholesky, no pass
        assert res.info["solver"] == "pcg" and "RPCholesky-PCG" in res.info["auto"]
        assert res.info["preconditioner"]["kind"] == "rpcholesky" and res.info["sketch_passes"] == 0
        sk = solve(op, Y, ridge, n_dense=100, pcg_min_n=200, pcg_rank=30, tol=1e-10, preconditioner="nystrom")
        assert "Nyström-PCG" in sk.info["auto"] and sk.info["sketch_passes"] == 1
        np.testing.assert_allclose(sk.x, res.x, atol=1e-7)
        mid = solve(op, Y, ridge, n_dense=100, tol=1e-10)  # n < PCG_MIN_N: tiled Cholesky
        assert mid.info["solver"] == "cholesky" and "tiled Cholesky" in mid.info["auto"]
        np.testing.assert_allclose(mid.x, res.x, atol=1e-7)
        np.testing.assert_allclose(res.x, np.linalg.solve(K + ridge * np.eye(len(K)), Y), atol=1e-7)
        small = solve(op, Y, ridge, n_dense=10_000)
        assert small.info["solver"] == "cholesky" and "LAPACK" in small.info["auto"]
        np.testing.assert_allclose(small.x, res.x, atol=1e-7)


@pytest.mark.parametrize("y, ridge, match", [
    (np.full(300, np.nan), 1.0, "NaN or Inf"),
    (np.ones(299), 1.0, "299 rows"),
    (np.ones(300), -1.0, ">= 0"),
    (np.ones((300, 2, 2)), 1.0, "1-d"),
])
def test_bad_input(problem, y, ridge, match):
    _, K, _ = problem
    with pytest.raises(ValueError, match=match):
        solve(DenseGram(K), y, ridge)
    with pytest.raises(ValueError, match=match):
        pcg(DenseGram(K), y, ridge)


def test_unknown_solver(problem):
    with pytest.raises(ValueError, match="solver must be one of"):
        solve(DenseGram(problem[1]), problem[2], 1.0, solver="qr")


def test_auto_preconditioner_takes_rpcholesky_only_where_columns_cost_no_pass(problem, tmp_path):
    """'auto' resolves to RPCholesky for in-memory Grams, given columns, and stores that compute
    their columns from their inputs; to the sketch for a store whose columns would be read
    (subsets='read': every column block would read the tiles)."""
    from ntkscale.solvers.api import resolve_preconditioner

    X, K, Y = problem
    assert resolve_preconditioner(DenseGram(K), "auto") == "rpcholesky"
    assert resolve_preconditioner(K, "auto") == "rpcholesky"
    assert resolve_preconditioner(object(), "auto") == "nystrom"
    assert resolve_preconditioner(object(), "auto", columns=lambda idx: None) == "rpcholesky"
    assert resolve_preconditioner(DenseGram(K), "nystrom") == "nystrom"
    with pytest.raises(ValueError, match="preconditioner must be one of"):
        resolve_preconditioner(DenseGram(K), "jacobi")
    build_gram(ARCH, X, tmp_path / "g", tile=128, dtype=np.float64, client="sync")
    with StoredGram(tmp_path / "g", "ntk", client="sync") as op:
        assert op.computes_columns and resolve_preconditioner(op, "auto") == "rpcholesky"
    with StoredGram(tmp_path / "g", "ntk", client="sync", subsets="read") as op:
        assert not op.computes_columns and resolve_preconditioner(op, "auto") == "nystrom"
        ridge = 0.1 * np.mean(np.diag(K))
        res = solve(op, Y, ridge, solver="pcg", pcg_rank=30, tol=1e-10)
        assert res.info["preconditioner"]["kind"] == "nystrom" and res.info["sketch_passes"] == 1
