"""``ntkscale run JOB.toml``, the stage commands and ``plan`` (thin over :mod:`ntkscale.job`)."""

from __future__ import annotations

import json
import sys
from typing import Optional

import click

from ..job.config import STAGES

_OUT = click.option("--out", default=None, help="Run directory (overrides job.out).")


def _load(job: str, out: Optional[str]):
    from ..job import load_job

    return load_job(job, out=out)


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
    def run(job: str, out: Optional[str]) -> None:
        """Run a whole job: data, Gram store, fit, predictions, spectrum, learning curve,
        dynamics (as configured); writes metrics.json, report.md and figures/ to the run
        directory."""
        from ..job import run_job

        cfg = _load(job, out)
        metrics = run_job(cfg, progress=sys.stderr.isatty())
        _print_summary(metrics, cfg.out)

    for stage in STAGES:
        _stage_command(cli, stage)

    @cli.command()
    @click.argument("job", type=click.Path(dir_okay=False))
    @click.option("--workers", type=int, default=None, help="Workers to plan for (default: the job's).")
    @click.option("--n", "n", type=int, default=None, help="Training samples (default: the job's data).")
    @click.option("--d", "d", type=int, default=None, help="Input dimension (default: the job's data).")
    @click.option("--calibration", default=None, type=click.Path(dir_okay=False, exists=True),
                  help="Reuse a saved calibration (JSON, ntkscale.plan.Calibration.save) "
                       "instead of measuring this machine now.")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
    def plan(job: str, workers: Optional[int], n: Optional[int], d: Optional[int],
             calibration: Optional[str], as_json: bool) -> None:
        """Capacity estimate for a job before running it: tiles, bytes on disk, memory per
        worker, flops and time per stage, calibrated by a few seconds of measurement on this
        machine (kernel tile, GEMM/Cholesky, Zarr write/read rates)."""
        from ..plan import estimate_from_config

        cfg = _load(job, None)
        extra = {} if workers is None else {"workers": workers}
        p = estimate_from_config(cfg, n=n, d=d, calibration=calibration, **extra)
        click.echo(json.dumps(p.to_dict(), indent=2, default=str) if as_json else p.table())


def _stage_command(cli: click.Group, stage: str) -> None:
    @cli.command(name=stage, help=f"Run only the '{stage}' stage of JOB on its run directory "
                                  "(earlier stages' outputs are read from there).")
    @click.argument("job", type=click.Path(dir_okay=False))
    @_OUT
    def cmd(job: str, out: Optional[str]) -> None:
        from ..job import run_stages

        cfg = _load(job, out)
        metrics = run_stages(cfg, [stage], progress=sys.stderr.isatty())
        click.echo(json.dumps(metrics["stages"].get(stage, {}), indent=2, default=str))
