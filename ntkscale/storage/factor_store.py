"""The factor store: the upper Cholesky factor ``U`` of ``K + ridge I``, cut in the Gram's tiles.

Layout (``n x n`` factor, tile size ``T``)::

    zarr.json     attrs["ntkscale_factor"]: format, the Gram's URL, build id and kind,
                  n, tile, dtype, requested ridge, absolute ridge factored, relative
                  jitter, factor id, complete flag
    U             one chunk per upper tile (T, T), float32 | float64, CRC32C checksums
                  (tiles below the diagonal are never written)
    _stop/<run>   markers asking the tasks of one run to stop (removed after the run)
    .ntkscale.lock  while a factorization runs: its host, pid, start time (see .writer)

As in the Gram store (the shared skeleton: :mod:`.tiled_store`), a chunk is written whole
by one task and ``LocalStore`` writes it atomically, so an existing chunk is a finished
tile: an interrupted factorization resumes by listing chunks. Reading a tile that was
never written is an error (zarr would silently return its fill value).
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Iterator, Optional

import numpy as np
import zarr
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from . import chunks
from .tiled_store import CorruptTileError, TiledStore, codecs
from .url import StoreAccessError

__all__ = ["FactorStore", "MissingTileError", "FACTOR_FORMAT", "clear_tile_cache", "flush_writes"]

FACTOR_FORMAT = 1
_ATTR = "ntkscale_factor"
_ARRAY = "U"


_CACHE: "OrderedDict[tuple, np.ndarray]" = OrderedDict()  # (url, factor id, (i, j)) -> tile
_CACHE_LOCK = threading.Lock()


def _remember(key: tuple, tile: np.ndarray, limit: int) -> None:
    with _CACHE_LOCK:
        _CACHE[key] = tile
        total = sum(a.nbytes for a in _CACHE.values())
        while total > limit and _CACHE:
            total -= _CACHE.popitem(last=False)[1].nbytes


def clear_tile_cache() -> None:
    """Drop this process's cached factor tiles."""
    with _CACHE_LOCK:
        _CACHE.clear()


# Write-behind: chunk writes queued on one writer thread of this process, by (url, tile).
_PENDING: "dict[tuple, Future]" = {}
_PENDING_LOCK = threading.Lock()
_WRITER: list = []  # the process's writer thread pool, made on first use


def _writer() -> ThreadPoolExecutor:
    with _PENDING_LOCK:
        if not _WRITER:
            _WRITER.append(ThreadPoolExecutor(1, thread_name_prefix="ntkscale-factor-writer"))
        return _WRITER[0]


def _await(keys: list) -> None:
    """Wait for the pending writes ``keys`` (done ones are dropped); raise the first write's error."""
    error = None
    for key in keys:
        with _PENDING_LOCK:
            fut = _PENDING.get(key)
        if fut is None:
            continue
        exc = fut.exception()  # waits
        with _PENDING_LOCK:
            if _PENDING.get(key) is fut:
                del _PENDING[key]
        error = error or exc
    if error is not None:
        raise error


def flush_writes(url: Optional[str] = None) -> None:
    """Wait until this process's queued factor-tile writes (of store ``url``, or all) are on the
    store; raise the first failed write's error (e.g. a full disk)."""
    with _PENDING_LOCK:
        keys = [k for k in _PENDING if url is None or k[0] == url]
    _await(keys)


class MissingTileError(StoreAccessError):
    """A factor tile that should exist has not been written."""


