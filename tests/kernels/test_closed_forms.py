"""Closed forms: Cho & Saul arc-cosine kernels, Arora et al.'s ReLU NTK, exact sphere
eigenvalues (Bietti & Mairal), and the independent plain-NumPy reference recursion.

Map from ntkscale (neural-tangents conventions) to the sphere kernels
--------------------------------------------------------------------
NT divides inputs by d: ``q = x·x'/d``. Take ``x`` with ``|x|² = d`` (the unit sphere scaled
by √d), so ``q = u = cos θ`` and the input variance is 1. Then

* ``Dense(W_std=√2)`` gives ``Σ = 2u``; ``Relu`` maps ``(s, s, s u) -> (s/2)·κ1(u)``, hence
  ``serial(Dense(n, W_std=√2), Relu())`` has NNGP ``κ1(u)`` exactly and keeps variance 1;
* its NTK after ``Relu`` is ``2u · κ0(u)/2 = u κ0(u)``; a last ``Dense(1, W_std=1)`` adds
  ``Σ = κ1(u)``: ``serial(Dense(n, W_std=√2), Relu(), Dense(1, W_std=1))`` has NTK
  ``u κ0(u) + κ1(u) = κ(u)``, Bietti & Mairal's two-layer ReLU NTK, ``κ(1) = 2``;
* by induction the same with L hidden ``Dense(W_std=√2) + Relu`` blocks is Arora et al.'s NTK
  ``Θ_l = Σ_l + Θ_{l−1} κ0(Σ_{l−1})`` (c_σ = 2); a last ``Dense(1, W_std=√2)`` doubles it.

References: Cho & Saul (2009); Arora et al. (2019), "On exact computation with an infinitely
wide neural net", eq. (4)–(5); Bietti & Mairal (2019), "On the inductive bias of neural
tangent kernels", Prop. 5 / App. D (eigenvalues on S²).
"""

import math

import numpy as np
import pytest
from scipy.special import eval_gegenbauer, eval_legendre, gammaln

from ntkscale import stax
from ntkscale.testing import arccos_kernel, reference_kernels, relu_ntk_sphere

SQ2 = math.sqrt(2.0)


