"""Refusals: other data, other architecture, corrupted chunks, unwritable URLs."""

import os

import numpy as np
import pytest

from ntkscale import stax
from ntkscale.operator import StoredGram
from ntkscale.storage import CorruptTileError, StoreAccessError, StoreMismatchError
from ntkscale.tiling import build_gram

from .conftest import chunk_bytes, data


@pytest.fixture
def built(arch, tmp_path):
    X = data(150, seed=20)
    path = tmp_path / "g"
    build_gram(arch, X, path, get="ntk", tile=64, client="sync")
    return X, path


def test_other_data_refused_and_store_untouched(arch, built):
    X, path = built
    before = chunk_bytes(path)
    X2 = X.copy()
    X2[3, 4] += 1e-9
    with pytest.raises(StoreMismatchError, match="other data"):
        build_gram(arch, X2, path, get="ntk", tile=64, client="sync")
    other = stax.serial(stax.Dense(1, W_std=1.1), stax.Relu(), stax.Dense(1))
    with pytest.raises(StoreMismatchError, match="another architecture"):
        build_gram(other, X, path, get="ntk", client="sync")
    with pytest.raises(StoreMismatchError, match="another dtype"):
        build_gram(arch, X, path, get="ntk", dtype=np.float64, client="sync")
    with pytest.raises(StoreMismatchError, match="another tile size"):
        build_gram(arch, X, path, get="ntk", tile=32, client="sync")
    assert chunk_bytes(path) == before
    rep = build_gram(arch, X2, path, get="ntk", tile=64, client="sync", overwrite=True)
    assert rep.computed == rep.n_tiles


def test_corrupt_chunk_named_by_tile(arch, built):
    _, path = built
    chunk = os.path.join(path, "ntk", "c", "0", "1")
    with open(chunk, "r+b") as f:
        f.seek(100)
        f.write(b"\x00\x01\x02\x03")
    op = StoredGram(path, "ntk")
    with pytest.raises(CorruptTileError, match=r"tile \(0, 1\)"):
        op.to_numpy()
    with pytest.raises(CorruptTileError, match=r"tile \(0, 1\)"):
        op.matvec(np.ones(150))


def test_unwritable_urls(arch, tmp_path):
    X = data(20)
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StoreAccessError, match="cannot create"):
        build_gram(arch, X, blocker / "g", client="sync")
    with pytest.raises(StoreAccessError, match="cannot open store URL"):
        build_gram(arch, X, "nosuchproto://bucket/g", client="sync")
    with pytest.raises(StoreAccessError, match="no Gram store"):
        StoredGram(tmp_path / "missing")


def test_memory_store_needs_in_process_runner(arch, client):
    with pytest.raises(StoreAccessError, match="worker processes"):
        build_gram(arch, data(20), "memory://needs-sync", client=client)


def test_bad_inputs_before_any_work(arch, tmp_path):
    X = data(30)
    X[[2, 17], 0] = np.nan
    with pytest.raises(ValueError, match="2, 17"):
        build_gram(arch, X, tmp_path / "nan", client="sync")
    assert not (tmp_path / "nan").exists()
    with pytest.raises(ValueError, match="get"):
        build_gram(arch, data(5), tmp_path / "g", get="ntkk", client="sync")
    with pytest.raises(ValueError, match="tile"):
        build_gram(arch, data(5), tmp_path / "g", tile=0, client="sync")
    with pytest.raises(ValueError, match="float32 or float64"):
        build_gram(arch, data(5), tmp_path / "g", dtype=np.int32, client="sync")


def test_plan_respects_budget():
    from ntkscale.tiling import TilePlan, choose_tile, tile_task_bytes
    from ntkscale.tiling.layout import grid_tile

    T = choose_tile(100_000, 100_000, 784, memory_per_task=4 * 2**30, parallel_tasks=2)
    assert 2 * tile_task_bytes(T, 784, 2, 4) <= 4 * 2**30 and T >= 1024
    assert choose_tile(8192, 8192, 784, memory_per_task=8 * 2**30, parallel_tasks=2) == 2048
    # symmetric: 8 tiles per slot counts upper-triangle tiles (2048 gives 10 < 16, 1664 gives 15;
    # 6 blocks: ceil(8192 / 6) = 1366 -> 1408, a multiple of 64, gives 21)
    assert choose_tile(8192, 8192, 784, memory_per_task=8 * 2**30, parallel_tasks=2, symmetric=True) == 1408
    # tiles that divide n: no padded edge (120 000 = 15 x 8000; 8192 would pad the edge to 122 880)
    T = choose_tile(120_000, 120_000, 784, memory_per_task=11.7 * 2**30, n_kinds=1, parallel_tasks=2,
                    symmetric=True)
    assert T == 8000 and 2 * tile_task_bytes(T, 784, 1, 4) <= 11.7 * 2**30
    assert choose_tile(300, 300, 10, memory_per_task=2**30) == 300
    with pytest.raises(MemoryError, match="budget"):
        choose_tile(10**6, 10**6, 10**6, memory_per_task=2**20)
    assert grid_tile(120_000, 15) == 8000 and grid_tile(6000, 5) == 1200  # (1216 would pad; 1200 = 75 x 16)
    assert grid_tile(6001, 5) == 1216 and grid_tile(1000, 3) == 384  # no unit removes the padding: 64
    plan = TilePlan(700, 700, 128, True)
    assert len(plan.tiles()) == 21 and plan.bounds(5, 5) == (640, 700, 640, 700)
    assert plan.cost((0, 1)) == 128 * 128 and plan.cost((0, 0)) == 128 * 128 / 2
    assert plan.cost((5, 5)) == 60 * 60 / 2 and TilePlan(700, 700, 128, False).cost((0, 0)) == 128 * 128
    assert plan.stored_bytes(1, 4, packed=False) == 4 * sum(
        (min(700, (i + 1) * 128) - i * 128) * (min(700, (j + 1) * 128) - j * 128) for i, j in plan.tiles())
    assert plan.stored_bytes(1, 4) == 4 * 700 * 701 // 2  # packed diagonal tiles: the upper triangle
