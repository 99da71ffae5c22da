"""The fused numba CPU kernel against the generic array-namespace recursion, and its arccos."""

import math

import numpy as np
import pytest

from ntkscale import stax
from ntkscale.kernels import diag_stats, kernel_tile
from ntkscale.kernels.fused import acos_poly, compile_program

SQ2 = math.sqrt(2.0)

ARCHS = {
    "relu3_bias": stax.serial(*[l for _ in range(3) for l in (stax.Dense(64, W_std=SQ2, b_std=0.1),
                                                               stax.Relu())], stax.Dense(1)),
    "erf_abc": stax.serial(stax.Dense(32, W_std=1.3, b_std=0.2), stax.Erf(1.7, 0.6, -0.3),
                           stax.Dense(16, W_std=0.9), stax.Erf(), stax.Dense(1, b_std=0.05)),
    "leaky_abs_identity": stax.serial(stax.Dense(8, W_std=1.5), stax.LeakyRelu(0.1), stax.Identity(),
                                      stax.Dense(8, W_std=1.2, b_std=0.3), stax.Abs(), stax.Dense(1)),
    "standard": stax.serial(stax.Dense(48, W_std=1.4, b_std=0.1, parameterization="standard"),
                            stax.Relu(),
                            stax.Dense(20, W_std=1.2, b_std=0.2, parameterization="standard", s=(2, 3)),
                            stax.Erf(),
                            stax.Dense(1, W_std=1.0, parameterization="standard")),
    "exp_gaussian_rbf": stax.serial(stax.Dense(32, W_std=1.2, b_std=0.1), stax.Exp(0.8, 0.5),
                                    stax.Dense(16, W_std=0.5, b_std=0.1), stax.Gaussian(1.1, -0.7),
                                    stax.Dense(8, W_std=1.3, b_std=0.2), stax.Rbf(0.6),
                                    stax.Dense(4, W_std=0.9), stax.Relu(), stax.Dense(1)),
    "layernorm_mlp": stax.serial(stax.Dense(32, W_std=1.4, b_std=0.1), stax.LayerNorm(), stax.Relu(),
                                 stax.Dense(16, W_std=1.2, b_std=0.2), stax.LayerNorm(axis=1, eps=0.3),
                                 stax.Erf(), stax.Dense(1)),
    "nested_serial": stax.serial(stax.serial(stax.Dense(4, W_std=2.0), stax.ABRelu(-0.4, 1.3)),
                                 stax.serial(stax.Dense(1, W_std=0.7, b_std=0.1))),
}


def _x(n, d, seed):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)) * rng.uniform(0.3, 2.0, (n, 1))


def _close(a, b, rel=1e-12):
    # 1e-12 relative to the largest entry: both paths are float64; they differ by the
    # polynomial arccos (4.4e-16 abs) vs arctan2, by GEMM blocking (x@x.T via syrk vs per
    # block) and by the order of a few flops per layer. Random rows are far from parallel,
    # where the angle's sensitivity to rounding would grow like 1/sin θ.
    np.testing.assert_allclose(a, b, rtol=0, atol=rel * np.abs(b).max())


@pytest.mark.parametrize("name", sorted(ARCHS))
@pytest.mark.parametrize("n", [1, 7, 300, 513])
def test_fused_matches_generic_symmetric(name, n):
    layer = ARCHS[name]
    assert compile_program(layer.flat(), 6) is not None  # the fused path really applies
    x = _x(n, 6, n)
    f = layer.kernel_fn(x, None, path="fused")
    g = layer.kernel_fn(x, None, path="generic")
    _close(f.nngp, g.nngp)
    _close(f.ntk, g.ntk)
    np.testing.assert_array_equal(f.ntk, f.ntk.T)  # the symmetric kernel mirrors exactly
    np.testing.assert_array_equal(np.diag(f.ntk), np.diag(g.ntk))  # both set the exact diagonal


@pytest.mark.parametrize("name", sorted(ARCHS))
@pytest.mark.parametrize("n1,n2", [(1, 1), (7, 300), (513, 1), (300, 257)])
def test_fused_matches_generic_cross(name, n1, n2):
    layer = ARCHS[name]
    x1, x2 = _x(n1, 6, n1), _x(n2, 6, n2 + 1000)
    f = layer.kernel_fn(x1, x2, path="fused")
    g = layer.kernel_fn(x1, x2, path="generic")
    _close(f.nngp, g.nngp)
    _close(f.ntk, g.ntk)


def test_auto_path_picks_fused_for_chains_only():
    # auto == fused bit for bit on a chain; a residual block cannot be fused and must refuse
    x = _x(40, 5, 0)
    chain = ARCHS["relu3_bias"]
    np.testing.assert_array_equal(chain.kernel_fn(x, None, "ntk"), chain.kernel_fn(x, None, "ntk", path="fused"))
    res = stax.serial(stax.FanOut(2), stax.parallel(stax.serial(stax.Dense(8), stax.Relu()), stax.Identity()),
                      stax.FanInSum())
    with pytest.raises(ValueError, match="fused path needs a chain"):
        res.kernel_fn(x, None, path="fused")
    for gelu in (stax.Gelu(), stax.Sin()):  # no fused kernel for these activations
        with pytest.raises(ValueError, match="fused path needs a chain"):
            stax.serial(stax.Dense(3), gelu).kernel_fn(x, None, path="fused")


