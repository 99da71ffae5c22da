"""``ntkscale predict JOB``: the predict stage, or ``--input NEW --out PREDS`` for new rows
(thin over :mod:`ntkscale.job.run` and :mod:`ntkscale.job.predict_new`)."""

from __future__ import annotations

import json
import sys
from typing import Optional

import click


def register_predict(cli: click.Group, description: str = "") -> None:
    """Add the ``predict`` command to the ``ntkscale`` group."""

    @cli.command(name="predict", help=(description + " " if description else "")
                 + "Runs only the 'predict' stage of JOB on its run directory (earlier stages' outputs "
                   "are read from there). With --input NEW --out PREDS.parquet: predicts the rows of "
                   "NEW instead (no target column needed; the job's feature columns and preprocessing) "
                   "and writes PREDS (.parquet, .npz or .csv: row, prediction_*, label); the run "
                   "directory is only read.")
    @click.argument("job", type=click.Path(dir_okay=False))
    @click.option("--input", "input_", default=None, metavar="NEW",
                  help="New rows to predict: .csv, .parquet, .npz, .npy or .zarr (path or fsspec URL).")
    @click.option("--out", default=None,
                  help="Without --input: the run directory (overrides job.out). With --input: the "
                       "predictions file to write (.parquet, .npz or .csv); never overwrites a file "
                       "ntkscale did not write.")
    @click.option("--run-dir", default=None,
                  help="With --input: the run directory to read (default: the job's job.out).")
    def predict(job: str, input_: Optional[str], out: Optional[str], run_dir: Optional[str]) -> None:
        from ..job import load_job

        if input_ is None:
            if run_dir is not None:
                raise click.UsageError("--run-dir goes with --input; without --input, --out names the "
                                       "run directory")
            from ..job import run_stages

            cfg = load_job(job, out=out)
            metrics = run_stages(cfg, ["predict"], progress=sys.stderr.isatty())
            click.echo(json.dumps(metrics["stages"].get("predict", {}), indent=2, default=str))
            return
        if out is None:
            raise click.UsageError("--input needs --out PREDS.parquet (the file to write: .parquet, .npz "
                                   "or .csv)")
        from ..job.predict_new import predict_new

        cfg = load_job(job, out=run_dir)
        summary = predict_new(cfg, input_, out, progress=sys.stderr.isatty())
        click.echo(json.dumps(summary, indent=2, default=str))
