"""Direct solve of ``(K + ridge I) x = y`` by Cholesky: LAPACK in memory, or a tiled
out-of-core factor over a stored Gram (float64, or float32 + float64 iterative refinement).

References
----------
Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed., ch. 10 (Cholesky) and
ch. 12 (iterative refinement: a factor in precision u_f refines to the working precision while
cond(A) u_f < 1); Moler (1967), "Iterative refinement in floating point".
"""

from __future__ import annotations

import math
import time
import warnings
from typing import Any, Callable, Optional

import numpy as np
from scipy.linalg import cho_solve

from ..errors import ConvergenceWarning, JitterWarning, NotPositiveDefiniteError
from .regularization import cholesky_info
from .result import SolveResult
from .._blas import potrf as blas_potrf
from ..linop import can_factorize, check_ridge, dense_array, jitter_schedule
from .validate import check_rhs

__all__ = ["cholesky_solve"]


def _rel_residual(R: np.ndarray, Y: np.ndarray) -> float:
    """Largest relative residual over columns (absolute where a column of y is 0)."""
    den = np.linalg.norm(Y.reshape(len(Y), -1), axis=0)
    num = np.linalg.norm(R.reshape(len(R), -1), axis=0)
    return float(np.max(num / np.where(den > 0, den, 1.0))) if num.size else 0.0


def _refine(matvec: Callable, solve: Callable, y: np.ndarray, ridge: float, x: np.ndarray, tol: float,
            max_refine: int, refine: bool, f32: bool) -> tuple[np.ndarray, float, int, bool, list]:
    """Iterative refinement ``x <- x + solve(y - (K + ridge I) x)``, residuals in float64.

    Stops at ``tol``, at ``max_refine`` steps, or when the observed contraction rate
    ``rho = r_k / r_{k-1}`` cannot reach ``tol`` in the steps left (``rho ~ cond * u_factor``).
    Returns the best iterate: ``(x, residual, steps, converged, history)``.
    """
    r = y - (matvec(x) + ridge * x)
    res = _rel_residual(r, y)
    history, best, steps = [res], (res, x), 0
    while refine and res >= tol and steps < max_refine:
        x = x + solve(r)
        steps += 1
        r = y - (matvec(x) + ridge * x)
        new = _rel_residual(r, y)
        history.append(new)
        if new < best[0]:
            best = (new, x)
        rho, res = (new / res if res > 0 else 0.0), new
        if res < tol:
            break
        if rho >= 1 or math.ceil(math.log(tol / res) / math.log(rho)) > max_refine - steps:
            break  # stalls or diverges
    res, x = best
    converged = res < tol or not refine
    if not converged:
        fix = ("use dtype=np.float64 (the float32 factor is too inaccurate: cond(K + ridge*I) * 2^-24 is "
               "close to or above 1) or a larger ridge") if f32 else "loosen tol (float64 rounding floor)"
        warnings.warn(f"iterative refinement stopped at relative residual {res:.3g} > tol={tol:g} after "
                      f"{steps} steps (history {[f'{h:.2g}' for h in history]}); {fix}", ConvergenceWarning,
                      stacklevel=3)
    return x, res, steps, converged, history


def _dense(K: np.ndarray, y: np.ndarray, ridge: float, jitter: Any, refine: bool, tol: float,
           max_refine: int) -> SolveResult:
    t0 = time.perf_counter()
    K = np.asarray(K, dtype=np.float64)
    mean_diag = float(np.mean(np.diag(K))) if K.size else 0.0
    rels = [0.0] + jitter_schedule(jitter)
    breakdowns = []
    for rel in rels:
        lam = ridge + rel * mean_diag
        A = np.array(K, order="F")  # LAPACK's layout: potrf works in place (16 n² bytes in all)
        A.flat[::len(K) + 1] += lam
        c, info = blas_potrf(A)  # (blocked above the order OpenBLAS's threaded potrf survives)
        if info == 0:
            break
        breakdowns.append((rel, int(info) - 1, None))
        if rel == rels[-1]:
            extra = f" even with jitter {rel:g} x mean diagonal" if rel else ""
            raise NotPositiveDefiniteError(f"LAPACK Cholesky (potrf) of K + ridge*I broke down{extra}",
                                           pivot=int(info) - 1, ridge=lam)
    if rel > 0:
        warnings.warn(f"K + ridge*I is not numerically positive definite at ridge={ridge:g}; factored with "
                      f"jitter {rel:g} x mean diagonal (absolute ridge {lam:g})", JitterWarning, stacklevel=3)

    def solve(b: np.ndarray) -> np.ndarray:
        return cho_solve((c, False), b, check_finite=False)

    x, res, steps, conv, hist = _refine(lambda v: K @ v, solve, y, lam, solve(y), tol, max_refine, refine,
                                        False)
    info = {"requested_ridge": ridge}
    info.update(cholesky_info(requested_ridge=ridge, ridge=lam, jitter=rel, mean_diag=mean_diag,
                              max_diag=float(np.max(np.diag(K))) if K.size else 0.0,
                              pivots=np.diag(c).astype(np.float64) ** 2, breakdowns=breakdowns, alpha=x, Y=y))
    return SolveResult(x=x, method="lapack-cholesky", ridge=lam, residual=res, iterations=steps,
                       seconds=time.perf_counter() - t0, converged=conv, history=hist, info=info)


