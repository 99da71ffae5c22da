"""The Gram store: a Zarr v3 group with inputs, per-row statistics and Gram tiles.

Layout (``n1 x n2`` Gram, tile size ``T``; symmetric stores have no ``x2``)::

    zarr.json        attrs["ntkscale"]: format, architecture spec, fingerprints,
                     tile, dtypes, kinds, version, complete flag
    x1, x2           inputs, chunks (T, d)                      float64
    stats1, stats2   per-row statistics, chunks (R, T)          float64
                     rows: cov0, nngp diag, ntk diag, activation variances
    nngp, ntk        Gram tiles, one chunk per tile (T, T)      float32 | float64
                     (symmetric: upper-triangle tiles only; reads mirror them)
    nngp_diag, ...   symmetric stores with diag_layout "packed": the diagonal tiles,
                     each its upper triangle folded into one (ceil(T/2), T+1) chunk
                     (.packed); the main arrays then hold the tiles i < j only
    .ntkscale.lock   while a build runs: its host, pid, start time (see .writer)

Every chunk carries a CRC32C checksum (zarr's ``crc32c`` codec), so a corrupted
tile is detected on read and named (:meth:`GramStore.bad_chunks` checks them all).
Chunks are written whole, each by one task: an existing chunk is a finished tile, which
is what resuming relies on (the skeleton shared with the factor store:
:mod:`.tiled_store`).

Diagonal tiles of symmetric stores are packed (``attrs["ntkscale"]["diag_layout"] ==
"packed"``, tiles of at least :data:`~.packed.MIN_PACKED_TILE`): about half a tile on disk
each. Stores without that key hold their diagonal tiles whole in the main arrays (the
"full" layout of earlier versions), and are read and resumed as they are. The tile-level
methods (:meth:`GramStore.read_tile_into`, ``write_tile``, ``done_chunks``, ``bad_chunks``,
``delete_chunk``, ``tile_nbytes``, ``read``) take tile indices ``(i, j)`` of a Gram kind and
go to the packed chunk for ``i == j`` (the packing, and its reads and writes in a store:
:mod:`.packed`); a packed diagonal tile read whole is exact on and above its diagonal only
(its lower triangle is garbage), a region ``read`` is mirrored.
"""

from __future__ import annotations

from typing import Any, Iterable, Optional

import numpy as np
import zarr

from . import chunks, packed
from .packed import DIAG_LAYOUTS, PackedDiagonalStore, diag_name, unpack_in_place
from .tiled_store import CorruptTileError, StoreMismatchError, codecs, fingerprint

__all__ = ["GramStore", "StoreMismatchError", "CorruptTileError", "fingerprint", "FORMAT", "DIAG_LAYOUTS"]

FORMAT = 1
STAT_ROWS = ("cov0", "nngp", "ntk")  # followed by one row per activation (fused chains)


