"""Checks on loaded arrays, with messages that name the data, the rows and the fix."""

from __future__ import annotations

from typing import Optional

import numpy as np

from .._config import ConfigError

__all__ = ["MIN_TRAIN_ROWS", "DataError", "TaskWarning", "bad_rows", "check_xy", "infer_task", "task_doubts",
           "as_labels"]


class DataError(ConfigError):
    """The data named by the ``[data]`` section cannot be used as given (non-finite values,
    mismatched lengths, too few rows or classes...). A :class:`ConfigError`, so a job runner
    reports both the same way."""


def bad_rows(a: np.ndarray) -> np.ndarray:
    """Indices of rows of ``a`` holding NaN/Inf (numbers) or None/NaN (objects). Shape (k,)."""
    a = np.asarray(a)
    if a.ndim == 0 or len(a) == 0:
        return np.zeros(0, dtype=np.int64)
    flat = a.reshape(len(a), -1)
    if a.dtype.kind in "fc":
        bad = ~np.isfinite(flat).all(axis=1)
    elif a.dtype.kind == "O":
        def missing(v: object) -> bool:
            return v is None or (isinstance(v, (float, np.floating)) and not np.isfinite(v))
        bad = np.array([any(missing(v) for v in row) for row in flat], dtype=bool)
    else:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(bad)


def _rows(idx: np.ndarray, n: int) -> str:
    return (f"{len(idx)} of {n} rows (first: row {int(idx[0])}, 0-based"
            + (f"; also {', '.join(str(int(i)) for i in idx[1:4])}" if len(idx) > 1 else "") + ")")


