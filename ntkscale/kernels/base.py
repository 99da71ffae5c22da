"""The bottom of the layer stack: the ``Layer`` base class, the registration tables, and the
hooks through which the entry points serve ``kernel_fn``/``init_fn``/``apply_fn``.

Every layer family (``dense.py``, ``activations.py``, ``conv.py``, ``tile_kernel.py``; later
sequences and attention) and ``combinators.py`` imports this module and the array helpers
below it, never each other and never anything above. A family registers its classes here
with :func:`layer_type` (spec name -> class, for the spec round trip) and its job-file
activations with :func:`activation`, so the name lists (``registry.py``) read these tables
and nothing low has to import a family back (neural-tangents' ``_src/stax/requirements.py``
plays this part there).

A layer's neural-tangents triple needs code from the top of the stack (the tiled kernel
entry points in ``api.py``, the finite networks in ``network.py``). Those modules hand their
factories down at import with :func:`provide`; ``Layer.kernel_fn`` and friends call them.
Importing any part of ``ntkscale.kernels`` imports the package, which imports both.
"""

from __future__ import annotations

import math
from typing import Any, Callable, ClassVar, Iterator, Optional, TypeVar

from .backend import Namespace

__all__ = ["Layer", "UnsupportedArchitectureError", "States", "LAYERS", "ACTIVATIONS", "layer_type",
           "activation", "from_spec", "leaves", "provide"]

States = Any  # a KernelState, or a list of them between FanOut and FanInSum


class UnsupportedArchitectureError(ValueError):
    """The architecture has no closed-form infinite-width kernel (or is malformed)."""


# ----------------------------------------------------------------------------
# Registration tables (read by registry.py, the spec round trip and the job schema)
# ----------------------------------------------------------------------------
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
    kind = spec.get("layer") if isinstance(spec, dict) else None
    cls = LAYERS.get(kind)
    if cls is None:
        raise UnsupportedArchitectureError(
            f"unknown layer in spec: {spec!r} (known: {', '.join(sorted(LAYERS))})")
    return cls.from_spec({k: v for k, v in spec.items() if k != "layer"})


# ----------------------------------------------------------------------------
# Entry points handed down by the modules above (api.py, network.py)
# ----------------------------------------------------------------------------
_FACTORIES: dict[str, Callable[[Any], Callable[..., Any]]] = {}


def provide(name: str, factory: Callable[[Any], Callable[..., Any]]) -> None:
    """Register ``factory(layer) -> function`` as the source of ``Layer.<name>``.

    Called once at import by the module that owns the machinery: ``api.py`` for
    ``"kernel_fn"``, ``network.py`` for ``"init_fn"`` and ``"apply_fn"``.
    """
    if name not in ("kernel_fn", "init_fn", "apply_fn"):
        raise ValueError(f"unknown layer entry point {name!r}")
    _FACTORIES[name] = factory


def _entry(name: str, layer: Any) -> Callable[..., Any]:
    try:
        factory = _FACTORIES[name]
    except KeyError:  # pragma: no cover - the package imports api and network
        raise RuntimeError(f"Layer.{name} is served by ntkscale.kernels (api/network), which is "
                           "not imported yet; import ntkscale.kernels first") from None
    return factory(layer)


# ----------------------------------------------------------------------------
# Field checks shared by the families
# ----------------------------------------------------------------------------
def _check_float(name: str, value: Any, *, positive: bool = False, nonneg: bool = False,
                 layer: str = "") -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{layer}: {name} must be a real number, got {value!r}") from None
    if not math.isfinite(v):
        raise ValueError(f"{layer}: {name} must be finite, got {value!r}")
    if positive and v <= 0:
        raise ValueError(f"{layer}: {name} must be > 0, got {value!r}")
    if nonneg and v < 0:
        raise ValueError(f"{layer}: {name} must be >= 0, got {value!r}")
    return v


