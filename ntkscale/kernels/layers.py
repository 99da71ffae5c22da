"""Layers and combinators with neural-tangents' ``stax`` conventions.

Each layer is a small frozen dataclass that knows (i) its infinite-width kernel
rule, (ii) a JSON spec (stored next to every Gram so a store can refuse other
architectures), and (iii) its finite-width JAX network (see ``network.py``).
Like in neural-tangents, every layer unpacks into ``(init_fn, apply_fn,
kernel_fn)``::

    init_fn, apply_fn, kernel_fn = serial(Dense(512), Relu(), Dense(1))

References
----------
Novak et al. (2020), "Neural Tangents: Fast and Easy Infinite Neural Networks
in Python", ICLR (the ``stax`` API and the NTK/standard parameterizations).
Jacot, Gabriel & Hongler (2018), "Neural Tangent Kernel" (Dense NTK rule).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional

from . import elementwise as ew
from . import spatial
from .backend import Namespace
from .registry import ACTIVATIONS, activation, layer_type
from .state import KernelState

__all__ = [
    "Layer", "Dense", "ABRelu", "Relu", "LeakyRelu", "Abs", "Identity", "Erf", "Gelu",
    "Sin", "Cos", "Sign", "Elementwise", "Serial", "Parallel", "FanOut", "FanInSum",
    "serial", "parallel", "UnsupportedArchitectureError",
    "Conv", "AvgPool", "GlobalAvgPool", "Flatten", "Unflatten",
]

States = Any  # a KernelState, or a list of them between FanOut and FanInSum


class UnsupportedArchitectureError(ValueError):
    """The architecture has no closed-form infinite-width kernel (or is malformed)."""


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


class Layer:
    """Base class: a kernel rule, a JSON spec, and a finite network."""

    # -- kernel rule -------------------------------------------------------
    def kernel(self, ns: Namespace, k: States) -> States:  # pragma: no cover - abstract
        raise NotImplementedError

    def check_kernel(self) -> None:
        """Raise :class:`UnsupportedArchitectureError` if no closed form exists."""

    # -- description -------------------------------------------------------
    spec_name = "Layer"  # set by registry.layer_type

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

    def flat(self) -> list["Layer"]:
        """The layer as a flat chain (``serial`` flattens nested serials)."""
        return [self]

    # -- neural-tangents style triple ---------------------------------------
    @property
    def kernel_fn(self) -> Callable[..., Any]:
        from .api import make_kernel_fn

        return make_kernel_fn(self)

    @property
    def init_fn(self) -> Callable[..., Any]:
        from .network import make_init_fn

        return make_init_fn(self)

    @property
    def apply_fn(self) -> Callable[..., Any]:
        from .network import make_apply_fn

        return make_apply_fn(self)

    def __iter__(self) -> Iterator[Callable[..., Any]]:
        return iter((self.init_fn, self.apply_fn, self.kernel_fn))


# ----------------------------------------------------------------------------
# Dense
# ----------------------------------------------------------------------------
@layer_type()
@dataclass(frozen=True)
class Dense(Layer):
    """Fully connected layer, ``Dense(out_dim, W_std, b_std, parameterization, s)``.

    NTK parameterization (default): ``z = W_std/sqrt(n_in) * x W + b_std * b`` with
    ``W, b ~ N(0, 1)``; kernel rule ``nngp <- W_std^2 nngp + b_std^2`` and
    ``ntk <- nngp_new + W_std^2 ntk``. ``out_dim`` does not enter the kernel.

    Standard parameterization: ``W ~ N(0, W_std^2 s0 / n_in)``, ``b ~ N(0, b_std^2)``,
    ``z = x W / sqrt(s0) + b``, output width ``out_dim * s1``; the NTK picks up the
    fan-in: ``ntk <- (n_in/s0) nngp + W_std^2 ntk + [b_std is not None]`` (NT's rule;
    it grows with the width of the previous layer).
    """

    out_dim: int
    W_std: float = 1.0
    b_std: Optional[float] = None
    parameterization: str = "ntk"
    s: tuple[int, int] = (1, 1)

    def __post_init__(self) -> None:
        name = _check_weighted(self, "out_dim")
        s = tuple(int(v) for v in self.s)
        if len(s) != 2 or min(s) < 1:
            raise ValueError(f"{name}: s must be two positive ints, got {self.s!r}")
        object.__setattr__(self, "s", s)

    def affine(self) -> tuple[float, float, float, float]:
        """Coefficients ``(W2, b2, A, B)`` of ``nngp' = W2 nngp + b2`` and
        ``ntk' = A nngp + W2 ntk + B`` (``A`` needs the fan-in in the standard case)."""
        w2 = self.W_std ** 2
        b2 = 0.0 if self.b_std is None else self.b_std ** 2
        return w2, b2, w2, b2

    def kernel(self, ns: Namespace, k: KernelState) -> KernelState:
        w2, b2, _, _ = self.affine()
        nngp = w2 * k.nngp + b2
        if k.ntk is None:
            ntk = None
        elif self.parameterization == "ntk":
            ntk = nngp + w2 * k.ntk
        else:
            ntk = (k.width / self.s[0]) * k.nngp + w2 * k.ntk + (0.0 if self.b_std is None else 1.0)
        cov1 = None if k.cov1 is None else w2 * k.cov1 + b2
        cov2 = None if k.cov2 is None else (cov1 if k.cov2 is k.cov1 else w2 * k.cov2 + b2)
        width = self.out_dim * (self.s[1] if self.parameterization == "standard" else 1)
        return k.replace(nngp=nngp, ntk=ntk, cov1=cov1, cov2=cov2, width=width)

    def spec(self) -> dict:
        return {"layer": "Dense", "out_dim": self.out_dim, "W_std": self.W_std, "b_std": self.b_std,
                "parameterization": self.parameterization, "s": list(self.s)}

    @classmethod
    def from_spec(cls, args: dict) -> "Dense":
        return cls(**{**args, "s": tuple(args.get("s", (1, 1)))})


