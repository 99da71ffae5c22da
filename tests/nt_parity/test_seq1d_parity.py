"""neural-tangents 0.6.5 parity of 1-d convolutions and pooling on sequences ``(n, T, C)``
(issue 22), on the committed fixtures ``nt065_seq1d.npz`` (``generate_more.py seq1d``; no NT needed).

Values: every case of :mod:`cases_seq1d`, NNGP and NTK symmetric (``x2=None``) and cross, and
the ``get=None`` Kernel's ``cov1``/``cov2``/``is_gaussian``, equal NT's to 1e-12 relative (to
the largest entry, :func:`_fixtures.assert_kernel_close`), on the array recursion and on the
fused numba chains; the same through flattened rows with ``Unflatten(1, T, C)`` and through the
tiled ``build_gram``. Plus: 1-d windows on images refuse, specs round-trip, and the finite
network's 1-d layers equal direct NumPy convolutions and pools, and wide ones sample the NNGP.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from ntkscale import stax
from ntkscale.kernels import UnsupportedArchitectureError, from_spec, spec_json

from ._fixtures import assert_kernel_close, check_case, load
from .cases_seq1d import CASES, inputs


#: case -> tolerance on the diagonal of the symmetric NTK only (as ``test_nt_parity.DIAG_RTOL``):
#: NT computes ReLU's angle as arccos(c), and for a position with itself c lands a few ulps below
#: 1, where arccos turns them into theta ~ 2e-8, so NT's diagonal is ~1e-9 (relative) off the
#: exact value (theta = 0); ntkscale's arctan2 form is exact there, and its two paths (fused numba
#: chain, array recursion) agree to 1e-14 (:func:`test_diagonal_paths_agree_where_nt_rounds`).
#: Off-diagonal and cross entries, and every NNGP, still get 1e-12.
DIAG_RTOL = {name: 1e-8 for name in ("conv1_valid", "conv3_same_bias", "conv3_standard", "conv3_valid_relu",
                                     "conv5_circular", "conv_default", "dense_then_conv")}


@pytest.fixture(scope="module")
def nt():
    return load("nt065_seq1d.npz")[0]


def _check(nt, name, kernel_fn, x1, x2, fields=("nngp", "ntk", "cov1", "cov2")):
    check_case(nt, name, kernel_fn, x1, x2, DIAG_RTOL, fields)


def test_fixture_covers_every_case(nt):
    assert {k.split("/")[0] for k in nt} == set(CASES)
    assert not [k for k in nt if k.endswith("/error")]


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "array"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_values_equal_neural_tangents(nt, name, fused, monkeypatch):
    if not fused:  # the array recursion everywhere (the fused numba chains off)
        from ntkscale.kernels import conv_fused
        monkeypatch.setattr(conv_fused, "compile_conv_program", lambda layer: None)
    build, kind = CASES[name]
    _check(nt, name, build(stax)[2], *inputs(kind))


@pytest.mark.parametrize("name", sorted(DIAG_RTOL))
def test_diagonal_paths_agree_where_nt_rounds(name, monkeypatch):
    from ntkscale.kernels import conv_fused

    build, kind = CASES[name]
    x1, _ = inputs(kind)
    fused = np.asarray(build(stax)[2](x1, None, "ntk"))
    monkeypatch.setattr(conv_fused, "compile_conv_program", lambda layer: None)
    array = np.asarray(build(stax)[2](x1, None, "ntk"))
    np.testing.assert_allclose(fused, array, rtol=1e-14, atol=1e-14 * np.abs(fused).max())


@pytest.mark.parametrize("name", ["conv3_same_bias", "avgpool2_stride2", "conv_attention_flat", "sumpool3_same_gsp"])
def test_rows_through_unflatten_equal_sequences(nt, name):
    """Flattened rows with a leading ``Unflatten(1, T, C)`` (how stores and job files read
    sequences) give NT's kernel of the (n, T, C) sequences."""
    build, kind = CASES[name]
    x1, x2 = inputs(kind)
    t, c = x1.shape[1:]
    kernel_fn = stax.serial(stax.Unflatten(1, t, c), build(stax))[2]
    _check(nt, name, kernel_fn, x1.reshape(len(x1), -1), x2.reshape(len(x2), -1), ("nngp", "ntk"))


