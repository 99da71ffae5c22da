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
Chunks are written whole, each by one task, and ``LocalStore`` writes them atomically
(a temporary ``.partial`` file renamed into place): an existing chunk is a finished
tile, which is what resuming relies on.

Diagonal tiles of symmetric stores are packed (``attrs["ntkscale"]["diag_layout"] ==
"packed"``, tiles of at least :data:`~.packed.MIN_PACKED_TILE`): about half a tile on disk
each. Stores without that key hold their diagonal tiles whole in the main arrays (the
"full" layout of earlier versions), and are read and resumed as they are. The tile-level
methods (:meth:`GramStore.read_tile_into`, ``write_tile``, ``done_chunks``, ``bad_chunks``,
``delete_chunk``, ``tile_nbytes``, ``read``) take tile indices ``(i, j)`` of a Gram kind and
go to the packed chunk for ``i == j``; a packed diagonal tile read whole is exact on and
above its diagonal only (its lower triangle is garbage), a region ``read`` is mirrored.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

import numpy as np
import zarr
from zarr.codecs import BytesCodec, Crc32cCodec
from zarr.core.sync import sync

from . import chunks
from .packed import MIN_PACKED_TILE, copy_symmetric, pack_upper, packed_rows, unpack_in_place
from .url import StoreAccessError, open_store
from .writer import fresh_group, remove_partials

__all__ = ["GramStore", "StoreMismatchError", "CorruptTileError", "fingerprint", "FORMAT", "DIAG_LAYOUTS"]

FORMAT = 1
DIAG_LAYOUTS = ("full", "packed")  # how a symmetric store holds its diagonal tiles (see above)
STAT_ROWS = ("cov0", "nngp", "ntk")  # followed by one row per activation (fused chains)


class StoreMismatchError(ValueError):
    """The store was built from other data, another architecture or other settings."""


class CorruptTileError(OSError):
    """A stored chunk failed its checksum or could not be decoded."""


