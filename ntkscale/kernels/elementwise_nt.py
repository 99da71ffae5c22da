"""Closed-form NNGP/NTK transforms of the rest of neural-tangents' activations: exponentials
(``Exp``, ``Gaussian``, ``Rbf``, ``ExpNormalized``, ``Gabor``) and polynomials (``Monomial``,
``RectifiedMonomial``, ``Polynomial``, ``Hermite``).

Same contract as :mod:`~ntkscale.kernels.elementwise`: ``(ns, q, ntk, v1, v2) -> (nngp',
ntk')`` with ``(u, v) ~ N(0, [[v1, q], [q, v2]])``, ``nngp' = E[phi(u) phi(v)]`` and
``ntk' = ntk * E[phi'(u) phi'(v)] = ntk * d nngp'/dq`` (Price's theorem); ``v1``/``v2``
broadcast against ``q``; pure functions, any array namespace.

References
----------
Novak et al. (2020), "Neural Tangents", ICLR (``stax`` elementwise layers, 0.6.5: the
conventions, e.g. ``Exp(a)`` scales the kernel by ``a^2``).
Cho & Saul (2009), "Kernel methods for deep learning", NeurIPS, eq. 3-6 (arc-cosine kernels
of order n: ``RectifiedMonomial``).
Shankar et al. (2020), "Neural Kernels Without Tangents", ICML, p. 6 (``ExpNormalized``).
O'Donnell (2014), "Analysis of Boolean Functions", ch. 11 (Hermite expansions: ``Polynomial``).
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import numpy as np

from .backend import Namespace

Pair = tuple[Any, Optional[Any]]


def _sqrt(ns: Namespace, x: Any) -> Any:
    return ns.sqrt(ns.maximum(x, 0.0))


def exp(ns: Namespace, q: Any, ntk: Any, v1: Any, v2: Any, a: float, b: float) -> Pair:
    """``phi(x) = a exp(b x)``: ``nngp' = a^2 exp(b^2 ((v1 + v2)/2 + q))``,
    ``ntk' = ntk b^2 nngp'``."""
    q_new = a * a * ns.exp(b * b * ((v1 + v2) / 2 + q))
    return q_new, (None if ntk is None else ntk * (b * b) * q_new)


def gaussian(ns: Namespace, q: Any, ntk: Any, v1: Any, v2: Any, a: float, b: float) -> Pair:
    """``phi(x) = a exp(b x^2)`` (``b < 1/(4 v)`` for a finite kernel):
    ``nngp' = a^2 / det`` with ``det = sqrt((1 - 2b v1)(1 - 2b v2) - 4 b^2 q^2)``,
    ``ntk' = ntk a^2 4 b^2 q / det^3``."""
    det = _sqrt(ns, (1 - 2 * b * v1) * (1 - 2 * b * v2) - 4 * b * b * q * q)
    q_new = a * a / det
    return q_new, (None if ntk is None else ntk * (a * a * 4 * b * b) * q / det ** 3)


def rbf(ns: Namespace, q: Any, ntk: Any, v1: Any, v2: Any, gamma: float) -> Pair:
    """``phi(x) = sqrt(2) sin(sqrt(2 gamma) x + pi/4)``, whose NNGP is the RBF kernel
    ``exp(-gamma (v1 + v2 - 2 q))``; ``ntk' = ntk 2 gamma nngp'``."""
    q_new = ns.exp(gamma * (2 * q - v1 - v2))
    return q_new, (None if ntk is None else ntk * (2 * gamma) * q_new)


def exp_normalized(ns: Namespace, q: Any, ntk: Any, v1: Any, v2: Any, gamma: float,
                   shift: float, do_clip: bool) -> Pair:
    """Shankar et al.'s normalized Gaussian kernel (no finite function):
    ``nngp' = s exp(gamma (q/s + shift))`` with ``s = sqrt(max(v1 v2, 1e-30))``,
    ``ntk' = ntk gamma exp(gamma (q/s + shift))``; ``do_clip`` clips ``q/s`` to [-1, 1]."""
    s = ns.sqrt(ns.maximum(v1 * v2, 1e-30))
    c = q / s
    if do_clip:
        c = ns.clip(c, -1.0, 1.0)
    e = ns.exp(gamma * (c + shift))
    return s * e, (None if ntk is None else ntk * gamma * e)


def gabor(ns: Namespace, q: Any, ntk: Any, v1: Any, v2: Any) -> Pair:
    """``phi(x) = exp(-x^2) sin(x)`` (a Gaussian integral in closed form)."""
    prod, total = v1 * v2, v1 + v2
    diff = 4 * (prod - q * q)
    denom = 2 * total + diff + 1
    left = ns.exp(-(total + diff + 2 * q) / (2 * denom))
    right = ns.exp(2 * q / denom)
    q_new = left * (right - 1) / (2 * _sqrt(ns, denom))
    if ntk is None:
        return q_new, None
    shared = 1 + 2 * total + 4 * (q * q + prod)
    cross = 4 * q * (diff + 3 * total + 2)
    return q_new, ntk * (left * ((shared - cross) + right * (shared + cross)) / denom ** 2.5 / 2)


