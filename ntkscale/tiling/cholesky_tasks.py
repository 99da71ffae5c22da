"""Worker side of the tiled Cholesky: one task computes and writes one factor tile.

See :mod:`ntkscale.tiling.cholesky` for the algorithm and the task graph.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Optional

import numpy as np
from scipy.linalg.blas import get_blas_funcs
from scipy.linalg.lapack import get_lapack_funcs

from ..storage.factor_store import FactorStore
from . import tasks

__all__ = ["factor_tile_task", "TileBreakdown"]

_GROUP_BYTES = 64 * 2**20  # factor tiles a task reads at once


class TileBreakdown(ArithmeticError):
    """POTRF failed on a diagonal tile (raised in a task; picklable: args are the fields)."""

    def __init__(self, tile: int, pivot: int):
        super().__init__(tile, pivot)
        self.tile, self.pivot = tile, pivot


@dataclass(frozen=True)
class _Ctx:
    """What a tile task needs to find its inputs (URLs and ids, never data)."""

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


@lru_cache(maxsize=8)
def _open_factor(url: str, factor_id: str, opts: Optional[tuple]) -> FactorStore:
    fs = FactorStore.open(url, mode="r+", storage_options=dict(opts) if opts else None)
    if fs.meta.get("factor_id") != factor_id:
        raise RuntimeError(f"factor store {url!r} was replaced while tasks were running")
    return fs


def factor_tile_task(ctx: _Ctx, i: int, j: int, deps: Any = None) -> tuple[int, int, float, int, bool]:
    """Compute and write factor tile ``U[i, j]`` (``deps`` only orders the task).

    Returns ``(i, j, seconds, pid, computed)``; ``computed`` is False when the run was
    asked to stop before this task started.

    Raises
    ------
    TileBreakdown
        If POTRF fails on diagonal tile ``i`` (the tile is not written).
    """
    t0 = time.perf_counter()
    fs = _open_factor(ctx.factor_url, ctx.factor_id, ctx.factor_opts)
    if fs.stop_requested(ctx.run):
        return i, j, 0.0, os.getpid(), False
    gs = tasks.open_cached(ctx.gram_url, ctx.gram_build_id, "r", dict(ctx.gram_opts) if ctx.gram_opts else None)
    rows, cols = fs.tile_bounds(i, j)  # inside one stored Gram tile: factor tiles divide Gram tiles
    S = np.array(gs.read(ctx.kind, rows, cols), dtype=ctx.dtype, order="F")  # shape: (Ti, Tj)
    gemm, syrk, trsm = get_blas_funcs(("gemm", "syrk", "trsm"), (S,))
    if i == j:
        S[np.diag_indices_from(S)] += S.dtype.type(ctx.ridge)
    # U[m, i], U[m, j] read a group at a time (concurrently, through this process's tile cache);
    # tiles are C-ordered, so A.T is the Fortran-ordered A^T that BLAS takes without a copy.
    step = max(1, _GROUP_BYTES // (fs.tile * fs.tile * S.itemsize))
    for m0 in range(0, i, step):
        ms = range(m0, min(i, m0 + step))
        col_i = fs.read_tiles([(m, i) for m in ms], ctx.cache_bytes)
        col_j = col_i if i == j else fs.read_tiles([(m, j) for m in ms], ctx.cache_bytes)
        for A, B in zip(col_i, col_j):
            A, B = A.astype(S.dtype, copy=False), B.astype(S.dtype, copy=False)
            if i == j:
                S = syrk(-1.0, A.T, beta=1.0, c=S, trans=0, lower=0, overwrite_c=1)  # S -= A^T A
            else:
                S = gemm(-1.0, A.T, B.T, beta=1.0, c=S, trans_b=1, overwrite_c=1)  # S -= A^T B
    if i == j:
        potrf = get_lapack_funcs("potrf", (S,))
        S, info = potrf(S, lower=0, clean=1, overwrite_a=1)
        if info > 0:
            raise TileBreakdown(i, int(info) - 1)
        if info < 0:  # pragma: no cover - argument error
            raise RuntimeError(f"potrf: illegal argument {-info}")
    else:
        Uii = fs.read_tiles([(i, i)], ctx.cache_bytes)[0].astype(S.dtype, copy=False)
        S = trsm(1.0, Uii.T, S, side=0, lower=1, trans_a=0, overwrite_b=1)  # U_ii^T X = S
    fs.write_tile(i, j, S, ctx.cache_bytes)
    return i, j, time.perf_counter() - t0, os.getpid(), True
