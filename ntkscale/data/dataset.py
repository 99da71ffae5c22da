"""Load the data named by a :class:`DataSpec`: seeded subsets, hold-out split, augmentation,
preprocessing with training statistics, and a report of all of it.

Randomness: one ``SeedSequence(seed)`` spawns independent streams for generation (synthetic
sources), the hold-out split and the subsets. A subset of ``n`` rows is the sorted first
``n`` of a seeded permutation, so with one seed smaller subsets are nested in larger ones and
the test rows of a pool source do not depend on ``n_train``. Rows keep their source order.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from .validate import MIN_TRAIN_ROWS, DataError, TaskWarning, as_labels, check_xy, infer_task, task_doubts
from .spec import SKLEARN_BUNDLED, DataSpec

__all__ = ["Dataset", "load_dataset", "preprocess_split", "preprocess_new", "FASHION_MNIST_CLASSES"]

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                         "Sneaker", "Bag", "Ankle boot")
DEFAULT_TEST_FRACTION = 0.2

log = logging.getLogger("ntkscale.data")


@dataclass
class Dataset:
    """Training and test data ready for a kernel, with everything a run report needs.

    Attributes
    ----------
    X_train : ndarray, shape (n_train, d), float64
    y_train : ndarray, shape (n_train,) or (n_train, C)
        Class labels (classification; int64 or str) or float64 targets (regression).
    X_test : ndarray, shape (n_test, d), float64
    y_test : ndarray, shape (n_test,) or (n_test, C)
    task : {'classification', 'regression'}
    classes : ndarray or None
        Sorted training labels (classification only).
    name : str
    info : dict
        JSON-ready description: source, sizes, task and why, preprocessing, augmentation,
        files with content hashes, and fingerprints of the four final arrays.
    train_index, test_index : ndarray of int64
        Rows taken from the source (its train / test split, or the pool for sources without
        one). With ``flip`` the mirrored copies repeat the indices of the originals.
    """

    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    task: str
    classes: Optional[np.ndarray]
    name: str
    info: dict = field(repr=False)
    train_index: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False)
    test_index: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False)

    @property
    def d(self) -> int:
        """Number of features."""
        return int(self.X_train.shape[1])

    @property
    def n_train(self) -> int:
        return int(len(self.X_train))

    @property
    def n_test(self) -> int:
        return int(len(self.X_test))


def preprocess_split(X_train: np.ndarray, X_test: np.ndarray,
                     method: str) -> tuple[np.ndarray, np.ndarray, dict]:
    """Preprocess train and test rows with statistics of the training rows only.

    Parameters
    ----------
    X_train : ndarray, shape (n, d)
    X_test : ndarray, shape (m, d)
    method : {'sphere', 'standardize', 'none'}
        ``sphere``: subtract the training mean, then scale each row to norm √d (x·x/d = 1,
        the normalization of the NTK-on-the-sphere theory; rows equal to the mean stay 0).
        ``standardize``: per feature (x - mean) / std of the training rows (constant
        features become 0). ``none``: unchanged.

    Returns
    -------
    X_train, X_test : ndarray, float64, same shapes
    info : dict
        The method and what it did (zero rows, constant features).
    """
    Xtr, Xte = np.asarray(X_train, np.float64), np.asarray(X_test, np.float64)
    if method == "none":
        return Xtr.copy(), Xte.copy(), {"method": "none"}
    mu = Xtr.mean(axis=0)
    Xtr, Xte = Xtr - mu, Xte - mu
    info: dict[str, Any] = {"method": method, "train_mean_norm": float(np.linalg.norm(mu))}
    if method == "sphere":
        d = Xtr.shape[1]
        out, zeros = [], 0
        for A in (Xtr, Xte):
            norms = np.linalg.norm(A, axis=1, keepdims=True)
            zeros += int(np.sum(norms == 0))
            norms[norms == 0] = np.inf
            out.append(A * (np.sqrt(d) / norms))
        info.update(row_norm=float(np.sqrt(d)), zero_rows=zeros)
        return out[0], out[1], info
    if method == "standardize":
        sd = Xtr.std(axis=0)
        const = sd == 0
        sd[const] = 1.0
        info["constant_features"] = int(const.sum())
        return Xtr / sd, Xte / sd, info
    raise ValueError(f"preprocess must be 'sphere', 'standardize' or 'none', got {method!r}")


def _source_scale(spec: DataSpec, X: np.ndarray) -> np.ndarray:
    """The source's own scaling of raw rows (Fashion-MNIST: pixels / 255), before preprocessing."""
    return X / 255.0 if spec.source == "fashion-mnist" else X


