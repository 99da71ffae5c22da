"""Worker-side task functions. Each opens the store by URL: workers never receive X.

They are plain functions of (store URL, indices, architecture) so any scheduler
(distributed, or an in-process loop) can run them.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import Any, Optional

import numpy as np

from ..kernels import DiagStats
from ..storage import GramStore, chunks
from ..storage.gram_store import STAT_ROWS
from ..storage.url import options_from_key, options_key
from .device import resolve_device
from .gemv import band_buffer, diag_tile_products, tile_products, tile_products_single

__all__ = ["stats_task", "tile_task", "matvec_task", "open_cached"]

_local = threading.local()  # per-thread pass buffers


@lru_cache(maxsize=16)
def _open(url: str, mode: str, opts_key: Any, build_id: str) -> GramStore:
    store = GramStore.open(url, mode=mode, storage_options=options_from_key(opts_key))
    if store.meta.get("build_id") != build_id:
        raise RuntimeError(f"store {url!r} was replaced while tasks were running "
                           f"(build id {store.meta.get('build_id')} != {build_id})")
    return store


def open_cached(url: str, build_id: str, mode: str = "r",
                storage_options: Optional[dict] = None) -> GramStore:
    """Open a store once per worker process and build (``build_id`` is created with the
    store, so an overwritten store at the same URL is never served from a stale cache)."""
    return _open(url, mode, options_key(storage_options), build_id)


@lru_cache(maxsize=6)
def _rows(url: str, build_id: str, mode: str, opts_key: Any, name: str, start: int, stop: int) -> np.ndarray:
    """Row block ``start:stop`` of ``x1``/``x2`` (rows) or ``stats1``/``stats2`` (columns),
    cached per worker: consecutive tiles of one row panel reuse their inputs."""
    store = _open(url, mode, opts_key, build_id)
    if name.startswith("x"):
        out = store.read(name, slice(start, stop))
    else:
        out = store.read(name, slice(None), slice(start, stop))
    out.setflags(write=False)
    return out


def _read_rows(url: str, build_id: str, mode: str, storage_options: Optional[dict], name: str,
               rows: slice) -> np.ndarray:
    return _rows(url, build_id, mode, options_key(storage_options), name, rows.start, rows.stop)


def _stats_from_rows(rows: np.ndarray) -> DiagStats:
    act = rows[len(STAT_ROWS):]
    return DiagStats(cov0=rows[0], act_vars=act if act.shape[0] else None, nngp=rows[1], ntk=rows[2])


def stats_rows(stats: DiagStats) -> np.ndarray:
    """Pack DiagStats into the store's (R, n) row layout."""
    rows = [np.asarray(stats.cov0), np.asarray(stats.nngp), np.asarray(stats.ntk)]
    if stats.act_vars is not None:
        rows.extend(np.asarray(stats.act_vars))
    return np.stack(rows).astype(np.float64)


def stats_task(url: str, build_id: str, which: int, block: int, arch: Any, compute_dtype: str,
               storage_options: Optional[dict] = None, device: str = "cpu") -> int:
    """Compute and store the per-row statistics of row block ``block`` of x1/x2.

    ``device`` is resolved here first (statistics run before any tile), so a worker that
    lacks it fails the build before any tile is computed; the statistics themselves are
    host arrays on every device (:meth:`~ntkscale.tiling.device.Device.stats`).
    """
    dev = resolve_device(device)
    store = open_cached(url, build_id, "r+", storage_options)
    T = store.tile
    x = store.read(f"x{which}", slice(block * T, (block + 1) * T))
    rows = stats_rows(dev.stats(arch, x, compute_dtype))
    store.array(f"stats{which}")[:, block * T: block * T + x.shape[0]] = rows
    return block


