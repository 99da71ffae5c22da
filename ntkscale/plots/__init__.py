"""Figures for spectra, learning curves and training dynamics (matplotlib, optional).

Install with ``pip install 'ntkscale[plots]'``. Every function takes the library's result
objects, returns a ``matplotlib.figure.Figure`` on its own Agg canvas (pyplot and the global
backend are never touched) and saves it when ``path=`` is given. Importing this package does
not import matplotlib; calling a function without it raises an ImportError with the
install command.

* :func:`plot_spectrum` -- eigenvalues of K/n vs rank with a power-law fit, cumulative power;
* :func:`plot_learning_curves` -- experiment (mean and band over trials) vs theory;
* :func:`plot_dynamics` -- train/test loss vs time, optionally two predictions overlaid;
* :func:`plot_double_descent` -- from :mod:`.double_descent` (imported lazily);
* :func:`plot_forecast` -- risk forecasts vs p (:mod:`ntkscale.spectral.forecast`; lazily).
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

from .curves import plot_learning_curves
from .dynamics import plot_dynamics
from .spectrum import plot_spectrum

__all__ = ["plot_spectrum", "plot_learning_curves", "plot_dynamics"]

_LAZY = {"plot_double_descent": __name__ + ".double_descent", "plot_forecast": __name__ + ".forecast"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if importlib.util.find_spec(module) is None:  # file absent; errors inside it propagate
        raise AttributeError(f"{name!r} is not available: module {module} is missing from this "
                             "installation")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
