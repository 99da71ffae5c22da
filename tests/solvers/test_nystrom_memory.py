"""The Nyström sketch's linear algebra: in-place orthonormalization and tall SVD against
LAPACK, and its memory bound (at most ~3 (n, k) float64 blocks alive at once)."""

import tracemalloc

import numpy as np
import pytest

from ntkscale.solvers.nystrom import _left_singular, _orth, nystrom


def _tall(n, k, cond, seed=0):
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((n, k)))
    W, _ = np.linalg.qr(rng.standard_normal((k, k)))
    s = np.logspace(0, -np.log10(cond), k)
    return (Q * s) @ W.T, s


@pytest.mark.parametrize("cond", [1.0, 1e3, 1e6])
def test_orth_spans_and_is_orthonormal(cond):
    A, _ = _tall(2000, 40, cond)
    Q = _orth(A.copy())
    np.testing.assert_allclose(Q.T @ Q, np.eye(40), atol=1e-13)
    # same span: the projection of A onto Q recovers A
    np.testing.assert_allclose(Q @ (Q.T @ A), A, atol=1e-12 * np.abs(A).max())


def test_orth_falls_back_on_rank_deficiency():
    A, _ = _tall(500, 20, 1.0)
    A[:, 5] = A[:, 4]  # exactly dependent: AᵀA singular
    Q = _orth(A)
    assert Q.shape == (500, 20) and np.isfinite(Q).all()


@pytest.mark.parametrize("cond", [1.0, 1e4, 1e7])
def test_left_singular_matches_lapack(cond):
    B, s_true = _tall(3000, 50, cond, seed=1)
    U, s = _left_singular(B.copy())
    U0, s0, _ = np.linalg.svd(B, full_matrices=False)
    # singular values to eps·‖B‖ absolute (squaring: the small ones lose relative digits)
    np.testing.assert_allclose(s, s0, rtol=0, atol=1e-13 * s0[0] * max(1.0, cond**2 * 1e-16 / 1e-13))
    np.testing.assert_allclose(U.T @ U, np.eye(50), atol=1e-13)
    np.testing.assert_allclose(U @ (U.T @ B), B, atol=1e-12 * s0[0])  # same span
    if cond > 1:  # distinct singular values: the leading vectors agree up to sign
        sign = np.sign(np.sum(U[:, :10] * U0[:, :10], axis=0))
        np.testing.assert_allclose(U[:, :10] * sign, U0[:, :10], atol=1e-9)


class _Diag:
    """A diagonal PSD operator: K = diag(d) (fast matvec, known spectrum)."""

    def __init__(self, n):
        self.shape = (n, n)
        self.d = 1e3 * np.arange(1, n + 1, dtype=np.float64) ** -1.2

    def matvec(self, V, precision="double"):
        return self.d[:, None] * V


def test_sketch_memory_is_about_three_blocks():
    n, k = 20000, 200
    op = _Diag(n)
    tracemalloc.start()
    try:
        ny = nystrom(op, k, power_iters=1, seed=0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    block = n * k * 8
    assert peak < 3.5 * block, f"peak {peak / block:.2f} blocks of (n, k) float64"
    # and the sketch is right: the top eigenvalues of diag(d) are its largest entries
    np.testing.assert_allclose(ny.lam[:20], op.d[:20], rtol=2e-3)  # measured 5e-4 at the 20th
    np.testing.assert_allclose(ny.lam[:3], op.d[:3], rtol=1e-6)
