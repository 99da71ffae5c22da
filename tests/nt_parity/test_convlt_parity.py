"""neural-tangents 0.6.5 parity of ``ConvLocal`` and ``ConvTranspose``, on the committed fixtures
``nt065_convlt.npz`` (``generate_more.py convlt``; no NT needed here).

Values: every case of :mod:`cases_convlt` (2-d images and 1-d sequences; VALID, SAME and
CIRCULAR; strides; ``b_std`` None or not; both parameterizations; Flatten and GlobalAvgPool
readouts; mixed with ``Conv`` and ``AvgPool``), NNGP and NTK symmetric (``x2=None``) and cross,
and the ``get=None`` Kernel's ``cov1``/``cov2``/``is_gaussian``, equal NT's to 1e-12 relative
(:func:`_fixtures.assert_kernel_close`); the same through flattened rows with a leading
``Unflatten``, the tiled ``build_gram`` and ``jax.jit``. Plus: specs round-trip, arguments and
refusals as NT's, the finite network against direct NumPy sums, and wide finite networks
sample the NNGP (Monte Carlo).
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from ntkscale import stax
from ntkscale.kernels import UnsupportedArchitectureError, from_spec, spec_json

from ._fixtures import assert_kernel_close, check_case, load
from .cases_convlt import CASES, inputs

#: case -> tolerance on the diagonal of the symmetric NTK only (as ``test_seq1d_parity.DIAG_RTOL``):
#: after a bias-free ReLU NT's angle is arccos(c) with c a few ulps below 1 for a position with
#: itself, where arccos turns them into theta ~ 2e-8 and NT's diagonal NTK is ~1e-9 (relative)
#: off the exact value; ntkscale sets theta = 0 there (arctan2 form). Off-diagonal and cross
#: entries, and every NNGP, still get 1e-12. Measured: NT's diagonal off by 4e-12 to 3e-9 in
#: these cases (all with a ReLU seen on the same-position layout, Flatten readouts); < 3e-15
#: in every other case, and every other entry < 1e-14 (max 7.9e-15).
DIAG_RTOL = {name: 1e-8 for name in (
    "local_valid_relu", "local_same_bias", "local_stride2_valid", "local_stride2_same", "local_standard",
    "dense_then_local", "transpose_default", "transpose_valid_relu", "transpose_same_bias",
    "transpose_stride2_valid", "transpose_stride2_same", "transpose_stride2_small_filter",
    "transpose_stride2_circular", "transpose_wide_valid", "transpose_standard", "dense_then_transpose",
    "transpose_then_local_flat", "seq_local_same", "seq_local_circular_stride2")}

@pytest.fixture(scope="module")
def nt():
    return load("nt065_convlt.npz")[0]


def _check(nt, name, kernel_fn, x1, x2, fields=("nngp", "ntk", "cov1", "cov2")):
    check_case(nt, name, kernel_fn, x1, x2, DIAG_RTOL, fields)


def test_fixture_covers_every_case(nt):
    assert {k.split("/")[0] for k in nt} == set(CASES)
    assert not [k for k in nt if k.endswith("/error")]


@pytest.mark.parametrize("name", sorted(CASES))
def test_values_equal_neural_tangents(nt, name):
    build, kind = CASES[name]
    _check(nt, name, build(stax)[2], *inputs(kind))


@pytest.mark.parametrize("name", ["local_same_bias_gap", "transpose_stride2_valid", "seq_transpose_circular_gap",
                                  "conv_stride_transpose_gap"])
def test_rows_through_unflatten_equal_images(nt, name):
    """Flattened rows with a leading ``Unflatten`` (how stores and job files read images and
    sequences) give NT's kernel."""
    build, kind = CASES[name]
    x1, x2 = inputs(kind)
    shape = x1.shape[1:] if x1.ndim == 4 else (1, *x1.shape[1:])
    kernel_fn = stax.serial(stax.Unflatten(*shape), build(stax))[2]
    _check(nt, name, kernel_fn, x1.reshape(len(x1), -1), x2.reshape(len(x2), -1), ("nngp", "ntk"))


