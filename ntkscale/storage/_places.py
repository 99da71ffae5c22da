"""Where :mod:`.ownership` looks: one small interface over a local directory and an fsspec
location (zarr's store API, keys relative to the root): what is there, its entries, read,
write and delete one entry. No decisions here; :mod:`.ownership` makes them."""

from __future__ import annotations

import asyncio
import os
from typing import Any, Optional

from .url import StoreAccessError, _local_path, is_local

__all__ = ["open_place", "where"]


class _Local:
    def __init__(self, url: str):
        self.path = os.path.abspath(_local_path(url))

    def kind(self) -> str:  # 'absent' | 'dir' | 'file'
        if not os.path.lexists(self.path):
            return "absent"
        return "dir" if os.path.isdir(self.path) and not os.path.islink(self.path) else "file"

    def entries(self) -> list[str]:
        return sorted(os.listdir(self.path))

    def read(self, name: str) -> Optional[bytes]:
        try:
            with open(os.path.join(self.path, name), "rb") as f:
                return f.read()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None

    def is_node(self, name: str) -> bool:
        return os.path.isfile(os.path.join(self.path, name, "zarr.json"))

    def writable(self) -> None:
        """Raise :class:`StoreAccessError` when the directory cannot be created or written."""
        probe = self.path
        while not os.path.lexists(probe):
            probe = os.path.dirname(probe)
        if not os.path.isdir(probe):
            raise StoreAccessError(f"cannot create the directory {self.path!r}: {probe!r} is a file; choose "
                                   "a writable location")
        if not os.access(probe, os.W_OK | os.X_OK):
            raise StoreAccessError(f"cannot create or write {self.path!r}: {probe!r} is not writable; choose a "
                                   "writable location or fix its permissions")

    def write(self, name: str, data: bytes) -> None:
        self.writable()
        try:
            os.makedirs(self.path, exist_ok=True)
            tmp = os.path.join(self.path, f"{name}.{os.getpid()}.tmp")
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, os.path.join(self.path, name))
        except OSError as e:
            raise StoreAccessError(f"cannot write to {self.path!r}: {e.strerror or e}; choose a writable "
                                   "location or fix its permissions") from e

    def delete(self, name: str) -> None:
        import shutil

        p = os.path.join(self.path, name)
        if os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p)
        else:
            os.unlink(p)


class _Remote:
    """An fsspec location, seen through zarr's store API (keys relative to the root)."""

    def __init__(self, url: str, storage_options: Optional[dict]):
        from zarr.storage import FsspecStore

        try:
            self.store = FsspecStore.from_url(url, read_only=False, storage_options=storage_options or {})
        except (ImportError, ValueError) as e:
            raise StoreAccessError(f"cannot open store URL {url!r}: {e}. Install the fsspec backend for "
                                   "the protocol (e.g. 's3fs' for s3://) or pass a local path") from e
        self.url = url
        self._keys: Optional[list[str]] = None

    def _run(self, coro: Any) -> Any:
        from zarr.core.sync import sync

        return sync(coro)

    def keys(self) -> list[str]:
        if self._keys is None:
            async def _list() -> list[str]:
                return [k async for k in self.store.list()]
            self._keys = sorted(self._run(_list()))
        return self._keys

    def kind(self) -> str:
        try:
            if self._run(self.store.fs._isfile(self.store.path)):
                return "file"
        except Exception:  # noqa: BLE001 - a backend without isfile on prefixes: list instead
            pass
        return "dir" if self.keys() else "absent"

    def entries(self) -> list[str]:
        return sorted({k.split("/", 1)[0] for k in self.keys()})

    def read(self, name: str) -> Optional[bytes]:
        from zarr.core.buffer import default_buffer_prototype

        buf = self._run(self.store.get(name, prototype=default_buffer_prototype()))
        return None if buf is None else buf.to_bytes()

    def is_node(self, name: str) -> bool:
        return f"{name}/zarr.json" in set(self.keys())

    def write(self, name: str, data: bytes) -> None:
        from zarr.core.buffer import default_buffer_prototype

        self._run(self.store.set(name, default_buffer_prototype().buffer.from_bytes(data)))
        self._keys = None

    def delete(self, name: str) -> None:
        doomed = [k for k in self.keys() if k == name or k.startswith(name + "/")]

        async def _delete() -> None:
            await asyncio.gather(*(self.store.delete(k) for k in doomed))
        self._run(_delete())
        self._keys = None


def open_place(url: Any, storage_options: Optional[dict]) -> Any:
    url = os.fspath(url) if isinstance(url, os.PathLike) else str(url)
    return _Local(url) if is_local(url) else _Remote(url, storage_options)


def where(loc: Any) -> str:
    return loc.path if isinstance(loc, _Local) else loc.url
