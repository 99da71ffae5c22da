"""The safety rule: ntkscale deletes or overwrites only what it can prove it wrote.

Every writer of ntkscale goes through this module before it creates, replaces or empties
anything (Gram and factor stores, run directories, export folders and Zarr groups, study
outputs, output files such as ``ntkscale predict --out``):

* A **directory location** (local path or fsspec URL) may be written when it does not exist,
  is an empty directory, or carries ntkscale's ownership marker naming the same kind: the
  file :data:`MARKER` (``.ntkscale.json``) in a run, export or study folder, the root
  attribute :data:`OWNER_ATTR` of a Zarr group (Gram and factor stores, Zarr exports: a file
  beside ``zarr.json`` would make zarr warn about a foreign object whenever the group is
  listed). :func:`claim_dir` writes the marker *first*, before anything else, when ntkscale
  creates or adopts a location; :func:`check_dir` makes the same decision without writing
  (pre-flight checks).
* Locations written before markers existed are **adopted** when they prove to be ntkscale's:
  a Zarr group whose root ``zarr.json`` carries a store's ntkscale attribute, a run directory
  with ``config.resolved.json`` and only the names a run writes.
* **Emptying** an owned store (:func:`clear_dir`, for a rebuild or ``overwrite=True``) deletes
  only the entries ntkscale writes in it (the Zarr nodes of its group and its bookkeeping);
  any other entry (a file the user put there) makes it refuse, naming the entry.
* A single **output file** may be replaced only when it carries ntkscale's mark (Parquet
  key-value metadata from :func:`mark_parquet_metadata`, an ``.npz`` member
  ``__ntkscale__``, a JSON object with the key ``"ntkscale"``): :func:`check_target_file`.

Anything else raises :class:`UnsafePathError` naming the path, what is there and the fix,
before any work. This is the git rule for untracked files and zarr's ``mode='w-'``: a
location the user did not hand over explicitly empty is never emptied.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from typing import Any, Optional

from ._places import open_place, where
from .url import StoreAccessError, _local_path, is_local

__all__ = ["MARKER", "OWNER_ATTR", "ZARR_KINDS", "KINDS", "UnsafePathError", "Location", "inspect_dir", "check_dir", "claim_dir",
           "clear_dir", "check_target_file", "mark_parquet_metadata", "figure_metadata", "file_is_ours",
           "NPZ_MARK"]

MARKER = ".ntkscale.json"
OWNER_ATTR = "ntkscale_owner"
NPZ_MARK = "__ntkscale__"
_LOCK = ".ntkscale.lock"  # storage.writer.LOCK_KEY (not imported: writer imports this module)

KINDS = {
    "gram-store": "Gram store",
    "factor-store": "factor store",
    "run": "run directory",
    "export": "export folder",
    "arrays": "Zarr export",
    "study": "study output folder",
}
ZARR_KINDS = frozenset({"gram-store", "factor-store", "arrays"})  # marked in the root zarr.json
# root zarr.json attribute that proves a store written before markers existed
_LEGACY_ATTR = {"gram-store": "ntkscale", "factor-store": "ntkscale_factor"}
# what a run directory holds (job/run.py); a directory of only these names plus
# config.resolved.json is a run directory written before markers existed
_RUN_NAMES = frozenset({"config.resolved.json", "job.toml", "metrics.json", "report.md", "figures",
                        "fit.npz", "predictions.npz", "spectrum.npz", "export", "gram.zarr",
                        "gram.zarr-chol", "cross.zarr", "dask-worker-space", "logs"})
_EXTRA_STORE_NAMES = {"factor-store": frozenset({"_stop"})}  # bookkeeping keys of a store
_SHOW = 5  # foreign entries named in a message


class UnsafePathError(StoreAccessError):
    """A location holds something ntkscale did not write, so it refuses to write there."""


@dataclass(frozen=True)
class Location:
    """What is at a location: ``state`` is ``'absent'``, ``'empty'``, ``'ours'`` (marker of
    ``kind``), ``'legacy'`` (ntkscale's, written before markers), ``'other-kind'`` (an
    ntkscale marker of another kind), ``'file'`` (a file, not a directory) or ``'foreign'``."""

    url: str
    state: str
    kind: Optional[str] = None
    entries: tuple[str, ...] = ()


def _what(kind: str) -> str:
    return KINDS.get(kind, kind)


# ------------------------------------------------------------------ decision
def _marker_kind(raw: Optional[bytes]) -> Optional[str]:
    try:
        doc = json.loads(raw.decode()) if raw is not None else None
    except (ValueError, UnicodeDecodeError):
        return None
    return doc.get("ntkscale") if isinstance(doc, dict) and isinstance(doc.get("ntkscale"), str) else None


def _zarr_attrs(loc: Any) -> Optional[dict]:
    """The root ``zarr.json`` document's attributes (None: no readable group document)."""
    raw = loc.read("zarr.json")
    try:
        doc = json.loads(raw.decode()) if raw else None
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(doc, dict):
        return None
    attrs = doc.get("attributes")
    return attrs if isinstance(attrs, dict) else {}