def tile_task(url: str, build_id: str, i: int, j: int, arch: Any,
              storage_options: Optional[dict] = None, delay: float = 0.0,
              device: str = "cpu") -> tuple[int, int, float, int]:
    """Compute tile (i, j) of every stored kind and write one chunk per kind.

    ``device`` (a name, resolved on this worker by
    :func:`~ntkscale.tiling.device.resolve_device`) says where the tile is computed.
    Returns ``(i, j, seconds, pid)``. ``delay`` (seconds) exists for interruption tests.
    """
    t0 = time.perf_counter()
    store = open_cached(url, build_id, "r+", storage_options)
    meta = store.meta
    rows, cols = store.tile_bounds(i, j)
    args = (url, build_id, "r+", storage_options)
    x1 = _read_rows(*args, "x1", rows)
    st1 = _stats_from_rows(_read_rows(*args, "stats1", rows))
    if store.symmetric and i == j:
        x2, st2 = None, None
    else:
        src = "1" if store.symmetric else "2"
        x2 = _read_rows(*args, f"x{src}", cols)
        st2 = _stats_from_rows(_read_rows(*args, f"stats{src}", cols))
    out = resolve_device(device).compute(arch, x1, x2, st1, st2, tuple(meta["kinds"]),
                                         meta["compute_dtype"], meta["store_dtype"])
    if delay:
        time.sleep(delay)
    for kind, values in out.items():
        store.write_tile(kind, i, j, values)
    return i, j, time.perf_counter() - t0, os.getpid()


def aligned(a: np.ndarray) -> np.ndarray:
    """``a`` itself when C-contiguous, aligned and writeable, else one such copy.

    An array received by a worker can be a view of the received frame at any byte offset (a
    scattered (n, k) V arrived 19 bytes past a 64-byte boundary): NumPy's matmul then copies an
    unaligned operand on every call, and a banded tile product calls it 500 times per 8000² tile,
    one mmap/munmap pair of ~640 KB each. Measured on the 120k store (2 workers, 10 columns):
    ~30 % of the pass's CPU in the kernel, 20.2-22.7 s per pass before (8 passes), 13.3-15.0 s after (3).
    """
    return np.require(a, requirements=["C", "A", "W"])


def _reused(name: str, key: tuple, make: Any) -> Any:
    """A per-thread buffer kept across passes: fresh 10^7-10^8-byte buffers per tile would
    cost page faults comparable to the read itself."""
    cached = getattr(_local, name, None)
    if cached is None or cached[0] != key:
        cached = (key, make())
        setattr(_local, name, cached)
    return cached[1]


def _chunk_buffers(T: int, dtype: np.dtype) -> list[np.ndarray]:
    """Two chunk buffers (read-ahead double buffering), block-aligned for ``O_DIRECT``."""
    return _reused("chunk_buffers", (int(T), np.dtype(dtype).str),
                   lambda: [chunks.direct_buffer(T, dtype) for _ in range(2)])


IO_MODES = ("mapped", "direct", "buffered")


