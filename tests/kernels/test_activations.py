"""Every activation transform against an independent Gauss–Hermite oracle.

For an activation φ and ``(u, v) ~ N(0, [[v1, q], [q, v2]])`` the layer must map
``nngp -> E[φ(u) φ(v)]`` and ``ntk -> ntk · E[φ'(u) φ'(v)]``. We read both off the
public ``kernel_fn`` of ``serial(act)`` and ``serial(Dense(1), act)`` on two-feature
inputs built to have the prescribed ``(v1, v2, q)``, so every path (fused and generic)
is checked, and compare with :func:`ntkscale.testing.gaussian_expectation`.
"""

import math

import numpy as np
import pytest
from scipy.special import erf as sp_erf
from scipy.stats import norm

from ntkscale import stax
from ntkscale.testing import gaussian_expectation

# (v1, v2, rho): equal and unequal variances, anti-/correlated, near-parallel, orthogonal
POINTS = [(1.0, 1.0, 0.5), (0.3, 2.5, -0.7), (1.7, 0.9, 0.95), (4.0, 4.0, -0.2), (1.0, 1.0, 0.999),
          (0.5, 2.0, 0.0)]


def _pair(v1, v2, rho):
    """Rows x1, x2 in d = 2 with |x1|²/2 ≈ v1, |x2|²/2 ≈ v2, x1·x2/2 ≈ rho √(v1 v2), and the
    exact (v1, v2, q) the kernel sees (so the oracle gets the same inputs, rounding included)."""
    x1 = np.array([[math.sqrt(2 * v1), 0.0]])
    x2 = math.sqrt(2 * v2) * np.array([[rho, math.sqrt(1 - rho * rho)]])
    return x1, x2, (x1 @ x1.T)[0, 0] / 2, (x2 @ x2.T)[0, 0] / 2, (x1 @ x2.T)[0, 0] / 2


def _erf(a, b, c):
    return (lambda x: a * sp_erf(b * x) + c,
            lambda x: a * b * 2 / math.sqrt(math.pi) * np.exp(-(b * x) ** 2))


def _sin(a, b, c):
    return lambda x: a * np.sin(b * x + c), lambda x: a * b * np.cos(b * x + c)


def _abrelu(a, b):
    return lambda x: np.where(x < 0, a * x, b * x), lambda x: np.where(x < 0, a, b)


GELU = (lambda x: x * norm.cdf(x), lambda x: norm.cdf(x) + x * norm.pdf(x))

# (name, layer, (φ, φ'), quadrature method).  "hermite" for smooth φ (spectral convergence:
# order 600 reaches ~1e-13 even for the narrow exp(-4u²) of erf_steep at v = 4); "polar" for the kinked, positively homogeneous ReLU family,
# where it is exact up to rounding (see ntkscale/testing/quadrature.py).
CASES = [
    ("relu", stax.Relu(), _abrelu(0.0, 1.0), "polar"),
    ("leaky_relu", stax.LeakyRelu(0.2), _abrelu(0.2, 1.0), "polar"),
    ("abs", stax.Abs(), _abrelu(-1.0, 1.0), "polar"),
    ("abrelu", stax.ABRelu(-0.4, 1.3), _abrelu(-0.4, 1.3), "polar"),
    ("erf", stax.Erf(), _erf(1.0, 1.0, 0.0), "hermite"),
    ("erf_abc", stax.Erf(a=1.7, b=0.6, c=-0.3), _erf(1.7, 0.6, -0.3), "hermite"),
    ("erf_steep", stax.Erf(a=0.5, b=2.0, c=0.2), _erf(0.5, 2.0, 0.2), "hermite"),
    ("gelu", stax.Gelu(), GELU, "hermite"),
    ("sin", stax.Sin(), _sin(1.0, 1.0, 0.0), "hermite"),
    ("sin_abc", stax.Sin(a=1.3, b=0.7, c=0.4), _sin(1.3, 0.7, 0.4), "hermite"),
    ("cos", stax.Cos(a=0.8, b=1.2, c=-0.3), _sin(0.8, 1.2, -0.3 + math.pi / 2), "hermite"),
    # sign: positively homogeneous of degree 0 (exact on the polar rule); sign' = 0 a.e.
    ("sign", stax.Sign(), (np.sign, np.zeros_like), "polar"),
]