def _sphere(n, d, seed):
    x = np.random.default_rng(seed).standard_normal((n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True) * math.sqrt(d)  # |x|² = d


def _relu_net(depth, last_w=1.0, width=64):
    layers = []
    for _ in range(depth):
        layers += [stax.Dense(width, W_std=SQ2), stax.Relu()]
    return stax.serial(*layers, stax.Dense(1, W_std=last_w))


@pytest.mark.parametrize("path", ["auto", "generic"])
def test_single_relu_layer_is_arccos_kernel(path):
    # Tolerance 1e-13 absolute (values are O(1)): both sides are a few flops from arctan2 /
    # arccos of the same cosine; random pairs in d = 5 are far from u = ±1, where
    # arccos loses digits (dθ = du / sin θ).
    d = 5
    x = _sphere(40, d, 0)
    u = np.clip(x @ x.T / d, -1, 1)
    np.fill_diagonal(u, 1.0)  # exact on the diagonal; the computed Gram is off by ~1e-16 there
    _, _, kf = stax.serial(stax.Dense(64, W_std=SQ2), stax.Relu())
    k = kf(x, None, path=path)
    np.testing.assert_allclose(k.nngp, arccos_kernel(1, u), rtol=0, atol=1e-13)
    np.testing.assert_allclose(k.ntk, u * arccos_kernel(0, u), rtol=0, atol=1e-13)
    np.testing.assert_allclose(np.diag(k.nngp), 1.0, rtol=0, atol=1e-15)  # κ1(1) = 1


@pytest.mark.parametrize("path", ["auto", "generic"])
def test_two_layer_relu_ntk_is_bietti_mairal_kernel(path):
    d = 5
    x = _sphere(40, d, 1)
    # add exactly antipodal and repeated rows: κ(-1) = 0, κ(1) = 2
    x = np.vstack([x, -x[:3], x[:2]])
    u = np.clip(x @ x.T / d, -1, 1)
    np.fill_diagonal(u, 1.0)
    kappa = u * arccos_kernel(0, u) + arccos_kernel(1, u)
    k = _relu_net(1).kernel_fn(x, None, path=path)
    # 1e-7 absolute: the repeated/antipodal rows have u = ±1 up to rounding of the Gram
    # (|δu| ~ 1e-16), where κ's slope in u is unbounded (κ ≈ 2 − (2√2/π)√(1−u) near 1),
    # so an O(1e-16) input error becomes O(1e-8). Off those pairs the match is 1e-13.
    np.testing.assert_allclose(k.ntk, kappa, rtol=0, atol=1e-7)
    off = ~np.isclose(np.abs(u), 1.0, atol=1e-6)
    np.testing.assert_allclose(k.ntk[off], kappa[off], rtol=0, atol=1e-13)
    np.testing.assert_allclose(k.nngp, arccos_kernel(1, u), rtol=0, atol=1e-7)
    # κ(1) = 2 on the diagonal, which is computed without any angle (|x|²/d = 1 up to rounding)
    np.testing.assert_allclose(np.diag(k.ntk), 2.0, rtol=4e-15, atol=0)
    # a last Dense(W_std=√2) doubles the NTK
    k2 = _relu_net(1, last_w=SQ2).kernel_fn(x, None, "ntk", path=path)
    np.testing.assert_allclose(k2, 2 * k.ntk, rtol=0, atol=1e-15)  # (2·Σ differs from Σ+Σ by rounding)


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_deep_relu_ntk_is_arora_ntk(depth):
    # Arora et al.'s recursion written with np.arccos (ntkscale.testing.relu_ntk_sphere);
    # tolerance 1e-12 absolute on O(depth) values (a few roundings per layer).
    d = 7
    x = _sphere(30, d, depth)
    u = x @ x.T / d
    off = ~np.eye(len(x), dtype=bool)
    sigma, theta = relu_ntk_sphere(u[off], depth)
    k = _relu_net(depth).kernel_fn(x, None)
    np.testing.assert_allclose(k.nngp[off], sigma, rtol=0, atol=1e-12)
    np.testing.assert_allclose(k.ntk[off], theta, rtol=0, atol=1e-12)
    np.testing.assert_allclose(np.diag(k.ntk), depth + 1, rtol=1e-14)  # Θ_L(1) = L + 1


def test_relu_nngp_is_positively_homogeneous():
    # Off the sphere: Σ(x, x') = (|x||x'|/d) κ1(cos∠(x, x')) for serial(Dense(√2), Relu()).
    rng = np.random.default_rng(3)
    d = 6
    x = rng.standard_normal((20, d)) * rng.uniform(0.1, 5.0, (20, 1))
    nrm = np.linalg.norm(x, axis=1)
    u = np.clip(x @ x.T / np.outer(nrm, nrm), -1, 1)
    k = stax.serial(stax.Dense(8, W_std=SQ2), stax.Relu()).kernel_fn(x, None, "nngp")
    np.testing.assert_allclose(k, np.outer(nrm, nrm) / d * arccos_kernel(1, u), rtol=1e-12, atol=0)


# ----------------------------------------------------------------------------------------
# Sphere eigenvalues (Funk–Hecke) of the kernel *as computed by kernel_fn*
# ----------------------------------------------------------------------------------------
def _kernel_on_angles(theta, d, path):
    """κ(cos θ_i) from ntkscale: pairs (e1, cos θ e1 + sin θ e2), scaled to |x|² = d."""
    x1 = np.zeros((1, d))
    x1[0, 0] = math.sqrt(d)
    x2 = np.zeros((len(theta), d))
    x2[:, 0], x2[:, 1] = math.sqrt(d) * np.cos(theta), math.sqrt(d) * np.sin(theta)
    return _relu_net(1).kernel_fn(x1, x2, "ntk", path=path)[0]


def _funk_hecke(d, kmax, path, nodes=64):
    """μ_k = c_d ∫_{-1}^{1} κ(t) P_k^{(d)}(t) (1 − t²)^{(d−3)/2} dt, uniform probability measure on
    S^{d−1}, c_d = Γ(d/2) / (√π Γ((d−1)/2)) (= 1/2 for d = 3), P_k^{(d)} = C_k^{(d−2)/2} / C_k^{(d−2)/2}(1)
    (Legendre for d = 3). Substituting t = cos θ makes the integrand entire in θ (κ0, κ1 are
    polynomials in θ, cos θ, sin θ), so Gauss–Legendre in θ converges exponentially."""
    z, w = np.polynomial.legendre.leggauss(nodes)
    theta = 0.5 * math.pi * (z + 1)
    w = 0.5 * math.pi * w
    t = np.cos(theta)
    kappa = _kernel_on_angles(theta, d, path)
    c_d = math.exp(gammaln(d / 2) - gammaln((d - 1) / 2)) / math.sqrt(math.pi)
    mus = []
    for k in range(kmax + 1):
        if d == 3:
            pk = eval_legendre(k, t)
        else:
            a = (d - 2) / 2
            pk = eval_gegenbauer(k, a, t) / eval_gegenbauer(k, a, 1.0)
        mus.append(c_d * np.sum(w * kappa * pk * np.sin(theta) ** (d - 2)))
    return np.array(mus)


@pytest.mark.parametrize("path", ["auto", "generic"])
def test_two_layer_relu_ntk_eigenvalues_on_s2(path):
    # Exact values (ALGORITHMS.md §1; Bietti & Mairal 2019). Tolerance 1e-13 absolute: the
    # quadrature is exact to rounding at 64 nodes, kernel values carry ~1e-16 error each.
    # μ6 = 23/16384 ≈ 1.4e-3, so a wrong constant anywhere in the chain fails by orders of
    # magnitude more than the tolerance; μ3 = μ5 = 0 checks the kernel's odd part is exactly u.
    exact = np.array([1 / 2, 1 / 3, 5 / 64, 0.0, 1 / 192, 0.0, 23 / 16384])
    mu = _funk_hecke(3, 6, path)
    np.testing.assert_allclose(mu, exact, rtol=0, atol=1e-13)


def test_two_layer_relu_ntk_eigenvalues_on_s4():
    # Any d: μ1 = 1/d and odd levels >= 3 vanish (ALGORITHMS.md §1). d = 5.
    mu = _funk_hecke(5, 7, "auto")
    assert mu[1] == pytest.approx(1 / 5, abs=1e-13)
    np.testing.assert_allclose(mu[[3, 5, 7]], 0.0, atol=1e-13)
    assert np.all(mu[[0, 2, 4, 6]] > 1e-4)  # even levels are strictly positive


# ----------------------------------------------------------------------------------------
# The independent plain-NumPy reference recursion (ntkscale.testing.reference)
# ----------------------------------------------------------------------------------------
CHAINS = {
    "relu3_bias": [("dense", SQ2, 0.1), ("relu",), ("dense", SQ2, 0.1), ("relu",),
                   ("dense", SQ2, 0.1), ("relu",), ("dense", 1.0, 0.1)],
    "erf_abc": [("dense", 1.3, 0.2), ("erf", 1.7, 0.6, -0.3), ("dense", 0.9, None), ("erf",),
                ("dense", 1.1, 0.05)],
    "leaky_abs": [("dense", 1.5, None), ("leaky_relu", 0.1), ("dense", 1.2, 0.3), ("abs",),
                  ("dense", 1.0, None)],
    "abrelu_identity": [("dense", 2.0, 0.5), ("abrelu", -0.4, 1.3), ("identity",),
                        ("dense", 0.7, 0.1)],
    "standard": [("dense", 1.4, 0.1, "standard", 33), ("relu",), ("dense", 1.2, 0.2, "standard", 17),
                 ("erf",), ("dense", 1.0, None, "standard", 1)],
}


def _build(spec):
    layers = []
    for s in spec:
        if s[0] == "dense":
            p = s[3] if len(s) > 3 else "ntk"
            layers.append(stax.Dense(s[4] if len(s) > 4 else 5, W_std=s[1], b_std=s[2],
                                     parameterization=p))
        elif s[0] == "relu":
            layers.append(stax.Relu())
        elif s[0] == "leaky_relu":
            layers.append(stax.LeakyRelu(s[1]))
        elif s[0] == "abs":
            layers.append(stax.Abs())
        elif s[0] == "abrelu":
            layers.append(stax.ABRelu(s[1], s[2]))
        elif s[0] == "erf":
            layers.append(stax.Erf(*s[1:]))
        elif s[0] == "identity":
            layers.append(stax.Identity())
    return stax.serial(*layers)


@pytest.mark.parametrize("path", ["auto", "generic"])
@pytest.mark.parametrize("name", sorted(CHAINS))
def test_chain_matches_plain_numpy_reference(name, path):
    # Relative 1e-12 (scaled by the largest entry): both are float64 evaluations of the same
    # formulas; the fused path uses a polynomial arccos (4.4e-16 abs) instead of arctan2,
    # and the reference writes ABRelu as a·x + (b−a)·relu(x) and erf with arcsin.
    rng = np.random.default_rng(11)
    x1 = rng.standard_normal((23, 9)) * rng.uniform(0.2, 3.0, (23, 1))
    x2 = rng.standard_normal((14, 9))
    layer = _build(CHAINS[name])
    for a, b in ((x1, None), (x1, x2)):
        k = layer.kernel_fn(a, b, path=path)
        q, t = reference_kernels(CHAINS[name], a, b)
        for got, want in ((k.nngp, q), (k.ntk, t)):
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-12 * np.abs(want).max())
