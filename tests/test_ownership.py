"""The safety rule (issue 24): ntkscale deletes or overwrites only what it can prove it wrote.

Every writer is pointed at locations that hold the user's files (local directories and an
fsspec ``memory://`` filesystem) and must refuse with one error naming the path, before any
work, leaving every file as it was. Defects 1-3 of issue 24 are reproduced as they were
reported.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from ntkscale._config import ConfigError
from ntkscale.job import run_stages
from ntkscale.storage import UnsafePathError
from ntkscale.storage.ownership import (MARKER, OWNER_ATTR, check_dir, check_target_file, claim_dir, clear_dir,
                                        inspect_dir, mark_parquet_metadata)
from ntkscale.tiling import build_gram

from _ownership import ARCH, _job, _snapshot, _x, user_dir  # noqa: F401 (user_dir: a fixture)


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
