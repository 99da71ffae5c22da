"""Gram operators: what solvers see (shape, dtype, diag, matvec, block reads).

``StoredGram`` reads a Gram store; a matvec is one streaming pass over the stored
tiles in a few balanced tasks per worker, partial products summed here on the client, so
no task graph grows across solver iterations. ``DenseGram`` wraps an in-memory
array with the same interface, so solvers are tested on both.
"""

from __future__ import annotations

import uuid
from typing import Any, Optional, Protocol

import numpy as np

from .cluster import Runner, get_runner
from .storage import GramStore, chunks
from .tiling import tasks
from .tiling.plan import TilePlan
from .tiling.executor import run_tasks

__all__ = ["GramOperator", "DenseGram", "StoredGram"]


class GramOperator(Protocol):
    """Interface the solvers rely on."""

    shape: tuple[int, int]
    dtype: np.dtype

    def diag(self) -> np.ndarray: ...
    def matvec(self, V: np.ndarray) -> np.ndarray: ...
    def __getitem__(self, key: tuple[slice, slice]) -> np.ndarray: ...
    def to_numpy(self) -> np.ndarray: ...


def _as_block(V: Any, n: int) -> tuple[np.ndarray, bool]:
    V = np.asarray(V, dtype=np.float64)
    vec = V.ndim == 1
    V2 = V[:, None] if vec else V
    if V2.ndim != 2 or V2.shape[0] != n:
        raise ValueError(f"matvec needs V of shape ({n},) or ({n}, k), got {V.shape}")
    if not np.all(np.isfinite(V2)):
        raise ValueError("matvec input has NaN or Inf")
    return np.ascontiguousarray(V2), vec


def _slices(key: Any, shape: tuple[int, int]) -> tuple[slice, slice]:
    if not (isinstance(key, tuple) and len(key) == 2 and all(isinstance(k, slice) for k in key)):
        raise TypeError("index a Gram operator with two slices, e.g. op[0:100, 200:300]")
    out = []
    for k, n in zip(key, shape):
        start, stop, step = k.indices(n)
        if step != 1:
            raise ValueError("Gram block reads take contiguous slices (step 1)")
        out.append(slice(start, max(start, stop)))
    return out[0], out[1]


class DenseGram:
    """An in-memory Gram matrix with the operator interface."""

    def __init__(self, K: Any):
        K = np.asarray(K)
        if K.ndim != 2:
            raise ValueError(f"Gram must be 2-d, got shape {K.shape}")
        self.K = K
        self.shape = K.shape
        self.dtype = K.dtype

    def diag(self) -> np.ndarray:
        return np.diagonal(self.K).astype(np.float64)

    def matvec(self, V: Any) -> np.ndarray:
        V2, vec = _as_block(V, self.shape[1])
        out = self.K.astype(np.float64, copy=False) @ V2
        return out[:, 0] if vec else out

    def __getitem__(self, key: Any) -> np.ndarray:
        r, c = _slices(key, self.shape)
        return np.array(self.K[r, c], dtype=self.dtype)

    def to_numpy(self) -> np.ndarray:
        return np.array(self.K)


