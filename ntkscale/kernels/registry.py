"""One list of layers: spec name → class, and job-config name → activation.

Every layer class registers itself with :func:`layer_type` where it is defined; every
activation that a job file may name (``[model] activation = "..."``) registers a
zero-argument factory with :func:`activation`. The spec round trip
(:func:`from_spec`), the job's ``[model]`` schema and its architecture builder, and the
error messages read these two dicts and nothing else, so adding an activation is its
class (kernel transform + finite function + spec) and one registration line.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, TypeVar

__all__ = ["LAYERS", "ACTIVATIONS", "layer_type", "activation", "from_spec", "make_activation"]

LAYERS: dict[str, type] = {}
"""Spec name (``spec()["layer"]``) → layer class."""

ACTIVATIONS: dict[str, Callable[[], Any]] = {}
"""Job-config activation name → factory of the layer (``"relu"`` → ``Relu``)."""

T = TypeVar("T", bound=type)


def layer_type(name: Optional[str] = None) -> Callable[[T], T]:
    """Class decorator: register a layer class under its spec name (default: class name)."""

    def register(cls: T) -> T:
        key = name or cls.__name__
        if key in LAYERS and LAYERS[key] is not cls:
            raise ValueError(f"layer spec name {key!r} is registered twice "
                             f"({LAYERS[key].__qualname__} and {cls.__qualname__})")
        LAYERS[key] = cls
        cls.spec_name = key
        return cls

    return register


def activation(name: str, factory: Callable[[], Any]) -> None:
    """Register ``factory`` (no arguments → a layer) as job-config activation ``name``."""
    if name in ACTIVATIONS and ACTIVATIONS[name] is not factory:
        raise ValueError(f"activation name {name!r} is registered twice")
    ACTIVATIONS[name] = factory


def from_spec(spec: dict) -> Any:
    """Rebuild a layer (or architecture) from its ``spec()`` dict."""
    from .layers import UnsupportedArchitectureError

    kind = spec.get("layer") if isinstance(spec, dict) else None
    cls = LAYERS.get(kind)
    if cls is None:
        raise UnsupportedArchitectureError(
            f"unknown layer in spec: {spec!r} (known: {', '.join(sorted(LAYERS))})")
    return cls.from_spec({k: v for k, v in spec.items() if k != "layer"})


def make_activation(name: str) -> Any:
    """The activation layer a job file names, e.g. ``make_activation("relu")``."""
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; one of {', '.join(ACTIVATIONS)}") from None
