"""The job file: a TOML document with one table per part of the analysis.

Schema (every key optional unless marked; defaults shown)::

    [job]
    name = "ntkscale-job"
    out = "runs/<name>"          # run directory: store, metrics.json, report.md, figures/
    seed = 0
    stages = ["gram", "fit", "predict", "spectrum", "curve"]   # + "dynamics", "export"
                                 # (ntkscale.job.registry: one list of stages)

    [data]       # see ntkscale.data.validate_data (source = fashion-mnist | sklearn | sphere | ...)
    [cluster]    # see ntkscale.clusters.validate_cluster (kind = local | address | slurm | ...)

    [model]                       # network (neural-tangents stax conventions): architecture =
                                  # fc | cntk (conv + Flatten) | myrtle (conv + pooling) |
                                  # transformer (attention + LayerNorm + MLP residual blocks;
                                  # heads, attention = softmax | identity | abs | relu,
                                  # readout = pool | flatten; kernels.transformer)
    image_shape = []              # cntk | myrtle | transformer: exactly one of the two shapes.
    sequence_shape = []           # [H, W, C]: rows are flattened NHWC images, 2-d windows;
                                  # [T, C]: rows are flattened sequences (T positions x C
                                  # channels, position-major), 1-d windows (Unflatten(1, T, C)).
                                  # Row width must be H*W*C or T*C (checked on the loaded data,
                                  # before any work; job/shapes.py)
    filter = 3                    # cntk: window (filter x filter on images, filter taps on
                                  # sequences); myrtle: always 3 (x 3), pooling 2 (x 2), stride 2
    padding = "SAME"              # cntk: SAME | VALID | CIRCULAR (VALID must keep a position:
                                  # depth x (filter - 1) < each length); myrtle: always SAME
    depth = 3                     # hidden layers (cntk: conv layers, default 2; myrtle: 5 | 7 |
                                  # 10; transformer: blocks, default 2)
    width = 512                   # finite width (only for finite-network features)
    activation = "relu"           # relu | erf | gelu | abs | leaky_relu | sin | cos | identity
    W_std = 1.4142135623730951
    b_std = 0.1
    parameterization = "ntk"      # ntk | standard

    [kernel]
    kind = "ntk"                  # ntk | nngp (the kernel that is fitted)
    store = ""                    # Gram store URL (default <out>/gram.zarr); any fsspec URL
    dtype = "float32"             # storage dtype: float32 | float64 (computed in float64)
    tile = 0                      # tile edge (0: from the worker memory budget)
    store_nngp = false            # also store the NNGP Gram (posterior std of the NTK-GP)
    overwrite = false             # replace a Gram store (and factor stores) built by ntkscale
                                  # from other data or settings (CLI: --overwrite); without it
                                  # such a store is refused. Never replaces anything else: a
                                  # store location must be new, empty or an ntkscale store
    device = "cpu"                # where tiles are computed: cpu | cuda | auto (cuda when the
                                  # workers see a GPU); also cupy | jax | jax-cpu to force a
                                  # library (ntkscale.tiling.device). cuda on a local cluster:
                                  # one worker per GPU. Not part of store compatibility.

    [solver]
    method = "auto"               # auto | cholesky | cholesky-f32 | pcg | eigh | cg
    ridge = 1e-3                  # number >= 0, or "gcv" | "loo"
    ridge_subsample = 0           # gcv/loo on a random sub-block of this many points, the
                                  # absolute ridge kept at full n (0: all n up to 12000, else 8192)
    ridge_select = "min"          # min | 1se: the minimizer, or the largest ridge within one
                                  # standard error of the minimum (where the curve is flat)
    relative_ridge = true         # ridge x mean(diag K) (neural-tangents' diag_reg)
    tol = 1e-8
    maxiter = 1000
    pcg_rank = 1000
    preconditioner = "auto"       # PCG's: auto (rpcholesky where the store computes columns
                                  # from its inputs, as the job's stores do; else nystrom) |
                                  # nystrom (sketch, 1 pass over the Gram) | rpcholesky
                                  # (randomly pivoted Cholesky from ~pcg_rank kernel columns
                                  # computed from the inputs, no pass)
    jitter = false
    factor_store = ""             # tiled Cholesky factor URL (default: beside the Gram store,
                                  # keyed by kernel kind, dtype and ridge:
                                  # <store>-chol-ntk-float32-ridge0.046-<hash>)

    # stage sections ([spectrum], [curve], [dynamics], [export], ...): each stage owns its
    # table; schemas in ntkscale/job/builtin_stages.py and the stage's module (registry.py)

Validation errors name the key and the allowed values (:class:`ntkscale._config.ConfigError`).
"""

