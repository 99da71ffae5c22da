"""Choosing the ridge from the training data (GCV / LOO) on a Gram operator."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from .api import dense_limit

__all__ = ["choose_ridge"]

DEFAULT_GRID = np.logspace(-6, 1, 22)  # relative to mean(diag K)


def choose_ridge(op: Any, Y: np.ndarray, rule: str, grid: Optional[Any] = None,
                 relative: bool = True) -> Any:
    """Minimize GCV or closed-form LOO over a ridge grid from one dense eigendecomposition.

    Parameters
    ----------
    op : GramOperator or ndarray, shape (n, n)
    Y : ndarray, shape (n,) or (n, C)
    rule : {'gcv', 'loo'}
    grid : array_like, optional
        Ridges; relative to ``mean(diag K)`` when ``relative`` (default: 22 values
        ``logspace(-6, 1)``, always relative).
    relative : bool

    Returns
    -------
    ntkscale.spectral.RidgeSelection
        ``.ridge`` is absolute.

    Raises
    ------
    MemoryError
        When the float64 Gram and its eigenvectors do not fit (``n > dense_limit()``).
    """
    from ..spectral.selection import select_ridge

    n = op.shape[0]
    if n > dense_limit():
        raise MemoryError(f"ridge={rule!r} needs an eigendecomposition of the {n}x{n} Gram, which "
                          "does not fit in memory here; give a numeric ridge")
    K = np.asarray(op if isinstance(op, np.ndarray) else op.to_numpy(), dtype=np.float64)
    scale = float(np.mean(np.diag(K)))
    g = np.asarray(DEFAULT_GRID if grid is None or len(grid) == 0 else grid, dtype=np.float64)
    g = g * scale if (relative or grid is None or len(grid) == 0) else g
    w, V = np.linalg.eigh(K)
    return select_ridge(np.clip(w, 0, None), V, Y, g, method=rule)
