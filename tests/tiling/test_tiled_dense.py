"""Tiled Gram == dense kernel, at sizes not divisible by the tile (in-process runner)."""

import numpy as np
import pytest

from ntkscale.operator import DenseGram, StoredGram
from ntkscale.tiling import build_cross_gram, build_gram

from .conftest import data

# float64 storage: tiles and the dense kernel run the same fused code on the same
# rows, so they agree to rounding of the GEMM blocking (1e-12 relative).
# float32 storage: one rounding to float32, 2^-24 ~ 6e-8 relative.
TOL = {np.float64: 1e-12, np.float32: 2e-7}


@pytest.mark.parametrize("n", [1, 7, 100, 257])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_symmetric_tiled_equals_dense(arch, n, dtype):
    X = data(n)
    url = f"memory://sym-{n}-{np.dtype(dtype).name}"
    rep = build_gram(arch, X, url, get=("nngp", "ntk"), tile=64, dtype=dtype, client="sync")
    g = -(-n // 64)
    assert rep.n_tiles == g * (g + 1) // 2 and rep.computed == rep.n_tiles
    K = arch.kernel_fn(X, None)
    for kind in ("nngp", "ntk"):
        op = StoredGram(url, kind)
        got = op.to_numpy()
        assert got.dtype == dtype and got.shape == (n, n)
        ref = getattr(K, kind)
        np.testing.assert_allclose(got, ref, rtol=TOL[dtype], atol=TOL[dtype] * np.abs(ref).max())
        np.testing.assert_allclose(op.diag(), np.diag(ref), rtol=1e-12)
        np.testing.assert_array_equal(got, got.T)


@pytest.mark.parametrize("n1,n2", [(1, 1), (5, 130), (130, 5), (200, 77)])
def test_cross_tiled_equals_dense(arch, n1, n2):
    X1, X2 = data(n1, seed=1), data(n2, seed=2)
    url = f"memory://cross-{n1}-{n2}"
    rep = build_cross_gram(arch, X1, X2, url, get="ntk", tile=64, dtype=np.float64, client="sync")
    assert rep.n_tiles == -(-n1 // 64) * -(-n2 // 64)
    op = StoredGram(url, "ntk")
    ref = arch.kernel_fn(X1, X2, "ntk")
    np.testing.assert_allclose(op.to_numpy(), ref, rtol=1e-12, atol=1e-12 * np.abs(ref).max())
    with pytest.raises(ValueError, match="no diagonal"):
        op.diag()


@pytest.mark.parametrize("k", [None, 1, 4])
def test_matvec_and_blocks(arch, k):
    n = 203
    X = data(n, seed=3)
    url = f"memory://mv-{k}"
    build_gram(arch, X, url, get="ntk", tile=64, dtype=np.float64, client="sync")
    op, K = StoredGram(url, "ntk"), arch.kernel_fn(X, None, "ntk")
    V = np.random.default_rng(4).standard_normal(n if k is None else (n, k))
    np.testing.assert_allclose(op.matvec(V), K @ V, rtol=1e-11, atol=1e-11 * np.abs(K @ V).max())
    assert op.matvec(V).shape == V.shape and op.passes == 2
    # a block that straddles tile edges and the diagonal (mirrored lower tiles)
    np.testing.assert_allclose(op[50:190, 10:140], K[50:190, 10:140], rtol=1e-12)
    dense = DenseGram(K)
    np.testing.assert_allclose(dense.matvec(V), K @ V)
    with pytest.raises(ValueError, match="shape"):
        op.matvec(np.ones(n + 1))
    with pytest.raises(ValueError, match="NaN"):
        op.matvec(np.full(n, np.nan))


def test_cross_matvec(arch):
    X1, X2 = data(90, seed=5), data(150, seed=6)
    build_cross_gram(arch, X1, X2, "memory://cmv", get="ntk", tile=64, dtype=np.float64, client="sync")
    op, K = StoredGram("memory://cmv", "ntk"), arch.kernel_fn(X1, X2, "ntk")
    V = np.random.default_rng(7).standard_normal((150, 3))
    np.testing.assert_allclose(op.matvec(V), K @ V, rtol=1e-11)


def test_generic_path_arch_tiles(arch):
    """A residual net (generic recursion, no fused program) tiles the same way."""
    from ntkscale import stax

    res = stax.serial(stax.Dense(8, b_std=0.2), stax.FanOut(2),
                      stax.parallel(stax.serial(stax.Relu(), stax.Dense(8, W_std=1.3)), stax.Identity()),
                      stax.FanInSum(), stax.Gelu(), stax.Dense(1))
    X = data(150, seed=8)
    build_gram(res, X, "memory://res", get="ntk", tile=64, dtype=np.float64, client="sync")
    ref = res.kernel_fn(X, None, "ntk")
    np.testing.assert_allclose(StoredGram("memory://res", "ntk").to_numpy(), ref, rtol=1e-12, atol=1e-13)
