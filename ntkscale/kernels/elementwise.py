"""Closed-form NNGP/NTK transforms of elementwise activations.

Each transform maps the pre-activation covariances of a pair of inputs to the
post-activation ones. With ``(u, v) ~ N(0, [[v1, q], [q, v2]])`` and activation
``phi``:

    nngp' = E[phi(u) phi(v)],    ntk' = ntk * E[phi'(u) phi'(v)].

Every function takes ``(ns, q, ntk, v1, v2)`` where ``q``/``ntk`` have the
pair shape (``(n1, n2)`` for a matrix, ``(n,)`` for a diagonal) and ``v1``/``v2``
broadcast against them (``(n1, 1)``/``(1, n2)``, or ``(n,)`` for a diagonal).
``ntk`` may be ``None``. Functions are pure: no in-place updates, so they run
on JAX arrays too.

References
----------
Cho & Saul (2009), "Kernel methods for deep learning" (arc-cosine kernels).
Williams (1997), "Computing with infinite networks" (erf).
Novak et al. (2020), "Neural Tangents", ``stax`` elementwise layers (conventions).
Tsuchida et al. (2021), "Avoiding kernel fixed points", arXiv:2002.08517 (GELU).
"""

from __future__ import annotations

import math
from typing import Any

from .backend import Namespace

Pair = tuple[Any, Any]

_TWO_PI = 2.0 * math.pi


def _safe_sqrt(ns: Namespace, x: Any) -> Any:
    return ns.sqrt(ns.maximum(x, 0.0))


def abrelu(ns: Namespace, q: Any, ntk: Any, v1: Any, v2: Any, a: float, b: float) -> Pair:
    """``phi(x) = a*min(x, 0) + b*max(x, 0)`` (ReLU: a=0, b=1; Abs: a=-1, b=1).

    With ``theta = arccos(q / sqrt(v1 v2))`` (Cho & Saul 2009, eq. 6):
    ``nngp' = (a-b)^2/(2 pi) sqrt(v1 v2 - q^2) + [(a^2+b^2)/2 - (a-b)^2 theta/(2 pi)] q``
    and ``ntk' = ntk * [(a^2+b^2)/2 - (a-b)^2 theta/(2 pi)]``. A zero variance
    (a zero input row) gives ``theta = pi/2`` and finite output.
    """
    root = _safe_sqrt(ns, v1 * v2 - q * q)
    zero = (root == 0) & (q == 0)
    theta = ns.where(zero, math.pi / 2, ns.arctan2(root, q))
    factor = (a - b) ** 2 / _TWO_PI
    dot = (a * a + b * b) / 2 - factor * theta
    q_new = factor * root + dot * q
    return q_new, (None if ntk is None else ntk * dot)


def erf(ns: Namespace, q: Any, ntk: Any, v1: Any, v2: Any, a: float, b: float, c: float) -> Pair:
    """``phi(x) = a*erf(b*x) + c`` (Williams 1997).

    ``nngp' = a^2 (2/pi) arcsin(2 b^2 q / sqrt((1+2b^2 v1)(1+2b^2 v2))) + c^2``,
    ``ntk' = ntk * a^2 b^2 (4/pi) / sqrt((1+2b^2 v1)(1+2b^2 v2) - 4 b^4 q^2)``.
    """
    b2 = b * b
    prod = (1 + 2 * b2 * v1) * (1 + 2 * b2 * v2)
    root = _safe_sqrt(ns, prod - 4 * b2 * b2 * q * q)
    q_new = a * a * (2 / math.pi) * ns.arctan2(2 * b2 * q, root) + c * c
    if ntk is None:
        return q_new, None
    return q_new, ntk * (a * a * b2 * (4 / math.pi) / root)


def gelu(ns: Namespace, q: Any, ntk: Any, v1: Any, v2: Any) -> Pair:
    """``phi(x) = x * Phi(x)`` (exact GELU; Tsuchida et al. 2021, NT's ``Gelu``)."""
    prod = v1 * v2
    prod1 = (1 + v1) * (1 + v2)
    delta2 = prod1 - q * q
    delta = _safe_sqrt(ns, delta2)
    angle = ns.arctan2(q, delta)
    q_new = ((q * q + prod * delta2) / (prod1 * delta) + q * angle) / _TWO_PI + q / 4
    if ntk is None:
        return q_new, None
    first = (1 / delta2 + (1 - prod) / prod1 + 1) * q / delta / _TWO_PI
    dot = first + 0.25 + angle / _TWO_PI
    return q_new, ntk * dot


def sin(ns: Namespace, q: Any, ntk: Any, v1: Any, v2: Any, a: float, b: float, c: float) -> Pair:
    """``phi(x) = a*sin(b*x + c)``.

    ``nngp' = a^2/2 [exp(-b^2 (v1+v2)/2 + b^2 q) - cos(2c) exp(-b^2 (v1+v2)/2 - b^2 q)]``,
    ``ntk' = ntk * a^2 b^2/2 [exp(... + b^2 q) + cos(2c) exp(... - b^2 q)]``.
    """
    b2 = b * b
    half = -0.5 * b2 * (v1 + v2)
    s1 = ns.exp(half + b2 * q)
    s2 = ns.exp(half - b2 * q) * math.cos(2 * c)
    q_new = a * a / 2 * (s1 - s2)
    return q_new, (None if ntk is None else ntk * (a * a * b2 / 2 * (s1 + s2)))


def sign(ns: Namespace, q: Any, ntk: Any, v1: Any, v2: Any) -> Pair:
    """``phi(x) = sign(x)``: the order-0 arc-cosine kernel (Cho & Saul 2009, eq. 6, n = 0).

    ``nngp' = 1 - 2 theta / pi`` with ``theta = arccos(q / sqrt(v1 v2))`` (= ``(2/pi)
    arcsin(rho)``; 1 on the diagonal, 0 where a variance is 0, as ``sign(0) = 0``);
    ``ntk' = 0``: ``sign' = 0`` almost everywhere, so nothing below the layer trains
    (neural-tangents' convention, and the finite network's Jacobian).
    """
    root = _safe_sqrt(ns, v1 * v2 - q * q)
    zero = (root == 0) & (q == 0)
    theta = ns.where(zero, math.pi / 2, ns.arctan2(root, q))
    q_new = 1.0 - theta * (2.0 / math.pi)
    return q_new, (None if ntk is None else ntk * 0.0)


def identity(ns: Namespace, q: Any, ntk: Any, v1: Any, v2: Any) -> Pair:
    """``phi(x) = x``: kernels unchanged."""
    return q, ntk
