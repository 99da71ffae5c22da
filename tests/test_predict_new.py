"""Issue 24, defect 9: predictions on new rows (``ntkscale predict JOB --input NEW --out PREDS``),
held-out rows' source indices (predictions.npz ``row``, the export's ``row``), and fitted
estimators loaded from a run directory (``NTKRegressor.from_run`` / ``NTKClassifier.from_run``)."""

from __future__ import annotations

import os

import numpy as np
import pytest
from click.testing import CliRunner

from ntkscale.cli.main import cli
from ntkscale.data import DataError
from ntkscale.estimators import NTKClassifier, NTKRegressor
from ntkscale.job import load_job
from ntkscale.job.context import JobContext
from ntkscale.job.predict_new import predict_new

pd = pytest.importorskip("pandas")
pq = pytest.importorskip("pyarrow.parquet")

CSV_JOB = """
[job]
name = "csv"
out = "{out}"
stages = ["gram", "fit", "predict", "export"]
[data]
source = "file"
path = "{path}"
target = "y"
test_fraction = 0.3
preprocess = "standardize"
[model]
depth = 2
[kernel]
dtype = "float64"
tile = 32
[solver]
ridge = 1e-2
[export]
format = "parquet"
[cluster]
kind = "sync"
"""

IRIS_JOB = """
[job]
name = "iris"
out = "{out}"
stages = ["gram", "fit", "predict"]
[data]
source = "sklearn"
name = "iris"
n_test = 50
preprocess = "sphere"
[model]
depth = 2
[kernel]
dtype = "float64"
[solver]
ridge = "loo"
[cluster]
kind = "sync"
"""


