"""The forecast figure: risk vs training-set size with the scaling law, the full-n forecast
and, once measured, the full fit's test error."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from ._base import PathLike, finish, new_figure

__all__ = ["plot_forecast"]


def plot_forecast(law: Any, full: Any, *, horizon: float = 10.0, measured: Optional[float] = None,
                  curve: Optional[dict] = None, points: str = "GCV (sub-blocks)",
                  path: Optional[PathLike] = None, dpi: int = 120) -> Any:
    """Test MSE vs p on log-log axes.

    Parameters
    ----------
    law : ScalingLaw
        Its fitted points (± sem) as markers, the law with its band from the smallest p to
        ``horizon × n``, and its value at n (diamond).
    full : FullForecast
        The full-n forecast (star) with its tail band (error bar).
    measured : float, optional
        The full-n fit's measured test MSE (cross).
    points : str
        What the law's points are (legend), e.g. ``"held-out error (sub-blocks)"``.
    curve : dict, optional
        ``{"p": ..., "mean": ..., "sem": ...}``: held-out errors of the learning-curve stage.
    path, dpi
        Save there (see :func:`ntkscale.plots.plot_spectrum`).

    Returns
    -------
    matplotlib.figure.Figure
    """
    fig, (ax,) = new_figure(width=5.6, height=4.0)
    q = np.union1d(np.geomspace(float(np.min(law.p)), horizon * full.n, 60), [full.n])
    mid, lo, hi = law.predict(q)  # (one bootstrap for the curve and the point at n)
    at_n = int(np.searchsorted(q, full.n))
    ax.fill_between(q, lo, hi, color="C0", alpha=0.2, lw=0, label="scaling law, 90 % band")
    ax.plot(q, mid, color="C0", lw=1.5, label=f"c + a p^-γ, γ = {law.exponent[0]:.2f} ± {law.exponent[1]:.2f}")
    ax.errorbar(law.p, law.E, yerr=law.sem, fmt="o", color="C0", ms=4, label=points)
    m_n, lo_n, hi_n = float(mid[at_n]), float(lo[at_n]), float(hi[at_n])
    ax.errorbar([full.n], [m_n], yerr=[[m_n - lo_n], [hi_n - m_n]], fmt="D", ms=6, color="C0",
                label=f"law at n = {full.n}")
    if curve is not None:
        ax.errorbar(curve["p"], curve["mean"], yerr=curve.get("sem"), fmt="s", color="C2", ms=3,
                    label="held-out (curve stage)")
    lo_b, hi_b = full.band
    ax.errorbar([full.n], [full.gcv], yerr=[[full.gcv - lo_b], [hi_b - full.gcv]], fmt="*", ms=11,
                color="C1", label=f"spectral GCV (top-k + tail), n = {full.n}")
    if measured is not None:
        ax.plot([full.n], [measured], "x", color="C3", ms=9, mew=2, label="full-n fit, measured")
    ax.axvline(full.n, color="0.6", lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training-set size p")
    ax.set_ylabel("test MSE (sum over outputs)")
    ax.legend(fontsize=7)
    return finish(fig, path, dpi)
