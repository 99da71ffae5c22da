"""Named arrays in a small Zarr group (exports for downstream tools; not the Gram store)."""

from __future__ import annotations

from typing import Any, Mapping, Optional

import numpy as np
import zarr

from .ownership import check_dir, claim_dir, clear_dir
from .url import open_store

__all__ = ["write_arrays", "read_arrays"]


def write_arrays(url: str, arrays: Mapping[str, np.ndarray], attrs: Optional[Mapping[str, Any]] = None,
                 *, storage_options: Optional[dict] = None) -> str:
    """Write ``arrays`` as the arrays of a new Zarr group at ``url`` (replacing one that
    ntkscale wrote there; anything else at ``url`` is refused, :mod:`.ownership`).

    Parameters
    ----------
    url : str
        A local path or fsspec URL (``open_store``).
    arrays : mapping of str to ndarray
        Name → array of any shape; dtypes are kept (one chunk per array).
    attrs : mapping, optional
        JSON-able group attributes.
    storage_options : dict, optional
        For fsspec URLs.

    Returns
    -------
    str
        ``url``.

    Raises
    ------
    UnsafePathError
        ``url`` holds something ntkscale did not write (nothing is changed).
    """
    check_dir(url, "arrays", storage_options=storage_options, key="export path")
    clear_dir(url, "arrays", storage_options=storage_options)
    claim_dir(url, "arrays", storage_options=storage_options)
    group = zarr.open_group(open_store(url, storage_options=storage_options), mode="a")
    for name, a in arrays.items():
        a = np.ascontiguousarray(a)
        arr = group.create_array(name, shape=a.shape, dtype=a.dtype, chunks=tuple(max(1, s) for s in a.shape) or None,
                                 compressors=None)
        arr[...] = a
    group.attrs.update(dict(attrs or {}))
    return url


def read_arrays(url: str, *, storage_options: Optional[dict] = None) -> tuple[dict[str, np.ndarray], dict]:
    """The arrays (name → ndarray) and attributes of a group written by :func:`write_arrays`."""
    group = zarr.open_group(open_store(url, read_only=True, storage_options=storage_options), mode="r")
    return {name: np.asarray(arr[...]) for name, arr in group.arrays()}, dict(group.attrs)
