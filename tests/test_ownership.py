"""The safety rule (issue 24): ntkscale deletes or overwrites only what it can prove it wrote.

Every writer is pointed at locations that hold the user's files (local directories and an
fsspec ``memory://`` filesystem) and must refuse with one error naming the path, before any
work, leaving every file as it was. Defects 1-3 of issue 24 are reproduced as they were
reported.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest

from ntkscale import stax
from ntkscale._config import ConfigError
from ntkscale.job import parse_job, run_stages
from ntkscale.storage import GramStore, StoreMismatchError, UnsafePathError
from ntkscale.storage.ownership import (MARKER, OWNER_ATTR, check_dir, check_target_file, claim_dir, clear_dir,
                                        inspect_dir, mark_parquet_metadata)
from ntkscale.tiling import build_gram

ARCH = stax.serial(stax.Dense(32, W_std=1.4, b_std=0.1), stax.Relu(), stax.Dense(1))


def _x(n=24, d=3, seed=0):
    return np.random.default_rng(seed).standard_normal((n, d))


def _snapshot(root):
    """Every file under ``root`` with its bytes' hash (and every directory)."""
    out = {}
    for dp, dirs, files in os.walk(root):
        for d in dirs:
            out[os.path.relpath(os.path.join(dp, d), root) + "/"] = "dir"
        for f in files:
            p = os.path.join(dp, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, root)] = hashlib.sha256(fh.read()).hexdigest()
    return out


@pytest.fixture
def user_dir(tmp_path):
    """A directory of the user's: a CSV data set and a notes file."""
    d = tmp_path / "data"
    d.mkdir()
    rng = np.random.default_rng(1)
    X = rng.standard_normal((30, 3))
    y = X @ [1.0, -2.0, 0.5] + 0.1 * rng.standard_normal(30)
    lines = ["a,b,c,y"] + [",".join(f"{v:.6f}" for v in (*row, t)) for row, t in zip(X, y)]
    (d / "reg.csv").write_text("\n".join(lines) + "\n")
    (d / "notes.txt").write_text("my notes, not ntkscale's\n")
    return d


def _job(tmp_path, data_path, store=None, out=None, **sections):
    doc = {"job": {"out": str(out or tmp_path / "run"), "stages": ["gram", "fit", "predict"]},
           "data": {"source": "file", "path": str(data_path), "target": "y", "test_fraction": 0.2,
                    "task": "regression"},
           "model": {"depth": 1}, "cluster": {"kind": "sync"},
           "kernel": {"store": str(store)} if store else {}, **sections}
    return parse_job(doc, environ={})


# ---------------------------------------------------------------- defect 1: the reported data loss
def test_store_pointing_at_the_data_folder_is_refused_and_nothing_changes(tmp_path, user_dir):
    before = _snapshot(tmp_path)
    cfg = _job(tmp_path, user_dir / "reg.csv", store=user_dir)
    with pytest.raises(UnsafePathError, match="not written by ntkscale") as e:
        run_stages(cfg, cfg.job["stages"])
    assert str(user_dir) in str(e.value) and "notes.txt" in str(e.value)
    assert _snapshot(tmp_path) == before  # the data folder intact, no run directory created


def test_store_at_the_run_directory_is_refused(tmp_path, user_dir):
    cfg = _job(tmp_path, user_dir / "reg.csv", store=tmp_path / "run", out=tmp_path / "run")
    with pytest.raises(ConfigError, match="run directory"):
        run_stages(cfg, cfg.job["stages"])
    cfg = _job(tmp_path, user_dir / "reg.csv", store=tmp_path, out=tmp_path / "run")  # holds the run dir
    with pytest.raises(ConfigError, match="contains it"):
        run_stages(cfg, cfg.job["stages"])
    assert not (tmp_path / "run").exists()


def test_store_at_an_input_zarr_dataset_is_refused(tmp_path):
    import zarr

    ds = tmp_path / "inputs.zarr"
    g = zarr.open_group(str(ds), mode="w")
    g.create_array("x", shape=(24, 3), dtype="f8")[...] = _x()
    before = _snapshot(ds)
    with pytest.raises(UnsafePathError, match="not written by ntkscale"):
        build_gram(ARCH, _x(), ds, client="sync")
    assert _snapshot(ds) == before


# ---------------------------------------------------------------- every writer, local and fsspec
def _memory_user_dir(name):
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.pipe(f"/{name}/notes.txt", b"user's")
    fs.pipe(f"/{name}/sub/data.bin", b"\x00\x01")
    return fs, f"memory://{name}"


