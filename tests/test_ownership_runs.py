"""The safety rule (issue 24), continued: a refused run changes nothing (defect 2), absurd
tiles and failed runs (defect 3), two fits on one store and the files a run replaces (defect
10). The writers' refusals: test_ownership.py."""

from __future__ import annotations

import numpy as np
import pytest

from ntkscale._config import ConfigError
from ntkscale.job import run_stages
from ntkscale.storage import GramStore, StoreMismatchError, UnsafePathError
from ntkscale.tiling import build_gram

from _ownership import ARCH, _job, _snapshot, _x, user_dir  # noqa: F401 (user_dir: a fixture)


# ---------------------------------------------------------------- defect 2: a refused run changes nothing
def test_refused_run_leaves_the_run_directory_as_it_was(tmp_path, user_dir):
    cfg = _job(tmp_path, user_dir / "reg.csv")
    run_stages(cfg, cfg.job["stages"])
    arch_before = GramStore.open(tmp_path / "run" / "gram.zarr").meta["arch"]
    before = _snapshot(tmp_path)
    other = _job(tmp_path, user_dir / "reg.csv", model={"depth": 2})
    with pytest.raises(StoreMismatchError, match="another architecture"):
        run_stages(other, other.job["stages"])
    assert _snapshot(tmp_path) == before  # job.toml, config.resolved.json, fit.npz untouched
    for stages in (["fit"], ["predict"]):  # a stage that reads the store refuses before writing too
        with pytest.raises(StoreMismatchError):
            run_stages(other, stages)
        assert _snapshot(tmp_path) == before
    again = _job(tmp_path, user_dir / "reg.csv", model={"depth": 2}, kernel={"overwrite": True})
    m = run_stages(again, again.job["stages"])
    assert m["stages"]["gram"]["computed"] >= 1 and not m["stages"]["gram"]["resumed"]
    assert GramStore.open(tmp_path / "run" / "gram.zarr").meta["arch"] != arch_before  # rebuilt
    import json

    with open(tmp_path / "run" / "config.resolved.json") as f:
        assert json.load(f)["model"]["depth"] == 2


def test_overwrite_flag_on_the_cli(tmp_path, user_dir):
    from click.testing import CliRunner

    from ntkscale.cli.main import cli

    job = tmp_path / "job.toml"
    text = (f'[job]\nout = "{tmp_path / "run"}"\nstages = ["gram"]\n'
            f'[data]\nsource = "file"\npath = "{user_dir / "reg.csv"}"\ntarget = "y"\ntask = "regression"\n'
            '[cluster]\nkind = "sync"\n[model]\ndepth = {depth}\n')
    job.write_text(text.replace("{depth}", "1"))
    assert CliRunner().invoke(cli, ["run", str(job)]).exit_code == 0
    job.write_text(text.replace("{depth}", "2"))
    r = CliRunner().invoke(cli, ["gram", str(job)])
    assert r.exit_code != 0 and "overwrite" in str(r.exception)
    r = CliRunner().invoke(cli, ["gram", str(job), "--overwrite"])
    assert r.exit_code == 0, r.output


# ---------------------------------------------------------------- defect 3: tiles and failed runs
def test_absurd_tiles_are_refused_or_clipped_before_anything_is_written(tmp_path, user_dir):
    cfg = _job(tmp_path, user_dir / "reg.csv", kernel={"tile": 10 ** 12})
    m = run_stages(cfg, cfg.job["stages"])  # one tile of the whole (24 x 24) Gram, not 10^24 bytes
    assert m["stages"]["gram"]["tile"] == 24 and m["stages"]["gram"]["tiles"] == 1
    with pytest.raises(ConfigError, match="at least 16"):
        _job(tmp_path, user_dir / "reg.csv", kernel={"tile": 1})
    with pytest.raises(ValueError, match="tile tasks"):
        build_gram(ARCH, _x(1600), tmp_path / "tiny-tiles", tile=1, client="sync")
    with pytest.raises(ValueError, match="GiB"):  # a tile no worker can hold
        build_gram(ARCH, _x(200_000, d=1), tmp_path / "huge", tile=150_000, client="sync")
    assert not (tmp_path / "tiny-tiles").exists() and not (tmp_path / "huge").exists()


