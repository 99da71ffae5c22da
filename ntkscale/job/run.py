"""Run a job end to end (or some of its stages) and write the run directory.

Run directory (``job.out``)::

    .ntkscale.json         ownership marker (storage.ownership): ntkscale writes only into
                           a run directory that is new, empty or carries it
    config.resolved.json   every section with its defaults, cluster env overrides recorded
    job.toml               a copy of the job file as given
    gram.zarr/             the train Gram store (unless kernel.store points elsewhere)
    gram.zarr-chol-.../    tiled Cholesky factors, keyed by kind, dtype and ridge
    fit.npz                α, the absolute ridge, the store's build id, classes
    predictions.npz        test predictions, targets, and ``row``: each test row's index in its source
    spectrum.npz           top-k eigenpairs of the train Gram
    export/                predictions and eigenpairs as Parquet or Zarr (the export stage)
    metrics.json           per-stage metrics, timings, peak memory, cluster, data
    report.md              a short human-readable summary
    figures/*.png          spectrum, learning curve, dynamics
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from typing import Optional, Sequence

from . import registry
from .._config import ConfigError
from .config import JobConfig, to_plain
from .context import JobContext
from .report import write_report
from .shapes import check_row_width
from ..storage.ownership import check_dir, claim_dir

log = logging.getLogger("ntkscale.job")

__all__ = ["run_job", "run_stages", "preflight"]


def run_stages(cfg: JobConfig, stages: Sequence[str], *, progress: Optional[bool] = None,
               report: bool = True, repair: bool = False) -> dict:
    """Run ``stages`` (in the given order) of a job; returns the metrics dict.

    Metrics of stages run earlier (``metrics.json`` in the run directory) are kept, so the
    stage commands build up the same run directory as ``run``. ``repair``: the ``gram``
    stage verifies every stored chunk and recomputes the corrupt ones
    (``build_gram(..., repair=True)``).

    Nothing is written (run directory, stores) before :func:`preflight` has passed: a refused
    run leaves the disk as it was.
    """
    funcs = [registry.get_stage(s).run for s in stages]  # unknown names fail before any work
    ctx = JobContext(cfg, progress=progress, repair=repair)
    try:
        preflight(ctx, stages)
        claim_dir(cfg.out, "run", key="[job] out")
        with open(os.path.join(cfg.out, "config.resolved.json"), "w") as f:
            json.dump(to_plain(cfg.resolved()), f, indent=2)
        if cfg.source and os.path.abspath(cfg.source) != os.path.abspath(os.path.join(cfg.out, "job.toml")):
            shutil.copyfile(cfg.source, os.path.join(cfg.out, "job.toml"))
        ctx.metrics["job"] = {"name": cfg.job["name"], "source": cfg.source, "out": cfg.out}
        timings = ctx.metrics.setdefault("timings", {})
        t_all = time.perf_counter()
        _ = ctx.cluster
        for name, func in zip(stages, funcs):
            log.info("stage %s ...", name)
            t = time.perf_counter()
            values = func(ctx)
            timings[name] = round(time.perf_counter() - t, 3)
            values["seconds"] = timings[name]
            ctx.record(name, values)
            log.info("stage %s done in %.1f s", name, timings[name])
        ctx.metrics["memory"] = ctx.peak_memory()
        ctx.metrics["total_seconds"] = round(time.perf_counter() - t_all, 3)
        ctx.save_metrics()
    finally:
        ctx.close()
    if report:
        write_report(cfg, ctx.metrics, os.path.join(cfg.out, "report.md"))
    return ctx.metrics


def _check_needs(cfg: JobConfig, stages: Sequence[str]) -> None:
    """Each stage's inputs from other stages (``Stage.needs``): run before it, or left in the
    run directory by an earlier run."""
    for k, name in enumerate(stages):
        for other, fname in registry.get_stage(name).needs:
            if other not in stages[:k] and not os.path.exists(os.path.join(cfg.out, fname)):
                raise ConfigError(f"stage {name!r} needs the {other!r} stage's {fname}, which this run neither "
                                  f"computes before it nor finds in {cfg.out!r}: add {other!r} before {name!r} "
                                  f"to [job] stages, or switch {name!r} off ([{name}] enabled = false)")


def preflight(ctx: JobContext, stages: Sequence[str]) -> None:
    """Every check a run makes before it writes anything (the run directory, a store).

    The run directory and the store locations must be ntkscale's to write
    (:mod:`ntkscale.storage.ownership`: new, empty, or written by ntkscale) and must not
    contain one another; the data are loaded and validated, and their rows must have the
    width the ``[model]`` shape reads (:func:`ntkscale.job.shapes.check_row_width`); a stage
    that builds the Gram store is asked whether the build would be refused (a store of other data or settings,
    unless ``[kernel] overwrite``), a stage that reads it whether a finished store of this
    job's data and model is there; each stage's ``check`` runs on the loaded data.

    Raises
    ------
    ConfigError, UnsafePathError, StoreMismatchError, FileNotFoundError, ...
        The first problem found, naming the setting and the fix.
    """
    from ..pipeline import check_store, preflight_store, stored_kinds

    cfg = ctx.cfg
    check_dir(cfg.out, "run", key="[job] out")
    _check_nesting(cfg)
    _check_needs(cfg, stages)
    data = ctx.data  # loaded and validated before anything is written
    check_row_width(cfg.model, data.X_train.shape[1], f"the training data ({data.name})")
    for name in stages:  # each stage's own checks on the loaded data (Stage.check)
        check = registry.get_stage(name).check
        if check is not None:
            check(ctx)
    roles = {registry.get_stage(s).store for s in stages}
    k = cfg.kernel
    if "builds" in roles:
        preflight_store(ctx.arch, data.X_train, cfg.store, stored_kinds(k["kind"], k["store_nngp"]),
                        tile=k["tile"] or None, dtype=k["dtype"], device=k["device"], overwrite=k["overwrite"],
                        key="[kernel] store")
    elif "reads" in roles:
        check_store(cfg.store, data.X_train, ctx.arch, build="run the 'gram' stage")
    factor = cfg.solver["factor_store"]
    if factor and "fit" in stages:
        check_dir(factor, "factor-store", key="[solver] factor_store")


def _check_nesting(cfg: JobConfig) -> None:
    """Refuse a Gram store that is the run directory or holds it (their files would mix)."""
    from .._config import ConfigError
    from ..storage.url import _local_path, is_local

    if not is_local(cfg.store):
        return
    out = os.path.realpath(cfg.out)
    store = os.path.realpath(_local_path(cfg.store))
    if out == store or out.startswith(store.rstrip(os.sep) + os.sep):
        raise ConfigError(f"'kernel.store' = {cfg.store!r} is the run directory {cfg.out!r} or contains it; "
                          "a Gram store needs a directory of its own (the default is <out>/gram.zarr)")


def run_job(cfg: JobConfig, *, progress: Optional[bool] = None) -> dict:
    """All stages listed in ``job.stages`` (default gram, fit, predict, spectrum, curve; plus
    an optional stage whose section says ``enabled = true``, e.g. dynamics), skipping default
    stages whose section says ``enabled = false`` (:func:`ntkscale.job.registry.active_stages`)."""
    return run_stages(cfg, registry.active_stages(cfg), progress=progress)
