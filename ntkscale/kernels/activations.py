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
from dataclasses import InitVar, dataclass
from typing import Any, Callable, Optional

from . import elementwise as ew
from .backend import Namespace, jax_x64
from .base import ACTIVATIONS, UnsupportedArchitectureError, _check_float, activation, layer_type
from .base import Activation as _Activation

__all__ = ["ABRelu", "Relu", "LeakyRelu", "Abs", "Identity", "Erf", "Gelu", "Sin", "Cos", "Sign",
           "Elementwise"]


@layer_type()
@dataclass(frozen=True)
class ABRelu(_Activation):
    """``a*min(x, 0) + b*max(x, 0)``; ``Relu``, ``LeakyRelu``, ``Abs`` are special cases.

    ``do_stabilize`` (neural-tangents' keyword) is accepted, True or False, and changes
    nothing: NT uses it to rescale covariances before ``arccos`` for float32 stability;
    ntkscale's closed form takes ``arctan2(sqrt(v1 v2 - q^2), q)``, which needs no rescaling
    (the kernels are the same in float64). It never enters the spec.
    """

    a: float
    b: float
    do_stabilize: InitVar[bool] = False

    def __post_init__(self, do_stabilize: bool = False) -> None:
        object.__setattr__(self, "a", _check_float("a", self.a, layer="ABRelu"))
        object.__setattr__(self, "b", _check_float("b", self.b, layer="ABRelu"))

    def transform(self, ns, q, ntk, v1, v2):
        return ew.abrelu(ns, q, ntk, v1, v2, self.a, self.b)

    def finite(self, jax, jnp):
        return lambda x: self.a * jnp.minimum(x, 0) + self.b * jnp.maximum(x, 0)


def Relu(do_stabilize: bool = False) -> ABRelu:
    """ReLU, ``max(x, 0)`` (``do_stabilize``: accepted, no effect; see :class:`ABRelu`)."""
    return ABRelu(0.0, 1.0, do_stabilize)


def LeakyRelu(alpha: float, do_stabilize: bool = False) -> ABRelu:
    """Leaky ReLU, ``alpha*min(x, 0) + max(x, 0)`` (``do_stabilize``: no effect)."""
    return ABRelu(alpha, 1.0, do_stabilize)


def Abs(do_stabilize: bool = False) -> ABRelu:
    """Absolute value (``do_stabilize``: accepted, no effect; see :class:`ABRelu`)."""
    return ABRelu(-1.0, 1.0, do_stabilize)


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
    """A user activation ``Elementwise(fn=None, nngp_fn=None, d_nngp_fn=None)``
    (neural-tangents' signature).

    ``nngp_fn(cov12, var1, var2)`` must return ``E[fn(u) fn(v)]`` and ``d_nngp_fn(cov12,
    var1, var2)`` ``E[fn'(u) fn'(v)]``, for ``(u, v)`` centred Gaussian with those
    (co)variances; both are called on broadcasting arrays. Without ``d_nngp_fn`` it is
    derived as NT does, by JAX autodiff: ``jnp.vectorize(jax.grad(nngp_fn))`` (Price's
    theorem: ``d E[fn(u) fn(v)] / d cov12 = E[fn'(u) fn'(v)]``), evaluated in float64 for
    float64 inputs; that needs ``nngp_fn`` written with ``jax.numpy`` and JAX installed.
    Without ``nngp_fn`` only the finite network exists, and asking for the kernel raises
    :class:`UnsupportedArchitectureError`.

    References
    ----------
    Han et al. (2022), "Fast Neural Kernel Embeddings for General Activations", NeurIPS
    (NT's ``Elementwise``); Price (1958), "A useful theorem for nonlinear devices having
    Gaussian inputs".
    """

    fn: Optional[Callable[[Any], Any]] = None
    nngp_fn: Optional[Callable[..., Any]] = None
    d_nngp_fn: Optional[Callable[..., Any]] = None
    name: str = "Elementwise"

    def __post_init__(self) -> None:
        if self.fn is None and self.nngp_fn is None:
            raise ValueError("Elementwise: no finite (fn) or infinite (nngp_fn) function given; "
                             "the layer would do nothing")

    def check_kernel(self) -> None:
        if self.nngp_fn is None:
            raise UnsupportedArchitectureError(
                f"layer {self.name!r} has no closed-form infinite-width kernel: pass nngp_fn "
                "(and optionally d_nngp_fn) to Elementwise, or use a built-in activation "
                f"(job-file names: {', '.join(ACTIVATIONS)})")
        if self.d_nngp_fn is None:
            try:
                import jax  # noqa: F401
            except ImportError:
                raise UnsupportedArchitectureError(
                    f"layer {self.name!r}: Elementwise without d_nngp_fn derives it by JAX "
                    "autodiff of nngp_fn (as neural-tangents); install jax (pip install "
                    "'ntkscale[jax]') or pass d_nngp_fn") from None

    def _derivative(self) -> Callable[..., Any]:
        if self.d_nngp_fn is not None:
            return self.d_nngp_fn
        import jax
        import jax.numpy as jnp
        return jnp.vectorize(jax.grad(self.nngp_fn))

    def transform(self, ns, q, ntk, v1, v2):
        self.check_kernel()
        auto = self.d_nngp_fn is None
        with jax_x64(getattr(q, "dtype", None) if auto and ns.name == "numpy" else None):
            q_new = self.nngp_fn(q, v1, v2)
            dot = None if ntk is None else self._derivative()(*_float_args(auto, q, v1, v2))
            if ns.name == "numpy":  # a jnp nngp_fn returns JAX arrays: back to NumPy
                q_new = ns.asarray(q_new)
                dot = None if dot is None else ns.asarray(dot)
        return q_new, (None if ntk is None else ntk * dot)

    def finite(self, jax, jnp):
        return self.fn

    def spec(self) -> dict:
        return {"layer": "Elementwise", "name": self.name}

    @classmethod
    def from_spec(cls, args: dict) -> "Elementwise":
        raise UnsupportedArchitectureError(
            f"spec names a user Elementwise layer {args.get('name')!r}, which cannot be rebuilt "
            "from JSON; pass the architecture object instead")


def _float_args(auto: bool, q: Any, v1: Any, v2: Any) -> tuple[Any, Any, Any]:
    """``jax.grad`` needs floating inputs of one shape family: broadcast Python scalars."""
    if not auto:
        return q, v1, v2
    import jax.numpy as jnp
    q, v1, v2 = (jnp.asarray(a) for a in (q, v1, v2))
    return jnp.broadcast_arrays(q, v1, v2)


# job-config names (``[model] activation = "..."``)
for _name, _factory in (("relu", Relu), ("erf", Erf), ("gelu", Gelu), ("abs", Abs),
                        ("leaky_relu", lambda: LeakyRelu(0.1)), ("sin", Sin), ("cos", Cos),
                        ("identity", Identity), ("sign", Sign)):
    activation(_name, _factory)