def test_plan_refuses_absurd_tiles():
    from ntkscale.plan import estimate_from_config

    from test_plan import PLAN_KW

    with pytest.raises(ValueError, match="tile tasks"):
        estimate_from_config({"kernel": {"tile": 16}}, n=120_000, d=784, **PLAN_KW)
    p = estimate_from_config({"kernel": {"tile": 10 ** 12}}, n=2000, d=10, **PLAN_KW)
    assert p.tile == 2000


def test_a_store_without_tiles_does_not_block_the_corrected_job(tmp_path, monkeypatch):
    import ntkscale.tiling.build as b

    def boom(*a, **k):
        raise RuntimeError("killed after creating the store")

    monkeypatch.setattr(b, "_run_stats", boom)
    with pytest.raises(RuntimeError, match="killed"):
        build_gram(ARCH, _x(), tmp_path / "g", client="sync", tile=16)
    monkeypatch.undo()
    assert GramStore.open(tmp_path / "g").meta["tile"] == 16
    rep = build_gram(ARCH, _x(), tmp_path / "g", client="sync", tile=20)  # other settings, no tile yet
    assert rep.tile == 20 and not rep.resumed


# ---------------------------------------------------------------- defect 10: two fits on one store
def test_two_fits_with_other_ridges_share_the_gram_store(tmp_path, user_dir):
    store = tmp_path / "shared.zarr"
    fits = []
    for k, ridge in enumerate((1e-3, 0.1)):
        cfg = _job(tmp_path, user_dir / "reg.csv", store=store, out=tmp_path / f"run{k}",
                   solver={"method": "cholesky", "ridge": ridge})
        fits.append(run_stages(cfg, cfg.job["stages"])["stages"]["fit"])
    assert [f["method"] for f in fits] == ["tiled-cholesky", "tiled-cholesky"]
    assert fits[0]["factor_store"] != fits[1]["factor_store"]
    assert all(f["factor_store"].startswith(str(store) + "-chol-ntk-float64-ridge") for f in fits)
    assert all(f["factor_bytes"] > 0 for f in fits)
    assert "factor store" in (tmp_path / "run1" / "report.md").read_text()
    cfg = _job(tmp_path, user_dir / "reg.csv", store=store, out=tmp_path / "run2",
               solver={"method": "cholesky", "factor_store": str(user_dir)})
    before = _snapshot(tmp_path)
    with pytest.raises(UnsafePathError, match=r"\[solver\] factor_store"):
        run_stages(cfg, cfg.job["stages"])
    assert _snapshot(tmp_path) == before


def test_calibration_and_figure_files_are_replaced_only_when_ours(tmp_path):
    pytest.importorskip("matplotlib")
    from ntkscale.plan import Calibration, calibrate
    from ntkscale.plots import plot_spectrum
    from ntkscale.spectral import EmpiricalSpectrum

    cal = calibrate(3, ARCH, seconds=0.2, warmup=False, tile=64)
    mine = tmp_path / "cal.json"
    mine.write_text('{"my": "settings"}')
    with pytest.raises(UnsafePathError, match="not written by ntkscale"):
        cal.save(str(mine))
    assert mine.read_text() == '{"my": "settings"}'
    cal.save(str(tmp_path / "new.json"))
    cal.save(str(tmp_path / "new.json"))  # its own file: replaced
    assert Calibration.load(str(tmp_path / "new.json")) == cal
    eta = 1.0 / np.arange(1, 21) ** 1.5
    spec = EmpiricalSpectrum(eta=eta, v2=eta, v2_per_output=eta[:, None], cumulative_power=np.cumsum(eta) / eta.sum())
    photo = tmp_path / "photo.png"
    photo.write_bytes(b"\x89PNG\r\n\x1a\n not ntkscale's")
    with pytest.raises(UnsafePathError):
        plot_spectrum(spec, path=str(photo))
    plot_spectrum(spec, path=str(tmp_path / "s.png"))
    plot_spectrum(spec, path=str(tmp_path / "s.png"))  # its own figure: replaced