class GramStore(PackedDiagonalStore):
    """Handle on one Gram store (cheap to create; workers open their own); constructed as a
    :class:`~.tiled_store.TiledStore`, usually by :meth:`open` or :meth:`create`."""

    KIND = "gram-store"
    ATTR = "ntkscale"
    WHAT = "Gram store"
    URL_ARG = "store URL"
    FORMAT = FORMAT
    OPEN_HINT = "; build one with build_gram"

    @classmethod
    def create(cls, url: Any, meta: dict, x1: np.ndarray, x2: Optional[np.ndarray],
               n_stat_rows: int, *, storage_options: Optional[dict] = None) -> "GramStore":
        """Create the group, write the inputs, and make empty statistic and tile arrays."""
        meta = packed.with_diag_layout(meta)
        group = cls._fresh_group(url, storage_options)  # replaces what is there, except the lock
        T = meta["tile"]
        for name, x in (("x1", x1), ("x2", x2)):
            if x is None:
                continue
            arr = group.create_array(name, shape=x.shape, chunks=(min(T, max(len(x), 1)), x.shape[1]),
                                     dtype=x.dtype, fill_value=0, **codecs())
            arr[...] = x
            sname = "stats1" if name == "x1" else "stats2"
            group.create_array(sname, shape=(n_stat_rows, len(x)), chunks=(n_stat_rows, T),
                               dtype="float64", fill_value=np.nan, **codecs())
        n1, n2 = meta["shape"]
        for kind in meta["kinds"]:
            group.create_array(kind, shape=(n1, n2), chunks=(T, T), dtype=meta["store_dtype"],
                               fill_value=0, **codecs())
            if meta.get("diag_layout") == "packed":
                packed.create_packed_array(group, kind, n1, T, meta["store_dtype"])
        group.attrs[cls.ATTR] = dict(meta, complete=False)
        return cls(str(url), group, storage_options)

    # ------------------------------------------------------------- metadata
    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.meta["shape"])  # type: ignore[return-value]

    @property
    def symmetric(self) -> bool:
        return bool(self.meta["symmetric"])

    def check_compatible(self, expect: dict) -> None:
        """Refuse a store built from other data/architecture/settings (names the difference)."""
        self._check_meta(expect, {
            "fingerprint1": "was built from other data (input fingerprint differs)",
            "fingerprint2": "was built from other second-argument data (fingerprint differs)",
            "arch": "was built for another architecture",
            "symmetric": "has another symmetry (train Gram vs cross Gram)",
            "store_dtype": "stores another dtype",
            "compute_dtype": "was computed in another dtype",
            "tile": "uses another tile size",
        })
        kinds = self.meta["kinds"]
        missing = [k for k in expect.get("kinds", ()) if k not in kinds]
        if missing:
            raise StoreMismatchError(f"{self.WHAT} {self.url!r} holds kinds {kinds}, not {missing}; "
                                     f"use another {self.URL_ARG} or overwrite=True")

    # ---------------------------------------------------------------- tiles
    def array(self, name: str) -> zarr.Array:
        """Array ``name`` (handles are cached: opening one reads its metadata document)."""
        return self._array(name)

    def has_tiles(self) -> bool:
        """Whether any Gram tile has been stored (a store without one holds nothing of value)."""
        try:
            return any(self.done_chunks(k) for k in self.meta.get("kinds", ()))
        except KeyError:  # an array never created (creation cut short)
            return False

    def done_chunks(self, name: str) -> set[tuple[int, ...]]:
        """Chunk indices that exist in array ``name`` (finished tiles / blocks); for a Gram kind
        with packed diagonal tiles, diagonal tile ``(i, i)`` is done when its packed chunk is."""
        if not self.diag_packed(name):
            return self._chunk_indices(name)
        off = {t for t in self._chunk_indices(name) if t[0] != t[1]}
        return off | {(t[0], t[0]) for t in self._chunk_indices(diag_name(name))}

    def read(self, name: str, rows: slice, cols: Optional[slice] = None) -> np.ndarray:
        """Read a region, naming the tile if a chunk is corrupt.

        Through zarr's indexing, so tiles below the diagonal of a symmetric Gram read as zeros
        (they are not stored); packed diagonal tiles are read from their packed chunks and
        mirrored (:meth:`_read_packed`)."""
        arr = self.array(name)
        region = (rows,) if cols is None else (rows, cols)
        try:
            out = np.asarray(arr[region])
            if cols is not None and self.diag_packed(name):
                self._fill_diagonal(name, rows, cols, out)
            return out
        except CorruptTileError:
            raise
        except Exception as e:  # zarr raises ValueError/RuntimeError on checksum or decode failure
            T = self.tile
            where = f"row block {rows.start // T}" if cols is None else \
                f"tile ({rows.start // T}, {cols.start // T})"
            raise CorruptTileError(
                f"{name!r} {where} in store {self.url!r} cannot be read ({type(e).__name__}: {e}). "
                "The chunk is corrupt or truncated: re-run the build with repair=True (ntkscale gram "
                "JOB.toml --repair) to recompute the corrupt chunks, or rebuild with overwrite=True") from e

    def read_rows(self, name: str, index: np.ndarray) -> np.ndarray:
        """Rows ``index`` (any order, repeats allowed) of a row-chunked array (``x1``/``x2``),
        reading each covering chunk once (zarr's orthogonal selection)."""
        index = np.asarray(index, dtype=np.int64).reshape(-1)
        uniq, inverse = np.unique(index, return_inverse=True)
        try:
            got = np.asarray(self.array(name).get_orthogonal_selection((uniq, slice(None))))
        except Exception as e:  # zarr raises ValueError/RuntimeError on checksum or decode failure
            raise CorruptTileError(f"{name!r} rows in store {self.url!r} cannot be read ({type(e).__name__}: "
                                   f"{e}); re-run the build with repair=True") from e
        return got[inverse]

    def read_tile_into(self, name: str, i: int, j: int, out: Optional[np.ndarray],
                       direct: bool = False) -> np.ndarray:
        """Whole chunk ``(i, j)`` of ``name``, checksum verified, as its full ``(T, T)``
        C-ordered data view (padded at the edges).

        ``out`` is a uint8 buffer from :func:`~ntkscale.storage.chunks.tile_buffer` or
        :func:`~ntkscale.storage.chunks.direct_buffer` (this store's tile and dtype) that the
        chunk is read into (its first ``T*T*itemsize + 4`` bytes); with ``out=None`` a chunk of a
        local directory store is memory-mapped instead (read-only view, no copy; other stores
        then need ``out``). With ``direct=True`` and ``out`` from
        :func:`~ntkscale.storage.chunks.direct_buffer`, a local chunk is read with ``O_DIRECT``
        (bypassing the page cache; other stores and filesystems fall back to a plain read).

        A packed diagonal tile (``i == j``, :attr:`diag_layout` ``'packed'``) is read into the
        start of ``out`` (a fresh buffer when ``out`` is None: it cannot be unfolded in a
        read-only mapping) and unfolded there (:func:`~ntkscale.storage.packed.unpack_in_place`):
        the returned tile is exact **on and above its diagonal only**; its lower triangle is
        garbage, and the buffer's checksum bytes are overwritten.

        Raises
        ------
        CorruptTileError
            If the chunk is missing, has the wrong size or fails its checksum.
        """
        dtype, T = self.raw_dtype(name), self.tile
        full = T * T * dtype.itemsize + 4 if dtype is not None else -1
        if dtype is None or (out is not None and out.nbytes < full):  # pragma: no cover - caller's bug
            raise ValueError(f"read_tile_into needs a raw-bytes array and a {T}x{T} {dtype} tile buffer")
        is_packed = self._packed_tile(name, i, j)
        if is_packed and out is None:
            out = np.empty(full, dtype=np.uint8)
        flat, why = self._read_chunk(self._tile_key(name, i, j), out, self.tile_nbytes(name, i, j), direct)
        if flat is None:
            what = "packed diagonal tile" if is_packed else "tile"
            raise CorruptTileError(f"{name!r} {what} ({i}, {j}) in store {self.url!r} cannot be read: {why}. "
                                   "Re-run the build with repair=True (ntkscale gram JOB.toml --repair) to "
                                   "recompute the corrupt chunks, or rebuild with overwrite=True")
        if is_packed:
            return unpack_in_place(out[: full - 4].view(dtype), T)
        return flat[:-4].view(dtype).reshape(T, T)

    def prefetch_tile(self, name: str, i: int, j: int) -> None:
        """Hint that chunk ``(i, j)`` of ``name`` is read soon (local stores: kernel read-ahead)."""
        chunks.prefetch_chunk(self.group.store, self._tile_key(name, i, j))

    def write_tile(self, name: str, i: int, j: int, values: np.ndarray) -> None:
        """Write tile ``(i, j)`` of ``name`` (shape: its bounds); a packed diagonal tile is
        packed from ``values``' upper triangle (:func:`~ntkscale.storage.packed.pack_upper`)."""
        if self._packed_tile(name, i, j):
            self._write_packed(name, i, values)
            return
        rows, cols = self.tile_bounds(i, j)
        self.array(name)[rows, cols] = values

    # ------------------------------------------------------------ integrity
    def bad_chunks(self, name: str, indices: Iterable[tuple[int, ...]]) -> list[tuple[int, ...]]:
        """The chunks among ``indices`` of array ``name`` that are corrupt: wrong size, failing
        their CRC32C, or (stores written with other codecs) not decodable. Missing ones are not
        listed (a build computes them anyway). For a Gram kind with packed diagonal tiles,
        index ``(i, i)`` stands for the packed chunk of that tile."""
        indices = [tuple(int(k) for k in idx) for idx in indices]
        if not self.diag_packed(name):
            return self._bad_chunks(name, indices)
        diag = [(idx[0], 0) for idx in indices if idx[0] == idx[1]]
        off = [idx for idx in indices if idx[0] != idx[1]]
        return self._bad_chunks(name, off) + [(i, i) for i, _ in self._bad_chunks(diag_name(name), diag)]

    def delete_chunk(self, name: str, index: tuple[int, ...]) -> None:
        """Delete chunk ``index`` of array ``name`` (the next build recomputes it); ``(i, i)`` of a
        Gram kind with packed diagonal tiles is that tile's packed chunk."""
        if len(index) == 2 and self._packed_tile(name, *index):
            self._delete_key(self._tile_key(name, *index))
            return
        self._delete_key(chunks.chunk_key(self.array(name), *index))

    def write_region(self, name: str, region: tuple[slice, ...], values: np.ndarray) -> None:
        """Write ``values`` into ``region`` of array ``name`` (inputs rewritten by a repair)."""
        self.array(name)[region] = values

    def iter_tiles(self) -> Iterable[tuple[int, int]]:
        n1, n2 = self.shape
        T = self.tile
        nb1, nb2 = -(-n1 // T), -(-n2 // T)
        for i in range(nb1):
            for j in range(i if self.symmetric else 0, nb2):
                yield i, j
