"""The ridge of a fit (given, relative, or chosen by GCV / LOO) and the solve."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Optional

import numpy as np

if TYPE_CHECKING:
    from ..solvers.result import SolveResult
    from ..spectral import RidgeSelection

log = logging.getLogger("ntkscale.pipeline")

__all__ = ["RIDGE_RULES", "RidgeChoice", "resolve_ridge", "FitResult", "fit"]

RIDGE_RULES = ("gcv", "loo")


@dataclass
class RidgeChoice:
    """The absolute ridge of a fit and how it was obtained.

    Attributes
    ----------
    ridge : float
        Absolute ridge λ in ``K + λI``.
    rule : {'given', 'gcv', 'loo'}
    selection : RidgeSelection or None
        The GCV / LOO curve (None for a given ridge).
    seconds : float
        Time spent choosing (0 for a given ridge).
    """

    ridge: float
    rule: str = "given"
    selection: Optional["RidgeSelection"] = None
    seconds: float = 0.0

    def record(self) -> dict:
        """Flat metrics (``ridge_rule``, and for a selection its grid, scores, score,
        subsample, select rule, standard error and seconds)."""
        sel = self.selection
        if sel is None:
            return {"ridge_rule": self.rule}
        return {"ridge_rule": self.rule, "ridge_grid": sel.grid, "ridge_scores": sel.scores,
                "ridge_score": sel.score, "ridge_subsample": sel.subsample,
                "ridge_select": sel.rule, "ridge_standard_error": sel.standard_error,
                "ridge_seconds": self.seconds}


def resolve_ridge(op: Any, Y: np.ndarray, ridge: float | str, *, relative: bool = False,
                  grid: Optional[Any] = None, subsample: Optional[int] = None, seed: int = 0,
                  select: str = "min") -> RidgeChoice:
    """The absolute ridge for ``ridge`` on the training Gram ``op``.

    Parameters
    ----------
    op : GramOperator, shape (n, n)
    Y : ndarray, shape (n,) or (n, C)
        Training targets (read by GCV / LOO only).
    ridge : float >= 0, 'gcv' or 'loo'
        A number is used as is, or times ``mean(diag K)`` with ``relative``; a rule picks
        λ on ``grid`` with :func:`ntkscale.solvers.ridge.choose_ridge` (one dense eigh of
        the Gram, or of a ``subsample`` sub-block).
    relative : bool
        Interpret ``ridge`` (and ``grid``) relative to the mean diagonal.
    grid, subsample, seed, select
        As :func:`ntkscale.solvers.ridge.choose_ridge` takes them.

    Returns
    -------
    RidgeChoice
    """
    if not isinstance(ridge, str):
        lam = float(ridge) * float(np.mean(op.diag())) if relative else float(ridge)
        return RidgeChoice(lam)
    if ridge not in RIDGE_RULES:
        raise ValueError(f"ridge must be a number >= 0, 'gcv' or 'loo', got {ridge!r}")
    from ..solvers.ridge import choose_ridge

    log.info("choosing the ridge by %s (dense eigh of a sub-block, n=%d)", ridge, op.shape[0])
    t = time.perf_counter()
    sel = choose_ridge(op, Y, ridge, grid, relative=relative, subsample=subsample, seed=seed,
                       select=select)
    return RidgeChoice(float(sel.ridge), ridge, sel, time.perf_counter() - t)


@dataclass
class FitResult:
    """Dual coefficients of ``(K + λI) α = Y`` and how the solve went.

    Attributes
    ----------
    alpha : ndarray, shape (n,) or (n, C)
        ``f(x) = K(x, X) α``.
    ridge : float
        The absolute ridge asked for (``result.ridge`` adds any Cholesky jitter).
    result : SolveResult
        Method, residual, iterations, passes, timings; ``result.x is alpha``.
    """

    alpha: np.ndarray
    ridge: float
    result: "SolveResult"

    @property
    def solver(self) -> Optional[str]:
        """The solver that ran (``'cholesky'``, ``'pcg'``, ...)."""
        return self.result.info.get("solver")

    def info(self) -> dict:
        """Every field of the SolveResult but the solution."""
        return {k: v for k, v in vars(self.result).items() if k != "x"}

    def fitted(self, Y: np.ndarray) -> np.ndarray:
        """Train predictions ``K α = Y − λα`` (no pass over the Gram), shape of ``Y``.

        ``λ`` is the ridge the solver used, jitter included (``result.ridge``): at ridge 0 a
        jittered Cholesky solves ``(K + εI) α = Y``, so ``K α = Y − εα``, which is not ``Y``
        when the labels cannot be interpolated (duplicate inputs, different labels). The eigh
        pseudo-inverse reports ``K α`` itself (``result.info['fitted']``)."""
        fitted = self.result.info.get("fitted")
        if fitted is not None:
            return np.asarray(fitted).reshape(np.shape(Y))
        return Y - float(self.result.ridge) * self.alpha


def fit(op: Any, Y: np.ndarray, ridge: float, *, solver: str = "auto", tol: float = 1e-8,
        maxiter: Optional[int] = None, pcg_rank: int = 1000, jitter: bool | float = False,
        seed: int = 0, preconditioner: str = "auto",
        columns: Optional[Callable[[np.ndarray], np.ndarray]] = None) -> FitResult:
    """Solve ``(K + ridge I) α = Y`` with :func:`ntkscale.solvers.solve`.

    Parameters
    ----------
    op : GramOperator, shape (n, n)
    Y : ndarray, shape (n,) or (n, C)
    ridge : float
        Absolute ridge (:func:`resolve_ridge`).
    solver, tol, maxiter, jitter, seed
        As :func:`ntkscale.solvers.solve` takes them.
    pcg_rank : int
        PCG preconditioner rank, capped at n.
    preconditioner : {'auto', 'nystrom', 'rpcholesky'}
        PCG's preconditioner (:data:`ntkscale.solvers.api.PRECONDITIONERS`): the randomized
        sketch (passes over the Gram) or randomly pivoted Cholesky from kernel columns;
        'auto' (default) takes RPCholesky where columns cost no pass
        (:func:`ntkscale.solvers.api.resolve_preconditioner`).
    columns : callable, optional
        ``columns(idx) -> K[:, idx]`` for 'rpcholesky'; default
        :func:`ntkscale.linop.operator_columns` of ``op`` (a stored Gram computes its columns
        from the stored inputs, :meth:`ntkscale.operator.StoredGram.columns`: no pass over
        the tiles).

    Returns
    -------
    FitResult
    """
    from ..solvers import solve

    res = solve(op, Y, ridge, solver=solver, tol=tol, maxiter=maxiter,
                pcg_rank=min(pcg_rank, op.shape[0]), jitter=jitter, seed=seed,
                preconditioner=preconditioner, columns=columns)
    return FitResult(alpha=res.x, ridge=float(ridge), result=res)