@pytest.mark.parametrize("name", ["local_circular_erf", "transpose_same_gap"])
def test_tiled_gram_equals_kernel(nt, name):
    """``build_gram``/``build_cross_gram`` (edge tiles included) equal NT."""
    from ntkscale.operator import StoredGram
    from ntkscale.tiling import build_cross_gram, build_gram

    build, kind = CASES[name]
    x1, x2 = inputs(kind)
    arch = stax.serial(stax.Unflatten(*x1.shape[1:]), build(stax))
    r1, r2 = x1.reshape(len(x1), -1), x2.reshape(len(x2), -1)
    url = f"memory://convlt-{name}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        build_gram(arch, r1, url, get=("nngp", "ntk"), tile=2, dtype=np.float64, client="sync", overwrite=True)
        build_cross_gram(arch, r1, r2, url + "-x", get="ntk", tile=2, dtype=np.float64, client="sync",
                         overwrite=True)
    for kind_ in ("nngp", "ntk"):
        assert_kernel_close(StoredGram(url, kind_).to_numpy(), nt[f"{name}/{kind_}/sym"], f"{name} tiled {kind_}")
    assert_kernel_close(StoredGram(url + "-x", "ntk").to_numpy(), nt[f"{name}/ntk/cross"], f"{name} cross")


@pytest.mark.parametrize("name", ["local_stride2_circular", "seq_transpose_circular_gap"])
def test_jax_jit_equals_neural_tangents(nt, name):
    """JAX arrays through ``jax.jit(kernel_fn, static_argnames='get')``."""
    jax = pytest.importorskip("jax")
    build, kind = CASES[name]
    with jax.enable_x64(True):
        kernel_fn = jax.jit(build(stax)[2], static_argnames="get")
        x1, x2 = (jax.numpy.asarray(x) for x in inputs(kind))
        for which, (a, b) in {"sym": (x1, None), "cross": (x1, x2)}.items():
            for get in ("nngp", "ntk"):
                assert_kernel_close(kernel_fn(a, b, get), nt[f"{name}/{get}/{which}"], f"jit {name} {get} {which}",
                                    1e-8 if which == "sym" else None)


@pytest.mark.parametrize("name", sorted(CASES))
def test_specs_round_trip(name):
    arch = CASES[name][0](stax)
    assert spec_json(from_spec(json.loads(spec_json(arch)))) == spec_json(arch)


@pytest.mark.parametrize("kind", ["ConvLocal", "ConvTranspose"])
def test_arguments_and_refusals(kind):
    layer = getattr(stax, kind)
    c = layer(4, (3, 2))
    assert (c.filter_shape, c.strides, c.padding, c.W_std, c.b_std, c.parameterization) == \
        ((3, 2), (1, 1), "VALID", 1.0, None, "ntk")
    assert layer(4, [3], strides=[2], padding=stax.Padding.CIRCULAR).spec() == \
        {"layer": kind, "out_chan": 4, "filter_shape": [3], "strides": [2], "padding": "CIRCULAR",
         "W_std": 1.0, "b_std": None, "parameterization": "ntk"}
    assert layer(4, (3,), dimension_numbers=("NWC", "WIO", "NWC"), s=(1, 1)).spec() == layer(4, (3,)).spec()
    with pytest.raises(UnsupportedArchitectureError, match="transpose your inputs to NHWC"):
        layer(4, (3, 3), dimension_numbers=("NCHW", "OIHW", "NCHW"))
    with pytest.raises(UnsupportedArchitectureError, match=rf"s=\(2, 1\) is not supported by ntkscale for {kind}"):
        layer(4, (3, 3), s=(2, 1))
    for bad, match in [(lambda: layer(4, (3, 3), strides=(1,)), "strides must be 2 positive ints"),
                       (lambda: layer(0, (3, 3)), "out_chan must be a positive int"),
                       (lambda: layer(4, (3, 3), padding="FULL"), "padding must be one of"),
                       (lambda: layer(4, (3, 3), parameterization="mup"), "parameterization")]:
        with pytest.raises(ValueError, match=match):
            bad()
    images = np.random.default_rng(0).standard_normal((2, 3, 4, 2))
    with pytest.raises(UnsupportedArchitectureError, match="1-d window acts on sequences"):
        stax.serial(layer(4, (2,)), stax.GlobalAvgPool(), stax.Dense(1))[2](images)
    with pytest.raises(UnsupportedArchitectureError, match="2-d window .* sequences"):
        stax.serial(layer(4, (1, 2)), stax.Flatten(), stax.Dense(1))[2](images[:, 0])
    with pytest.raises(UnsupportedArchitectureError, match="after Flatten"):
        stax.serial(stax.Flatten(), layer(4, (2, 2)), stax.Flatten())[2](images)
    with pytest.raises(UnsupportedArchitectureError, match="ends with images"):
        stax.serial(layer(4, (2, 2)), stax.Relu())[2](images)


