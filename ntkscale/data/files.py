"""Read (X, y) from a file or fsspec URL: npy, npz, zarr (v3 group), csv, parquet.

The files are opened by :mod:`ntkscale.storage.datafiles` (the one package that touches
fsspec and zarr); this module parses them and names the job-config keys in its errors. Any
URL fsspec can open works (a local path, ``file://``, ``memory://``, ``s3://`` with ``s3fs``
installed...); ``storage_options`` are passed to the filesystem. Whole files are read into
memory; the content hash (blake2b-128 of the decompressed bytes, or of the arrays for zarr)
goes into the run report so the exact input can be identified later.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from typing import Any, Optional

import numpy as np

from .validate import DataError
from .spec import DataSpec, not_found

__all__ = ["read_file", "read_xy", "read_features"]


def _blake(*chunks: bytes) -> str:
    h = hashlib.blake2b(digest_size=16)
    for c in chunks:
        h.update(c)
    return h.hexdigest()


def _read_bytes(url: str, key: str, storage_options: dict, missing: str = "") -> bytes:
    from ..storage.datafiles import read_bytes

    try:
        return read_bytes(url, storage_options)
    except FileNotFoundError:
        raise FileNotFoundError(missing or f"'{key}' = {url!r}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"'{key}' = {url!r} is a folder, not a file: name the file inside it "
                        "(or set format = 'zarr' for a zarr group)") from None
    except OSError as e:  # permission denied, name too long, a broken URL...
        raise DataError(f"'{key}' = {url!r} cannot be read: {e.strerror or e}") from None
    except ImportError as e:
        raise ImportError(f"'{key}' = {url!r}: the filesystem for this URL is not installed ({e}); "
                          "e.g. 'pip install s3fs' for s3://, 'pip install gcsfs' for gs://") from None
    except ValueError as e:  # unknown protocol
        raise DataError(f"'{key}' = {url!r} cannot be opened: {e}") from None


def _npy(data: bytes, key: str, url: str) -> np.ndarray:
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, EOFError, OSError) as e:
        raise DataError(f"'{key}' = {url!r} is not a plain .npy array ({e}); save numeric or "
                        "string arrays with numpy.save (object arrays are refused)") from None


def _pick(keys: list[str], want: str, key: str, url: str, what: str) -> str:
    if want not in keys:
        raise DataError(f"'{key}' = {want!r} is not in {url!r}; its {what}: {', '.join(sorted(keys)) or '(none)'}")
    return want


def _npz(data: bytes, spec: DataSpec, url: str, path: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            keys = list(z.files)
            X = z[_pick(keys, spec.x_key, f"{path}.x_key", url, "arrays")]
            y = z[_pick(keys, spec.y_key, f"{path}.y_key", url, "arrays")]
    except DataError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"'{path}.path' = {url!r} is not a readable .npz archive: {e}") from None
    return X, y


def _zarr(url: str, spec: DataSpec, path: str, key: str) -> tuple[np.ndarray, np.ndarray, str]:
    from ..storage.datafiles import open_zarr_arrays
    from ..storage.url import StoreAccessError

    try:
        g = open_zarr_arrays(url, spec.storage_options)
    except FileNotFoundError:
        raise FileNotFoundError(not_found(spec, key.rsplit(".", 1)[-1], path, "no zarr group there")) from None
    except StoreAccessError as e:
        raise DataError(f"'{key}' = {url!r} is not a zarr group holding '{spec.x_key}' and "
                        f"'{spec.y_key}' arrays: {e}") from None
    X = g.read(_pick(g.names, spec.x_key, f"{path}.x_key", url, "arrays"))
    y = g.read(_pick(g.names, spec.y_key, f"{path}.y_key", url, "arrays"))
    fp = _blake(repr((X.shape, str(X.dtype), y.shape, str(y.dtype))).encode(),
                np.ascontiguousarray(X).tobytes(), np.ascontiguousarray(y).tobytes())
    return X, y, fp


def _table(data: bytes, fmt: str, spec: DataSpec, url: str, path: str, *, new_rows: bool = False,
           columns: Optional[list] = None) -> tuple[np.ndarray, Optional[np.ndarray], list]:
    """(X, y, feature columns) of a csv/parquet file. ``new_rows``: rows to predict, whose
    target column may be absent (y None); their features are ``columns`` (the training
    file's, by name) when given."""
    try:
        import pandas as pd
    except ImportError:
        raise ImportError(f"reading {fmt} files needs pandas: 'pip install pandas'") from None
    if fmt == "parquet":
        import importlib.util

        if importlib.util.find_spec("pyarrow") is None:
            raise ImportError(f"'{path}.path' = {url!r}: reading parquet needs pyarrow: 'pip install pyarrow' "
                              "(or convert the file to csv/npz)")
        df = pd.read_parquet(io.BytesIO(data))
    elif not data.strip():
        raise DataError(f"'{path}.path' = {url!r} is empty: write a header row and at least 2 data rows")
    else:
        try:
            # exact decimal round trip: the default from pandas 3 (where the option is deprecated)
            kw = {"float_precision": "round_trip"} if int(pd.__version__.split(".")[0]) < 3 else {}
            df = pd.read_csv(io.BytesIO(data), **kw)
        except UnicodeDecodeError as e:
            raise DataError(f"'{path}.path' = {url!r} is not UTF-8 text (byte {e.object[e.start:e.start + 1]!r} "
                            f"at offset {e.start}): save the csv file as UTF-8") from None
        except (ValueError, pd.errors.ParserError) as e:
            raise DataError(f"'{path}.path' = {url!r} is not a readable csv file: {e}") from None
    cols = [str(c) for c in df.columns]
    df.columns = cols
    if spec.target not in cols and not new_rows:
        sep = [c for c in (";", "\t", "|") if len(cols) == 1 and c in cols[0]]
        hint = (f" (one column: is the file separated by {sep[0]!r}? ntkscale reads comma-separated "
                "csv; save it with commas)") if sep else ""
        raise DataError(f"'{path}.target' = {spec.target!r} is not a column of {url!r}; columns: "
                        + ", ".join(c[:60] for c in cols[:20]) + (" ..." if len(cols) > 20 else "") + hint)
    if len(df) == 0:
        raise DataError(f"'{path}.path' = {url!r} has a header but no data rows")
    if columns is not None:
        missing = [c for c in columns if c not in cols]
        if missing:
            raise DataError(f"{url!r} lacks the feature column{'s' if len(missing) > 1 else ''} "
                            f"{', '.join(map(repr, missing))} that the job was trained on; give every "
                            f"training feature ({', '.join(columns)}) under the same name")
        xcols = list(columns)
    elif spec.x_columns is not None:
        missing = [c for c in spec.x_columns if c not in cols]
        if missing:
            raise DataError(f"'{path}.x_columns' names {', '.join(map(repr, missing))}, not columns of "
                            f"{url!r}; columns: " + ", ".join(cols))
        xcols = list(spec.x_columns)
    else:
        xcols = [c for c in cols if c != spec.target]
    numeric = pd.api.types.is_numeric_dtype
    bad = [c for c in xcols if not numeric(df[c]) and not pd.api.types.is_bool_dtype(df[c])]
    if bad:
        raise DataError(f"{url!r}: feature column{'s' if len(bad) > 1 else ''} {', '.join(map(repr, bad))} "
                        f"{'are' if len(bad) > 1 else 'is'} not numeric (dtype {df[bad[0]].dtype}); encode "
                        f"{'them' if len(bad) > 1 else 'it'} as numbers or list the features in '{path}.x_columns'")
    if not xcols:
        raise DataError(f"{url!r}: no feature columns besides the target {spec.target!r}")
    X = df[xcols].to_numpy(dtype=np.float64, na_value=np.nan)
    if spec.target not in cols:
        return X, None, xcols
    s = df[spec.target]
    if pd.api.types.is_bool_dtype(s) or (pd.api.types.is_integer_dtype(s) and not s.isna().any()):
        y = s.to_numpy()
    elif numeric(s):
        y = s.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        y = s.astype(object).where(s.notna(), None).to_numpy()
    return X, y, xcols


def read_xy(spec: DataSpec, *, test: bool = False,
            path: str = "data") -> tuple[np.ndarray, np.ndarray, dict]:
    """Raw (X, y) of the training file (or of ``test_path`` with ``test=True``).

    Parameters
    ----------
    spec : DataSpec
        A validated ``source = "file"`` spec.
    test : bool
        Read ``test_path`` / ``test_y_path`` instead of ``path`` / ``y_path``.
    path : str
        Section name for messages.

    Returns
    -------
    X : ndarray, shape (n, ...)
    y : ndarray, shape (n,) or (n, C)
    meta : dict
        ``path``, ``format``, ``fingerprint`` (content hash), and ``y_path``/``columns`` where used.
    """
    xk, yk = ("test_path", "test_y_path") if test else ("path", "y_path")
    url: Optional[str] = getattr(spec, xk)
    if url is None:
        raise ValueError(f"no '{path}.{xk}' in the spec")
    fmt, so = spec.format, spec.storage_options
    meta: dict[str, Any] = {"path": url, "format": fmt}
    if fmt == "zarr":
        X, y, meta["fingerprint"] = _zarr(url, spec, path, f"{path}.{xk}")
        return X, y, meta
    data = _read_bytes(url, f"{path}.{xk}", so, not_found(spec, xk, path))
    if fmt == "npy":
        yurl = getattr(spec, yk)
        ydata = _read_bytes(yurl, f"{path}.{yk}", so, not_found(spec, yk, path))
        X, y = _npy(data, f"{path}.{xk}", url), _npy(ydata, f"{path}.{yk}", yurl)
        meta.update(y_path=yurl, fingerprint=_blake(data, ydata))
    elif fmt == "npz":
        X, y = _npz(data, spec, url, path)
        meta["fingerprint"] = _blake(data)
    else:
        X, y, meta["columns"] = _table(data, fmt, spec, url, path)
        meta["fingerprint"] = _blake(data)
    return X, y, meta


def read_file(spec: DataSpec, path: str = "data") -> dict[str, Any]:
    """All arrays of a file source: ``{"train": (X, y, meta), "test": (X, y, meta) or None}``."""
    return {"train": read_xy(spec, path=path),
            "test": read_xy(spec, test=True, path=path) if spec.test_path else None}


def read_features(url: str, spec: DataSpec, *, columns: Optional[list] = None,
                  key: str = "--input") -> tuple[np.ndarray, Optional[np.ndarray], dict]:
    """Features of a file of new rows, selected the way the job's training rows were, and
    the target when the file has it (no target is needed).

    Parameters
    ----------
    url : str
        A file or fsspec URL; its format comes from its suffix (csv, parquet, npz, npy, zarr).
    spec : DataSpec
        The job's data spec: ``x_key`` / ``y_key`` (npz, zarr), ``target`` (csv, parquet),
        ``storage_options``.
    columns : list of str, optional
        csv / parquet: the training feature columns (the job's ``meta["columns"]``), picked
        by name in that order. None: every column but ``spec.target``, in file order.
    key : str
        What named the file, for messages.

    Returns
    -------
    X : ndarray, shape (m, d), float64
        Images (m, H, W, C) are flattened like training rows.
    y : ndarray, shape (m,) or (m, C), or None
        The target (``y_key`` array or ``target`` column) when present.
    meta : dict
        ``path``, ``format``, ``fingerprint``, and ``columns`` for tables.

    Raises
    ------
    DataError
        Unknown suffix, missing feature columns or arrays (naming what is there), non-numeric
        features, or NaN/Inf/missing features (count and first rows).
    """
    from .spec import infer_format
    from .validate import _rows, bad_rows

    fmt = infer_format(url)
    if fmt is None:
        raise DataError(f"{key} {url!r}: cannot tell the format from the suffix; use .csv, .parquet, "
                        ".npz, .npy or .zarr")
    meta: dict[str, Any] = {"path": url, "format": fmt}
    y: Optional[np.ndarray] = None
    if fmt == "zarr":
        from ..storage.datafiles import open_zarr_arrays

        try:
            g = open_zarr_arrays(url, spec.storage_options)
        except FileNotFoundError:
            raise FileNotFoundError(f"{key} {url!r}: no zarr group there") from None
        X = g.read(_pick(g.names, spec.x_key, "x_key", url, "arrays"))
        y = g.read(spec.y_key) if spec.y_key in g.names else None
        meta["fingerprint"] = _blake(np.ascontiguousarray(X).tobytes())
    else:
        data = _read_bytes(url, key, spec.storage_options)
        meta["fingerprint"] = _blake(data)
        if fmt == "npy":
            X = _npy(data, key, url)
        elif fmt == "npz":
            try:
                with np.load(io.BytesIO(data), allow_pickle=False) as z:
                    names = list(z.files)
                    X = z[_pick(names, spec.x_key, "x_key", url, "arrays")]
                    y = z[spec.y_key] if spec.y_key in names else None
            except (ValueError, OSError) as e:
                raise DataError(f"{key} {url!r} is not a readable .npz archive: {e}") from None
        else:
            X, y, meta["columns"] = _table(data, fmt, spec, url, "data", new_rows=True,
                                           columns=list(columns) if columns else None)
    X = np.asarray(X)
    if X.dtype.kind not in "biuf":
        raise DataError(f"{key} {url!r}: features must be numbers, got dtype {X.dtype}")
    if X.ndim < 2 or len(X) == 0:
        raise DataError(f"{key} {url!r}: features must have shape (m, d) with m >= 1, got {X.shape}")
    X = X.reshape(len(X), -1).astype(np.float64)
    bad = bad_rows(X)
    if len(bad):
        raise DataError(f"{key} {url!r}: features have NaN/Inf/missing values in {_rows(bad, len(X))}; "
                        "drop or impute those rows first")
    if y is not None and (len(y) != len(X) or len(bad_rows(np.asarray(y)))):
        y = None  # an unusable target only loses the score, never the predictions
    return X, y, meta
