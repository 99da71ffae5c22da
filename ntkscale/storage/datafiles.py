"""Opening the user's data files by URL (fsspec) and arrays of a user's Zarr group.

The file side of ``[data] source = "file"`` (:mod:`ntkscale.data.files` parses what comes
back and names the job-config keys in its errors): this package is the only one that
touches fsspec and zarr. Any URL fsspec can open works (a local path, ``file://``,
``memory://``, ``s3://`` with ``s3fs`` installed...).
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import zarr

from .url import StoreAccessError

__all__ = ["read_bytes", "ZarrArrays", "open_zarr_arrays"]


def read_bytes(url: str, storage_options: Optional[dict] = None) -> bytes:
    """The whole content of the file at ``url``, decompressed by its extension (``.gz``...).

    Raises
    ------
    FileNotFoundError
        Nothing at ``url``.
    ImportError
        The filesystem of the URL's protocol is not installed (e.g. ``s3fs``).
    ValueError
        An unknown protocol.
    """
    import fsspec

    with fsspec.open(url, "rb", compression="infer", **(storage_options or {})) as f:
        return f.read()


class ZarrArrays:
    """The arrays of a Zarr group opened read-only: their names, and each read whole."""

    def __init__(self, group: zarr.Group):
        self._group = group
        self.names: list[str] = list(group.array_keys())

    def read(self, name: str) -> np.ndarray:
        """Array ``name`` (one of :attr:`names`) as an ndarray, shape as stored."""
        return np.asarray(self._group[name][...])


def open_zarr_arrays(url: str, storage_options: Optional[dict] = None) -> ZarrArrays:
    """The Zarr (v3) group at ``url``, read-only.

    Raises
    ------
    FileNotFoundError
        Nothing at ``url``.
    StoreAccessError
        ``url`` is not a Zarr group; the message is zarr's error, its type first.
    """
    kw: dict[str, Any] = {"storage_options": storage_options} if storage_options else {}
    try:
        group = zarr.open_group(url, mode="r", **kw)
    except FileNotFoundError:
        raise
    except Exception as e:  # zarr raises several types for "not a group"
        raise StoreAccessError(f"{type(e).__name__}: {e}") from e
    return ZarrArrays(group)
