"""The operator contract: what every solver may rely on, and the in-memory reference operator.

A *Gram operator* is any object with

* ``shape`` ``(n, n)``, ``dtype``, ``in_memory`` (bool: the whole matrix is an array in this
  process, so dense LAPACK methods apply without reading anything);
* ``diag()`` (n,) float64; ``matvec(V)`` for V (n,) or (n, k), float64;
* block reads ``op[r0:r1, c0:c1]``, ``take(rows, cols)`` over sorted unique indices, and
  ``to_numpy()`` (the whole matrix; in-memory operators return their array read-only);
* optionally ``factorize(ridge, *, dtype, jitter, tile, progress)`` -> a :class:`Factor`
  (a stored operator implements it with the out-of-core tiled Cholesky); solvers test for
  the capability with :func:`can_factorize`, never for a class;
* optionally ``columns(idx)`` -> ``K[:, idx]`` (n, len(idx)) float64 for distinct indices in any
  order, computed without a pass over a store (a stored operator computes them from its
  inputs); :func:`operator_columns` falls back to ``take`` over all rows;
* optionally ``tile`` (int): the edge of the grid that block reads are cheapest on (a
  stored operator's tile); :func:`read_blocks` reads on it (:func:`read_grid`). Code above
  this contract reads ``op.tile``, never an operator's store.

This module imports only :mod:`ntkscale.errors`: solvers, spectral code
and estimators import it; :mod:`ntkscale.operator` (the stored operator) builds on it.
Every operator class runs the same contract tests, :class:`ntkscale.testing.OperatorContract`.
"""

from __future__ import annotations

from typing import Any, Optional, Protocol, runtime_checkable

import numpy as np

from .errors import InvalidRidgeError

__all__ = ["GramOperator", "Factor", "DenseGram", "as_operator", "dense_array", "can_factorize",
           "jitter_schedule", "check_ridge", "check_ridges", "as_block", "as_slices", "check_indices",
           "read_grid", "read_blocks", "operator_columns"]


