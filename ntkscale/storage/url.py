"""Store URLs: a local path, ``file://``, ``memory://``, ``s3://`` or any fsspec URL."""

from __future__ import annotations

import os
from typing import Any, Optional

from zarr.abc.store import Store
from zarr.storage import FsspecStore, LocalStore

__all__ = ["open_store", "is_local", "is_memory", "StoreAccessError", "options_key", "options_from_key"]


class StoreAccessError(OSError):
    """The store location cannot be opened or written."""


def options_key(storage_options: Optional[dict]) -> Any:
    """A hashable stand-in for ``storage_options`` (nested dicts and lists included, e.g.
    s3fs's ``client_kwargs``), for caches keyed by them; :func:`options_from_key` inverts it."""
    if not storage_options:
        return None

    def freeze(o: Any) -> Any:
        if isinstance(o, dict):
            return ("\0dict", tuple(sorted((str(k), freeze(v)) for k, v in o.items())))
        if isinstance(o, (list, tuple)):
            return ("\0list", tuple(freeze(v) for v in o))
        return o

    return freeze(storage_options)


def options_from_key(key: Any) -> Optional[dict]:
    """The ``storage_options`` that :func:`options_key` made ``key`` from."""
    if key is None:
        return None

    def thaw(o: Any) -> Any:
        if isinstance(o, tuple) and len(o) == 2 and o[0] == "\0dict":
            return {k: thaw(v) for k, v in o[1]}
        if isinstance(o, tuple) and len(o) == 2 and o[0] == "\0list":
            return [thaw(v) for v in o[1]]
        return o

    return thaw(key)


def is_memory(url: str) -> bool:
    return str(url).startswith("memory://")


def is_local(url: str) -> bool:
    return "://" not in str(url) or str(url).startswith("file://")


def _local_path(url: str) -> str:
    url = str(url)
    return url[len("file://"):] if url.startswith("file://") else url


def open_store(url: Any, *, read_only: bool = False, storage_options: Optional[dict] = None,
               create: bool = True) -> Store:
    """A zarr store for ``url``; local paths use zarr's ``LocalStore`` (atomic chunk writes).

    ``create=False``: a missing local directory is an error (:class:`StoreAccessError`), not
    created (opening an existing store for writing).

    Raises
    ------
    StoreAccessError
        If the location cannot be created or written (checked before any work).
    """
    url = os.fspath(url) if isinstance(url, os.PathLike) else str(url)
    if is_local(url):
        path = os.path.abspath(_local_path(url))
        if not read_only and not create and not os.path.isdir(path):
            raise StoreAccessError(f"no store directory at {path!r}")
        if not read_only:
            try:
                os.makedirs(path, exist_ok=True)
            except OSError as e:
                raise StoreAccessError(f"cannot create the store directory {path!r}: {e.strerror or e}; "
                                       "choose a writable location") from e
            if not os.access(path, os.W_OK):
                raise StoreAccessError(f"store directory {path!r} is not writable; "
                                       "choose a writable location or fix its permissions")
        elif not os.path.isdir(path):
            raise StoreAccessError(f"no store directory at {path!r}")
        return LocalStore(path, read_only=read_only)
    try:
        return FsspecStore.from_url(url, read_only=read_only, storage_options=storage_options or {})
    except (ImportError, ValueError) as e:
        raise StoreAccessError(f"cannot open store URL {url!r}: {e}. Install the fsspec backend for "
                               "the protocol (e.g. 's3fs' for s3://) or pass a local path") from e
