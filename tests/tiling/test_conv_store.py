"""Image kernels in the tiled pipeline: stored Gram == dense kernel, checks before any work."""

import numpy as np
import pytest

from ntkscale import stax
from ntkscale.kernels import cntk, myrtle
from ntkscale.operator import StoredGram
from ntkscale.tiling import build_cross_gram, build_gram
from ntkscale.tiling.layout import choose_tile, tile_task_bytes


def _rows(n, shape=(6, 5, 2), seed=0):
    return np.random.default_rng(seed).standard_normal((n, int(np.prod(shape))))


@pytest.mark.parametrize("arch", [cntk((6, 5, 2), 2, b_std=0.1),           # fused numba chain
                                  myrtle((6, 5, 2), 5, b_std=0.1),         # pixel pairs, pooling
                                  stax.serial(stax.Unflatten(6, 5, 2), stax.Conv(1, (3, 3), (2, 1), "SAME"),
                                              stax.Erf(), stax.Flatten(), stax.Dense(1))])  # array path
def test_image_gram_tiled_equals_dense(arch):
    """n = 45 with tile 16: edge tiles of 13; symmetric and cross stores, float64, to rounding."""
    X, Y = _rows(45), _rows(21, seed=1)
    url = "memory://conv-sym"
    build_gram(arch, X, url, get=("nngp", "ntk"), tile=16, dtype=np.float64, client="sync", overwrite=True)
    K = arch.kernel_fn(X, None)
    for kind in ("nngp", "ntk"):
        got = StoredGram(url, kind).to_numpy()
        ref = getattr(K, kind)
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12 * np.abs(ref).max())
        np.testing.assert_array_equal(got, got.T)
    build_cross_gram(arch, Y, X, "memory://conv-cross", get="ntk", tile=16, dtype=np.float64,
                     client="sync", overwrite=True)
    ref = arch.kernel_fn(Y, X, "ntk")
    np.testing.assert_allclose(StoredGram("memory://conv-cross", "ntk").to_numpy(), ref, rtol=1e-12,
                               atol=1e-12 * np.abs(ref).max())


def test_wrong_image_width_refused_before_any_store():
    arch = cntk((6, 5, 2), 1)
    with pytest.raises(ValueError, match="expects H\\*W\\*C = 60"):
        build_gram(arch, _rows(10)[:, :59], "memory://conv-bad", client="sync")
    with pytest.raises(ValueError, match="start it with Unflatten"):
        build_gram(stax.serial(stax.Conv(1, (3, 3)), stax.Flatten(), stax.Dense(1)), _rows(10),
                   "memory://conv-bad2", client="sync")


def test_store_refuses_other_image_shape():
    X = _rows(12)
    build_gram(cntk((6, 5, 2), 1), X, "memory://conv-shape", tile=8, client="sync", overwrite=True)
    with pytest.raises(Exception, match="arch"):
        build_gram(cntk((5, 6, 2), 1), X, "memory://conv-shape", tile=8, client="sync")


def test_tile_planner_counts_image_working_memory():
    base = tile_task_bytes(1024, 784, 1, 4)
    assert tile_task_bytes(1024, 784, 1, 4, work_bytes=2**28) == base + 2**28
    budget = 2 * base + 2**27  # fits a 1024 tile without working memory, no tile with 256 MiB of it
    assert choose_tile(20000, 20000, 784, memory_per_task=budget, n_kinds=1) >= 1024
    with pytest.raises(MemoryError, match="give workers more memory"):
        choose_tile(20000, 20000, 784, memory_per_task=budget, n_kinds=1, work_bytes=2**28)


def test_pooled_kernels_get_short_tiles():
    """Without a tile, a pixel-pair (pooled) kernel's store gets tiles of at most 256 rows
    (compute-bound tasks), a pooling-free one the usual memory-sized tiles."""
    X = _rows(300)
    rep = build_gram(myrtle((6, 5, 2), 5), X, "memory://tile-pool", client="sync", overwrite=True,
                     get="ntk")
    assert 64 <= rep.tile <= 256
    rep = build_gram(cntk((6, 5, 2), 1), X, "memory://tile-cntk", client="sync", overwrite=True, get="ntk")
    assert rep.tile == 300