def cholesky_solve(op: Any, y: Any, ridge: float, *, dtype: Any = np.float64, refine: Optional[bool] = None,
                   tol: float = 1e-10, max_refine: int = 20, jitter: bool | float = False,
                   tile: Optional[int] = None, progress: Optional[bool] = None,
                   **factorize_options: Any) -> SolveResult:
    """Solve ``(K + ridge I) x = y`` by Cholesky.

    Parameters
    ----------
    op : GramOperator or ndarray, shape (n, n)
        With the ``factorize`` capability (a stored Gram): ``op.factorize`` (the tiled
        out-of-core factor), then streaming triangular solves (method
        'tiled-cholesky[-f32][+refine]'). Otherwise the whole matrix (``to_numpy()``) by
        LAPACK ``potrf``/``potrs`` in float64 (method 'lapack-cholesky').
    y : array, shape (n,) or (n, C)
        Right-hand sides (finite).
    ridge : float
        Absolute ridge, finite, >= 0 (NT's relative ``diag_reg`` = ``ridge / mean(diag K)``).
    dtype : float64 (default) or float32
        Factor dtype of a stored Gram (in-memory solves always use float64).
    refine : bool, optional
        Iterative refinement ``x <- x + U^-1 U^-T (y - (K + ridge I) x)`` with float64
        matvecs over the Gram; default: on for a float32 factor.
    tol : float
        Target relative residual of the refinement (max over columns).
    max_refine : int
        Most refinement steps.
    jitter : bool or float
        Retry a breakdown with a growing relative jitter (see ``factor_tiles``); warns
        :class:`JitterWarning`; ``SolveResult.ridge`` includes it.
    tile, progress
        Factor tile edge and progress bar (``factorize`` operators only).
    **factorize_options
        Passed on to ``op.factorize`` unread (for a stored Gram: ``factor_url``,
        ``overwrite``, ``on_tile``, ``placement``); refused for in-memory Grams.

    Returns
    -------
    SolveResult
        ``x`` float64 in ``y``'s layout; ``residual`` from one float64 matvec; ``iterations``
        = refinement steps; ``passes`` = matvecs over the stored Gram.

    Raises
    ------
    ValueError
        Bad ``y``, ``ridge``, ``tol`` or ``max_refine`` (checked before any heavy work).
    NotPositiveDefiniteError
        The factorization broke down (names the pivot, and the tile for a stored Gram).
    """
    ridge = check_ridge(ridge)
    if not (np.isfinite(tol) and tol > 0):
        raise ValueError(f"tol must be a finite number > 0, got {tol!r}")
    if isinstance(max_refine, bool) or not isinstance(max_refine, (int, np.integer)) or max_refine < 0:
        raise ValueError(f"max_refine must be an int >= 0, got {max_refine!r}")
    jitter_schedule(jitter)  # validates
    dt = np.dtype(dtype)
    if dt not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64, got {dt}")
    if not can_factorize(op):
        if factorize_options:
            raise TypeError(f"cholesky_solve: {sorted(factorize_options)} apply to operators that "
                            "factorize out of core (a stored Gram), not to an in-memory matrix")
        K = dense_array(op)
        if K.ndim != 2 or K.shape[0] != K.shape[1]:
            raise ValueError(f"the Gram must be a square matrix, got shape {K.shape}")
        Y, vec = check_rhs(y, K.shape[0])
        res = _dense(K, Y, ridge, jitter, bool(refine), tol, max_refine)
        res.x = res.x[:, 0] if vec else res.x
        return res
    Y, vec = check_rhs(y, op.shape[0])
    t0 = time.perf_counter()
    refine = dt == np.float32 if refine is None else bool(refine)
    factor = op.factorize(ridge, dtype=dt, jitter=jitter, tile=tile, progress=progress, **factorize_options)
    passes0 = getattr(op, "passes", None)  # optional: stored Grams count their passes
    import psutil

    factor.keep_tiles(psutil.virtual_memory().available / 4)  # refinement solves again and again
    try:
        x, res, steps, conv, hist = _refine(op.matvec, factor.solve, Y, factor.ridge, factor.solve(Y), tol,
                                            max_refine, refine, dt == np.float32)
        pivots = factor.pivots() if callable(getattr(factor, "pivots", None)) else None
    finally:
        factor.drop_tiles()
    d = np.asarray(op.diag(), dtype=np.float64)
    reg = cholesky_info(requested_ridge=ridge, ridge=factor.ridge, jitter=factor.jitter,
                        mean_diag=float(np.mean(d)) if d.size else 0.0, max_diag=float(np.max(d)) if d.size else 0.0,
                        pivots=pivots, breakdowns=getattr(factor, "breakdowns", []), alpha=x, Y=Y)
    method = "tiled-cholesky" + ("-f32" if dt == np.float32 else "") + ("+refine" if refine else "")
    return SolveResult(x=x[:, 0] if vec else x, method=method, ridge=factor.ridge, residual=res,
                       iterations=steps, passes=0 if passes0 is None else op.passes - passes0, seconds=time.perf_counter() - t0,
                       converged=conv, history=hist, info={"requested_ridge": ridge, **reg,
                                           "factor_url": factor.url, "tile": factor.tile, "dtype": dt.name,
                                           "factor_seconds": factor.seconds, "factor_computed": factor.computed,
                                           "factor_restarts": factor.restarts})
