"""``ntkscale run JOB.toml``, the stage commands and ``plan`` (thin over :mod:`ntkscale.job`)."""

from __future__ import annotations

import dataclasses
import json
import sys
from typing import Optional

import click

from ..job import registry

_OUT = click.option("--out", default=None, help="Run directory (overrides job.out).")
_OVERWRITE = click.option("--overwrite", is_flag=True,
                          help="Replace a Gram store (and factor stores) that ntkscale built from other data or "
                               "settings ([kernel] overwrite = true); never replaces anything ntkscale did not write.")


def _load(job: str, out: Optional[str], overwrite: bool = False):
    from ..job import load_job

    cfg = load_job(job, out=out)
    if overwrite:
        cfg = dataclasses.replace(cfg, kernel={**cfg.kernel, "overwrite": True})
    return cfg


def _print_summary(metrics: dict, out: str) -> None:
    st = metrics.get("stages", {})
    brief = {k: v for k, v in {
        "test_accuracy": st.get("predict", {}).get("test_accuracy"),
        "test_mse": st.get("predict", {}).get("test_mse"),
        "ridge": st.get("fit", {}).get("ridge"),
        "solver": st.get("fit", {}).get("method"),
        "power_law_exponent": st.get("spectrum", {}).get("power_law_exponent"),
        "total_seconds": metrics.get("total_seconds"),
    }.items() if v is not None}
    click.echo(json.dumps(brief, indent=2))
    click.echo(f"run directory: {out} (report.md, metrics.json, figures/)", err=True)


