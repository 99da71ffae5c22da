"""Cold-read rates of this machine's disk for the planner's calibration: fresh files, or an
existing store's chunk files, dropped from the page cache and read as passes read them."""

from __future__ import annotations

import os
import time
from typing import Optional

import numpy as np

__all__ = ["read_files", "disk_read_rate", "store_read_rate"]


def read_files(paths: list[str], threads: int = 2, direct: bool = False) -> float:
    """Seconds for ``threads`` readers to read ``paths`` whole (each file once, into reused
    buffers). Whether that hits the disk is the caller's business (drop the cache first).
    ``direct``: with ``O_DIRECT`` into page-aligned buffers, as passes over a store larger than
    RAM read (``StoredGram(io='auto')``), where the system allows it, else plain reads. On the
    2-core VM the two differ: 1.6-1.8 GB/s direct against ~1.0 GB/s through the page cache, whose
    copies and reclaim cost a core."""
    import threading

    from ..storage.chunks import aligned_buffer, read_path_direct

    size = max((os.path.getsize(p) for p in paths), default=0)
    todo = list(paths)
    lock = threading.Lock()

    def read(path: str, buf: np.ndarray) -> None:
        nbytes = os.path.getsize(path)
        if direct and read_path_direct(path, buf, nbytes):  # (None: direct I/O refused here)
            return
        with open(path, "rb", buffering=0) as fh:
            fh.readinto(memoryview(buf)[:nbytes])

    def reader() -> None:
        buf = aligned_buffer(size)
        while True:
            with lock:
                if not todo:
                    return
                path = todo.pop()
            read(path, buf)

    workers = [threading.Thread(target=reader) for _ in range(threads)]
    t0 = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return time.perf_counter() - t0


def disk_read_rate(tmp: str, nbytes: int = 512 * 2**20, files: int = 4, threads: int = 2) -> float:
    """Cold read bytes/s of this disk: ``files`` fresh files written and synced, dropped from the
    page cache (``posix_fadvise DONTNEED``), then read by ``threads`` readers (what a pass over
    a store larger than RAM sees). Falls back to a warm read where fadvise is missing."""
    size = nbytes // files
    block = np.random.default_rng(5).integers(0, 255, size, dtype=np.uint8)
    paths = [os.path.join(tmp, f"disk{k}.bin") for k in range(files)]
    for path in paths:
        with open(path, "wb") as fh:
            fh.write(block.data)
            fh.flush()
            os.fsync(fh.fileno())
        if hasattr(os, "posix_fadvise"):
            fd = os.open(path, os.O_RDONLY)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.close(fd)
    seconds = read_files(paths, threads, direct=True)
    for path in paths:
        os.remove(path)
    return size * files / seconds


def store_read_rate(root: str, nbytes: int = 4 * 2**30, threads: int = 2,
                    min_bytes: int = 2**30) -> Optional[float]:
    """Cold read bytes/s of an existing local store's chunk files: up to ``nbytes`` of its
    largest chunks, spread over the store, dropped from the page cache and read by
    ``threads`` readers. None when the store has fewer than ``min_bytes`` of chunks.

    Fresh files (:func:`disk_read_rate`) can be served by a virtual disk's host-side cache
    (measured here with plain reads: 2.24 GB/s for fresh files against 0.9-1.3 GB/s for a 29 GB
    store; O_DIRECT reads of that store: 1.6-1.8 GB/s); files
    written long before, and more of them than that cache holds, are what a pass reads.
    """
    chunks = []
    for dp, _, fs in os.walk(root):
        if f"{os.sep}c{os.sep}" in dp + os.sep:  # zarr v3 chunk keys: <array>/c/<i>/<j>
            chunks += [os.path.join(dp, f) for f in fs if f.isdigit()]
    sized = sorted(((os.path.getsize(p), p) for p in chunks), reverse=True)
    if not sized or sum(sz for sz, _ in sized) < min_bytes:
        return None
    big = [p for sz, p in sized if sz == sized[0][0]]
    count = max(1, min(len(big), nbytes // max(sized[0][0], 1)))
    step = len(big) / count
    paths = [big[int(k * step)] for k in range(count)]
    if hasattr(os, "posix_fadvise"):
        for path in paths:
            fd = os.open(path, os.O_RDONLY)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.close(fd)
    seconds = read_files(paths, threads, direct=True)
    return sum(os.path.getsize(p) for p in paths) / seconds