# ----------------------------------------------------------------------------
# Elementwise activations
# ----------------------------------------------------------------------------
class _Activation(Layer):
    """An activation: applies a pair transform to the matrix and to the variances."""

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


@layer_type()
@dataclass(frozen=True)
class ABRelu(_Activation):
    """``a*min(x, 0) + b*max(x, 0)``; ``Relu``, ``LeakyRelu``, ``Abs`` are special cases."""

    a: float
    b: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "a", _check_float("a", self.a, layer="ABRelu"))
        object.__setattr__(self, "b", _check_float("b", self.b, layer="ABRelu"))

    def transform(self, ns, q, ntk, v1, v2):
        return ew.abrelu(ns, q, ntk, v1, v2, self.a, self.b)

    def finite(self, jax, jnp):
        return lambda x: self.a * jnp.minimum(x, 0) + self.b * jnp.maximum(x, 0)


def Relu() -> ABRelu:
    """ReLU, ``max(x, 0)``."""
    return ABRelu(0.0, 1.0)


def LeakyRelu(alpha: float) -> ABRelu:
    """Leaky ReLU, ``alpha*min(x, 0) + max(x, 0)``."""
    return ABRelu(alpha, 1.0)


def Abs() -> ABRelu:
    """Absolute value."""
    return ABRelu(-1.0, 1.0)


@layer_type()
@dataclass(frozen=True)
class Identity(_Activation):
    """Identity: leaves inputs and kernels unchanged."""

    def transform(self, ns, q, ntk, v1, v2):
        return ew.identity(ns, q, ntk, v1, v2)

    def finite(self, jax, jnp):
        return lambda x: x


@layer_type()
@dataclass(frozen=True)
class Erf(_Activation):
    """``a*erf(b*x) + c``."""

    a: float = 1.0
    b: float = 1.0
    c: float = 0.0

    def __post_init__(self) -> None:
        for name in ("a", "b", "c"):
            object.__setattr__(self, name, _check_float(name, getattr(self, name), layer="Erf"))

    def transform(self, ns, q, ntk, v1, v2):
        return ew.erf(ns, q, ntk, v1, v2, self.a, self.b, self.c)

    def finite(self, jax, jnp):
        return lambda x: self.a * jax.scipy.special.erf(self.b * x) + self.c