def test_gram_store_refuses_foreign_locations(tmp_path, user_dir):
    with pytest.raises(UnsafePathError):
        build_gram(ARCH, _x(), user_dir, client="sync")
    f = tmp_path / "a-file"
    f.write_text("x")
    with pytest.raises(UnsafePathError, match="is a file"):
        build_gram(ARCH, _x(), f, client="sync")
    fs, url = _memory_user_dir("gram-foreign")
    with pytest.raises(UnsafePathError, match="notes.txt"):
        build_gram(ARCH, _x(), url, client="sync")
    assert fs.cat("/gram-foreign/notes.txt") == b"user's" and fs.cat("/gram-foreign/sub/data.bin") == b"\x00\x01"
    # an empty location is fine, and gets the marker first
    assert build_gram(ARCH, _x(), "memory://gram-new", client="sync").computed >= 1
    assert inspect_dir("memory://gram-new", "gram-store").state == "ours"


def test_factor_store_refuses_foreign_and_other_kinds(tmp_path, user_dir):
    from ntkscale.operator import StoredGram
    from ntkscale.tiling.cholesky import factor_tiles

    store = tmp_path / "g"
    build_gram(ARCH, _x(), store, client="sync", tile=16)
    op = StoredGram(store, "ntk", client="sync")
    before = _snapshot(user_dir)
    with pytest.raises(UnsafePathError, match="not written by ntkscale"):
        factor_tiles(op, 0.1, factor_url=str(user_dir))
    with pytest.raises(UnsafePathError, match="is an ntkscale Gram store, not a factor store"):
        factor_tiles(op, 0.1, factor_url=str(store))
    with pytest.raises(UnsafePathError, match="not written by ntkscale"):
        factor_tiles(op, 0.1, factor_url=str(user_dir), overwrite=True)  # overwrite never reaches it
    assert _snapshot(user_dir) == before
    f = factor_tiles(op, 0.1, factor_url=str(tmp_path / "f"))
    with pytest.raises(UnsafePathError, match="is an ntkscale factor store, not a Gram store"):
        build_gram(ARCH, _x(), f.url, client="sync")
    fs, url = _memory_user_dir("factor-foreign")
    with pytest.raises(UnsafePathError):
        factor_tiles(op, 0.1, factor_url=url)
    assert fs.cat("/factor-foreign/notes.txt") == b"user's"


def test_zarr_export_refuses_foreign_and_replaces_its_own(tmp_path, user_dir):
    from ntkscale.storage.arrays import read_arrays, write_arrays

    before = _snapshot(user_dir)
    with pytest.raises(UnsafePathError):
        write_arrays(str(user_dir), {"a": np.ones(3)})
    assert _snapshot(user_dir) == before
    fs, url = _memory_user_dir("arrays-foreign")
    with pytest.raises(UnsafePathError):
        write_arrays(url, {"a": np.ones(3)})
    assert fs.cat("/arrays-foreign/notes.txt") == b"user's"
    out = str(tmp_path / "e.zarr")
    write_arrays(out, {"a": np.ones(3), "b": np.zeros(2)})
    write_arrays(out, {"c": np.arange(4)})  # its own group: replaced whole
    arrays, _ = read_arrays(out)
    assert list(arrays) == ["c"]


def test_job_run_directory_and_export_path_refuse_foreign(tmp_path, user_dir):
    before = _snapshot(tmp_path)
    cfg = _job(tmp_path, user_dir / "reg.csv", out=user_dir)
    with pytest.raises(UnsafePathError, match=r"\[job\] out"):
        run_stages(cfg, cfg.job["stages"])
    occupied = tmp_path / "occupied"
    occupied.write_text("a file where the run directory should go")
    cfg = _job(tmp_path, user_dir / "reg.csv", out=occupied)
    with pytest.raises(UnsafePathError, match="is a file"):
        run_stages(cfg, cfg.job["stages"])
    assert _snapshot(tmp_path) == {**before, "occupied": _snapshot(tmp_path)["occupied"]}
    cfg = _job(tmp_path, user_dir / "reg.csv",
               job={"out": str(tmp_path / "run"), "stages": ["gram", "fit", "predict", "export"]},
               export={"path": str(user_dir), "format": "zarr"})
    with pytest.raises(UnsafePathError, match=r"\[export\] path"):
        run_stages(cfg, cfg.job["stages"])
    assert _snapshot(user_dir) == _snapshot(tmp_path / "data")
    assert sorted(os.listdir(user_dir)) == ["notes.txt", "reg.csv"]


