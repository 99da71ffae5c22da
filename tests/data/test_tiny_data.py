"""Too few rows fail with one clear error from every entry point (issue 24, defect 6): a 1-row
file ran with 0 test rows and exited 0, 2 rows lost their test split silently, and
``ntkscale plan`` raised a bare ``ValueError``."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from ntkscale._config import ConfigError
from ntkscale.data import DataError, load_dataset, validate_data


def _csv(tmp_path, n, name="d.csv"):
    rng = np.random.default_rng(0)
    p = tmp_path / name
    p.write_text("a,b,t\n" + "".join(f"{a!r},{b!r},{t!r}\n" for a, b, t in rng.standard_normal((n, 3)).tolist()))
    return str(p)


def _load(path, **kw):
    return load_dataset(validate_data({"source": "file", "path": path, "target": "t", **kw}))


def test_one_row_is_refused(tmp_path):
    with pytest.raises(DataError, match=r"d\.csv has 1 row\(s\); a kernel fit needs at least 2 training rows"):
        _load(_csv(tmp_path, 1))


@pytest.mark.parametrize("n,table,fix", [
    (2, {}, r"'data\.test_fraction' = 0\.2 \(the default\) of 2 rows rounds to 0 test rows; "
            r"set 'data\.n_test' = 0 to run without a test set"),
    (2, {"test_fraction": 0.1}, r"'data\.test_fraction' = 0\.1 of 2 rows rounds to 0 test rows"),
    (6, {"test_fraction": 0.05}, r"of 6 rows rounds to 0 test rows; set 'data\.n_test' = 1 or more"),
    (3, {"n_test": 2}, r"holding out 'data\.n_test' = 2 of 3 rows leaves 1 for training.*at least 2"),
])
def test_a_split_without_test_or_training_rows_is_refused(tmp_path, n, table, fix):
    with pytest.raises(DataError, match=fix):
        _load(_csv(tmp_path, n), **table)


def test_an_explicit_empty_test_set_still_runs(tmp_path):
    ds = _load(_csv(tmp_path, 2), n_test=0)
    assert ds.n_train == 2 and ds.n_test == 0
    ds = _load(_csv(tmp_path, 2), test_fraction=0.0)
    assert ds.n_train == 2 and ds.n_test == 0


def test_one_training_row_with_a_test_file_and_n_train_one(tmp_path):
    with pytest.raises(DataError, match=r"has 1 training row\(s\); a kernel fit needs at least 2"):
        _load(_csv(tmp_path, 1), test_path=_csv(tmp_path, 4, "test.csv"))
    with pytest.raises(ConfigError, match=r"'data\.n_train' = 1: a kernel fit needs at least 2"):
        validate_data({"source": "file", "path": "x.csv", "target": "t", "n_train": 1})


def _main(monkeypatch, capsys, *args):
    from ntkscale.cli.main import main

    monkeypatch.setattr(sys, "argv", ["ntkscale", "--log-level", "warning", *args])
    with pytest.raises(SystemExit) as ex:
        main()
    return ex.value.code, capsys.readouterr()


@pytest.mark.parametrize("command", [["run"], ["gram"], ["fit"], ["predict"], ["plan", "--no-cluster"]])
def test_every_command_gives_the_same_one_line_error(tmp_path, monkeypatch, capsys, command):
    job = tmp_path / "job.toml"
    job.write_text(f'[job]\nout = "{tmp_path / "run"}"\n[data]\nsource = "file"\npath = "{_csv(tmp_path, 1)}"\n'
                   'target = "t"\n[cluster]\nkind = "sync"\n')
    code, out = _main(monkeypatch, capsys, command[0], str(job), *command[1:])
    assert code == 1
    assert out.err.strip().splitlines()[-1].startswith("Error: [data] d.csv has 1 row(s); a kernel fit needs "
                                                       "at least 2 training rows")
    assert "Traceback" not in out.err


def test_plan_sizes_are_checked_by_the_cli(tmp_path, monkeypatch, capsys):
    job = tmp_path / "job.toml"
    job.write_text('[data]\nsource = "sphere"\nn = 40\nd = 3\n')
    code, out = _main(monkeypatch, capsys, "plan", str(job), "--n", "1", "--d", "3", "--no-cluster")
    assert code == 2 and "Invalid value for '--n': 1 is not in the range x>=2" in out.err
    assert "Traceback" not in out.err
