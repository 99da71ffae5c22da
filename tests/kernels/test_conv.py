"""Convolutional and pooling kernels (issue 14): oracles, both layouts, fused == generic.

Oracles: Monte Carlo over wide finite CNNs of the same architecture (NNGP: output
covariance over initialisations; NTK: empirical Jacobian products), a 1x1 conv net on 1x1
images == the fully connected kernel, and the translation structure circular padding
implies. Tolerances are set from the Monte Carlo standard error (stated at each test).
"""

import numpy as np
import pytest

from ntkscale import stax
from ntkscale.kernels import check_input_width, cntk, diag_stats, from_spec, kernel_tile, myrtle
from ntkscale.kernels import images
from ntkscale.kernels.conv import spatial_mode
from ntkscale.kernels.layers import UnsupportedArchitectureError

jax = pytest.importorskip("jax")
jnp = jax.numpy


def _images(n, h=4, w=4, c=2, seed=0):
    return np.random.default_rng(seed).normal(size=(n, h, w, c))


def _no_pool(width=32):
    return stax.serial(stax.Conv(width, (3, 3), padding="SAME", W_std=1.5, b_std=0.1), stax.Relu(),
                       stax.Conv(width, (2, 2), padding="CIRCULAR", W_std=1.3), stax.Erf(),
                       stax.Flatten(), stax.Dense(1, W_std=1.2, b_std=0.2))


def _pool(width=32):
    return stax.serial(stax.Conv(width, (3, 3), padding="SAME", W_std=1.5, b_std=0.1), stax.Relu(),
                       stax.AvgPool((2, 2), padding="SAME"), stax.Conv(width, (2, 2)), stax.Relu(),
                       stax.GlobalAvgPool(), stax.Dense(1, W_std=1.2))


@pytest.mark.parametrize("make,mode", [(_no_pool, "diag"), (_pool, "full")])
def test_nngp_monte_carlo(make, mode):
    """Output covariance of 2000 width-32 CNNs vs the analytic NNGP. The sampling error of
    a covariance from 2000 draws is ~sqrt(2/2000) = 3.2 % per entry (less in Frobenius
    norm), the finite-width bias O(1/32); 8 % relative Frobenius error bounds both, while a
    wrong rule (e.g. a dropped window normalisation, diag layout under pooling) is off by
    30 % or more. (Measured at width 64, 4000 draws: 3.0 % and 1.3 %.)"""
    arch = make()
    assert spatial_mode(arch) == mode
    init, apply, kfn = arch
    x = _images(4)
    with jax.enable_x64(True):
        xj = jnp.asarray(x)
        sample = jax.jit(jax.vmap(lambda k: apply(init(k, xj.shape)[1], xj)[:, 0]))
        outs = np.asarray(sample(jax.random.split(jax.random.PRNGKey(1), 2000)))
    mc = outs.T @ outs / len(outs)
    k = kfn(x, None, "nngp")
    assert np.linalg.norm(mc - k) / np.linalg.norm(k) < 0.08


@pytest.mark.parametrize("make", [_no_pool, _pool])
def test_ntk_monte_carlo(make):
    """Mean empirical NTK of 3 width-128 CNNs vs the analytic NTK: the NTK's relative
    fluctuation at width w is ~1/sqrt(w) (9 %) per network, so 3 networks give ~5 % and a
    12 % bound; dropping the NTK's own window average or the bias term moves it ~30 %+.
    (Measured at width 256, 6 networks: 1.1 % and 5.5 %.)"""
    from ntkscale.kernels.network import empirical_ntk

    arch = make(128)
    init, apply, kfn = arch
    x = _images(4, seed=3)
    with jax.enable_x64(True):
        xj = jnp.asarray(x)
        ntks = [np.asarray(empirical_ntk(apply, init(jax.random.PRNGKey(s), xj.shape)[1], xj))
                for s in range(3)]
    k = kfn(x, None, "ntk")
    assert np.linalg.norm(np.mean(ntks, 0) - k) / np.linalg.norm(k) < 0.10


