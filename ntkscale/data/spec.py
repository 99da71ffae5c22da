"""The ``[data]`` section of a job file: validated into a frozen :class:`DataSpec`.

Schema (defaults shown; ``source`` is required)::

    [data]
    source = "fashion-mnist"   # fashion-mnist | sklearn | sphere | teacher-student | file
    n_train = 8192             # training rows: a seeded subset (default: all available)
    n_test = 2000              # held-out rows (default: the whole test split / test_fraction)
    test_fraction = 0.2        # hold-out share when the source has no test split of its own
    preprocess = "sphere"      # sphere | standardize | none  (default: none for synthetic sources)
    task = "auto"              # auto | classification | regression
    seed = 0                   # default: the run seed given to load_dataset

    # fashion-mnist:    flip = false, path = "<folder with the IDX files>"
    # sklearn:          name = "digits" | "iris" | "wine" | "breast_cancer" | "diabetes" | "linnerud"
    # sphere:           d = 16, n, target = "harmonics" | "teacher", degree = 3, noise = 0.0,
    #                   teacher_width = 512, teacher_depth = 2
    # teacher-student:  d = 16, n, teacher_width = 512, teacher_depth = 2, noise = 0.0
    # file:             path (required), format = "auto", y_path (npy), x_key = "X", y_key = "y",
    #                   target (csv/parquet column), x_columns, test_path, test_y_path,
    #                   storage_options = {}
    # Relative input paths (path, y_path, test_path, test_y_path) are read from the job file's
    # folder (resolve_paths); absolute paths and URLs are used as written.

Everything that can be checked without reading data is checked here, so a typo fails
before a cluster starts; errors are :class:`~ntkscale._config.ConfigError` naming the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from .._config import ConfigError, check_keys, get

__all__ = ["DataSpec", "validate_data", "resolve_paths", "SOURCES", "SKLEARN_BUNDLED", "FILE_FORMATS",
           "infer_format", "not_found", "PATH_KEYS"]

SOURCES = ("fashion-mnist", "sklearn", "sphere", "teacher-student", "file")
PREPROCESS = ("sphere", "standardize", "none")
TASKS = ("auto", "classification", "regression")
#: scikit-learn data sets shipped inside the wheel (no download): name -> natural task
SKLEARN_BUNDLED = {"digits": "classification", "iris": "classification",
                   "wine": "classification", "breast_cancer": "classification",
                   "diabetes": "regression", "linnerud": "regression"}
#: scikit-learn ``fetch_*`` sets: refused, they download at run time
SKLEARN_DOWNLOAD = ("california_housing", "covtype", "kddcup99", "lfw_people", "lfw_pairs",
                    "olivetti_faces", "20newsgroups", "20newsgroups_vectorized", "rcv1",
                    "species_distributions", "openml", "mnist", "fashion_mnist")
SPHERE_TARGETS = ("harmonics", "teacher")
FILE_FORMATS = ("auto", "npy", "npz", "zarr", "csv", "parquet")
FASHION_MNIST_SIZES = {"train": 60000, "test": 10000}

_COMMON = ("source", "n_train", "n_test", "test_fraction", "preprocess", "task", "seed")
_EXTRA = {"fashion-mnist": ("flip", "path"),
          "sklearn": ("name",),
          "sphere": ("d", "n", "target", "degree", "noise", "teacher_width", "teacher_depth"),
          "teacher-student": ("d", "n", "teacher_width", "teacher_depth", "noise"),
          "file": ("path", "format", "y_path", "x_key", "y_key", "target", "x_columns",
                   "test_path", "test_y_path", "storage_options")}
#: the input-path keys of ``[data]``: relative ones are read from the job file's folder
PATH_KEYS = ("path", "y_path", "test_path", "test_y_path")
_SUFFIXES = ((".npy", "npy"), (".npz", "npz"), (".zarr", "zarr"), (".parquet", "parquet"),
             (".pq", "parquet"), (".csv", "csv"), (".csv.gz", "csv"), (".csv.bz2", "csv"),
             (".csv.xz", "csv"), (".csv.zip", "csv"))


@dataclass(frozen=True)
class DataSpec:
    """A validated ``[data]`` section (see the module docstring for the meaning of each key).

    ``target`` is the sphere target kind for ``source = "sphere"`` and the target column for
    csv/parquet files; ``n`` is the number of generated points of the synthetic sources.
    Fields that do not apply to the source keep their defaults. ``base`` is the folder that
    relative input paths were resolved against (the job file's, :func:`resolve_paths`) and
    ``given`` maps each resolved key to the path as written (None / empty: used as given).
    """

    source: str
    n_train: Optional[int] = None
    n_test: Optional[int] = None
    test_fraction: Optional[float] = None
    preprocess: str = "sphere"
    task: str = "auto"
    seed: Optional[int] = None
    flip: bool = False
    name: Optional[str] = None
    d: Optional[int] = None
    n: Optional[int] = None
    target: Optional[str] = None
    degree: int = 3
    noise: float = 0.0
    teacher_width: int = 512
    teacher_depth: int = 2
    path: Optional[str] = None
    format: str = "auto"
    y_path: Optional[str] = None
    x_key: str = "X"
    y_key: str = "y"
    x_columns: Optional[tuple[str, ...]] = None
    test_path: Optional[str] = None
    test_y_path: Optional[str] = None
    storage_options: dict = field(default_factory=dict)
    base: Optional[str] = None
    given: dict = field(default_factory=dict)

    @property
    def has_test_split(self) -> bool:
        """Whether the source brings its own test rows (else a seeded hold-out is split off)."""
        return self.source == "fashion-mnist" or (self.source == "file" and self.test_path is not None)


def resolve_paths(spec: DataSpec, base: str) -> DataSpec:
    """``spec`` with its relative input paths (:data:`PATH_KEYS`) joined to the folder ``base``.

    A job file's relative paths are read from its own folder, as other config files do, so a
    job runs the same from any working directory. Absolute paths, ``~`` paths and URLs
    (``s3://``, ``file://``, ``memory://``...) are kept as written; ``base`` and the paths as
    written are recorded (``spec.base``, ``spec.given``) for messages and the resolved config.
    """
    import dataclasses
    import os

    base = os.path.abspath(base)
    changes: dict = {}
    for key in PATH_KEYS:
        v = getattr(spec, key)
        if not v or "://" in v or os.path.isabs(v) or v.startswith("~"):
            continue
        changes[key] = os.path.normpath(os.path.join(base, v))
    if not changes:
        return spec
    return dataclasses.replace(spec, **changes, base=base, given={k: getattr(spec, k) for k in changes})


def not_found(spec: DataSpec, key: str, path: str = "data", what: str = "no such file") -> str:
    """The message for a missing input ``key``: the path as written, and for a relative one the
    folder it was read from and the path it resolved to."""
    given, url = spec.given.get(key), getattr(spec, key)
    if given:
        return (f"'{path}.{key}' = {given!r} not found (relative paths in a job file are read from its "
                f"folder {spec.base}; resolved to {url})")
    return f"'{path}.{key}' = {url!r}: {what}"


def infer_format(url: str) -> Optional[str]:
    """The file format named by the suffix of ``url`` (``None`` when it names none)."""
    low = str(url).rstrip("/").lower()
    for suffix, fmt in sorted(_SUFFIXES, key=lambda s: -len(s[0])):
        if low.endswith(suffix):
            return fmt
    return None


def _opt_int(t: Mapping[str, Any], key: str, path: str, lo: int) -> Optional[int]:
    return get(t, key, int, None, path=path, min=lo)


def _synthetic(t: Mapping[str, Any], path: str, kw: dict) -> None:
    kw["d"] = get(t, "d", int, 16, path=path, min=2 if kw["source"] == "sphere" else 1)
    kw["n"] = _opt_int(t, "n", path, 2)
    kw["noise"] = get(t, "noise", float, 0.0, path=path, min=0.0)
    kw["teacher_width"] = get(t, "teacher_width", int, 512, path=path, min=1)
    kw["teacher_depth"] = get(t, "teacher_depth", int, 2, path=path, min=1, max=50)
    if kw["source"] == "sphere":
        kw["target"] = get(t, "target", str, "harmonics", path=path, choices=SPHERE_TARGETS)
        kw["degree"] = get(t, "degree", int, 3, path=path, min=1, max=20)
    if kw["n"] is None and kw["n_train"] is None:
        raise ConfigError(f"source = {kw['source']!r} needs '{path}.n' (points generated) or "
                          f"'{path}.n_train'")
    if kw["n"] is not None:
        ntr, nte = kw["n_train"] or 0, kw["n_test"] or 0
        if ntr + nte > kw["n"] or nte >= kw["n"]:
            raise ConfigError(f"'{path}.n' = {kw['n']} is too small for n_train = {kw['n_train']} "
                              f"plus n_test = {kw['n_test']}; raise '{path}.n' or lower the sizes")


def _file(t: Mapping[str, Any], path: str, kw: dict) -> None:
    kw["path"] = get(t, "path", str, path=path)
    fmt = get(t, "format", str, "auto", path=path, choices=FILE_FORMATS)
    if fmt == "auto":
        fmt = infer_format(kw["path"])
        if fmt is None:
            raise ConfigError(f"cannot tell the format of '{path}.path' = {kw['path']!r} from its suffix; "
                              f"set '{path}.format' to one of: " + ", ".join(FILE_FORMATS[1:]))
    kw["format"] = fmt
    for key in ("y_path", "test_path", "test_y_path", "target"):
        kw[key] = get(t, key, str, None, path=path)
    kw["x_key"] = get(t, "x_key", str, "X", path=path)
    kw["y_key"] = get(t, "y_key", str, "y", path=path)
    cols = get(t, "x_columns", list, None, path=path)
    if cols is not None:
        if not cols or not all(isinstance(c, str) for c in cols):
            raise ConfigError(f"'{path}.x_columns' must be a non-empty array of column names, got {cols!r}")
        kw["x_columns"] = tuple(cols)
    kw["storage_options"] = dict(get(t, "storage_options", dict, {}, path=path))
    only = {"npy": ("y_path", "test_y_path"), "npz": ("x_key", "y_key"), "zarr": ("x_key", "y_key"),
            "csv": ("target", "x_columns"), "parquet": ("target", "x_columns")}
    for key in ("y_path", "test_y_path", "x_key", "y_key", "target", "x_columns"):
        owners = [f for f, keys in only.items() if key in keys]
        if key in t and fmt not in owners:
            raise ConfigError(f"'{path}.{key}' applies to format {' / '.join(owners)} only, "
                              f"not to format {fmt!r}; remove it")
    if fmt == "npy" and kw["y_path"] is None:
        raise ConfigError(f"format 'npy' holds one array: set '{path}.y_path' to the .npy file of the "
                          f"targets ('{path}.path' is X)")
    if fmt == "npy" and (kw["test_path"] is None) != (kw["test_y_path"] is None):
        raise ConfigError(f"format 'npy' with a test file needs both '{path}.test_path' (X) and "
                          f"'{path}.test_y_path' (y)")
    if fmt in ("csv", "parquet") and kw["target"] is None:
        raise ConfigError(f"format {fmt!r} needs '{path}.target', the name of the target column "
                          f"(features: '{path}.x_columns', default all other numeric columns)")
    if kw.get("x_columns") and kw["target"] in kw["x_columns"]:
        raise ConfigError(f"'{path}.x_columns' contains the target column {kw['target']!r}")


def validate_data(table: Mapping[str, Any], path: str = "data") -> DataSpec:
    """Validate a ``[data]`` table (no data is read).

    Parameters
    ----------
    table : mapping
        The parsed TOML table.
    path : str
        Its name in the job file, used in error messages (``data.n_train``).

    Returns
    -------
    DataSpec

    Raises
    ------
    ConfigError
        Unknown key (with a close-match hint), wrong type, value out of range or not among the
        allowed ones, or keys that contradict each other (each message names the key).
    """
    if not isinstance(table, Mapping):
        raise ConfigError(f"[{path}] must be a table, got {type(table).__name__}")
    if "source" not in table:
        raise ConfigError(f"missing required key '{path}.source'; choose one of: "
                          + ", ".join(repr(s) for s in SOURCES))
    source = get(table, "source", str, path=path, choices=SOURCES)
    check_keys(table, _COMMON + _EXTRA[source], path)
    synthetic = source in ("sphere", "teacher-student")
    kw: dict[str, Any] = {
        "source": source,
        "n_train": _opt_int(table, "n_train", path, 1),
        "n_test": _opt_int(table, "n_test", path, 0),
        "test_fraction": get(table, "test_fraction", float, None, path=path, min=0.0),
        "preprocess": get(table, "preprocess", str, "none" if synthetic else "sphere", path=path,
                          choices=PREPROCESS),
        "task": get(table, "task", str, "auto", path=path, choices=TASKS),
        "seed": _opt_int(table, "seed", path, 0),
    }
    if kw["n_train"] == 1:
        raise ConfigError(f"'{path}.n_train' = 1: a kernel fit needs at least 2 training rows (one row "
                          "fits only a constant); use n_train >= 2, or leave it out to use all rows")
    tf = kw["test_fraction"]
    if tf is not None and tf >= 1.0:
        raise ConfigError(f"'{path}.test_fraction' = {tf!r} must be < 1 (the rest is the training pool)")
    if tf is not None and kw["n_test"] is not None:
        raise ConfigError(f"give one of '{path}.n_test' and '{path}.test_fraction', not both")
    if source == "fashion-mnist":
        kw["flip"] = get(table, "flip", bool, False, path=path)
        kw["path"] = get(table, "path", str, None, path=path)
        for key, split in (("n_train", "train"), ("n_test", "test")):
            if kw[key] is not None and kw[key] > FASHION_MNIST_SIZES[split]:
                raise ConfigError(f"'{path}.{key}' = {kw[key]} is larger than the "
                                  f"{FASHION_MNIST_SIZES[split]} rows of the Fashion-MNIST {split} split")
    elif source == "sklearn":
        name = get(table, "name", str, path=path)
        if name in SKLEARN_DOWNLOAD:
            raise ConfigError(f"'{path}.name' = {name!r} is downloaded by sklearn.datasets.fetch_{name} "
                              "at run time, which ntkscale does not do; fetch it once yourself, save "
                              f"X and y with numpy.savez, and use source = 'file'. Bundled (offline): "
                              + ", ".join(SKLEARN_BUNDLED))
        kw["name"] = get(table, "name", str, path=path, choices=tuple(SKLEARN_BUNDLED))
    elif synthetic:
        _synthetic(table, path, kw)
    else:
        _file(table, path, kw)
    if tf is not None and (source == "fashion-mnist" or kw.get("test_path")):
        raise ConfigError(f"'{path}.test_fraction' does not apply: the source has its own test split; "
                          f"use '{path}.n_test' to subset it")
    return DataSpec(**kw)
