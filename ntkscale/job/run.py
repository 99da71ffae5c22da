"""Run a job end to end (or some of its stages) and write the run directory.

Run directory (``job.out``)::

    config.resolved.json   every section with its defaults, cluster env overrides recorded
    job.toml               a copy of the job file as given
    gram.zarr/             the train Gram store (unless kernel.store points elsewhere)
    fit.npz                α, the absolute ridge, the store's build id, classes
    predictions.npz        test predictions and targets
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
from .config import JobConfig, to_plain
from .context import JobContext
from .report import write_report

log = logging.getLogger("ntkscale.job")

__all__ = ["run_job", "run_stages"]


def run_stages(cfg: JobConfig, stages: Sequence[str], *, progress: Optional[bool] = None,
               report: bool = True, repair: bool = False) -> dict:
    """Run ``stages`` (in the given order) of a job; returns the metrics dict.

    Metrics of stages run earlier (``metrics.json`` in the run directory) are kept, so the
    stage commands build up the same run directory as ``run``. ``repair``: the ``gram``
    stage verifies every stored chunk and recomputes the corrupt ones
    (``build_gram(..., repair=True)``).
    """
    funcs = [registry.get_stage(s).run for s in stages]  # unknown names fail before any work
    os.makedirs(cfg.out, exist_ok=True)
    with open(os.path.join(cfg.out, "config.resolved.json"), "w") as f:
        json.dump(to_plain(cfg.resolved()), f, indent=2)
    if cfg.source and os.path.abspath(cfg.source) != os.path.abspath(os.path.join(cfg.out, "job.toml")):
        shutil.copyfile(cfg.source, os.path.join(cfg.out, "job.toml"))
    ctx = JobContext(cfg, progress=progress, repair=repair)
    ctx.metrics["job"] = {"name": cfg.job["name"], "source": cfg.source, "out": cfg.out}
    timings = ctx.metrics.setdefault("timings", {})
    t_all = time.perf_counter()
    try:
        _ = ctx.data  # load (and validate) before starting a cluster
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


def run_job(cfg: JobConfig, *, progress: Optional[bool] = None) -> dict:
    """All stages listed in ``job.stages`` (default gram, fit, predict, spectrum, curve; plus
    an optional stage whose section says ``enabled = true``, e.g. dynamics), skipping default
    stages whose section says ``enabled = false`` (:func:`ntkscale.job.registry.active_stages`)."""
    return run_stages(cfg, registry.active_stages(cfg), progress=progress)