def test_fused_tile_with_float32_output_reuses_nothing_wrongly():
    # kernel_tile may write the NNGP into the GEMM buffer; a float32 output must not alias
    # the float64 GEMM and must equal the float64 result rounded (1 ulp of float32).
    layer = ARCHS["relu3_bias"]
    x1, x2 = _x(130, 6, 1), _x(90, 6, 2)
    s1, s2 = diag_stats(layer, x1), diag_stats(layer, x2)
    t64 = kernel_tile(layer, x1, x2, s1, s2)
    t32 = kernel_tile(layer, x1, x2, s1, s2, out_dtype=np.float32)
    for kind in ("nngp", "ntk"):
        assert t32[kind].dtype == np.float32
        np.testing.assert_allclose(t32[kind], t64[kind], rtol=2 ** -23, atol=1e-30)


# ----------------------------------------------------------------------------------------
# The polynomial arccos
# ----------------------------------------------------------------------------------------
def test_acos_poly_accuracy_on_dense_grid():
    # np.arccos is correctly rounded to ~0.5 ulp (≤ 1.1e-16 near 0, ≤ 2.2e-16 near π); the fused
    # arccos claims 4.4e-16 absolute. Bound: 1e-15 (≈ 4.5 ulp of π/2 ... π). A bad coefficient
    # or a wrong branch at |x| = 1/2 gives errors of 1e-12 or more.
    x = np.linspace(-1.0, 1.0, 2_000_001)
    x = np.concatenate([x, np.nextafter(0.5, [0, 1]), np.nextafter(-0.5, [0, -1]), [0.5, -0.5],
                        1 - np.logspace(-16, -1, 1000), -1 + np.logspace(-16, -1, 1000),
                        np.logspace(-300, -1, 1000), -np.logspace(-300, -1, 1000)])
    err = np.abs(acos_poly(x) - np.arccos(x))
    assert err.max() < 1e-15, (err.max(), x[np.argmax(err)])
    assert acos_poly(np.array([1.0]))[0] == 0.0
    assert acos_poly(np.array([-1.0]))[0] == pytest.approx(math.pi, abs=4.5e-16)
    assert acos_poly(np.array([0.0]))[0] == pytest.approx(math.pi / 2, abs=2.3e-16)


def test_acos_poly_against_high_precision():
    # Independent of libm: 50-digit mpmath on random points. Same 1e-15 bound.
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 50
    x = np.random.default_rng(0).uniform(-1, 1, 2000)
    exact = np.array([float(mpmath.acos(mpmath.mpf(float(v)))) for v in x])
    assert np.abs(acos_poly(x) - exact).max() < 1e-15


def test_acos_poly_shape_and_symmetry():
    x = np.random.default_rng(1).uniform(-1, 1, (3, 4, 5))
    y = acos_poly(x)
    assert y.shape == x.shape
    # arccos(-x) = π - arccos(x): to rounding of the subtraction
    np.testing.assert_allclose(acos_poly(-x), math.pi - y, rtol=0, atol=1e-15)


@pytest.mark.parametrize("n,d,dtype", [(0, 4, np.float64), (1, 3, np.float64), (5, 1, np.float32),
                                       (300, 7, np.float32), (513, 40, np.float64)])
def test_gram_upper_is_the_upper_triangle_of_x_xT(n, d, dtype):
    from ntkscale.kernels.fused import gram_upper

    x = _x(n, 2 * d, n)[:, ::2].astype(dtype)  # also a non-contiguous view
    G = gram_upper(x)
    assert G.shape == (n, n) and G.dtype == dtype and G.flags.c_contiguous
    rtol = 1e-5 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(np.triu(G), np.triu(x @ x.T), rtol=rtol, atol=rtol * max(1.0, np.abs(G).max(initial=0)))
    assert not np.tril(G, -1).any()  # what the symmetric chain never reads


def test_gram_upper_above_the_threaded_syrk_limit_is_the_full_product(monkeypatch):
    """OpenBLAS's threaded syrk crashes at large orders (ntkscale._blas.SYRK_THREADED_MAX):
    above the limit the product is NumPy's full x @ x.T (both triangles), and the kernel is
    unchanged."""
    import ntkscale._blas as blas
    from ntkscale.kernels.fused import gram_upper

    x = _x(40, 6, 3)
    small = ARCHS["relu3_bias"].kernel_fn(x, None, "ntk")
    monkeypatch.setattr(blas, "SYRK_THREADED_MAX", 10)
    G = gram_upper(x)
    np.testing.assert_array_equal(G, x @ x.T)
    np.testing.assert_allclose(ARCHS["relu3_bias"].kernel_fn(x, None, "ntk"), small, rtol=1e-13, atol=0)


@pytest.mark.parametrize("small", [0, 10**18])
def test_gram_upper_threaded_and_single_thread_branches_agree(monkeypatch, small):
    """Below fused.SYRK_SMALL the product runs on one BLAS thread (no spinning OpenBLAS threads
    left to compete with the numba chain); both branches give the same upper triangle."""
    from ntkscale.kernels import fused

    x = _x(300, 20, 5)
    monkeypatch.setattr(fused, "SYRK_SMALL", small)
    np.testing.assert_allclose(np.triu(fused.gram_upper(x)), np.triu(x @ x.T), rtol=1e-13, atol=1e-12)
