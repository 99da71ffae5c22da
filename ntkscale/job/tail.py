"""The spectrum stage's tail quadrature and the curve stage's checks of it (the theory past
the top k pairs: :mod:`ntkscale.spectral.quadrature`), and the rule for when those stages use
saved pairs at all."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from .context import JobContext

__all__ = ["needs_saved_eigs", "tail_quadrature_stage", "quadrature_checks"]


def needs_saved_eigs(n: int) -> bool:
    """Whether the curve and forecast stages take the spectrum stage's top-k pairs (and tail
    quadrature) instead of a dense eigendecomposition of the n-point Gram."""
    from ..solvers import dense_limit

    return n > min(dense_limit(), 12000)


def tail_quadrature_stage(ctx: JobContext, evecs: np.ndarray, Y: np.ndarray, eta: np.ndarray, v2: np.ndarray,
                     tail_mass: float, lam: float) -> tuple:
    """Lanczos recurrences of the deflated Gram for the theory past the top k (one pass per
    step with C + probes columns), run until the pool theory at p = n/64 … the largest p
    that uses it moves by less than ``tail_tol`` over the last 10 steps; and their report
    entries."""
    from ..spectral.quadrature import tail_quadrature, theory_converged

    sp = ctx.cfg.spectrum
    t0 = time.perf_counter()
    op = ctx.operator(what="tail quadrature", every=5)
    n = op.shape[0]
    # checked up to the largest p that uses it: n for the forecast's GCV, else the curve's sizes
    fc = ctx.cfg.sections.get("forecast", {})
    top = n if fc.get("enabled") else max(ctx.cfg.curve["p"] or [n // 2])
    rule = theory_converged(eta, v2, np.geomspace(n / 64, top, 5), lam, tol=sp["tail_tol"])
    quad = tail_quadrature(op, evecs, Y, steps=sp["tail_steps"], probes=sp["tail_probes"],
                           seed=ctx.cfg.job["seed"], max_steps=sp["tail_max_steps"], converged=rule)
    # Hutchinson's estimate of the tail's eigenvalue mass against its exact value: the probes' noise
    probes = [quad.gauss(j) for j in range(quad.outputs, quad.alpha.shape[1])]
    mass = quad.modes * sum(float(t @ w) for t, w in probes) / max(sum(float(w.sum()) for _, w in probes), 1e-300)
    return quad, {"tail_quadrature": {"steps": quad.steps, "probes": sp["tail_probes"],
                                      "converged": bool(quad.steps < sp["tail_max_steps"] or rule(quad)),
                                      "seconds": time.perf_counter() - t0,
                                      "tail_mass": tail_mass, "tail_mass_probes": mass}}


def quadrature_checks(lc: Any, eigs: Any, Y: np.ndarray, quad: Any, lam: float, noise: float,
                       trace: float) -> dict:
    """How much the curve's theory moves with half the Lanczos steps, and its probe noise
    (leave-one-probe-out jackknife standard error), relative, per p."""
    from ..spectral import heldout_error, theory_learning_curve

    def theory(q: Any) -> np.ndarray:
        return heldout_error(theory_learning_curve(eigs, Y, lc.p, lam, noise, trace=trace, tail="quadrature",
                                                   quadrature=q), lc.experiment.pool_size, lam)

    half = theory(quad.truncated(quad.steps // 2))
    jk = np.array([theory(q) for q in quad.leave_one_probe_out()])
    se = np.sqrt((len(jk) - 1) / len(jk) * np.sum((jk - jk.mean(axis=0)) ** 2, axis=0)) if len(jk) > 1 \
        else np.full(lc.p.size, np.nan)
    return {"quadrature_half_steps_change": float(np.max(np.abs(half / lc.theory - 1))),
            "theory_probe_se": se / lc.theory}
