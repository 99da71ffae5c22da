"""One writer per store: a lock inside the store, stale temporary files, free space.

A build or factorization takes the store's lock (:class:`StoreLock`) before it writes
anything, so a second one pointed at the same store is refused instead of interleaving
with the first. On a local directory the lock is a file created with ``O_CREAT|O_EXCL``
(atomic, also on NFS v3+) holding the host, process id and start time of its holder; a lock
left by a process that died on this host is taken over with a :class:`StaleLockWarning`.
Other fsspec stores get a lock object created with fsspec's exclusive write
(``pipe_file(mode='create')``). On S3 (s3fs) that is a conditional PUT (``If-None-Match: *``),
which the server refuses when the object exists: atomic, like ``O_EXCL``, on AWS S3 and on
servers that honour the header (MinIO, moto, ...). Elsewhere (and on S3-compatible servers
that refuse the header) it is check, then write: two builds starting in the same instant can
both pass. Either way the holder's record is read back after the write, so of two writers
that overwrote each other only the last one proceeds (the window narrows; without the
conditional PUT it does not close). A lock from another machine is never taken over: it is
named in the error, to be deleted by hand once that build is known to be gone; taking over
a dead holder's lock (delete, then create) is not atomic anywhere.

Chunk writes on a ``LocalStore`` go to a temporary ``<key>.<uuid>.partial`` file renamed
into place, so a chunk that exists is whole. A process killed mid-write leaves its
``.partial`` file behind; :func:`remove_partials` deletes them (only the lock holder may).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import time
import uuid
import warnings
from typing import Any, Optional

import zarr
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync
from zarr.storage import LocalStore

from .ownership import claim_dir, clear_dir
from .url import StoreAccessError, _local_path, is_local, open_store

__all__ = ["LOCK_KEY", "StoreLock", "StoreLockedError", "StaleLockWarning", "DiskFullError",
           "fresh_group", "remove_partials", "free_bytes", "is_disk_full"]

LOCK_KEY = ".ntkscale.lock"
_PARTIAL = ".partial"  # suffix of zarr LocalStore's temporary chunk files
_UNREADABLE_GRACE_S = 10.0  # a lock file still empty after this long was left by a crash


class StoreLockedError(StoreAccessError):
    """Another build or factorization holds the store's lock."""


class StaleLockWarning(UserWarning):
    """A lock left by a process that no longer runs was taken over."""


class DiskFullError(StoreAccessError):
    """The store's file system has (or will have) too little free space."""


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception it was raised from) is ENOSPC / EDQUOT."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def free_bytes(url: Any) -> Optional[int]:
    """Free bytes of the file system holding a local store (None for other stores)."""
    if not is_local(str(url)):
        return None
    path = os.path.abspath(_local_path(os.fspath(url) if isinstance(url, os.PathLike) else str(url)))
    while path and not os.path.exists(path):
        path = os.path.dirname(path)
    return int(shutil.disk_usage(path or ".").free)


def fresh_group(url: Any, kind: str, storage_options: Optional[dict] = None) -> zarr.Group:
    """Empty the ``kind`` store at ``url`` (its Zarr nodes; never the lock or the ownership
    marker, and never anything ntkscale did not write: :func:`.ownership.clear_dir` refuses)
    and create a new root group in it.

    ``zarr.open_group(mode='w')`` would delete the whole directory, whatever it holds.
    """
    clear_dir(url, kind, storage_options=storage_options)
    claim_dir(url, kind, storage_options=storage_options)
    return zarr.open_group(open_store(url, read_only=False, storage_options=storage_options), mode="a")


def remove_partials(store: Any) -> int:
    """Delete the temporary files of interrupted chunk writes (local stores); return how many.

    Call only while holding the store's lock: a running writer's temporary file looks the same.
    """
    if not isinstance(store, LocalStore) or not store.root.is_dir():
        return 0
    count = 0
    for path in store.root.rglob(f"*{_PARTIAL}"):
        try:
            path.unlink()
            count += 1
        except FileNotFoundError:  # pragma: no cover - removed meanwhile
            pass
    return count


_ATOMIC_PROTOCOLS = ("s3", "s3a")  # fsspec backends whose mode='create' is a conditional write


def _exclusive_protocol(url: str) -> bool:
    return str(url).split("://", 1)[0].lower() in _ATOMIC_PROTOCOLS


def _exclusive_set(store: Any, key: str, data: bytes) -> Optional[bool]:
    """Create ``key`` in an fsspec store holding ``data`` unless it exists: True when created,
    False when it existed, None when the backend (or an S3-compatible server) offers no
    exclusive create (the caller falls back to check-then-write).

    Uses fsspec's ``pipe_file(mode='create')``: s3fs sends ``If-None-Match: *`` (the server
    answers 412 when the object exists: atomic); other backends check, then write.
    """
    fs, root = getattr(store, "fs", None), getattr(store, "path", None)
    if fs is None or root is None:
        return None
    try:
        sync(fs._pipe_file(f"{root.rstrip('/')}/{key}", data, mode="create"))
    except FileExistsError:
        return False
    except (TypeError, NotImplementedError):  # an fsspec without mode=, a server without the header
        return None
    except OSError as e:
        if "NotImplemented" in str(e) or "not implemented" in str(e).lower():
            return None
        raise
    return True


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - someone else's live process
        return True
    return True