def test_local_kernel_keeps_only_same_positions():
    """Independent check of ``ConvLocal``'s rule (not NT): on one image, the pixel-pair
    covariance after the layer is zero between distinct positions, its diagonal is ``Conv``'s
    (``W_std^2`` window mean + ``b_std^2``), so a GlobalAvgPool readout is ``1/P`` of Flatten's."""
    x = np.random.default_rng(1).standard_normal((3, 5, 4, 2))
    kw = dict(padding="SAME", W_std=1.3, b_std=0.4)
    flat = stax.serial(stax.ConvLocal(4, (3, 3), **kw), stax.Flatten())[2](x, None, "nngp")
    gap = stax.serial(stax.ConvLocal(4, (3, 3), **kw), stax.GlobalAvgPool())[2](x, None, "nngp")
    conv = stax.serial(stax.Conv(4, (3, 3), **kw), stax.Flatten())[2](x, None, "nngp")
    np.testing.assert_allclose(flat, conv, rtol=1e-13)
    np.testing.assert_allclose(gap, flat / 20, rtol=1e-13)


def _np_transpose(x, W, s, padding):
    """NumPy reference of a 1-d transposed convolution by its definition: input ``i`` adds
    ``W[k] x[i]`` to output ``s i + k - lo``; ``CIRCULAR`` folds the VALID output onto ``T s``."""
    t, f = x.shape[1], W.shape[0]
    from ntkscale.kernels.spatial import transpose_out_size, transpose_pads

    lo = transpose_pads(f, s, "VALID" if padding == "CIRCULAR" else padding)[0] - (f - 1)
    size = transpose_out_size(t, f, s, "VALID" if padding == "CIRCULAR" else padding)
    out = np.zeros((x.shape[0], size, W.shape[-1]))
    for i in range(t):
        for k in range(f):
            o = s * i + (f - 1 - k) + lo  # lax.conv_transpose correlates: W[k] at offset f - 1 - k
            if 0 <= o < size:
                out[:, o] += x[:, i] @ W[k]
    if padding == "CIRCULAR":  # output a lands on (a - (size - T s) // 2) mod T s
        folded = np.zeros((x.shape[0], t * s, W.shape[-1]))
        for a in range(size):
            folded[:, (a - (size - t * s) // 2) % (t * s)] += out[:, a]
        out = folded
    return out


@pytest.mark.parametrize("padding", ["VALID", "SAME", "CIRCULAR"])
def test_finite_network_one_d(padding):
    """init/apply on (n, T, C): NT's parameter shapes; values equal NumPy sums; the same on
    (n, 1, T, C) rows through ``Unflatten(1, T, C)``."""
    jax = pytest.importorskip("jax")
    x = np.random.default_rng(3).standard_normal((2, 7, 3))
    with jax.enable_x64(True):
        tr = stax.ConvTranspose(5, (3,), strides=(2,), padding=padding, W_std=1.3, b_std=0.2)
        shape, (W, b) = tr[0](jax.random.PRNGKey(0), x.shape)
        out = np.asarray(tr[1]((W, b), x))
        assert W.shape == (3, 3, 5) and b.shape == (1, 1, 5) and out.shape == shape
        assert shape == (2, 15 if padding == "VALID" else 14, 5)
        ref = _np_transpose(x, np.asarray(W), 2, padding)
        np.testing.assert_allclose(out, 1.3 / 3 * ref + 0.2 * np.asarray(b), rtol=1e-12, atol=1e-12)

        loc = stax.ConvLocal(5, (3,), strides=(2,), padding=padding, W_std=1.3, b_std=0.2)
        shape, (W, b) = loc[0](jax.random.PRNGKey(1), x.shape)
        t_out = 3 if padding == "VALID" else 4
        assert W.shape == (t_out, 9, 5) and b.shape == (1, t_out, 5) and shape == (2, t_out, 5)
        out_l = np.asarray(loc[1]((W, b), x))
        lo = 0 if padding == "VALID" else (max((t_out - 1) * 2 + 3 - 7, 0)) // 2
        xp = np.pad(x, [(0, 0), (lo, 9), (0, 0)], mode="wrap" if padding == "CIRCULAR" else "constant")
        # patches are channel-major (c, k), as lax.conv_general_dilated_patches orders them
        ref = np.stack([np.einsum("nkc,cko->no", xp[:, 2 * p:2 * p + 3], np.asarray(W)[p].reshape(3, 3, 5))
                        for p in range(t_out)], axis=1)
        np.testing.assert_allclose(out_l, 1.3 / 3 * ref + 0.2 * np.asarray(b), rtol=1e-12, atol=1e-12)

        for layer, want in [(tr, out), (loc, out_l)]:
            rows = stax.serial(stax.Unflatten(1, 7, 3), layer)
            params = layer[0](jax.random.PRNGKey(0 if layer is tr else 1), x.shape)[1]
            got = np.asarray(rows[1](((), params), x.reshape(2, -1)))
            np.testing.assert_allclose(got[:, 0], want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind, param", [("ConvLocal", "ntk"), ("ConvTranspose", "standard")])
def test_finite_network_covariance_is_the_nngp(kind, param):
    """Wide finite networks sample the NNGP: a strided layer of ``kind`` (CIRCULAR for
    ConvTranspose, SAME for ConvLocal), ReLU, AvgPool, Conv, ReLU, GlobalAvgPool (the
    pixel-pair layout), Dense readout, on 3 images 4 x 3. The empirical NNGP of one network is
    the exact expectation over its readout given the pooled features ``f`` (n, width):
    ``W_std^2 f f^T / width + b_std^2``; averaged over 4 networks of width 512 it is within 5 %
    of the largest analytic entry (fluctuation ~ 1.5 / sqrt(4 * 512) = 3 %; measured with these
    keys: 3.1 % ConvLocal, 3.3 % ConvTranspose; other keys 1-3 %). ~10 s each on 2 busy cores."""
    jax = pytest.importorskip("jax")
    from ntkscale.kernels.layers import Serial

    x = np.random.default_rng(0).standard_normal((3, 4, 3, 2))
    padding = "CIRCULAR" if kind == "ConvTranspose" else "SAME"
    width, nets = 512, 4
    arch = stax.serial(
        getattr(stax, kind)(width, (3, 2), strides=(2, 1), padding=padding, W_std=1.3, b_std=0.2,
                            parameterization=param),
        stax.Relu(), stax.AvgPool((2, 2), padding="SAME"),
        stax.Conv(width, (2, 2), padding="SAME", W_std=1.1, parameterization=param), stax.Relu(),
        stax.GlobalAvgPool(), stax.Dense(1, W_std=0.9, b_std=0.1, parameterization=param))
    feats = Serial(arch.layers[:-1])
    with jax.enable_x64(True):
        apply = jax.jit(lambda key: feats.apply_fn(feats.init_fn(key, x.shape)[1], x))
        emp = np.mean([0.9 ** 2 * (f @ f.T) / width + 0.1 ** 2 for f in
                       (np.asarray(apply(k)) for k in jax.random.split(jax.random.PRNGKey(1), nets))], axis=0)
    ref = arch[2](x, None, "nngp")
    assert np.abs(emp - ref).max() < 0.05 * np.abs(ref).max()


def test_image_chunks_are_sized_for_the_largest_feature_map():
    """A strided ConvTranspose grows the feature maps (here 8x8 -> 16x16): the pairs an image
    chunk holds shrink by (16*16 / 8*8)^2 = 16 with a pooled readout (all pixel pairs), so a tile
    task stays within its working memory."""
    from ntkscale.kernels.images import image_chunk, largest_plane

    up = stax.serial(stax.Unflatten(8, 8, 3), stax.ConvTranspose(4, (3, 3), strides=(2, 2), padding="SAME"),
                     stax.Relu(), stax.GlobalAvgPool(), stax.Dense(1))
    same = stax.serial(stax.Unflatten(8, 8, 3), stax.Conv(4, (3, 3), padding="SAME"), stax.Relu(),
                       stax.GlobalAvgPool(), stax.Dense(1))
    assert largest_plane(up) == (16, 16) and largest_plane(same) == (8, 8)
    assert image_chunk(same) // image_chunk(up) in (15, 16, 17)
    seq = stax.serial(stax.Unflatten(1, 10, 2), stax.ConvTranspose(4, (3,), strides=(3,)), stax.Relu(),
                      stax.Flatten(), stax.Dense(1))
    assert largest_plane(seq) == (1, 30)