def register(cli: click.Group) -> None:
    """Add ``run``, ``plan`` and one command per stage to the ``ntkscale`` group."""

    @cli.command()
    @click.argument("job", type=click.Path(dir_okay=False))
    @_OUT
    @_OVERWRITE
    def run(job: str, out: Optional[str], overwrite: bool) -> None:
        """Run a whole job: data, Gram store, fit, predictions, spectrum, learning curve,
        dynamics (as configured); writes metrics.json, report.md and figures/ to the run
        directory."""
        from ..job import run_job

        cfg = _load(job, out, overwrite)
        metrics = run_job(cfg, progress=sys.stderr.isatty())
        _print_summary(metrics, cfg.out)

    for stage in registry.stages():
        if stage.name == "predict":  # the stage, or new rows with --input (cli/predict.py)
            from .predict import register_predict

            register_predict(cli, stage.description)
            continue
        _stage_command(cli, stage.name, stage.description)

    @cli.command()
    @click.argument("job", type=click.Path(dir_okay=False))
    @click.option("--workers", type=click.IntRange(min=1), default=None, help="Workers to plan for (default: the job's).")
    @click.option("--n", "n", type=click.IntRange(min=2), default=None, help="Training samples (default: load the job's data).")
    @click.option("--d", "d", type=click.IntRange(min=1), default=None, help="Input dimension (default: load the job's data).")
    @click.option("--calibration", default=None, type=click.Path(dir_okay=False, exists=True),
                  help="Reuse a saved calibration (JSON, ntkscale.plan.Calibration.save).")
    @click.option("--cluster/--no-cluster", "on_cluster", default=True, show_default=True,
                  help="Calibrate on the job's cluster (local or address kinds: task overheads, "
                       "parallel efficiency, a real pass over a small store) or in this process only.")
    @click.option("--ridge", "ridge", type=click.FloatRange(min=0, min_open=True), default=None,
                  help="Relative ridge to assume when the job chooses it by GCV/LOO (default: run the "
                       "job's selection step on its data now, or 1e-3 with --no-ridge-step).")
    @click.option("--ridge-step/--no-ridge-step", "ridge_step", default=True, show_default=True,
                  help="When the job chooses its ridge by GCV/LOO: run that sub-block step now (about a "
                       "minute at 8192 points) and plan the fit with the ridge it finds.")
    @click.option("--pcg-iters", "pcg_iters", type=click.IntRange(min=1), default=None,
                  help="PCG iterations to assume (default: a heuristic from the ridge).")
    @click.option("--save-calibration", default=None, type=click.Path(dir_okay=False),
                  help="Write the calibration to this JSON file (reuse it with --calibration).")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
    def plan(job: str, workers: Optional[int], n: Optional[int], d: Optional[int],
             calibration: Optional[str], on_cluster: bool, ridge: Optional[float], ridge_step: bool,
             pcg_iters: Optional[int], save_calibration: Optional[str], as_json: bool) -> None:
        """Capacity estimate for a job before running it: tiles, bytes on disk, memory per
        worker, flops and time per stage, calibrated by a few seconds of measurement on this
        machine (kernel tile, GEMM/Cholesky, Zarr write/read rates, a real pass on the cluster)."""
        from ..job.model import build_arch
        from ..job.shapes import check_row_width
        from ..plan import calibrate, estimate_from_config

        cfg = _load(job, None)
        sizes: dict = {}
        selected: Optional[dict] = None
        select_now = ridge is None and ridge_step and isinstance(cfg.solver["ridge"], str)
        if n is None or d is None or select_now:
            from ..data import load_dataset

            data = load_dataset(cfg.data, seed=cfg.job["seed"])
            check_row_width(cfg.model, int(data.X_train.shape[1]), f"the training data ({data.name})")
            if select_now:
                from ..job.model import build_arch as _arch
                from ..job.plan_ridge import planned_ridge

                selected = planned_ridge(cfg, data, _arch(cfg.model))
                ridge = selected["ridge_relative"]
            classes = data.classes if data.task == "classification" else None
            sizes = dict(n_test=0 if data.X_test is None else int(data.X_test.shape[0]),
                         n_outputs=int(len(classes)) if classes is not None
                         else (1 if data.y_train.ndim == 1 else int(data.y_train.shape[1])))
            n, d = n or int(data.X_train.shape[0]), d or int(data.X_train.shape[1])
        check_row_width(cfg.model, d, "the planned data")  # before any kernel is timed
        cal = calibration
        if cal is None:
            arch = build_arch(cfg.model)
            if on_cluster and cfg.cluster.kind in ("local", "address"):
                from ..clusters import start_cluster

                with start_cluster(cfg.cluster) as handle:
                    cal = calibrate(d, arch, client=handle.client, store=cfg.store)
            else:
                cal = calibrate(d, arch, store=cfg.store)
        if save_calibration and not isinstance(cal, str):
            cal.save(save_calibration)
        extra: dict = {} if workers is None else {"workers": workers}
        if ridge is not None:
            extra["ridge_relative"] = ridge
        if pcg_iters is not None:
            extra["pcg_iters"] = pcg_iters
        p = estimate_from_config(cfg, n=n, d=d, calibration=cal, **sizes, **extra)
        if selected is not None:
            p = dataclasses.replace(p, notes=(f"ridge by {selected['rule']} on a {selected['subsample']}-point sub-block, run now: "
                       f"{selected['ridge_relative']:.4g} x mean diag ({selected['seconds']:.0f} s); the fit "
                       "is planned with it", *p.notes))
        click.echo(json.dumps(p.to_dict(), indent=2, default=str) if as_json else p.table())


def _stage_command(cli: click.Group, stage: str, description: str = "") -> None:
    @cli.command(name=stage, help=(description + " " if description else "")
                 + f"Runs only the '{stage}' stage of JOB on its run directory "
                   "(earlier stages' outputs are read from there).")
    @click.argument("job", type=click.Path(dir_okay=False))
    @_OUT
    @(click.option("--repair", is_flag=True,
                   help="Verify every chunk of the Gram store (size and CRC32C), delete the corrupt ones "
                        "and recompute exactly those tiles.") if stage == "gram" else (lambda f: f))
    @(_OVERWRITE if stage in ("gram", "fit") else (lambda f: f))
    def cmd(job: str, out: Optional[str], repair: bool = False, overwrite: bool = False) -> None:
        from ..job import run_stages

        cfg = _load(job, out, overwrite)
        metrics = run_stages(cfg, [stage], progress=sys.stderr.isatty(), repair=repair)
        click.echo(json.dumps(metrics["stages"].get(stage, {}), indent=2, default=str))