@pytest.mark.parametrize("pool", [False, True])
def test_one_by_one_conv_is_fully_connected(pool):
    """A 1x1-conv net on 1x1 images is the fully connected net: kernels equal to rounding."""
    x = np.random.default_rng(2).normal(size=(7, 5))
    fc = stax.serial(stax.Dense(3, W_std=1.4, b_std=0.2), stax.Relu(),
                     stax.Dense(3, W_std=1.1, b_std=0.1), stax.Gelu(), stax.Dense(1, W_std=0.9))
    readout = stax.GlobalAvgPool() if pool else stax.Flatten()
    conv = stax.serial(stax.Unflatten(1, 1, 5), stax.Conv(3, (1, 1), W_std=1.4, b_std=0.2),
                       stax.Relu(), stax.Conv(3, (1, 1), W_std=1.1, b_std=0.1), stax.Gelu(),
                       readout, stax.Dense(1, W_std=0.9))
    assert spatial_mode(conv) == ("full" if pool else "diag")
    a, b = fc.kernel_fn(x, x[:4]), conv.kernel_fn(x, x[:4])
    np.testing.assert_allclose(b.nngp, a.nngp, rtol=1e-12)
    np.testing.assert_allclose(b.ntk, a.ntk, rtol=1e-12)
    # the same through NHWC inputs (neural-tangents' convention, no Unflatten)
    nhwc = stax.serial(*conv.layers[1:])
    np.testing.assert_allclose(nhwc.kernel_fn(x.reshape(7, 1, 1, 5), None, "ntk"),
                               fc.kernel_fn(x, None, "ntk"), rtol=1e-12)


def _roll(x, dh, dw):
    return np.roll(np.roll(x, dh, axis=1), dw, axis=2)


def test_translation_structure():
    """Circular padding commutes with translations. With global average pooling the kernel
    is invariant to shifting either image alone; with a Flatten readout only to shifting
    both together (shifting one alone changes it: the check can fail)."""
    x, y = _images(3, 5, 6, 2, seed=4), _images(2, 5, 6, 2, seed=5)
    base = [stax.Conv(1, (3, 3), padding="CIRCULAR", W_std=1.4, b_std=0.1), stax.Relu(),
            stax.Conv(1, (3, 3), padding="CIRCULAR", W_std=1.4, b_std=0.1), stax.Relu()]
    gap = stax.serial(*base, stax.GlobalAvgPool(), stax.Dense(1))
    flat = stax.serial(*base, stax.Flatten(), stax.Dense(1))
    k = gap.kernel_fn(x, y, "ntk")
    np.testing.assert_allclose(gap.kernel_fn(_roll(x, 2, 1), y, "ntk"), k, rtol=1e-12)
    np.testing.assert_allclose(gap.kernel_fn(x, _roll(y, -1, 3), "ntk"), k, rtol=1e-12)
    kf = flat.kernel_fn(x, y, "ntk")
    np.testing.assert_allclose(flat.kernel_fn(_roll(x, 2, 1), _roll(y, 2, 1), "ntk"), kf, rtol=1e-12)
    assert np.abs(flat.kernel_fn(_roll(x, 2, 1), y, "ntk") - kf).max() > 1e-3 * np.abs(kf).max()
    # zero padding is not translation invariant (borders see zeros)
    same = stax.serial(stax.Conv(1, (3, 3), padding="SAME"), stax.Relu(), stax.GlobalAvgPool(),
                       stax.Dense(1))
    assert np.abs(same.kernel_fn(_roll(x, 2, 1), y, "ntk") - same.kernel_fn(x, y, "ntk")).max() > 1e-6