def matvec_task(url: str, build_id: str, kind: str, tiles: list[tuple[int, int]], V: np.ndarray,
                storage_options: Optional[dict] = None, readahead: bool = True,
                io: str = "mapped", mapped: Optional[frozenset] = None,
                precision: str = "double") -> dict[int, np.ndarray]:
    """Partial products of the stored tiles ``tiles`` with ``V`` (n2, k), in float64.

    Each stored tile is read once (CRC32C checked), by ``io``: ``'mapped'`` (local
    directory: used where the page cache holds it, the next chunk hinted to the kernel),
    ``'direct'`` (``O_DIRECT`` into reused aligned buffers, bypassing the page cache: for
    stores larger than RAM) or ``'buffered'`` (plain reads into reused buffers; what other
    stores always get); then multiplied where it lies
    (:func:`~ntkscale.tiling.gemv.tile_products`: no float64 copy of a float32 tile); with ``readahead`` the next tile is read by a helper thread while
    this one is multiplied. Tiles in ``mapped`` are read memory-mapped whatever ``io`` says
    (with ``io='direct'``: the share of the store kept in the page cache between passes).
    For a symmetric store, tile (i, j) with i < j contributes
    ``K_ij V_j`` to row block i and ``K_ijᵀ V_i`` to row block j; its diagonal tiles are
    used by their upper triangle only (:func:`~ntkscale.tiling.gemv.diag_tile_products`, in
    float64 at every ``precision``), packed ones read into a buffer even when ``io='mapped'``.
    ``precision='single'`` multiplies float32 tiles by a float32 copy of ``V`` with SGEMMs
    (:func:`~ntkscale.tiling.gemv.tile_products_single`: for sketches only).
    Returns ``{row block: partial (rows, k) float64}``; the caller sums them.
    """
    store = open_cached(url, build_id, "r", storage_options)
    V = aligned(V)
    dtype, T, k = store.raw_dtype(kind), store.tile, V.shape[1]
    out: dict[int, np.ndarray] = {}

    def acc(block: int, size: int) -> np.ndarray:
        if block not in out:
            out[block] = np.zeros((size, k), order="F")  # Fortran: BLAS updates it in place
        return out[block]

    if dtype is None:  # chunks not stored as raw bytes + CRC (a store from another writer)
        def read(i: int, j: int, buf: Any) -> np.ndarray:
            return store.read(kind, *store.tile_bounds(i, j))
        bufs: list = [None, None]
    elif io == "mapped" and store.can_map():  # local directory: tiles used in place in the page cache
        ahead = iter(tiles[1:])
        packed = store.diag_packed(kind)  # packed diagonal tiles are unfolded in a buffer

        def read(i: int, j: int, buf: Any) -> np.ndarray:
            nxt = next(ahead, None)  # the kernel reads the next tile while this one is mapped
            if nxt is not None:
                store.prefetch_tile(kind, *nxt)
            return store.read_tile_into(kind, i, j, buf if packed and i == j else None)
        bufs = _chunk_buffers(T, dtype) if packed else [None, None]
    else:
        direct = io == "direct"
        cached = mapped if mapped and store.can_map() else frozenset()
        packed = store.diag_packed(kind)

        def read(i: int, j: int, buf: Any) -> np.ndarray:
            if (i, j) in cached:  # (a packed diagonal tile: a plain read, through the cache too)
                return store.read_tile_into(kind, i, j, buf if packed and i == j else None)
            return store.read_tile_into(kind, i, j, buf, direct=direct)
        bufs = _chunk_buffers(T, dtype)
    scratch = _reused("band", (int(T),), lambda: band_buffer(T))
    single = precision == "single" and dtype is not None and dtype == np.float32
    Vp = V.astype(np.float32) if single else V

    def products(i: int, j: int, full: np.ndarray) -> None:
        rows, cols = store.tile_bounds(i, j)
        K = full[: rows.stop - rows.start, : cols.stop - cols.start]
        if store.symmetric and i == j:  # upper triangle only (packed diagonal tiles: all there is)
            diag_tile_products(K, V[rows], acc(i, K.shape[0]), scratch)
            return
        mirrored = store.symmetric and i != j
        if single:
            tile_products_single(K, Vp[cols], acc(i, K.shape[0]), Vp[rows] if mirrored else None,
                                 acc(j, K.shape[1]) if mirrored else None)
            return
        tile_products(K, V[cols], acc(i, K.shape[0]),
                      V[rows] if mirrored else None, acc(j, K.shape[1]) if mirrored else None, scratch)

    if not readahead or len(tiles) < 2:
        for i, j in tiles:
            products(i, j, read(i, j, bufs[0]))
        return out
    with ThreadPoolExecutor(1, thread_name_prefix="ntkscale-readahead") as pool:
        pending = pool.submit(read, *tiles[0], bufs[0])
        for t, (i, j) in enumerate(tiles):
            full = pending.result()
            if t + 1 < len(tiles):
                pending = pool.submit(read, *tiles[t + 1], bufs[(t + 1) % 2])
            products(i, j, full)
    return out