from __future__ import annotations

import copy
import os
import tomllib
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from .._config import ConfigError, check_keys, get, section
from ..errors import InvalidRidgeError
from ..kernels import registry as _registry
from ..linop import check_ridge
from ..pipeline import KINDS as _KINDS, RIDGE_RULES as _RIDGE_RULES
from ..solvers.api import PRECONDITIONERS, SOLVERS as _SOLVERS
from . import registry as _stages
from .shapes import check_windows, parse_shapes

__all__ = ["JobConfig", "load_job", "parse_job", "STAGES", "ACTIVATIONS"]

ACTIVATIONS = tuple(_registry.ACTIVATIONS)  # at import; the schema reads kernels/registry.py at parse time
SOLVER_METHODS = _SOLVERS  # one list: ntkscale/solvers/api.py
_SHARED = _stages.SHARED_SECTIONS  # + each stage's own section (registry.stage_sections)
_MIN_TILE = 16  # smallest explicit [kernel] tile (the library's check_tile bounds the task count)


def __getattr__(name: str) -> Any:
    if name == "STAGES":  # every stage, in run order (read from the registry, not listed here)
        return _stages.stage_names()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class JobConfig:
    """A validated job: every section resolved to its defaults.

    Attributes
    ----------
    job, model, kernel, solver : dict
        Resolved shared sections (plain TOML values).
    data : DataSpec or None
        From :func:`ntkscale.data.validate_data` (None only from ``parse_job(...,
        data_optional=True)`` of a document without ``[data]``).
    cluster : ClusterSpec
        From :func:`ntkscale.clusters.validate_cluster` (environment overrides applied).
    sections : dict
        Each stage's own section, resolved by its ``parse`` (``cfg.sections["spectrum"]``;
        also readable as ``cfg.spectrum``), in registry order.
    raw : dict
        The document as given.
    source : str or None
        Path of the job file.
    """

    job: dict
    model: dict
    kernel: dict
    solver: dict
    data: Any
    cluster: Any
    sections: dict = field(default_factory=dict)
    raw: dict = field(default_factory=dict, repr=False)
    source: Optional[str] = None

    def __getattr__(self, name: str) -> Any:
        sections = self.__dict__.get("sections", {})
        if name in sections:  # cfg.spectrum, cfg.export, ...: a stage's section
            return sections[name]
        raise AttributeError(f"{type(self).__name__!r} has no attribute {name!r}")

    @property
    def out(self) -> str:
        return self.job["out"]

    @property
    def store(self) -> str:
        return self.kernel["store"] or os.path.join(self.out, "gram.zarr")

    def resolved(self) -> dict:
        """The resolved configuration as plain data (written to the run directory)."""
        return {"job": self.job, "data": to_plain(self.data), "cluster": to_plain(self.cluster),
                "model": self.model, "kernel": {**self.kernel, "store": self.store},
                "solver": self.solver, **self.sections}


def to_plain(x: Any) -> Any:
    """JSON-able copy: dataclasses and mappings to dicts, numpy to Python, tuples to lists,
    non-finite floats to strings."""
    import numpy as np
    from dataclasses import asdict, is_dataclass

    if is_dataclass(x) and not isinstance(x, type):
        return to_plain(asdict(x))
    if isinstance(x, Mapping):
        return {str(k): to_plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_plain(v) for v in x]
    if isinstance(x, np.ndarray):
        return to_plain(x.tolist())
    if isinstance(x, np.generic):
        return to_plain(x.item())
    if isinstance(x, float) and not np.isfinite(x):
        return str(x)
    return x


