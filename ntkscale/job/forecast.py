"""The ``forecast`` stage: the full-n test error and the error at more data, from the spectrum.

Section (defaults shown)::

    [forecast]
    enabled = false               # true: add "forecast" to job.stages (or list it there)
    sizes = []                    # sub-block sizes for the scaling law (default: m/8, m/4, m/2,
                                  # m with m = min(n/2, 4096))
    trials = 3                    # random sub-blocks per size
    horizon = 10.0                # forecast out to horizon × n

Needs the ``spectrum`` stage's eigenpairs (``spectrum.npz``): the full-n forecast is the GCV /
KARE risk of the completed spectrum (:func:`ntkscale.spectral.forecast.full_n_forecast`), before
any fit. The ridge is the fit's (``fit.npz``) or, without a fit, the ``[solver]`` rule's. The
scaling law goes through the GCV of random sub-blocks and the full-n point. When the
``predict`` stage has run, its measured test MSE is recorded next to the forecast.
Writes ``forecast.json``'s content into the metrics and ``figures/forecast.png``.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

import numpy as np

from .._config import ConfigError, check_keys, get
from .context import JobContext
from .registry import Stage, register
from .report import format_number as _f

log = logging.getLogger("ntkscale.job")

__all__ = ["stage_forecast"]

MAX_SUB = 4096  # dense eigh of a sub-block: ~10 s at 4096 on 2 cores


def _parse(t: Mapping[str, Any]) -> dict:
    check_keys(t, ("enabled", "sizes", "trials", "horizon"), "forecast")
    sizes = get(t, "sizes", list, [], path="forecast")
    if any(not isinstance(v, int) or isinstance(v, bool) or v < 8 for v in sizes):
        raise ConfigError("'forecast.sizes' must be a list of integers >= 8 (sub-block sizes)")
    return {"enabled": get(t, "enabled", bool, False, path="forecast"), "sizes": sorted(set(sizes)),
            "trials": get(t, "trials", int, 3, path="forecast", min=2),
            "horizon": get(t, "horizon", float, 10.0, path="forecast", min=1.0)}


def forecast_sizes(c: Mapping[str, Any], n: int) -> list[int]:
    """The scaling law's sub-block sizes below ``n``: ``[forecast] sizes``, or by default
    ``m/8, m/4, m/2, m`` with ``m = min(n // 2, MAX_SUB)`` (at n = 120 000: 512 … 4096).

    Raises
    ------
    ConfigError
        Fewer than 3 sizes below n (the law has 3 parameters), naming the setting.
    """
    m = min(n // 2, MAX_SUB)
    sizes = [v for v in (c["sizes"] or sorted({max(8, m >> k) for k in (3, 2, 1, 0)})) if v < n]
    if len(sizes) < 3:
        raise ConfigError(f"the forecast's scaling law needs 3 sub-block sizes below n = {n}, got {sizes}: "
                          "set [forecast] sizes to 3 or more sizes below n, or switch it off "
                          "([forecast] enabled = false)")
    return sizes


def _check(ctx: JobContext) -> None:
    """Pre-flight: the sub-block sizes for this job's n (before any stage runs)."""
    forecast_sizes(ctx.cfg.sections["forecast"], int(ctx.data.X_train.shape[0]))


def _ridge(ctx: JobContext, op: Any, Y: np.ndarray) -> float:
    from .stages import _absolute_ridge, _build_id, _load_fit

    try:
        return float(_load_fit(ctx, _build_id(ctx))["ridge"])
    except FileNotFoundError:
        return _absolute_ridge(ctx, op, Y)[0]


def _sub_gcv(op: Any, Y: np.ndarray, m: int, lam: float, trials: int, seed: int) -> tuple[float, float]:
    """Mean and SEM of the exact GCV of ``trials`` random m-row sub-blocks."""
    from ..spectral.forecast import spectrum_gcv
    from ..spectral.subsets import gather

    n = op.shape[0]
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(trials):
        idx = np.sort(rng.choice(n, m, replace=False))
        K = op.take(idx, idx) if hasattr(op, "take") else gather(op, idx, idx)
        s, V = np.linalg.eigh(0.5 * (K + K.T))
        vals.append(spectrum_gcv(np.clip(s[::-1], 0, None) / m, ((V.T @ Y[idx]) ** 2)[::-1] / m, lam, m))
    return float(np.mean(vals)), float(np.std(vals, ddof=1) / np.sqrt(trials))


def stage_forecast(ctx: JobContext) -> dict:
    """Full-n GCV forecast from the spectrum stage, scaling law through sub-block GCVs."""
    from ..spectral.forecast import fit_scaling_law, full_n_forecast

    c = ctx.cfg.sections["forecast"]
    op = ctx.operator()
    n = op.shape[0]
    try:
        s = np.load(ctx.path("spectrum.npz"))
    except FileNotFoundError:
        raise FileNotFoundError("the forecast needs the 'spectrum' stage's eigenpairs; run 'spectrum' "
                                "first") from None
    Y, _ = ctx.targets()
    lam = _ridge(ctx, op, Y)
    if not lam > 0:
        return {"skipped": "the GCV forecast needs a ridge > 0 (ridgeless fits: GCV is 0/0)"}
    evals, evecs, trace = s["evals"], s["evecs"], float(s["trace"])
    if evals.size >= n:
        raise ValueError(f"spectrum.npz holds all {n} eigenpairs: the forecast expects a top-k spectrum")
    full = full_n_forecast(evals / n, (evecs.T @ Y) ** 2 / n, trace / n, np.sum(Y * Y, axis=0) / n, n, lam)
    sizes = forecast_sizes(c, n)
    pts = [_sub_gcv(op, Y, m, lam, c["trials"], ctx.cfg.job["seed"] + i) for i, m in enumerate(sizes)]
    p = sizes + [n]
    E = [v for v, _ in pts] + [full.gcv]
    sem = [e for _, e in pts] + [max(0.5 * (full.band[1] - full.band[0]), 1e-3 * full.gcv)]
    law = fit_scaling_law(p, E, sem)
    q = [n, 2 * n, int(c["horizon"] * n)]
    mid, lo, hi = law.predict(q)
    gam, gam_se = law.exponent
    measured = ctx.metrics.get("stages", {}).get("predict", {}).get("test_mse")
    out = {**full.record(), "sizes": p, "gcv_points": E, "gcv_sem": sem, "law_params": law.params,
           "exponent": gam, "exponent_se": gam_se, "forecast_p": q, "forecast": mid,
           "forecast_low": lo, "forecast_high": hi, "trust": _trust(full.tail_share)}
    if measured is not None:
        out["measured_test_mse"] = float(measured)
        out["forecast_over_measured"] = full.gcv / float(measured)
    from .stages import _figure, _plots

    _figure(ctx, "forecast", lambda path: _plots().plot_forecast(
        law, full, horizon=c["horizon"], measured=measured, path=path))
    return out


def _trust(tail_share: float) -> str:
    level = "dominates" if tail_share > 0.5 else "matters" if tail_share > 0.1 else "hardly enters"
    return (f"the modelled tail carries {tail_share:.0%} of the forecast's residual power: it {level}; "
            "GCV estimates the risk on the training data's own distribution (a shifted test split, "
            "or augmented copies such as mirror images, make it optimistic)")


def _line(v: dict) -> str:
    if "skipped" in v:
        return f"skipped: {v['skipped']}"
    s = (f"full-n GCV forecast {_f(v['gcv'])} (band {_f(v['gcv_band'][0])}–{_f(v['gcv_band'][1])}); "
         f"exponent γ = {_f(v['exponent'], '.3f')} ± {_f(v['exponent_se'], '.3f')}; "
         f"at {v['forecast_p'][-1]}: {_f(v['forecast'][-1])}")
    if "measured_test_mse" in v:
        s += f"; measured {_f(v['measured_test_mse'])} (forecast/measured {_f(v['forecast_over_measured'], '.3f')})"
    return s


register(Stage("forecast", stage_forecast, _line, section="forecast", parse=_parse, store="reads",
               needs=(("spectrum", "spectrum.npz"),), check=_check,
               description="Full-n test-error forecast (GCV of the completed spectrum) and a scaling law."))
