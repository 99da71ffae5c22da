"""Ridgeless regression: the minimum-norm interpolant ``α = K⁺ y``.

* ``'eigh'`` (exact, in memory): ``K = V diag(λ) Vᵀ``; eigenvalues below
  ``rcond · λ_max`` are treated as zero (``numpy.linalg.pinv(K, rcond, hermitian=True)``),
  so a singular Gram (duplicate rows) gives the pseudo-inverse solution. The default
  cutoff is ``max(n·eps·λ_max, 1e-7·mean(diag K))``: arc-cosine kernels of (near-)
  identical inputs carry ~1e-8 relative error (arccos near 1), so duplicate rows leave
  eigenvalues of ~1e-8·mean(diag) that are noise, not signal.
* ``'cg'`` (any n, one pass per iteration): plain CG on ``K α = y`` from ``α0 = 0``.
  Its iterates stay in range(K), so for a consistent system it converges to the
  minimum-norm solution; the interpolation residual ``||Kα − y|| / ||y||`` is reported.
  No preconditioner: a preconditioner would leave range(K) and lose the minimum norm.
* ``'cholesky'`` (large n, nonsingular K): handled by :func:`ntkscale.solvers.solve`
  (tiled Cholesky at ridge 0 with a jitter retry). What it added, its smallest pivot and
  whether the labels were interpolated are in ``info`` (:mod:`ntkscale.solvers.regularization`):
  exact duplicates with equal labels give the min-norm predictions up to ~ε/λ_min⁺; with
  different labels ridge 0 is ill-posed and ``info['regularization']`` says so
  (benchmarks/RESULTS.md §6).
"""

from __future__ import annotations

import time
from typing import Any, Optional

import numpy as np

from .pcg import pcg
from .regularization import NEAR_SINGULAR_PIVOT, eigh_info
from .result import SolveResult
from .validate import check_rhs

__all__ = ["minnorm_eigh", "minnorm_cg"]


def minnorm_eigh(op: Any, y: Any, *, rcond: Optional[float] = None) -> SolveResult:
    """Exact ``K⁺ y`` by a dense eigendecomposition (O(n³), n² memory).

    Parameters
    ----------
    op : GramOperator or ndarray, shape (n, n)
    y : array, shape (n,) or (n, C)
    rcond : float, optional
        Cutoff relative to the largest eigenvalue, as in ``numpy.linalg.pinv``; default:
        ``max(n·eps·λ_max, 1e-7·mean(diag K))`` (see module notes).

    Returns
    -------
    SolveResult
        ``info`` holds ``rank`` (eigenvalues kept), ``cutoff`` (absolute), ``eigenvalues_cut``
        and the other keys of :func:`ntkscale.solvers.regularization.eigh_info` (``regularized``
        and a ``regularization`` sentence when eigenvalues were cut), and ``fitted`` = ``K x``.
    """
    t0 = time.perf_counter()
    K = np.asarray(op.to_numpy() if hasattr(op, "to_numpy") else op, dtype=np.float64)
    n = K.shape[0]
    Y, vec = check_rhs(y, n)
    w, V = np.linalg.eigh(K)
    top = float(abs(w).max())
    if rcond is None:
        cutoff = max(n * np.finfo(np.float64).eps * top, NEAR_SINGULAR_PIVOT * float(np.mean(np.diag(K))))
    else:
        cutoff = float(rcond) * top
    mean_diag = float(np.mean(np.diag(K))) if n else 0.0
    keep = w > cutoff
    inv = np.zeros_like(w)
    inv[keep] = 1.0 / w[keep]
    X = V @ (inv[:, None] * (V.T @ Y))
    bnorm = np.linalg.norm(Y, axis=0)
    bnorm[bnorm == 0] = 1.0
    KX = K @ X  # shape: (n, C), the fitted values (not Y where eigenvalues were cut)
    res = np.linalg.norm(KX - Y, axis=0) / bnorm
    return SolveResult(x=X[:, 0] if vec else X, method="eigh-pinv", ridge=0.0, residual=float(res.max()),
                       seconds=time.perf_counter() - t0,
                       info={**eigh_info(w, cutoff, mean_diag, float(res.max())),
                             "fitted": KX[:, 0] if vec else KX})


def minnorm_cg(op: Any, y: Any, *, tol: float = 1e-8, maxiter: Optional[int] = None,
               **kwargs: Any) -> SolveResult:
    """Minimum-norm interpolant by unpreconditioned CG from zero (see module notes).

    Converges slowly when K is ill-conditioned (NTK spectra decay like 1/k): check
    ``converged`` and ``residual`` (the interpolation residual).
    """
    res = pcg(op, y, 0.0, precond=None, tol=tol, maxiter=maxiter, x0=None, **kwargs)
    res.method = "cg-minnorm"
    return res
