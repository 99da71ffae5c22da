"""Figure plumbing shared by the plot modules: no pyplot, no global backend change.

Figures are ``matplotlib.figure.Figure`` objects attached to their own
``FigureCanvasAgg``, so drawing never touches pyplot's state (no figure registry, no
``matplotlib.use``) and works headless and in threads.
"""

from __future__ import annotations

import os
from typing import Any, Optional, Union

import numpy as np

PathLike = Union[str, "os.PathLike[str]"]

INSTALL_HINT = "pip install 'ntkscale[plots]'"


def new_figure(ncols: int = 1, *, width: float = 4.8, height: float = 3.6) -> tuple[Any, list]:
    """A Figure with ``ncols`` axes side by side, on an Agg canvas.

    Returns
    -------
    fig : matplotlib.figure.Figure
    axes : list of matplotlib.axes.Axes, length ncols

    Raises
    ------
    ImportError
        Without matplotlib, with the install command.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:  # optional extra
        raise ImportError(f"ntkscale.plots needs matplotlib: {INSTALL_HINT}") from exc
    fig = Figure(figsize=(width * ncols, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


def finish(fig: Any, path: Optional[PathLike], dpi: int) -> Any:
    """Save ``fig`` to ``path`` (PNG unless the suffix names another format) and return it.

    The file is marked as ntkscale's (PNG text chunk / document creator), and an existing
    file without that mark is never replaced (:func:`ntkscale.storage.ownership.check_target_file`).
    """
    if path is not None:
        from ..storage.ownership import check_target_file, figure_metadata

        check_target_file(path, key="figure path")
        ext = os.path.splitext(os.fspath(path))[1].lower()
        fmt = None if ext else "png"
        fig.savefig(path, dpi=dpi, format=fmt, metadata=figure_metadata(ext or ".png"))
    return fig


def finite_1d(x: Any, name: str) -> np.ndarray:
    """``x`` as a non-empty finite float64 vector, or a ValueError naming ``name``."""
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-d array, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains non-finite values (nan/inf)")
    return a