class StoredGram:
    """A Gram matrix in a store, read through tasks on a Dask cluster (or in-process).

    Parameters
    ----------
    url : str
        Store built by :func:`ntkscale.tiling.build_gram` / ``build_cross_gram``.
    kind : 'ntk' or 'nngp'
    client : None, 'sync', address or Client
        Where matvec tasks run; ``None`` starts a local cluster (closed by :meth:`close`).
    readahead : bool
        Each matvec task reads its next tile in a helper thread while it multiplies the
        current one (``False`` only to measure what that overlap gives).
    """

    def __init__(self, url: Any, kind: str = "ntk", *, client: Any = "sync",
                 storage_options: Optional[dict] = None, readahead: bool = True):
        self.store = GramStore.open(url, storage_options=storage_options)
        meta = self.store.meta
        if kind not in meta["kinds"]:
            raise ValueError(f"store {url!r} holds {meta['kinds']}, not {kind!r}")
        if not meta.get("complete"):
            raise ValueError(f"store {url!r} is incomplete (an interrupted build); re-run build_gram "
                             "with the same arguments to finish it")
        self.url, self.kind, self.storage_options = str(url), kind, storage_options
        self.readahead = bool(readahead)
        self.shape = tuple(meta["shape"])
        self.dtype = np.dtype(meta["store_dtype"])
        self.symmetric = bool(meta["symmetric"])
        self.runner: Runner = get_runner(client, quiet=True)
        self.passes = 0  # number of streaming passes over the tiles (matvecs)

    def close(self) -> None:
        self.runner.close()

    def __enter__(self) -> "StoredGram":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def diag(self) -> np.ndarray:
        """Diagonal, shape (n,), float64 (from the per-row statistics; symmetric only)."""
        if not self.symmetric:
            raise ValueError("a cross Gram has no diagonal")
        row = 1 if self.kind == "nngp" else 2
        return self.store.read("stats1", slice(row, row + 1))[0]

    def _task_tiles(self) -> list[list[tuple[int, int]]]:
        """Stored tiles cut into contiguous row-major groups of equal count: a few
        groups per worker slot (balance), at most 32 tiles each (short tasks)."""
        plan = TilePlan(self.shape[0], self.shape[1], self.store.tile, self.symmetric)
        tiles = plan.tiles()
        n_tasks = min(len(tiles), max(2 * self.runner.slots(), -(-len(tiles) // 32)))
        return [[(int(a), int(b)) for a, b in g] for g in np.array_split(np.array(tiles), n_tasks)]

    def matvec(self, V: Any) -> np.ndarray:
        """``K @ V`` for V of shape (n2,) or (n2, k), float64; one pass over the tiles."""
        V2, vec = _as_block(V, self.shape[1])
        meta = self.store.meta
        # hash=False: identical V in consecutive calls would otherwise share one key, and
        # the release of the previous call's future can drop it under the new tasks
        # ("cancelled for reason: lost dependencies").
        Vs = V2 if self.runner.is_sync else self.runner.client.scatter(V2, broadcast=True, hash=False)
        groups = self._task_tiles()
        token = uuid.uuid4().hex[:8]
        T = self.store.tile
        out = np.zeros((self.shape[0], V2.shape[1]))

        def add(part: dict[int, np.ndarray]) -> None:  # fold each task's blocks as it arrives
            for block, value in part.items():
                out[block * T: block * T + value.shape[0]] += value

        run_tasks(self.runner, tasks.matvec_task,
                  [(self.url, meta["build_id"], self.kind, g, Vs) for g in groups],
                  keys=[f"gram-matvec-{token}-{k}" for k in range(len(groups))], on_result=add,
                  keep=False, storage_options=self.storage_options, readahead=self.readahead)
        if not self.runner.is_sync:
            Vs.release()
        self.passes += 1
        return out[:, 0] if vec else out

    def __getitem__(self, key: Any) -> np.ndarray:
        """Dense block ``K[r0:r1, c0:c1]`` assembled from tiles (mirrored where needed).

        Whole stored chunks are read (memory-mapped on a local store) and the wanted part
        is copied out; stores written by another program go through zarr's indexing."""
        rows, cols = _slices(key, self.shape)
        T = self.store.tile
        out = np.empty((rows.stop - rows.start, cols.stop - cols.start), self.dtype)
        raw = self.store.raw_dtype(self.kind)
        flat = None if raw is None or self.store.can_map() else chunks.tile_buffer(T, raw)[0]
        for bi in range(rows.start // T, -(-rows.stop // T)):
            for bj in range(cols.start // T, -(-cols.stop // T)):
                r0, r1 = max(rows.start, bi * T), min(rows.stop, (bi + 1) * T)
                c0, c1 = max(cols.start, bj * T), min(cols.stop, (bj + 1) * T)
                if r0 >= r1 or c0 >= c1:
                    continue
                mirror = self.symmetric and bi > bj
                if raw is not None:
                    ti, tj = (bj, bi) if mirror else (bi, bj)
                    full = self.store.read_tile_into(self.kind, ti, tj, flat)
                    if mirror:
                        block = full[c0 - bj * T: c1 - bj * T, r0 - bi * T: r1 - bi * T].T
                    else:
                        block = full[r0 - bi * T: r1 - bi * T, c0 - bj * T: c1 - bj * T]
                elif mirror:
                    block = self.store.read(self.kind, slice(c0, c1), slice(r0, r1)).T
                else:
                    block = self.store.read(self.kind, slice(r0, r1), slice(c0, c1))
                out[r0 - rows.start: r1 - rows.start, c0 - cols.start: c1 - cols.start] = block
        return out

    def to_numpy(self) -> np.ndarray:
        """The whole Gram in memory (small n only)."""
        n1, n2 = self.shape
        if n1 * n2 * self.dtype.itemsize > 8 * 2**30:
            raise MemoryError(f"a {n1}x{n2} Gram does not fit in memory comfortably; use matvec or "
                              "block reads")
        return self[0:n1, 0:n2]