@layer_type()
@dataclass(frozen=True)
class Gelu(_Activation):
    """Exact GELU ``x * Phi(x)`` (``approximate=True`` only changes the finite network)."""

    approximate: bool = False

    def transform(self, ns, q, ntk, v1, v2):
        return ew.gelu(ns, q, ntk, v1, v2)

    def finite(self, jax, jnp):
        return lambda x: jax.nn.gelu(x, approximate=bool(self.approximate))

    def spec(self) -> dict:
        return {"layer": "Gelu", "approximate": bool(self.approximate)}


@layer_type()
@dataclass(frozen=True)
class Sin(_Activation):
    """``a*sin(b*x + c)``."""

    a: float = 1.0
    b: float = 1.0
    c: float = 0.0

    def __post_init__(self) -> None:
        for name in ("a", "b", "c"):
            object.__setattr__(self, name, _check_float(name, getattr(self, name), layer="Sin"))

    def transform(self, ns, q, ntk, v1, v2):
        return ew.sin(ns, q, ntk, v1, v2, self.a, self.b, self.c)

    def finite(self, jax, jnp):
        return lambda x: self.a * jnp.sin(self.b * x + self.c)


def Cos(a: float = 1.0, b: float = 1.0, c: float = 0.0) -> Sin:
    """``a*cos(b*x + c)``."""
    return Sin(a, b, c + math.pi / 2)


@layer_type()
@dataclass(frozen=True)
class Sign(_Activation):
    """``sign(x)`` (``sign(0) = 0``), neural-tangents' ``Sign``.

    NNGP: the order-0 arc-cosine kernel, ``1 - 2 theta / pi`` (Cho & Saul 2009). NTK: the
    derivative is 0 almost everywhere, so nothing below the layer trains and the NTK
    entering it is dropped (as neural-tangents; the finite network's Jacobian agrees).
    """

    def transform(self, ns, q, ntk, v1, v2):
        return ew.sign(ns, q, ntk, v1, v2)

    def finite(self, jax, jnp):
        return jnp.sign


@layer_type()
@dataclass(frozen=True)
class Elementwise(_Activation):
    """A user activation ``fn``; its kernel needs ``nngp_fn`` and ``d_nngp_fn``.

    ``nngp_fn(q, v1, v2)`` must return ``E[fn(u) fn(v)]`` and ``d_nngp_fn(q, v1, v2)``
    ``E[fn'(u) fn'(v)]``. Without them only the finite network exists, and asking
    for the kernel raises :class:`UnsupportedArchitectureError`.
    """

    fn: Callable[[Any], Any]
    nngp_fn: Optional[Callable[..., Any]] = None
    d_nngp_fn: Optional[Callable[..., Any]] = None
    name: str = "Elementwise"

    def check_kernel(self) -> None:
        if self.nngp_fn is None or self.d_nngp_fn is None:
            raise UnsupportedArchitectureError(
                f"layer {self.name!r} has no closed-form infinite-width kernel: pass "
                "nngp_fn and d_nngp_fn to Elementwise, or use a built-in activation (job-file "
                f"names: {', '.join(ACTIVATIONS)})")

    def transform(self, ns, q, ntk, v1, v2):
        self.check_kernel()
        q_new = self.nngp_fn(q, v1, v2)
        return q_new, (None if ntk is None else ntk * self.d_nngp_fn(q, v1, v2))

    def finite(self, jax, jnp):
        return self.fn

    def spec(self) -> dict:
        return {"layer": "Elementwise", "name": self.name}

    @classmethod
    def from_spec(cls, args: dict) -> "Elementwise":
        raise UnsupportedArchitectureError(
            f"spec names a user Elementwise layer {args.get('name')!r}, which cannot be rebuilt "
            "from JSON; pass the architecture object instead")


# job-config names (``[model] activation = "..."``)
for _name, _factory in (("relu", Relu), ("erf", Erf), ("gelu", Gelu), ("abs", Abs),
                        ("leaky_relu", lambda: LeakyRelu(0.1)), ("sin", Sin), ("cos", Cos),
                        ("identity", Identity), ("sign", Sign)):
    activation(_name, _factory)



from .combinators import FanInSum, FanOut, Parallel, Serial, parallel, serial  # noqa: E402,F401
from .conv import AvgPool, Conv, Flatten, GlobalAvgPool, Unflatten  # noqa: E402,F401