class FactorStore(TiledStore):
    """Handle on one factor store (cheap to create; workers open their own); constructed as a
    :class:`~.tiled_store.TiledStore`, usually by :meth:`open` or :meth:`create`."""

    KIND = "factor-store"
    ATTR = _ATTR
    WHAT = "factor store"
    URL_ARG = "factor_url"
    FORMAT = FACTOR_FORMAT

    @classmethod
    def create(cls, url: Any, meta: dict, *, storage_options: Optional[dict] = None) -> "FactorStore":
        """Create (replacing whatever is at ``url``) an empty factor store.

        ``meta`` needs ``n``, ``tile`` and ``dtype``; it is stored with ``format`` and
        ``complete=False``.
        """
        group = cls._fresh_group(url, storage_options)  # replaces what is there, except the lock
        n, T = int(meta["n"]), int(meta["tile"])
        group.create_array(_ARRAY, shape=(n, n), chunks=(T, T), dtype=np.dtype(meta["dtype"]).name,
                           fill_value=0, **codecs())
        group.attrs[_ATTR] = dict(meta, format=FACTOR_FORMAT, complete=False)
        return cls(str(url), group, storage_options)

    # ------------------------------------------------------------- metadata
    @property
    def n(self) -> int:
        return int(self.meta["n"])

    @property
    def shape(self) -> tuple[int, int]:
        return self.n, self.n

    def check_compatible(self, expect: dict) -> None:
        """Refuse a factor of another Gram, kind, size, tile, dtype or ridge (names the key)."""
        self._check_meta(expect, {
            "gram_build_id": "belongs to another Gram (build id differs)", "kind": "factors another kernel",
            "n": "has another size", "tile": "uses another tile", "dtype": "holds another dtype",
            "base_ridge": "was factored with another ridge"})

    # ---------------------------------------------------------------- tiles
    @property
    def array(self) -> zarr.Array:
        return self._array(_ARRAY)

    def _key(self, i: int, j: int) -> str:
        return chunks.chunk_key(self.array, i, j)

    def done_tiles(self) -> set[tuple[int, int]]:
        """Tiles ``(i, j)`` whose chunk exists (finished tiles)."""
        return {(t[0], t[1]) for t in self._chunk_indices(_ARRAY) if len(t) == 2}

    def has_tile(self, i: int, j: int) -> bool:
        return self._has_key(self._key(i, j))

    def _raw_layout(self) -> Optional[np.dtype]:
        """The chunks' little-endian dtype when they are plain bytes + CRC32C (as created here)."""
        if "raw" not in self._cache:
            self._cache["raw"] = self.raw_dtype(_ARRAY)
        return self._cache["raw"]

    def read_tiles(self, tiles: list[tuple[int, int]], cache_bytes: int = 0) -> list[np.ndarray]:
        """Tiles ``U[i, j]`` (shapes (rows_i, cols_j), stored dtype, read-only), fetched concurrently.

        The chunks are read as bytes and their CRC32C checked here (zarr's array indexing
        costs about as much again as the read itself). With ``cache_bytes > 0`` tiles go
        through this process's LRU tile cache of that size (tiles never change under one
        factor id; left-looking Cholesky reads each ~nb/2 times).

        Raises
        ------
        MissingTileError
            If a tile was never written (zarr indexing would return its fill value).
        CorruptTileError
            If a chunk fails its checksum.
        """
        fid = self.meta.get("factor_id")
        with _CACHE_LOCK:
            found = {t: _CACHE[self.url, fid, t] for t in tiles if (self.url, fid, t) in _CACHE} \
                if cache_bytes else {}
            for t in found:
                _CACHE.move_to_end((self.url, fid, t))
        todo = [t for t in tiles if t not in found]
        _await([(self.url, t) for t in todo])  # a tile still being written by this process
        for t, tile in zip(todo, self._read_raw(todo) if todo else []):
            found[t] = tile
            if cache_bytes:
                _remember((self.url, fid, t), tile, cache_bytes)
        return [found[t] for t in tiles]

    def _read_raw(self, tiles: list[tuple[int, int]]) -> list[np.ndarray]:
        dtype = self._raw_layout()
        if dtype is None:  # pragma: no cover - a store written with other codecs
            return [self._read_indexed(i, j) for i, j in tiles]
        T = self.tile
        out = []
        for (i, j), raw in zip(tiles, chunks.read_chunks(self.group.store, [self._key(i, j) for i, j in tiles])):
            if raw is None:
                raise MissingTileError(f"factor tile ({i}, {j}) is missing from {self.url!r}; the factor is "
                                       "incomplete: re-run the factorization to finish it")
            if len(raw) != T * T * dtype.itemsize + 4 or not chunks.crc_ok(raw):
                raise CorruptTileError(f"factor tile ({i}, {j}) in {self.url!r} fails its checksum; delete the "
                                       "chunk and re-run the factorization to recompute it")
            rows, cols = self.tile_bounds(i, j)
            out.append(raw[:-4].view(dtype).reshape(T, T)[: rows.stop - rows.start, : cols.stop - cols.start])
        return out

    def _read_indexed(self, i: int, j: int) -> np.ndarray:  # pragma: no cover - fallback
        if not self.has_tile(i, j):
            raise MissingTileError(f"factor tile ({i}, {j}) is missing from {self.url!r}")
        rows, cols = self.tile_bounds(i, j)
        return np.asarray(self.array[rows, cols])

    def read_tile(self, i: int, j: int) -> np.ndarray:
        """Tile ``U[i, j]``, shape (rows_i, cols_j) (see :meth:`read_tiles`)."""
        return self.read_tiles([(i, j)])[0]

    def stream_tiles(self, order: list[tuple[int, int]], ahead: int = 2) -> Iterator[np.ndarray]:
        """Tiles in ``order`` (stored dtype), read ``ahead`` tiles in advance by threads (the
        reads and checksums overlap the consumer's BLAS calls)."""
        with ThreadPoolExecutor(max_workers=ahead) as ex:
            queue: deque = deque()
            for t in order:
                queue.append(ex.submit(self.read_tile, *t))
                if len(queue) > ahead:
                    yield queue.popleft().result()
            while queue:
                yield queue.popleft().result()

    def write_tile(self, i: int, j: int, values: np.ndarray, cache_bytes: int = 0) -> None:
        """Write tile ``(i, j)`` (one whole chunk); keep it in the tile cache if ``cache_bytes``."""
        rows, cols = self.tile_bounds(i, j)
        dtype = self._raw_layout()
        if dtype is None:  # pragma: no cover - a store written with other codecs
            self.array[rows, cols] = values
            tile = np.array(values, dtype=self.array.dtype)
        else:
            flat, full = chunks.tile_buffer(self.tile, dtype)
            full[:] = 0
            full[: rows.stop - rows.start, : cols.stop - cols.start] = values
            self.write_buffer(i, j, flat)
            tile = full[: rows.stop - rows.start, : cols.stop - cols.start]
        if cache_bytes:
            self.remember(i, j, tile, cache_bytes)

    def write_buffer(self, i: int, j: int, flat: np.ndarray) -> None:
        """Write a whole chunk from a :func:`~ntkscale.storage.chunks.tile_buffer` (padding included;
        its CRC is filled in here) without copying it."""
        chunks.write_chunk(self.group.store, self._key(i, j), flat)

    def write_buffer_behind(self, i: int, j: int, flat: np.ndarray) -> None:
        """:meth:`write_buffer` on this process's writer thread: returns at once, after the writes
        queued before (of any store) are done; their error, if any, is raised here. Reads of the
        tile in this process (:meth:`read_tiles`) wait for its write; :func:`flush_writes` waits
        for all. ``flat`` must not change afterwards. Other processes see the tile only once it
        is written: use it only where the tile's readers run in this process or after a flush."""
        flush_writes()
        key = (self.url, (i, j))
        fut = _writer().submit(self.write_buffer, i, j, flat)
        with _PENDING_LOCK:
            _PENDING[key] = fut

    def remember(self, i: int, j: int, tile: np.ndarray, cache_bytes: int) -> None:
        """Put tile ``(i, j)`` (read-only from now on) in this process's tile cache."""
        tile.setflags(write=False)
        _remember((self.url, self.meta.get("factor_id"), (i, j)), tile, cache_bytes)

    def delete_tile(self, i: int, j: int) -> None:
        """Remove tile ``(i, j)`` (it will be recomputed by the next run)."""
        self._delete_key(self._key(i, j))

    # ----------------------------------------------------------------- stop
    def request_stop(self, run: str) -> None:
        """Ask the tasks of run ``run`` that have not started their work to skip it."""
        buf = default_buffer_prototype().buffer.from_bytes(b"stop")
        sync(self.group.store.set(f"_stop/{run}", buf))

    def stop_requested(self, run: str) -> bool:
        return self._has_key(f"_stop/{run}")

    def clear_stop(self, run: str) -> None:
        self._delete_key(f"_stop/{run}")