def preprocess_new(spec: DataSpec, X_train_raw: np.ndarray,
                   X_new: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """New raw rows prepared exactly as the job's test rows: the source's scaling, then
    ``spec.preprocess`` with the training rows' statistics (:func:`preprocess_split`).

    Parameters
    ----------
    spec : DataSpec
    X_train_raw : ndarray, shape (n, d)
        The training rows before preprocessing:
        ``load_dataset(dataclasses.replace(spec, preprocess="none"), seed).X_train``.
    X_new : ndarray, shape (m, d)
        New rows as read from a file (:func:`ntkscale.data.files.read_features`).

    Returns
    -------
    X_train, X_new : ndarray, float64, shapes (n, d) and (m, d)
        ``X_train`` equals ``load_dataset(spec, seed).X_train`` (what the Gram store holds).
    """
    Xtr, Xn, _ = preprocess_split(X_train_raw, _source_scale(spec, np.asarray(X_new, np.float64)),
                                  spec.preprocess)
    return Xtr, Xn


def _subset(n_avail: int, n_want: Optional[int], rng: np.random.Generator) -> np.ndarray:
    if n_want is None or n_want == n_avail:
        return np.arange(n_avail, dtype=np.int64)
    return np.sort(rng.permutation(n_avail)[:n_want]).astype(np.int64)


def _too_many(path: str, key: str, want: int, avail: int, what: str) -> DataError:
    return DataError(f"'{path}.{key}' = {want} is larger than the {avail} {what}; "
                     f"lower '{path}.{key}' (or leave it out to use all {avail})")


def _raw(spec: DataSpec, gen: np.random.Generator, path: str) -> tuple[dict, dict, Optional[str]]:
    """Source arrays before checks: ({'train': (X, y), 'test': ...} or {'pool': (X, y)}, info, natural task)."""
    if spec.source == "fashion-mnist":
        from .fashion_mnist import FASHION_MNIST_DIR, load_fashion_mnist

        folder = spec.path or os.environ.get("NTKSCALE_FASHION_MNIST", FASHION_MNIST_DIR)
        arrays = {s: load_fashion_mnist(s, path=folder, raw=True) for s in ("train", "test")}
        info = {"path": folder, "scaling": "pixels / 255", "class_names": list(FASHION_MNIST_CLASSES)}
        return arrays, info, "classification"
    if spec.source == "sklearn":
        import sklearn.datasets

        X, y = getattr(sklearn.datasets, f"load_{spec.name}")(return_X_y=True)
        return {"pool": (X, y)}, {"loader": f"sklearn.datasets.load_{spec.name}"}, SKLEARN_BUNDLED[spec.name]
    if spec.source in ("sphere", "teacher-student"):
        from .synthetic import make_synthetic

        n = spec.n
        if n is None:  # exactly n_train training rows plus the hold-out
            if spec.n_test is not None:
                n = spec.n_train + spec.n_test
            else:
                tf = DEFAULT_TEST_FRACTION if spec.test_fraction is None else spec.test_fraction
                n = spec.n_train + int(round(spec.n_train * tf / (1.0 - tf)))
        X, y, meta = make_synthetic(spec.source, n, spec.d, gen, target=spec.target or "harmonics",
                                    degree=spec.degree, noise=spec.noise, teacher_width=spec.teacher_width,
                                    teacher_depth=spec.teacher_depth,
                                    classification=spec.task == "classification")
        return {"pool": (X, y)}, {"generator": meta, "n_generated": n}, None
    from .files import read_file

    got = read_file(spec, path)
    files = [got["train"][2]] + ([got["test"][2]] if got["test"] else [])
    arrays = {"train": got["train"][:2], "test": got["test"][:2]} if got["test"] else {"pool": got["train"][:2]}
    return arrays, {"files": files}, None


def _check_split(N: int, hold: int, tf: float, spec: DataSpec, path: str) -> None:
    """Refuse a hold-out split of ``N`` pool rows that leaves fewer than :data:`MIN_TRAIN_ROWS`
    training rows, or no test row where ``test_fraction`` (given or the default) asked for some."""
    more = "give more rows"
    if N < MIN_TRAIN_ROWS:
        raise DataError(f"[{path}] {_name(spec)} has {N} row(s); a kernel fit needs at least "
                        f"{MIN_TRAIN_ROWS} training rows (one row fits only a constant): {more}")
    frac = f"'{path}.test_fraction' = {tf:g}" + ("" if spec.test_fraction is not None else " (the default)")
    if spec.n_test is None and hold == 0 and tf > 0:
        fix = f"set '{path}.n_test' = 0 to run without a test set, or {more}"
        if N - 1 >= MIN_TRAIN_ROWS:
            fix = f"set '{path}.n_test' = 1 or more, " + fix
        raise DataError(f"[{path}] {frac} of {N} rows rounds to 0 test rows; {fix}")
    if N - hold < MIN_TRAIN_ROWS:
        what = f"'{path}.n_test' = {hold}" if spec.n_test is not None else f"{frac} ({hold} rows)"
        raise DataError(f"[{path}] holding out {what} of {N} rows leaves {N - hold} for training; a "
                        f"kernel fit needs at least {MIN_TRAIN_ROWS}: lower '{path}.n_test' or "
                        f"'{path}.test_fraction', or {more}")


def _name(spec: DataSpec) -> str:
    if spec.source == "sklearn":
        return f"sklearn:{spec.name}"
    if spec.source == "sphere":
        return f"sphere(d={spec.d}, target={spec.target})"
    if spec.source == "teacher-student":
        return f"teacher-student(d={spec.d}, width={spec.teacher_width}, depth={spec.teacher_depth})"
    if spec.source == "file":
        return os.path.basename(str(spec.path).rstrip("/")) or str(spec.path)
    return spec.source


def _targets(y: np.ndarray, task: str, where: str) -> np.ndarray:
    if task == "classification":
        return as_labels(y, where)
    if y.dtype.kind not in "biuf":
        raise DataError(f"{where}: task = 'regression' needs numeric targets, got dtype {y.dtype}; "
                        "use task = 'classification' for labels")
    return y.astype(np.float64)


def _task(y: np.ndarray, spec: DataSpec, natural: Optional[str], path: str) -> tuple[str, str, list]:
    """The task, why, and doubts about an inferred one: logged, and warned (TaskWarning) when doubtful."""
    task, reason = infer_task(y, spec.task, natural)
    inferred = spec.task == "auto" and natural is None
    doubts = task_doubts(y, task) if inferred else []
    if inferred:
        log.info("[%s] task %r inferred: %s", path, task, reason)
    if doubts:
        msg = (f"[{path}] task = 'auto' chose classification for integer targets, but "
               + "; ".join(doubts) + f". If the target is a quantity, set '{path}.task' = 'regression'; "
               f"to keep classification and silence this, set '{path}.task' = 'classification'")
        log.warning("%s", msg)
        warnings.warn(msg, TaskWarning, stacklevel=3)
    return task, reason, doubts


def _flip(X: np.ndarray) -> np.ndarray:
    """Horizontal mirror of flattened 28x28 images. Shape (n, 784)."""
    return X.reshape(len(X), 28, 28)[:, :, ::-1].reshape(len(X), -1)


def load_dataset(spec: DataSpec, seed: int = 0, *, path: str = "data") -> Dataset:
    """Load, check, split, augment and preprocess the data of a ``[data]`` section.

    Parameters
    ----------
    spec : DataSpec
        From :func:`validate_data`.
    seed : int
        Run seed, used when the spec has no ``seed`` of its own.
    path : str
        Section name for messages.

    Returns
    -------
    Dataset

    Raises
    ------
    DataError
        NaN/Inf or missing values (count and first row), mismatched X/y lengths, non-numeric
        features, more rows requested than available (with the number available), a single
        class, non-numeric regression targets, or a test set with another feature count.
    FileNotFoundError
        Missing files (Fashion-MNIST: with the ``apt-get install dataset-fashion-mnist`` hint).
    ImportError
        An optional reader is missing (pyarrow for parquet, s3fs for s3://), naming the package.
    """
    used_seed = spec.seed if spec.seed is not None else int(seed)
    gen, split_rng, sub_rng, sub_rng2 = (np.random.default_rng(s)
                                         for s in np.random.SeedSequence(used_seed).spawn(4))
    arrays, info, natural = _raw(spec, gen, path)
    where = {k: f"[{path}] {_name(spec)} ({k} rows)" for k in arrays}
    checked = {k: check_xy(X, y, where[k]) for k, (X, y) in arrays.items()}
    first = "pool" if "pool" in checked else "train"
    task, reason, doubts = _task(checked[first][1], spec, natural, path)
    checked = {k: (X, _targets(y, task, where[k])) for k, (X, y) in checked.items()}
    if "pool" in checked:
        X, y = checked["pool"]
        N = len(X)
        tf = DEFAULT_TEST_FRACTION if spec.test_fraction is None else spec.test_fraction
        hold = spec.n_test if spec.n_test is not None else int(round(tf * N))
        _check_split(N, hold, tf, spec, path)
        perm = split_rng.permutation(N)
        rest = perm[hold:]
        if spec.n_train is not None and spec.n_train > len(rest):
            raise _too_many(path, "n_train", spec.n_train, len(rest),
                            f"rows left for training ({N} rows, {hold} held out)")
        test_idx = np.sort(perm[:hold]).astype(np.int64)
        train_idx = np.sort(rest[:spec.n_train] if spec.n_train else rest).astype(np.int64)
        Xtr, ytr, Xte, yte = X[train_idx], y[train_idx], X[test_idx], y[test_idx]
        info["available"] = {"pool": N, "held_out": hold}
    else:
        (Xa, ya), (Xb, yb) = checked["train"], checked["test"]
        if Xa.shape[1] != Xb.shape[1]:
            raise DataError(f"[{path}] the training rows have {Xa.shape[1]} features but the test rows "
                            f"have {Xb.shape[1]}")
        for key, n, avail, split in (("n_train", spec.n_train, len(Xa), "training"),
                                     ("n_test", spec.n_test, len(Xb), "test")):
            if n is not None and n > avail:
                raise _too_many(path, key, n, avail, f"rows of the {split} split")
        if len(Xa) < MIN_TRAIN_ROWS:
            raise DataError(f"[{path}] {_name(spec)} has {len(Xa)} training row(s); a kernel fit needs at "
                            f"least {MIN_TRAIN_ROWS} (one row fits only a constant): give more rows")
        train_idx, test_idx = _subset(len(Xa), spec.n_train, sub_rng), _subset(len(Xb), spec.n_test, sub_rng2)
        Xtr, ytr, Xte, yte = Xa[train_idx], ya[train_idx], Xb[test_idx], yb[test_idx]
        info["available"] = {"train": len(Xa), "test": len(Xb)}
    Xtr, Xte = Xtr.astype(np.float64), Xte.astype(np.float64)
    Xtr, Xte = _source_scale(spec, Xtr), _source_scale(spec, Xte)
    info["augmentation"] = None
    if spec.flip:
        n0 = len(Xtr)
        Xtr, ytr = np.concatenate([Xtr, _flip(Xtr)]), np.concatenate([ytr, ytr])
        train_idx = np.concatenate([train_idx, train_idx])
        info["augmentation"] = {"kind": "horizontal flip (train only)", "n_before": n0, "n_after": 2 * n0}
    classes = None
    if task == "classification":
        classes, counts = np.unique(ytr, return_counts=True)
        if len(classes) < 2:
            raise DataError(f"[{path}] task = 'classification' but the {len(ytr)} training rows have a "
                            f"single class ({classes[0].item()!r}); use more rows ('{path}.n_train'), another "
                            f"seed, or task = 'regression'")
        unseen = np.setdiff1d(np.unique(yte), classes)
        if len(unseen):
            warnings.warn(f"[{path}] test labels {unseen.tolist()[:5]} do not occur in the training rows",
                          UserWarning, stacklevel=2)
        info["classes"] = {"labels": classes.tolist(), "train_counts": counts.tolist(),
                           "unseen_in_test": unseen.tolist()}
    Xtr, Xte, info["preprocess"] = preprocess_split(Xtr, Xte, spec.preprocess)
    from ..storage import fingerprint

    info.update(source=spec.source, name=_name(spec), seed=used_seed, task=task, task_reason=reason, task_doubts=doubts,
                n_train=len(Xtr), n_test=len(Xte), d=int(Xtr.shape[1]),
                fingerprints={k: fingerprint(np.ascontiguousarray(a)) for k, a in
                              (("X_train", Xtr), ("y_train", ytr), ("X_test", Xte), ("y_test", yte))})
    return Dataset(X_train=Xtr, y_train=ytr, X_test=Xte, y_test=yte, task=task, classes=classes,
                   name=_name(spec), info=info, train_index=train_idx, test_index=test_idx)