def _oracle(funcs, method, v1, v2, q):
    phi, dphi = funcs
    order = 600 if method == "hermite" else 40
    e = gaussian_expectation(phi, phi, v1, v2, q, order=order, method=method)
    de = gaussian_expectation(dphi, dphi, v1, v2, q, order=order, method=method)
    return float(e), float(de)


@pytest.mark.parametrize("name,layer,funcs,method", CASES, ids=[c[0] for c in CASES])
def test_transform_matches_quadrature(name, layer, funcs, method):
    # Tolerance 1e-10 relative to the scale of the values: the oracle is accurate to ~1e-13
    # (measured) and the closed forms lose at most a few digits to cancellation (GELU's
    # (1 - v1 v2)/... terms, arcsin near ±1 at rho = 0.999). A wrong constant or a missing
    # term (e.g. c² in Erf, the cos(2c) term in Sin) is an O(1e-2..1) error.
    for v1, v2, rho in POINTS:
        x1, x2, v1, v2, q = _pair(v1, v2, rho)
        e, de = _oracle(funcs, method, v1, v2, q)
        for path in ("auto", "generic"):  # fused numba chain (ReLU family, erf) and xp recursion
            # (a Dense first: nonlinearities need Gaussian pre-activations, not raw inputs)
            nngp = stax.serial(stax.Dense(1), layer).kernel_fn(x1, x2, "nngp", path=path)[0, 0]
            # Dense(W_std=1, no bias) leaves (v1, v2, q) unchanged and sets ntk = q, so the
            # activation's ntk output divided by q is its derivative factor.
            ntk = stax.serial(stax.Dense(1), layer).kernel_fn(x1, x2, "ntk", path=path)[0, 0]
            assert abs(nngp - e) <= 1e-10 * max(1.0, abs(e)), (name, path, v1, v2, rho, nngp, e)
            if q != 0:
                factor = ntk / q
                assert abs(factor - de) <= 1e-10 * max(1.0, abs(de)), (name, path, v1, v2, rho, factor, de)
            else:
                assert ntk == 0.0


@pytest.mark.parametrize("name,layer,funcs,method", CASES, ids=[c[0] for c in CASES])
def test_diagonal_matches_quadrature(name, layer, funcs, method):
    # The diagonal (u = v) goes through the O(n) diag_stats path, separately coded; same
    # 1e-10 tolerance as above. The NTK diagonal of serial(Dense(1), act) is v · E[φ'(u)²].
    for v in (0.2, 1.0, 3.0):
        x = np.array([[math.sqrt(2 * v), 0.0]])
        k = stax.serial(stax.Dense(1), layer).kernel_fn(x, None)
        e, de = _oracle(funcs, method, v, v, v)
        assert abs(k.nngp[0, 0] - e) <= 1e-10 * max(1.0, abs(e)), (name, v)
        assert abs(k.ntk[0, 0] / v - de) <= 1e-10 * max(1.0, abs(de)), (name, v)


def test_quadrature_oracle_is_sharp():
    # The oracle itself must be able to tell a wrong answer: known moments of a Gaussian,
    # E[u² v²] = v1 v2 + 2 q², E[u v] = q, to 1e-13 (Hermite is exact for polynomials).
    v1, v2, q = 1.3, 0.7, 0.4
    assert gaussian_expectation(np.square, np.square, v1, v2, q, order=10) == pytest.approx(
        v1 * v2 + 2 * q * q, rel=1e-13)
    ident = lambda x: x  # noqa: E731
    assert gaussian_expectation(ident, ident, v1, v2, q, order=20, method="polar") == pytest.approx(
        q, rel=1e-13)
    # P[u > 0, v > 0] = 1/4 + arcsin(rho)/(2π) (Sheppard): step functions need the polar rule.
    step = lambda x: (x > 0).astype(float)  # noqa: E731
    rho = q / math.sqrt(v1 * v2)
    assert gaussian_expectation(step, step, v1, v2, q, order=20, method="polar") == pytest.approx(
        0.25 + math.asin(rho) / (2 * math.pi), abs=1e-14)
