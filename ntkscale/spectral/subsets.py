"""Random training/test subsets of a Gram's pool: the trial loop of the learning-curve and
double-descent experiments, and the kernel-regression pseudo-inverse they share.

Per trial, one random permutation of the M pool rows: the training rows are its first p
(nested over smaller p: their first rows), the test rows its last ``n_test`` (disjoint from
every training set), then one Gaussian label-noise draw for the training rows. Only the
operator contract is used (:mod:`ntkscale.linop`: block reads ``op[r0:r1, c0:c1]`` or
``take``), so a seed gives the same subsets and numbers for a dense and a stored Gram.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Optional

import numpy as np

from ..linop import as_operator, check_indices, read_blocks

__all__ = ["Trial", "subsample_trials", "gather", "pinv_weights"]


@dataclass(frozen=True)
class Trial:
    """One random split of the pool (p training rows, t test rows, C outputs).

    Attributes
    ----------
    train : ndarray of int, shape (p,)
        Training rows in draw order (the first p' of them: the nested set of size p').
    test : ndarray of int, shape (t,)
    block : ndarray, shape (p + t, p)
        ``K[train ∪ test, train]`` (float64): rows ``:p`` the training Gram, ``p:`` the
        test-by-train cross block.
    noise : ndarray, shape (p, C)
        Label noise of the training rows (std ``noise_std``).
    """

    train: np.ndarray
    test: np.ndarray
    block: np.ndarray
    noise: np.ndarray


def gather(op: Any, rows: np.ndarray, cols: np.ndarray, block: Optional[int] = None) -> np.ndarray:
    """``K[rows][:, cols]`` (float64) for sorted unique indices.

    Every Gram operator has ``take(rows, cols)`` (the operator contract,
    :mod:`ntkscale.linop`); a stored Gram computes the block from its stored inputs when that
    is cheaper than reading the tiles. ``block`` forces contiguous block reads on that grid
    instead (:func:`ntkscale.linop.read_blocks`).

    Parameters
    ----------
    op : GramOperator
    rows, cols : ndarray of int, sorted, unique
    block : int, optional
        Read grid of forced block reads.

    Returns
    -------
    ndarray, shape (len(rows), len(cols))
    """
    rows, cols = check_indices(rows, cols, op.shape)
    if block is None:
        return np.asarray(op.take(rows, cols), dtype=np.float64)
    return read_blocks(op, rows, cols, block)


def subsample_trials(op: Any, p: int, n_test: int, n_outputs: int, trials: int, *,
                     noise_std: float = 0.0, seed: int = 0, cache_bytes: float = 2**30,
                     groups: Optional[np.ndarray] = None) -> Iterator[Trial]:
    """The ``trials`` random splits of the pool of ``op`` (see the module docstring).

    Parameters
    ----------
    op : GramOperator, shape (M, M)
        Gram of the pool (validated by the caller: square, ``p + n_test <= M``).
    p, n_test : int
        Training rows (the largest training set) and test rows per trial.
    n_outputs : int
        C, columns of the noise.
    trials : int
    noise_std : float
        Std of the label noise (0: zeros, the draw is still made so the stream is the same).
    seed : int
        Seeds permutations and noise (one ``default_rng`` for all trials, in this order).
    cache_bytes : float
        If the float64 pool Gram (8 M² bytes) fits, it is read once; otherwise each trial
        reads ``K[train ∪ test, train]`` by :func:`gather`.
    groups : ndarray of int, shape (M,), optional
        Rows of one group (an image and its augmented copies, e.g. its mirror image) never
        straddle the split: the test rows are the last ``n_test`` of the permutation among the
        rows whose group has no training row. Then the test error estimates the error on new
        samples, which a test row whose twin was trained on does not. Default: every row its
        own group (the same draws as without ``groups``).

    Yields
    ------
    Trial
    """
    op = as_operator(op)  # a plain (M, M) array too (DenseGram: block reads and take)
    m = int(op.shape[0])
    full = np.asarray(op[0:m, 0:m], dtype=np.float64) if 8.0 * m * m <= cache_bytes else None
    if groups is not None:
        groups = np.asarray(groups).reshape(-1)
        if groups.shape != (m,):
            raise ValueError(f"groups must hold one group per pool row, shape ({m},), got {groups.shape}")
    rng = np.random.default_rng(seed)
    for _ in range(trials):
        perm = rng.permutation(m)
        noise = noise_std * rng.standard_normal((p, n_outputs))
        train, test = perm[:p], perm[m - n_test:]
        if groups is not None:
            free = perm[p:][~np.isin(groups[perm[p:]], groups[train])]
            if free.size < n_test:
                raise ValueError(f"only {free.size} pool rows share no group with the {p} training "
                                 f"rows, fewer than n_test = {n_test}: lower the largest p or n_test")
            test = free[free.size - n_test:]
        rows = np.concatenate([train, test])
        if full is not None:
            block = full[np.ix_(rows, train)]  # shape: (p + n_test, p)
        else:
            r_sorted, c_sorted = np.sort(rows), np.sort(train)
            g = gather(op, r_sorted, c_sorted)
            block = g[np.ix_(np.searchsorted(r_sorted, rows), np.searchsorted(c_sorted, train))]
        yield Trial(train=train, test=test, block=block, noise=noise)


def pinv_weights(d: np.ndarray, lam: float, mean_diag: float) -> np.ndarray:
    """``1/d`` over the kept eigenvalues ``d`` of ``K_pp + λI``, 0 over the dropped ones.

    Dropped: ``d <= max(p·eps·max|d|, 1e-7·mean_diag)`` for ``λ = 0`` (the minimum-norm
    interpolant, as in :mod:`ntkscale.solvers.ridgeless`), ``d <= p·eps·max|d|`` otherwise.

    Parameters
    ----------
    d : ndarray, shape (p,)
    lam : float
    mean_diag : float
        ``mean(diag K_pp)``.

    Returns
    -------
    ndarray, shape (p,)
    """
    cut = max(d.size * np.finfo(np.float64).eps * float(np.abs(d).max()),
              1e-7 * mean_diag if lam == 0 else 0.0)
    return np.divide(1.0, d, out=np.zeros_like(d), where=d > cut)
