"""``estimate_from_config``: the plan of a job (``ntkscale plan JOB.toml``).

The planner reads the parsed :class:`ntkscale.job.config.JobConfig`: one parse, the job
schema's defaults (a TOML document given as a dict is parsed by
:func:`ntkscale.job.config.parse_job` first; only its ``[data]`` table may be missing, when
``n`` and ``d`` are passed). The stages planned are the ones ``ntkscale run`` runs
(:func:`ntkscale.job.registry.active_stages`); each stage's registered ``plan`` hook turns
its config into the keywords of :func:`ntkscale.plan.estimate`, whose cost formulas live in
``costs.py`` / ``solve_costs.py``. A stage without a hook is listed in the plan's notes.

Sizes not known before loading the data: ``n`` from ``data.n_train`` (synthetic sources:
``data.n`` when ``n_train`` is absent; fashion-mnist: 60000, doubled by ``flip``), ``d``
(synthetic: ``data.d``; fashion-mnist and bundled sklearn sets known; file sources: pass
``d=``), ``n_test`` (``data.n_test``; fashion-mnist 10000, else 0), outputs (10 classes for
fashion-mnist / digits, ...; 1 for regression). Workers, threads, GPUs and memory per worker
come from the validated ``[cluster]`` (slurm: ``jobs x processes`` workers of ``cores /
processes`` threads with ``memory / processes``; kubernetes: ``n_workers``).
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Optional

from .._config import ConfigError
from ..job import registry
from ..job.config import JobConfig, parse_job
from ..job.model import build_arch
from ..job.shapes import check_row_width
from ..pipeline import stored_kinds
from .calibrate import Calibration
from .report import Plan

__all__ = ["estimate_from_config", "DATA_WIDTHS", "DATA_OUTPUTS"]

#: Input width of the sources whose width is known before loading.
DATA_WIDTHS = {"fashion-mnist": 784, "digits": 64, "iris": 4, "wine": 13, "breast_cancer": 30,
               "diabetes": 10, "linnerud": 3}
#: Right-hand sides of the solve (one-hot classes, or regression outputs).
DATA_OUTPUTS = {"fashion-mnist": 10, "digits": 10, "iris": 3, "wine": 3, "breast_cancer": 2,
                "diabetes": 1, "linnerud": 3}
#: estimate() keywords of the stages when they are not planned (a hook sets its own).
_OFF = {"fit": False, "n_test": 0, "spectrum_k": 0, "curve_points": 0, "dynamics_times": 0}


def _memory(spec: Any) -> Optional[float]:
    """Bytes per worker: 'auto' → None (LocalCluster's rule), a size, or a fraction of RAM
    (the schema's number); SLURM workers get ``memory / processes`` (dask-jobqueue)."""
    from dask.utils import parse_bytes
    from distributed.system import MEMORY_LIMIT

    if spec.slurm is not None:
        return float(parse_bytes(spec.slurm.memory)) / spec.slurm.processes
    v = spec.memory_limit
    if v == "auto":
        return None
    if isinstance(v, str):
        return float(parse_bytes(v))
    return float(v) * MEMORY_LIMIT if v <= 1 else float(v)


def _cluster(spec: Any) -> dict:
    """The planned cluster from a validated ``[cluster]`` (:class:`ClusterSpec`)."""
    workers, threads, gpus = spec.workers, spec.threads_per_worker, 0
    if spec.slurm is not None:
        gpus = spec.slurm.jobs * spec.slurm.gpus_per_job
    elif spec.kubernetes is not None:
        gpus = workers * spec.kubernetes.gpus
    elif spec.kind == "sync":
        workers, threads = 1, 1
    if workers is None:
        workers = max(1, (os.cpu_count() or 1) // threads)
    return {"workers": int(workers), "threads_per_worker": int(threads), "gpus": int(gpus),
            "memory_per_worker": _memory(spec)}


def _data(spec: Any, n: Optional[int], d: Optional[int], n_test: Optional[int],
          n_outputs: Optional[int]) -> tuple[int, int, int, int]:
    """Sizes from a validated ``[data]`` (:class:`DataSpec`, or None when absent) and the
    keywords that override it."""
    source = spec.source if spec is not None else ""
    key = spec.name if source == "sklearn" else source
    synthetic = source in ("sphere", "teacher-student")
    if n is None:
        n = spec.n_train if spec is not None else None
        if n is None and synthetic:
            n = spec.n
        if n is None and source == "fashion-mnist":
            n = 60000  # the whole training split
        if n is None:
            raise ConfigError("'data.n_train' is needed to plan a job (or pass n=)")
        if source == "fashion-mnist" and spec.flip:
            n *= 2  # flipped copies of the selected training images are appended
    if d is None:
        d = spec.d if synthetic else DATA_WIDTHS.get(str(key))
        if d is None:
            raise ConfigError(f"the input width of data source {source or '(none)'!r} is known only "
                              "after loading: pass d= (or set 'data.d' for synthetic sources)")
    if n_test is None:
        n_test = spec.n_test if spec is not None else None
        if n_test is None:
            n_test = 10000 if source == "fashion-mnist" else 0
    if n_outputs is None:
        task = spec.task if spec is not None else "auto"
        n_outputs = 1 if task == "regression" else DATA_OUTPUTS.get(str(key), 1)
    return int(n), int(d), int(n_test), int(n_outputs)


def _job(cfg: Any) -> JobConfig:
    if isinstance(cfg, JobConfig):
        return cfg
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"a job config must be a JobConfig or a TOML table (dict), got {type(cfg).__name__}")
    return parse_job(cfg, data_optional=True)


def estimate_from_config(cfg: Any, *, n: Optional[int] = None, d: Optional[int] = None,
                         n_test: Optional[int] = None, n_outputs: Optional[int] = None,
                         calibration: Calibration | str | None = None, **overrides: Any) -> Plan:
    """Plan a job from its parsed config.

    Parameters
    ----------
    cfg : ntkscale.job.config.JobConfig or mapping
        A validated job (``load_job`` / ``parse_job``), or a ``tomllib.load`` document,
        validated here by ``parse_job`` (the ``[data]`` table may be missing when ``n`` and
        ``d`` are given).
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
        One row per planned stage (as ``ntkscale run`` runs them); stages without a cost
        model are named in ``Plan.notes``.

    Raises
    ------
    ConfigError
        An invalid job (the message names the key), ``n`` / ``d`` unknown (it says which
        to pass), or ``d`` not the row width the ``[model]`` shape reads.
    """
    from .estimate import estimate

    job = _job(cfg)
    n, d, n_test, n_outputs = _data(job.data, n, d, n_test, n_outputs)
    check_row_width(job.model, d, "the planned data")  # before any calibration
    sizes = registry.PlanSizes(n=n, d=d, n_test=n_test, n_outputs=n_outputs, arch=build_arch(job.model))
    k = job.kernel
    kw: dict[str, Any] = dict(
        _OFF, kinds=stored_kinds(k["kind"], k["store_nngp"]),
        store_dtype=k["dtype"], tile=k["tile"] or None, n_outputs=n_outputs, calibration=calibration,
        **_cluster(job.cluster))
    unplanned = []
    for name in registry.active_stages(job):
        stage = registry.get_stage(name)
        if stage.plan is None:
            unplanned.append(name)
        else:
            kw.update(stage.plan(job, sizes))
    kw.update(overrides)
    plan = estimate(n, d, sizes.arch, **kw)
    if unplanned:
        from dataclasses import replace

        plan = replace(plan, notes=plan.notes + (f"not estimated (no cost model): {', '.join(unplanned)}",))
    return plan
