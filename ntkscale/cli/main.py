"""``ntkscale`` command line (thin: parse options, call the library, print)."""

from __future__ import annotations

import json
import logging
import sys
import time

import click


_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}


@click.group()
@click.version_option(package_name="ntkscale")
@click.option("-v", "--verbose", count=True, help="More logging (-v debug for ntkscale, -vv also dask).")
@click.option("--log-level", type=click.Choice(list(_LEVELS)), default="info", show_default=True,
              help="Logging level of ntkscale (progress of stages, passes, iterations).")
def cli(verbose: int, log_level: str) -> None:
    """NTK/NNGP kernels at scale: tiled Gram matrices on Dask, stored in Zarr."""
    import importlib

    importlib.import_module("distributed")  # applies dask's logging config: override it below

    level = logging.DEBUG if verbose else _LEVELS[log_level]
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    logging.getLogger("ntkscale").setLevel(level)
    for noisy in ("distributed", "tornado", "bokeh"):  # dask logs every worker at INFO
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose >= 2 else logging.WARNING)


@cli.command()
@click.option("--out", default="runs/demo", show_default=True, help="Run directory (Gram store inside).")
@click.option("--n", default=4000, show_default=True, help="Samples (digits data, repeated with noise past 1797).")
@click.option("--depth", default=3, show_default=True, help="Hidden ReLU layers.")
@click.option("--client", default=None, help="Scheduler address, 'sync', or empty for a local cluster.")
def demo(out: str, n: int, depth: int, client: str | None) -> None:
    """Build the NTK/NNGP Gram of a depth-L ReLU net on real data (scikit-learn digits, or
    synthetic sphere data without scikit-learn) on a local Dask cluster into a Zarr
    store, then check random blocks against the dense kernel and print a summary."""
    from ..demo import run_demo

    report = run_demo(out=out, n=n, depth=depth, client=client, progress=sys.stderr.isatty())
    click.echo(json.dumps(report, indent=2))


@cli.command()
@click.argument("store")
def info(store: str) -> None:
    """Print the metadata of a Gram store."""
    from ..storage import GramStore

    meta = GramStore.open(store).meta
    click.echo(json.dumps(meta, indent=2))


@cli.group()
def study() -> None:
    """One-command studies: each writes results.json, figures and report.md to --out."""


@study.command("transformer")
@click.option("--out", required=True, help="Output directory.")
@click.option("--quick", is_flag=True, help="Tiny sizes (about a minute): a smoke test.")
def study_transformer(out: str, quick: bool) -> None:
    """Model-wise double descent of a small transformer vs its empirical NTK (issue 15)."""
    from ..studies.transformer_dd import run

    run(out, quick=quick, log=lambda line: click.echo(line, err=True),
        command=f"ntkscale study transformer --out {out}" + (" --quick" if quick else ""))


from .job_commands import register  # noqa: E402

register(cli)


def user_error(e: BaseException) -> bool:
    """Whether ``e`` is an error the user can fix from its message alone (printed as one line).

    Classes defined in ntkscale (``ConfigError``/``DataError`` naming the job key, the typed
    numerical and store errors of :mod:`ntkscale.errors` and :mod:`ntkscale.storage`), and the
    operating system's file errors and missing optional packages (their message names the
    path or the package). Anything else escaping is a bug to fix where it is raised: the CLI
    shows its traceback rather than a vague line.
    """
    return type(e).__module__.split(".")[0] == "ntkscale" or isinstance(e, (OSError, ImportError))


def main() -> None:  # console-script entry point
    t0 = time.perf_counter()
    try:
        cli(standalone_mode=False)
    except (click.exceptions.Abort, KeyboardInterrupt):
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except Exception as e:
        if logging.getLogger("ntkscale").level <= logging.DEBUG:  # -v: the traceback
            raise
        if not user_error(e):
            import traceback

            traceback.print_exc()
            click.echo(f"Error: unexpected {type(e).__name__} (a bug in ntkscale: please report it with "
                       "the traceback above)", err=True)
            sys.exit(1)
        click.echo(f"Error: {e}", err=True)  # one line: the message names the key or file and the fix
        sys.exit(1)
    finally:
        logging.getLogger("ntkscale").debug("done in %.1fs", time.perf_counter() - t0)


if __name__ == "__main__":  # pragma: no cover
    main()
