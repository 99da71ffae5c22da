"""The operator contract as a test mixin (as linear_operator's ``LinearOperatorTestCase``).

Every Gram operator class runs the same tests: subclass :class:`OperatorContract` in a
``Test...`` class and override the ``subject`` fixture to return ``(op, K)``, the operator
and the dense float64 matrix it must equal (for a float32 store: the stored, rounded
values). ``tol`` is the relative tolerance of products (summation order differs between
tiled and dense GEMVs: ~n·eps); ``diag_tol`` that of ``diag()``.

    class TestStoredGram(OperatorContract):
        @pytest.fixture(scope="class")
        def subject(self, tmp_path_factory):
            ...
            return StoredGram(url, "ntk"), K
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from ..linop import can_factorize, read_blocks, read_grid

__all__ = ["OperatorContract"]


class OperatorContract:
    """Contract tests of :mod:`ntkscale.linop` for one operator class."""

    tol = 1e-12
    diag_tol = 1e-12  # a float32 store's diag() is its float64 statistics: set ~1e-7 there

    @pytest.fixture(scope="class")
    @classmethod
    def subject(cls, tmp_path_factory: Any) -> tuple[Any, np.ndarray]:  # pragma: no cover
        raise NotImplementedError("override the subject fixture: return (op, K)")

    # -- attributes ---------------------------------------------------------
    def test_attributes(self, subject):
        op, K = subject
        assert tuple(op.shape) == K.shape
        assert np.dtype(op.dtype) in (np.float32, np.float64)
        assert isinstance(op.in_memory, bool)

    def test_diag(self, subject):
        op, K = subject
        if K.shape[0] != K.shape[1]:
            with pytest.raises(ValueError, match="diagonal"):
                op.diag()
            return
        d = op.diag()
        assert d.dtype == np.float64 and d.shape == (K.shape[0],)
        np.testing.assert_allclose(d, np.diag(K), rtol=self.diag_tol)

    # -- products -------------------------------------------------------------
    def test_matvec_vector_and_block(self, subject):
        op, K = subject
        rng = np.random.default_rng(0)
        v = rng.standard_normal(K.shape[1])
        V = rng.standard_normal((K.shape[1], 3))
        scale = np.abs(K).max() * np.sqrt(K.shape[1])
        got_v, got_V = op.matvec(v), op.matvec(V)
        assert got_v.shape == (K.shape[0],) and got_V.shape == (K.shape[0], 3)
        assert got_v.dtype == np.float64 and got_V.dtype == np.float64
        np.testing.assert_allclose(got_v, K @ v, rtol=0, atol=self.tol * scale * 10)
        np.testing.assert_allclose(got_V, K @ V, rtol=0, atol=self.tol * scale * 10)
        np.testing.assert_allclose(op.matvec(V[:, 1]), got_V[:, 1], rtol=0, atol=self.tol * scale * 10)

    def test_matvec_rejects_bad_input(self, subject):
        op, K = subject
        with pytest.raises(ValueError, match="shape"):
            op.matvec(np.ones(K.shape[1] + 1))
        bad = np.ones(K.shape[1])
        bad[3] = np.nan
        with pytest.raises(ValueError, match="NaN or Inf"):
            op.matvec(bad)

    # -- reads ----------------------------------------------------------------
    def test_block_reads(self, subject):
        op, K = subject
        n1, n2 = K.shape
        for r0, r1, c0, c1 in ((0, n1, 0, n2), (3, n1 // 2 + 7, n2 // 3, n2 - 1), (n1 - 1, n1, 0, 5),
                               (5, 5, 0, n2)):
            blk = np.asarray(op[r0:r1, c0:c1], dtype=np.float64)
            assert blk.shape == (r1 - r0, c1 - c0)
            np.testing.assert_allclose(blk, K[r0:r1, c0:c1], rtol=self.tol, atol=0)
        with pytest.raises((TypeError, ValueError)):
            op[0:4:2, 0:4]

    def test_take(self, subject):
        op, K = subject
        rng = np.random.default_rng(1)
        rows = np.unique(rng.integers(0, K.shape[0], size=max(3, K.shape[0] // 5)))
        cols = np.unique(rng.integers(0, K.shape[1], size=max(3, K.shape[1] // 4)))
        got = op.take(rows, cols)
        assert got.dtype == np.float64 and got.shape == (rows.size, cols.size)
        np.testing.assert_allclose(got, K[np.ix_(rows, cols)], rtol=self.tol, atol=0)
        with pytest.raises(ValueError, match="sorted, unique"):
            op.take(rows[::-1], cols)
        with pytest.raises(ValueError, match="sorted, unique"):
            op.take(rows, np.array([0, K.shape[1]]))

    def test_to_numpy(self, subject):
        op, K = subject
        A = np.asarray(op.to_numpy(), dtype=np.float64)
        np.testing.assert_allclose(A, K, rtol=self.tol, atol=0)

    # -- optional attribute and capability -------------------------------------------
    def test_read_grid_if_offered(self, subject):
        op, K = subject
        if not hasattr(op, "tile"):
            pytest.skip(f"{type(op).__name__} has no read grid (block reads default to 1024)")
        assert isinstance(op.tile, int) and op.tile >= 1 and read_grid(op) == op.tile
        rows, cols = np.arange(0, K.shape[0], 3), np.arange(1, K.shape[1], 2)
        np.testing.assert_allclose(read_blocks(op, rows, cols), K[np.ix_(rows, cols)], rtol=self.tol, atol=0)

    def test_factorize_if_offered(self, subject):
        op, K = subject
        if not can_factorize(op):
            pytest.skip(f"{type(op).__name__} does not factorize out of core")
        ridge = 0.1 * float(np.mean(np.diag(K)))
        factor = op.factorize(ridge, overwrite=True)
        B = np.random.default_rng(2).standard_normal((K.shape[0], 2))
        X = factor.solve(B)
        np.testing.assert_allclose(X, np.linalg.solve(K + ridge * np.eye(K.shape[0]), B),
                                   rtol=0, atol=1e-8 * np.abs(X).max())
        assert factor.ridge == pytest.approx(ridge)
