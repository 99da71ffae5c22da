"""``[data] task = "auto"`` says what it chose and why, and warns when the choice is doubtful
(issue 24, defect 5: an integer regression target with 13 levels silently became 13-class
classification)."""

from __future__ import annotations

import json
import logging
import warnings

import numpy as np
import pytest

from ntkscale.data import TaskWarning, load_dataset, validate_data


def _csv(tmp_path, y, name="reg.csv"):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((len(y), 3))
    lines = ["a,b,c,t"] + [f"{a!r},{b!r},{c!r},{int(t)}" for (a, b, c), t in zip(X.tolist(), y)]
    p = tmp_path / name
    p.write_text("\n".join(lines) + "\n")
    return str(p)


def _load(path, **kw):
    return load_dataset(validate_data({"source": "file", "path": path, "target": "t", **kw}))


def test_integer_scale_target_is_explained_and_warned(tmp_path, caplog):
    y = np.arange(100) % 13  # 13 consecutive levels in 100 rows: a scale, not labels
    path = _csv(tmp_path, y)
    with caplog.at_level(logging.INFO, logger="ntkscale.data"), \
            pytest.warns(TaskWarning, match=r"consecutive integers 0\.\.12.*'data\.task' = 'regression'"):
        ds = _load(path)
    assert ds.task == "classification"
    assert "13 distinct values" in ds.info["task_reason"] and "task = 'regression'" in ds.info["task_reason"]
    assert len(ds.info["task_doubts"]) >= 2  # a scale, and 13 classes > sqrt(100)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "task 'classification' inferred: integer y with 13 distinct values" in logged
    assert any(r.levelno == logging.WARNING and "consecutive integers" in r.getMessage()
               for r in caplog.records)


def test_few_rows_per_class_are_warned(tmp_path):
    y = np.array([0] * 30 + [1] * 30 + [2] * 3)
    with pytest.warns(TaskWarning, match=r"1 class has fewer than 5 rows \(class 2: 3\)"):
        _load(_csv(tmp_path, y), test_fraction=0.1)


@pytest.mark.parametrize("task", ["auto", "classification"])
def test_plain_labels_and_a_set_task_do_not_warn(tmp_path, task):
    y = np.arange(120) % 4  # 4 labels, 30 rows each
    with warnings.catch_warnings():
        warnings.simplefilter("error", TaskWarning)
        ds = _load(_csv(tmp_path, y), task=task)
    assert ds.task == "classification" and ds.info["task_doubts"] == []
    with warnings.catch_warnings():  # a task set in the job file is never questioned
        warnings.simplefilter("error", TaskWarning)
        _load(_csv(tmp_path, np.arange(100) % 13, "scale.csv"), task="classification")


def test_run_records_the_inference_in_metrics_and_report(tmp_path):
    from ntkscale.job import parse_job, run_job

    path = _csv(tmp_path, np.arange(60) % 13)
    cfg = parse_job({"job": {"out": str(tmp_path / "run"), "stages": ["gram", "fit", "predict"]},
                     "data": {"source": "file", "path": path, "target": "t"},
                     "model": {"depth": 1}, "cluster": {"kind": "sync"}})
    with pytest.warns(TaskWarning):
        run_job(cfg, progress=False)
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert "13 distinct values" in m["data"]["task_reason"]
    assert any("consecutive integers" in w for w in m["data"]["task_doubts"])
    report = (tmp_path / "run" / "report.md").read_text()
    assert "task classification: integer y with 13 distinct values" in report and "**warning** (task)" in report
