"""Elementwise activation layers (neural-tangents' ``stax`` activations).

Each class pairs a closed-form transform of :mod:`~ntkscale.kernels.elementwise` (applied to
the pair covariances and to the variances, feature vectors or image covariances alike) with
its finite-width function, and the job-file names (``[model] activation = "..."``) are
registered at the end of the module.

References
----------
Novak et al. (2020), "Neural Tangents", ICLR (``stax`` elementwise layers).
Cho & Saul (2009), "Kernel methods for deep learning" (arc-cosine kernels).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Optional

from . import elementwise as ew
from . import spatial
from .backend import Namespace
from .base import ACTIVATIONS, Layer, UnsupportedArchitectureError, _check_float, activation, layer_type
from .state import KernelState

__all__ = ["ABRelu", "Relu", "LeakyRelu", "Abs", "Identity", "Erf", "Gelu", "Sin", "Cos", "Sign",
           "Elementwise"]


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

    def gaussian(self, g: Any) -> Any:
        """Linear: keeps what it gets."""
        return g


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
