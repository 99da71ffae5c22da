"""The [data] section: validation messages, bundled/Fashion-MNIST loading, seeded splits,
flip augmentation and preprocessing with training statistics.

Oracles: the raw source arrays (sklearn's loaders, the IDX reader) indexed by the reported
rows; sklearn's StandardScaler; the defining formulas of the sphere normalization.
Tolerances: exact equality where only indexing/copying happens; 1e-12 relative where one
float64 normalization is applied (a few ulps of error per element).
"""

import dataclasses
import json
import os

import numpy as np
import pytest

from ntkscale._config import ConfigError
from ntkscale.data import (FASHION_MNIST_DIR, DataError, load_dataset, load_fashion_mnist,
                           validate_data)

HAVE_FMNIST = os.path.exists(os.path.join(
    os.environ.get("NTKSCALE_FASHION_MNIST", FASHION_MNIST_DIR), "train-images-idx3-ubyte.gz"))
needs_fmnist = pytest.mark.skipif(not HAVE_FMNIST, reason="Fashion-MNIST not installed "
                                  "(apt-get install dataset-fashion-mnist)")


def load(seed=0, **table):
    return load_dataset(validate_data(table), seed=seed)


# ---------------------------------------------------------------- validation (no data read)

@pytest.mark.parametrize("table, match", [
    ({}, r"missing required key 'data.source'.*'fashion-mnist'.*'file'"),
    ({"source": "mnist"}, r"'data.source' = 'mnist' is not allowed.*'sphere'"),
    ({"source": "sklearn", "name": "digits", "n_trian": 5}, r"'data.n_trian' \(did you mean 'n_train'"),
    ({"source": "sklearn", "name": "digits", "flip": True}, r"unknown key 'data.flip'"),
    ({"source": "sklearn", "name": "digits", "n_train": "10"}, r"'data.n_train' must be integer"),
    ({"source": "sklearn", "name": "digits", "n_train": 0}, r"'data.n_train' = 0 must be >= 1"),
    ({"source": "sklearn", "name": "digits", "test_fraction": 1.0}, r"'data.test_fraction' = 1.0 must be < 1"),
    ({"source": "sklearn", "name": "digits", "test_fraction": 0.1, "n_test": 5}, r"one of 'data.n_test' and"),
    ({"source": "sklearn", "name": "digits", "preprocess": "pca"}, r"'data.preprocess' = 'pca'.*'standardize'"),
    ({"source": "sklearn", "name": "california_housing"}, r"fetch_california_housing.*source = 'file'"),
    ({"source": "sklearn", "name": "faces"}, r"'data.name' = 'faces' is not allowed.*'digits'"),
    ({"source": "fashion-mnist", "n_train": 60001}, r"'data.n_train' = 60001 is larger than the 60000"),
    ({"source": "fashion-mnist", "test_fraction": 0.2}, r"'data.test_fraction' does not apply.*n_test"),
    ({"source": "sphere", "d": 8}, r"needs 'data.n'.*'data.n_train'"),
    ({"source": "sphere", "d": 1, "n": 10}, r"'data.d' = 1 must be >= 2"),
    ({"source": "sphere", "n": 10, "target": "gp"}, r"'data.target' = 'gp'.*'harmonics'"),
    ({"source": "teacher-student", "n": 10, "n_train": 8, "n_test": 5}, r"'data.n' = 10 is too small"),
    ({"source": "file", "path": "a.dat"}, r"cannot tell the format of 'data.path'.*'data.format'"),
    ({"source": "file", "path": "a.npy"}, r"set 'data.y_path'"),
    ({"source": "file", "path": "a.csv"}, r"needs 'data.target'"),
    ({"source": "file", "path": "a.csv", "target": "y", "x_key": "X"}, r"'data.x_key' applies to format npz / zarr"),
    ({"source": "file", "path": "a.csv", "target": "y", "x_columns": ["a", "y"]}, r"contains the target"),
    ({"source": "file", "path": "a.npz", "test_path": "b.npz", "test_fraction": 0.3}, r"own test split"),
])
def test_validation_errors_name_the_key(table, match):
    with pytest.raises(ConfigError, match=match):
        validate_data(table)