@runtime_checkable
class GramOperator(Protocol):
    """Interface the solvers rely on (see the module docstring)."""

    shape: tuple[int, int]
    dtype: np.dtype
    in_memory: bool

    def diag(self) -> np.ndarray: ...
    def matvec(self, V: np.ndarray) -> np.ndarray: ...
    def __getitem__(self, key: tuple[slice, slice]) -> np.ndarray: ...
    def take(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray: ...
    def to_numpy(self) -> np.ndarray: ...


class Factor(Protocol):
    """A Cholesky factor of ``K + ridge I`` from ``op.factorize``.

    Attributes: ``ridge`` (absolute, jitter included), ``jitter`` (relative, 0 if none),
    ``url``, ``tile``, ``seconds``, ``computed``, ``restarts`` (for reports).
    """

    ridge: float

    def solve(self, B: np.ndarray) -> np.ndarray: ...
    def keep_tiles(self, budget_bytes: float) -> None: ...
    def drop_tiles(self) -> None: ...


def can_factorize(op: Any) -> bool:
    """Whether ``op`` offers the out-of-core ``factorize`` capability."""
    return callable(getattr(op, "factorize", None))


def _ridge_error(name: str, value: Any, wrong_type: bool = False) -> InvalidRidgeError:
    """The one message: what must hold, what was given, the fix."""
    got = f"{type(value).__name__} {value!r}" if wrong_type else repr(value)
    why = "a negative ridge makes K + ridge*I indefinite; " if not wrong_type and value < 0 else ""
    return InvalidRidgeError(f"{name} must be a finite real number >= 0, got {got}; {why}pass a number "
                             "such as 1e-3, or 0 for the ridgeless interpolant")


def check_ridge(ridge: Any, name: str = "ridge") -> float:
    """The one ridge check, as a float: a finite real number >= 0.

    Used wherever a ridge enters (solvers, factorizations, the tiled Cholesky, spectral
    theory, estimators; the job config wraps it to name its key). Strings and bools are
    refused although ``float()`` would take them.

    Parameters
    ----------
    ridge : real number
        Python or NumPy scalar (or a 0-d array).
    name : str
        How the message names the value (``'lam'``, ``"'solver.ridge'"``...).

    Returns
    -------
    float

    Raises
    ------
    InvalidRidgeError
        (a ``ValueError`` and a ``TypeError``) naming ``name``, the value and the fix.
    """
    if isinstance(ridge, (str, bytes, bool, np.bool_)) or getattr(ridge, "dtype", None) == np.bool_:
        raise _ridge_error(name, ridge, wrong_type=True)
    try:
        r = float(ridge)
    except (TypeError, ValueError):
        raise _ridge_error(name, ridge, wrong_type=True) from None
    if not np.isfinite(r) or r < 0:
        raise _ridge_error(name, ridge)
    return r


def check_ridges(ridges: Any, name: str = "ridges") -> np.ndarray:
    """:func:`check_ridge` for a grid: a non-empty array-like of ridges as float64, flattened.

    Returns
    -------
    ndarray, shape (G,)

    Raises
    ------
    InvalidRidgeError
        For an empty grid, or naming the first bad entry (``ridges[3]``).
    """
    if isinstance(ridges, np.ndarray) and ridges.dtype.kind in "iuf":  # fast path: one pass
        flat = ridges.reshape(-1)
        out = flat.astype(np.float64)
        bad = np.flatnonzero(~np.isfinite(out) | (out < 0))
        if bad.size:
            raise _ridge_error(f"{name}[{bad[0]}]", flat[bad[0]].item())
    else:  # each entry checked, so that a bool or a string in a list is refused too
        flat = np.asarray(ridges, dtype=object).reshape(-1)
        out = np.array([check_ridge(r, f"{name}[{k}]") for k, r in enumerate(flat)], dtype=np.float64)
    if out.size == 0:
        raise InvalidRidgeError(f"{name} must hold at least one ridge (a finite real number >= 0), "
                                f"got {ridges!r}")
    return out


def jitter_schedule(jitter: bool | float) -> list[float]:
    """Relative jitters to try after a Cholesky breakdown: ``j0, 10 j0, ...`` up to 1e-4
    (``j0 = 1e-10`` for ``True``; ``[]`` for ``False``). The meaning of every ``jitter=``
    argument (dense and tiled factorizations alike)."""
    if jitter is False or jitter is None:
        return []
    j0 = 1e-10 if jitter is True else float(jitter)
    if not np.isfinite(j0) or j0 <= 0:
        raise ValueError(f"jitter must be True, False or a positive relative jitter, got {jitter!r}")
    out = [j0]
    while out[-1] * 10 <= 1e-4 * (1 + 1e-9):
        out.append(out[-1] * 10)
    return out


def as_block(V: Any, n: int) -> tuple[np.ndarray, bool]:
    """``V`` as a C-contiguous float64 (n, k) block, and whether it was a vector."""
    V = np.asarray(V, dtype=np.float64)
    vec = V.ndim == 1
    V2 = V[:, None] if vec else V
    if V2.ndim != 2 or V2.shape[0] != n:
        raise ValueError(f"matvec needs V of shape ({n},) or ({n}, k), got {V.shape}")
    if not np.all(np.isfinite(V2)):
        raise ValueError("matvec input has NaN or Inf")
    return np.ascontiguousarray(V2), vec


def as_slices(key: Any, shape: tuple[int, int]) -> tuple[slice, slice]:
    """Two contiguous slices from ``op[r0:r1, c0:c1]`` (clipped to ``shape``)."""
    if not (isinstance(key, tuple) and len(key) == 2 and all(isinstance(k, slice) for k in key)):
        raise TypeError("index a Gram operator with two slices, e.g. op[0:100, 200:300]")
    out = []
    for k, n in zip(key, shape):
        start, stop, step = k.indices(n)
        if step != 1:
            raise ValueError("Gram block reads take contiguous slices (step 1)")
        out.append(slice(start, max(start, stop)))
    return out[0], out[1]


def check_indices(rows: Any, cols: Any, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique in-range integer index arrays for ``take`` (ValueError otherwise)."""
    rows, cols = np.asarray(rows).reshape(-1), np.asarray(cols).reshape(-1)
    for name, idx, size in (("rows", rows, shape[0]), ("cols", cols, shape[1])):
        if idx.size and (not np.issubdtype(idx.dtype, np.integer) or np.any(np.diff(idx) <= 0)
                         or idx[0] < 0 or idx[-1] >= size):
            raise ValueError(f"{name} must be sorted, unique integers in [0, {size}) "
                             "(use np.unique, and map back with np.searchsorted)")
    return rows.astype(np.int64), cols.astype(np.int64)


def read_grid(op: Any, default: int = 1024) -> int:
    """The optional contract attribute ``op.tile`` (the grid block reads are cheapest on), or
    ``default`` for an operator without one (in-memory operators)."""
    return int(getattr(op, "tile", 0) or default)


def read_blocks(op: Any, rows: np.ndarray, cols: np.ndarray, block: Optional[int] = None) -> np.ndarray:
    """``K[rows][:, cols]`` (float64) of any operator from contiguous block reads
    ``op[r0:r1, c0:c1]``, for sorted unique index arrays.

    Parameters
    ----------
    op : GramOperator
    rows, cols : ndarray of int, sorted, unique
    block : int, optional
        Read grid (default: the operator's ``tile`` attribute, else 1024). Each band of the grid that holds a
        wanted row (column) is read over the covering slice of those rows (columns) only;
        bands without one are skipped.

    Returns
    -------
    ndarray, shape (len(rows), len(cols))
    """
    b = int(block or read_grid(op))
    out = np.empty((rows.size, cols.size))
    if rows.size == 0 or cols.size == 0:
        return out

    def bands(idx: np.ndarray) -> list[tuple[int, int]]:
        cut = np.flatnonzero(np.diff(idx // b)) + 1
        edges = np.concatenate([[0], cut, [idx.size]])
        return list(zip(edges[:-1].tolist(), edges[1:].tolist()))

    for i0, i1 in bands(rows):
        r = rows[i0:i1]
        for j0, j1 in bands(cols):
            c = cols[j0:j1]
            blk = op[int(r[0]):int(r[-1]) + 1, int(c[0]):int(c[-1]) + 1]
            out[i0:i1, j0:j1] = blk[np.ix_(r - r[0], c - c[0])]
    return out


class DenseGram:
    """An in-memory Gram matrix with the operator interface.

    Parameters
    ----------
    K : array_like, shape (n1, n2)
        Kept as given (no copy); ``to_numpy()`` returns it read-only.
    """

    in_memory = True

    def __init__(self, K: Any):
        K = np.asarray(K)
        if K.ndim != 2:
            raise ValueError(f"Gram must be 2-d, got shape {K.shape}")
        self.K = K
        self.shape = K.shape
        self.dtype = K.dtype

    def diag(self) -> np.ndarray:
        return np.diagonal(self.K).astype(np.float64)

    def matvec(self, V: Any) -> np.ndarray:
        V2, vec = as_block(V, self.shape[1])
        out = self.K.astype(np.float64, copy=False) @ V2
        return out[:, 0] if vec else out

    def __getitem__(self, key: Any) -> np.ndarray:
        r, c = as_slices(key, self.shape)
        return np.array(self.K[r, c], dtype=self.dtype)

    def take(self, rows: Any, cols: Any) -> np.ndarray:
        """``K[rows][:, cols]`` (float64) for sorted unique indices."""
        rows, cols = check_indices(rows, cols, self.shape)
        return np.asarray(self.K[np.ix_(rows, cols)], dtype=np.float64)

    computes_columns = True  # a column is a copy out of memory: no pass (see cheap_columns)

    def columns(self, idx: Any) -> np.ndarray:
        """``K[:, idx]`` (float64), shape (n, len(idx))."""
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        return np.asarray(self.K[:, idx], dtype=np.float64)

    def to_numpy(self) -> np.ndarray:
        """The array itself, read-only (copy it to modify)."""
        view = self.K.view()
        view.flags.writeable = False
        return view


def operator_columns(op: Any) -> Any:
    """``columns(idx) -> K[:, idx]`` (n, len(idx)) float64 for an operator: its own ``columns``
    where it has one, else ``take`` of all rows and the sorted indices, put back in order."""
    own = getattr(op, "columns", None)
    if callable(own):
        return own
    rows = np.arange(op.shape[0])

    def columns(idx: Any) -> np.ndarray:
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        order = np.argsort(idx, kind="stable")
        block = op.take(rows, idx[order])  # shape: (n, len(idx)), sorted columns
        out = np.empty_like(block)
        out[:, order] = block
        return out

    return columns


def cheap_columns(op: Any) -> bool:
    """Whether ``op`` serves kernel columns without a pass over the Gram: an in-memory Gram,
    or an operator whose ``computes_columns`` says so (a stored Gram that computes its
    columns from its stored inputs, :attr:`ntkscale.operator.StoredGram.computes_columns`)."""
    return isinstance(op, np.ndarray) or bool(getattr(op, "computes_columns", False))


def as_operator(K: Any) -> Any:
    """``K`` if it already is a Gram operator, else :class:`DenseGram` of the array."""
    if isinstance(K, np.ndarray) or not hasattr(K, "matvec"):
        return DenseGram(K)
    return K


def dense_array(op: Any) -> np.ndarray:
    """The whole Gram as an ndarray: the array of an in-memory operator (read-only, no copy),
    else ``op.to_numpy()`` (a full read)."""
    return np.asarray(op if isinstance(op, np.ndarray) else op.to_numpy())
