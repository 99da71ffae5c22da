"""Whole-chunk I/O for tile arrays stored as raw little-endian bytes + a CRC32C checksum.

Both stores create their tile arrays with zarr's ``bytes`` serializer and ``crc32c``
codec and one chunk per tile, so a chunk is ``T*T*itemsize`` bytes followed by the
4-byte little-endian CRC32C of those bytes (edge chunks are full size, padded). Reading
and writing whole chunks here, instead of through zarr's array indexing, skips zarr's
copies (it decodes into a new buffer, then copies the selection out, and encodes into
another buffer on writes), which at tile sizes of 10^7-10^8 bytes cost as much as the
read itself. On a local directory store a chunk is read straight into the caller's
buffer; a written chunk goes through the store's ``set`` (atomic on ``LocalStore``), or, from
a block-aligned buffer on a local directory, is written with ``O_DIRECT`` to a temporary file
renamed into place (as ``LocalStore`` does): a buffered write of a fresh 32 MB chunk cost
~100 ms of CPU on the 2-core VM (page-cache copy and allocation), the direct one ~5 ms.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import mmap
import os
import uuid
from typing import Any, Optional

import google_crc32c
import numpy as np
import zarr
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync
from zarr.storage import LocalStore

__all__ = ["raw_dtype", "chunk_key", "tile_buffer", "read_chunks", "read_chunk_into", "map_chunk",
           "prefetch_chunk", "direct_buffer", "read_chunk_direct", "write_chunk", "write_path_direct", "crc_ok"]


def raw_dtype(array: zarr.Array) -> Optional[np.dtype]:
    """The chunks' little-endian dtype when ``array`` is stored as plain bytes + CRC32C, else None."""
    codecs = array.metadata.codecs
    names = [type(c).__name__ for c in codecs]
    endian = getattr(codecs[0], "endian", None)
    if names != ["BytesCodec", "Crc32cCodec"] or str(getattr(endian, "value", endian)) != "little":
        return None
    return np.dtype(array.dtype).newbyteorder("<")


def chunk_key(array: zarr.Array, *index: int) -> str:
    """Store key of chunk ``index`` (zarr v3 default ``c/i/j`` encoding)."""
    return "/".join([array.path, "c", *(str(int(k)) for k in index)])


_ALIGN = 4096  # O_DIRECT: buffer address, file offset and length in multiples of the block size


def direct_buffer(T: int, dtype: Any) -> np.ndarray:
    """A buffer for :func:`read_chunk_direct`: uint8, starting at a 4096-byte boundary, the
    chunk's size (``T*T*itemsize + 4``) rounded up to whole 4096-byte blocks (``O_DIRECT``
    reads whole blocks); the chunk is its first ``T*T*itemsize + 4`` bytes."""
    return aligned_buffer(T * T * np.dtype(dtype).itemsize + 4)


