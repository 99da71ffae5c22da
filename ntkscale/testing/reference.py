"""Dense plain-NumPy reference kernels for fully connected chains.

Written straight from the formulas (ALGORITHMS.md §1, neural-tangents
conventions), independently of :mod:`ntkscale.kernels`: one vectorised NumPy
expression per layer over whole ``(n1, n2)`` matrices, ``np.arctan2`` for the
ReLU angle and ``np.arcsin`` for erf. It is the oracle the tests compare the
library against, and the "plain NumPy recursion" the benchmark times.

Architectures are lists of tuples::

    [("dense", W_std, b_std), ("relu",), ("dense", W_std, b_std), ("relu",), ("dense", 1.0, None)]

Layer tuples
------------
``("dense", W_std, b_std)``
    NTK parameterization: ``Σ ← W²Σ + b²``, ``Θ ← Σ_new + W²Θ`` (no ``b²`` when ``b_std`` is None).
``("dense", W_std, b_std, "standard", out_dim)``
    Standard parameterization (neural-tangents' rule): ``Θ ← n_in·Σ_old + W²Θ + [b_std is not None]``
    where ``n_in`` is the previous dense layer's ``out_dim`` (the input dimension ``d`` for the first).
``("relu",)``, ``("leaky_relu", alpha)``, ``("abs",)``, ``("abrelu", a, b)``
    ``φ(x) = a·min(x, 0) + b·max(x, 0)``.
``("erf",)`` or ``("erf", a, b, c)``
    ``φ(x) = a·erf(b·x) + c``.
``("identity",)``

References
----------
Cho & Saul (2009), "Kernel methods for deep learning", NIPS (arc-cosine kernels, eq. 6).
Williams (1997), "Computing with infinite networks", NIPS (erf kernel).
Jacot, Gabriel & Hongler (2018), "Neural Tangent Kernel", NeurIPS (NTK recursion).
Novak et al. (2020), "Neural Tangents", ICLR (parameterizations and the ``1/d`` input convention).
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

__all__ = ["reference_kernels", "reference_diag", "arccos_kernel", "relu_ntk_sphere"]

_PI = np.pi


def _abrelu(q, ntk, v1, v2, a, b):
    """``φ = a·x + (b − a)·relu(x)``: expand E[φ(u)φ(v)] into the three Gaussian moments.

    E[u v] = q, E[u relu(v)] = q/2, E[relu(u) relu(v)] = (√(v1v2−q²) + (π−θ)q)/(2π),
    with θ = arctan2(√(v1v2−q²), q) (Cho & Saul's degree-1 arc-cosine kernel).
    E[φ'(u)φ'(v)] = a² + a(b−a) + (b−a)²(π−θ)/(2π)  (P[u>0] = 1/2, P[u>0, v>0] = (π−θ)/(2π)).
    """
    root = np.sqrt(np.maximum(v1 * v2 - q * q, 0.0))
    theta = np.arctan2(root, q)  # arctan2(0, 0) = 0: a zero row has q = 0 and root = 0
    theta = np.where((root == 0) & (q == 0), _PI / 2, theta)  # ... whose angle is undefined; any value works
    c = b - a
    relu_relu = (root + (_PI - theta) * q) / (2 * _PI)
    q_new = a * a * q + a * c * q + c * c * relu_relu
    factor = a * a + a * c + c * c * (_PI - theta) / (2 * _PI)
    return q_new, ntk * factor


def _erf(q, ntk, v1, v2, a, b, c):
    """Williams (1997): E[erf(bu) erf(bv)] = (2/π) arcsin(2b²q / √((1+2b²v1)(1+2b²v2))),
    E[φ'(u)φ'(v)] = a²b²(4/π) / √((1+2b²v1)(1+2b²v2) − 4b⁴q²). ``E[erf] = 0`` so c only adds c²."""
    b2 = b * b
    prod = (1 + 2 * b2 * v1) * (1 + 2 * b2 * v2)
    q_new = a * a * (2 / _PI) * np.arcsin(np.clip(2 * b2 * q / np.sqrt(prod), -1.0, 1.0)) + c * c
    factor = a * a * b2 * (4 / _PI) / np.sqrt(prod - 4 * b2 * b2 * q * q)
    return q_new, ntk * factor


def _activation(spec: Sequence, q, ntk, v1, v2):
    kind = spec[0]
    if kind == "relu":
        return _abrelu(q, ntk, v1, v2, 0.0, 1.0)
    if kind == "leaky_relu":
        return _abrelu(q, ntk, v1, v2, float(spec[1]), 1.0)
    if kind == "abs":
        return _abrelu(q, ntk, v1, v2, -1.0, 1.0)
    if kind == "abrelu":
        return _abrelu(q, ntk, v1, v2, float(spec[1]), float(spec[2]))
    if kind == "erf":
        a, b, c = (1.0, 1.0, 0.0) if len(spec) == 1 else (float(s) for s in spec[1:4])
        return _erf(q, ntk, v1, v2, a, b, c)
    if kind == "identity":
        return q, ntk
    raise ValueError(f"unknown layer {spec!r}")


def _dense(spec: Sequence, q, ntk, width: int):
    w2 = float(spec[1]) ** 2
    b2 = 0.0 if spec[2] is None else float(spec[2]) ** 2
    q_new = w2 * q + b2
    if len(spec) > 3 and spec[3] == "standard":
        ntk_new = width * q + w2 * ntk + (0.0 if spec[2] is None else 1.0)
        return q_new, ntk_new, int(spec[4])
    if len(spec) > 3 and spec[3] != "ntk":
        raise ValueError(f"unknown parameterization in {spec!r}")
    return q_new, q_new + w2 * ntk, width


def reference_kernels(layers: Sequence[Sequence], x1: np.ndarray, x2: Optional[np.ndarray] = None,
                      ) -> tuple[np.ndarray, np.ndarray]:
    """NNGP and NTK Gram matrices of a fully connected chain, in float64.

    Parameters
    ----------
    layers : list of tuples
        See the module docstring.
    x1 : ndarray, shape (n1, d)
    x2 : ndarray, shape (n2, d), optional (default: ``x1``)

    Returns
    -------
    nngp, ntk : ndarray, shape (n1, n2)
    """
    symmetric = x2 is None
    x1 = np.asarray(x1, np.float64)
    x2 = x1 if x2 is None else np.asarray(x2, np.float64)
    d = x1.shape[1]
    q = x1 @ x2.T / d                               # shape: (n1, n2)
    v1 = (np.sum(x1 * x1, axis=1) / d)[:, None]      # shape: (n1, 1)
    v2 = (np.sum(x2 * x2, axis=1) / d)[None, :]      # shape: (1, n2)
    if symmetric:
        # q_ii = v_i exactly, so the angle on the diagonal is exactly 0: the GEMM's rounding
        # (|δq| ~ 1e-16 q) would otherwise make θ ~ √(2δ) ~ 1e-8 there (arccos is not
        # Lipschitz at 1). Off-diagonal pairs of (nearly) equal rows keep that sensitivity.
        np.fill_diagonal(q, v1[:, 0])
    ntk = np.zeros_like(q)
    width = d
    for spec in layers:
        if spec[0] == "dense":
            q, ntk, new_width = _dense(spec, q, ntk, width)
            v1 = _dense(spec, v1, np.zeros_like(v1), width)[0]
            v2 = _dense(spec, v2, np.zeros_like(v2), width)[0]
            width = new_width
        else:
            q, ntk = _activation(spec, q, ntk, v1, v2)
            v1 = _activation(spec, v1, np.zeros_like(v1), v1, v1)[0]
            v2 = _activation(spec, v2, np.zeros_like(v2), v2, v2)[0]
    return q, ntk


def reference_diag(layers: Sequence[Sequence], x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Diagonals ``(nngp, ntk)`` of shape (n,) from the same recursion, one row at a time."""
    x = np.asarray(x, np.float64)
    pairs = [reference_kernels(layers, x[i:i + 1]) for i in range(len(x))]
    return (np.array([p[0][0, 0] for p in pairs]), np.array([p[1][0, 0] for p in pairs]))


# ----------------------------------------------------------------------------
# Closed forms on the sphere (Cho & Saul 2009; Bietti & Mairal 2019)
# ----------------------------------------------------------------------------
def arccos_kernel(order: int, u: np.ndarray) -> np.ndarray:
    """Normalised arc-cosine kernels of unit vectors at cosine ``u``.

    ``κ0(u) = 1 − θ/π``, ``κ1(u) = (sin θ + (π − θ) cos θ)/π`` with ``θ = arccos u``;
    ``κ_n(u) = 2 E[relu(g·x)^n relu(g·y)^n]`` for ``g ~ N(0, I)``.
    """
    u = np.clip(np.asarray(u, np.float64), -1.0, 1.0)
    theta = np.arccos(u)
    if order == 0:
        return 1 - theta / _PI
    if order == 1:
        return (np.sin(theta) + (_PI - theta) * u) / _PI
    raise ValueError("order must be 0 or 1")


def relu_ntk_sphere(u: np.ndarray, depth: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(NNGP, NTK) of a ReLU net with ``depth`` hidden layers on the unit sphere, Arora et al.'s
    convention (c_σ = 2, no bias): ``Σ_l = κ1(Σ_{l−1})``, ``Θ_l = Σ_l + Θ_{l−1} κ0(Σ_{l−1})``.

    ``depth = 1`` gives Bietti & Mairal's two-layer NTK ``κ(u) = u κ0(u) + κ1(u)`` (κ(1) = 2).
    """
    sigma = np.asarray(u, np.float64)
    theta = sigma.copy()
    for _ in range(depth):
        k0, k1 = arccos_kernel(0, sigma), arccos_kernel(1, sigma)
        sigma, theta = k1, k1 + theta * k0
    return sigma, theta
