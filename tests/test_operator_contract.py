"""Every Gram operator class runs the same contract tests (ntkscale.testing.OperatorContract):
in-memory, stored float64 and float32 (packed diagonal tiles, n not divisible by the tile),
and a stored cross Gram (rectangular, no factorize)."""

import numpy as np
import pytest

from ntkscale import stax
from ntkscale.linop import DenseGram, GramOperator, as_operator, can_factorize
from ntkscale.operator import StoredGram
from ntkscale.testing.operator_contract import OperatorContract
from ntkscale.tiling import build_cross_gram, build_gram

ARCH = stax.serial(stax.Dense(64, W_std=2**0.5, b_std=0.1), stax.Relu(), stax.Dense(1))


def _x(n, seed=0):
    return np.random.default_rng(seed).standard_normal((n, 7))


def _dense(X1, X2=None):
    return np.asarray(ARCH.kernel_fn(X1, X2, "ntk"), dtype=np.float64)


class TestDenseGram(OperatorContract):
    @pytest.fixture(scope="class")
    @classmethod
    def subject(cls):
        K = _dense(_x(150))
        return DenseGram(K), K

    def test_to_numpy_is_the_array_read_only(self, subject):
        op, K = subject
        A = op.to_numpy()
        assert np.shares_memory(A, op.K) and not A.flags.writeable


class TestStoredGram64(OperatorContract):
    @pytest.fixture(scope="class")
    @classmethod
    def subject(cls, tmp_path_factory):
        X = _x(150)
        url = tmp_path_factory.mktemp("g64") / "g"
        build_gram(ARCH, X, url, tile=64, dtype=np.float64, client="sync")
        op = StoredGram(url, "ntk", client="sync", factor_url=str(url) + "-chol")
        yield op, _dense(X)
        op.close()


class TestStoredGram32(OperatorContract):
    tol = 1e-12  # against the stored float32 values, read back as float64
    diag_tol = 1.2e-7  # diag() is the float64 statistic; the stored diagonal is its float32 rounding

    @pytest.fixture(scope="class")
    @classmethod
    def subject(cls, tmp_path_factory):
        X = _x(150, seed=1)
        url = tmp_path_factory.mktemp("g32") / "g"
        build_gram(ARCH, X, url, tile=64, dtype=np.float32, client="sync")
        op = StoredGram(url, "ntk", client="sync", subsets="read")
        assert op.store.meta.get("diag_layout") == "packed"
        yield op, _dense(X).astype(np.float32).astype(np.float64)
        op.close()

    def test_computed_take_equals_stored_entries(self, subject):
        op, K = subject
        with StoredGram(op.url, "ntk", client="sync", subsets="compute") as comp:
            rows, cols = np.arange(0, 150, 7), np.arange(3, 150, 5)
            np.testing.assert_array_equal(comp.take(rows, cols), K[np.ix_(rows, cols)])


class TestStoredCrossGram(OperatorContract):
    @pytest.fixture(scope="class")
    @classmethod
    def subject(cls, tmp_path_factory):
        X1, X2 = _x(90, seed=2), _x(130, seed=3)
        url = tmp_path_factory.mktemp("cross") / "g"
        build_cross_gram(ARCH, X1, X2, url, tile=64, dtype=np.float64, client="sync")
        op = StoredGram(url, "ntk", client="sync")
        yield op, _dense(X1, X2)
        op.close()

    def test_factorize_if_offered(self, subject):  # a rectangular Gram has no Cholesky factor
        op, _ = subject
        with pytest.raises(ValueError, match="symmetric"):
            op.factorize(0.1)


def test_contract_protocol_and_adapters():
    K = _dense(_x(20))
    op = as_operator(K)
    assert isinstance(op, DenseGram) and isinstance(op, GramOperator) and as_operator(op) is op
    assert not can_factorize(op)
