"""Choosing the ridge from the training data (GCV / LOO) on a Gram operator."""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import numpy as np

from .api import dense_limit

__all__ = ["choose_ridge", "selection_points", "AUTO_SUBSAMPLE_ABOVE", "AUTO_SUBSAMPLE"]

DEFAULT_GRID = np.logspace(-6, 1, 22)  # relative to mean(diag K)
AUTO_SUBSAMPLE_ABOVE = 12000  # n beyond which subsample=None selects on AUTO_SUBSAMPLE points
AUTO_SUBSAMPLE = 8192


def selection_points(n: int, subsample: Optional[int] = None, seed: int = 0) -> np.ndarray:
    """The sorted points (m,) whose principal sub-block :func:`choose_ridge` evaluates: all n, or
    ``subsample`` of them (default ``AUTO_SUBSAMPLE`` above ``AUTO_SUBSAMPLE_ABOVE``) drawn
    without replacement with ``seed``. ``ntkscale plan`` draws the same ones
    (:mod:`ntkscale.job.plan_ridge`)."""
    m = (n if n <= AUTO_SUBSAMPLE_ABOVE else AUTO_SUBSAMPLE) if subsample is None else int(subsample)
    if m < 2:
        raise ValueError(f"subsample must be >= 2 points, got {subsample!r}")
    m = min(m, n)
    return np.arange(n) if m >= n else np.sort(np.random.default_rng(seed).choice(n, size=m, replace=False))


def choose_ridge(op: Any, Y: np.ndarray, rule: str, grid: Optional[Any] = None,
                 relative: bool = True, subsample: Optional[int] = None, seed: int = 0,
                 select: str = "min") -> Any:
    """Minimize GCV or closed-form LOO over a ridge grid from one dense eigendecomposition.

    At large n the criterion is evaluated on a random principal sub-block of ``subsample``
    training points (their Gram ``K[S, S]`` read from the operator, targets ``Y[S]``) and the
    chosen **absolute** ridge is used at full n: λ in ``K + λI`` plays the role of the
    observation-noise variance of the GP posterior, which does not depend on n (the
    relative ridge, λ / mean diag, is the same at any n for the same kernel).

    Parameters
    ----------
    op : GramOperator or ndarray, shape (n, n)
    Y : ndarray, shape (n,) or (n, C)
    rule : {'gcv', 'loo'}
    grid : array_like, optional
        Ridges; relative to ``mean(diag K)`` when ``relative`` (default: 22 values
        ``logspace(-6, 1)``, always relative).
    relative : bool
    subsample : int, optional
        Points of the sub-block; None: all n up to ``AUTO_SUBSAMPLE_ABOVE`` (12000), else
        ``AUTO_SUBSAMPLE`` (8192). ``subsample >= n`` uses the whole Gram.
    seed : int
        Seeds the subsample.
    select : {'min', '1se'}
        The minimizer, or the largest ridge within one standard error of the minimum
        (:func:`ntkscale.spectral.select_ridge`).

    Returns
    -------
    ntkscale.spectral.RidgeSelection
        ``.ridge`` is absolute; ``.subsample``: the points used.

    Raises
    ------
    MemoryError
        When the float64 Gram and its eigenvectors do not fit (``n > dense_limit()``).
    """
    from ..spectral.selection import select_ridge

    n = op.shape[0]
    idx = selection_points(n, subsample, seed)
    m = idx.size
    if m > dense_limit():
        raise MemoryError(f"ridge={rule!r} needs an eigendecomposition of a {m}x{m} Gram, which "
                          "does not fit in memory here; pass a smaller subsample or a numeric ridge")
    if m < n:
        from ..spectral.curves import gather

        K = gather(op, idx, idx)
        Y = np.asarray(Y)[idx]
    else:
        K = np.asarray(op if isinstance(op, np.ndarray) else op.to_numpy(), dtype=np.float64)
    scale = float(np.mean(np.diag(K)))
    g = np.asarray(DEFAULT_GRID if grid is None or len(grid) == 0 else grid, dtype=np.float64)
    g = g * scale if (relative or grid is None or len(grid) == 0) else g
    w, V = np.linalg.eigh(K)
    sel = select_ridge(np.clip(w, 0, None), V, Y, g, method=rule, rule=select)
    return dataclasses.replace(sel, subsample=m)
