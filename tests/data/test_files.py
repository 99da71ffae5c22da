"""source = "file": npy / npz / zarr / csv / parquet round trips (local paths and a
``memory://`` fsspec URL), a separate test file, and the errors on bad data.

Oracle: the arrays written, indexed by the rows the loader reports (exact equality: csv is
written with shortest round-trip decimals and read back exactly).
"""

import importlib.util
import json

import numpy as np
import pytest

from ntkscale.data import DataError, load_dataset, validate_data

HAVE_PYARROW = importlib.util.find_spec("pyarrow") is not None
N, D = 40, 3


@pytest.fixture
def arrays():
    rng = np.random.default_rng(7)
    return rng.standard_normal((N, D)), rng.integers(0, 3, N)


def load(**table):
    return load_dataset(validate_data({"source": "file", "preprocess": "none", **table}))


def write(fmt, base, X, y, columns=("a", "b", "c")):
    """Write (X, y) as ``fmt`` under ``base`` (a folder path or a memory:// URL); the [data] keys."""
    import fsspec
    import pandas as pd

    if fmt == "npy":
        for name, a in (("X", X), ("y", y)):
            with fsspec.open(f"{base}/{name}.npy", "wb") as f:
                np.save(f, a)
        return {"path": f"{base}/X.npy", "y_path": f"{base}/y.npy"}
    if fmt == "npz":
        with fsspec.open(f"{base}/d.npz", "wb") as f:
            np.savez(f, features=X, labels=y)
        return {"path": f"{base}/d.npz", "x_key": "features", "y_key": "labels"}
    if fmt == "zarr":
        import zarr

        g = zarr.open_group(f"{base}/d.zarr", mode="w")
        g.create_array("X", data=X, chunks=(16, D))
        g.create_array("y", data=y)
        return {"path": f"{base}/d.zarr"}
    df = pd.DataFrame(X, columns=list(columns)).assign(label=y)
    with fsspec.open(f"{base}/d.{fmt}", "wb") as f:
        df.to_csv(f, index=False) if fmt == "csv" else df.to_parquet(f)
    return {"path": f"{base}/d.{fmt}", "target": "label"}


FORMATS = ["npy", "npz", "zarr", "csv",
           pytest.param("parquet", marks=pytest.mark.skipif(not HAVE_PYARROW, reason="pyarrow not installed"))]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("where", ["local", "memory"])
def test_round_trip(fmt, where, arrays, tmp_path, request):
    X, y = arrays
    base = str(tmp_path) if where == "local" else f"memory://ntk-{request.node.name}"
    keys = write(fmt, base, X, y)
    ds = load(**keys, test_fraction=0.25, seed=3)
    assert ds.X_train.shape == (30, D) and ds.X_test.shape == (10, D)
    assert ds.task == "classification" and np.array_equal(ds.classes, [0, 1, 2])
    np.testing.assert_array_equal(ds.X_train, X[ds.train_index])
    np.testing.assert_array_equal(ds.y_test, y[ds.test_index])
    assert not np.intersect1d(ds.train_index, ds.test_index).size
    files = ds.info["files"]
    assert files[0]["format"] == fmt and len(files[0]["fingerprint"]) == 32
    json.dumps(ds.info)


def test_fingerprint_tracks_content(arrays, tmp_path):
    X, y = arrays
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    fa = load(**write("npz", tmp_path / "a", X, y)).info
    X2 = X.copy()
    X2[5, 1] += 1e-12
    fb = load(**write("npz", tmp_path / "b", X2, y)).info
    assert fa["files"][0]["fingerprint"] != fb["files"][0]["fingerprint"]
    assert fa["fingerprints"]["y_train"] == fb["fingerprints"]["y_train"]
    assert fa["fingerprints"]["X_train"] != fb["fingerprints"]["X_train"]


def test_separate_test_file_and_images_flattened(tmp_path):
    rng = np.random.default_rng(0)
    Xtr, Xte = rng.random((20, 4, 5)), rng.random((12, 4, 5))
    ytr, yte = rng.standard_normal(20), rng.standard_normal(12)
    np.savez(tmp_path / "tr.npz", X=Xtr, y=ytr)
    np.savez(tmp_path / "te.npz", X=Xte, y=yte)
    ds = load(path=str(tmp_path / "tr.npz"), test_path=f"file://{tmp_path}/te.npz", n_test=5)
    assert ds.task == "regression" and ds.X_train.shape == (20, 20) and ds.X_test.shape == (5, 20)
    np.testing.assert_array_equal(ds.X_train, Xtr.reshape(20, -1))  # all rows: source order
    np.testing.assert_array_equal(ds.X_test, Xte.reshape(12, -1)[ds.test_index])
    assert ds.info["available"] == {"train": 20, "test": 12}
    np.savez(tmp_path / "bad.npz", X=rng.random((12, 7)), y=yte)
    with pytest.raises(DataError, match="20 features but the test rows have 7"):
        load(path=str(tmp_path / "tr.npz"), test_path=str(tmp_path / "bad.npz"))


