"""Synthetic regression data: points on the sphere or Gaussian inputs, with known targets.

* ``sphere``: x uniform on S^{d-1}, scaled to norm √d; target a random sum of zonal
  spherical harmonics of degrees 1..K (normalized Gegenbauer polynomials), or a random
  finite ReLU network (the teacher below).
* ``teacher-student``: x ~ N(0, I_d); target a random finite ReLU network with He scaling.

Both targets have unit second moment on average over their random draw: E f(x)^2 = 1
(harmonics: by the addition theorem; teacher: E f(x)^2 = |x|^2/d exactly, He scaling).

References
----------
.. [1] K. Atkinson, W. Han, "Spherical Harmonics and Approximations on the Unit Sphere",
   Springer LNM 2044 (2012), eqs. (2.10) (dimension N(d, k)) and (2.28) (addition theorem).
.. [2] A. Bietti, J. Mairal, "On the inductive bias of neural tangent kernels", NeurIPS 2019.
.. [3] K. He et al., "Delving deep into rectifiers", ICCV 2015 (variance-preserving ReLU init).
"""

from __future__ import annotations

from math import comb
from typing import Callable

import numpy as np
from scipy import special

__all__ = ["sphere_points", "harmonic_dim", "gegenbauer", "harmonics_target", "relu_teacher",
           "make_synthetic"]

Target = Callable[[np.ndarray], np.ndarray]


def sphere_points(n: int, d: int, rng: np.random.Generator) -> np.ndarray:
    """Uniform points on S^{d-1} scaled to norm √d (so x·x/d = 1). Shape (n, d)."""
    X = rng.standard_normal((n, d))
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return X / norms * np.sqrt(d)


def harmonic_dim(d: int, k: int) -> int:
    """N(d, k): dimension of the degree-k spherical harmonics on S^{d-1} ([1]_ eq. 2.10)."""
    if k == 0:
        return 1
    return (2 * k + d - 2) * comb(k + d - 3, k - 1) // k


def gegenbauer(k: int, d: int, t: np.ndarray) -> np.ndarray:
    """Normalized Gegenbauer polynomial P_{k,d}(t) with P_{k,d}(1) = 1 (Legendre for d = 3,
    Chebyshev T_k for d = 2): the zonal harmonic of degree k on S^{d-1}."""
    t = np.clip(t, -1.0, 1.0)
    if d == 2:
        return special.eval_chebyt(k, t)
    alpha = (d - 2) / 2.0
    return special.eval_gegenbauer(k, alpha, t) / special.eval_gegenbauer(k, alpha, 1.0)


def harmonics_target(d: int, degree: int, rng: np.random.Generator, n_dirs: int = 0) -> Target:
    r"""A random band-limited function on S^{d-1}: degrees 1..``degree``, equal power.

    f(x) = Σ_k (1/√K) √(N(d,k)/m) Σ_j a_kj P_{k,d}(u·z_kj),  u = x/|x|,
    with m = ``n_dirs`` (default d) unit directions z_kj and a_kj ~ N(0, 1) per degree.
    By the addition theorem E_u[P_k(u·z) P_k(u·z')] = P_k(z·z')/N(d,k), so E f^2 = 1 over
    the draw, each degree carrying 1/K of it; f has zero mean on the sphere.
    """
    m = n_dirs or d
    terms = []
    for k in range(1, degree + 1):
        Z = sphere_points(m, d, rng) / np.sqrt(d)  # shape: (m, d), unit rows
        a = rng.standard_normal(m) * np.sqrt(harmonic_dim(d, k) / (m * degree))
        terms.append((k, Z, a))

    def f(X: np.ndarray) -> np.ndarray:
        U = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-300)
        return sum(gegenbauer(k, d, U @ Z.T) @ a for k, Z, a in terms)

    return f


def relu_teacher(d: int, width: int, depth: int, rng: np.random.Generator) -> Target:
    r"""A random finite ReLU network without biases, He-scaled:

    h_0 = x,  h_l = relu(√(2/n_{l-1}) W_l h_{l-1}),  f(x) = v·h_L / √width,  W, v ~ N(0, 1),

    so E_W f(x)^2 = |x|^2/d at every width ([3]_) and f(c x) = c f(x) for c > 0.
    """
    shapes = [(width, d)] + [(width, width)] * (depth - 1)
    Ws = [rng.standard_normal(s) * np.sqrt(2.0 / s[1]) for s in shapes]
    v = rng.standard_normal(width) / np.sqrt(width)

    def f(X: np.ndarray) -> np.ndarray:
        H = np.asarray(X, dtype=np.float64)
        for W in Ws:
            H = np.maximum(H @ W.T, 0.0)
        return H @ v

    return f


def make_synthetic(source: str, n: int, d: int, rng: np.random.Generator, *,
                   target: str = "harmonics", degree: int = 3, noise: float = 0.0,
                   teacher_width: int = 512, teacher_depth: int = 2,
                   classification: bool = False) -> tuple[np.ndarray, np.ndarray, dict]:
    """Inputs (n, d) and targets (n,) of a synthetic source.

    Regression: y = f(x) + noise·ε, ε ~ N(0, 1). Classification: y = sign(f(x) + noise·ε)
    in {-1, +1} (int64), i.e. the noise flips labels near the decision boundary.

    Returns
    -------
    X : ndarray, shape (n, d)
    y : ndarray, shape (n,)
    meta : dict
        Generator description for the run report (includes the empirical signal variance).
    """
    if source == "sphere":
        X = sphere_points(n, d, rng)
        meta = {"inputs": f"uniform on S^{d - 1}, norm sqrt(d)", "target": target}
    elif source == "teacher-student":
        X = rng.standard_normal((n, d))
        meta = {"inputs": "standard normal N(0, I_d)", "target": "teacher"}
        target = "teacher"
    else:
        raise ValueError(f"unknown synthetic source {source!r}; use 'sphere' or 'teacher-student'")
    if target == "harmonics":
        fn = harmonics_target(d, degree, rng)
        meta["degree"] = degree
    elif target == "teacher":
        fn = relu_teacher(d, teacher_width, teacher_depth, rng)
        meta.update(teacher_width=teacher_width, teacher_depth=teacher_depth)
    else:
        raise ValueError(f"unknown sphere target {target!r}; use 'harmonics' or 'teacher'")
    fx = fn(X)
    y = fx + noise * rng.standard_normal(n)
    meta.update(noise=noise, signal_variance=float(np.var(fx)))
    if classification:
        y = np.where(y > 0, 1, -1).astype(np.int64)
    return X, y, meta
