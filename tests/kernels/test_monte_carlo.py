"""Monte Carlo: wide finite JAX networks (init_fn/apply_fn, empirical_ntk) against the
analytic NNGP/NTK, with the error shrinking like 1/√width.

At width n the empirical kernels of one network fluctuate around the analytic limit with
relative size ~C/√n (C ≈ 1.5–4 here, growing with depth); their bias is O(1/n). Each case
measures the relative Frobenius error (mean over seeds) at a small and a large width and
asserts (i) it shrinks by at least the factor 0.6 (√(256/2048) ≈ 0.35 expected) and (ii) it
is below 6/√n at the large width. A wrong convention (a factor 2, a missing bias term, the
wrong fan-in in the standard parameterization, a wrong activation moment) leaves an O(10%)+
error that does not shrink with width and fails (i) or (ii); finer errors are the closed-form
tests' job (test_closed_forms.py, test_activations.py).

Runtime ~30 s on 2 CPU cores (jacrev of 8 inputs through up to 3 hidden layers of 2048).
"""

import math

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")

from ntkscale import stax  # noqa: E402
from ntkscale.kernels.layers import Serial  # noqa: E402
from ntkscale.kernels.network import empirical_ntk  # noqa: E402

X = np.random.default_rng(0).standard_normal((8, 4))
SMALL, LARGE = 256, 2048
SEEDS = {SMALL: 4, LARGE: 2}


def _mlp(widths, act, param="ntk", b_std=0.1, out=1, W_std=1.5):
    layers = []
    for w in widths:
        layers += [stax.Dense(w, W_std=W_std, b_std=b_std, parameterization=param), act]
    return stax.serial(*layers, stax.Dense(out, W_std=W_std, b_std=b_std, parameterization=param))


def _rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _empirical(net, seed, want_ntk=True):
    """(empirical NNGP, empirical NTK) of one sampled network on X.

    The NNGP is the exact expectation over the *last* Dense layer given the penultimate
    features f (shape (n, width)): W_std² f fᵀ / width + b_std² (NT's empirical NNGP), so its
    only randomness is that of the hidden layers.
    """
    init_fn, apply_fn, _ = net
    x = jnp.asarray(X, jnp.float32)
    _, params = init_fn(jax.random.PRNGKey(seed), X.shape)
    feats = np.asarray(Serial(net.layers[:-1]).apply_fn(params[:-1], x), np.float64)
    last = net.layers[-1]
    nngp = last.W_std ** 2 * feats @ feats.T / feats.shape[1] + (last.b_std or 0.0) ** 2
    ntk = np.asarray(empirical_ntk(apply_fn, params, x), np.float64) if want_ntk else None
    return nngp, ntk


def _errors(make, width, want_ntk=True):
    net = make(width)
    k = net.kernel_fn(X, None)
    errs = [_empirical(net, s, want_ntk) for s in range(SEEDS[width])]
    e_nngp = np.mean([_rel(e[0], k.nngp) for e in errs])
    e_ntk = np.mean([_rel(e[1], k.ntk) for e in errs]) if want_ntk else None
    return e_nngp, e_ntk, k


def _assert_shrinks(name, small, large, width):
    assert large < 0.6 * small, f"{name}: error {large:.3g} at width {width} vs {small:.3g} at {SMALL}"
    assert large < 6 / math.sqrt(width), f"{name}: error {large:.3g} above 6/sqrt({width})"


def _standard_s(w):
    # NT's width scalings s = (s_in, s_out): hidden width out_dim·s_out = 2w, and the next layer's
    # fan-in is divided by its s_in (NT: s[0] of a layer = s[1] of the previous one)
    return stax.serial(stax.Dense(w, W_std=1.5, b_std=0.1, parameterization="standard", s=(1, 2)), stax.Relu(),
                       stax.Dense(1, W_std=1.5, b_std=0.1, parameterization="standard", s=(2, 1)))


CASES = {  # name: width -> architecture
    "relu_1": lambda w: _mlp([w], stax.Relu()),
    "relu_3": lambda w: _mlp([w, w, w], stax.Relu()),
    "erf_2_nobias": lambda w: _mlp([w, w], stax.Erf(), b_std=None),
    "erf_abc_1": lambda w: _mlp([w], stax.Erf(a=1.5, b=0.7, c=0.2)),
    "gelu_2": lambda w: _mlp([w, w], stax.Gelu()),
    "leaky_relu_2": lambda w: _mlp([w, w], stax.LeakyRelu(0.2)),
    "sign_2": lambda w: _mlp([w, w], stax.Sign()),
    # standard parameterization with unequal widths: the kernel's fan-in for each Dense must be
    # the previous Dense's out_dim (the input dimension d for the first), as in the finite net
    "standard_relu_2": lambda w: _mlp([w, w // 2], stax.Relu(), "standard"),
    "standard_erf_1": lambda w: _mlp([w], stax.Erf(), "standard"),
    "standard_s_scaling": _standard_s,
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_finite_width_kernels_converge(name):
    make = CASES[name]
    nngp_s, ntk_s, k_s = _errors(make, SMALL)
    nngp_l, ntk_l, k_l = _errors(make, LARGE)
    _assert_shrinks(f"{name} NNGP", nngp_s, nngp_l, LARGE)
    _assert_shrinks(f"{name} NTK", ntk_s, ntk_l, LARGE)
    if make(SMALL).layers[0].parameterization == "ntk":  # the NTK-param limit is width-independent
        np.testing.assert_allclose(k_s.ntk, k_l.ntk, rtol=1e-14)
    else:  # NT's standard NTK grows with the width (fan-in factors): ~ LARGE/SMALL = 8x here
        ratio = np.abs(k_l.ntk).max() / np.abs(k_s.ntk).max()
        assert 4 < ratio < 9, ratio


def test_output_covariance_over_many_units_is_nngp():
    # The NNGP as the actual covariance of the outputs: 4096 output units of one width-1024
    # network (units are i.i.d. given the hidden layers). Expected relative error
    # ~ 2·√(1/1024 + 1/4096) ≈ 0.07; bound 6·√(...) ≈ 0.21, while the same estimate against the
    # NNGP of a mis-specified net (b_std 0.1 -> 0.5, a change of the bias variance) is far off.
    net = _mlp([1024, 1024], stax.Erf(), "ntk", 0.1, out=4096)
    init_fn, apply_fn, kernel_fn = net
    _, params = init_fn(jax.random.PRNGKey(7), X.shape)
    f = np.asarray(apply_fn(params, jnp.asarray(X, jnp.float32)), np.float64)  # shape: (8, 4096)
    emp = f @ f.T / f.shape[1]
    bound = 6 * math.sqrt(1 / 1024 + 1 / 4096)
    assert _rel(emp, kernel_fn(X, None, "nngp")) < bound
    wrong = _mlp([1024, 1024], stax.Erf(), "ntk", 0.5, out=1).kernel_fn(X, None, "nngp")
    assert _rel(emp, wrong) > bound
