"""One entry point, :func:`solve`, that picks a solver by size, memory and ridge.

What ``solver='auto'`` does (and says, in ``SolveResult.info['auto']`` and the log):

* fits in memory (a float64 copy of K and its factor use at most half the free RAM):
  LAPACK — Cholesky of K + λI, or for λ = 0 the eigendecomposition pseudo-inverse;
* larger, ridge relative to the mean diagonal >= ``pcg_min_relative_ridge``:
  preconditioned CG (rank ``pcg_rank``; RPCholesky where kernel columns cost no pass, else
  the Nyström sketch: :func:`resolve_preconditioner`);
* larger, smaller ridge: the out-of-core tiled Cholesky (for λ = 0 with a jitter
  retry, reported). Measurements behind the threshold: benchmarks/bench_solve.py —
  on NTK Grams of real data the spectrum decays like 1/k, so a fixed-rank
  preconditioner loses to the direct factorization as the ridge shrinks.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Optional

import numpy as np

from ..linop import as_operator, cheap_columns, operator_columns
from .cholesky import cholesky_solve
from .nystrom import NystromApprox, nystrom
from .pcg import pcg
from .rpcholesky import ColumnFactor, Columns, rpcholesky_factor
from .result import SolveResult
from .ridgeless import minnorm_cg, minnorm_eigh
from .validate import check_rhs, check_ridge

__all__ = ["solve", "dense_limit", "SOLVERS", "PRECONDITIONERS", "build_preconditioner", "resolve_preconditioner"]

log = logging.getLogger("ntkscale")

SOLVERS = ("auto", "cholesky", "cholesky-f32", "pcg", "eigh", "cg")
# PCG's preconditioners: 'nystrom' = randomized sketch Y = KΩ (1 + power_iters passes over the
# Gram); 'rpcholesky' = randomly pivoted Cholesky from ~rank kernel columns (no pass); 'auto' =
# 'rpcholesky' where columns cost no pass (resolve_preconditioner), else 'nystrom'.
PRECONDITIONERS = ("auto", "nystrom", "rpcholesky")


def resolve_preconditioner(op: Any, kind: str, columns: Optional[Columns] = None) -> str:
    """The preconditioner ``kind`` stands for: 'auto' is 'rpcholesky' when kernel columns cost
    no pass over the Gram (``columns`` given, or :func:`ntkscale.linop.cheap_columns` of ``op``),
    else 'nystrom'. Measured: at equal rank both need the same PCG iterations (within 0-2 at
    n = 10 000 and 30 000), and RPCholesky builds 3.9-5.4x faster on a stored 30k Gram
    (benchmarks/RESULTS.md §7 and §00000e)."""
    if kind not in PRECONDITIONERS:
        raise ValueError(f"preconditioner must be one of {PRECONDITIONERS}, got {kind!r}")
    if kind != "auto":
        return kind
    return "rpcholesky" if columns is not None or cheap_columns(op) else "nystrom"


# RPCholesky's factor F (n, rank) is stored in float32 beyond this many float64 bytes
RPC_FLOAT64_MAX_BYTES = 2 * 2**30


def build_preconditioner(op: Any, rank: int, kind: str = "nystrom", *, power_iters: int = 0,
                         seed: int = 0, columns: Optional[Columns] = None) -> NystromApprox | ColumnFactor:
    """The rank-``rank`` approximation behind PCG's preconditioner, with its build record.

    ``kind='nystrom'``: :func:`.nystrom.nystrom` (``1 + power_iters`` passes), a
    :class:`NystromApprox`; ``'rpcholesky'``: :func:`.rpcholesky.rpcholesky_factor` on
    ``op.diag()`` and ``columns`` (default :func:`ntkscale.linop.operator_columns`), a
    :class:`ColumnFactor` (``F`` in float32 once ``8 n rank`` bytes exceed
    ``RPC_FLOAT64_MAX_BYTES``: 3.8 GB at n = 120 000, rank 8000). ``info`` gains ``kind``,
    ``rank``, ``columns`` (kernel columns computed), ``passes``, ``seconds``.
    """
    kind = resolve_preconditioner(op, kind, columns)
    t = time.perf_counter()
    if kind == "nystrom":
        pre = nystrom(op, rank, power_iters=power_iters, seed=seed, precision="auto")
        pre.info["columns"] = 0
    else:
        n = op.shape[0]
        dtype = np.float32 if 8.0 * n * rank > RPC_FLOAT64_MAX_BYTES else np.float64
        try:
            pre = rpcholesky_factor(op.diag(), columns if columns is not None else operator_columns(op), rank,
                                    seed=seed, factor_dtype=dtype)
        finally:  # a stored Gram keeps the rows' inputs on its workers between column requests
            release = getattr(op, "release_columns", None)
            if callable(release):
                release()
        pre.info["factor_dtype"] = np.dtype(dtype).name
        pre.setup()  # Fᵀ F and its eigh, ridge-independent: part of the build's seconds, as planned
    pre.info.update(kind=kind, rank=pre.rank, passes=pre.passes, seconds=time.perf_counter() - t)
    return pre


def dense_limit(available_bytes: Optional[float] = None) -> int:
    """Largest n whose float64 Gram plus factor fit in half the available memory."""
    if available_bytes is None:
        import psutil

        available_bytes = psutil.virtual_memory().available
    return int(np.sqrt(0.5 * available_bytes / 16))


def _dense(op: Any) -> Any:
    """An in-memory operator of ``op`` (reads a stored Gram whole)."""
    if getattr(op, "in_memory", False):
        return op
    return as_operator(np.asarray(op.to_numpy(), dtype=np.float64))


# Measured (benchmarks/bench_solve.py, Fashion-MNIST n = 20000, C = 10, tol 1e-8): Nyström-PCG
# needs 23-122 iterations for relative ridges 1e-1 ... 1e-6 (ranks 4000 ... 500; the count
# plateaus below 1e-3, where the kernel's own smallest eigenvalues condition the system),
# and in memory it is 0.93-4.7x LAPACK's time. Beyond RAM the peer is the tiled Cholesky
# (n³/3 flops): with ~100 passes of cost ∝ n², PCG wins from n ≈ 50 000 on this machine
# (the pass/GEMM cost ratio of benchmarks/bench_gram.py), and uses ~10x less memory.
PCG_MIN_N = 50_000
PCG_MIN_RELATIVE_RIDGE = 1e-6


def auto_method(n: int, relative_ridge: float, n_dense: int, *, in_memory: bool = False,
                pcg_min_relative_ridge: float = PCG_MIN_RELATIVE_RIDGE,
                pcg_min_n: int = PCG_MIN_N) -> tuple[str, str, bool]:
    """What ``solver='auto'`` runs: ``(solver, reason, densify)``.

    In memory or ``n <= n_dense``: LAPACK Cholesky (``eigh`` pseudo-inverse at ridge 0).
    Beyond: Nyström-PCG when ``n >= pcg_min_n`` and ``relative_ridge >=
    pcg_min_relative_ridge``, else the out-of-core tiled Cholesky.
    """
    if in_memory or n <= n_dense:
        where = "the Gram is in memory" if in_memory else f"n={n} <= dense limit {n_dense}"
        if relative_ridge == 0:
            return "eigh", f"{where}: exact pseudo-inverse by eigh", True
        return "cholesky", f"{where}: LAPACK Cholesky", True
    if relative_ridge > 0 and relative_ridge >= pcg_min_relative_ridge and n >= pcg_min_n:
        return "pcg", (f"n={n} > dense limit {n_dense} and >= {pcg_min_n}, relative ridge "
                       f"{relative_ridge:.2g} >= {pcg_min_relative_ridge:g}: Nyström-PCG"), False
    why = (f"relative ridge {relative_ridge:.2g} < {pcg_min_relative_ridge:g}"
           if relative_ridge < pcg_min_relative_ridge else f"n < {pcg_min_n} (PCG's crossover)")
    return "cholesky", f"n={n} > dense limit {n_dense}, {why}: out-of-core tiled Cholesky", False


def _choose(op: Any, ridge: float, n_dense: int, pcg_min_relative_ridge: float = PCG_MIN_RELATIVE_RIDGE,
            pcg_min_n: int = PCG_MIN_N) -> tuple[str, str, bool]:
    """(solver, reason, densify) for an operator."""
    n = op.shape[0]
    in_memory = bool(getattr(op, "in_memory", False))
    rel = 0.0 if ridge == 0 else ridge / float(np.mean(op.diag()))
    return auto_method(n, rel, n_dense, in_memory=in_memory,
                       pcg_min_relative_ridge=pcg_min_relative_ridge, pcg_min_n=pcg_min_n)


def solve(op: Any, y: Any, ridge: float = 0.0, *, solver: str = "auto", tol: float = 1e-8,
          maxiter: Optional[int] = None, pcg_rank: int = 1000, power_iters: int = 0,
          pcg_min_relative_ridge: float = PCG_MIN_RELATIVE_RIDGE, pcg_min_n: int = PCG_MIN_N,
          n_dense: Optional[int] = None,
          jitter: bool | float = False, seed: int = 0,
          x0: Optional[Any] = None, preconditioner: str = "auto",
          columns: Optional[Columns] = None) -> SolveResult:
    """Solve ``(K + ridge I) x = y`` (``ridge = 0``: the minimum-norm interpolant ``K⁺y``).

    Parameters
    ----------
    op : GramOperator or ndarray, shape (n, n)
    y : array, shape (n,) or (n, C)
    ridge : float
        Absolute ridge, >= 0 (see the estimators for the relative convention).
    solver : {'auto', 'cholesky', 'cholesky-f32', 'pcg', 'eigh', 'cg'}
        'cholesky' is LAPACK for in-memory Grams and the tiled out-of-core factorization
        for stored ones; 'cholesky-f32' factors in float32 and refines in float64;
        'eigh' and 'cg' are the ridgeless methods.
    tol, maxiter, x0 : iterative solvers' tolerance, cap and warm start.
    pcg_rank, power_iters, seed : PCG's preconditioner (rank 0: none).
    preconditioner : {'auto', 'nystrom', 'rpcholesky'}
        'auto' (default): 'rpcholesky' where kernel columns cost no pass (an in-memory Gram, a
        stored Gram that computes columns from its inputs, ``columns`` given), else 'nystrom'
        (:func:`resolve_preconditioner`);
        'nystrom': randomized sketch ``Y = KΩ``, ``1 + power_iters`` passes over the Gram;
        'rpcholesky': randomly pivoted Cholesky from about ``pcg_rank`` kernel columns
        (``columns``, default :func:`ntkscale.linop.operator_columns`), no pass. The sketch
        gives the Frangella-Tropp-Udell preconditioner (:meth:`NystromApprox.preconditioner`),
        RPCholesky ``P = F Fᵀ + ridge I`` by Woodbury (:meth:`ColumnFactor.preconditioner`).
    columns : callable, optional
        ``columns(idx) -> K[:, idx]`` for 'rpcholesky'.
    pcg_min_relative_ridge, pcg_min_n : float, int
        'auto' uses PCG beyond the dense limit when ridge / mean(diag K) and n are at least
        these (see :func:`auto_method`).
    n_dense : int, optional
        'auto' densifies up to this n (default :func:`dense_limit`).
    jitter : bool or float
        Cholesky breakdown retry with a growing diagonal jitter (warns with the value).
        A stored Gram keeps its tiled factor where the operator says
        (``StoredGram(factor_url=...)``).

    Returns
    -------
    SolveResult
        ``info['solver']`` is what ran; ``info['auto']`` says why when ``solver='auto'``;
        after PCG ``info['preconditioner']`` is the build record (kind, rank, columns,
        passes, seconds, residual_fraction for RPCholesky) and ``info['sketch_passes']``
        its passes (counted in ``passes``).
    """
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    op = as_operator(op)  # an ndarray is a DenseGram from here on
    preconditioner = resolve_preconditioner(op, preconditioner, columns)  # (refuses unknown names)
    n = op.shape[0]
    check_rhs(y, n)
    ridge = check_ridge(ridge)
    reason = None
    densify = False
    if solver == "auto":
        limit = dense_limit() if n_dense is None else int(n_dense)
        solver, reason, densify = _choose(op, ridge, limit, pcg_min_relative_ridge, pcg_min_n)
        if preconditioner == "rpcholesky":
            reason = reason.replace("Nyström-PCG", "RPCholesky-PCG")
        log.info("solver='auto' picked %s (%s)", solver, reason)
        if solver == "cholesky" and ridge == 0 and jitter is False:
            jitter = True
    if solver in ("eigh", "cg") and ridge != 0:
        raise ValueError(f"solver={solver!r} is ridgeless; pass ridge=0 or use 'cholesky'/'pcg'")
    if solver == "eigh":
        res = minnorm_eigh(op, y)
    elif solver == "cg":
        res = minnorm_cg(op, y, tol=tol, maxiter=maxiter)
    elif solver == "pcg":
        pre = (build_preconditioner(op, min(pcg_rank, n), preconditioner, power_iters=power_iters,
                                    seed=seed, columns=columns)
               if pcg_rank > 0 else None)
        res = pcg(op, y, ridge, precond=pre, tol=tol, maxiter=maxiter, x0=x0)
        if pre is not None:
            res.info["sketch_passes"] = pre.passes
            res.info["preconditioner"] = {k: v for k, v in pre.info.items() if k != "pivots"}
            res.passes += pre.passes
    else:
        target = _dense(op) if densify else op
        dtype = np.float32 if solver == "cholesky-f32" else np.float64
        res = cholesky_solve(target, y, ridge, dtype=dtype, jitter=jitter)
    res.info["solver"] = solver
    if reason is not None:
        res.info["auto"] = reason
    return res