def _found_kind(loc: Any, entries: list[str]) -> Optional[str]:
    """The kind named by the location's ownership marker (file or Zarr attribute), if any."""
    if MARKER in entries:
        kind = _marker_kind(loc.read(MARKER))
        if kind is not None:
            return kind
    if "zarr.json" in entries:
        owner = (_zarr_attrs(loc) or {}).get(OWNER_ATTR)
        if isinstance(owner, dict) and isinstance(owner.get("ntkscale"), str):
            return owner["ntkscale"]
    return None


def _legacy(loc: Any, kind: str, entries: list[str]) -> bool:
    """A location ntkscale wrote before markers existed (see the module docstring)."""
    if kind in _LEGACY_ATTR:
        return _LEGACY_ATTR[kind] in (_zarr_attrs(loc) or {})
    if kind == "run":
        return "config.resolved.json" in entries and all(e in _RUN_NAMES or e == MARKER for e in entries)
    return False


def _inspect(loc: Any, kind: str) -> Location:
    place = where(loc)
    state = loc.kind()
    if state in ("absent", "file"):
        return Location(place, state)
    entries = [e for e in loc.entries() if e != _LOCK]
    if not entries:
        return Location(place, "empty")
    found = _found_kind(loc, entries)
    if found == kind:
        return Location(place, "ours", kind, tuple(entries))
    if found is not None:
        return Location(place, "other-kind", found, tuple(entries))
    if _legacy(loc, kind, entries):
        return Location(place, "legacy", kind, tuple(entries))
    return Location(place, "foreign", None, tuple(entries))


def inspect_dir(url: Any, kind: str, *, storage_options: Optional[dict] = None) -> Location:
    """What is at ``url`` from the point of view of a writer of ``kind`` (no writes)."""
    _check_kind(kind)
    return _inspect(open_place(url, storage_options), kind)


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown location kind {kind!r}; one of {sorted(KINDS)}")


def _refusal(loc: Location, kind: str, key: str) -> UnsafePathError:
    what = _what(kind)
    hint = f" (set by {key})" if key else ""
    if loc.state == "file":
        return UnsafePathError(f"{loc.url!r}{hint} is a file, not a {what} directory; ntkscale will not replace "
                               f"it. Choose a new or empty directory for the {what}")
    if loc.state == "other-kind":
        return UnsafePathError(f"{loc.url!r}{hint} is an ntkscale {_what(loc.kind or '')}, not a {what}; "
                               f"ntkscale will not write a {what} over it. Choose another location for the {what}")
    shown = ", ".join(repr(e) for e in loc.entries[:_SHOW]) + (
        f" and {len(loc.entries) - _SHOW} more" if len(loc.entries) > _SHOW else "")
    return UnsafePathError(f"{loc.url!r}{hint} is not empty and was not written by ntkscale (it holds {shown}); "
                           f"ntkscale writes a {what} only into a new or empty directory or one it created, and "
                           "never deletes files it did not write. Choose a new or empty directory (or remove those "
                           "files yourself)")


def check_dir(url: Any, kind: str, *, storage_options: Optional[dict] = None, key: str = "") -> Location:
    """Refuse (:class:`UnsafePathError`) unless ntkscale may write a ``kind`` location at ``url``.

    Parameters
    ----------
    url : str or path
        Local path, ``file://`` or fsspec URL.
    kind : str
        One of :data:`KINDS` (``'gram-store'``, ``'factor-store'``, ``'run'``, ...).
    storage_options : dict, optional
        fsspec options.
    key : str
        The setting that named the location (``"[kernel] store"``), for the message.

    Returns
    -------
    Location
        State ``'absent'``, ``'empty'``, ``'ours'`` or ``'legacy'``.
    """
    _check_kind(kind)
    place = open_place(url, storage_options)
    loc = _inspect(place, kind)
    if loc.state not in ("absent", "empty", "ours", "legacy"):
        raise _refusal(loc, kind, key)
    if hasattr(place, "writable"):  # a local directory: can it be created or written?
        place.writable()
    return loc