def check_xy(X: np.ndarray, y: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Validate and normalize a feature matrix and its targets.

    Parameters
    ----------
    X : array, shape (n, ...)
        Numeric features; more than two axes (images) are flattened to (n, d).
    y : array, shape (n,) or (n, C)
        Targets or labels; (n, 1) becomes (n,).
    where : str
        What the arrays are ("'data.path' = 'train.npz'"), used in every message.

    Returns
    -------
    X : ndarray, shape (n, d), numeric dtype as given
    y : ndarray, shape (n,) or (n, C)

    Raises
    ------
    DataError
        Non-numeric or 1-D X, mismatched lengths, empty data, NaN/Inf in X or missing y.
    """
    X, y = np.asarray(X), np.asarray(y)
    if X.dtype.kind not in "biuf":
        raise DataError(f"{where}: features must be numbers, got dtype {X.dtype}")
    if X.ndim < 2:
        raise DataError(f"{where}: features must be 2-D (n, d), got shape {X.shape}; "
                        "store a single feature as shape (n, 1)")
    if y.ndim == 0 or y.ndim > 2:
        raise DataError(f"{where}: targets must have shape (n,) or (n, C), got {y.shape}")
    if len(X) != len(y):
        raise DataError(f"{where}: X has {len(X)} rows but y has {len(y)}; they must match row for row")
    if len(X) == 0:
        raise DataError(f"{where}: no rows")
    X = X.reshape(len(X), -1)  # cast to float64 after subsetting (60000x784 uint8 stays small)
    if X.shape[1] == 0:
        raise DataError(f"{where}: no feature columns")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    for name, a in (("X", X), ("y", y)):
        idx = bad_rows(a)
        if len(idx):
            raise DataError(f"{where}: {name} has NaN/Inf/missing values in {_rows(idx, len(a))}; "
                            "drop or impute those rows first")
        if a.dtype.kind in "iuf" and a.size:
            big = np.flatnonzero((np.abs(a.reshape(len(a), -1).astype(np.float64)) > MAX_ABS).any(axis=1))
            if len(big):
                raise DataError(f"{where}: {name} has values beyond ±{MAX_ABS:g} in {_rows(big, len(a))}; "
                                "their squares overflow float64 in the kernel and the error metrics: rescale "
                                "them (divide the column by a constant) first")
    return X, y


#: largest magnitude accepted in X and y: squares and sums of squares stay finite in float64
#: (1e150² = 1e300 < 1.8e308, room for sums over 10^8 terms)
MAX_ABS = 1e150

#: fewest training rows a job accepts: one row fits only a constant (its Gram is 1 x 1), and
#: ridge selection (GCV/LOO), the spectrum and the learning curve compare at least two
MIN_TRAIN_ROWS = 2

#: doubts about an inferred classification task (see :func:`task_doubts`)
FEW_PER_CLASS = 5
SCALE_LEVELS = 10


class TaskWarning(UserWarning):
    """``task = "auto"`` made a choice that may not be what the data means (see :func:`task_doubts`)."""


def infer_task(y: np.ndarray, task: str, natural: Optional[str] = None) -> tuple[str, str]:
    """Resolve ``task = "auto"``: (task, reason).

    Known sources pass their ``natural`` task. Otherwise: 2-D or float y -> regression;
    bool/str/object y -> classification; integer y -> classification unless more than half
    of the rows carry distinct values (then it looks like a count or a price: regression).
    The reason names the rule and, where the other task is plausible, the key that sets it.
    """
    if task != "auto":
        return task, "set in the job file"
    if natural is not None:
        return natural, "the data set's own task"
    if y.ndim == 2:
        return "regression", f"y has {y.shape[1]} columns"
    kind = y.dtype.kind
    if kind in "bUSO":
        return "classification", f"y has non-numeric dtype {y.dtype}"
    if kind in "iu":
        k = len(np.unique(y))
        if k > len(y) / 2:
            return "regression", (f"integer y with {k} distinct values in {len(y)} rows (more than half "
                                  "distinct: a quantity); set task = 'classification' if they are labels")
        return "classification", (f"integer y with {k} distinct values in {len(y)} rows (at most half "
                                  "distinct: labels); set task = 'regression' if they are amounts, "
                                  "counts or an ordered scale")
    return "regression", f"y has dtype {y.dtype}"


def task_doubts(y: np.ndarray, task: str) -> list[str]:
    """Reasons to doubt a classification that ``task = "auto"`` inferred from integer targets
    (empty: no doubt). Call it only for an inference by :func:`infer_task` (not for a task
    set in the job file or a data set's own task). Three signs that the integers are a quantity rather than labels, or that
    classification will be poor:

    - an ordered numeric scale: more than :data:`SCALE_LEVELS` (10) levels that are
      consecutive integers (ages, counts, ratings); 10 is the class count of the usual
      label sets (digits, Fashion-MNIST), so those never trigger it;
    - more classes than ``sqrt(n)``: fewer rows per class than classes, where a one-vs-rest
      kernel fit has little to learn each class from;
    - a class with fewer than :data:`FEW_PER_CLASS` (5) rows: a hold-out split can leave
      it out of training, and its one-hot column is fitted from a handful of points.
    """
    if task != "classification" or y.ndim != 1 or y.dtype.kind not in "iu":
        return []
    labels, counts = np.unique(y, return_counts=True)
    k, n = len(labels), len(y)
    out = []
    lo, hi = int(labels[0]), int(labels[-1])
    if k > SCALE_LEVELS and hi - lo + 1 == k:
        out.append(f"the {k} values are the consecutive integers {lo}..{hi}, like an ordered numeric scale")
    if k > 2 and k > np.sqrt(n):
        out.append(f"{k} classes for {n} rows is more than sqrt(n) = {np.sqrt(n):.0f}")
    few = counts < FEW_PER_CLASS
    if few.any():
        i = int(np.argmin(counts))
        out.append(f"{int(few.sum())} class{'es have' if few.sum() > 1 else ' has'} fewer than "
                   f"{FEW_PER_CLASS} rows (class {labels[i].item()!r}: {int(counts[i])})")
    return out


def as_labels(y: np.ndarray, where: str) -> np.ndarray:
    """Class labels from y: integer-valued floats become int64, other values are kept."""
    if y.ndim != 1:
        raise DataError(f"{where}: task = 'classification' needs one label per row, got y of shape "
                        f"{y.shape}; use task = 'regression' for multi-output targets")
    if y.dtype.kind == "f":
        if not np.all(y == np.round(y)):
            raise DataError(f"{where}: task = 'classification' but y has non-integer values "
                            f"(e.g. {y[y != np.round(y)][0]!r}); use task = 'regression'")
        return y.astype(np.int64)
    if y.dtype.kind == "O":
        try:
            return y.astype(str)
        except (TypeError, ValueError) as e:  # pragma: no cover - exotic objects
            raise DataError(f"{where}: labels cannot be read as strings: {e}") from None
    return y
