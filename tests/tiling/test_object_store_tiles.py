"""Automatic tiles on object stores: at least OBJECT_STORE_MIN_TILE (one request per chunk, so a
chunk must be large enough for its transfer, not the request latency, to dominate), unless
worker memory cannot hold such a tile; local stores keep the finer grid (more parallel tasks)."""

import numpy as np
import pytest

from ntkscale import stax
from ntkscale.tiling.build import _auto_tile
from ntkscale.tiling.layout import OBJECT_STORE_MIN_TILE, choose_tile


class _Runner:
    def __init__(self, memory, slots=2):
        self._memory, self._slots = memory, slots

    def memory_per_slot(self):
        return self._memory

    def slots(self):
        return self._slots


ARCH = stax.serial(stax.Dense(512), stax.Relu(), stax.Dense(1))
F32 = np.dtype("float32")


@pytest.mark.parametrize("n, slots", [(20_000, 16), (60_000, 128)])
def test_object_stores_get_tiles_of_at_least_the_object_store_minimum(n, slots):
    runner = _Runner(8 * 2**30, slots=slots)  # e.g. 8 workers of 2 threads, 64 of 2
    local = _auto_tile(ARCH, n, n, 784, ("ntk",), F32, runner, True)
    s3 = _auto_tile(ARCH, n, n, 784, ("ntk",), F32, runner, True, object_store=True)
    assert local < OBJECT_STORE_MIN_TILE <= s3 <= 8192
    g = -(-n // s3)
    assert g * (g + 1) // 2 >= 2 * runner.slots()  # still a few tasks per slot


def test_memory_still_bounds_object_store_tiles():
    runner = _Runner(256 * 2**20)  # a 2048 tile task does not fit with 2x headroom
    T = _auto_tile(ARCH, 50_000, 50_000, 784, ("nngp", "ntk"), F32, runner, True, object_store=True)
    assert T < OBJECT_STORE_MIN_TILE
    assert T == choose_tile(50_000, 50_000, 784, memory_per_task=256 * 2**20, n_kinds=2, symmetric=True,
                            parallel_tasks=2)


def test_small_grams_are_one_tile_and_pooling_keeps_its_small_tiles():
    runner = _Runner(8 * 2**30)
    assert _auto_tile(ARCH, 1500, 1500, 10, ("ntk",), F32, runner, True, object_store=True) == 1500
    pooled = stax.serial(stax.Unflatten(8, 8, 1), stax.Conv(4, (3, 3), padding="SAME"), stax.Relu(),
                         stax.GlobalAvgPool(), stax.Dense(1))
    assert _auto_tile(pooled, 5000, 5000, 64, ("ntk",), F32, runner, True, object_store=True) <= 256
