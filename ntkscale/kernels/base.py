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

import dataclasses
import math
from typing import Any, Callable, ClassVar, Iterator, Optional, TypeVar

from . import spatial, windows
from .backend import Namespace
from .state import KernelState

__all__ = ["Layer", "UnsupportedArchitectureError", "need_images", "States", "LAYERS", "ACTIVATIONS", "layer_type",
           "activation", "from_spec", "leaves", "provide", "check_nt_axes", "check_conv_args", "Activation"]

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
    fn = factory(layer)
    try:
        fn.layer = layer  # serial(...) accepts the (init_fn, apply_fn, kernel_fn) triple back
    except AttributeError:  # pragma: no cover - a factory returning a builtin
        pass
    return fn


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


def need_images(k: KernelState, layer: str, rank: int = 2) -> None:
    """Refuse a windowed layer (``rank``-d window) on feature vectors, and a 1-d window on
    images taller than 1, with an error that says what to pass instead."""
    if k.spatial is None:
        raise UnsupportedArchitectureError(
            f"{layer} needs images or sequences: pass NHWC inputs (n, H, W, C), sequences (n, T, "
            "C), or start the architecture with Unflatten(H, W, C), and put it before "
            "Flatten/GlobalAvgPool")
    if rank == 1 and windows.height(k) != 1:
        raise UnsupportedArchitectureError(
            f"{layer} with a 1-d window acts on sequences (n, T, C) (images of height 1), but the "
            f"inputs are images of height {windows.height(k)}; give a 2-d window (height, width)")


def check_conv_args(layer: Any, dimension_numbers: Any, s: Any) -> str:
    """Validate (in place) a convolution's fields, neural-tangents' signature ``(out_chan,
    filter_shape, strides, padding, W_std, b_std, dimension_numbers, parameterization, s)``
    (``Conv``, ``ConvLocal``, ``ConvTranspose``): ``filter_shape`` of one (sequences) or two
    (images) positive ints, ``strides`` None (ones) or as many, ``padding`` a name or a
    ``Padding`` member; ``dimension_numbers`` channels last and ``s`` ``(1, 1)`` only.
    Returns the name errors use, e.g. ``Conv(8)``.

    Raises
    ------
    ValueError
        A malformed field.
    UnsupportedArchitectureError
        Another ``dimension_numbers`` or ``s`` (with the fix).
    """
    kind = type(layer).__name__
    name = _check_weighted(layer, "out_chan")
    f = windows.shape_arg(layer.filter_shape, "filter_shape", name)
    if dimension_numbers is not None and not windows.channels_last(dimension_numbers, len(f)):
        raise UnsupportedArchitectureError(
            f"{name}: dimension_numbers={dimension_numbers!r} is not supported by ntkscale "
            "(only None = channels last, ('NHWC', 'HWIO', 'NHWC') or in 1-d ('NHC', 'HIO', "
            "'NHC')); transpose your inputs to NHWC (sequences: NTC), e.g. x.transpose(0, 2, "
            "3, 1) for NCHW")
    if tuple(s) != (1, 1):
        raise UnsupportedArchitectureError(
            f"{name}: s={s!r} is not supported by ntkscale for {kind} (only s=(1, 1)); set the "
            "width with out_chan instead (Dense supports s)")
    object.__setattr__(layer, "filter_shape", f)
    object.__setattr__(layer, "strides", (1,) * len(f) if layer.strides is None
                       else windows.shape_arg(layer.strides, "strides", name, len(f)))
    object.__setattr__(layer, "padding", windows.padding_arg(layer.padding, name))
    return name


def check_nt_axes(layer: str, **given: Any) -> None:
    """Accept neural-tangents' layout keywords at their defaults only.

    ``given`` maps a keyword (``batch_axis``, ``channel_axis``, ``batch_axis_out``) to the
    value passed; ntkscale's layouts are NT's defaults (samples first, channels last), so
    any other value raises :class:`UnsupportedArchitectureError` naming the keyword and
    the fix (transpose the inputs). ``channel_axis=-1`` and ``channel_axis=3`` are the
    same axis for NHWC images; only ``-1`` is accepted, as it is for feature rows.
    """
    defaults = {"batch_axis": 0, "channel_axis": -1, "batch_axis_out": 0}
    for name, value in given.items():
        if value != defaults[name] or isinstance(value, bool):
            raise UnsupportedArchitectureError(
                f"{layer}: {name}={value!r} is not supported by ntkscale (only "
                f"{name}={defaults[name]}: samples on axis 0, channels last); transpose your "
                "inputs instead, e.g. x.transpose(0, 2, 3, 1) for NCHW images -> NHWC")


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
        # dataclasses.fields skips InitVar pseudo-fields: neural-tangents' keywords that only
        # take their defaults (do_stabilize, batch_axis, ...) never enter a spec
        fields = [f.name for f in dataclasses.fields(self)] if dataclasses.is_dataclass(self) else []
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

    def __len__(self) -> int:
        """3, like neural-tangents' ``(init_fn, apply_fn, kernel_fn)`` tuple."""
        return 3

    def __getitem__(self, index: Any) -> Any:
        """``layer[2]`` is ``kernel_fn`` (``layer[0]`` init_fn, ``layer[1]`` apply_fn), as in
        neural-tangents, where every layer is that tuple; slices work too."""
        return (self.init_fn, self.apply_fn, self.kernel_fn)[index]


def leaves(layer: Layer) -> list[Layer]:
    """Every leaf layer, inside serial and parallel combinators too."""
    subs = layer.sublayers()
    if subs is not None:
        return [leaf for sub in subs for leaf in leaves(sub)]
    return [layer]


class Activation(Layer):
    """An elementwise activation: applies a pair transform ``transform(ns, q, ntk, v1, v2)``
    (:mod:`~ntkscale.kernels.elementwise`) to the matrix and to the variances. The base of
    every activation family (``activations.py``, ``activations_nt.py``)."""

    def transform(self, ns: Namespace, q: Any, ntk: Any, v1: Any, v2: Any) -> tuple[Any, Any]:
        raise NotImplementedError  # pragma: no cover

    def kernel(self, ns: Namespace, k: KernelState) -> KernelState:
        if k.diag:
            q, ntk = self.transform(ns, k.nngp, k.ntk, *spatial.self_vars(ns, k.nngp, k.spatial))
            return k.replace(nngp=q, ntk=ntk)
        v1, v2 = spatial.pair_vars(ns, k.cov1, k.cov2, k.spatial)
        q, ntk = self.transform(ns, k.nngp, k.ntk, v1, v2)
        cov1 = self.transform(ns, k.cov1, None, *spatial.self_vars(ns, k.cov1, k.spatial))[0]
        cov2 = cov1 if k.cov2 is k.cov1 else \
            self.transform(ns, k.cov2, None, *spatial.self_vars(ns, k.cov2, k.spatial))[0]
        return k.replace(nngp=q, ntk=ntk, cov1=cov1, cov2=cov2)

    def gaussian(self, g: Any) -> bool:
        """A nonlinearity needs Gaussian pre-activations (its closed form assumes them);
        its outputs are not Gaussian."""
        if not g:
            name = getattr(self, "name", None) if isinstance(getattr(self, "name", None), str) \
                else type(self).__name__
            raise UnsupportedArchitectureError(
                f"{name} is applied to non-Gaussian inputs (the network's inputs, an activation's "
                "outputs, or a sum with a branch that carries them): its closed-form kernel assumes "
                "Gaussian pre-activations and would not be the wide network's. Put a Dense or Conv "
                "layer before it (neural-tangents refuses this too)")
        return False