def test_unwritable_run_directory_names_it(tmp_path, user_dir, monkeypatch):
    import ntkscale.storage.ownership as own

    parent = tmp_path / "ro"
    parent.mkdir()
    real = os.access
    monkeypatch.setattr(own.os, "access", lambda p, m: False if str(p) == str(parent) else real(p, m))
    cfg = _job(tmp_path, user_dir / "reg.csv", out=parent / "run")
    with pytest.raises(OSError, match="not writable"):
        run_stages(cfg, cfg.job["stages"])


def test_demo_and_study_outputs_refuse_foreign(user_dir):
    from ntkscale.demo import run_demo
    from ntkscale.studies.transformer_report import write_outputs

    before = _snapshot(user_dir)
    with pytest.raises(UnsafePathError):
        run_demo(out=str(user_dir), n=20, client="sync")
    with pytest.raises(UnsafePathError):
        write_outputs({}, str(user_dir), "cmd")
    assert _snapshot(user_dir) == before


def test_single_output_files(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    theirs = tmp_path / "theirs.parquet"
    pq.write_table(pa.table({"x": [1, 2]}), theirs)
    with pytest.raises(UnsafePathError, match="not written by ntkscale"):
        check_target_file(theirs)
    ours = tmp_path / "ours.parquet"
    t = pa.table({"x": [1, 2]})
    pq.write_table(t.replace_schema_metadata(mark_parquet_metadata("predictions")), ours)
    check_target_file(ours)  # ntkscale's own file: may be replaced
    check_target_file(tmp_path / "new.parquet")
    with pytest.raises(UnsafePathError, match="is a directory"):
        check_target_file(tmp_path)
    np.savez(tmp_path / "x.npz", a=np.ones(2))
    with pytest.raises(UnsafePathError):
        check_target_file(tmp_path / "x.npz")
    np.savez(tmp_path / "y.npz", a=np.ones(2), __ntkscale__=np.array("predictions"))
    check_target_file(tmp_path / "y.npz")


# ---------------------------------------------------------------- clearing and adoption
def test_overwrite_never_deletes_a_file_the_user_put_into_a_store(tmp_path):
    store = tmp_path / "g"
    build_gram(ARCH, _x(), store, client="sync", tile=16)
    (store / "my-notes.txt").write_text("keep me")
    before = _snapshot(store)
    with pytest.raises(UnsafePathError, match="my-notes.txt"):
        build_gram(ARCH, _x(seed=3), store, client="sync", tile=16, overwrite=True)
    assert _snapshot(store) == before


def test_stores_written_before_markers_are_adopted(tmp_path):
    store = tmp_path / "g"
    build_gram(ARCH, _x(), store, client="sync", tile=16)
    import json

    doc = json.loads((store / "zarr.json").read_text())
    del doc["attributes"][OWNER_ATTR]  # as a store of an earlier version
    (store / "zarr.json").write_text(json.dumps(doc))
    assert inspect_dir(store, "gram-store").state == "legacy"
    assert build_gram(ARCH, _x(), store, client="sync", tile=16).computed == 0  # resumed as it is
    rep = build_gram(ARCH, _x(seed=5), store, client="sync", tile=16, overwrite=True)  # replaced
    assert rep.computed == 3 and inspect_dir(store, "gram-store").state == "ours"
    assert MARKER  # run directories carry the marker file instead
    run = tmp_path / "old-run"
    run.mkdir()
    for name in ("config.resolved.json", "metrics.json", "report.md"):
        (run / name).write_text("{}")
    assert check_dir(run, "run").state == "legacy"
    (run / "mine.txt").write_text("x")
    with pytest.raises(UnsafePathError):
        check_dir(run, "run")


def test_clear_dir_deletes_only_zarr_nodes_of_an_owned_store(tmp_path):
    loc = tmp_path / "s"
    claim_dir(loc, "arrays")
    import zarr

    g = zarr.open_group(str(loc), mode="a")
    g.create_array("a", shape=(2,), dtype="f8")
    g.attrs["old"] = 1
    clear_dir(loc, "arrays")
    assert sorted(os.listdir(loc)) == ["zarr.json"]
    assert dict(zarr.open_group(str(loc), mode="r").attrs).keys() == {OWNER_ATTR}  # old metadata gone
    with pytest.raises(ValueError, match="Zarr stores only"):
        clear_dir(tmp_path / "run", "run")


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
