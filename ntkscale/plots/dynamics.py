"""Training dynamics: train/test loss vs time (log t), optionally two predictions overlaid."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from ..spectral.dynamics import Predictions
from ._base import PathLike, finish, new_figure

__all__ = ["plot_dynamics"]


def _losses(pred: Any, y_test: Any, name: str) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """[(kind, t, loss)] for kind 'train' and (with y_test) 'test'; t shape (T,)."""
    if not isinstance(pred, Predictions):
        raise TypeError(f"{name} must be a Predictions (ntkscale.spectral.gradient_flow / "
                        f"gradient_descent), got {type(pred).__name__}")
    t = np.asarray(pred.t, dtype=np.float64).reshape(-1)
    train = np.asarray(pred.train_loss, dtype=np.float64).reshape(-1)
    if t.shape != train.shape or np.any(np.isnan(t)) or np.any(t < 0):
        raise ValueError(f"{name}: t must be >= 0 with one train loss per time, got t {t.shape}, "
                         f"train_loss {train.shape}")
    out = [("train", t, train)]
    if y_test is not None:
        if pred.test is None:
            raise ValueError(f"{name} has no test outputs for y_test (pass k_test_train when "
                             "computing it)")
        f = np.asarray(pred.test, dtype=np.float64).reshape(t.size, -1)  # shape: (T, m·C)
        yt = np.asarray(y_test, dtype=np.float64).reshape(-1)
        if f.shape[1] != yt.size:
            raise ValueError(f"y_test has {yt.size} values but {name}.test has {f.shape[1]} per "
                             "time (m test points x C outputs)")
        out.append(("test", t, 0.5 * np.mean((f - yt[None]) ** 2, axis=1)))  # as mse_loss
    return out


def plot_dynamics(predictions: Predictions, path: Optional[PathLike] = None,
                  theory: Optional[Predictions] = None, *, y_test: Any = None,
                  labels: tuple[str, str] = ("", "theory"), logy: bool = True,
                  title: Optional[str] = None, dpi: int = 120) -> Any:
    """Train (and test) loss ``½·mean((f − y)²)`` vs time ``t`` on a log time axis.

    Parameters
    ----------
    predictions : Predictions
        From :func:`~ntkscale.spectral.gradient_flow` / ``gradient_descent`` (or a finite
        network's outputs in the same container): ``t`` (T,), ``train_loss`` (T,), ``test``
        (T, m[, C]).
    path : str or PathLike, optional
        Save the figure there (PNG unless the suffix names another format).
    theory : Predictions, optional
        A second set overlaid with dashed lines in the same colors (e.g. the infinite-width
        prediction next to a finite network); its times may differ.
    y_test : array_like, shape (m,) or (m, C), optional
        Test targets; with them the test loss is drawn (same convention as the train loss).
    labels : (str, str)
        Names of ``predictions`` and ``theory`` in the legend: ``"train loss (name)"``;
        an empty name gives ``"train loss"``.
    logy : bool
        Log loss axis (default) or linear.
    title : str, optional
    dpi : int

    Returns
    -------
    matplotlib.figure.Figure
        One axes, x log. Lines ``"train loss[ (name)]"`` and ``"test loss[ (name)]"`` hold
        the points with ``0 < t < inf`` (``t = 0`` cannot sit on a log axis); a time
        ``t = inf`` (the converged solution) is a dotted horizontal line labelled
        ``"... (t = ∞)"`` (one legend entry ``"t = ∞"`` for all; a zero loss is left out
        with ``logy``).

    Raises
    ------
    TypeError
        Inputs that are not Predictions.
    ValueError
        No time ``0 < t < inf``; ``y_test`` without test outputs or of the wrong size.
    ImportError
        Without matplotlib (``pip install 'ntkscale[plots]'``).

    References
    ----------
    Lee et al., "Wide neural networks of any depth evolve as linear models under gradient
    descent", NeurIPS 2019, Fig. 1 (train/test loss of finite networks vs the NTK theory).
    """
    sets = [(predictions, labels[0], "-", "predictions")]
    if theory is not None:
        sets.append((theory, labels[1], "--", "theory"))
    curves = [(lab, style, _losses(pred, y_test, name)) for pred, lab, style, name in sets]
    from matplotlib.lines import Line2D  # after new_figure: matplotlib is there

    fig, (ax,) = new_figure(1)
    handles = []
    for lab, style, losses in curves:
        for j, (kind, t, loss) in enumerate(losses):
            name = f"{kind} loss" + (f" ({lab})" if lab else "")
            ok = (t > 0) & np.isfinite(t)
            if not np.any(ok):
                raise ValueError(f"{name}: no time 0 < t < inf to put on a log axis")
            handles += ax.plot(t[ok], loss[ok], style, color=f"C{j}", label=name)
            for value in loss[np.isposinf(t) & ((loss > 0) | (not logy))]:
                ax.axhline(value, color=f"C{j}", ls=":", lw=1, label=f"{name} (t = ∞)")
    if len(ax.get_lines()) > len(handles):  # one legend entry for all t = ∞ lines
        handles.append(Line2D([], [], color="gray", ls=":", lw=1, label="t = ∞"))
    ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel("t = steps × learning rate")
    ax.set_ylabel("loss ½·mean((f − y)²)")
    ax.legend(handles=handles, fontsize="small")
    if title:
        ax.set_title(title)
    return finish(fig, path, dpi)
