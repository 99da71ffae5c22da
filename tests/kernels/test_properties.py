"""Structural properties: symmetry, PSD, diagonals, tiles assembling to the whole Gram,
float32 vs float64, and JSON spec round trips."""

import json
import math

import numpy as np
import pytest

from ntkscale import stax
from ntkscale.kernels import diag_stats, from_spec, kernel_tile, spec_json, spec_of
from ntkscale.testing import reference_diag

SQ2 = math.sqrt(2.0)


def _residual(width=16):
    block = stax.serial(stax.Dense(width, W_std=SQ2, b_std=0.1), stax.Relu(), stax.Dense(width))
    return stax.serial(stax.FanOut(2), stax.parallel(block, stax.Identity()), stax.FanInSum())


ARCHS = {
    "relu3": stax.serial(*[l for _ in range(3) for l in (stax.Dense(64, W_std=SQ2, b_std=0.1), stax.Relu())],
                         stax.Dense(1)),
    "erf_abc": stax.serial(stax.Dense(3, W_std=1.3, b_std=0.2), stax.Erf(1.7, 0.6, -0.3), stax.Dense(3),
                           stax.Erf(), stax.Dense(1)),
    "abs_leaky": stax.serial(stax.Dense(8, W_std=1.5), stax.Abs(), stax.Dense(8, b_std=0.3),
                             stax.LeakyRelu(0.1), stax.Dense(1)),
    "gelu_sin_cos": stax.serial(stax.Dense(8, W_std=1.2, b_std=0.1), stax.Gelu(), stax.Dense(8),
                                stax.Sin(1.3, 0.7, 0.4), stax.Dense(8), stax.Cos(), stax.Dense(1)),
    # Sign then a smooth activation: a kink after a kink turns GEMM rounding on a cross pair's
    # diagonal (c = 1 - eps) into eps^(1/4) ~ 1e-4 (arccos twice), past the 1e-7 check below.
    "sign": stax.serial(stax.Dense(8, W_std=1.5, b_std=0.2), stax.Sign(), stax.Dense(8, b_std=0.1),
                        stax.Erf(), stax.Dense(1)),
    "residual": _residual(),
    "deep_residual": stax.serial(stax.Dense(16, W_std=1.1), _residual(), stax.Relu(), stax.Dense(16),
                                 _residual(),
                                 stax.Erf(), stax.Dense(1, b_std=0.2)),
    "standard": stax.serial(stax.Dense(40, W_std=1.4, b_std=0.1, parameterization="standard"), stax.Relu(),
                            stax.Dense(30, W_std=1.2, parameterization="standard", s=(2, 3)), stax.Erf(),
                            stax.Dense(1, parameterization="standard")),
}


