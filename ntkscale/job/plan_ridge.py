"""The fit's ridge found at plan time: the ridge selection's sub-block step, run before the job.

A job with ``[solver] ridge = "loo"`` (or ``"gcv"``) picks λ inside its fit stage on a random
principal sub-block of the stored Gram (:func:`ntkscale.pipeline.resolve_ridge`). The PCG
iteration count, and so the fit's time, depends on that λ, so a plan that assumes a ridge is off
by the ratio of iteration counts (``ntkscale plan`` on the 120k LOO job assumed 1e-3 × mean diag
and 156 iterations where the fit took 91). :func:`planned_ridge` runs the same step at plan time
on the job's data, without a store: the same sub-block points (same seed and rule), the same
kernel computed in float64 and rounded to the store's dtype (what the workers compute for a
stored sub-block), the same targets, grid and selection rule. About a minute at 8192 points
(one dense ``eigh``).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

__all__ = ["planned_ridge"]


def planned_ridge(cfg: Any, data: Any, arch: Any) -> dict:
    """The relative ridge the job's fit stage will choose, found now from the data.

    Parameters
    ----------
    cfg : ntkscale.job.config.JobConfig
        A job whose ``[solver] ridge`` is a rule (``'gcv'`` or ``'loo'``).
    data : ntkscale.data.Dataset
        The job's data (``load_dataset(cfg.data, seed=cfg.job['seed'])``).
    arch : Layer
        The job's architecture (``ntkscale.job.model.build_arch(cfg.model)``).

    Returns
    -------
    dict
        ``ridge`` (the absolute λ the fit will use), ``ridge_relative`` (λ / mean diagonal of
        the sub-block, the planner's unit),
        ``rule``, ``scores`` (the criterion on the grid), ``subsample`` (points used), ``seconds``.

    Raises
    ------
    ValueError
        When the job's ridge is a number (nothing to select).
    """
    from ..kernels import diag_stats, kernel_tile
    from ..pipeline import encode_targets, resolve_ridge
    from ..solvers.ridge import selection_points

    s = cfg.solver
    if not isinstance(s["ridge"], str):
        raise ValueError(f"the job's ridge is the number {s['ridge']!r}: there is nothing to select")
    t0 = time.perf_counter()
    X = np.asarray(data.X_train, dtype=np.float64)
    n = X.shape[0]
    classes = np.unique(data.y_train) if data.task == "classification" else None
    Y = encode_targets(data.y_train, classes)
    idx = selection_points(n, s["ridge_subsample"] or None, cfg.job["seed"])  # the fit's points
    m = idx.size
    x, kind = X[idx], cfg.kernel["kind"]
    K = kernel_tile(arch, x, None, diag_stats(arch, x, dtype=np.float64), None, (kind,), dtype=np.float64,
                    out_dtype=np.dtype(cfg.kernel["dtype"]))[kind]
    K = np.asarray(K, dtype=np.float64)  # shape: (m, m), the stored entries of the sub-block
    choice = resolve_ridge(K, Y[idx], s["ridge"], relative=s["relative_ridge"], grid=s["ridge_grid"],
                           subsample=m, seed=cfg.job["seed"], select=s["ridge_select"])
    return {"ridge": choice.ridge, "ridge_relative": choice.ridge / float(np.mean(np.diag(K))), "rule": s["ridge"],
            "scores": list(map(float, choice.selection.scores)), "subsample": int(m),
            "seconds": time.perf_counter() - t0}
