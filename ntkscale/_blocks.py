"""Helpers of :mod:`ntkscale.operator`: the page-cache budget of direct passes, an even
spread of tiles, and sub-blocks over scattered indices read by contiguous blocks (pure NumPy
on any operator with block reads)."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

__all__ = ["CACHE_FRACTION", "CACHE_RESERVE", "COMPUTE_OVER_READ", "cache_budget", "spread", "read_subset"]

CACHE_FRACTION = 0.5  # at most this share of RAM is kept as cached tiles between passes
CACHE_RESERVE = 0.2  # ... and this share of RAM (at least 4 GiB) stays free for the processes


def cache_budget() -> int:
    """Bytes of tiles that passes may keep in this machine's page cache between passes:
    ``min(CACHE_FRACTION x RAM, available − max(4 GiB, CACHE_RESERVE x RAM))``, >= 0
    (``available`` counts reclaimable cache: what the kernel would give up for them)."""
    import psutil

    vm = psutil.virtual_memory()
    reserve = max(4 * 2**30, CACHE_RESERVE * vm.total)
    return int(max(0.0, min(CACHE_FRACTION * vm.total, vm.available - reserve)))


def spread(items: list, count: int) -> list:
    """``count`` of ``items`` spread evenly over the list (every task group of a pass gets
    its share, so the cached tiles shorten every worker's part alike)."""
    m = len(items)
    count = max(0, min(int(count), m))
    if count == 0:
        return []
    picks = np.unique(np.floor(np.arange(count) * (m / count)).astype(np.int64))
    return [items[k] for k in picks]


def read_subset(op: Any, rows: np.ndarray, cols: np.ndarray, block: Optional[int] = None) -> np.ndarray:
    """``K[rows][:, cols]`` (float64) of any operator from contiguous block reads
    ``op[r0:r1, c0:c1]``, for sorted unique index arrays.

    Parameters
    ----------
    op : GramOperator
    rows, cols : ndarray of int, sorted, unique
    block : int, optional
        Read grid (default: the store's tile, else 1024). Each band of the grid that holds a
        wanted row (column) is read over the covering slice of those rows (columns) only;
        bands without one are skipped.

    Returns
    -------
    ndarray, shape (len(rows), len(cols))
    """
    b = int(block or getattr(getattr(op, "store", None), "tile", 0) or 1024)  # StoredGram tile
    out = np.empty((rows.size, cols.size))
    if rows.size == 0 or cols.size == 0:
        return out

    def bands(idx: np.ndarray) -> list[tuple[int, int]]:
        cut = np.flatnonzero(np.diff(idx // b)) + 1
        edges = np.concatenate([[0], cut, [idx.size]])
        return list(zip(edges[:-1].tolist(), edges[1:].tolist()))

    for i0, i1 in bands(rows):
        r = rows[i0:i1]
        for j0, j1 in bands(cols):
            c = cols[j0:j1]
            blk = op[int(r[0]):int(r[-1]) + 1, int(c[0]):int(c[-1]) + 1]
            out[i0:i1, j0:j1] = blk[np.ix_(r - r[0], c - c[0])]
    return out


#: Computing one entry of a fully connected kernel costs about this many stored entries read
#: (a depth-d GEMM and a few arccos passes vs 4 bytes from disk, per slot): a sub-block is
#: computed when its entries times this are fewer than the stored entries a read touches.
COMPUTE_OVER_READ = 16.0