@pytest.mark.parametrize("padding", ["SAME", "CIRCULAR", "VALID"])
def test_fused_equals_generic(padding):
    """The numba conv chain agrees with the array recursion (cross and symmetric tiles)."""
    arch = stax.serial(stax.Unflatten(7, 6, 2), stax.Conv(1, (3, 3), padding=padding, W_std=1.4, b_std=0.1),
                       stax.Relu(), stax.Dense(1, W_std=1.2), stax.LeakyRelu(0.2),
                       stax.Conv(1, (2, 3), padding=padding, W_std=1.3), stax.Abs(), stax.Flatten(),
                       stax.Dense(1, W_std=1.4, b_std=0.1), stax.Relu(), stax.Dense(1))
    x = np.random.default_rng(6).normal(size=(23, 84))
    x[3] = 0.0  # a zero image: zero variances must give finite kernels on both paths
    s1, s2 = diag_stats(arch, x[:13]), diag_stats(arch, x[13:])
    for a, b, t1, t2 in ((x[:13], x[13:], s1, s2), (x[:13], None, s1, None)):
        f = kernel_tile(arch, a, b, t1, t2, path="auto")
        g = kernel_tile(arch, a, b, t1, t2, path="generic")
        for kind in ("nngp", "ntk"):
            assert np.all(np.isfinite(f[kind]))
            np.testing.assert_allclose(f[kind], g[kind], rtol=1e-11, atol=1e-13)
    assert images.conv_fused.compile_conv_program(arch) is not None


def test_chunked_tile_equals_one_chunk(monkeypatch):
    """A tile computed in many small chunks of pairs (mirrored when symmetric) equals one
    chunk, in both layouts."""
    for arch in (stax.serial(stax.Unflatten(4, 4, 2), *_pool().layers),
                 stax.serial(stax.Unflatten(4, 4, 2), *_no_pool().layers)):
        x = _images(11).reshape(11, -1)
        s1, s2 = diag_stats(arch, x[:7]), diag_stats(arch, x[7:])
        whole = [kernel_tile(arch, x[:7], b, s1, t, path="generic") for b, t in ((x[7:], s2), (None, None))]
        monkeypatch.setattr(images, "WORK_BYTES", 1)  # one pair per chunk
        assert images.image_chunk(arch) == 1
        parts = [kernel_tile(arch, x[:7], b, s1, t, path="generic") for b, t in ((x[7:], s2), (None, None))]
        monkeypatch.undo()
        for w, p in zip(whole, parts):
            for kind in ("nngp", "ntk"):
                np.testing.assert_allclose(p[kind], w[kind], rtol=1e-13)
        # the symmetric tile is exactly symmetric, its diagonal is diag_stats'
        np.testing.assert_array_equal(parts[1]["ntk"], parts[1]["ntk"].T)
        np.testing.assert_allclose(np.diag(parts[1]["ntk"]), s1.ntk, rtol=1e-13)


def test_numpy_chunks_are_cache_sized(monkeypatch):
    """On NumPy a tile's chunks hold at most CACHE_BYTES of pair covariances (the recursion's
    temporaries stay in cache: 2.3-3.4x faster, RESULTS §00000h.5), whatever WORK_BYTES allows."""
    arch = stax.serial(stax.Unflatten(4, 4, 2), *_pool().layers)
    x = _images(12).reshape(12, -1)
    s1 = diag_stats(arch, x)
    calls = []
    real = images.image_state
    monkeypatch.setattr(images, "image_state", lambda *a, **k: calls.append(a[2].shape[0]) or real(*a, **k))
    per_pair = 6 * 8 * images.spatial.entry_floats("full", 4, 4)
    monkeypatch.setattr(images, "CACHE_BYTES", 9 * per_pair)  # 3 x 3 pairs per chunk
    kernel_tile(arch, x, None, s1, None, path="generic")
    assert max(calls) == 3 and len(calls) == 10  # upper chunks of a 4 x 4 grid of 3-row blocks
    calls.clear()
    monkeypatch.setattr(images, "CACHE_BYTES", 2**40)
    kernel_tile(arch, x, None, s1, None, path="generic")
    assert calls == [12]


