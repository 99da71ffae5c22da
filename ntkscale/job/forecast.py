"""The ``forecast`` stage: the full-n test error and the error at more data, before the fit.

Section (defaults shown)::

    [forecast]
    enabled = false               # true: add "forecast" to job.stages (or list it there)
    risk = "heldout"              # the scaling law's points: "heldout" errors of sub-block fits
                                  # (held-out rows of the pool), or "gcv" of sub-blocks
    sizes = []                    # sub-block sizes (default: m/8, m/4, m/2, m with
                                  # m = min(n/2, 8192) for "heldout" (n/4 with mirror twins),
                                  # min(n/2, 4096) for "gcv")
    trials = 3                    # random sub-blocks per size
    n_test = 0                    # held-out rows per trial (0: min(2000, n - largest size m),
                                  # with mirror twins min(2000, (n - m)²/2n))
    horizon = 10.0                # forecast out to horizon × n

Two estimates of the test MSE at the full n, both before any fit:

* the **scaling law** ``c + a p^-γ`` (:func:`ntkscale.spectral.forecast.fit_scaling_law`)
  through the mean held-out error of kernel regressions on random sub-blocks of the Gram (the
  fit's ridge; :func:`ntkscale.spectral.curves.empirical_learning_curve`), evaluated at n and at
  ``horizon × n``. Held-out errors estimate the error on new samples without bias at each size;
  with augmented rows (``[data] flip``) a row and its mirror share a group and are never split
  between training and held-out rows, else the held-out rows would be half-memorized;
* the **GCV / KARE** risk of the completed spectrum (the ``spectrum`` stage's eigenpairs + the
  tail model, :func:`ntkscale.spectral.forecast.full_n_forecast`). GCV is biased low at finite n
  on real data (7-14 % on Fashion-MNIST, benchmarks/RESULTS.md §0000a) and more with mirror
  twins; it is kept next to the law as the spectral estimate (and is the law's points with
  ``risk = "gcv"``).

The ridge is the fit's (``fit.npz``) or, without a fit, the ``[solver]`` rule's. When the
``predict`` stage has run, its measured test MSE is recorded next to the forecast.
Writes the values into the metrics and ``figures/forecast.png``.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping, Optional

import numpy as np

from .._config import ConfigError, check_keys, get
from .context import JobContext
from .registry import Stage, register
from .report import format_number as _f

log = logging.getLogger("ntkscale.job")

__all__ = ["stage_forecast"]

MAX_SUB = {"gcv": 4096,  # dense eigh of a sub-block: ~10 s at 4096 on 2 cores
           "heldout": 8192}  # one Cholesky per trial for all nested sizes: ~3 s at 8192
RISKS = ("heldout", "gcv")


def _parse(t: Mapping[str, Any]) -> dict:
    check_keys(t, ("enabled", "risk", "sizes", "trials", "n_test", "horizon"), "forecast")
    sizes = get(t, "sizes", list, [], path="forecast")
    if any(not isinstance(v, int) or isinstance(v, bool) or v < 8 for v in sizes):
        raise ConfigError("'forecast.sizes' must be a list of integers >= 8 (sub-block sizes)")
    risk = get(t, "risk", str, "heldout", path="forecast")
    if risk not in RISKS:
        raise ConfigError(f"'forecast.risk' = {risk!r}: choose one of {', '.join(map(repr, RISKS))}")
    return {"enabled": get(t, "enabled", bool, False, path="forecast"), "risk": risk,
            "sizes": sorted(set(sizes)), "trials": get(t, "trials", int, 3, path="forecast", min=2),
            "n_test": get(t, "n_test", int, 0, path="forecast", min=0),
            "horizon": get(t, "horizon", float, 10.0, path="forecast", min=1.0)}


def forecast_sizes(c: Mapping[str, Any], n: int, grouped: bool = False) -> list[int]:
    """The scaling law's sub-block sizes below ``n``: ``[forecast] sizes``, or by default
    ``m/8, m/4, m/2, m`` with ``m = min(n // 2, MAX_SUB[risk])`` (at n = 120 000: 1024 … 8192
    for held-out errors, 512 … 4096 for GCV); ``n // 4`` for ``grouped`` rows (mirror twins:
    the held-out rows must come from groups with no trained row, about ``(1 − m/n)² n`` rows).

    Raises
    ------
    ConfigError
        Fewer than 3 sizes below n (the law has 3 parameters), naming the setting.
    """
    m = min(n // (4 if grouped else 2), MAX_SUB[c.get("risk", "heldout")])
    sizes = [v for v in (c["sizes"] or sorted({max(8, m >> k) for k in (3, 2, 1, 0)})) if v < n]
    if len(sizes) < 3:
        raise ConfigError(f"the forecast's scaling law needs 3 sub-block sizes below n = {n}, got {sizes}: "
                          "set [forecast] sizes to 3 or more sizes below n, or switch it off "
                          "([forecast] enabled = false)")
    return sizes


def _check(ctx: JobContext) -> None:
    """Pre-flight: the sub-block sizes for this job's n (before any stage runs)."""
    forecast_sizes(ctx.cfg.sections["forecast"], int(ctx.data.X_train.shape[0]), _groups(ctx) is not None)


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