def test_nan_rows_are_counted_and_located(arrays, tmp_path):
    X, y = arrays
    X = X.copy()
    X[5, 0], X[17, 2] = np.nan, np.inf
    with pytest.raises(DataError, match=r"X has NaN/Inf/missing values in 2 of 40 rows \(first: row 5.*17"):
        load(**write("npz", tmp_path, X, y))
    yf = y.astype(float)
    yf[9] = np.nan
    with pytest.raises(DataError, match=r"y has NaN/Inf/missing values in 1 of 40 rows \(first: row 9"):
        load(**write("npy", tmp_path, arrays[0], yf))


def test_length_and_key_errors(arrays, tmp_path):
    X, y = arrays
    with pytest.raises(DataError, match="X has 40 rows but y has 39"):
        load(**write("npy", tmp_path, X, y[:-1]))
    keys = write("npz", tmp_path, X, y)
    with pytest.raises(DataError, match=r"'data.x_key' = 'X' is not in .*arrays: features, labels"):
        load(path=keys["path"])
    with pytest.raises(FileNotFoundError, match=r"'data.path' = .*nothing.npz.*no such file"):
        load(path=str(tmp_path / "nothing.npz"))
    with pytest.raises(DataError, match=r"'data.y_key' = 'target' is not in"):
        load(**write("zarr", tmp_path, X, y), y_key="target")
    import zarr

    zarr.create_array(str(tmp_path / "array.zarr"), shape=(3,), dtype="f8")  # an array, no group
    with pytest.raises(DataError, match=r"'data.path' = .*array.zarr' is not a zarr group holding 'X' and 'y' "
                                        r"arrays: ContainsArrayError"):
        load(path=str(tmp_path / "array.zarr"), format="zarr", x_key="X", y_key="y")
    with pytest.raises(FileNotFoundError, match=r"'data.path' = .*none.zarr'.*no zarr group there"):
        load(path=str(tmp_path / "none.zarr"), format="zarr", x_key="X", y_key="y")


def test_csv_columns_labels_and_task(tmp_path):
    import pandas as pd

    rng = np.random.default_rng(1)
    df = pd.DataFrame({"size": rng.random(30), "rooms": rng.integers(1, 6, 30),
                       "city": rng.choice(["a", "b"], 30), "price": rng.integers(0, 10 ** 6, 30),
                       "kind": rng.choice(["flat", "house"], 30)})
    p = str(tmp_path / "h.csv")
    df.to_csv(p, index=False)
    with pytest.raises(DataError, match=r"feature columns 'city', 'kind' are not numeric.*'data.x_columns'"):
        load(path=p, target="price")
    ds = load(path=p, target="price", x_columns=["size", "rooms"], n_test=10)
    assert ds.task == "regression" and "distinct values" in ds.info["task_reason"]  # int prices
    assert ds.info["files"][0]["columns"] == ["size", "rooms"]
    ds = load(path=p, target="kind", x_columns=["size", "rooms"])
    assert ds.task == "classification" and ds.classes.tolist() == ["flat", "house"]
    with pytest.raises(DataError, match=r"'data.target' = 'cost' is not a column.*size, rooms, city"):
        load(path=p, target="cost")
    with pytest.raises(DataError, match=r"task = 'regression' needs numeric targets"):
        load(path=p, target="kind", x_columns=["size"], task="regression")
    with pytest.raises(DataError, match=r"non-integer values"):
        load(path=p, target="size", x_columns=["rooms"], task="classification")
    df.loc[[4, 11], "kind"] = None
    df.to_csv(p, index=False)
    with pytest.raises(DataError, match=r"y has NaN/Inf/missing values in 2 of 30 rows \(first: row 4"):
        load(path=p, target="kind", x_columns=["size"])


@pytest.mark.skipif(HAVE_PYARROW, reason="pyarrow is installed: parquet works")
def test_parquet_without_pyarrow_says_what_to_install(tmp_path):
    (tmp_path / "d.parquet").write_bytes(b"PAR1")
    with pytest.raises(ImportError, match="pip install pyarrow"):
        load(path=str(tmp_path / "d.parquet"), target="y")
