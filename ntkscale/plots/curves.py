"""Learning curves: measured test error (mean and spread over trials) and the theory, log-log."""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from ..spectral.curves import EmpiricalCurve, LearningCurves
from ..spectral.theory import LearningCurve
from ._base import PathLike, finish, finite_1d, new_figure

__all__ = ["plot_learning_curves"]

_BANDS = ("std", "sem", "quantile", "none")


def _band(exp: EmpiricalCurve, band: str, q: tuple[float, float]) -> Optional[tuple]:
    """(lower, upper) edges, shape (P,) each, or None (no band: one trial, or band='none')."""
    err = np.asarray(exp.errors, dtype=np.float64)
    if band == "none" or err.shape[1] < 2:
        return None
    if band == "quantile":
        lo, hi = np.quantile(err, q, axis=1)
        return lo, hi
    half = err.std(axis=1, ddof=1) if band == "std" else np.asarray(exp.sem, dtype=np.float64)
    return exp.mean - half, exp.mean + half


def _items(curves: Any) -> list:
    one = (LearningCurves, EmpiricalCurve, LearningCurve)
    items = [curves] if isinstance(curves, one) else None
    if isinstance(curves, (list, tuple)):
        items = list(curves)
    if not items or not all(isinstance(c, one) for c in items):
        raise TypeError("curves must be a LearningCurves, EmpiricalCurve or LearningCurve "
                        "(ntkscale.spectral), or a non-empty list of them; got "
                        f"{type(curves).__name__}")
    return items


def plot_learning_curves(curves: Any, path: Optional[PathLike] = None, *, band: str = "std",
                         quantiles: tuple[float, float] = (0.1, 0.9),
                         labels: Optional[Sequence[str]] = None, title: Optional[str] = None,
                         dpi: int = 120) -> Any:
    """Test error vs training-set size p on log-log axes: experiment with a band, and theory.

    Parameters
    ----------
    curves : LearningCurves, EmpiricalCurve, LearningCurve, or a list of them
        :class:`~ntkscale.spectral.LearningCurves` (from ``learning_curves``) draws the
        experiment (mean over trials, markers ``"o"``, band) and its ``theory`` (the
        held-out prediction, solid line); an ``EmpiricalCurve`` only the experiment; a
        ``LearningCurve`` only its ``Eg``. A list overlays several (colors C0, C1, ...).
    path : str or PathLike, optional
        Save the figure there (PNG unless the suffix names another format).
    band : {'std', 'sem', 'quantile', 'none'}
        Spread over trials around the mean: ± one standard deviation (``ddof=1``), ± the
        standard error of the mean, or the ``quantiles`` of the per-trial errors. Needs
        two or more trials. On the log axis a lower edge <= 0 is clipped to the axis.
    quantiles : (float, float)
        Lower and upper quantile for ``band='quantile'``, ``0 <= q0 < q1 <= 1``.
    labels : sequence of str, optional
        One per curve, appended to the legend entries (default: ``λ = ridge`` when more
        than one curve).
    title : str, optional
    dpi : int

    Returns
    -------
    matplotlib.figure.Figure
        One axes; lines labelled ``"experiment[ label]"`` (x = p, y = mean) and
        ``"theory[ label]"`` (x = p, y = theory, non-finite values as nan), x and y log.

    Raises
    ------
    TypeError
        ``curves`` of another type.
    ValueError
        Unknown ``band``, bad ``quantiles``, ``labels`` of the wrong length, non-finite or
        non-positive p.
    ImportError
        Without matplotlib (``pip install 'ntkscale[plots]'``).

    References
    ----------
    Canatar, Bordelon & Pehlevan, Nat. Commun. 12, 2914 (2021), Fig. 2 (experiment vs
    theory learning curves).
    """
    items = _items(curves)
    if band not in _BANDS:
        raise ValueError(f"band must be one of {_BANDS}, got {band!r}")
    q0, q1 = (float(v) for v in quantiles)
    if not 0.0 <= q0 < q1 <= 1.0:
        raise ValueError(f"quantiles must satisfy 0 <= q0 < q1 <= 1, got {quantiles!r}")
    if labels is not None and len(labels) != len(items):
        raise ValueError(f"labels has {len(labels)} entries for {len(items)} curves")
    fig, (ax,) = new_figure(1)
    for i, c in enumerate(items):
        color = f"C{i % 10}"
        if labels is not None:
            lab = labels[i]
        elif len(items) > 1:
            lab = f"λ = {c.lam if isinstance(c, LearningCurve) else c.ridge:.3g}"
        else:
            lab = ""
        suffix = f" {lab}" if lab else ""
        exp = c.experiment if isinstance(c, LearningCurves) else None
        if isinstance(c, EmpiricalCurve):
            exp = c
        if exp is not None:
            p = finite_1d(exp.p, "p")
            if np.any(p <= 0):
                raise ValueError("training-set sizes p must be > 0 on a log axis")
            edges = _band(exp, band, (q0, q1))
            if edges is not None:
                ax.fill_between(p, edges[0], edges[1], color=color, alpha=0.2, lw=0)
            ax.plot(p, exp.mean, "o", color=color, ms=4, label=f"experiment{suffix}")
        if isinstance(c, (LearningCurves, LearningCurve)):
            p = finite_1d(c.p, "p")
            th = np.asarray(c.theory if isinstance(c, LearningCurves) else c.Eg, dtype=np.float64)
            ax.plot(p, np.where(np.isfinite(th), th, np.nan), "-", color=color,
                    label=f"theory{suffix}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training-set size p")
    ax.set_ylabel("test MSE vs noiseless target")
    ax.legend(fontsize="small")
    if title:
        ax.set_title(title)
    return finish(fig, path, dpi)
