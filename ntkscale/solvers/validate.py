"""Input checks shared by the solvers (raised before any pass over the Gram)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..linop import check_ridge  # the one ridge check (re-exported)

__all__ = ["check_rhs", "check_ridge"]


def check_rhs(y: Any, n: int, name: str = "y") -> tuple[np.ndarray, bool]:
    """Return ``y`` as a float64 (n, C) array and whether it was 1-d.

    Raises ValueError naming the problem: wrong length, ndim > 2, NaN/Inf, non-numeric.
    """
    try:
        arr = np.asarray(y, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be numeric, got {type(y).__name__} ({e})") from e
    if arr.ndim not in (1, 2):
        raise ValueError(f"{name} must be 1-d (n,) or 2-d (n, C), got shape {arr.shape}")
    if arr.shape[0] != n:
        raise ValueError(f"{name} has {arr.shape[0]} rows but the Gram matrix has {n}; "
                         "targets and training inputs must have the same length")
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape})")
    bad = ~np.isfinite(arr)
    if bad.any():
        rows = np.unique(np.nonzero(bad)[0])
        raise ValueError(f"{name} has NaN or Inf in {rows.size} rows (first: {rows[:5].tolist()}); "
                         "drop or impute them before fitting")
    vec = arr.ndim == 1
    return np.ascontiguousarray(arr[:, None] if vec else arr), vec