@pytest.mark.parametrize("name", ["conv4_stride3_same", "avgpool3_stride2_same_flat", "conv_attention_gap"])
def test_tiled_gram_equals_kernel(nt, name):
    """``build_gram``/``build_cross_gram`` of sequence rows (edge tiles included) equal NT."""
    from ntkscale.operator import StoredGram
    from ntkscale.tiling import build_cross_gram, build_gram

    build, kind = CASES[name]
    x1, x2 = inputs(kind)
    t, c = x1.shape[1:]
    arch = stax.serial(stax.Unflatten(1, t, c), build(stax))
    r1, r2 = x1.reshape(len(x1), -1), x2.reshape(len(x2), -1)
    url = f"memory://seq1d-{name}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        build_gram(arch, r1, url, get=("nngp", "ntk"), tile=2, dtype=np.float64, client="sync", overwrite=True)
        build_cross_gram(arch, r1, r2, url + "-x", get="ntk", tile=2, dtype=np.float64, client="sync",
                         overwrite=True)
    for kind_ in ("nngp", "ntk"):
        assert_kernel_close(StoredGram(url, kind_).to_numpy(), nt[f"{name}/{kind_}/sym"], f"{name} tiled {kind_}")
    assert_kernel_close(StoredGram(url + "-x", "ntk").to_numpy(), nt[f"{name}/ntk/cross"], f"{name} cross")


@pytest.mark.parametrize("name", sorted(CASES))
def test_specs_round_trip(name):
    arch = CASES[name][0](stax)
    assert spec_json(from_spec(json.loads(spec_json(arch)))) == spec_json(arch)


def test_one_d_layers_and_arguments():
    c = stax.Conv(4, (3,))
    assert c.filter_shape == (3,) and c.strides == (1,) and c.padding == "VALID"
    assert stax.AvgPool((2,)).strides == (1,)  # NT: strides=None is stride 1, not the window
    assert stax.SumPool([2], strides=[2]).strides == (2,)
    assert stax.Conv(4, (3,), dimension_numbers=("NWC", "WIO", "NWC")).spec() == c.spec()
    for bad, match in [(lambda: stax.Conv(4, (3,), strides=(1, 1)), "strides must be 1 positive int"),
                       (lambda: stax.AvgPool((2, 2, 2)), "window_shape must be one positive int"),
                       (lambda: stax.Conv(4, (0,)), "filter_shape must be one positive int")]:
        with pytest.raises(ValueError, match=match):
            bad()
    with pytest.raises(UnsupportedArchitectureError, match="dimension_numbers"):
        stax.Conv(4, (3,), dimension_numbers=("NCH", "OIH", "NCH"))
    images = np.random.default_rng(0).standard_normal((2, 3, 4, 2))
    for layer in (stax.Conv(4, (2,)), stax.AvgPool((2,)), stax.SumPool((2,))):
        with pytest.raises(UnsupportedArchitectureError, match="1-d window acts on sequences"):
            stax.serial(layer, stax.GlobalAvgPool(), stax.Dense(1))[2](images)
    seqs = images[:, 0]  # (n, T, C): 2-d windows refuse, as NT; (n, 1, T, C) images take them
    for layer in (stax.Conv(4, (1, 2)), stax.AvgPool((1, 2)), stax.SumPool((2, 2), padding="SAME")):
        arch = stax.serial(layer, stax.GlobalAvgPool(), stax.Dense(1))
        with pytest.raises(UnsupportedArchitectureError, match="2-d window .* sequences"):
            arch[2](seqs)
        assert np.isfinite(arch[2](seqs[:, None], None, "nngp")).all()


