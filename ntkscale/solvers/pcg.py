"""Preconditioned conjugate gradients on ``(K + ridge I) X = Y`` with many right-hand sides.

Each iteration makes one pass over the Gram for all C columns (``op.matvec`` of an
(n, C) block); the vector algebra stays on the client (n × C floats), so no task
graph grows across iterations. Columns run independent CG recurrences and freeze
once converged.
"""

from __future__ import annotations

import logging
import time
import warnings
from typing import Any, Callable, Optional, Sequence

import numpy as np

from ..errors import ConvergenceWarning, NotConvergedError
from .nystrom import NystromApprox, nystrom
from .rpcholesky import ColumnFactor
from .result import SolveResult
from .validate import check_rhs, check_ridge
from ..linop import check_ridges

__all__ = ["pcg", "pcg_path"]

log = logging.getLogger("ntkscale")

Precond = Callable[[np.ndarray], np.ndarray]


def _residual(op: Any, X: np.ndarray, Y: np.ndarray, ridge: float) -> np.ndarray:
    return Y - (op.matvec(X) + ridge * X)


def pcg(op: Any, y: Any, ridge: float, *, precond: Optional[NystromApprox | ColumnFactor | Precond] = None,
        tol: float = 1e-8, maxiter: Optional[int] = None, x0: Optional[Any] = None,
        true_residual_every: int = 25, raise_on_fail: bool = False,
        callback: Optional[Callable[[int, float], None]] = None) -> SolveResult:
    """Solve ``(K + ridge I) x = y`` by (preconditioned) conjugate gradients.

    Parameters
    ----------
    op : GramOperator
        Symmetric PSD operator: ``shape``, ``matvec(V)`` for V (n, C).
    y : array, shape (n,) or (n, C)
        Right-hand sides; all columns share every pass over the Gram.
    ridge : float
        Absolute ridge (>= 0; 0 means plain CG on K, see :func:`..ridgeless`).
    precond : NystromApprox, ColumnFactor or callable, optional
        A Nyström approximation or an RPCholesky factor (turned into ``P⁻¹`` for this ridge
        by its ``preconditioner(ridge)``) or a function applying ``P⁻¹`` to an (n, C) block.
    tol : float
        Stop when every column's ``||r|| / ||y||`` < tol.
    maxiter : int, optional
        Iteration cap (default ``min(n, 1000)``).
    x0 : array, optional
        Warm start, same shape as ``y``.
    true_residual_every : int
        Replace the recurrence residual by ``y − (K + ridge I) x`` every this many
        iterations (one extra pass), so round-off drift cannot fake convergence.
    raise_on_fail : bool
        Raise :class:`NotConvergedError` instead of warning when the cap is hit.
    callback : callable, optional
        ``callback(iteration, max relative residual)`` after each iteration.

    Returns
    -------
    SolveResult
        ``history`` holds the max relative residual per iteration; ``residual`` is a
        final true residual; ``converged`` False (with a ConvergenceWarning) at the cap.

    References
    ----------
    Hestenes & Stiefel (1952); Saad, "Iterative methods for sparse linear systems", Alg. 9.1.
    """
    t0 = time.perf_counter()
    n = op.shape[0]
    Y, vec = check_rhs(y, n)
    ridge = check_ridge(ridge)
    if tol <= 0:
        raise ValueError(f"tol must be > 0, got {tol}")
    maxiter = min(n, 1000) if maxiter is None else int(maxiter)
    if maxiter < 1:
        raise ValueError(f"maxiter must be >= 1, got {maxiter}")
    M: Optional[Precond] = precond.preconditioner(ridge) if hasattr(precond, "preconditioner") else precond
    apply_M = M if M is not None else (lambda R: R)
    passes0 = getattr(op, "passes", None)
    matvecs = 0

    X = np.zeros_like(Y) if x0 is None else check_rhs(x0, n, "x0")[0].copy()
    if X.shape != Y.shape:
        raise ValueError(f"x0 has shape {X.shape}, y has {Y.shape}")
    bnorm = np.linalg.norm(Y, axis=0)
    bnorm[bnorm == 0] = 1.0
    if x0 is None:
        R = Y.copy()
    else:
        R = _residual(op, X, Y, ridge)
        matvecs += 1
    Z = apply_M(R)
    P = Z.copy()
    rz = np.einsum("ij,ij->j", R, Z)
    rel = np.linalg.norm(R, axis=0) / bnorm
    active = rel >= tol
    history = [float(rel.max())]
    it = 0
    while active.any() and it < maxiter:
        it += 1
        cols = np.flatnonzero(active)
        Pa = P[:, cols]
        AP = op.matvec(Pa) + ridge * Pa
        matvecs += 1
        pAp = np.einsum("ij,ij->j", Pa, AP)
        if np.any(pAp <= 0):
            raise np.linalg.LinAlgError(
                f"CG breakdown at iteration {it}: p·(K + ridge I)p = {pAp.min():.3g} <= 0, so the "
                "operator is not positive definite (an indefinite Gram, or ridge 0 on a singular "
                "one); add a ridge")
        alpha = rz[cols] / pAp
        X[:, cols] += alpha * Pa
        R[:, cols] -= alpha * AP
        if it % true_residual_every == 0:
            R[:, cols] = _residual(op, X[:, cols], Y[:, cols], ridge)
            matvecs += 1
        rel[cols] = np.linalg.norm(R[:, cols], axis=0) / bnorm[cols]
        history.append(float(rel[cols].max()))
        if callback is not None:
            callback(it, history[-1])
        active = rel >= tol
        cols = np.flatnonzero(active)
        if cols.size == 0:
            break
        Zc = apply_M(R[:, cols])
        rz_new = np.einsum("ij,ij->j", R[:, cols], Zc)
        P[:, cols] = Zc + (rz_new / rz[cols]) * P[:, cols]
        rz[cols] = rz_new
    final = np.linalg.norm(_residual(op, X, Y, ridge), axis=0) / bnorm
    matvecs += 1
    converged = bool(np.all(final < tol * 10)) and not active.any()
    if not converged:
        msg = (f"PCG stopped after {it} iterations with relative residual {final.max():.3g} > tol "
               f"{tol:g}; raise maxiter, use a larger preconditioner rank, a larger ridge, or a "
               "direct solver (solver='cholesky')")
        if raise_on_fail:
            raise NotConvergedError(msg)
        warnings.warn(msg, ConvergenceWarning, stacklevel=2)
    passes = (op.passes - passes0) if passes0 is not None else matvecs
    info = {"rank": getattr(precond, "rank", None),
            "preconditioned": M is not None}
    return SolveResult(x=X[:, 0] if vec else X, method="pcg", ridge=ridge, residual=float(final.max()),
                       iterations=it, passes=passes, seconds=time.perf_counter() - t0,
                       converged=converged, history=history, info=info)


def pcg_path(op: Any, y: Any, ridges: Sequence[float], *, rank: int = 500,
             precond: Optional[NystromApprox] = None, power_iters: int = 0, seed: int = 0,
             warm_start: bool = True, **kwargs: Any) -> list[SolveResult]:
    """Solve for several ridges from one Nyström sketch.

    The ridges are solved from largest to smallest, each warm-started from the
    previous solution (``warm_start``); the results are returned in the input order.
    The sketch costs ``1 + power_iters`` passes, reported in ``info['sketch_passes']``
    of every result.
    """
    ridges = check_ridges(ridges, "ridges").tolist()
    if precond is None:
        precond = nystrom(op, min(rank, op.shape[0]), power_iters=power_iters, seed=seed, precision="auto")
    order = np.argsort(ridges)[::-1]
    out: dict[int, SolveResult] = {}
    prev = None
    for i in order:
        res = pcg(op, y, ridges[i], precond=precond, x0=prev if warm_start else None, **kwargs)
        res.info["sketch_passes"] = precond.passes
        out[int(i)] = res
        prev = res.x
    return [out[i] for i in range(len(ridges))]
