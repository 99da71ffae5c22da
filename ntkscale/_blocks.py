"""Helpers of :mod:`ntkscale.operator`: the page-cache budget of direct passes, an even
spread of tiles, and when to compute a sub-block rather than read it."""

from __future__ import annotations


import numpy as np

__all__ = ["CACHE_FRACTION", "CACHE_RESERVE", "COMPUTE_OVER_READ", "cache_budget", "spread"]

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


#: Computing one entry of a fully connected kernel costs about this many stored entries read
#: (a depth-d GEMM and a few arccos passes vs 4 bytes from disk, per slot): a sub-block is
#: computed when its entries times this are fewer than the stored entries a read touches.
COMPUTE_OVER_READ = 16.0
