"""``estimate_from_config``: the plan of a job file (``ntkscale plan JOB.toml``).

Only the keys that size the job are read; every section may be missing. Defaults are the
job schema's (:mod:`ntkscale.job.config`)::

    [job]      stages = ["gram", "fit", "predict", "spectrum", "curve"]
    [data]     n_train (required unless n= is given; fashion-mnist: 60000), n_test
               (fashion-mnist: 10000, else 0),
               d (sphere / teacher-student: 16; fashion-mnist 784; bundled sklearn sets known;
               file sources: pass d=), flip = false (fashion-mnist: doubles n_train),
               task = "auto" (outputs: 10 classes for fashion-mnist / digits, ...)
    [model]    depth = 3, width = 512, activation = "relu", W_std = √2, b_std = 0.1,
               parameterization = "ntk"
    [kernel]   kind = "ntk", dtype = "float32", tile = 0 (auto), store_nngp = false
    [solver]   method = "auto", ridge = 1e-3, relative_ridge = true, tol = 1e-8,
               maxiter = 1000, pcg_rank = 1000   (ridge "gcv"/"loo": a dense eigh first)
    [spectrum] enabled = true, k = 200, power_iters = 2
    [curve]    enabled = true, p = [] (8 log-spaced sizes), trials = 5, n_test = 0
    [cluster]  workers (local: cores; slurm: jobs x processes; kubernetes: n_workers),
               threads_per_worker = 1, memory_limit = "auto" (per worker, e.g. "4GiB"),
               slurm.gpus_per_job / kubernetes.gpus → GPU workers

Full validation of a job file is :func:`ntkscale.job.config.parse_job`'s; this reader only
type-checks what it uses (errors name the key).
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Optional

from .._config import ConfigError, get
from .calibrate import Calibration
from .report import Plan

__all__ = ["estimate_from_config", "DATA_WIDTHS", "DATA_OUTPUTS"]

#: Input width of the sources whose width is known before loading.
DATA_WIDTHS = {"fashion-mnist": 784, "digits": 64, "iris": 4, "wine": 13, "breast_cancer": 30,
               "diabetes": 10, "linnerud": 3}
#: Right-hand sides of the solve (one-hot classes, or regression outputs).
DATA_OUTPUTS = {"fashion-mnist": 10, "digits": 10, "iris": 3, "wine": 3, "breast_cancer": 2,
                "diabetes": 1, "linnerud": 3}
_STAGES = ["gram", "fit", "predict", "spectrum", "curve"]


def _table(cfg: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    v = cfg.get(key) or {}
    if not isinstance(v, Mapping):
        raise ConfigError(f"'{key}' must be a table ([{key}]), got {type(v).__name__}")
    return v


def _memory(v: Any) -> Optional[float]:
    """'auto' → None (LocalCluster's rule); '4GiB' / bytes / fraction of RAM → bytes."""
    if v is None or v == "auto":
        return None
    if isinstance(v, str):
        from dask.utils import parse_bytes

        try:
            return float(parse_bytes(v))
        except ValueError:
            raise ConfigError(f"'cluster.memory_limit' = {v!r} is not a size such as '4GiB'") from None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
        raise ConfigError(f"'cluster.memory_limit' must be 'auto', a size or a number > 0, got {v!r}")
    if v <= 1:
        from distributed.system import MEMORY_LIMIT

        return float(v) * MEMORY_LIMIT
    return float(v)


def _cluster(c: Mapping[str, Any]) -> dict:
    kind = get(c, "kind", str, "local", path="cluster")
    threads = get(c, "threads_per_worker", int, 1, path="cluster", min=1)
    workers = get(c, "workers", (int, type(None)), None, path="cluster")
    gpus = 0
    sl, k8 = c.get("slurm") or {}, c.get("kubernetes") or {}
    if kind == "slurm":
        jobs = get(sl, "jobs", int, 1, path="cluster.slurm", min=1)
        workers = workers or jobs * get(sl, "processes", int, 1, path="cluster.slurm", min=1)
        gpus = jobs * get(sl, "gpus_per_job", int, 0, path="cluster.slurm", min=0)
    elif kind == "kubernetes":
        workers = workers or get(k8, "n_workers", int, 1, path="cluster.kubernetes", min=1)
        gpus = workers * get(k8, "gpus", int, 0, path="cluster.kubernetes", min=0)
    elif kind == "sync":
        workers, threads = 1, 1
    if workers is None:
        workers = max(1, (os.cpu_count() or 1) // threads)
    return {"workers": int(workers), "threads_per_worker": threads, "gpus": gpus,
            "memory_per_worker": _memory(c.get("memory_limit", "auto"))}


def _data(t: Mapping[str, Any], n: Optional[int], d: Optional[int], n_test: Optional[int],
          n_outputs: Optional[int]) -> tuple[int, int, int, int]:
    source = get(t, "source", str, "", path="data")
    key = t.get("name") if source == "sklearn" else source
    if n is None:
        n = get(t, "n_train", (int, type(None)), None, path="data")
        if n is None and source in ("sphere", "teacher-student"):
            n = get(t, "n", (int, type(None)), None, path="data")
        if n is None and source == "fashion-mnist":
            n = 60000  # the whole training split
        if n is None:
            raise ConfigError("'data.n_train' is needed to plan a job (or pass n=)")
        if source == "fashion-mnist" and get(t, "flip", bool, False, path="data"):
            n *= 2  # flipped copies of the selected training images are appended
    if d is None:
        d = t.get("d") if source in ("sphere", "teacher-student") else DATA_WIDTHS.get(str(key))
        if d is None and source in ("sphere", "teacher-student"):
            d = 16
        if d is None:
            raise ConfigError(f"the input width of data source {source or '(none)'!r} is known only "
                              "after loading: pass d= (or set 'data.d' for synthetic sources)")
    if n_test is None:
        n_test = get(t, "n_test", (int, type(None)), None, path="data")
        if n_test is None:
            n_test = 10000 if source == "fashion-mnist" else 0
    if n_outputs is None:
        task = get(t, "task", str, "auto", path="data")
        n_outputs = 1 if task == "regression" else DATA_OUTPUTS.get(str(key), 1)
    return int(n), int(d), int(n_test), int(n_outputs)


def estimate_from_config(cfg: Any, *, n: Optional[int] = None, d: Optional[int] = None,
                         n_test: Optional[int] = None, n_outputs: Optional[int] = None,
                         calibration: Calibration | str | None = None, **overrides: Any) -> Plan:
    """Plan a job from its parsed TOML document (or a ``JobConfig``).

    Parameters
    ----------
    cfg : mapping or ntkscale.job.config.JobConfig
        ``tomllib.load`` output (sections as in the module docstring; all optional) or a
        validated job (its ``.resolved()`` sections are read).
    n, d, n_test, n_outputs : int, optional
        Known after loading the data: training rows, input width, test rows, outputs C.
        They override the ``[data]`` section.
    calibration : Calibration, str or None
        Passed to :func:`ntkscale.plan.estimate` (None: calibrate now).
    **overrides
        Any other keyword of :func:`ntkscale.plan.estimate` (e.g. ``client_memory``).

    Returns
    -------
    Plan

    Raises
    ------
    ConfigError
        A key of the wrong type, or ``n`` / ``d`` unknown (the message says which to pass).
    """
    from .estimate import estimate

    if hasattr(cfg, "resolved"):
        cfg = cfg.resolved()
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"a job config must be a TOML table (dict), got {type(cfg).__name__}")
    job, data = _table(cfg, "job"), _table(cfg, "data")
    model, kernel, solver = _table(cfg, "model"), _table(cfg, "kernel"), _table(cfg, "solver")
    spectrum, curve = _table(cfg, "spectrum"), _table(cfg, "curve")
    dyn = _table(cfg, "dynamics")
    stages = list(get(job, "stages", list, _STAGES, path="job"))
    if get(dyn, "enabled", bool, False, path="dynamics") and "dynamics" not in stages:
        stages.append("dynamics")
    n, d, n_test, n_outputs = _data(data, n, d, n_test, n_outputs)

    from ..job.model import build_arch
    from ..pipeline import stored_kinds

    arch = build_arch({"depth": get(model, "depth", int, 3, path="model", min=1),
                       "width": get(model, "width", int, 512, path="model", min=1),
                       "activation": get(model, "activation", str, "relu", path="model"),
                       "W_std": get(model, "W_std", float, 2 ** 0.5, path="model"),
                       "b_std": get(model, "b_std", float, 0.1, path="model", min=0),
                       "parameterization": get(model, "parameterization", str, "ntk", path="model")})
    kind = get(kernel, "kind", str, "ntk", path="kernel", choices=("ntk", "nngp"))
    store_nngp = get(kernel, "store_nngp", bool, False, path="kernel")
    kinds = stored_kinds(kind, store_nngp)
    ridge = get(solver, "ridge", (float, str), 1e-3, path="solver")
    selection = isinstance(ridge, str)
    ridge_rel = 1e-3 if selection else float(ridge)
    if not selection and not get(solver, "relative_ridge", bool, True, path="solver"):
        ridge_rel = ridge_rel / _mean_diag(arch, d, kind)  # absolute → relative (unit-variance inputs)
    curve_on = "curve" in stages and get(curve, "enabled", bool, True, path="curve")
    p = get(curve, "p", list, [], path="curve")
    spec_on = "spectrum" in stages and get(spectrum, "enabled", bool, True, path="spectrum")
    kw: dict[str, Any] = dict(
        n_test=n_test if "predict" in stages else 0, kinds=kinds,
        store_dtype=get(kernel, "dtype", str, "float32", path="kernel", choices=("float32", "float64")),
        tile=get(kernel, "tile", int, 0, path="kernel", min=0) or None,
        solver=get(solver, "method", str, "auto", path="solver"), ridge_relative=ridge_rel,
        ridge_selection=selection,
        ridge_subsample=get(solver, "ridge_subsample", int, 0, path="solver", min=0) or None,
        pcg_rank=get(solver, "pcg_rank", int, 1000, path="solver", min=1),
        tol=get(solver, "tol", float, 1e-8, path="solver", min=0, min_exclusive=True),
        maxiter=get(solver, "maxiter", int, 1000, path="solver", min=1),
        spectrum_k=min(get(spectrum, "k", int, 200, path="spectrum", min=1), n - 1) if spec_on else 0,
        power_iters=get(spectrum, "power_iters", int, 2, path="spectrum", min=0),
        curve_points=(p or 8) if curve_on else 0,
        curve_trials=get(curve, "trials", int, 5, path="curve", min=1),
        curve_n_test=get(curve, "n_test", int, 0, path="curve", min=0) or None,
        n_outputs=n_outputs, fit="fit" in stages, calibration=calibration,
        dynamics_times=(len(get(dyn, "t", list, [], path="dynamics")) or 30) if "dynamics" in stages else 0,
        **_cluster(_table(cfg, "cluster")))
    kw.update(overrides)
    return estimate(n, d, arch, **kw)


def _mean_diag(arch: Any, d: int, kind: str) -> float:
    """Kernel diagonal at an input with ``|x|²/d = 1`` (what sphere preprocessing gives)."""
    import numpy as np

    from ..kernels import diag_stats

    st = diag_stats(arch, np.ones((1, d)), dtype=np.float64)
    return float(np.asarray(st.ntk if kind == "ntk" else st.nngp)[0])