def _owner(kind: str) -> dict:
    from .. import __version__

    return {"ntkscale": kind, "version": __version__, "host": socket.gethostname(), "pid": os.getpid(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def _marker(kind: str) -> bytes:
    return json.dumps(_owner(kind)).encode()


def _mark(loc: Any, kind: str, keep_attrs: bool) -> None:
    """Write the ownership marker of ``kind``: a file, or for a Zarr kind the root group
    document with :data:`OWNER_ATTR` (other attributes kept only with ``keep_attrs``)."""
    if kind not in ZARR_KINDS:
        loc.write(MARKER, _marker(kind))
        return
    attrs = dict(_zarr_attrs(loc) or {}) if keep_attrs else {}
    attrs[OWNER_ATTR] = _owner(kind)
    loc.write("zarr.json", json.dumps({"zarr_format": 3, "node_type": "group", "attributes": attrs,
                                       "consolidated_metadata": None}, indent=2).encode())


def claim_dir(url: Any, kind: str, *, storage_options: Optional[dict] = None, key: str = "") -> Location:
    """:func:`check_dir`, then create the directory (local) and write the marker if missing.

    Call it right before the first write to the location, after every other check passed.
    """
    _check_kind(kind)
    loc = open_place(url, storage_options)
    found = _inspect(loc, kind)
    if found.state not in ("absent", "empty", "ours", "legacy"):
        raise _refusal(found, kind, key)
    if found.state != "ours":
        _mark(loc, kind, keep_attrs=found.state == "legacy")
    return found


def clear_dir(url: Any, kind: str, *, storage_options: Optional[dict] = None, key: str = "") -> None:
    """Empty an owned Zarr-group location for a rebuild, keeping its marker and lock.

    Deletes the child arrays/groups of the root group and the kind's bookkeeping entries and
    leaves a root group document that holds only the ownership attribute; refuses
    (:class:`UnsafePathError`, nothing deleted) when the location is not ntkscale's or holds
    any other entry.
    """
    _check_kind(kind)
    if kind not in ZARR_KINDS:
        raise ValueError(f"clear_dir empties Zarr stores only, not a {_what(kind)}")
    loc = open_place(url, storage_options)
    found = _inspect(loc, kind)
    if found.state in ("absent", "empty"):
        return
    if found.state not in ("ours", "legacy"):
        raise _refusal(found, kind, key)
    extra = _EXTRA_STORE_NAMES.get(kind, frozenset())
    keep = {MARKER, _LOCK}
    doomed, foreign = [], []
    for e in found.entries:
        if e in keep:
            continue
        if e == "zarr.json" or e in extra or loc.is_node(e):
            doomed.append(e)
        else:
            foreign.append(e)
    if foreign:
        shown = ", ".join(repr(e) for e in foreign[:_SHOW])
        raise UnsafePathError(f"{found.url!r}{f' (set by {key})' if key else ''} is an ntkscale {_what(kind)} but "
                              f"also holds {shown}, which ntkscale did not write; it will not delete them. Move "
                              "them elsewhere, or choose another location")
    _mark(loc, kind, keep_attrs=False)  # first: the old metadata goes, the ownership stays
    for e in doomed:
        if e != "zarr.json":
            loc.delete(e)


# ------------------------------------------------------------------ files
def mark_parquet_metadata(kind: str = "predictions") -> dict[bytes, bytes]:
    """Key-value metadata for a Parquet schema that marks the file as written by ntkscale."""
    return {b"ntkscale": _marker(kind)}


def figure_metadata(ext: str) -> dict[str, str]:
    """``savefig(metadata=...)`` that marks a figure as ntkscale's (PNG: a text chunk; PDF,
    SVG: the document's creator)."""
    return {"ntkscale": "figure"} if ext.lower() == ".png" else {"Creator": "ntkscale"}


def file_is_ours(path: str) -> bool:
    """Whether the local file ``path`` carries ntkscale's mark (see the module docstring)."""
    low = path.lower()
    try:
        if low.endswith(".parquet"):
            import pyarrow.parquet as pq

            meta = pq.read_schema(path).metadata or {}
            return _marker_kind(meta.get(b"ntkscale")) is not None
        if low.endswith(".npz"):
            import zipfile

            with zipfile.ZipFile(path) as z:
                return f"{NPZ_MARK}.npy" in z.namelist()
        if low.endswith(".json"):
            with open(path, "rb") as f:
                doc = json.load(f)
            return isinstance(doc, dict) and "ntkscale" in doc
        if low.endswith(".csv"):
            with open(path, "rb") as f:
                return f.readline().startswith(b"# ntkscale ")
        if low.endswith((".png", ".pdf", ".svg")):
            with open(path, "rb") as f:
                head = f.read(1 << 16)
            return b"tEXtntkscale\x00" in head if low.endswith(".png") else b"ntkscale" in head
    except Exception:  # noqa: BLE001 - unreadable or not that format: not provably ours
        return False
    return False


def check_target_file(path: Any, *, key: str = "") -> None:
    """Refuse (:class:`UnsafePathError`) to write the file ``path`` when something ntkscale did
    not write is there (a directory, or a file without ntkscale's mark); local paths only."""
    path = os.fspath(path) if isinstance(path, os.PathLike) else str(path)
    if not is_local(path):
        raise UnsafePathError(f"output file {path!r}: only local paths are supported for single output files; "
                              "write to a local path and copy it")
    p = os.path.abspath(_local_path(path))
    hint = f" (set by {key})" if key else ""
    if os.path.isdir(p):
        raise UnsafePathError(f"{p!r}{hint} is a directory; give a file name (e.g. {os.path.join(p, 'out.parquet')!r})")
    if os.path.lexists(p) and not file_is_ours(p):
        raise UnsafePathError(f"{p!r}{hint} exists and was not written by ntkscale; it will not be overwritten. "
                              "Choose a new file name, or delete the file yourself")
    parent = os.path.dirname(p) or "."
    if os.path.isdir(parent) and not os.access(parent, os.W_OK):
        raise UnsafePathError(f"cannot write {p!r}{hint}: the folder {parent!r} is not writable; choose another "
                              "location")