def test_jax_namespace_matches_numpy():
    """The array recursion on JAX arrays (GPU path; here on CPU) equals NumPy's."""
    x = _images(5, 3, 3, 2)
    for arch in (stax.serial(stax.Conv(1, (2, 2), padding="CIRCULAR", b_std=0.1), stax.Relu(),
                             stax.Flatten(), stax.Dense(1)),
                 stax.serial(stax.Conv(1, (2, 2), padding="SAME"), stax.Erf(),
                             stax.AvgPool((2, 2), (1, 1)), stax.GlobalAvgPool(), stax.Dense(1))):
        with jax.enable_x64(True):
            kj = np.asarray(arch.kernel_fn(jnp.asarray(x), jnp.asarray(x[:3]), "ntk"))
        # x2 = x[:3] repeats rows of x: at identical images theta = 0 comes from
        # sqrt(v1 v2 - q^2), whose cancellation leaves ~sqrt(eps) differences between
        # backends (XLA fuses with FMAs); elsewhere they agree to 1e-12
        ref = arch.kernel_fn(x, x[:3], "ntk")
        np.testing.assert_allclose(kj, ref, rtol=1e-8)
        off = ~np.eye(5, 3, dtype=bool)
        np.testing.assert_allclose(kj[off], ref[off], rtol=1e-12)


def test_nngp_and_ntk_psd_and_strided():
    x = _images(9, 6, 6, 1)
    arch = stax.serial(stax.Conv(1, (3, 3), (2, 2), "SAME"), stax.Relu(), stax.AvgPool((2, 2), (1, 1)),
                       stax.Conv(1, (2, 2)), stax.Relu(), stax.Flatten(), stax.Dense(1))
    k = arch.kernel_fn(x)
    for m in (k.nngp, k.ntk):
        np.testing.assert_allclose(m, m.T, rtol=1e-13)
        assert np.linalg.eigvalsh(m).min() > -1e-12 * np.abs(m).max()


def test_presets_and_specs():
    a = cntk((28, 28, 1), 3)
    b = myrtle((12, 12, 3), 7)
    assert spatial_mode(a) == "diag" and spatial_mode(b) == "full"
    for arch in (a, b):
        assert from_spec(arch.spec()) == arch
    x = np.random.default_rng(0).normal(size=(3, 12 * 12 * 3))
    k = b.kernel_fn(x, None, "ntk")
    assert k.shape == (3, 3) and np.all(np.isfinite(k))
    with pytest.raises(ValueError, match="5, 7, 10"):
        myrtle((8, 8, 1), 6)


def test_errors_name_the_fix():
    x = _images(3)
    with pytest.raises(UnsupportedArchitectureError, match="ends with images"):
        stax.serial(stax.Conv(1, (3, 3)), stax.Relu()).kernel_fn(x)
    with pytest.raises(UnsupportedArchitectureError, match="Unflatten must be the first"):
        stax.serial(stax.Conv(1, (3, 3)), stax.Unflatten(4, 4, 2), stax.Flatten(), stax.Dense(1)).kernel_fn(x)
    with pytest.raises(UnsupportedArchitectureError, match="after Flatten"):
        stax.serial(stax.Flatten(), stax.Conv(1, (3, 3)), stax.Dense(1)).kernel_fn(x)
    with pytest.raises(ValueError, match="start it with Unflatten"):
        stax.serial(stax.Conv(1, (3, 3)), stax.Flatten(), stax.Dense(1)).kernel_fn(x.reshape(3, -1))
    with pytest.raises(ValueError, match="expects H\\*W\\*C = 32"):
        check_input_width(stax.serial(stax.Unflatten(4, 4, 2), stax.Flatten(), stax.Dense(1)), 31)
    with pytest.raises(UnsupportedArchitectureError, match="need an image architecture"):
        stax.serial(stax.Dense(1)).kernel_fn(x)
    with pytest.raises(ValueError, match="does not fit"):
        stax.serial(stax.Conv(1, (5, 5)), stax.Flatten()).kernel_fn(x)
    with pytest.raises(ValueError, match="padding must be one of"):
        stax.Conv(1, (3, 3), padding="REFLECT")
    with pytest.raises(ValueError, match="filter_shape must be one positive int"):
        stax.Conv(1, (0, 3))
    with pytest.raises(ValueError, match="does not match images"):
        stax.serial(stax.Unflatten(4, 4, 1), stax.Flatten(), stax.Dense(1)).kernel_fn(x)


