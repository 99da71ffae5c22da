"""Relative ``[data]`` input paths are read from the job file's folder, not the current
directory (issue 24, defect 7); outputs (``job.out``, ``kernel.store``) are not changed."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest

from ntkscale.job import load_job, parse_job, run_stages


def _csv(path, n=30, seed=0):
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("a,b,t\n" + "".join(f"{a!r},{b!r},{t!r}\n" for a, b, t in rng.standard_normal((n, 3)).tolist()))


def _job(folder, data, out):
    folder.mkdir(parents=True, exist_ok=True)
    lines = [f'[job]\nout = "{out}"\nstages = ["gram", "fit", "predict"]\n[data]\nsource = "file"\n']
    lines += [f'{k} = "{v}"\n' for k, v in data.items()]
    lines += ['[model]\ndepth = 1\n[cluster]\nkind = "sync"\n']
    p = folder / "job.toml"
    p.write_text("".join(lines))
    return str(p)


def test_relative_data_paths_are_read_from_the_job_folder(tmp_path, monkeypatch):
    jobs = tmp_path / "jobs"
    _csv(str(jobs / "data" / "train.csv"))
    _csv(str(jobs / "data" / "test.csv"), n=8, seed=1)
    job = _job(jobs, {"path": "data/train.csv", "test_path": "./data/test.csv", "target": "t"},
               tmp_path / "run")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_job(job)
    assert cfg.data.path == str(jobs / "data" / "train.csv")
    assert cfg.data.test_path == str(jobs / "data" / "test.csv")
    run_stages(cfg, ["gram", "fit", "predict"], progress=False)
    resolved = json.loads((tmp_path / "run" / "config.resolved.json").read_text())["data"]
    assert resolved["path"] == str(jobs / "data" / "train.csv") and resolved["base"] == str(jobs)
    assert resolved["given"] == {"path": "data/train.csv", "test_path": "./data/test.csv"}
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["data"]["n_test"] == 8


def test_a_missing_relative_file_names_the_base(tmp_path, monkeypatch):
    jobs = tmp_path / "jobs"
    job = _job(jobs, {"path": "data/reg.csv", "target": "t"}, tmp_path / "run")
    monkeypatch.chdir(tmp_path)
    cfg = load_job(job)
    from ntkscale.data import load_dataset

    with pytest.raises(FileNotFoundError, match=re.escape(
            f"'data.path' = 'data/reg.csv' not found (relative paths in a job file are read from its "
            f"folder {jobs}; resolved to {jobs / 'data' / 'reg.csv'})")):
        load_dataset(cfg.data)


def test_npy_pairs_absolute_paths_and_urls(tmp_path, monkeypatch):
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    np.save(jobs / "X.npy", np.zeros((4, 2)))
    job = _job(jobs, {"path": "X.npy", "y_path": "y.npy"}, tmp_path / "run")
    monkeypatch.chdir(tmp_path)
    cfg = load_job(job)
    assert (cfg.data.path, cfg.data.y_path) == (str(jobs / "X.npy"), str(jobs / "y.npy"))
    from ntkscale.data import load_dataset

    with pytest.raises(FileNotFoundError, match=r"'data\.y_path' = 'y\.npy' not found .*resolved to "):
        load_dataset(cfg.data)
    absolute = str(tmp_path / "abs.csv")
    for given in (absolute, "memory://bucket/x.csv", "s3://bucket/x.csv"):
        cfg = load_job(_job(jobs, {"path": given, "target": "t"}, tmp_path / "run"))
        assert cfg.data.path == given and cfg.data.given == {}


def test_parse_job_without_a_source_keeps_the_current_directory():
    cfg = parse_job({"data": {"source": "file", "path": "data/x.csv", "target": "t"}})
    assert cfg.data.path == "data/x.csv" and cfg.data.base is None


def test_outputs_are_not_moved(tmp_path, monkeypatch):
    jobs = tmp_path / "jobs"
    job = _job(jobs, {"path": "d.csv", "target": "t"}, "runs/x")
    monkeypatch.chdir(tmp_path)
    cfg = load_job(job)
    assert cfg.out == "runs/x" and cfg.store == os.path.join("runs/x", "gram.zarr")