def _monomial(q: Any, prod: Any, degree: int) -> Any:
    """``E[u^d v^d]`` for ``d = degree`` in 0..5 (Isserlis' theorem); 0 for ``d = -1``."""
    if degree == -1:
        return 0.0 * q
    if degree == 0:
        return 0.0 * q + 1.0
    if degree == 1:
        return q
    if degree == 2:
        return 2 * q ** 2 + prod
    if degree == 3:
        return 6 * q ** 3 + 9 * q * prod
    if degree == 4:
        return 3 * (8 * q ** 4 + 3 * prod * (8 * q ** 2 + prod))
    return 15 * q * (8 * q ** 4 + 5 * prod * (8 * q ** 2 + 3 * prod))


def monomial(ns: Namespace, q: Any, ntk: Any, v1: Any, v2: Any, degree: int) -> Pair:
    """``phi(x) = x^d``, ``d`` in 0..5: ``nngp' = E[u^d v^d]``,
    ``ntk' = ntk d^2 E[u^(d-1) v^(d-1)]``."""
    prod = v1 * v2
    q_new = _monomial(q, prod, degree)
    return q_new, (None if ntk is None else ntk * (degree ** 2) * _monomial(q, prod, degree - 1))


def _arccos_j(ns: Namespace, theta: Any, degree: int) -> Any:
    """Cho & Saul's angular part ``J_n(theta)``: ``J_0 = pi - theta``, ``J_1 = sin theta +
    (pi - theta) cos theta``, ``J_n = (2n - 1) cos theta J_{n-1} + (n - 1)^2 sin^2 theta
    J_{n-2}`` (the recursion reproduces their eq. 6 for n = 2)."""
    s, c = ns.sin(theta), ns.cos(theta)
    j_prev, j = math.pi - theta, s + (math.pi - theta) * c
    if degree == 0:
        return j_prev
    for n in range(2, degree + 1):
        j_prev, j = j, (2 * n - 1) * c * j + (n - 1) ** 2 * s * s * j_prev
    return j


def rectified_monomial(ns: Namespace, q: Any, ntk: Any, v1: Any, v2: Any, degree: int) -> Pair:
    """``phi(x) = (x >= 0) x^d``: the arc-cosine kernel of order ``d``,
    ``nngp' = (v1 v2)^(d/2) J_d(theta) / (2 pi)``, ``theta = arccos(q / sqrt(v1 v2))``;
    ``ntk' = ntk d^2 (v1 v2)^((d-1)/2) J_{d-1}(theta) / (2 pi)`` (0 for ``d = 0``)."""
    prod = v1 * v2
    root = _sqrt(ns, prod - q * q)
    zero = (root == 0) & (q == 0)
    theta = ns.where(zero, math.pi / 2, ns.arctan2(root, q))
    norm = _sqrt(ns, prod)
    q_new = norm ** degree * _arccos_j(ns, theta, degree) / (2 * math.pi)
    if ntk is None:
        return q_new, None
    if degree == 0:
        return q_new, ntk * 0.0
    dot = degree ** 2 * norm ** (degree - 1) * _arccos_j(ns, theta, degree - 1) / (2 * math.pi)
    return q_new, ntk * dot


def _hermite_coefs(coef: Sequence[float], degree: int, l: int) -> list[float]:
    """Coefficients (in ``sqrt(v)^m``) of the order-``l`` Hermite weight of a polynomial with
    coefficients ``coef`` (lowest first), for a centred Gaussian of variance ``v``."""
    out = [0.0] * degree
    for i in range((degree - 1 - l) // 2 + 1):
        m = 2 * i + l
        out[m] = coef[m] * math.factorial(m) / (2 ** i * math.factorial(i) * math.sqrt(math.factorial(l)))
    return out


def polynomial(ns: Namespace, q: Any, ntk: Any, v1: Any, v2: Any, coef: Sequence[float]) -> Pair:
    """``phi(x) = sum_m coef[m] x^m`` through its Hermite expansion: with ``r_l(v)`` the
    ``l``-th normalized Hermite coefficient of ``phi(sqrt(v) z)`` and ``rho = q/sqrt(v1 v2)``,
    ``nngp' = sum_l r_l(v1) r_l(v2) rho^l``, ``ntk' = ntk sum_l l r_l(v1) r_l(v2)
    rho^(l-1) / sqrt(v1 v2)``."""
    degree = len(coef)
    norm = _sqrt(ns, v1 * v2)
    rho = q / norm
    q_new = 0.0 * q
    dot = 0.0 * q
    s1, s2 = _sqrt(ns, v1), _sqrt(ns, v2)
    for l in range(degree):
        c = _hermite_coefs(coef, degree, l)
        r1 = sum(cm * s1 ** m for m, cm in enumerate(c) if cm)
        r2 = sum(cm * s2 ** m for m, cm in enumerate(c) if cm)
        q_new = q_new + r1 * r2 * rho ** l
        if l >= 1:
            dot = dot + l * r1 * r2 * rho ** (l - 1)
    return q_new, (None if ntk is None else ntk * dot / norm)


def hermite(ns: Namespace, q: Any, ntk: Any, v1: Any, v2: Any, degree: int) -> Pair:
    """Normalized probabilists' Hermite polynomial ``He_d / sqrt(d!)``, for inputs of unit
    variance (neural-tangents' assumption, not checked): ``nngp' = q^d``,
    ``ntk' = ntk d q^(d-1)``. The variances become ``v^d`` (NT's rule)."""
    q_new = q ** degree
    if ntk is None:
        return q_new, None
    return q_new, (ntk * 0.0 if degree == 0 else ntk * degree * q ** (degree - 1))


def _as_float_list(coef: Any) -> list[float]:
    return [float(c) for c in np.asarray(coef, dtype=float).ravel()]
