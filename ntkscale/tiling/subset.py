"""Principal and rectangular sub-blocks ``K[rows][:, cols]`` of a stored train Gram,
computed from the stored inputs instead of read from the tiles.

A sub-block over random training points (the ridge selection's 8192-point principal
block, a learning-curve trial's ``(p + n_test) x p`` block) touches nearly every stored
tile: reading it moves the whole store (twice, mirrored, ~60 GB at n = 120k) through one
client thread, while computing its ``|rows| x |cols|`` entries costs a fraction of the
build (the entries of a fully connected kernel cost a GEMM of depth ``d`` and a few
elementwise passes). Tasks here compute row blocks of the sub-block on the workers (the
same :meth:`~ntkscale.tiling.device.Device.compute` as the build, from the stored inputs
and per-row statistics) and round the entries to the store's dtype, so they equal the
stored ones (up to a last-bit difference where the float64 value lies on a rounding
boundary); entries where a row and a column are the same training point take the
stored diagonal.
"""

from __future__ import annotations

import uuid
from typing import Any, Optional

import numpy as np

from ..runner import Runner
from ..kernels import Layer
from ..storage import GramStore
from . import tasks
from .device import resolve_device
from .executor import run_tasks

__all__ = ["subset_block", "subset_block_task", "RowInputs"]


def subset_block_task(arch: Layer, xr: np.ndarray, str_rows: np.ndarray, xc: np.ndarray,
                      stc_rows: np.ndarray, kind: str, store_dtype: str,
                      device: str = "cpu") -> np.ndarray:
    """``K_kind(xr, xc)`` computed in float64 and rounded to ``store_dtype``.

    Parameters
    ----------
    xr : ndarray, shape (b, d);  str_rows : ndarray, shape (R, b)
        Row points and their stored statistic rows (the store's ``stats1`` layout).
    xc : ndarray, shape (c, d);  stc_rows : ndarray, shape (R, c)
        Column points and their statistic rows.

    Returns
    -------
    ndarray, shape (b, c), ``store_dtype``
    """
    out = resolve_device(device).compute(arch, xr, xc, tasks._stats_from_rows(str_rows),
                                         tasks._stats_from_rows(stc_rows), (kind,), np.float64,
                                         store_dtype)
    return np.asarray(out[kind])


class RowInputs:
    """Every training row's input and statistics, read from the store once and, on a cluster,
    scattered once to the workers in blocks of ``block`` rows (each block to one worker).

    For repeated requests over all rows (:meth:`ntkscale.operator.StoredGram.columns`, called
    ~r/100 times by RPCholesky): each request then ships only its columns' inputs, where
    :func:`subset_block` alone would read and send all n rows again (at n = 120 000, d = 784:
    0.75 GB per request). Holds ``x`` (n, d) float64 on the client. :meth:`release` frees the
    workers' copies.
    """

    def __init__(self, runner: Runner, store: GramStore, block: int = 1024):
        self.runner, self.block = runner, int(block)
        self.x = np.asarray(store.read("x1", slice(None)))  # shape: (n, d)
        self.stats = store.read("stats1", slice(None), slice(None))  # shape: (R, n)
        self.starts = list(range(0, self.x.shape[0], self.block))
        xs = [self.x[s:s + self.block] for s in self.starts]
        sts = [np.ascontiguousarray(self.stats[:, s:s + self.block]) for s in self.starts]
        if runner.is_sync:
            self.x_blocks, self.stat_blocks = xs, sts
        else:
            self.x_blocks = runner.client.scatter(xs, hash=False)
            self.stat_blocks = runner.client.scatter(sts, hash=False)

    @property
    def n(self) -> int:
        return int(self.x.shape[0])

    def release(self) -> None:
        """Drop the workers' copies (the object is unusable afterwards)."""
        if not self.runner.is_sync:
            for f in list(self.x_blocks) + list(self.stat_blocks):
                f.release()
        self.x_blocks = self.stat_blocks = []


def subset_block(runner: Runner, store: GramStore, arch: Layer, kind: str, rows: np.ndarray,
                 cols: np.ndarray, *, block: int = 1024, device: str = "cpu",
                 diag: Optional[np.ndarray] = None, inputs: Optional[RowInputs] = None) -> np.ndarray:
    """``K[rows][:, cols]`` (float64) of the symmetric train store ``store``, computed on
    ``runner``'s workers in row blocks of ``block``.

    Parameters
    ----------
    runner : Runner
    store : GramStore
        A complete symmetric store (its inputs ``x1`` and statistics ``stats1`` are read).
    arch : Layer
        The store's architecture (``from_spec`` of its meta).
    kind : 'ntk' or 'nngp'
    rows, cols : ndarray of int
        Training-point indices (any order; repeats allowed).
    diag : ndarray, shape (n,), optional
        The stored diagonal of ``kind``; entries with ``rows[i] == cols[j]`` are set from it.
    inputs : RowInputs, optional
        The rows' inputs already read and scattered; used when ``rows`` is ``0 .. n-1`` in
        order (its ``block`` replaces ``block``).

    Returns
    -------
    ndarray, shape (len(rows), len(cols)), float64
    """
    rows, cols = np.asarray(rows, np.int64).reshape(-1), np.asarray(cols, np.int64).reshape(-1)
    out = np.empty((rows.size, cols.size))
    if rows.size == 0 or cols.size == 0:
        return out
    meta = store.meta
    cached = inputs is not None and rows.size == inputs.n and np.array_equal(rows, np.arange(inputs.n))
    if cached:
        stats, xc = inputs.stats, inputs.x[cols]
    else:
        stats = store.read("stats1", slice(None), slice(None))  # shape: (R, n), small
        xc = store.read_rows("x1", cols)
    stc = np.ascontiguousarray(stats[:, cols])
    if not runner.is_sync:
        xc_f, stc_f = runner.client.scatter([xc, stc], broadcast=True, hash=False)
    else:
        xc_f, stc_f = xc, stc
    token = uuid.uuid4().hex[:8]
    if cached:
        starts = inputs.starts
        args = [(s, arch, xb, sb, xc_f, stc_f, kind, meta["store_dtype"])
                for s, xb, sb in zip(starts, inputs.x_blocks, inputs.stat_blocks)]
    else:
        xr = xc if rows is cols or np.array_equal(rows, cols) else store.read_rows("x1", rows)
        starts = list(range(0, rows.size, block))
        args = [(s, arch, xr[s:s + block], np.ascontiguousarray(stats[:, rows[s:s + block]]), xc_f, stc_f,
                 kind, meta["store_dtype"]) for s in starts]

    def put(res: tuple[int, np.ndarray]) -> None:
        s, part = res
        out[s:s + part.shape[0]] = part

    try:
        run_tasks(runner, _indexed_subset, args, keys=[f"subset-{token}-{k}" for k in range(len(args))],
                  on_result=put, keep=False, device=device)
    finally:
        if not runner.is_sync:
            xc_f.release()
            stc_f.release()
    if diag is not None:
        same = rows[:, None] == cols[None, :]
        if same.any():
            r, c = np.nonzero(same)
            out[r, c] = np.asarray(diag)[rows[r]].astype(meta["store_dtype"])  # as stored
    return out


def _indexed_subset(start: int, *args: Any, **kwargs: Any) -> tuple[int, np.ndarray]:
    return start, subset_block_task(*args, **kwargs)