def _x(n=60, d=9, seed=0):
    """Random rows at varied scales, plus a repeated row, a near-duplicate and a zero row:
    the cases where rounding could break symmetry or definiteness."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)) * rng.uniform(0.2, 3.0, (n, 1))
    x[1] = x[0]
    x[2] = x[0] + 1e-9
    x[3] = 0.0
    return x


@pytest.mark.parametrize("path", ["auto", "generic"])
@pytest.mark.parametrize("name", sorted(ARCHS))
def test_symmetric_and_psd(name, path):
    k = ARCHS[name].kernel_fn(_x(), None, ("nngp", "ntk"), path=path)
    for kind, K in zip(k._fields, k):
        # x2 = None: the recursion is symmetric in (i, j) op for op (products and sums of
        # v_i, v_j commute; x @ x.T is computed symmetric), so symmetry is exact.
        np.testing.assert_array_equal(K, K.T, err_msg=kind)
        # PSD up to rounding: the smallest eigenvalue of an n = 60 Gram computed in float64
        # is at worst ~n·eps·max; the bound -1e-10·max leaves room but catches any true
        # indefiniteness (a wrong sign or factor in a transform breaks PSD by O(1e-2)).
        w = np.linalg.eigvalsh(K)
        assert w.min() >= -1e-10 * w.max(), (kind, w.min(), w.max())


@pytest.mark.parametrize("name", sorted(ARCHS))
def test_cross_kernel_is_transpose(name):
    # K(x1, x2) = K(x2, x1)^T: the roles of the row blocks are interchangeable. 1e-12 relative
    # (a GEMM and its transpose may round differently).
    x = _x()
    a, b = x[:25], x[25:]
    k12 = ARCHS[name].kernel_fn(a, b)
    k21 = ARCHS[name].kernel_fn(b, a)
    for f in ("nngp", "ntk"):
        K = getattr(k12, f)
        np.testing.assert_allclose(K, getattr(k21, f).T, rtol=0, atol=1e-12 * np.abs(K).max())


@pytest.mark.parametrize("name", sorted(ARCHS))
def test_diagonal_equals_diag_stats(name):
    layer = ARCHS[name]
    x = _x()
    k = layer.kernel_fn(x, None)
    s = diag_stats(layer, x)
    np.testing.assert_array_equal(np.diag(k.nngp), s.nngp)
    np.testing.assert_array_equal(np.diag(k.ntk), s.ntk)
    np.testing.assert_allclose(s.cov0, np.sum(x * x, axis=1) / x.shape[1], rtol=1e-15)
    # The O(n) diagonal pass against the matrix recursion on a cross pair (x, copy of x). The
    # diagonal of a cross tile has c = 1 only up to GEMM rounding, which kinked activations turn
    # into ~√eps ≈ 1e-8 relative (θ = arccos(1 − δ) ≈ √(2δ)), so 1e-7 relative here.
    kc = layer.kernel_fn(x, x.copy())
    for f in ("nngp", "ntk"):
        want = getattr(s, f)
        np.testing.assert_allclose(np.diag(getattr(kc, f)), want, rtol=0, atol=1e-7 * np.abs(want).max())


def test_diag_stats_matches_reference_diagonal():
    # For a chain, the independent reference (row by row, exact angle 0) agrees to 1e-14 relative.
    spec = [("dense", SQ2, 0.1), ("relu",), ("dense", 1.3, 0.2), ("erf", 1.7, 0.6, -0.3),
            ("dense", 1.5, None), ("leaky_relu", 0.1), ("dense", 1.0, 0.05)]
    layer = stax.serial(stax.Dense(5, W_std=SQ2, b_std=0.1), stax.Relu(), stax.Dense(5, W_std=1.3, b_std=0.2),
                        stax.Erf(1.7, 0.6, -0.3), stax.Dense(5, W_std=1.5), stax.LeakyRelu(0.1),
                        stax.Dense(1, b_std=0.05))
    x = _x()
    s = diag_stats(layer, x)
    q, t = reference_diag(spec, x)
    np.testing.assert_allclose(s.nngp, q, rtol=1e-14)
    np.testing.assert_allclose(s.ntk, t, rtol=1e-14)


@pytest.mark.parametrize("out_dtype", [None, np.float32])
@pytest.mark.parametrize("name", ["relu3", "erf_abc", "deep_residual", "standard"])
def test_tiles_assemble_to_kernel_fn(name, out_dtype):
    # The tiling layer's contract: diag_stats per row block, kernel_tile per tile (upper triangle,
    # mirrored) reproduces kernel_fn on the whole. Row blocks of uneven sizes (1, 99, 157, 43).
    layer = ARCHS[name]
    x = _x(300)
    edges = [0, 1, 100, 257, 300]
    blocks = [x[a:b] for a, b in zip(edges[:-1], edges[1:])]
    stats = [diag_stats(layer, b) for b in blocks]
    whole = layer.kernel_fn(x, None)
    for kind in ("nngp", "ntk"):
        K = np.full((300, 300), np.nan)
        for i in range(len(blocks)):
            for j in range(i, len(blocks)):
                xj = None if i == j else blocks[j]
                tile = kernel_tile(layer, blocks[i], xj, stats[i], stats[j], (kind,),
                                   out_dtype=out_dtype)[kind]
                assert tile.shape == (len(blocks[i]), len(blocks[j]))
                assert tile.dtype == (np.float64 if out_dtype is None else out_dtype)
                K[edges[i]:edges[i + 1], edges[j]:edges[j + 1]] = tile
                K[edges[j]:edges[j + 1], edges[i]:edges[i + 1]] = tile.T
        want = getattr(whole, kind)
        # float64: 1e-12 relative (only GEMM blocking differs) — except the duplicate rows 0, 1, 2
        # which land in different blocks: pairs of (nearly) equal rows carry the √eps angle
        # sensitivity of arccos at 1, so they get 1e-7. float32 output: rounding, 2^-23 relative.
        tol = 1e-12 if out_dtype is None else 2.0 ** -23
        scale = np.abs(want).max()
        np.testing.assert_allclose(K[3:, 3:], want[3:, 3:], rtol=0, atol=tol * scale)
        np.testing.assert_allclose(K, want, rtol=0, atol=max(tol, 1e-7) * scale)


CHAINS = ("relu3", "erf_abc", "abs_leaky", "standard")  # the fused path applies to these


@pytest.mark.parametrize("name,path", [(n, "generic") for n in sorted(ARCHS)] + [(n, "auto") for n in CHAINS])
def test_float32_close_to_float64(name, path):
    # dtype=np.float32 computes in single precision. Measured max error ~2e-7 relative to the
    # largest entry (depth ≤ 6, d = 50); bound 1e-5 ≈ 80 float32 ulps covers the input GEMM
    # (d·eps32/√d growth) and a few roundings per layer. Rows are well separated (no duplicates):
    # near-parallel pairs would amplify float32 rounding to ~√eps32 ≈ 3e-4 through arccos.
    x = np.random.default_rng(5).standard_normal((200, 50))
    layer = ARCHS[name]
    k64 = layer.kernel_fn(x, None, path=path)
    k32 = layer.kernel_fn(x, None, dtype=np.float32, path=path)
    k32x = layer.kernel_fn(x[:70], x[70:], dtype=np.float32, path=path)
    for f in ("nngp", "ntk"):
        a, b = getattr(k32, f), getattr(k64, f)
        assert a.dtype == np.float32 and b.dtype == np.float64
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * np.abs(b).max())
        c = getattr(k32x, f)
        assert c.dtype == np.float32
        np.testing.assert_allclose(c, b[:70, 70:], rtol=0, atol=1e-5 * np.abs(b).max())
    # float32 input with the default dtype is computed in float64 (not silently in float32)
    k = layer.kernel_fn(x.astype(np.float32), None, "ntk")
    assert k.dtype == np.float64


@pytest.mark.parametrize("name", sorted(ARCHS))
def test_spec_round_trip(name):
    layer = ARCHS[name]
    spec = spec_of(layer)
    back = from_spec(json.loads(json.dumps(spec)))  # through actual JSON text
    assert back == layer
    assert spec_json(back) == spec_json(layer)
    x = _x(20)
    for a, b in zip(back.kernel_fn(x, None), layer.kernel_fn(x, None)):
        np.testing.assert_array_equal(a, b)


def test_spec_json_is_canonical_and_distinguishes_architectures():
    a = stax.serial(stax.Dense(8, W_std=1.5, b_std=0.1), stax.Relu(), stax.Dense(1))
    b = stax.serial(stax.Dense(8, W_std=1.5, b_std=0.1), stax.Relu(), stax.Dense(1))
    assert spec_json(a) == spec_json(b)
    json.loads(spec_json(a))
    others = [stax.serial(stax.Dense(8, W_std=1.5, b_std=0.2), stax.Relu(), stax.Dense(1)),
              stax.serial(stax.Dense(8, W_std=1.5, b_std=0.1), stax.LeakyRelu(0.0), stax.Dense(1)),
              stax.serial(stax.Dense(8, W_std=1.5, b_std=0.1, parameterization="standard"), stax.Relu(),
                          stax.Dense(1)),
              stax.serial(stax.Dense(8, W_std=1.5), stax.Relu(), stax.Dense(1))]
    # LeakyRelu(0) is ABRelu(0, 1) = Relu: same function, same spec; the others all differ
    assert spec_json(others[1]) == spec_json(a)
    texts = [spec_json(a)] + [spec_json(o) for o in (others[0], others[2], others[3])]
    assert len(set(texts)) == 4
