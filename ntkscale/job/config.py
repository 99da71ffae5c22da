"""The job file: a TOML document with one table per part of the analysis.

Schema (every key optional unless marked; defaults shown)::

    [job]
    name = "ntkscale-job"
    out = "runs/<name>"          # run directory: store, metrics.json, report.md, figures/
    seed = 0
    stages = ["gram", "fit", "predict", "spectrum", "curve"]   # + "dynamics"

    [data]       # see ntkscale.data.validate_data (source = fashion-mnist | sklearn | sphere | ...)
    [cluster]    # see ntkscale.clusters.validate_cluster (kind = local | address | slurm | ...)

    [model]                       # fully connected network (neural-tangents stax conventions)
    depth = 3                     # hidden layers
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
    jitter = false

    [spectrum]
    enabled = true
    k = 200                       # top eigenpairs (randomized Nyström + power steps)
    power_iters = 2
    fit_window = [2, 0]           # power-law fit ranks [kmin, kmax] (0: k // 2)

    [curve]
    enabled = true
    p = []                        # training sizes (default: 8 log-spaced sizes up to n/2)
    trials = 5
    n_test = 0                    # held-out pool points per trial (0: n - max p, at most 2000)
    noise_std = 0.0

    [dynamics]
    enabled = false
    t = []                        # times (default: 30 log-spaced, 1e-2 .. 1e6 x N/λmax)
    learning_rate = 0.0           # > 0: discrete gradient descent, steps = t / learning_rate
                                  # (Lanczos on the stored Gram: no eigendecomposition)

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
from ..solvers.api import SOLVERS as _SOLVERS

__all__ = ["JobConfig", "load_job", "parse_job", "STAGES", "ACTIVATIONS"]

STAGES = ("gram", "fit", "predict", "spectrum", "curve", "dynamics")
ACTIVATIONS = tuple(_registry.ACTIVATIONS)  # one list: ntkscale/kernels/registry.py
SOLVER_METHODS = _SOLVERS  # one list: ntkscale/solvers/api.py
_TOP = ("job", "data", "cluster", "model", "kernel", "solver", "spectrum", "curve", "dynamics")


@dataclass(frozen=True)
class JobConfig:
    """A validated job: every section resolved to its defaults.

    Attributes
    ----------
    job, model, kernel, solver, spectrum, curve, dynamics : dict
        Resolved sections (plain TOML values).
    data : DataSpec
        From :func:`ntkscale.data.validate_data`.
    cluster : ClusterSpec
        From :func:`ntkscale.clusters.validate_cluster` (environment overrides applied).
    raw : dict
        The document as given.
    source : str or None
        Path of the job file.
    """

    job: dict
    model: dict
    kernel: dict
    solver: dict
    spectrum: dict
    curve: dict
    dynamics: dict
    data: Any
    cluster: Any
    raw: dict = field(repr=False)
    source: Optional[str] = None

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
                "solver": self.solver, "spectrum": self.spectrum, "curve": self.curve,
                "dynamics": self.dynamics}


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
    stages = get(t, "stages", list, ["gram", "fit", "predict", "spectrum", "curve"], path="job")
    for s in stages:
        if s not in STAGES:
            raise ConfigError(f"'job.stages' contains {s!r}; allowed stages: {', '.join(STAGES)}")
    return {"name": name, "out": get(t, "out", str, os.path.join("runs", name), path="job"),
            "seed": get(t, "seed", int, 0, path="job", min=0), "stages": list(stages)}


def _model(t: dict) -> dict:
    check_keys(t, ("depth", "width", "activation", "W_std", "b_std", "parameterization"), "model")
    return {"depth": get(t, "depth", int, 3, path="model", min=1, max=100),
            "width": get(t, "width", int, 512, path="model", min=1),
            "activation": get(t, "activation", str, "relu", path="model", choices=ACTIVATIONS),
            "W_std": get(t, "W_std", float, 2 ** 0.5, path="model", min=0, min_exclusive=True),
            "b_std": get(t, "b_std", float, 0.1, path="model", min=0),
            "parameterization": get(t, "parameterization", str, "ntk", path="model",
                                    choices=("ntk", "standard"))}


def _kernel(t: dict) -> dict:
    from ..tiling.device import DEVICES

    check_keys(t, ("kind", "store", "dtype", "tile", "store_nngp", "device"), "kernel")
    return {"kind": get(t, "kind", str, "ntk", path="kernel", choices=("ntk", "nngp")),
            "store": get(t, "store", str, "", path="kernel"),
            "dtype": get(t, "dtype", str, "float32", path="kernel", choices=("float32", "float64")),
            "tile": get(t, "tile", int, 0, path="kernel", min=0),
            "store_nngp": get(t, "store_nngp", bool, False, path="kernel"),
            "device": get(t, "device", str, "cpu", path="kernel", choices=DEVICES)}


def _solver(t: dict) -> dict:
    check_keys(t, ("method", "ridge", "relative_ridge", "tol", "maxiter", "pcg_rank", "jitter",
                   "ridge_grid", "ridge_subsample", "ridge_select"), "solver")
    ridge = get(t, "ridge", (float, str), 1e-3, path="solver")
    if isinstance(ridge, str) and ridge not in ("gcv", "loo"):
        raise ConfigError(f"'solver.ridge' = {ridge!r}: use a number >= 0, 'gcv' or 'loo'")
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
            "jitter": get(t, "jitter", bool, False, path="solver"),
            "ridge_grid": grid,
            "ridge_subsample": _subsample(t),
            "ridge_select": get(t, "ridge_select", str, "min", path="solver", choices=("min", "1se"))}


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


def _spectrum(t: dict) -> dict:
    check_keys(t, ("enabled", "k", "power_iters", "fit_window"), "spectrum")
    win = get(t, "fit_window", list, [2, 0], path="spectrum")
    if len(win) != 2 or any(not isinstance(w, int) or isinstance(w, bool) or w < 0 for w in win):
        raise ConfigError("'spectrum.fit_window' must be two integers [kmin, kmax] (kmax 0: k // 2)")
    return {"enabled": get(t, "enabled", bool, True, path="spectrum"),
            "k": get(t, "k", int, 200, path="spectrum", min=2),
            "power_iters": get(t, "power_iters", int, 2, path="spectrum", min=0, max=20),
            "fit_window": list(win)}


def _int_list(t: dict, key: str, path: str) -> list:
    vals = get(t, key, list, [], path=path)
    if any(not isinstance(v, (int, float)) or isinstance(v, bool) or v <= 0 for v in vals):
        raise ConfigError(f"'{path}.{key}' must be a list of positive numbers")
    return vals


def _curve(t: dict) -> dict:
    check_keys(t, ("enabled", "p", "trials", "n_test", "noise_std"), "curve")
    p = _int_list(t, "p", "curve")
    if any(int(v) != v for v in p):
        raise ConfigError("'curve.p' must be a list of integers (training-set sizes)")
    return {"enabled": get(t, "enabled", bool, True, path="curve"), "p": [int(v) for v in p],
            "trials": get(t, "trials", int, 5, path="curve", min=2),
            "n_test": get(t, "n_test", int, 0, path="curve", min=0),
            "noise_std": get(t, "noise_std", float, 0.0, path="curve", min=0)}


def _dynamics(t: dict) -> dict:
    check_keys(t, ("enabled", "t", "learning_rate"), "dynamics")
    return {"enabled": get(t, "enabled", bool, False, path="dynamics"),
            "t": [float(v) for v in _int_list(t, "t", "dynamics")],
            "learning_rate": get(t, "learning_rate", float, 0.0, path="dynamics", min=0)}


def parse_job(doc: Mapping[str, Any], *, source: Optional[str] = None,
              environ: Optional[Mapping[str, str]] = None) -> JobConfig:
    """Validate a parsed job document (all sections, before any data is loaded)."""
    from ..clusters import validate_cluster
    from ..data import validate_data

    if not isinstance(doc, Mapping):
        raise ConfigError(f"a job must be a TOML table, got {type(doc).__name__}")
    check_keys(doc, _TOP, "")
    job = _job(section(doc, "job"))
    dyn = _dynamics(section(doc, "dynamics"))
    if dyn["enabled"] and "dynamics" not in job["stages"]:
        job["stages"].append("dynamics")
    env = os.environ if environ is None else environ
    return JobConfig(job=job, model=_model(section(doc, "model")),
                     kernel=_kernel(section(doc, "kernel")), solver=_solver(section(doc, "solver")),
                     spectrum=_spectrum(section(doc, "spectrum")), curve=_curve(section(doc, "curve")),
                     dynamics=dyn, data=validate_data(section(doc, "data"), path="data"),
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
    if out is not None:
        doc.setdefault("job", {})["out"] = out
    return parse_job(doc, source=os.path.abspath(path), environ=environ)
