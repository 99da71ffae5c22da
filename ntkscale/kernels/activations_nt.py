"""The rest of neural-tangents' closed-form activations: ``Exp``, ``Gaussian``, ``Rbf``,
``ExpNormalized``, ``Gabor``, ``Monomial``, ``RectifiedMonomial``, ``Polynomial``,
``Hermite`` and ``Sigmoid_like``, with NT 0.6.5's signatures, defaults and kernel values
(``tests/nt_parity/cases_more.py``).

Each class pairs a transform of :mod:`~ntkscale.kernels.elementwise_nt` with its finite
function, like :mod:`~ntkscale.kernels.activations`; none is a job-file activation name.

References
----------
Novak et al. (2020), "Neural Tangents", ICLR (``stax`` elementwise layers).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import elementwise_nt as ew
from .backend import Namespace
from .base import LAYERS, Activation, UnsupportedArchitectureError, _check_float, layer_type

__all__ = ["Exp", "Gaussian", "Rbf", "ExpNormalized", "Gabor", "Monomial", "RectifiedMonomial",
           "Polynomial", "Hermite", "Sigmoid_like"]


def _floats(layer: Any, *names: str) -> None:
    for name in names:
        object.__setattr__(layer, name, _check_float(name, getattr(layer, name),
                                                     layer=type(layer).__name__))


def _degree(layer: Any, top: int = 10**6) -> None:
    d = layer.degree
    if not isinstance(d, (int, np.integer)) or isinstance(d, bool) or not 0 <= d <= top:
        raise UnsupportedArchitectureError(
            f"{type(layer).__name__}: degree must be an int in 0..{top}, got {d!r}")
    object.__setattr__(layer, "degree", int(d))


@layer_type()
@dataclass(frozen=True)
class Exp(Activation):
    """``a * exp(b * x)``; its kernels scale by ``a^2`` (neural-tangents' ``Exp``)."""

    a: float = 1
    b: float = 1

    def __post_init__(self) -> None:
        _floats(self, "a", "b")

    def transform(self, ns: Namespace, q, ntk, v1, v2):
        return ew.exp(ns, q, ntk, v1, v2, self.a, self.b)

    def finite(self, jax, jnp):
        return lambda x: self.a * jnp.exp(self.b * x)


@layer_type()
@dataclass(frozen=True)
class Gaussian(Activation):
    """``a * exp(b * x^2)`` (default ``b = -1``: a bump)."""

    a: float = 1
    b: float = -1

    def __post_init__(self) -> None:
        _floats(self, "a", "b")

    def transform(self, ns: Namespace, q, ntk, v1, v2):
        return ew.gaussian(ns, q, ntk, v1, v2, self.a, self.b)

    def finite(self, jax, jnp):
        return lambda x: self.a * jnp.exp(self.b * x ** 2)


@layer_type()
@dataclass(frozen=True)
class Rbf(Activation):
    """``sqrt(2) sin(sqrt(2 gamma) x + pi/4)``: after a ``Dense`` of inputs with ``|x|^2/d``
    variances, the NNGP is the RBF kernel ``exp(-gamma |x - x'|^2 / d)``."""

    gamma: float = 1.0

    def __post_init__(self) -> None:
        _floats(self, "gamma")

    def transform(self, ns: Namespace, q, ntk, v1, v2):
        return ew.rbf(ns, q, ntk, v1, v2, self.gamma)

    def finite(self, jax, jnp):
        return lambda x: math.sqrt(2) * jnp.sin(math.sqrt(2 * self.gamma) * x + math.pi / 4)


@layer_type()
@dataclass(frozen=True)
class ExpNormalized(Activation):
    """Shankar et al.'s "Gaussian normalized kernel", ``ExpNormalized(gamma=1, shift=-1,
    do_clip=False)``: a kernel only (no finite function, as in neural-tangents)."""

    gamma: float = 1
    shift: float = -1
    do_clip: bool = False

    def __post_init__(self) -> None:
        _floats(self, "gamma", "shift")
        object.__setattr__(self, "do_clip", bool(self.do_clip))

    def transform(self, ns: Namespace, q, ntk, v1, v2):
        return ew.exp_normalized(ns, q, ntk, v1, v2, self.gamma, self.shift, self.do_clip)


@layer_type()
@dataclass(frozen=True)
class Gabor(Activation):
    """``exp(-x^2) * sin(x)``."""

    def transform(self, ns: Namespace, q, ntk, v1, v2):
        return ew.gabor(ns, q, ntk, v1, v2)

    def finite(self, jax, jnp):
        return lambda x: jnp.exp(-x ** 2) * jnp.sin(x)


@layer_type()
@dataclass(frozen=True)
class Monomial(Activation):
    """``x ** degree``, ``degree`` in 0..5 (neural-tangents' range)."""

    degree: int

    def __post_init__(self) -> None:
        _degree(self, 5)

    def transform(self, ns: Namespace, q, ntk, v1, v2):
        return ew.monomial(ns, q, ntk, v1, v2, self.degree)

    def finite(self, jax, jnp):
        return lambda x: x ** self.degree


@layer_type()
@dataclass(frozen=True)
class RectifiedMonomial(Activation):
    """``(x >= 0) * x ** degree``: the arc-cosine kernel of order ``degree`` (1 = ReLU)."""

    degree: int

    def __post_init__(self) -> None:
        _degree(self)

    def transform(self, ns: Namespace, q, ntk, v1, v2):
        return ew.rectified_monomial(ns, q, ntk, v1, v2, self.degree)

    def finite(self, jax, jnp):
        return lambda x: (x >= 0) * x ** self.degree


@layer_type()
@dataclass(frozen=True)
class Polynomial(Activation):
    """``coef[0] + coef[1] x + ... + coef[n] x^n`` (lowest order first, as
    :class:`numpy.polynomial.Polynomial`)."""

    coef: tuple[float, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "coef", tuple(ew._as_float_list(self.coef)))
        if not all(math.isfinite(c) for c in self.coef):
            raise ValueError(f"Polynomial: coef must be finite, got {self.coef!r}")

    def transform(self, ns: Namespace, q, ntk, v1, v2):
        return ew.polynomial(ns, q, ntk, v1, v2, self.coef)

    def finite(self, jax, jnp):
        return lambda x: jnp.polyval(jnp.asarray(self.coef[::-1]), x)

    def spec(self) -> dict:
        return {"layer": "Polynomial", "coef": list(self.coef)}

    @classmethod
    def from_spec(cls, args: dict) -> "Polynomial":
        return cls(tuple(args["coef"]))


@layer_type()
@dataclass(frozen=True)
class Hermite(Activation):
    """The normalized Hermite polynomial ``He_degree(x) / sqrt(degree!)``. Like neural-tangents
    it assumes pre-activations of unit variance (``nngp' = q^degree``) and does not check it."""

    degree: int

    def __post_init__(self) -> None:
        _degree(self)

    def transform(self, ns: Namespace, q, ntk, v1, v2):
        return ew.hermite(ns, q, ntk, v1, v2, self.degree)

    def finite(self, jax, jnp):
        p = np.polynomial.hermite_e.herme2poly([0] * self.degree + [1])[::-1]
        scale = math.sqrt(math.factorial(self.degree))
        return lambda x: jnp.polyval(jnp.asarray(p), x) / scale


def Sigmoid_like() -> Any:
    """``0.5 erf(x / 2.4020563531719796) + 0.5``, neural-tangents' sigmoid stand-in (the
    constant minimizes the squared distance to the logistic sigmoid on [-5, 5]): an ``Erf``
    (read from the registration table: the families do not import each other)."""
    return LAYERS["Erf"](a=0.5, b=1 / 2.4020563531719796, c=0.5)