def _job(t: dict) -> dict:
    check_keys(t, ("name", "out", "seed", "stages"), "job")
    name = get(t, "name", str, "ntkscale-job", path="job")
    stages = get(t, "stages", list, _stages.default_stages(), path="job")
    names = _stages.stage_names()
    for s in stages:
        if s not in names:
            raise ConfigError(f"'job.stages' contains {s!r}; allowed stages: {', '.join(names)}")
    return {"name": name, "out": get(t, "out", str, os.path.join("runs", name), path="job"),
            "seed": get(t, "seed", int, 0, path="job", min=0), "stages": list(stages)}


def _model(t: dict) -> dict:
    check_keys(t, ("architecture", "depth", "width", "activation", "W_std", "b_std",
                   "parameterization", "image_shape", "filter", "padding", "sequence_shape", "heads",
                   "attention", "readout"), "model")
    arch = get(t, "architecture", str, "fc", path="model", choices=("fc", "cntk", "myrtle", "transformer"))
    shape, seq = parse_shapes(t, arch)
    depth = get(t, "depth", int, {"fc": 3, "cntk": 2, "myrtle": 5, "transformer": 2}[arch], path="model",
                min=1, max=100)
    if arch == "myrtle" and depth not in (5, 7, 10):
        raise ConfigError(f"'model.depth' = {depth} for architecture = 'myrtle': use 5, 7 or 10")
    model = {"architecture": arch, "image_shape": list(shape), "sequence_shape": list(seq),
              "filter": get(t, "filter", int, 3, path="model", min=1),
              "padding": get(t, "padding", str, "SAME", path="model", choices=("SAME", "VALID", "CIRCULAR")),
              "depth": depth,
              "width": get(t, "width", int, 512, path="model", min=1),
              "activation": get(t, "activation", str, "relu", path="model", choices=tuple(_registry.ACTIVATIONS)),
              "W_std": get(t, "W_std", float, 2 ** 0.5, path="model", min=0, min_exclusive=True),
              "b_std": get(t, "b_std", float, 0.1, path="model", min=0),
              "parameterization": get(t, "parameterization", str, "ntk", path="model",
                                      choices=("ntk", "standard")),
              "heads": get(t, "heads", int, 1, path="model", min=1, max=64),
              "attention": get(t, "attention", str, "softmax", path="model",
                               choices=("softmax", "identity", "abs", "relu")),
              "readout": get(t, "readout", str, "pool", path="model", choices=("pool", "flatten"))}
    check_windows(model)
    return model


def _kernel(t: dict) -> dict:
    from ..tiling.device import DEVICES

    check_keys(t, ("kind", "store", "dtype", "tile", "store_nngp", "device", "overwrite"), "kernel")
    tile = get(t, "tile", int, 0, path="kernel", min=0)
    if 0 < tile < _MIN_TILE:
        raise ConfigError(f"'kernel.tile' = {tile}: use 0 (automatic, from the worker memory) or a tile of at "
                          f"least {_MIN_TILE} (tiny tiles make millions of tasks)")
    return {"kind": get(t, "kind", str, "ntk", path="kernel", choices=_KINDS),
            "store": get(t, "store", str, "", path="kernel"),
            "dtype": get(t, "dtype", str, "float32", path="kernel", choices=("float32", "float64")),
            "tile": tile,
            "store_nngp": get(t, "store_nngp", bool, False, path="kernel"),
            "overwrite": get(t, "overwrite", bool, False, path="kernel"),
            "device": get(t, "device", str, "cpu", path="kernel", choices=DEVICES)}