class StoreLock:
    """The lock of the store at ``url`` (a context manager; see the module docstring).

    Parameters
    ----------
    url : str or path
        Store location (local path, ``file://`` or any fsspec URL).
    what : str
        What holds the lock, for the messages ("Gram build", "Cholesky factorization").
    kind : str, optional
        The location kind (``'gram-store'``, ``'factor-store'``): :meth:`acquire` first claims
        the location (:func:`.ownership.claim_dir`), refusing one that holds anything ntkscale
        did not write. None: no claim (a location already claimed).
    storage_options : dict, optional
        fsspec options of non-local stores.
    """

    def __init__(self, url: Any, *, what: str = "build", storage_options: Optional[dict] = None,
                 kind: Optional[str] = None):
        self.url, self.what, self.storage_options, self.kind = str(url), what, storage_options, kind
        self.token = uuid.uuid4().hex
        self.held = False
        self._local = is_local(self.url)
        #: whether creating the lock is atomic (local O_EXCL, S3 conditional PUT); False once a
        #: store was found to offer only check-then-write
        self.atomic = self._local or _exclusive_protocol(self.url)
        self._path = os.path.join(os.path.abspath(_local_path(self.url)), LOCK_KEY) if self._local else None

    # ------------------------------------------------------------ holder io
    def _record(self) -> bytes:
        return json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "what": self.what,
                           "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "token": self.token}).encode()

    def _store(self) -> Any:
        return open_store(self.url, read_only=False, storage_options=self.storage_options)

    def _read(self) -> tuple[Optional[dict], float]:
        """The holder's record (None if unreadable) and the lock's age in seconds."""
        if self._local:
            try:
                with open(self._path, "rb") as f:  # type: ignore[arg-type]
                    raw = f.read()
                age = time.time() - os.path.getmtime(self._path)  # type: ignore[arg-type]
            except FileNotFoundError:
                return {}, 0.0
        else:
            buf = sync(self._store().get(LOCK_KEY, prototype=default_buffer_prototype()))
            if buf is None:
                return {}, 0.0
            raw, age = buf.to_bytes(), 0.0
        try:
            return json.loads(raw.decode()), age
        except (ValueError, UnicodeDecodeError):
            return None, age

    def _create(self) -> bool:
        """Create the lock if there is none; whether it was created."""
        if self._local:
            try:
                fd = os.open(self._path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)  # type: ignore[arg-type]
            except FileExistsError:
                return False
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(self._record())
                    f.flush()
                    os.fsync(f.fileno())
            except BaseException:  # e.g. ENOSPC: leave no empty lock behind
                os.unlink(self._path)  # type: ignore[arg-type]
                raise
            return True
        store, record = self._store(), self._record()
        created = _exclusive_set(store, LOCK_KEY, record)
        if created is None:  # no exclusive create here: best effort, check then write
            self.atomic = False
            if sync(store.exists(LOCK_KEY)):
                return False
            sync(store.set(LOCK_KEY, default_buffer_prototype().buffer.from_bytes(record)))
        elif not created:
            return False
        holder, _ = self._read()  # a writer that overwrote ours (no conditional write) wins
        return bool(holder) and holder.get("token") == self.token

    def _delete(self) -> None:
        if self._local:
            try:
                os.unlink(self._path)  # type: ignore[arg-type]
            except FileNotFoundError:
                pass
        else:
            sync(self._store().delete(LOCK_KEY))

    def _where(self) -> str:
        return self._path if self._local else f"{self.url.rstrip('/')}/{LOCK_KEY}"

    # ------------------------------------------------------------ protocol
    def acquire(self) -> "StoreLock":
        """Take the lock.

        Raises
        ------
        StoreLockedError
            If another live process holds it (the message names the holder and the fix).
        StoreAccessError
            If the store location cannot be created or written.
        UnsafePathError
            If the location holds anything ntkscale did not write (``kind`` given).
        """
        if self.kind is not None:
            claim_dir(self.url, self.kind, storage_options=self.storage_options)
        self._store()  # creates a local store's directory (or says why it cannot)
        for _ in range(int(_UNREADABLE_GRACE_S / 0.5) + 3):
            if self._create():
                self.held = True
                return self
            holder, age = self._read()
            if holder == {}:  # released meanwhile
                continue
            if holder is None:  # being written right now, or left empty by a crash
                if age < _UNREADABLE_GRACE_S:
                    time.sleep(0.5)
                    continue
                warnings.warn(f"store {self.url!r}: taking over the unreadable lock {self._where()!r} "
                              f"({age:.0f} s old; its writer crashed)", StaleLockWarning, stacklevel=3)
                self._delete()
                continue
            if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int) \
                    and holder["pid"] != os.getpid() and not _pid_alive(holder["pid"]):
                warnings.warn(f"store {self.url!r}: taking over the lock of a {holder.get('what')} by process "
                              f"{holder['pid']} on this host (started {holder.get('started')}), which no longer "
                              "runs; its finished tiles are kept", StaleLockWarning, stacklevel=3)
                self._delete()
                continue
            raise StoreLockedError(
                f"store {self.url!r} is in use: a {holder.get('what')} by process {holder.get('pid')} on host "
                f"{holder.get('host')!r} (started {holder.get('started')}) holds its lock {self._where()!r}. Wait for "
                "it to finish (its tiles are kept) or use another store URL; if that process is gone (e.g. it ran "
                f"on another machine), delete {self._where()!r} and run again")
        raise StoreLockedError(f"could not take the lock {self._where()!r} of store {self.url!r} (it keeps "
                               "changing hands); run again")

    def release(self) -> None:
        """Give the lock back (only if it is still ours)."""
        if not self.held:
            return
        self.held = False
        holder, _ = self._read()
        if holder and holder.get("token") == self.token:
            self._delete()

    def __enter__(self) -> "StoreLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()