def test_spec_defaults_frozen_and_plain():
    spec = validate_data({"source": "file", "path": "s3://bucket/train.csv.gz", "target": "price"})
    assert (spec.format, spec.preprocess, spec.task, spec.seed) == ("csv", "sphere", "auto", None)
    assert validate_data({"source": "sphere", "n": 10}).preprocess == "none"  # synthetic: raw inputs
    assert validate_data({"source": "file", "path": "x/", "format": "zarr"}).format == "zarr"
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.n_train = 3
    json.dumps(dataclasses.asdict(spec))  # the job runner writes it to the run directory


# ---------------------------------------------------------------- sklearn and splits

def test_digits_sizes_rows_and_disjoint_split():
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    ds = load(source="sklearn", name="digits", preprocess="none")
    hold = round(0.2 * 1797)  # default test_fraction
    assert ds.X_train.shape == (1797 - hold, 64) and ds.X_test.shape == (hold, 64)
    assert ds.X_train.dtype == np.float64 and ds.y_train.dtype.kind == "i"
    assert ds.task == "classification" and np.array_equal(ds.classes, np.arange(10))
    assert not np.intersect1d(ds.train_index, ds.test_index).size
    assert np.array_equal(np.union1d(ds.train_index, ds.test_index), np.arange(1797))
    np.testing.assert_array_equal(ds.X_train, X[ds.train_index])
    np.testing.assert_array_equal(ds.y_test, y[ds.test_index])
    json.dumps(ds.info)


@pytest.mark.parametrize("name, n, d, task, ydim", [
    ("iris", 150, 4, "classification", 1), ("wine", 178, 13, "classification", 1),
    ("breast_cancer", 569, 30, "classification", 1), ("diabetes", 442, 10, "regression", 1),
    ("linnerud", 20, 3, "regression", 3)])
def test_bundled_sklearn_sets(name, n, d, task, ydim):
    ds = load(source="sklearn", name=name, n_test=5)
    assert (ds.n_train, ds.n_test, ds.d, ds.task) == (n - 5, 5, d, task)
    assert ds.y_train.shape == ((n - 5,) if ydim == 1 else (n - 5, ydim))
    assert (ds.classes is None) == (task == "regression")


def test_seeds_nested_subsets_and_fixed_test_rows():
    a = load(source="sklearn", name="digits", n_train=100, n_test=50, seed=1)
    b = load(source="sklearn", name="digits", n_train=200, n_test=50, seed=1)
    assert np.array_equal(a.test_index, b.test_index)  # hold-out does not depend on n_train
    assert np.isin(a.train_index, b.train_index).all()  # nested subsets
    assert np.array_equal(a.X_train, load(source="sklearn", name="digits", n_train=100, n_test=50,
                                          seed=1).X_train)
    c = load(source="sklearn", name="digits", n_train=100, n_test=50, seed=2)
    assert not np.array_equal(a.train_index, c.train_index)
    d = load_dataset(validate_data({"source": "sklearn", "name": "digits", "n_train": 100,
                                    "n_test": 50, "seed": 1}), seed=5)
    assert np.array_equal(d.train_index, a.train_index) and d.info["seed"] == 1  # [data].seed wins


def test_too_many_rows_and_single_class():
    with pytest.raises(DataError, match=r"'data.n_train' = 2000 is larger than the 1438 rows left"):
        load(source="sklearn", name="digits", n_train=2000)
    with pytest.raises(DataError, match=r"2 training rows have a single class \(1\).*'data.n_train'"):
        load(source="sklearn", name="iris", n_train=2)  # seed 0 draws two rows of class 1
    with pytest.raises(ConfigError, match=r"'data.n_train' = 1: a kernel fit needs at least 2 training rows"):
        load(source="sklearn", name="iris", n_train=1)
    with pytest.raises(DataError, match=r"holding out 'data.n_test' = 150 of 150 rows leaves 0"):
        load(source="sklearn", name="iris", n_test=150)


def test_task_override():
    ds = load(source="sklearn", name="digits", task="regression", n_train=50)
    assert ds.task == "regression" and ds.y_train.dtype == np.float64 and ds.classes is None
    with pytest.raises(DataError, match=r"'classification' needs one label per row.*\(20, 3\)"):
        load(source="sklearn", name="linnerud", task="classification", n_test=5)


