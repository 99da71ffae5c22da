"""One list of layers: spec name → class, and job-config name → activation.

Every layer class registers itself with :func:`layer_type` where it is defined; every
activation that a job file may name (``[model] activation = "..."``) registers a
zero-argument factory with :func:`activation`. The spec round trip
(:func:`from_spec`), the job's ``[model]`` schema and its architecture builder, and the
error messages read these two dicts and nothing else, so adding an activation is its
class (kernel transform + finite function + spec) and one registration line.

The tables and the decorators live at the bottom of the stack (:mod:`~ntkscale.kernels.base`)
so that the families register themselves without importing anything above; this module
sits above the families and the combinators and imports them, so its tables are complete
whenever it is imported.
"""

from __future__ import annotations

from typing import Any

from . import layers as _layers  # noqa: F401  (every family registers itself at import)
from .base import ACTIVATIONS, LAYERS, activation, from_spec, layer_type

__all__ = ["LAYERS", "ACTIVATIONS", "layer_type", "activation", "from_spec", "make_activation"]


def make_activation(name: str) -> Any:
    """The activation layer a job file names, e.g. ``make_activation("relu")``."""
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; one of {', '.join(ACTIVATIONS)}") from None