def _solver(t: dict) -> dict:
    check_keys(t, ("method", "ridge", "relative_ridge", "tol", "maxiter", "pcg_rank", "preconditioner", "jitter",
                   "ridge_grid", "ridge_subsample", "ridge_select", "factor_store"), "solver")
    ridge = get(t, "ridge", (float, str), 1e-3, path="solver")
    if isinstance(ridge, str) and ridge not in _RIDGE_RULES:
        raise ConfigError(f"'solver.ridge' = {ridge!r}: use a number >= 0, "
                          f"{' or '.join(repr(r) for r in _RIDGE_RULES)}")
    if not isinstance(ridge, str):
        ridge = _ridge(ridge, "solver.ridge")
    grid = get(t, "ridge_grid", list, [], path="solver")
    grid = [_ridge(g, f"solver.ridge_grid[{k}]") for k, g in enumerate(grid)]
    return {"method": get(t, "method", str, "auto", path="solver", choices=SOLVER_METHODS),
            "ridge": ridge,
            "relative_ridge": get(t, "relative_ridge", bool, True, path="solver"),
            "tol": get(t, "tol", float, 1e-8, path="solver", min=0, min_exclusive=True, max=1),
            "maxiter": get(t, "maxiter", int, 1000, path="solver", min=1),
            "pcg_rank": get(t, "pcg_rank", int, 1000, path="solver", min=1),
            "preconditioner": get(t, "preconditioner", str, "auto", path="solver",
                                  choices=PRECONDITIONERS),
            "jitter": get(t, "jitter", bool, False, path="solver"),
            "ridge_grid": grid,
            "ridge_subsample": _subsample(t),
            "ridge_select": get(t, "ridge_select", str, "min", path="solver", choices=("min", "1se")),
            "factor_store": get(t, "factor_store", str, "", path="solver")}


def _ridge(value: Any, key: str) -> float:
    """:func:`ntkscale.linop.check_ridge` (the one ridge check) as a ConfigError naming ``key``."""
    try:
        return check_ridge(value, f"'{key}'")
    except InvalidRidgeError as e:
        raise ConfigError(str(e)) from None


def _subsample(t: dict) -> int:
    m = get(t, "ridge_subsample", int, 0, path="solver", min=0)
    if m == 1:
        raise ConfigError("'solver.ridge_subsample' = 1: use 0 (automatic) or at least 2 points")
    return m


def parse_job(doc: Mapping[str, Any], *, source: Optional[str] = None,
              environ: Optional[Mapping[str, str]] = None, data_optional: bool = False) -> JobConfig:
    """Validate a parsed job document (all sections, before any data is loaded).

    ``data_optional``: a document without a ``[data]`` table gives ``data = None`` instead of
    an error (the planner, given the sizes, needs no data source). With ``source`` (the job
    file's path), relative ``[data]`` input paths are read from the job file's folder
    (:func:`ntkscale.data.spec.resolve_paths`); without it, from the current directory.
    Output paths (``job.out``, ``kernel.store``) are not changed here.
    """
    from ..clusters import validate_cluster
    from ..data.spec import resolve_paths, validate_data

    if not isinstance(doc, Mapping):
        raise ConfigError(f"a job must be a TOML table, got {type(doc).__name__}")
    owned = _stages.stage_sections()
    check_keys(doc, _SHARED + tuple(owned), "")
    job = _job(section(doc, "job"))
    sections = {name: st.parse(section(doc, name)) for name, st in owned.items()}
    for name, st in owned.items():  # an optional stage switched on by its section
        if not st.default and sections[name].get("enabled") and st.name not in job["stages"]:
            job["stages"].append(st.name)
    env = os.environ if environ is None else environ
    data = None if data_optional and "data" not in doc else validate_data(section(doc, "data"), path="data")
    if data is not None and source is not None:  # relative input paths: from the job file's folder
        data = resolve_paths(data, os.path.dirname(os.path.abspath(source)))
    return JobConfig(job=job, model=_model(section(doc, "model")),
                     kernel=_kernel(section(doc, "kernel")), solver=_solver(section(doc, "solver")),
                     sections=sections,
                     data=data,
                     cluster=validate_cluster(section(doc, "cluster"), path="cluster", environ=env),
                     raw=copy.deepcopy(dict(doc)), source=source)


def load_job(path: str, *, out: Optional[str] = None,
             environ: Optional[Mapping[str, str]] = None) -> JobConfig:
    """Read and validate a TOML job file; ``out`` overrides ``job.out``."""
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"job file {path!r} not found") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: byte {e.object[e.start:e.start + 1]!r} at offset "
                          f"{e.start} is not UTF-8; save the job file as UTF-8") from None
    except IsADirectoryError:
        raise ConfigError(f"job file {path!r} is a folder; name the .toml file") from None
    if out is not None:
        if not isinstance(doc.get("job", {}), dict):
            section(doc, "job")  # the ConfigError: '[job]' must be a table
        doc.setdefault("job", {})["out"] = out
    return parse_job(doc, source=os.path.abspath(path), environ=environ)