def _groups(ctx: JobContext) -> Optional[np.ndarray]:
    """The source row of each training row when the data were augmented (a mirror image and
    its original share one), else None (every row its own group)."""
    d = ctx.data
    if (d.info or {}).get("augmentation") and d.train_index.size == d.X_train.shape[0]:
        return d.train_index
    return None


def _points(ctx: JobContext, op: Any, Y: np.ndarray, lam: float, sizes: list, full: Any
            ) -> tuple[list, list, list, dict]:
    """The law's points ``(p, E, sem, extra)``: held-out errors of nested sub-block fits, or GCV
    of sub-blocks plus the full-n GCV."""
    from ..spectral.curves import empirical_learning_curve

    c, n = ctx.cfg.sections["forecast"], op.shape[0]
    if c["risk"] == "gcv":
        pts = [_sub_gcv(op, Y, m, lam, c["trials"], ctx.cfg.job["seed"] + i) for i, m in enumerate(sizes)]
        sem_n = max(0.5 * (full.band[1] - full.band[0]), 1e-3 * full.gcv)
        return (sizes + [n], [v for v, _ in pts] + [full.gcv], [e for _, e in pts] + [sem_n], {})
    groups = _groups(ctx)
    m = max(sizes)  # with twins, ~(n - m)²/n rows have no trained twin: ask for half of them
    nt = c["n_test"] or min(2000, n - m if groups is None else (n - m) ** 2 // (2 * n))
    cur = empirical_learning_curve(op, Y, sizes, ridge=lam, n_trials=c["trials"], n_test=nt,
                                   seed=ctx.cfg.job["seed"], groups=groups)
    extra = {"n_test": nt, "grouped": groups is not None}
    if ctx.data.task == "classification" and cur.misclassified is not None:
        w = cur.misclassified
        extra.update(error_rate=w.mean(1).tolist(), error_rate_sem=(w.std(1, ddof=1) / np.sqrt(w.shape[1])).tolist())
    return sizes, cur.mean.tolist(), cur.sem.tolist(), extra


def _accuracy(p: list, extra: dict, q: list) -> dict:
    """The accuracy forecast: the same law through the held-out error rates (1 − accuracy of
    the argmax rule), at the sizes ``q``. Measured on Fashion-MNIST from a 15k pool: 90.2, 90.8
    and 91.3 % at 30k, 60k and 120k against 89.3, 90.5 and 91.0 % (benchmarks/RESULTS.md)."""
    from ..spectral.forecast import fit_scaling_law

    if "error_rate" not in extra or min(extra["error_rate"]) <= 0:
        return {}  # (no errors at some size: no power law to fit)
    law = fit_scaling_law(p, extra["error_rate"], extra["error_rate_sem"])
    mid, lo, hi = law.predict(q)
    return {"accuracy_forecast": 1 - mid, "accuracy_low": 1 - hi, "accuracy_high": 1 - lo,
            "error_rate_exponent": law.exponent[0]}


def stage_forecast(ctx: JobContext) -> dict:
    """Full-n test-error forecast: a scaling law through sub-block risks, and the spectral GCV."""
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
        return {"skipped": "the forecast needs a ridge > 0 (ridgeless fits: GCV is 0/0, and the "
                           "held-out errors of interpolating sub-block fits follow no c + a p^-γ law)"}
    evals, evecs, trace = s["evals"], s["evecs"], float(s["trace"])
    if evals.size >= n:
        raise ValueError(f"spectrum.npz holds all {n} eigenpairs: the forecast expects a top-k spectrum")
    from ..spectral.quadrature import TailQuadrature

    full = full_n_forecast(evals / n, (evecs.T @ Y) ** 2 / n, trace / n, np.sum(Y * Y, axis=0) / n, n, lam,
                           quadrature=TailQuadrature.from_arrays(s))
    sizes = forecast_sizes(c, n, c["risk"] == "heldout" and _groups(ctx) is not None)
    p, E, sem, extra = _points(ctx, op, Y, lam, sizes, full)
    law = fit_scaling_law(p, E, sem)
    q = [n, 2 * n, int(c["horizon"] * n)]
    mid, lo, hi = law.predict(q)
    gam, gam_se = law.exponent
    pred = ctx.metrics.get("stages", {}).get("predict", {})
    measured = pred.get("test_mse")
    label = "held-out error (sub-blocks)" if c["risk"] == "heldout" else "GCV (sub-blocks)"
    out = {**full.record(), "risk": c["risk"], **extra, "sizes": p, "points": E, "points_sem": sem,
           "law_params": law.params, "exponent": gam, "exponent_se": gam_se, "forecast_p": q,
           "forecast": mid, "forecast_low": lo, "forecast_high": hi,
           "trust": _trust(full.tail_share, c["risk"], extra.get("grouped", False), full.tail_method), **_accuracy(p, extra, q)}
    if measured is not None:
        out["measured_test_mse"] = float(measured)
        out["forecast_over_measured"] = float(mid[0]) / float(measured)
        out["gcv_over_measured"] = full.gcv / float(measured)
    if pred.get("test_accuracy") is not None and "accuracy_forecast" in out:
        out["measured_test_accuracy"] = float(pred["test_accuracy"])
    from .stages import _figure, _plots

    _figure(ctx, "forecast", lambda path: _plots().plot_forecast(
        law, full, horizon=c["horizon"], measured=measured, points=label, path=path))
    return out


def _trust(tail_share: float, risk: str, grouped: bool, method: str = "powerlaw") -> str:
    level = "dominates" if tail_share > 0.5 else "matters" if tail_share > 0.1 else "hardly enters"
    law = ("the law goes through held-out errors of sub-block fits (unbiased at each size"
           + (", mirror twins kept on one side of each split" if grouped else "")
           + "); past the largest sub-block it is an extrapolation, its band from the points' errors"
           if risk == "heldout" else
           "the law goes through sub-block GCVs, which are optimistic at finite n")
    tail = "tail (Lanczos quadrature)" if method == "quadrature" else "modelled tail (power laws)"
    return (f"{law}. The spectral GCV's {tail} carries {tail_share:.0%} of its residual power "
            f"(it {level}); GCV runs low at finite n, more with augmented twins. Both estimate the "
            "error on the training data's own distribution: a shifted test split is not seen")


def _line(v: dict) -> str:
    if "skipped" in v:
        return f"skipped: {v['skipped']}"
    s = (f"at n = {v['forecast_p'][0]}: {_f(v['forecast'][0])} (band {_f(v['forecast_low'][0])}–"
         f"{_f(v['forecast_high'][0])}, law through {v.get('risk', 'gcv')} points), spectral GCV "
         f"{_f(v['gcv'])}; exponent γ = {_f(v['exponent'], '.3f')} ± {_f(v['exponent_se'], '.3f')}; "
         f"at {v['forecast_p'][-1]}: {_f(v['forecast'][-1])}")
    if "accuracy_forecast" in v:
        s += (f"; accuracy at n {v['accuracy_forecast'][0]:.2%} (band {v['accuracy_low'][0]:.2%}–"
              f"{v['accuracy_high'][0]:.2%})" + (f", measured {v['measured_test_accuracy']:.2%}"
                                                 if "measured_test_accuracy" in v else ""))
    if "measured_test_mse" in v:
        s += (f"; measured {_f(v['measured_test_mse'])} (forecast/measured "
              f"{_f(v['forecast_over_measured'], '.3f')}, GCV/measured {_f(v['gcv_over_measured'], '.3f')})")
    return s


register(Stage("forecast", stage_forecast, _line, section="forecast", parse=_parse, store="reads",
               needs=(("spectrum", "spectrum.npz"),), check=_check,
               description="Full-n test-error forecast: a scaling law through held-out errors of sub-block "
                           "fits, and the GCV of the completed spectrum."))