def aligned_buffer(nbytes: int) -> np.ndarray:
    """uint8 buffer for ``O_DIRECT`` reads of up to ``nbytes``: starts at a 4096-byte boundary,
    ``nbytes`` rounded up to whole 4096-byte blocks."""
    padded = max(_ALIGN, -(-int(nbytes) // _ALIGN) * _ALIGN)
    raw = np.empty(padded + _ALIGN, dtype=np.uint8)
    off = (-raw.ctypes.data) % _ALIGN
    return raw[off: off + padded]


def tile_buffer(T: int, dtype: Any) -> tuple[np.ndarray, np.ndarray]:
    """A chunk-sized byte buffer and its C-ordered ``(T, T)`` data view (4 spare bytes for the
    CRC); the buffer starts at a 4096-byte boundary, so :func:`write_chunk` can write it with
    ``O_DIRECT``."""
    dt = np.dtype(dtype)
    flat = aligned_buffer(T * T * dt.itemsize + 4)[: T * T * dt.itemsize + 4]
    return flat, flat[:-4].view(dt).reshape(T, T)


def crc_ok(flat: np.ndarray) -> bool:
    """Whether the last 4 bytes of ``flat`` are the CRC32C of the rest."""
    return np.uint32(google_crc32c.value(flat[:-4])).tobytes() == flat[-4:].tobytes()


def read_chunks(store: Any, keys: list[str]) -> list[Optional[np.ndarray]]:
    """Chunks as read-only uint8 arrays (None where a key is missing), fetched concurrently."""
    proto = default_buffer_prototype()

    async def _get() -> list:
        return list(await asyncio.gather(*(store.get(k, prototype=proto) for k in keys)))

    return [None if buf is None else buf.as_numpy_array() for buf in sync(_get())]


def read_chunk_into(store: Any, key: str, out: np.ndarray) -> bool:
    """Read chunk ``key`` into the uint8 buffer ``out`` (its exact size); False if it is missing.

    On a ``LocalStore`` the file is read straight into ``out`` (no intermediate copy).

    Raises
    ------
    ValueError
        If the stored chunk does not have ``out``'s size.
    """
    if isinstance(store, LocalStore):
        path = store.root / key
        try:
            with open(path, "rb", buffering=0) as fh:
                got = fh.readinto(memoryview(out))
                extra = fh.read(1)
        except FileNotFoundError:
            return False
        if got != out.nbytes or extra:
            raise ValueError(f"chunk {key!r} has {got + len(extra)}{'+' if extra else ''} bytes, expected "
                             f"{out.nbytes}")
        return True
    raw = read_chunks(store, [key])[0]
    if raw is None:
        return False
    if raw.nbytes != out.nbytes:
        raise ValueError(f"chunk {key!r} has {raw.nbytes} bytes, expected {out.nbytes}")
    out[:] = raw
    return True


def map_chunk(store: Any, key: str, nbytes: int) -> Optional[np.ndarray]:
    """Chunk ``key`` of a ``LocalStore`` memory-mapped read-only as a uint8 array of ``nbytes``
    (pages populated up front, so the read happens here); None for other stores.

    Passes over a stored Gram use this: the tile is used where the page cache holds it,
    with no copy into a buffer (a ``readinto`` of a cached 64 MB chunk costs about as much
    as the GEMV with it). The mapping lives as long as the returned array.

    Raises
    ------
    FileNotFoundError
        If the chunk does not exist.
    ValueError
        If the stored chunk does not have ``nbytes`` bytes.
    """
    if not isinstance(store, LocalStore):
        return None
    with open(store.root / key, "rb", buffering=0) as fh:
        size = fh.seek(0, 2)
        if size != nbytes:
            raise ValueError(f"chunk {key!r} has {size} bytes, expected {nbytes}")
        flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
        mapped = mmap.mmap(fh.fileno(), nbytes, flags=flags, prot=mmap.PROT_READ)
    return np.frombuffer(mapped, dtype=np.uint8)


def read_chunk_direct(store: Any, key: str, buf: np.ndarray, nbytes: int) -> Optional[bool]:
    """Read chunk ``key`` (``nbytes``) of a ``LocalStore`` into ``buf[:nbytes]`` (``buf`` from
    :func:`direct_buffer`) with ``O_DIRECT``: straight from the disk, bypassing the page
    cache (a pass over a store larger than RAM would only evict it, and pay a copy out of it).

    Returns True when read, False when the chunk is missing, None when direct I/O is not
    possible here (not a local store, no ``O_DIRECT``, a filesystem that refuses it): the
    caller then reads another way.

    Raises
    ------
    ValueError
        If the stored chunk does not have ``nbytes`` bytes.
    """
    if not isinstance(store, LocalStore):
        return None
    return read_path_direct(store.root / key, buf, nbytes)


def read_path_direct(path: Any, buf: np.ndarray, nbytes: int) -> Optional[bool]:
    """:func:`read_chunk_direct` for a file path: ``nbytes`` of ``path`` into ``buf[:nbytes]``
    with ``O_DIRECT`` (True), False when the file is missing, None when direct I/O is not possible
    (no ``O_DIRECT``, ``buf`` not block-aligned or too small, a filesystem that refuses it).

    Raises
    ------
    ValueError
        If the file does not have ``nbytes`` bytes.
    """
    flag = getattr(os, "O_DIRECT", 0)
    if not flag or buf.ctypes.data % _ALIGN or buf.nbytes % _ALIGN or buf.nbytes < -(-nbytes // _ALIGN) * _ALIGN:
        return None
    key = str(path)
    try:
        fd = os.open(path, os.O_RDONLY | flag)
    except FileNotFoundError:
        return False
    except OSError:  # EINVAL: the filesystem does not do O_DIRECT
        return None
    try:
        size = os.fstat(fd).st_size
        if size != nbytes:
            raise ValueError(f"chunk {key!r} has {size} bytes, expected {nbytes}")
        try:
            got = os.preadv(fd, [memoryview(buf)[: -(-nbytes // _ALIGN) * _ALIGN]], 0)
        except OSError:
            return None
    finally:
        os.close(fd)
    if got != nbytes:
        raise ValueError(f"chunk {key!r}: read {got} of {nbytes} bytes")
    return True


def prefetch_chunk(store: Any, key: str) -> None:
    """Ask the kernel to start reading chunk ``key`` of a ``LocalStore`` in the background
    (``posix_fadvise WILLNEED``); a no-op elsewhere, for a missing chunk, or when cached."""
    if not isinstance(store, LocalStore) or not hasattr(os, "posix_fadvise"):
        return
    try:
        fd = os.open(store.root / key, os.O_RDONLY)
    except OSError:
        return
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
    finally:
        os.close(fd)


def write_chunk(store: Any, key: str, flat: np.ndarray) -> None:
    """Write the uint8 buffer ``flat`` (data + 4 spare bytes) as chunk ``key``, its CRC32C
    filled in first. The store writes from ``flat`` itself (no copy on ``LocalStore``); from a
    4096-byte aligned ``flat`` (:func:`tile_buffer`) a local chunk is written with ``O_DIRECT``
    (:func:`write_path_direct`)."""
    flat[-4:] = np.frombuffer(np.uint32(google_crc32c.value(flat[:-4])).astype("<u4").tobytes(), np.uint8)
    if isinstance(store, LocalStore) and write_path_direct(store.root / key, flat):
        return
    buf = default_buffer_prototype().buffer.from_array_like(flat)
    sync(store.set(key, buf))


def write_path_direct(path: Any, flat: np.ndarray) -> bool:
    """Write ``flat`` as the file ``path``, atomically: into ``<path>.<hex>.partial`` (the name
    zarr's ``LocalStore`` gives its temporary files, which :func:`~.writer.remove_partials`
    cleans up after a crash), its whole 4096-byte blocks with ``O_DIRECT`` (no page-cache copy),
    the rest plainly, then renamed over ``path``. False, having written nothing, when direct I/O
    is not possible (no ``O_DIRECT``, ``flat`` not block-aligned, a filesystem that refuses it).

    Raises
    ------
    OSError
        A failed write (e.g. ``ENOSPC``); the temporary file is removed.
    """
    flag = getattr(os, "O_DIRECT", 0)
    if not flag or flat.ctypes.data % _ALIGN or not flat.flags.c_contiguous:
        return False
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{uuid.uuid4().hex}.partial"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | flag, 0o644)
    except OSError as e:
        if e.errno == errno.EINVAL:  # the filesystem does not do O_DIRECT
            return False
        raise
    view, whole = memoryview(flat).cast("B"), flat.nbytes - flat.nbytes % _ALIGN
    try:
        try:
            done = 0
            while done < whole:
                try:
                    done += os.pwrite(fd, view[done:whole], done)
                except OSError as e:  # EINVAL on the first block: direct writes refused here
                    if e.errno != errno.EINVAL or done:
                        raise
                    os.close(fd)
                    fd = -1
                    os.unlink(tmp)
                    return False
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~flag)  # the tail: plain
            while done < flat.nbytes:
                done += os.pwrite(fd, view[done:], done)
        finally:
            if fd >= 0:
                os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return True