def _np_window(x, f, s, padding, fn):
    """NumPy reference: ``fn`` over windows of ``f`` positions with stride ``s`` on axis 1."""
    t = x.shape[1]
    if padding == "VALID":
        lo = hi = 0
    else:
        total = max((-(-t // s) - 1) * s + f - t, 0)
        lo, hi = total // 2, total - total // 2
    mode = "wrap" if padding == "CIRCULAR" else "constant"
    p = np.pad(x, [(0, 0), (lo, hi), (0, 0)], mode=mode)
    return np.stack([fn(p[:, i:i + f]) for i in range(0, p.shape[1] - f + 1, s)], axis=1)


@pytest.mark.parametrize("padding", ["VALID", "SAME", "CIRCULAR"])
def test_finite_network_one_d(padding):
    """init/apply of 1-d layers on (n, T, C) equal NumPy windows, and on (n, 1, T, C) rows."""
    jax = pytest.importorskip("jax")
    x = np.random.default_rng(3).standard_normal((2, 7, 3))
    conv = stax.Conv(5, (3,), strides=(2,), padding=padding, W_std=1.3, b_std=0.2)
    init_fn, apply_fn, _ = conv
    with jax.enable_x64(True):
        shape, (W, b) = init_fn(jax.random.PRNGKey(0), x.shape)
        out = np.asarray(apply_fn((W, b), x))
        assert W.shape == (3, 3, 5) and out.shape == shape == (2, 3 if padding == "VALID" else 4, 5)
        ref = _np_window(x, 3, 2, padding, lambda w: np.einsum("nfc,fco->no", w, np.asarray(W)))
        np.testing.assert_allclose(out, 1.3 / 3 * ref + 0.2 * np.asarray(b), rtol=1e-12)
        rows = stax.serial(stax.Unflatten(1, 7, 3), conv)
        np.testing.assert_allclose(np.asarray(rows[1](((), (W, b)), x.reshape(2, -1)))[:, 0], out, rtol=1e-12)
        for layer, fn in [(stax.AvgPool((2,), padding=padding), lambda w: w.mean(1)),
                          (stax.SumPool((3,), (2,), padding), lambda w: w.sum(1))]:
            f, s = layer.window_shape[0], layer.strides[0]
            got = np.asarray(layer[1]((), x))
            assert got.shape == layer[0](jax.random.PRNGKey(0), x.shape)[0]
            np.testing.assert_allclose(got, _np_window(x, f, s, padding, fn), rtol=1e-12)
        np.testing.assert_allclose(np.asarray(stax.GlobalSumPool()[1]((), x)), x.sum(1), rtol=1e-12)


@pytest.mark.parametrize("param", ["ntk", "standard"])
def test_finite_network_covariance_is_the_nngp(param):
    """Output covariance of 6000 width-128 networks of 1-d layers (strided SAME conv, CIRCULAR
    pool, Flatten) vs the analytic NNGP: measured 1.0 % (Monte Carlo ~ sqrt(2/6000) = 1.8 %)."""
    jax = pytest.importorskip("jax")
    x = np.random.default_rng(0).standard_normal((3, 6, 2))
    init_fn, apply_fn, kernel_fn = stax.serial(
        stax.Conv(128, (3,), strides=(2,), padding="SAME", W_std=1.3, b_std=0.2, parameterization=param),
        stax.Relu(), stax.AvgPool((2,), padding="CIRCULAR"), stax.Flatten(),
        stax.Dense(1, W_std=0.9, b_std=0.1, parameterization=param))
    with jax.enable_x64(True):
        keys = jax.random.split(jax.random.PRNGKey(1), 6000)
        outs = np.asarray(jax.vmap(lambda k: apply_fn(init_fn(k, x.shape)[1], x))(keys))[..., 0]
    ref = kernel_fn(x, None, "nngp")
    assert np.abs(outs.T @ outs / len(keys) - ref).max() < 0.05 * np.abs(ref).max()


@pytest.mark.parametrize("name", ["conv3_stride2_circular", "sumpool2_stride2", "conv_attention_flat"])
def test_jax_jit_equals_neural_tangents(nt, name):
    """JAX arrays through ``jax.jit(kernel_fn, static_argnames='get')`` (the array recursion;
    the symmetric diagonal to 1e-8, as ``test_nt_more.test_jit_with_static_get``)."""
    jax = pytest.importorskip("jax")
    build, kind = CASES[name]
    with jax.enable_x64(True):
        kernel_fn = jax.jit(build(stax)[2], static_argnames="get")
        x1, x2 = (jax.numpy.asarray(x) for x in inputs(kind))
        for which, (a, b) in {"sym": (x1, None), "cross": (x1, x2)}.items():
            for get in ("nngp", "ntk"):
                # as test_nt_more: XLA fuses the ReLU's sqrt(v1 v2 - q^2) on the symmetric diagonal
                # (c = 1, where arctan2 turns an ulp into ~1e-10); off-diagonal and cross: 1e-12
                assert_kernel_close(kernel_fn(a, b, get), nt[f"{name}/{get}/{which}"], f"jit {name} {get} {which}",
                                    1e-8 if which == "sym" else None)