def fingerprint(x: np.ndarray) -> str:
    """Hash of an input matrix: its shape, dtype and bytes (blake2b, 128 bit)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(repr((tuple(x.shape), str(x.dtype))).encode())
    h.update(np.ascontiguousarray(x).view(np.uint8).ravel())
    return h.hexdigest()


def _codecs() -> dict:
    return dict(serializer=BytesCodec(), compressors=[Crc32cCodec()], filters=None)


def _diag_name(kind: str) -> str:
    """The array of the packed diagonal tiles of Gram kind ``kind``."""
    return f"{kind}_diag"


def _with_diag_layout(meta: dict) -> dict:
    """``meta`` with the diagonal layout of a new store: ``'packed'`` for a symmetric store with
    tiles of at least MIN_PACKED_TILE unless ``meta`` names one (``'full'``: the layout of
    earlier versions, for tests and calibration)."""
    layout = meta.get("diag_layout")
    packable = bool(meta.get("symmetric")) and int(meta["tile"]) >= MIN_PACKED_TILE
    if layout is None:
        return dict(meta, diag_layout="packed") if packable else dict(meta)
    if layout not in DIAG_LAYOUTS or (layout == "packed" and not packable):
        raise ValueError(f"diag_layout={layout!r} needs to be one of {DIAG_LAYOUTS} ('packed': symmetric "
                         f"stores with tiles >= {MIN_PACKED_TILE})")
    return dict(meta)


@dataclass
class GramStore:
    """Handle on one Gram store (cheap to create; workers open their own)."""

    url: str
    group: zarr.Group
    storage_options: Optional[dict] = None
    _arrays: dict = field(default_factory=dict, repr=False, compare=False)
    _layout: dict = field(default_factory=dict, repr=False, compare=False)

    # ------------------------------------------------------------------ open
    @classmethod
    def open(cls, url: Any, *, mode: str = "r", storage_options: Optional[dict] = None) -> "GramStore":
        """Open an existing store (``mode='r'`` or ``'r+'``)."""
        try:
            store = open_store(url, read_only=(mode == "r"), storage_options=storage_options)
            group = zarr.open_group(store, mode=mode)
        except (FileNotFoundError, KeyError, ValueError, StoreAccessError) as e:
            raise StoreAccessError(f"no Gram store at {url!r} ({e}); build one with build_gram") from e
        if "ntkscale" not in group.attrs:
            raise StoreAccessError(f"{url!r} is a zarr group but not an ntkscale Gram store")
        return cls(str(url), group, storage_options)

    @classmethod
    def exists(cls, url: Any, storage_options: Optional[dict] = None) -> bool:
        try:
            cls.open(url, storage_options=storage_options)
            return True
        except (StoreAccessError, OSError):
            return False

    @classmethod
    def create(cls, url: Any, meta: dict, x1: np.ndarray, x2: Optional[np.ndarray],
               n_stat_rows: int, *, storage_options: Optional[dict] = None) -> "GramStore":
        """Create the group, write the inputs, and make empty statistic and tile arrays."""
        meta = _with_diag_layout(meta)
        store = open_store(url, read_only=False, storage_options=storage_options)
        group = fresh_group(store)  # replaces what is there, except the lock
        T = meta["tile"]
        for name, x in (("x1", x1), ("x2", x2)):
            if x is None:
                continue
            arr = group.create_array(name, shape=x.shape, chunks=(min(T, max(len(x), 1)), x.shape[1]),
                                     dtype=x.dtype, fill_value=0, **_codecs())
            arr[...] = x
            sname = "stats1" if name == "x1" else "stats2"
            group.create_array(sname, shape=(n_stat_rows, len(x)), chunks=(n_stat_rows, T),
                               dtype="float64", fill_value=np.nan, **_codecs())
        n1, n2 = meta["shape"]
        for kind in meta["kinds"]:
            group.create_array(kind, shape=(n1, n2), chunks=(T, T), dtype=meta["store_dtype"],
                               fill_value=0, **_codecs())
            if meta.get("diag_layout") == "packed":
                h = packed_rows(T)
                group.create_array(_diag_name(kind), shape=(-(-n1 // T) * h, T + 1), chunks=(h, T + 1),
                                   dtype=meta["store_dtype"], fill_value=0, **_codecs())
        group.attrs["ntkscale"] = dict(meta, complete=False)
        return cls(str(url), group, storage_options)

    # ------------------------------------------------------------- metadata
    @property
    def meta(self) -> dict:
        return dict(self.group.attrs["ntkscale"])

    def set_complete(self, value: bool = True) -> None:
        meta = self.meta
        meta["complete"] = bool(value)
        self.group.attrs["ntkscale"] = meta

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.meta["shape"])  # type: ignore[return-value]

    @property
    def tile(self) -> int:
        return int(self.meta["tile"])

    @property
    def symmetric(self) -> bool:
        return bool(self.meta["symmetric"])

    @property
    def diag_layout(self) -> str:
        """How diagonal tiles are stored: ``'packed'`` (upper triangles, arrays ``{kind}_diag``)
        or ``'full'`` (whole tiles in the main arrays: stores without the key, cross Grams).

        Raises
        ------
        StoreMismatchError
            For a layout this version does not know (a store from a newer ntkscale).
        """
        if "diag_layout" not in self._layout:
            layout = self.meta.get("diag_layout", "full")
            if layout not in DIAG_LAYOUTS:
                raise StoreMismatchError(f"store {self.url!r} has diag_layout={layout!r}, which this ntkscale "
                                         f"does not read ({DIAG_LAYOUTS}); upgrade ntkscale or rebuild the store")
            self._layout["diag_layout"] = layout
        return self._layout["diag_layout"]

    def diag_packed(self, name: str) -> bool:
        """Whether ``name`` is a Gram kind whose diagonal tiles are packed (see :attr:`diag_layout`)."""
        key = ("packed", name)
        if key not in self._layout:
            self._layout[key] = self.diag_layout == "packed" and name in self.meta["kinds"]
        return self._layout[key]

    def check_compatible(self, expect: dict) -> None:
        """Refuse a store built from other data/architecture/settings (names the difference)."""
        meta = self.meta
        if meta.get("format") != FORMAT:
            raise StoreMismatchError(f"store {self.url!r} has format {meta.get('format')}, this "
                                     f"ntkscale writes {FORMAT}; rebuild it with overwrite=True")
        checks = [
            ("fingerprint1", "was built from other data (input fingerprint differs)"),
            ("fingerprint2", "was built from other second-argument data (fingerprint differs)"),
            ("arch", "was built for another architecture"),
            ("symmetric", "has another symmetry (train Gram vs cross Gram)"),
            ("store_dtype", "stores another dtype"),
            ("compute_dtype", "was computed in another dtype"),
            ("tile", "uses another tile size"),
        ]
        for key, why in checks:
            if key in expect and meta.get(key) != expect[key]:
                raise StoreMismatchError(
                    f"store {self.url!r} {why}: stored {key}={meta.get(key)!r}, requested "
                    f"{expect[key]!r}. Use another store URL, or pass overwrite=True to replace it")
        missing = [k for k in expect.get("kinds", ()) if k not in meta["kinds"]]
        if missing:
            raise StoreMismatchError(f"store {self.url!r} holds kinds {meta['kinds']}, not {missing}; "
                                     "use another store URL or overwrite=True")

    # ---------------------------------------------------------------- tiles
    def array(self, name: str) -> zarr.Array:
        """Array ``name`` (handles are cached: opening one reads its metadata document)."""
        if name not in self._arrays:
            self._arrays[name] = self.group[name]
        return self._arrays[name]  # type: ignore[return-value]

    def tile_bounds(self, i: int, j: int) -> tuple[slice, slice]:
        n1, n2 = self.shape
        T = self.tile
        return slice(i * T, min((i + 1) * T, n1)), slice(j * T, min((j + 1) * T, n2))

    def done_chunks(self, name: str) -> set[tuple[int, ...]]:
        """Chunk indices that exist in array ``name`` (finished tiles / blocks); for a Gram kind
        with packed diagonal tiles, diagonal tile ``(i, i)`` is done when its packed chunk is."""
        if not self.diag_packed(name):
            return self._chunk_indices(name)
        off = {t for t in self._chunk_indices(name) if t[0] != t[1]}
        return off | {(t[0], t[0]) for t in self._chunk_indices(_diag_name(name))}

    def _chunk_indices(self, name: str) -> set[tuple[int, ...]]:
        """Chunk indices that exist in array ``name`` (listed from the store)."""
        pattern = re.compile(r"^c/(\d+)(?:/(\d+))?$")
        prefix = f"{self.array(name).path}/"

        async def _list() -> list[str]:
            return [k async for k in self.group.store.list_prefix(prefix)]

        out = set()
        for key in sync(_list()):
            m = pattern.match(key[len(prefix):])
            if m:
                out.add(tuple(int(g) for g in m.groups() if g is not None))
        return out

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

    def _fill_diagonal(self, name: str, rows: slice, cols: slice, out: np.ndarray) -> None:
        """Overwrite the parts of ``out`` (region ``rows, cols`` of ``name``) that lie in
        diagonal tiles with those tiles' symmetric values, from their packed chunks."""
        n1, n2 = self.shape
        T = self.tile
        r0, r1, _ = rows.indices(n1)
        c0, c1, _ = cols.indices(n2)
        for d in range(max(r0, c0) // T, -(-min(r1, c1) // T)):
            a0, a1 = max(r0, d * T), min(r1, (d + 1) * T)
            b0, b1 = max(c0, d * T), min(c1, (d + 1) * T)
            if a0 < a1 and b0 < b1:
                U = self._read_packed(name, d)
                copy_symmetric(U, slice(a0 - d * T, a1 - d * T), slice(b0 - d * T, b1 - d * T),
                               out[a0 - r0: a1 - r0, b0 - c0: b1 - c0])

    def _read_packed(self, name: str, i: int) -> np.ndarray:
        """Diagonal tile ``(i, i)`` of ``name`` from its packed chunk through zarr's indexing (any
        codec), shape (T, T): exact on and above the diagonal. A missing chunk reads as zeros."""
        T, h = self.tile, packed_rows(self.tile)
        P = np.asarray(self.array(_diag_name(name))[i * h:(i + 1) * h, :])  # shape: (h, T + 1)
        flat = np.empty(T * T, dtype=P.dtype)
        flat[: P.size] = P.reshape(-1)
        return unpack_in_place(flat, T)

    def raw_dtype(self, name: str) -> Optional[np.dtype]:
        """Little-endian dtype of array ``name``'s chunks if they are raw bytes + CRC32C, else None."""
        return chunks.raw_dtype(self.array(name))

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
        packed = i == j and self.diag_packed(name)
        if packed:
            key = chunks.chunk_key(self.array(_diag_name(name)), i, 0)
            out = np.empty(full, dtype=np.uint8) if out is None else out
        else:
            key = chunks.chunk_key(self.array(name), i, j)
        flat, why = self._read_chunk(key, out, self.tile_nbytes(name, i, j), direct)
        if flat is None:
            what = "packed diagonal tile" if packed else "tile"
            raise CorruptTileError(f"{name!r} {what} ({i}, {j}) in store {self.url!r} cannot be read: {why}. "
                                   "Re-run the build with repair=True (ntkscale gram JOB.toml --repair) to "
                                   "recompute the corrupt chunks, or rebuild with overwrite=True")
        if packed:
            return unpack_in_place(out[: full - 4].view(dtype), T)
        return flat[:-4].view(dtype).reshape(T, T)

    def _read_chunk(self, key: str, out: Optional[np.ndarray], nbytes: int,
                    direct: bool) -> tuple[Optional[np.ndarray], str]:
        """Chunk ``key`` (``nbytes``) as a uint8 array, mapped (``out=None``) or read into
        ``out[:nbytes]`` (``O_DIRECT`` when ``direct`` and possible); ``(None, why)`` when it is
        missing, has another size or fails its checksum."""
        why = "it is missing or fails its checksum"
        try:
            if out is None:
                flat = chunks.map_chunk(self.group.store, key, nbytes)
                if flat is None:  # pragma: no cover - caller's bug
                    raise ValueError("this store cannot be memory-mapped; pass a buffer")
            else:
                got = chunks.read_chunk_direct(self.group.store, key, out, nbytes) if direct else None
                out = out[:nbytes]
                if got is None:  # not direct, or direct I/O not possible here
                    got = chunks.read_chunk_into(self.group.store, key, out)
                flat = out if got else None
            ok = flat is not None and chunks.crc_ok(flat)
        except FileNotFoundError:
            ok = False
        except ValueError as e:
            ok, why = False, str(e)
        return (flat if ok else None), why

    def prefetch_tile(self, name: str, i: int, j: int) -> None:
        """Hint that chunk ``(i, j)`` of ``name`` is read soon (local stores: kernel read-ahead)."""
        chunks.prefetch_chunk(self.group.store, self._tile_key(name, i, j))

    def _tile_key(self, name: str, i: int, j: int) -> str:
        """Store key of tile ``(i, j)`` of ``name`` (its packed chunk for a packed diagonal tile)."""
        if i == j and self.diag_packed(name):
            return chunks.chunk_key(self.array(_diag_name(name)), i, 0)
        return chunks.chunk_key(self.array(name), i, j)

    def can_map(self) -> bool:
        """Whether chunks can be memory-mapped (a local directory store)."""
        return isinstance(self.group.store, chunks.LocalStore)

    def write_tile(self, name: str, i: int, j: int, values: np.ndarray) -> None:
        """Write tile ``(i, j)`` of ``name`` (shape: its bounds); a packed diagonal tile is
        packed from ``values``' upper triangle (:func:`~ntkscale.storage.packed.pack_upper`)."""
        if i == j and self.diag_packed(name):
            h = packed_rows(self.tile)
            self.array(_diag_name(name))[i * h:(i + 1) * h, :] = pack_upper(np.asarray(values), self.tile)
            return
        rows, cols = self.tile_bounds(i, j)
        self.array(name)[rows, cols] = values

    # ------------------------------------------------------------ integrity
    def chunk_nbytes(self, name: str) -> int:
        """Bytes of one stored chunk of array ``name`` (raw layout: data + 4-byte CRC32C)."""
        arr = self.array(name)
        return int(np.prod(arr.chunks)) * np.dtype(arr.dtype).itemsize + 4

    def tile_nbytes(self, name: str, i: int, j: int) -> int:
        """Bytes of the stored chunk of tile ``(i, j)`` of ``name`` (raw layout): its packed
        chunk's for a packed diagonal tile, else :meth:`chunk_nbytes`."""
        if i == j and self.diag_packed(name):
            return self.chunk_nbytes(_diag_name(name))
        return self.chunk_nbytes(name)

    def chunk_region(self, name: str, index: tuple[int, ...]) -> tuple[slice, ...]:
        """The region of array ``name`` that chunk ``index`` holds."""
        arr = self.array(name)
        return tuple(slice(k * c, min((k + 1) * c, n)) for k, c, n in zip(index, arr.chunks, arr.shape))

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
        return self._bad_chunks(name, off) + [(i, i) for i, _ in self._bad_chunks(_diag_name(name), diag)]

    def _bad_chunks(self, name: str, indices: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
        """:meth:`bad_chunks` of the chunk indices ``indices`` of array ``name`` itself."""
        arr, raw = self.array(name), self.raw_dtype(name)
        if raw is None:  # pragma: no cover - a store written by another program
            bad = []
            for idx in indices:
                try:
                    np.asarray(arr[self.chunk_region(name, idx)])
                except Exception:
                    bad.append(idx)
            return bad
        size = self.chunk_nbytes(name)
        step = max(1, (64 * 2**20) // size)  # read ~64 MiB at a time
        bad = []
        for k in range(0, len(indices), step):
            batch = indices[k:k + step]
            got = chunks.read_chunks(self.group.store, [chunks.chunk_key(arr, *idx) for idx in batch])
            bad += [idx for idx, buf in zip(batch, got)
                    if buf is not None and (buf.nbytes != size or not chunks.crc_ok(buf))]
        return bad

    def delete_chunk(self, name: str, index: tuple[int, ...]) -> None:
        """Delete chunk ``index`` of array ``name`` (the next build recomputes it); ``(i, i)`` of a
        Gram kind with packed diagonal tiles is that tile's packed chunk."""
        if len(index) == 2 and index[0] == index[1] and self.diag_packed(name):
            sync(self.group.store.delete(self._tile_key(name, *index)))
            return
        sync(self.group.store.delete(chunks.chunk_key(self.array(name), *index)))

    def write_region(self, name: str, region: tuple[slice, ...], values: np.ndarray) -> None:
        """Write ``values`` into ``region`` of array ``name`` (inputs rewritten by a repair)."""
        self.array(name)[region] = values

    def remove_partials(self) -> int:
        """Delete temporary files of chunk writes cut short (hold the store's lock); return how many."""
        return remove_partials(self.group.store)

    def iter_tiles(self) -> Iterable[tuple[int, int]]:
        n1, n2 = self.shape
        T = self.tile
        nb1, nb2 = -(-n1 // T), -(-n2 // T)
        for i in range(nb1):
            for j in range(i if self.symmetric else 0, nb2):
                yield i, j
