"""The Gram store: a Zarr v3 group with inputs, per-row statistics and Gram tiles.

Layout (``n1 x n2`` Gram, tile size ``T``; symmetric stores have no ``x2``)::

    zarr.json        attrs["ntkscale"]: format, architecture spec, fingerprints,
                     tile, dtypes, kinds, version, complete flag
    x1, x2           inputs, chunks (T, d)                      float64
    stats1, stats2   per-row statistics, chunks (R, T)          float64
                     rows: cov0, nngp diag, ntk diag, activation variances
    nngp, ntk        Gram tiles, one chunk per tile (T, T)      float32 | float64
                     (symmetric: upper-triangle tiles only; reads mirror them)
    .ntkscale.lock   while a build runs: its host, pid, start time (see .writer)

Every chunk carries a CRC32C checksum (zarr's ``crc32c`` codec), so a corrupted
tile is detected on read and named (:meth:`GramStore.bad_chunks` checks them all).
Chunks are written whole, each by one task, and ``LocalStore`` writes them atomically
(a temporary ``.partial`` file renamed into place): an existing chunk is a finished
tile, which is what resuming relies on.
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
from .url import StoreAccessError, open_store
from .writer import fresh_group, remove_partials

__all__ = ["GramStore", "StoreMismatchError", "CorruptTileError", "fingerprint", "FORMAT"]

FORMAT = 1
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


@dataclass
class GramStore:
    """Handle on one Gram store (cheap to create; workers open their own)."""

    url: str
    group: zarr.Group
    storage_options: Optional[dict] = None
    _arrays: dict = field(default_factory=dict, repr=False, compare=False)

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
        """Chunk indices that exist in array ``name`` (finished tiles / blocks)."""
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
        """Read a region, naming the tile if a chunk is corrupt."""
        arr = self.array(name)
        region = (rows,) if cols is None else (rows, cols)
        try:
            return np.asarray(arr[region])
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

        Raises
        ------
        CorruptTileError
            If the chunk is missing, has the wrong size or fails its checksum.
        """
        dtype, T = self.raw_dtype(name), self.tile
        nbytes = T * T * dtype.itemsize + 4 if dtype is not None else -1
        if dtype is None or (out is not None and out.nbytes < nbytes):  # pragma: no cover - caller's bug
            raise ValueError(f"read_tile_into needs a raw-bytes array and a {T}x{T} {dtype} tile buffer")
        key = chunks.chunk_key(self.array(name), i, j)
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
        if not ok:
            raise CorruptTileError(f"{name!r} tile ({i}, {j}) in store {self.url!r} cannot be read: {why}. "
                                   "Re-run the build with repair=True (ntkscale gram JOB.toml --repair) to "
                                   "recompute the corrupt chunks, or rebuild with overwrite=True")
        return flat[:-4].view(dtype).reshape(T, T)

    def prefetch_tile(self, name: str, i: int, j: int) -> None:
        """Hint that chunk ``(i, j)`` of ``name`` is read soon (local stores: kernel read-ahead)."""
        chunks.prefetch_chunk(self.group.store, chunks.chunk_key(self.array(name), i, j))

    def can_map(self) -> bool:
        """Whether chunks can be memory-mapped (a local directory store)."""
        return isinstance(self.group.store, chunks.LocalStore)

    def write_tile(self, name: str, i: int, j: int, values: np.ndarray) -> None:
        rows, cols = self.tile_bounds(i, j)
        self.array(name)[rows, cols] = values

    # ------------------------------------------------------------ integrity
    def chunk_nbytes(self, name: str) -> int:
        """Bytes of one stored chunk of array ``name`` (raw layout: data + 4-byte CRC32C)."""
        arr = self.array(name)
        return int(np.prod(arr.chunks)) * np.dtype(arr.dtype).itemsize + 4

    def chunk_region(self, name: str, index: tuple[int, ...]) -> tuple[slice, ...]:
        """The region of array ``name`` that chunk ``index`` holds."""
        arr = self.array(name)
        return tuple(slice(k * c, min((k + 1) * c, n)) for k, c, n in zip(index, arr.chunks, arr.shape))

    def bad_chunks(self, name: str, indices: Iterable[tuple[int, ...]]) -> list[tuple[int, ...]]:
        """The chunks among ``indices`` of array ``name`` that are corrupt: wrong size, failing
        their CRC32C, or (stores written with other codecs) not decodable. Missing ones are not
        listed (a build computes them anyway)."""
        arr, raw = self.array(name), self.raw_dtype(name)
        indices = [tuple(int(k) for k in idx) for idx in indices]
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
        """Delete chunk ``index`` of array ``name`` (the next build recomputes it)."""
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