def test_jax_chunks_under_jit(monkeypatch):
    """JAX tiles map over chunks of pairs (``lax.map``: one compiled chunk, any tile size);
    a jitted tile split into many padded chunks equals NumPy's one-chunk tile."""
    arch = stax.serial(stax.Unflatten(3, 3, 2), stax.Conv(1, (2, 2), padding="SAME"), stax.Relu(),
                       stax.AvgPool((2, 2), (1, 1)), stax.GlobalAvgPool(), stax.Dense(1))
    x = _images(7, 3, 3, 2).reshape(7, -1)
    s1, s2 = diag_stats(arch, x[:4]), diag_stats(arch, x[4:])
    ref = kernel_tile(arch, x[:4], x[4:], s1, s2, ("ntk",))["ntk"]
    monkeypatch.setattr(images, "WORK_BYTES", 6 * 8 * 81 * 2)  # 2 pairs per chunk: padded blocks
    with jax.enable_x64(True):
        fn = jax.jit(lambda a, b: kernel_tile(arch, a, b, s1, s2, ("ntk",))["ntk"])
        got = np.asarray(fn(jnp.asarray(x[:4]), jnp.asarray(x[4:])))
    np.testing.assert_allclose(got, ref, rtol=1e-12)


@pytest.mark.parametrize("arch", [
    stax.serial(stax.Unflatten(6, 5, 2), *myrtle((6, 5, 2), 5, b_std=0.1).layers[1:]),
    stax.serial(stax.Unflatten(7, 6, 1), stax.Conv(1, (3, 3), padding="VALID", W_std=1.4, b_std=0.1),
                stax.Relu(), stax.AvgPool((2, 2), (1, 1), "SAME"), stax.Dense(1, W_std=1.2),
                stax.LeakyRelu(0.2), stax.Conv(1, (2, 3), padding="CIRCULAR"), stax.Abs(),
                stax.AvgPool((3, 2), (2, 2)), stax.Flatten(), stax.Dense(1, b_std=0.1), stax.Relu(),
                stax.Dense(1)),
    stax.serial(stax.Unflatten(5, 5, 3), stax.Conv(1, (3, 3), padding="SAME"), stax.Relu(),
                stax.GlobalAvgPool(), stax.Dense(1, b_std=0.2), stax.Relu(), stax.Dense(1)),
])
def test_pooled_fused_equals_generic(arch):
    """The numba pixel-pair kernel (pooled chains) agrees with the array recursion: every
    padding, strided and overlapping pools, both readouts, a zero image, both tile kinds."""
    assert images.conv_fused.compile_conv_program(arch).mode == "full"
    d = arch.layers[0].size
    x = np.random.default_rng(7).normal(size=(13, d))
    x[2] = 0.0
    s1, s2 = diag_stats(arch, x[:7]), diag_stats(arch, x[7:])
    for a, b, t1, t2 in ((x[:7], x[7:], s1, s2), (x[:7], None, s1, None)):
        f = kernel_tile(arch, a, b, t1, t2)
        g = kernel_tile(arch, a, b, t1, t2, path="generic")
        for kind in ("nngp", "ntk"):
            np.testing.assert_allclose(f[kind], g[kind], rtol=1e-11, atol=1e-13 * np.abs(g[kind]).max())
