"""Tile planning: the tile size from a per-worker memory budget (pure arithmetic)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..errors import TileSizeError

__all__ = ["TilePlan", "tile_task_bytes", "choose_tile", "check_tile", "grid_tile", "MAX_TILE_TASKS",
           "OBJECT_STORE_MIN_TILE"]

_ALIGN = 256  # the memory budget is searched in steps of the fused kernel's block size
_UNIT = 64  # grid tiles are multiples of this ...
_FINE_UNIT = 16  # ... or of this when that tiles n exactly (no padded edge tile)

#: ``min_tile`` of automatic tiles on object stores (s3://, gs://, ...): every chunk is one
#: request with a first-byte latency of ~20-50 ms on S3, so a chunk must be ~10 MiB or more
#: for the transfer, not the latency, to dominate (2048^2 float32 = 16 MiB; at 30 ms and
#: 80 MB/s per stream a GET is then 87 % transfer, a 1024^2 one 64 %, a 512^2 one 30 %):
#: ``benchmarks/bench_object_store.py``. Tiles still shrink below it to fit worker memory.
OBJECT_STORE_MIN_TILE = 2048


def tile_task_bytes(T: int, d: int, n_kinds: int, store_itemsize: int, compute_itemsize: int = 8,
                    work_bytes: int = 0) -> int:
    """Peak bytes one tile task holds: two input blocks, the product/NNGP buffer,
    the NTK buffer, the cast copies written to the store, and ``work_bytes`` of working
    memory (image kernels: the pixel covariances of one chunk of pairs,
    :func:`ntkscale.kernels.images.tile_work_bytes`)."""
    blocks = 4 * T * d * compute_itemsize  # two in use, two more in the worker's row-block cache
    buffers = 2 * T * T * compute_itemsize
    casts = n_kinds * T * T * store_itemsize
    return blocks + buffers + casts + int(work_bytes)


def choose_tile(n1: int, n2: int, d: int, *, memory_per_task: float, n_kinds: int = 2,
                store_itemsize: int = 4, parallel_tasks: int = 1, min_tile: int = 1024,
                max_tile: int = 8192, symmetric: bool = False, work_bytes: int = 0) -> int:
    """Tile edge for an ``n1 x n2`` Gram.

    The largest tile (multiple of 256, at most ``max_tile``) whose task fits
    ``memory_per_task`` with 2x headroom sets the fewest blocks across ``n = max(n1, n2)``;
    each block count gives tiles of ``ceil(n / blocks)`` rounded up to a multiple of 64, or
    of 16 when that leaves no padded edge (:func:`grid_tile`: edge tiles are neither slivers
    nor padded far past ``n``, e.g. 120 000 = 15 x 8000; never larger than the fitting
    tile). The grid is refined (one block more at a time) until there are at least 8 tiles
    per parallel slot (upper-triangle tiles when ``symmetric``), but tiles never go below
    ``min_tile`` (small tasks are dominated by reading their inputs and by scheduling).
    ``T >= max(n1, n2)`` means one tile. ``work_bytes``: per-task working memory that does
    not grow with the tile (see :func:`tile_task_bytes`).
    """
    if memory_per_task <= 0:
        raise ValueError(f"memory_per_task must be > 0, got {memory_per_task}")
    fits = [T for T in range(_ALIGN, max_tile + 1, _ALIGN)
            if 2 * tile_task_bytes(T, d, n_kinds, store_itemsize, work_bytes=work_bytes)
            <= memory_per_task]
    if not fits:
        need = 2 * tile_task_bytes(_ALIGN, d, n_kinds, store_itemsize, work_bytes=work_bytes)
        raise MemoryError(f"even a {_ALIGN}x{_ALIGN} tile with d={d} needs {need / 2**20:.0f} MiB per task "
                          f"(2x headroom) but the budget is {memory_per_task / 2**20:.0f} MiB; give workers "
                          "more memory or fewer threads")
    n = max(n1, n2)
    t_max = fits[-1]
    if n <= min(min_tile, t_max):
        return int(n)
    blocks = math.ceil(n / t_max)
    T = grid_tile(n, blocks)
    while True:
        finer = grid_tile(n, blocks + 1)
        g1, g2 = math.ceil(n1 / T), math.ceil(n2 / T)
        grid = g1 * (g1 + 1) // 2 if symmetric else g1 * g2
        if grid >= 8 * parallel_tasks or finer < min_tile:
            break
        blocks += 1
        T = finer
    return int(min(T, n))


MAX_TILE_TASKS = 250_000  # a build of more tile tasks is a mistake (scheduler overhead dominates)


def check_tile(tile: int, n1: int, n2: int, d: int, *, memory_per_task: Optional[float] = None,
               n_kinds: int = 1, store_itemsize: int = 4, symmetric: bool = True,
               work_bytes: int = 0, key: str = "tile") -> int:
    """The tile edge to use for an explicit ``tile``: clipped to ``max(n1, n2)`` (one tile), or
    a :class:`ValueError` naming the sane range when it would make more than
    :data:`MAX_TILE_TASKS` tasks or a task that does not fit ``memory_per_task`` (2x headroom,
    as :func:`choose_tile`) raises :class:`~ntkscale.errors.TileSizeError` naming the sane range.
    ``key`` names the setting in the message (``"[kernel] tile"``).
    """
    if isinstance(tile, bool) or not isinstance(tile, (int, np.integer)) or tile < 1:
        raise TileSizeError(f"{key} must be a positive integer (or omitted / 0 for automatic), got {tile!r}")
    n = max(int(n1), int(n2), 1)
    T = int(min(int(tile), n))
    g1, g2 = -(-int(n1) // T), -(-int(n2) // T)
    tasks = g1 * (g1 + 1) // 2 if symmetric else g1 * g2
    if tasks > MAX_TILE_TASKS:
        lo = T
        while True:  # smallest tile with few enough tasks
            lo *= 2
            h1, h2 = -(-int(n1) // lo), -(-int(n2) // lo)
            if (h1 * (h1 + 1) // 2 if symmetric else h1 * h2) <= MAX_TILE_TASKS:
                break
        raise TileSizeError(f"{key} = {tile} cuts the {n1}x{n2} Gram into {tasks:,} tile tasks (at most "
                         f"{MAX_TILE_TASKS:,}: scheduling would dominate); use a tile of at least {lo} or "
                         "0 / omit it for the automatic size")
    if memory_per_task is not None and memory_per_task > 0:
        need = 2 * tile_task_bytes(T, d, n_kinds, store_itemsize, work_bytes=work_bytes)
        if need > memory_per_task:
            fits = [t for t in range(16, T, 16)
                    if 2 * tile_task_bytes(t, d, n_kinds, store_itemsize, work_bytes=work_bytes) <= memory_per_task]
            hint = f"use a tile of at most {fits[-1]}" if fits else "give workers more memory"
            raise TileSizeError(f"{key} = {tile}: one tile task needs {need / 2**30:.2f} GiB (2x headroom) but a "
                             f"worker task has {memory_per_task / 2**30:.2f} GiB; {hint}, or 0 / omit it for "
                             "the automatic size")
    return T


def _align_up(v: int, unit: int = _ALIGN) -> int:
    return -(-v // unit) * unit


def grid_tile(n: int, blocks: int) -> int:
    """Tile edge for about ``blocks`` tiles across ``n``: ``ceil(n / blocks)`` rounded up to a
    multiple of 64, or of 16 when that leaves no padding (``n`` a multiple of it) and 64
    does not. The result is at most the smallest multiple of 64 >= ``n / blocks``."""
    q = math.ceil(n / blocks)
    T = _align_up(q, _UNIT)
    fine = _align_up(q, _FINE_UNIT)
    return fine if n % T and n % fine == 0 else T


@dataclass(frozen=True)
class TilePlan:
    """Which tiles make up an ``n1 x n2`` Gram with tile edge ``tile``."""

    n1: int
    n2: int
    tile: int
    symmetric: bool

    @property
    def grid(self) -> tuple[int, int]:
        return -(-self.n1 // self.tile), -(-self.n2 // self.tile)

    def tiles(self) -> list[tuple[int, int]]:
        """Tile indices; upper triangle (i <= j) only for a symmetric Gram."""
        g1, g2 = self.grid
        return [(i, j) for i in range(g1) for j in range(i if self.symmetric else 0, g2)]

    def bounds(self, i: int, j: int) -> tuple[int, int, int, int]:
        T = self.tile
        return i * T, min((i + 1) * T, self.n1), j * T, min((j + 1) * T, self.n2)

    def cost(self, tile: tuple[int, int]) -> float:
        """Relative work of a tile: its area, halved on the diagonal of a symmetric Gram
        (the fused kernel computes the upper triangle only)."""
        r0, r1, c0, c1 = self.bounds(*tile)
        return (r1 - r0) * (c1 - c0) * (0.5 if self.symmetric and tile[0] == tile[1] else 1.0)

    def stored_bytes(self, n_kinds: int, itemsize: int, packed: bool = True) -> int:
        """Bytes of the Gram values the tiles store (no edge padding, no checksums): whole
        tiles, except the diagonal ones of a symmetric Gram, which keep their upper triangle
        (``m(m+1)/2`` values) when ``packed`` (the store's ``diag_layout='packed'``). Bytes on
        disk, padding included: :func:`ntkscale.plan.costs.gram_disk_bytes`."""
        total = 0
        for i, j in self.tiles():
            r0, r1, c0, c1 = self.bounds(i, j)
            m = r1 - r0
            total += m * (m + 1) // 2 if packed and self.symmetric and i == j else m * (c1 - c0)
        return total * n_kinds * itemsize
