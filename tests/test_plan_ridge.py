"""``ntkscale plan`` runs the job's GCV/LOO sub-block step itself and plans the fit with that ridge."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ntkscale.data import load_dataset
from ntkscale.job import parse_job, run_stages
from ntkscale.job.model import build_arch
from ntkscale.job.plan_ridge import planned_ridge


def _cfg(tmp_path, **solver):
    doc = {"data": {"source": "sphere", "n": 400, "d": 6}, "cluster": {"kind": "sync"},
           "job": {"out": str(tmp_path / "run"), "stages": ["gram", "fit"], "seed": 3},
           "kernel": {"store": str(tmp_path / "gram.zarr"), "tile": 128},
           "solver": {"ridge": "loo", "ridge_subsample": 150, "ridge_select": "1se", **solver}}
    return parse_job(doc, environ={})


@pytest.mark.parametrize("rule", ["loo", "gcv"])
def test_plan_time_ridge_is_the_fit_stage_ridge(tmp_path, rule):
    """The same 150 of 400 points, the same stored (float32-rounded) entries, the same rule: the
    criterion on every grid ridge equals the fit stage's to rounding, and so does the choice."""
    cfg = _cfg(tmp_path, ridge=rule)
    fit = run_stages(cfg, ["gram", "fit"])["stages"]["fit"]
    got = planned_ridge(cfg, load_dataset(cfg.data, seed=cfg.job["seed"]), build_arch(cfg.model))
    assert got["subsample"] == fit["ridge_subsample"] == 150
    np.testing.assert_allclose(got["scores"], fit["ridge_scores"], rtol=1e-9)
    assert got["ridge"] == pytest.approx(fit["ridge"], rel=1e-12)
    # another seed draws other points: the check above can tell sub-blocks apart
    other = planned_ridge(parse_job({**_doc_of(cfg), "job": {**_doc_of(cfg)["job"], "seed": 4}}, environ={}),
                          load_dataset(cfg.data, seed=cfg.job["seed"]), build_arch(cfg.model))
    assert not np.allclose(other["scores"], fit["ridge_scores"], rtol=1e-6)


def _doc_of(cfg):
    return {"data": {"source": "sphere", "n": 400, "d": 6}, "cluster": {"kind": "sync"},
            "job": {"out": cfg.out, "stages": ["gram", "fit"], "seed": cfg.job["seed"]},
            "kernel": {"store": cfg.store, "tile": 128},
            "solver": {"ridge": cfg.solver["ridge"], "ridge_subsample": 150, "ridge_select": "1se"}}


def test_a_numeric_ridge_has_nothing_to_select(tmp_path):
    cfg = _cfg(tmp_path, ridge=1e-2)
    with pytest.raises(ValueError, match="nothing to select"):
        planned_ridge(cfg, load_dataset(cfg.data, seed=0), build_arch(cfg.model))


def test_plan_command_plans_with_the_selected_ridge(tmp_path):
    """``ntkscale plan`` on a LOO job: the note names the ridge found now, and the fit is planned
    exactly as with ``--ridge`` set to it (and not as with the 1e-3 assumed without the step)."""
    from click.testing import CliRunner

    from ntkscale.cli.main import cli

    job = tmp_path / "job.toml"
    job.write_text(f'''[job]
out = "{tmp_path / 'run'}"
stages = ["gram", "fit"]
[data]
source = "sphere"
n = 400
d = 6
[kernel]
store = "{tmp_path / 'gram.zarr'}"
[solver]
method = "pcg"
ridge = "loo"
ridge_subsample = 150
[cluster]
kind = "sync"
''')

    def fit_of(*args):
        r = CliRunner().invoke(cli, ["plan", str(job), "--no-cluster", "--json", *args])
        assert r.exit_code == 0, r.output
        plan = json.loads(r.output[r.output.index("{"):])
        return plan, next(s for s in plan["stages"] if s["name"] == "fit")

    plan, fit = fit_of()
    note = next(x for x in plan["notes"] if x.startswith("ridge by loo on a 150-point sub-block, run now: "))
    rel = float(note.split("run now: ")[1].split(" x mean diag")[0])
    assert rel != pytest.approx(1e-3, rel=0.5)
    _, given = fit_of("--ridge", repr(rel))
    _, assumed = fit_of("--no-ridge-step")
    assert fit["method"] == given["method"] != assumed["method"]  # "..., N iterations"
