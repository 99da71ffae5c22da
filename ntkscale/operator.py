"""The stored Gram operator: the contract of :mod:`ntkscale.linop` over a Gram store.

``StoredGram`` reads a Gram store; a matvec is one streaming pass over the stored
tiles in a few balanced tasks per worker, partial products summed here on the client, so
no task graph grows across solver iterations. It implements ``factorize`` (the tiled
out-of-core Cholesky) and ``take`` (sub-blocks computed from the stored inputs).
``DenseGram`` (in :mod:`ntkscale.linop`, re-exported here) is the in-memory reference;
both run the same contract tests.
"""

from __future__ import annotations

import logging
import uuid
from concurrent.futures import CancelledError
from typing import Any, Optional

import numpy as np

from .runner import Runner, get_runner
from .storage import GramStore, chunks
from .storage.packed import copy_symmetric
from .tiling import tasks
from .tiling.layout import TilePlan
from .tiling.executor import await_workers, run_tasks
from ._blocks import COMPUTE_OVER_READ, cache_budget, spread
from .linop import (DenseGram, GramOperator, as_block as _as_block, as_slices as _slices, check_indices,
                    read_blocks)

__all__ = ["GramOperator", "DenseGram", "StoredGram"]

log = logging.getLogger("ntkscale")

_PASS_RETRIES = 2  # times a pass runs again after its scattered input died with its workers


DIRECT_IO_FRACTION = 0.5  # a store above this share of RAM does not stay in the page cache


