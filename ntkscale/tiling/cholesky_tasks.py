"""Worker side of the tiled Cholesky: one task computes and writes one factor tile.

See :mod:`ntkscale.tiling.cholesky` for the algorithm and the task graph.

A tile is computed in the memory of the chunk that will be written: the C-ordered upper
tile ``S`` (rows of ``U``) is, read as Fortran order, its transpose ``R = S^T``, and the
task runs the transposed recurrence on ``R`` in place (``R -= U_mj^T U_mi``; the diagonal
``R = L`` with ``L L^T = S``; off the diagonal ``R <- R U_ii^-1``). So the Gram chunk is read
straight into the output buffer, no tile is ever transposed in memory, and the result is
written from the same buffer with its checksum appended (:mod:`ntkscale.storage.chunks`).
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Optional

import numpy as np
from scipy.linalg.blas import get_blas_funcs
from scipy.linalg.lapack import get_lapack_funcs

from ..storage import chunks
from ..storage.factor_store import FactorStore, clear_tile_cache, flush_writes
from ..storage.gram_store import GramStore
from ..storage.url import options_from_key
from . import tasks

__all__ = ["factor_tile_task", "flush_task", "release_buffers", "TileBreakdown"]

_GROUP_BYTES = 64 * 2**20  # factor tiles a task reads at once
_HOST_LOCK = threading.Lock()  # 'host' placement: one tile task computes at a time in a process


class TileBreakdown(ArithmeticError):
    """POTRF failed on a diagonal tile (raised in a task; picklable: args are the fields)."""

    def __init__(self, tile: int, pivot: int):
        super().__init__(tile, pivot)
        self.tile, self.pivot = tile, pivot


@dataclass(frozen=True)
class _Ctx:
    """What a tile task needs to find its inputs (URLs and ids, never data).

    ``threads``: ``((worker address, BLAS threads), ...)`` under 'host' placement (the task
    takes the process's host lock and that many BLAS threads); empty: as the worker is set.
    ``write_behind``: tasks queue their tile's write on the process's writer thread and return
    (only where every task runs in one process; the run flushes the writes at its end).
    """

    gram_url: str
    gram_build_id: str
    kind: str
    factor_url: str
    factor_id: str
    ridge: float
    dtype: str
    run: str
    cache_bytes: int = 0
    gram_opts: Optional[tuple] = None
    factor_opts: Optional[tuple] = None
    threads: tuple = ()
    write_behind: bool = False


@lru_cache(maxsize=8)
def _open_factor(url: str, factor_id: str, opts: Optional[tuple]) -> FactorStore:
    fs = FactorStore.open(url, mode="r+", storage_options=options_from_key(opts))
    if fs.meta.get("factor_id") != factor_id:
        raise RuntimeError(f"factor store {url!r} was replaced while tasks were running")
    return fs


def _blas_threads(ctx: _Ctx) -> Optional[int]:
    """BLAS threads for this task under 'host' placement (None: leave them as they are)."""
    if not ctx.threads:
        return None
    try:
        from distributed import get_worker

        return dict(ctx.threads).get(get_worker().address)
    except (ImportError, ValueError):  # not in a worker (synchronous runner)
        return None


def _gram_block(gs: GramStore, kind: str, rows: slice, cols: slice, T: int,
                dtype: np.dtype) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """``K[rows, cols]`` as a writable C-ordered array of ``dtype``, and, for a full tile, the
    chunk buffer it lives in (None for an edge tile: it is computed in an array of its own).

    A packed diagonal Gram tile is read exact on and above its diagonal only (its lower triangle
    is garbage; see :meth:`~ntkscale.storage.GramStore.read_tile_into`). Factor tiles are
    upper-triangle ones, so only a block on the diagonal holds garbage: its upper triangle is
    mirrored onto it in the read buffer, before any cast (the SYRK of a diagonal factor tile
    updates ``S``'s lower triangle)."""
    Tg, ri, ci = gs.tile, rows.stop - rows.start, cols.stop - cols.start
    gi, gj = rows.start // Tg, cols.start // Tg
    r0, c0 = rows.start - gi * Tg, cols.start - gj * Tg
    gdt = gs.raw_dtype(kind)
    full_tile = ri == T and ci == T
    garbage = gi == gj and r0 == c0 and gs.diag_packed(kind)  # (ri == ci: factor tiles are square there)
    if gdt is None:  # pragma: no cover - a store written with other codecs
        block = np.asarray(gs.read(kind, rows, cols))
    elif full_tile and Tg == T and gdt == dtype:  # the chunk is read into the output buffer itself
        buf = chunks.direct_buffer(T, dtype)  # (O_DIRECT: no page-cache copy, in or out)
        S = gs.read_tile_into(kind, gi, gj, buf, direct=True)
        if garbage:
            _mirror_upper(S)
        return S, buf[: T * T * dtype.itemsize + 4]
    else:
        block = gs.read_tile_into(kind, gi, gj, chunks.direct_buffer(Tg, gdt), direct=True)[r0:r0 + ri, c0:c0 + ci]
        if garbage:
            _mirror_upper(block)
    if not full_tile:
        return np.array(block, dtype=dtype), None
    flat, S = chunks.tile_buffer(T, dtype)
    np.copyto(S, block, casting="same_kind")
    return S, flat


def factor_tile_task(ctx: _Ctx, i: int, j: int, deps: Any = None) -> tuple[int, int, float, int, bool]:
    """Compute and write factor tile ``U[i, j]`` (``deps`` only orders the task).

    Returns ``(i, j, seconds, pid, computed)``; ``computed`` is False when the run was
    asked to stop before this task started, or when the tile is already written (the task
    runs again because its result was lost with a worker that died).

    Raises
    ------
    TileBreakdown
        If POTRF fails on diagonal tile ``i`` (the tile is not written).
    """
    t0 = time.perf_counter()
    fs = _open_factor(ctx.factor_url, ctx.factor_id, ctx.factor_opts)
    if fs.stop_requested(ctx.run) or fs.has_tile(i, j):  # (a rerun after its worker died: written)
        return i, j, 0.0, os.getpid(), False
    threads = _blas_threads(ctx)
    if threads is None:
        guard: Any = nullcontext()
    else:
        from threadpoolctl import threadpool_limits

        guard = _HostGuard(threadpool_limits, threads)
    try:
        with guard:
            _compute_tile(ctx, fs, i, j)
    except BaseException:  # (a breakdown): the tiles queued before are written before the error
        if ctx.write_behind:  # reaches the client, which may then recreate the store (jitter)
            _quiet_flush()
        raise
    return i, j, time.perf_counter() - t0, os.getpid(), True


_ACC: dict = {}  # thread id -> its update buffer, reused by its tasks (fresh pages cost ~1/3 of a GEMM)
_ACC_LOCK = threading.Lock()


def _accumulator(shape: tuple[int, int], dtype: np.dtype) -> np.ndarray:
    """A Fortran-ordered scratch array of ``shape`` and ``dtype`` (contents undefined), the same
    memory for every task that this thread runs ('host' placement: one task at a time)."""
    me = threading.get_ident()
    with _ACC_LOCK:
        buf = _ACC.pop(me, None)
        if buf is None or buf.shape != shape or buf.dtype != dtype:
            buf = None  # (the old one freed before the new one is made)
            buf = np.empty(shape, dtype, order="F")
        _ACC[me] = buf
    return buf


def release_buffers() -> None:
    """Drop the tasks' scratch buffers and this process's cached factor tiles."""
    with _ACC_LOCK:
        _ACC.clear()
    clear_tile_cache()


def _quiet_flush() -> None:
    """Wait for this process's queued tile writes; their errors are not this caller's to raise."""
    try:
        flush_writes()
    except Exception:  # noqa: BLE001 - a failed write leaves its tile missing: a rerun computes it
        pass


def flush_task(deps: Any = None) -> tuple[int, int, float, int, bool]:
    """Wait until the tiles this process queued for writing are on the store (a failed write's
    error is raised here); ``deps`` (the tile tasks) only orders the task."""
    t0 = time.perf_counter()
    flush_writes()
    return -1, -1, time.perf_counter() - t0, os.getpid(), False


class _HostGuard:
    """The process's host lock, then ``threads`` BLAS threads, for the duration of a task."""

    def __init__(self, limits: Any, threads: int):
        self.limits, self.threads, self.ctl = limits, threads, None

    def __enter__(self) -> None:
        _HOST_LOCK.acquire()
        try:
            self.ctl = self.limits(limits=self.threads)
        except BaseException:
            _HOST_LOCK.release()
            raise

    def __exit__(self, *exc: Any) -> None:
        try:
            self.ctl.restore_original_limits()
        finally:
            _HOST_LOCK.release()


def _mirror_upper(R: np.ndarray, b: int = 512) -> None:
    """Copy the upper triangle of the square ``R`` onto its lower one, in place, in blocks."""
    n = R.shape[0]
    for q0 in range(0, n, b):
        q1 = min(n, q0 + b)
        D = R[q0:q1, q0:q1]
        low = np.tril_indices(q1 - q0, -1)
        D[low] = D.T[low]
        for p0 in range(q1, n, b):
            R[p0:p0 + b, q0:q1] = R[q0:q1, p0:p0 + b].T


def _subtract_upper(R: np.ndarray, C: np.ndarray, b: int = 512) -> None:
    """``R -= C`` on and above the diagonal of the square ``R`` only, in place, in blocks."""
    n = R.shape[0]
    for q0 in range(0, n, b):
        q1 = min(n, q0 + b)
        R[:q0, q0:q1] -= C[:q0, q0:q1]
        up = np.triu_indices(q1 - q0)
        R[q0:q1, q0:q1][up] -= C[q0:q1, q0:q1][up]


def _compute_tile(ctx: _Ctx, fs: FactorStore, i: int, j: int) -> None:
    gs = tasks.open_cached(ctx.gram_url, ctx.gram_build_id, "r", options_from_key(ctx.gram_opts))
    dt, T = np.dtype(ctx.dtype), fs.tile
    rows, cols = fs.tile_bounds(i, j)  # inside one stored Gram tile: factor tiles divide Gram tiles
    # U[m, i], U[m, j] (C order: A.T is A^T in Fortran order) read a group at a time through
    # this process's tile cache, the next group (then U[i, i]) read while this one's GEMMs run;
    # the Gram block is read meanwhile on a second thread, so the update sum_m U_mi^T U_mj goes
    # to a buffer C of its own and is subtracted once at the end.
    step = max(1, _GROUP_BYTES // (T * T * dt.itemsize))
    groups = [range(m0, min(i, m0 + step)) for m0 in range(0, i, step)]

    def fetch(ms: range) -> tuple[list, list]:
        col_i = fs.read_tiles([(m, i) for m in ms], ctx.cache_bytes)
        return col_i, (col_i if i == j else fs.read_tiles([(m, j) for m in ms], ctx.cache_bytes))

    def diag() -> np.ndarray:
        return fs.read_tiles([(i, i)], ctx.cache_bytes)[0]

    C = None  # shape: (ci, ri), Fortran order, like R below
    with ThreadPoolExecutor(2, thread_name_prefix="ntkscale-prefetch") as reader:
        gram = reader.submit(_gram_block, gs, ctx.kind, rows, cols, T, dt)  # shape: (ri, ci), C order
        ahead = [reader.submit(fetch, ms) for ms in groups[:1]]
        uii = None if i == j or groups else reader.submit(diag)
        if groups:
            C = _accumulator((cols.stop - cols.start, rows.stop - rows.start), dt)
            gemm, syrk = get_blas_funcs(("gemm", "syrk"), (C,))
        beta = 0.0  # the first product overwrites C (SYRK: its upper triangle only)
        for g in range(len(groups)):
            col_i, col_j = ahead.pop().result()
            if g + 1 < len(groups):
                ahead.append(reader.submit(fetch, groups[g + 1]))
            elif i != j:
                uii = reader.submit(diag)
            for A, B in zip(col_i, col_j):
                A, B = A.astype(dt, copy=False), B.astype(dt, copy=False)
                if i == j:  # (OpenBLAS's 'N'/upper SYRK runs ~1.2x its 'N'/lower one)
                    C = syrk(1.0, A.T, beta=beta, c=C, trans=0, lower=0, overwrite_c=1)  # C += A^T A (upper)
                else:
                    C = gemm(1.0, B.T, A.T, beta=beta, c=C, trans_b=1, overwrite_c=1)  # C += B^T A
                beta = 1.0
            del col_i, col_j, A, B
        S, flat = gram.result()
        Uii = None if uii is None else uii.result().astype(dt, copy=False)  # Uii.T = L, lower
    R = S.T  # shape: (ci, ri), Fortran order: the transposed problem, in S's memory
    if C is not None and i == j:  # SYRK wrote C's upper triangle only (its lower one is stale)
        _subtract_upper(R, C)
    elif C is not None:
        R -= C
    del C
    if i == j:
        R[np.diag_indices_from(R)] += dt.type(ctx.ridge)
        if i > 0:
            _mirror_upper(R)
        potrf = get_lapack_funcs("potrf", (R,))
        R, info = potrf(R, lower=1, clean=1, overwrite_a=1)  # R = L, L L^T = S: S's memory holds U = L^T
        if info > 0:
            raise TileBreakdown(i, int(info) - 1)
        if info < 0:  # pragma: no cover - argument error
            raise RuntimeError(f"potrf: illegal argument {-info}")
    else:
        trsm = get_blas_funcs("trsm", (R,))
        R = trsm(1.0, Uii.T, R, side=1, lower=1, trans_a=1, overwrite_b=1)  # R <- R L^-T = R U^-1
    U = R.T  # shape: (ri, ci), C order
    if flat is not None and np.may_share_memory(U, flat):
        if ctx.cache_bytes:
            fs.remember(i, j, U, ctx.cache_bytes)
        if ctx.write_behind:  # written while the next task computes; this process's reads wait for it
            fs.write_buffer_behind(i, j, flat)
        else:
            fs.write_buffer(i, j, flat)
    else:  # an edge tile (or BLAS returned a copy): written through a padded buffer
        fs.write_tile(i, j, U, ctx.cache_bytes)