def _check_weighted(layer: Any, size: str) -> str:
    """Validate (in place) a weighted layer's ``size`` field (a positive int), ``W_std``,
    ``b_std`` and ``parameterization``; returns the name errors use, e.g. ``Dense(512)``."""
    n = getattr(layer, size)
    name = f"{type(layer).__name__}({n})"
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"{name}: {size} must be a positive int, got {n!r}")
    object.__setattr__(layer, "W_std", _check_float("W_std", layer.W_std, nonneg=True, layer=name))
    if layer.b_std is not None:
        object.__setattr__(layer, "b_std", _check_float("b_std", layer.b_std, nonneg=True, layer=name))
    p = str(layer.parameterization).lower()
    if p not in ("ntk", "standard"):
        raise ValueError(f"{name}: parameterization must be 'ntk' or 'standard', got "
                         f"{layer.parameterization!r}")
    object.__setattr__(layer, "parameterization", p)
    return name


# ----------------------------------------------------------------------------
# The base class
# ----------------------------------------------------------------------------
class Layer:
    """Base class: a kernel rule, a JSON spec, and a finite network."""

    #: What the layer needs of positional inputs (images, sequences): None (any input),
    #: ``"diag"`` (positions; same-position covariances suffice) or ``"full"`` (all
    #: position pairs, e.g. attention). :func:`~ntkscale.kernels.conv.spatial_mode` reads it.
    positions: ClassVar[Optional[str]] = None

    # -- kernel rule -------------------------------------------------------
    def kernel(self, ns: Namespace, k: States) -> States:  # pragma: no cover - abstract
        raise NotImplementedError

    def check_kernel(self) -> None:
        """Raise :class:`UnsupportedArchitectureError` if no closed form exists."""

    def gaussian(self, g: Any) -> Any:
        """Whether the outputs are Gaussian in the wide limit, given whether the inputs are
        (``g``: a bool, or a list of them between ``FanOut`` and ``FanInSum``).

        The default is a linear layer's (pooling, ``Flatten``, ``Identity``): it keeps what
        it gets. ``Dense``/``Conv`` return True; a nonlinearity raises
        :class:`UnsupportedArchitectureError` on non-Gaussian inputs and returns False
        (:func:`~ntkscale.kernels.combinators.check_gaussian`).
        """
        return g

    # -- description -------------------------------------------------------
    spec_name = "Layer"  # set by layer_type

    def spec(self) -> dict:
        """The layer as a JSON-able dict: ``{"layer": spec_name, **fields}``."""
        fields = getattr(self, "__dataclass_fields__", {})
        return {"layer": self.spec_name, **{k: getattr(self, k) for k in fields}}

    @classmethod
    def from_spec(cls, args: dict) -> "Layer":
        """Inverse of :meth:`spec` (``args`` without the ``"layer"`` key)."""
        return cls(**args)

    # -- finite network ------------------------------------------------------
    def finite(self, jax: Any, jnp: Any) -> Callable[[Any], Any]:
        """The finite-width function ``x -> phi(x)`` of a parameter-free layer (JAX)."""
        raise TypeError(f"no finite network for {type(self).__name__}")

    def out_shape(self, shape: tuple) -> tuple:
        """Shape of the finite network's output for inputs of ``shape`` (default: same)."""
        return shape

    # -- structure -------------------------------------------------------------
    def flat(self) -> list["Layer"]:
        """The layer as a flat chain (``serial`` flattens nested serials)."""
        return [self]

    def sublayers(self) -> Optional[tuple["Layer", ...]]:
        """The layers a combinator holds (``serial``, ``parallel``); None for a leaf layer."""
        return None

    # -- neural-tangents style triple ---------------------------------------
    @property
    def kernel_fn(self) -> Callable[..., Any]:
        """``kernel_fn(x1, x2=None, get=None)``: :func:`ntkscale.kernels.make_kernel_fn`."""
        return _entry("kernel_fn", self)

    @property
    def init_fn(self) -> Callable[..., Any]:
        """``init_fn(key, input_shape)``: :func:`ntkscale.kernels.network.make_init_fn`."""
        return _entry("init_fn", self)

    @property
    def apply_fn(self) -> Callable[..., Any]:
        """``apply_fn(params, x)``: :func:`ntkscale.kernels.network.make_apply_fn`."""
        return _entry("apply_fn", self)

    def __iter__(self) -> Iterator[Callable[..., Any]]:
        return iter((self.init_fn, self.apply_fn, self.kernel_fn))


def leaves(layer: Layer) -> list[Layer]:
    """Every leaf layer, inside serial and parallel combinators too."""
    subs = layer.sublayers()
    if subs is not None:
        return [leaf for sub in subs for leaf in leaves(sub)]
    return [layer]
