"""What the Gram store and the factor store share: a Zarr v3 group of tiled arrays.

A tiled store is a Zarr group whose attribute ``ATTR`` holds its metadata (``format``,
``tile``, ``complete``...) and whose tile arrays have one chunk per ``(T, T)`` tile, stored
as raw little-endian bytes followed by a CRC32C checksum (:func:`codecs`,
:mod:`.chunks`). Chunks are written whole, each by one task, and ``LocalStore`` writes
them atomically (a temporary ``.partial`` file renamed into place): an existing chunk is a
finished tile, which is what resuming relies on (:meth:`TiledStore._chunk_indices`).

This module holds that skeleton once: opening and creating the group (replacing what was
there except the lock), the metadata, the compatibility check, cached array handles, tile
bounds, chunk listing, raw chunk reads with their checksum, and the typed store errors.
:class:`~.gram_store.GramStore` and :class:`~.factor_store.FactorStore` add their layouts.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, ClassVar, Optional, TypeVar

import numpy as np
import zarr
from zarr.codecs import BytesCodec, Crc32cCodec
from zarr.core.sync import sync

from . import chunks
from .url import StoreAccessError, open_store
from .writer import fresh_group, remove_partials

__all__ = ["TiledStore", "StoreMismatchError", "CorruptTileError", "fingerprint", "codecs"]

S = TypeVar("S", bound="TiledStore")
_CHUNK = re.compile(r"^c/(\d+)(?:/(\d+))?$")  # zarr v3 default chunk keys, 1-d or 2-d


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


def codecs() -> dict:
    """``create_array`` keywords of every array of a tiled store: raw bytes + CRC32C."""
    return dict(serializer=BytesCodec(), compressors=[Crc32cCodec()], filters=None)


class TiledStore:
    """Handle on one tiled store (cheap to create; workers open their own).

    Subclasses set ``ATTR`` (the metadata attribute), ``KIND`` (the ownership kind), ``WHAT`` (the store's name in
    messages), ``URL_ARG`` (the argument that names another location) and ``FORMAT``, and
    define :attr:`shape`.

    Parameters
    ----------
    url : str
        Store location (local path or fsspec URL).
    group : zarr.Group
    storage_options : dict, optional
    """

    ATTR: ClassVar[str]
    KIND: ClassVar[str]  # location kind of the ownership rule (.ownership.KINDS)
    WHAT: ClassVar[str]
    URL_ARG: ClassVar[str]
    FORMAT: ClassVar[int]
    OPEN_HINT: ClassVar[str] = ""  # appended to "no <WHAT> at <url>" (how to make one)

    def __init__(self, url: Any, group: zarr.Group, storage_options: Optional[dict] = None):
        self.url, self.group, self.storage_options = str(url), group, storage_options
        self._arrays: dict[str, zarr.Array] = {}
        self._cache: dict[Any, Any] = {}  # facts derived from the metadata (layouts, dtypes)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(url={self.url!r})"

    # ------------------------------------------------------------------ open
    @classmethod
    def open(cls: type[S], url: Any, *, mode: str = "r", storage_options: Optional[dict] = None) -> S:
        """Open an existing store (``mode='r'`` or ``'r+'``).

        Raises
        ------
        StoreAccessError
            Nothing there, or a Zarr group that is not this kind of store.
        """
        try:
            store = open_store(url, read_only=(mode == "r"), storage_options=storage_options, create=False)
            group = zarr.open_group(store, mode=mode)
        except (FileNotFoundError, KeyError, ValueError, StoreAccessError) as e:
            raise StoreAccessError(f"no {cls.WHAT} at {url!r} ({e}){cls.OPEN_HINT}") from e
        if cls.ATTR not in group.attrs:
            raise StoreAccessError(f"{url!r} is a zarr group but not an ntkscale {cls.WHAT}")
        return cls(str(url), group, storage_options)

    @classmethod
    def try_open(cls: type[S], url: Any, *, mode: str = "r+",
                 storage_options: Optional[dict] = None) -> Optional[S]:
        """The store at ``url``, or None where there is none."""
        try:
            return cls.open(url, mode=mode, storage_options=storage_options)
        except StoreAccessError:
            return None

    @classmethod
    def exists(cls, url: Any, storage_options: Optional[dict] = None) -> bool:
        try:
            cls.open(url, storage_options=storage_options)
            return True
        except (StoreAccessError, OSError):
            return False

    @classmethod
    def _fresh_group(cls, url: Any, storage_options: Optional[dict]) -> zarr.Group:
        """An empty root group at ``url``: the nodes of a store ntkscale wrote there are
        deleted (never anything else: :mod:`.ownership`), the lock and marker kept."""
        return fresh_group(url, cls.KIND, storage_options)

    # ------------------------------------------------------------- metadata
    @property
    def meta(self) -> dict:
        return dict(self.group.attrs[self.ATTR])

    def set_complete(self, value: bool = True) -> None:
        self.group.attrs[self.ATTR] = dict(self.meta, complete=bool(value))

    @property
    def shape(self) -> tuple[int, int]:  # pragma: no cover - each store defines it
        raise NotImplementedError

    @property
    def tile(self) -> int:
        return int(self.meta["tile"])

    def _check_meta(self, expect: dict, why: dict[str, str]) -> None:
        """Refuse a store of another format, or whose ``meta[key]`` differs from ``expect[key]``
        for a key of ``why`` (the message says ``why[key]``)."""
        meta = self.meta
        if meta.get("format") != self.FORMAT:
            raise StoreMismatchError(f"{self.WHAT} {self.url!r} has format {meta.get('format')}, this "
                                     f"ntkscale writes {self.FORMAT}; pass overwrite=True to replace it")
        for key, text in why.items():
            if key in expect and meta.get(key) != expect[key]:
                raise StoreMismatchError(
                    f"{self.WHAT} {self.url!r} {text}: stored {key}={meta.get(key)!r}, requested "
                    f"{expect[key]!r}. Use another {self.URL_ARG}, or pass overwrite=True to replace it")

    # ---------------------------------------------------------------- tiles
    def _array(self, name: str) -> zarr.Array:
        """Array ``name`` (handles are cached: opening one reads its metadata document)."""
        if name not in self._arrays:
            self._arrays[name] = self.group[name]  # type: ignore[assignment]
        return self._arrays[name]

    def tile_bounds(self, i: int, j: int) -> tuple[slice, slice]:
        n1, n2 = self.shape
        T = self.tile
        return slice(i * T, min((i + 1) * T, n1)), slice(j * T, min((j + 1) * T, n2))

    def _chunk_indices(self, name: str) -> set[tuple[int, ...]]:
        """Chunk indices that exist in array ``name`` (listed from the store)."""
        prefix = f"{self._array(name).path}/"

        async def _list() -> list[str]:
            return [k async for k in self.group.store.list_prefix(prefix)]

        out = set()
        for key in sync(_list()):
            m = _CHUNK.match(key[len(prefix):])
            if m:
                out.add(tuple(int(g) for g in m.groups() if g is not None))
        return out

    def raw_dtype(self, name: str) -> Optional[np.dtype]:
        """Little-endian dtype of array ``name``'s chunks if they are raw bytes + CRC32C, else None."""
        return chunks.raw_dtype(self._array(name))

    def chunk_nbytes(self, name: str) -> int:
        """Bytes of one stored chunk of array ``name`` (raw layout: data + 4-byte CRC32C)."""
        arr = self._array(name)
        return int(np.prod(arr.chunks)) * np.dtype(arr.dtype).itemsize + 4

    def can_map(self) -> bool:
        """Whether chunks can be memory-mapped (a local directory store)."""
        return isinstance(self.group.store, chunks.LocalStore)

    def _has_key(self, key: str) -> bool:
        return bool(sync(self.group.store.exists(key)))

    def _delete_key(self, key: str) -> None:
        sync(self.group.store.delete(key))

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

    def _bad_chunks(self, name: str, indices: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
        """The chunks among ``indices`` of array ``name`` that exist and are corrupt: wrong size,
        failing their CRC32C, or (stores written with other codecs) not decodable."""
        arr, raw = self._array(name), self.raw_dtype(name)
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

    def chunk_region(self, name: str, index: tuple[int, ...]) -> tuple[slice, ...]:
        """The region of array ``name`` that chunk ``index`` holds."""
        arr = self._array(name)
        return tuple(slice(k * c, min((k + 1) * c, n)) for k, c, n in zip(index, arr.chunks, arr.shape))

    def remove_partials(self) -> int:
        """Delete temporary files of chunk writes cut short (hold the store's lock); return how many."""
        return remove_partials(self.group.store)
