"""Disk space of a build: a pre-flight check before any tile is computed, and a clear error
when a write finds the disk full anyway (another process filled it meanwhile).

What a build still has to write is exact arithmetic: every chunk is stored whole (edge
chunks padded) with a 4-byte CRC32C, so the missing tiles and row-statistic blocks times
their chunk sizes (:meth:`~ntkscale.storage.GramStore.tile_nbytes`: about half a tile for a
packed diagonal one) is what the store grows by (plus a few small metadata documents).
Only local stores are checked (an object store has no free space to ask for).
"""

from __future__ import annotations

import os
from typing import Any, Optional

from ..storage import DiskFullError, GramStore
from ..storage.writer import free_bytes, is_disk_full
from .layout import TilePlan

__all__ = ["SKIP_ENV", "remaining", "check_space", "check_new", "disk_full_error"]

SKIP_ENV = "NTKSCALE_SKIP_SPACE_CHECK"
_MARGIN = 1 << 20  # metadata documents and file-system slack


def _fmt(nbytes: int) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= size:
            return f"{nbytes / size:.1f} {unit} ({nbytes} bytes)"
    return f"{nbytes} bytes"


def remaining(gs: GramStore) -> tuple[int, int]:
    """Tiles still missing from ``gs`` and the bytes their chunks and the missing row
    statistics will take on disk."""
    meta = gs.meta
    plan = TilePlan(meta["shape"][0], meta["shape"][1], meta["tile"], meta["symmetric"])
    tiles = set(plan.tiles())
    done = set.intersection(*(gs.done_chunks(k) for k in meta["kinds"]))
    need = sum(gs.tile_nbytes(k, *t) for k in meta["kinds"] for t in tiles - gs.done_chunks(k))
    T = int(meta["tile"])
    for which in (1,) if meta["symmetric"] else (1, 2):
        blocks = -(-meta["shape"][which - 1] // T)
        need += (blocks - len(gs.done_chunks(f"stats{which}"))) * gs.chunk_nbytes(f"stats{which}")
    return len(tiles - done), int(need)


def check_space(gs: GramStore, enabled: bool = True) -> None:
    """Refuse to start computing tiles when the store's file system cannot hold them.

    Parameters
    ----------
    gs : GramStore
        The store about to be filled (created or resumed).
    enabled : bool
        False skips the check (so does the environment variable ``NTKSCALE_SKIP_SPACE_CHECK=1``).

    Raises
    ------
    DiskFullError
        Naming the store, the bytes still to write and the bytes free.
    """
    if _skipped(enabled):
        return
    free = free_bytes(gs.url)
    if free is None:
        return
    n_tiles, need = remaining(gs)
    if need and need + _MARGIN > free:
        raise DiskFullError(
            f"store {gs.url!r} needs {_fmt(need)} more for its {n_tiles} missing tiles, but its file system "
            f"has {_fmt(free)} free. Free space there or choose a store on a larger disk, then run again "
            f"(finished tiles are kept); check_space=False or {SKIP_ENV}=1 skips this check")


def _skipped(enabled: bool) -> bool:
    return not enabled or os.environ.get(SKIP_ENV, "").strip().lower() not in ("", "0", "false", "no")


def check_new(url: str, n1: int, n2: int, tile: int, symmetric: bool, kinds: tuple[str, ...],
              itemsize: int, enabled: bool = True) -> None:
    """:func:`check_space` for a store not created yet (before anything is written): every
    tile chunk whole (an upper bound: packed diagonal tiles take about half), one kind each.

    Raises
    ------
    DiskFullError
        Naming the store location, the bytes it needs and the bytes free.
    """
    if _skipped(enabled):
        return
    free = free_bytes(url)
    if free is None:
        return
    plan = TilePlan(n1, n2, tile, symmetric)
    n_tiles = len(plan.tiles())
    need = len(kinds) * n_tiles * (tile * tile * itemsize + 4) + (1 if symmetric else 2) * max(n1, n2) * 8 * 8
    if need + _MARGIN > free:
        raise DiskFullError(
            f"store {url!r} would need about {_fmt(need)} for its {n_tiles} tiles, but its file system has "
            f"{_fmt(free)} free; nothing was written. Free space there or choose a store on a larger disk; "
            f"check_space=False or {SKIP_ENV}=1 skips this check")


def disk_full_error(url: str, exc: BaseException, storage_options: Optional[dict] = None) -> Optional[DiskFullError]:
    """A :class:`DiskFullError` naming the store and what it still needs, if ``exc`` is
    ENOSPC/EDQUOT; else None (re-raise ``exc`` as it is)."""
    if not is_disk_full(exc):
        return None
    try:
        n_tiles, need = remaining(GramStore.open(url, storage_options=storage_options))
        what = f"{_fmt(need)} more for its {n_tiles} missing tiles"
    except Exception:  # noqa: BLE001 - the message does without the figure
        what = "more space"
    free = free_bytes(url)
    where = "" if free is None else f" ({_fmt(free)} free now)"
    return DiskFullError(
        f"store {url!r} ran out of disk space while the build wrote it ({_strerror(exc)}); it needs {what}"
        f"{where}. The store is kept, marked incomplete, and holds only whole chunks: free space (or move "
        "the store to a larger disk) and run the same build again to resume from the finished tiles")


def _strerror(exc: Any) -> str:
    return getattr(exc, "strerror", None) or str(exc)