def _run(args):
    r = CliRunner().invoke(cli, ["--log-level", "warning", *args], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return r


def _snapshot(folder):
    """Every file under a folder with its size and mtime (what 'untouched' means)."""
    out = {}
    for dp, _, fs in os.walk(folder):
        for f in fs:
            st = os.stat(os.path.join(dp, f))
            out[os.path.relpath(os.path.join(dp, f), folder)] = (st.st_size, st.st_mtime_ns)
    return out


@pytest.fixture(scope="module")
def csv_run(tmp_path_factory):
    """A regression job on a csv file whose target tells the row (y = row / 10 + f(x)), with a
    seeded 30 % hold-out: the held-out rows are a shuffled subset of the file."""
    tmp = tmp_path_factory.mktemp("csv")
    rng = np.random.default_rng(3)
    n = 120
    df = pd.DataFrame({"a": rng.standard_normal(n), "b": rng.standard_normal(n),
                       "c": rng.standard_normal(n)})
    df["y"] = np.arange(n) / 10 + np.sin(df["a"]) + df["b"] * df["c"]
    df = df[["a", "y", "b", "c"]]  # the target between the features
    df.to_csv(tmp / "data.csv", index=False)
    job = tmp / "job.toml"
    job.write_text(CSV_JOB.format(out=tmp / "run", path=tmp / "data.csv"))
    _run(["run", str(job)])
    return tmp, str(job), df


@pytest.fixture(scope="module")
def iris_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("iris")
    job = tmp / "job.toml"
    job.write_text(IRIS_JOB.format(out=tmp / "run"))
    _run(["run", str(job)])
    return tmp, str(job)


# ------------------------------------------------------------------ held-out row indices
def test_export_rows_are_the_source_rows(csv_run):
    tmp, job, df = csv_run
    pred = np.load(tmp / "run" / "predictions.npz")
    t = pq.read_table(tmp / "run" / "export" / "predictions.parquet").to_pandas()
    rows = t["row"].to_numpy()
    assert len(rows) == 36 and not np.array_equal(rows, np.arange(36))  # a hold-out, not 0..m-1
    np.testing.assert_array_equal(rows, pred["row"])
    # the exported target of each row is the file's target in that row
    np.testing.assert_array_equal(t["target_0"].to_numpy(), df["y"].to_numpy()[rows])
    d = JobContext(load_job(job)).data
    np.testing.assert_array_equal(d.test_index, rows)


# ------------------------------------------------------------------ from_run
def test_regressor_from_run_equals_the_job(csv_run):
    tmp, job, _ = csv_run
    est = NTKRegressor.from_run(tmp / "run", client="sync")
    d = JobContext(load_job(job)).data
    job_pred = np.load(tmp / "run" / "predictions.npz")["prediction"][:, 0]
    pred = est.predict(d.X_test)
    assert pred.shape == job_pred.shape
    assert np.max(np.abs(pred - job_pred)) < 1e-10
    assert est.ridge_ == pytest.approx(1e-2 * np.mean(np.diag(est.arch_.kernel_fn(
        d.X_train, None, "ntk", dtype=np.float64))), rel=1e-10)
    new = np.random.default_rng(0).standard_normal((7, 3))
    assert est.predict(new).shape == (7,)
    with pytest.raises(ValueError, match="NTKRegressor.from_run"):
        NTKClassifier.from_run(tmp / "run")


def test_classifier_from_run_equals_the_job(iris_run):
    tmp, job = iris_run
    clf = NTKClassifier.from_run(tmp / "run", client="sync")
    d = JobContext(load_job(job)).data
    job_scores = np.load(tmp / "run" / "predictions.npz")["prediction"]
    assert np.max(np.abs(clf.decision_function(d.X_test) - job_scores)) < 1e-10
    np.testing.assert_array_equal(clf.classes_, [0, 1, 2])
    with pytest.raises(ValueError, match="NTKClassifier.from_run"):
        NTKRegressor.from_run(tmp / "run")


def test_from_run_without_a_fit_says_which_stage(tmp_path, csv_run):
    with pytest.raises(FileNotFoundError, match="not a run directory"):
        NTKRegressor.from_run(tmp_path)
    (tmp_path / "config.resolved.json").write_text((csv_run[0] / "run" / "config.resolved.json").read_text())
    with pytest.raises(FileNotFoundError, match="'fit' stage"):
        NTKRegressor.from_run(tmp_path)


# ------------------------------------------------------------------ predict --input
def test_predict_new_rows_matches_the_job_and_leaves_the_run(csv_run):
    """The held-out rows given again as a new file (no target, columns reordered, an extra
    column) get the job's predictions; the run directory is not touched."""
    tmp, job, df = csv_run
    pred = np.load(tmp / "run" / "predictions.npz")
    new = df.iloc[pred["row"]][["c", "b", "a"]].assign(note="x")
    new.to_csv(tmp / "new.csv", index=False)
    before = _snapshot(tmp / "run")
    out = tmp / "preds.parquet"
    _run(["predict", job, "--input", str(tmp / "new.csv"), "--out", str(out)])
    assert _snapshot(tmp / "run") == before
    t = pq.read_table(out)
    assert b"ntkscale" in t.schema.metadata
    t = t.to_pandas()
    assert list(t.columns) == ["row", "prediction_0"]
    np.testing.assert_array_equal(t["row"], np.arange(len(new)))
    assert np.max(np.abs(t["prediction_0"].to_numpy() - pred["prediction"][:, 0])) < 1e-10
    # again: our own file is replaced; other formats by suffix; the target, when given, is scored
    df.iloc[pred["row"]].to_csv(tmp / "labelled.csv", index=False)
    s = predict_new(load_job(job), str(tmp / "labelled.csv"), str(out))
    assert s["mse"] == pytest.approx(np.mean((pred["prediction"] - pred["target"]) ** 2), rel=1e-9)
    for name in ("preds.npz", "preds.csv"):
        predict_new(load_job(job), str(tmp / "new.csv"), str(tmp / name))
    z = np.load(tmp / "preds.npz")
    np.testing.assert_allclose(z["prediction_0"], pred["prediction"][:, 0], rtol=0, atol=1e-10)
    back = pd.read_csv(tmp / "preds.csv", comment="#")
    np.testing.assert_allclose(back["prediction_0"], pred["prediction"][:, 0], rtol=1e-12)


def test_predict_new_classification_npz(iris_run):
    tmp, job = iris_run
    from sklearn.datasets import load_iris

    X, y = load_iris(return_X_y=True)
    pred = np.load(tmp / "run" / "predictions.npz")
    np.savez(tmp / "new.npz", X=X[pred["row"]])  # no y
    s = predict_new(load_job(job), str(tmp / "new.npz"), str(tmp / "p.parquet"))
    t = pq.read_table(tmp / "p.parquet").to_pandas()
    assert s["columns"] == ["row", "prediction_0", "prediction_1", "prediction_2", "label"]
    scores = t.filter(like="prediction_").to_numpy()
    assert np.max(np.abs(scores - pred["prediction"])) < 1e-10
    np.testing.assert_array_equal(t["label"], np.argmax(pred["prediction"], 1))
    np.savez(tmp / "labelled.npz", X=X[pred["row"]], y=y[pred["row"]])
    s = predict_new(load_job(job), str(tmp / "labelled.npz"), str(tmp / "p.parquet"))
    assert s["accuracy"] == pytest.approx(np.mean(t["label"].to_numpy() == y[pred["row"]]))


@pytest.mark.parametrize("make, match", [
    (lambda df: df.drop(columns=["b"]), "lacks the feature column 'b'"),
    (lambda df: df.assign(a=np.where(np.arange(len(df)) == 2, np.nan, df["a"])), "NaN.*row 2"),
])
def test_predict_new_bad_csv_is_refused_before_work(csv_run, make, match):
    tmp, job, df = csv_run
    make(df).to_csv(tmp / "bad.csv", index=False)
    with pytest.raises(DataError, match=match):
        predict_new(load_job(job), str(tmp / "bad.csv"), str(tmp / "never.parquet"))
    assert not (tmp / "never.parquet").exists()


def test_predict_new_refusals(csv_run, tmp_path):
    tmp, job, df = csv_run
    np.save(tmp_path / "wide.npy", np.zeros((4, 5)))
    with pytest.raises(DataError, match="5 features per row but the job was trained on 3"):
        predict_new(load_job(job), str(tmp_path / "wide.npy"), str(tmp_path / "p.parquet"))
    foreign = tmp_path / "mine.parquet"
    foreign.write_text("my own notes")
    with pytest.raises(OSError, match="will not be overwritten"):
        predict_new(load_job(job), str(tmp_path / "wide.npy"), str(foreign))
    assert foreign.read_text() == "my own notes"
    with pytest.raises(ValueError, match=".parquet, .npz or .csv"):
        predict_new(load_job(job), str(tmp_path / "wide.npy"), str(tmp_path / "p.txt"))
    cfg = load_job(job, out=str(tmp_path / "empty-run"))
    with pytest.raises(FileNotFoundError, match="no fit yet"):
        predict_new(cfg, str(tmp_path / "wide.npy"), str(tmp_path / "p.parquet"))
    r = CliRunner().invoke(cli, ["predict", job, "--input", str(tmp_path / "wide.npy")])
    assert r.exit_code != 0 and "--input needs --out" in r.output