def _auto_io(store: GramStore, kind: str) -> str:
    """'direct' for a local store of ``kind`` larger than DIRECT_IO_FRACTION x RAM, else 'mapped'."""
    import psutil

    if not store.can_map():
        return "buffered"
    n1, n2 = store.shape
    T, item = store.tile, np.dtype(store.meta["store_dtype"]).itemsize
    g1, g2 = -(-n1 // T), -(-n2 // T)
    tiles = g1 * (g1 + 1) // 2 if store.symmetric else g1 * g2
    return "direct" if tiles * T * T * item > DIRECT_IO_FRACTION * psutil.virtual_memory().total else "mapped"


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
    io : {'auto', 'mapped', 'direct', 'buffered'}
        How passes read chunks (:func:`ntkscale.tiling.tasks.matvec_task`). ``'auto'``:
        ``'direct'`` (``O_DIRECT``, no page cache) when the stored kind is larger than
        :data:`DIRECT_IO_FRACTION` of this machine's RAM, so every pass reads the disk anyway,
        else ``'mapped'`` (passes reuse the page cache).
    cache : 'auto' or int
        With ``io='direct'``: bytes of tiles read through the page cache anyway (memory
        mapped), so that they stay there between passes and every later pass reads only the
        rest from disk. ``'auto'``: :func:`cache_budget` of this machine, when the store is
        local; 0 (default): every tile direct. The cached tiles are spread evenly over the
        tile list (:attr:`mapped_tiles`). Measured on the 2-core VM (120k store, 49 of 120
        tiles cached): 28.6-31.3 s per pass against 24.9-25.6 s all direct, and 120 s for the
        first pass that maps them — the mapped tiles cost more CPU than their disk reads save
        there (``benchmarks/RESULTS.md``), so it is off unless asked for.
    subsets : {'auto', 'compute', 'read'}
        How :meth:`take` gets sub-blocks over scattered indices: computed from the stored
        inputs on the workers (:func:`ntkscale.tiling.subset.subset_block`), or read from the
        tiles; ``'auto'`` computes when that is cheaper (:data:`COMPUTE_OVER_READ`).
    device : str
        Where computed sub-blocks run (:mod:`ntkscale.tiling.device`).
    factor_url : str, optional
        Where :meth:`factorize` keeps its factor (default: a sibling of the store keyed by kind,
        dtype and ridge, :func:`ntkscale.tiling.cholesky.default_factor_url`); ``overwrite_factor``
        lets it replace a factor store of another ridge or dtype.
    """

    in_memory = False

    def __init__(self, url: Any, kind: str = "ntk", *, client: Any = "sync",
                 storage_options: Optional[dict] = None, readahead: bool = True, io: str = "auto",
                 cache: Any = 0, subsets: str = "auto", device: str = "cpu",
                 factor_url: Optional[str] = None, overwrite_factor: bool = False):
        self.store = GramStore.open(url, storage_options=storage_options)
        meta = self.store.meta
        if kind not in meta["kinds"]:
            raise ValueError(f"store {url!r} holds {meta['kinds']}, not {kind!r}")
        if not meta.get("complete"):
            raise ValueError(f"store {url!r} is incomplete (an interrupted build); re-run build_gram "
                             "with the same arguments to finish it")
        self.url, self.kind, self.storage_options = str(url), kind, storage_options
        self.readahead = bool(readahead)
        if io not in ("auto",) + tasks.IO_MODES:
            raise ValueError(f"io must be 'auto' or one of {tasks.IO_MODES}, got {io!r}")
        self.io = _auto_io(self.store, kind) if io == "auto" else io
        self.shape = tuple(meta["shape"])
        self.dtype = np.dtype(meta["store_dtype"])
        self.symmetric = bool(meta["symmetric"])
        if subsets not in ("auto", "compute", "read"):
            raise ValueError(f"subsets must be 'auto', 'compute' or 'read', got {subsets!r}")
        self.subsets, self.device = subsets, device
        self.factor_url, self.overwrite_factor = factor_url, bool(overwrite_factor)
        self.tile = int(self.store.tile)  # read grid of block reads (linop.read_blocks)
        self.runner: Runner = get_runner(client, quiet=True)
        self.passes = 0  # number of streaming passes over the tiles (matvecs)
        self.mapped_tiles = self._cached_tiles(cache)

    def _cached_tiles(self, cache: Any) -> frozenset:
        """Tiles that ``io='direct'`` passes read through the page cache (see ``cache``)."""
        if self.io != "direct" or not self.store.can_map():
            return frozenset()
        if cache == "auto":
            budget = cache_budget()
        elif isinstance(cache, (int, np.integer)) and not isinstance(cache, bool) and cache >= 0:
            budget = int(cache)
        else:
            raise ValueError(f"cache must be 'auto' or a number of bytes >= 0, got {cache!r}")
        tiles = TilePlan(self.shape[0], self.shape[1], self.store.tile, self.symmetric).tiles()
        chunk = self.store.chunk_nbytes(self.kind)
        return frozenset(spread(tiles, budget // max(chunk, 1)))

    def release_columns(self) -> None:
        """Free what :meth:`columns` keeps between calls (the rows' inputs on the workers)."""
        inputs, self._row_inputs = getattr(self, "_row_inputs", None), None
        if inputs is not None:
            inputs.release()

    def close(self) -> None:
        self.release_columns()
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

    @property
    def precisions(self) -> tuple[str, ...]:
        """Precisions :meth:`matvec` offers: ``'single'`` too for a float32 store."""
        return ("double", "single") if self.dtype == np.float32 else ("double",)

    def matvec(self, V: Any, precision: str = "double") -> np.ndarray:
        """``K @ V`` for V of shape (n2,) or (n2, k), float64; one pass over the tiles.

        ``precision='single'`` (float32 stores): SGEMMs on the stored tiles, ~1e-5 relative
        error, about twice as fast on wide ``V`` — for sketches (a Nyström preconditioner).

        ``V`` is scattered to every worker. A worker that dies mid-pass has its tasks rerun
        by the scheduler, reading ``V`` from another worker; if every worker holding ``V``
        died, the pass runs again (up to twice) on the workers there then.
        """
        V2, vec = _as_block(V, self.shape[1])
        if precision not in self.precisions:
            raise ValueError(f"precision must be one of {self.precisions} for this store, got {precision!r}")
        for attempt in range(_PASS_RETRIES + 1):
            try:
                out = self._pass(V2, precision)
                break
            except CancelledError as e:  # distributed: "lost dependencies" / "already forgotten"
                if attempt == _PASS_RETRIES:
                    raise RuntimeError(f"a pass over {self.url!r} lost its input {attempt + 1} times with the "
                                       f"workers holding it ({e}); check the workers' logs for why they die "
                                       "(memory limits?) and run again") from e
                log.warning("a pass over %s lost its input with the workers holding it (%s); running it "
                            "again", self.url, e)
                await_workers(self.runner.client, 1, 60.0)
        self.passes += 1
        return out[:, 0] if vec else out

    def _pass(self, V2: np.ndarray, precision: str = "double") -> np.ndarray:
        """One pass: ``K @ V2`` (float64), the tasks' partial products summed as they arrive."""
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

        try:
            run_tasks(self.runner, tasks.matvec_task,
                      [(self.url, meta["build_id"], self.kind, g, Vs) for g in groups],
                      keys=[f"gram-matvec-{token}-{k}" for k in range(len(groups))], on_result=add,
                      keep=False, storage_options=self.storage_options, readahead=self.readahead, io=self.io,
                      mapped=self.mapped_tiles or None, precision=precision)
        finally:
            if not self.runner.is_sync:
                Vs.release()
        return out

    def __getitem__(self, key: Any) -> np.ndarray:
        """Dense block ``K[r0:r1, c0:c1]`` assembled from tiles (mirrored where needed).

        Whole stored chunks are read (as passes read them: ``io``) and the wanted part is
        copied out; stores written by another program go through zarr's indexing. Diagonal
        tiles of a symmetric store are used by their upper triangle, mirrored
        (:func:`~ntkscale.storage.packed.copy_symmetric`)."""
        rows, cols = _slices(key, self.shape)
        T = self.store.tile
        out = np.empty((rows.stop - rows.start, cols.stop - cols.start), self.dtype)
        raw = self.store.raw_dtype(self.kind)
        flat = None
        packed = self.store.diag_packed(self.kind)  # (unfolded in the buffer, even when mapped)
        if raw is not None and (self.io != "mapped" or packed):  # one reused buffer per operator
            if getattr(self, "_block_buffer", None) is None:
                self._block_buffer = chunks.direct_buffer(T, raw)
            flat = self._block_buffer
        for bi in range(rows.start // T, -(-rows.stop // T)):
            for bj in range(cols.start // T, -(-cols.stop // T)):
                r0, r1 = max(rows.start, bi * T), min(rows.stop, (bi + 1) * T)
                c0, c1 = max(cols.start, bj * T), min(cols.stop, (bj + 1) * T)
                if r0 >= r1 or c0 >= c1:
                    continue
                mirror = self.symmetric and bi > bj
                if raw is not None:
                    ti, tj = (bj, bi) if mirror else (bi, bj)
                    diag = self.symmetric and bi == bj
                    buf = flat if self.io != "mapped" or (packed and diag) else None
                    full = self.store.read_tile_into(self.kind, ti, tj, buf, direct=self.io == "direct")
                    if diag:  # exact on and above the diagonal only (packed tiles)
                        copy_symmetric(full, slice(r0 - bi * T, r1 - bi * T), slice(c0 - bj * T, c1 - bj * T),
                                       out[r0 - rows.start: r1 - rows.start, c0 - cols.start: c1 - cols.start])
                        continue
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

    def take(self, rows: Any, cols: Any) -> np.ndarray:
        """``K[rows][:, cols]`` (float64) for sorted unique index arrays.

        Computed from the stored inputs on the workers when that is cheaper than reading
        every tile the indices touch (``subsets``; symmetric stores), else read by blocks
        (:func:`ntkscale.linop.read_blocks`). Computed entries are rounded to the store's dtype, so they
        equal the stored ones (see :mod:`ntkscale.tiling.subset`).
        """
        rows, cols = check_indices(rows, cols, self.shape)
        arch = self._arch() if self._compute(rows, cols) else None
        if arch is not None:
            from .tiling.subset import subset_block

            return subset_block(self.runner, self.store, arch, self.kind, rows, cols,
                                device=self.device, diag=self.diag())
        return read_blocks(self, rows, cols)

    def columns(self, idx: Any) -> np.ndarray:
        """``K[:, idx]`` (float64, shape (n, len(idx))) for distinct indices in any order.

        Computed from the stored inputs on the workers (:func:`ntkscale.tiling.subset.subset_block`,
        no pass over the tiles; entries rounded to the store's dtype, so they equal the stored
        ones) when the store is symmetric and its architecture can be rebuilt, else read by
        blocks. ``columns_computed`` counts the columns served.
        """
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        n = self.shape[0]
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise IndexError(f"column indices out of range [0, {n})")
        self.columns_computed = getattr(self, "columns_computed", 0) + int(idx.size)
        arch = self._arch() if self.symmetric and self.subsets != "read" else None
        rows = np.arange(n)
        if arch is not None:
            from .tiling.subset import RowInputs, subset_block

            if getattr(self, "_row_inputs", None) is None:  # read and scattered once, kept for the next calls
                self._row_inputs = RowInputs(self.runner, self.store)
            return subset_block(self.runner, self.store, arch, self.kind, rows, idx,
                                device=self.device, diag=self.diag(), inputs=self._row_inputs)
        order = np.argsort(idx, kind="stable")
        block = read_blocks(self, rows, idx[order])
        out = np.empty_like(block)
        out[:, order] = block
        return out

    def factorize(self, ridge: float, *, dtype: Any = np.float64, jitter: bool | float = False,
                  tile: Optional[int] = None, progress: Optional[bool] = None, **options: Any) -> Any:
        """Cholesky factor of ``K + ridge I``, tile by tile into a factor store (resumable).

        :func:`ntkscale.tiling.cholesky.factor_tiles` on this operator's runner, with
        ``factor_url``/``overwrite`` from the operator unless given in ``options`` (also
        ``on_tile``, ``placement``). Returns a :class:`ntkscale.tiling.factor.TiledFactor`.
        """
        from .tiling.cholesky import factor_tiles

        options.setdefault("factor_url", self.factor_url)
        options.setdefault("overwrite", self.overwrite_factor)
        return factor_tiles(self, ridge, dtype=dtype, jitter=jitter, tile=tile, progress=progress, **options)

    @property
    def computes_columns(self) -> bool:
        """Whether :meth:`columns` computes columns from the stored inputs (a symmetric store
        whose architecture can be rebuilt, ``subsets`` not 'read'): no pass over the tiles."""
        if "computes_columns" not in self.__dict__:
            self.__dict__["computes_columns"] = (self.symmetric and self.subsets != "read"
                                                 and self._arch() is not None)
        return self.__dict__["computes_columns"]

    def _arch(self) -> Any:
        """The store's architecture, or None when its spec cannot be rebuilt (user layers)."""
        import json

        from .kernels import from_spec

        try:
            return from_spec(json.loads(self.store.meta["arch"]))
        except Exception as e:  # noqa: BLE001 - UnsupportedArchitectureError and malformed specs
            log.info("sub-blocks are read from the tiles: the store's architecture cannot be rebuilt (%s)", e)
            return None

    def _compute(self, rows: np.ndarray, cols: np.ndarray) -> bool:
        if not self.symmetric or self.subsets == "read" or rows.size == 0 or cols.size == 0:
            return False
        if self.subsets == "compute":
            return True
        T = self.store.tile
        touched = np.unique(rows // T).size * np.unique(cols // T).size * float(T) * T
        return rows.size * cols.size * COMPUTE_OVER_READ < touched

    def to_numpy(self) -> np.ndarray:
        """The whole Gram in memory (small n only)."""
        n1, n2 = self.shape
        if n1 * n2 * self.dtype.itemsize > 8 * 2**30:
            raise MemoryError(f"a {n1}x{n2} Gram does not fit in memory comfortably; use matvec or "
                              "block reads")
        return self[0:n1, 0:n2]
