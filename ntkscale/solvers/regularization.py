"""Did a solve have to regularize, and how far from the asked-for problem is its answer?

Every direct solver fills ``SolveResult.info`` with the same keys through these helpers, so
that a fit at ridge 0 on a (nearly) singular Gram says what it did instead of "ridgeless":

* ``regularized`` (bool) and ``regularization`` (one sentence, or None): what was added or cut
  and why;
* Cholesky (LAPACK or tiled): ``jitter`` (relative to ``mean_diag``), ``jitter_absolute``,
  ``jitter_retries`` (factorizations that broke down first), ``breakdown_pivot`` /
  ``breakdown_tile`` (where the first one failed), ``min_pivot`` and ``min_pivot_relative``
  (smallest ``U_ii^2`` of the factor that was used, alone and over ``mean_diag``), and
  ``cond_lower_bound = max(diag A) / min_pivot`` (``A = K + ridge I``; every pivot lies in
  ``[lambda_min(A), lambda_max(A)]``, so this bounds ``cond(A)`` from below at no cost);
* eigh pseudo-inverse: ``rank``, ``eigenvalues_cut``, ``cutoff`` / ``cutoff_relative``,
  ``min_eigenvalue`` / ``max_eigenvalue``, ``negative_eigenvalues``;
* at ridge 0: ``interpolation_residual``, ``||K alpha - y|| / ||y||`` (max over columns);
  for a jittered Cholesky it is ``||eps alpha|| / ||y||`` (within ``residual`` of the exact
  value, no pass over the Gram). Above :data:`ILL_POSED_RESIDUAL` the labels are not
  interpolated: the same input carries different labels (or inputs closer than the kernel's
  float resolution do), and no minimum-norm *interpolant* exists; the answer is then a
  ridge-``eps`` (Cholesky) or least-squares (eigh) fit, and the sentence says so.

Thresholds. ``NEAR_SINGULAR_PIVOT = 1e-7`` (relative to the mean diagonal) is the eigh path's
default cutoff (:func:`ntkscale.solvers.ridgeless.minnorm_eigh`): arc-cosine kernels of
(near-)identical inputs carry ~1e-8 relative rounding error, so a pivot below it is noise.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

__all__ = ["NEAR_SINGULAR_PIVOT", "ILL_POSED_RESIDUAL", "cholesky_info", "eigh_info", "describe"]

NEAR_SINGULAR_PIVOT = 1e-7
ILL_POSED_RESIDUAL = 1e-3


def _col_ratio(num: np.ndarray, Y: np.ndarray) -> float:
    num = np.linalg.norm(np.asarray(num).reshape(len(num), -1), axis=0)
    den = np.linalg.norm(np.asarray(Y).reshape(len(Y), -1), axis=0)
    return float(np.max(num / np.where(den > 0, den, 1.0))) if num.size else 0.0


def cholesky_info(*, requested_ridge: float, ridge: float, jitter: float, mean_diag: float, max_diag: float,
                  pivots: Optional[np.ndarray], breakdowns: Sequence[tuple], alpha: np.ndarray,
                  Y: np.ndarray) -> dict[str, Any]:
    """The regularization keys of a Cholesky solve (see the module notes).

    ``breakdowns``: ``(jitter, pivot, tile)`` per failed factorization; ``pivots``: ``U_ii^2``
    of the factor used (None: unknown); ``alpha`` / ``Y``: solution and right-hand sides.
    """
    info: dict[str, Any] = {"mean_diag": float(mean_diag), "jitter": float(jitter),
                            "jitter_absolute": float(ridge - requested_ridge),
                            "jitter_retries": len(breakdowns)}
    if breakdowns:
        info["breakdown_pivot"], info["breakdown_tile"] = breakdowns[0][1], breakdowns[0][2]
    if pivots is not None and len(pivots):
        mp = float(np.min(pivots))
        info["min_pivot"] = mp
        info["min_pivot_relative"] = mp / mean_diag if mean_diag > 0 else float("nan")
        info["cond_lower_bound"] = (max_diag + ridge) / mp if mp > 0 else float("inf")
    if requested_ridge == 0:
        info["interpolation_residual"] = _col_ratio(info["jitter_absolute"] * alpha, Y)
    info.update(describe(info, requested_ridge))
    return info


def eigh_info(w: np.ndarray, cutoff: float, mean_diag: float, residual: float) -> dict[str, Any]:
    """The regularization keys of the eigh pseudo-inverse (eigenvalues ``w``, ``cutoff``)."""
    keep = w > cutoff
    info: dict[str, Any] = {"rank": int(keep.sum()), "eigenvalues_cut": int((~keep).sum()),
                            "cutoff": float(cutoff), "mean_diag": float(mean_diag),
                            "cutoff_relative": float(cutoff / mean_diag) if mean_diag > 0 else float("nan"),
                            "min_eigenvalue": float(w.min()) if w.size else 0.0,
                            "max_eigenvalue": float(w.max()) if w.size else 0.0,
                            "negative_eigenvalues": int((w < 0).sum()),
                            "interpolation_residual": float(residual)}
    info.update(describe(info, 0.0))
    return info


def _ill_posed(info: dict) -> str:
    r = info.get("interpolation_residual")
    if r is None or r <= ILL_POSED_RESIDUAL:
        return ""
    return (f"; the labels are NOT interpolated (||K alpha - y||/||y|| = {r:.2g}): identical or nearly "
            "identical inputs carry different labels, so ridgeless regression is ill-posed here and this "
            "is a regularized fit; pass a ridge, or deduplicate the inputs")


def describe(info: dict, requested_ridge: float) -> dict[str, Any]:
    """``{'regularized': bool, 'regularization': sentence or None, 'near_singular': bool}``
    from the keys above."""
    n_cut = info.get("eigenvalues_cut")
    if n_cut is not None:  # eigh pseudo-inverse
        if n_cut == 0:
            return {"regularized": False, "regularization": None, "near_singular": False}
        s = (f"regularized: the pseudo-inverse dropped {n_cut} of {n_cut + info['rank']} eigenvalues "
             f"<= {info['cutoff']:.3g} ({info['cutoff_relative']:.2g} x mean diag), because K is numerically "
             f"singular (smallest eigenvalue {info['min_eigenvalue']:.3g}, "
             f"{info['negative_eigenvalues']} negative)")
        return {"regularized": True, "regularization": s + _ill_posed(info), "near_singular": True}
    rel, mp = info.get("jitter", 0.0), info.get("min_pivot_relative")
    near = mp is not None and np.isfinite(mp) and mp < NEAR_SINGULAR_PIVOT
    if rel > 0:
        tries = info["jitter_retries"]
        where = ""
        if info.get("breakdown_pivot") is not None:
            tile = info.get("breakdown_tile")
            where = f" at pivot {info['breakdown_pivot']}" + (f" (diagonal tile {tile})" if tile is not None else "")
        why = (f"because K + {requested_ridge:g}*I is not numerically positive definite (Cholesky broke down"
               f"{where}; {tries} {'retry' if tries == 1 else 'retries'})" if tries else
               "because the reused factor store was factored with it")
        s = f"regularized: jitter {info['jitter_absolute']:.3g} ({rel:.2g} x mean diag), {why}"
        if mp is not None:
            s += f"; smallest pivot {mp:.2g} x mean diag, cond >= {info['cond_lower_bound']:.2g}"
        return {"regularized": True, "regularization": s + _ill_posed(info), "near_singular": True}
    if near:
        s = (f"not regularized, but near-singular: smallest Cholesky pivot {mp:.2g} x mean diag "
             f"(cond >= {info['cond_lower_bound']:.2g}); (near-)duplicate rows make the solution sensitive "
             "to rounding")
        return {"regularized": False, "regularization": s + _ill_posed(info), "near_singular": True}
    return {"regularized": False, "regularization": None, "near_singular": False}
