"""Double descent: median test error with a quartile band, the theory, and the threshold."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from ..spectral.double_descent import DoubleDescent
from ._base import PathLike, finish, new_figure

__all__ = ["plot_double_descent"]

_XLABEL = {"samplewise": "training-set size p", "ridgewise": "ridge λ",
           "modelwise": "number of random features N"}
_VLINE = {"samplewise": "interpolation threshold (theory peak)",
          "ridgewise": "optimal ridge (theory)", "modelwise": "interpolation threshold N = n"}


def _positive(x: np.ndarray) -> np.ndarray:
    """nan where a value cannot sit on a log axis (<= 0 or not finite)."""
    x = np.asarray(x, dtype=np.float64)
    return np.where(np.isfinite(x) & (x > 0), x, np.nan)


def plot_double_descent(result: DoubleDescent, path: Optional[PathLike] = None, *,
                        show_mean: bool = True, title: Optional[str] = None,
                        dpi: int = 120) -> Any:
    """Experiment and theory of a double-descent curve on log-log axes.

    Parameters
    ----------
    result : DoubleDescent
        From :func:`ntkscale.spectral.double_descent.double_descent` (any kind).
    path : str or PathLike, optional
        Save the figure there (PNG unless the suffix names another format).
    show_mean : bool
        Also mark the mean over trials (it diverges at the peak; the median does not).
    title : str, optional
    dpi : int

    Returns
    -------
    matplotlib.figure.Figure
        One axes, x and y log, lines labelled ``"experiment (median)"`` (x = grid, with a
        25-75 % band), ``"experiment (mean)"`` (if ``show_mean``), ``"theory"`` (x =
        ``grid_fine``; poles as nan), ``"kernel limit"`` (model-wise, horizontal) and the
        vertical line at ``result.threshold`` (labelled by kind; absent if nan). Grid
        points that cannot sit on a log axis (ridge 0) are left out.

    Raises
    ------
    TypeError
        ``result`` is not a DoubleDescent.
    ImportError
        Without matplotlib (``pip install 'ntkscale[plots]'``).

    References
    ----------
    Belkin, Hsu, Ma & Mandal, PNAS 116 (2019), Fig. 1 (double descent);
    Nakkiran et al., "Deep double descent", ICLR 2020.
    """
    if not isinstance(result, DoubleDescent):
        raise TypeError("result must be a DoubleDescent (ntkscale.spectral.double_descent), got "
                        f"{type(result).__name__}")
    fig, (ax,) = new_figure(1)
    x = _positive(result.grid)
    ok = np.isfinite(x)
    ax.fill_between(x[ok], _positive(result.lower)[ok], _positive(result.upper)[ok], color="C0",
                    alpha=0.2, lw=0, label="experiment 25-75 %")
    ax.plot(x[ok], _positive(result.median)[ok], "o-", color="C0", ms=4, lw=1,
            label="experiment (median)")
    if show_mean:
        ax.plot(x[ok], _positive(result.mean)[ok], "x", color="C0", ms=5,
                label="experiment (mean)")
    xf = _positive(result.grid_fine)
    okf = np.isfinite(xf)
    ax.plot(xf[okf], _positive(result.theory_fine)[okf], "-", color="C1", lw=1.5, label="theory")
    if result.kernel_limit is not None and np.isfinite(result.kernel_limit):
        ax.axhline(result.kernel_limit, color="C2", ls="--", lw=1, label="kernel limit")
    if np.isfinite(result.threshold) and result.threshold > 0:
        ax.axvline(result.threshold, color="0.4", ls=":", lw=1,
                   label=_VLINE.get(result.kind, "threshold"))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(_XLABEL.get(result.kind, "grid"))
    ax.set_ylabel("test MSE vs clean target")
    ax.legend(fontsize="small")
    if title:
        ax.set_title(title)
    return finish(fig, path, dpi)