# ---------------------------------------------------------------- preprocessing

def test_sphere_preprocessing_uses_the_training_mean():
    raw = load(source="sklearn", name="wine", preprocess="none", seed=3)
    ds = load(source="sklearn", name="wine", preprocess="sphere", seed=3)
    d = raw.d
    mu = raw.X_train.mean(axis=0)
    np.testing.assert_allclose(np.linalg.norm(ds.X_train, axis=1), np.sqrt(d), rtol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(ds.X_test, axis=1), np.sqrt(d), rtol=1e-12)
    for Xr, Xp in ((raw.X_train, ds.X_train), (raw.X_test, ds.X_test)):
        C = Xr - mu
        np.testing.assert_allclose(Xp, C / np.linalg.norm(C, axis=1, keepdims=True) * np.sqrt(d),
                                   rtol=1e-12, atol=1e-13)
    # the test mean differs from the training mean, so test rows centered by their own mean differ
    C = raw.X_test - raw.X_test.mean(axis=0)
    assert not np.allclose(ds.X_test, C / np.linalg.norm(C, axis=1, keepdims=True) * np.sqrt(d))


def test_standardize_matches_sklearn_scaler():
    from sklearn.preprocessing import StandardScaler

    raw = load(source="sklearn", name="digits", preprocess="none")
    ds = load(source="sklearn", name="digits", preprocess="standardize")
    sc = StandardScaler().fit(raw.X_train)  # constant columns: scale 1, like ours
    np.testing.assert_allclose(ds.X_train, sc.transform(raw.X_train), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ds.X_test, sc.transform(raw.X_test), rtol=1e-12, atol=1e-12)
    assert ds.info["preprocess"]["constant_features"] == int((raw.X_train.std(axis=0) == 0).sum()) > 0


# ---------------------------------------------------------------- Fashion-MNIST

def test_missing_fashion_mnist_names_the_apt_package(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"apt-get install dataset-fashion-mnist"):
        load(source="fashion-mnist", path=str(tmp_path), n_train=10)


@needs_fmnist
def test_fashion_mnist_rows_match_the_idx_files():
    ds = load(source="fashion-mnist", n_train=300, n_test=120, preprocess="none", seed=4)
    assert ds.X_train.shape == (300, 784) and ds.X_test.shape == (120, 784)
    assert ds.X_train.dtype == np.float64 and ds.y_train.dtype == np.int64
    Xr, yr = load_fashion_mnist("train", raw=True)
    np.testing.assert_array_equal(ds.X_train, Xr[ds.train_index] / 255.0)
    np.testing.assert_array_equal(ds.y_train, yr[ds.train_index])
    Xt, _ = load_fashion_mnist("test", raw=True)
    np.testing.assert_array_equal(ds.X_test, Xt[ds.test_index] / 255.0)
    assert ds.info["available"] == {"train": 60000, "test": 10000}
    assert len(ds.info["class_names"]) == 10
    json.dumps(ds.info)


@needs_fmnist
@pytest.mark.parametrize("preprocess, rtol", [("none", 0.0), ("sphere", 1e-12)])
def test_flip_appends_exact_mirrors_of_the_training_images(preprocess, rtol):
    n = 64
    ds = load(source="fashion-mnist", n_train=n, n_test=30, flip=True, preprocess=preprocess)
    assert ds.X_train.shape == (2 * n, 784) and ds.n_test == 30  # test split is not augmented
    np.testing.assert_array_equal(ds.y_train[n:], ds.y_train[:n])
    orig = ds.X_train[:n].reshape(n, 28, 28)
    mirr = ds.X_train[n:].reshape(n, 28, 28)
    # sphere: the augmented set is mirror symmetric, so its mean is too (up to summation order)
    np.testing.assert_allclose(mirr, orig[:, :, ::-1], rtol=rtol, atol=rtol)
    assert not np.allclose(mirr, orig)  # the images are not themselves symmetric
    assert ds.info["augmentation"]["n_after"] == 2 * n
