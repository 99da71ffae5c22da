"""Array libraries: JAX arrays in -> JAX arrays out (same values as NumPy); CuPy on a GPU."""

import contextlib
import math

import numpy as np
import pytest

from ntkscale import stax
from ntkscale.kernels import diag_stats, kernel_tile

SQ2 = math.sqrt(2.0)

ARCHS = {
    "relu3": stax.serial(*[l for _ in range(3) for l in (stax.Dense(64, W_std=SQ2, b_std=0.1), stax.Relu())],
                         stax.Dense(1)),
    "erf_leaky_standard": stax.serial(stax.Dense(10, W_std=1.3, b_std=0.2, parameterization="standard"),
                                      stax.Erf(1.7, 0.6, -0.3), stax.Dense(7, parameterization="standard"),
                                      stax.LeakyRelu(0.1), stax.Dense(1, parameterization="standard")),
    "gelu_sin_residual": stax.serial(
        stax.Dense(8, W_std=1.2, b_std=0.1), stax.Gelu(), stax.Dense(8, W_std=1.1), stax.FanOut(2),
        stax.parallel(stax.serial(stax.Dense(8, W_std=SQ2), stax.Relu(), stax.Dense(8)), stax.Identity()),
        stax.FanInSum(), stax.Sin(1.3, 0.7, 0.4), stax.Dense(1, b_std=0.3)),
}


def _x(n, d=6, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)) * rng.uniform(0.3, 2.0, (n, 1))
    x[min(2, n - 1)] = 0.0  # a zero row
    return x


def _x64(jax):
    if hasattr(jax, "enable_x64"):
        return jax.enable_x64(True)
    from jax.experimental import enable_x64  # older JAX

    return enable_x64()


@pytest.mark.parametrize("name", sorted(ARCHS))
def test_jax_float64_matches_numpy(name):
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    layer = ARCHS[name]
    x1, x2 = _x(37), _x(11, seed=1)
    with _x64(jax):
        for a, b in ((x1, None), (x1, x2)):
            ja = jnp.asarray(a)
            jb = None if b is None else jnp.asarray(b)
            assert ja.dtype == jnp.float64
            k = layer.kernel_fn(ja, jb)
            ref = layer.kernel_fn(a, b)  # NumPy; fused for chains
            for f in ("nngp", "ntk"):
                got = getattr(k, f)
                assert isinstance(got, jax.Array), type(got)
                assert got.dtype == jnp.float64
                # 1e-12 relative: same float64 formulas (JAX: generic recursion, XLA's atan2)
                want = getattr(ref, f)
                np.testing.assert_allclose(np.asarray(got), want, rtol=0, atol=1e-12 * np.abs(want).max())
            single = layer.kernel_fn(ja, jb, "ntk")
            assert isinstance(single, jax.Array)
        # the per-tile entry points the tiling layer uses
        s = diag_stats(layer, jnp.asarray(x1))
        assert isinstance(s.ntk, jax.Array)
        t = kernel_tile(layer, jnp.asarray(x1), None, s, None)
        np.testing.assert_allclose(np.asarray(t["ntk"]), layer.kernel_fn(x1, None, "ntk"), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", sorted(ARCHS))
def test_jax_float32_matches_numpy(name):
    # JAX's default (x64 disabled): float32 inputs with dtype=np.float32 stay float32 JAX arrays.
    # Bound 1e-5 relative to the largest entry, as for NumPy float32 (test_properties.py);
    # rows are well separated except the zero row, whose kernel entries are exact-ish constants.
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    if jax.config.read("jax_enable_x64"):  # pragma: no cover - depends on the environment
        pytest.skip("JAX x64 is enabled globally")
    layer = ARCHS[name]
    x1, x2 = _x(37), _x(11, seed=1)
    for a, b in ((x1, None), (x1, x2)):
        jb = None if b is None else jnp.asarray(b, jnp.float32)
        k = layer.kernel_fn(jnp.asarray(a, jnp.float32), jb, dtype=np.float32)
        ref = layer.kernel_fn(a, b)
        for f in ("nngp", "ntk"):
            got, want = getattr(k, f), getattr(ref, f)
            assert isinstance(got, jax.Array) and got.dtype == jnp.float32
            np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=0, atol=1e-5 * np.abs(want).max())


def test_mixed_array_libraries_are_refused():
    pytest.importorskip("jax")
    import jax.numpy as jnp

    layer = ARCHS["relu3"]
    x = _x(5)
    with pytest.raises(TypeError, match="mix array libraries"):
        layer.kernel_fn(jnp.asarray(x, jnp.float32), x, dtype=np.float32)
    with pytest.raises(ValueError, match="fused path runs on NumPy"):
        layer.kernel_fn(jnp.asarray(x, jnp.float32), None, dtype=np.float32, path="fused")
    with pytest.raises(TypeError, match="unsupported array type"):
        layer.kernel_fn([[1.0, 2.0]], np.ones((1, 2)))  # a list next to an array


def _cupy_or_skip():
    cupy = pytest.importorskip("cupy")
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            pytest.skip("no CUDA device")
    except Exception as e:  # noqa: BLE001 - CUDA driver missing or broken
        pytest.skip(f"CUDA unavailable: {e}")
    return cupy


@pytest.mark.gpu
@pytest.mark.parametrize("name", sorted(ARCHS))
def test_cupy_matches_numpy(name):
    cupy = _cupy_or_skip()
    layer = ARCHS[name]
    x1, x2 = _x(300), _x(77, seed=1)
    for a, b in ((x1, None), (x1, x2)):
        k = layer.kernel_fn(cupy.asarray(a), None if b is None else cupy.asarray(b))
        ref = layer.kernel_fn(a, b)
        for f in ("nngp", "ntk"):
            got, want = getattr(k, f), getattr(ref, f)
            assert isinstance(got, cupy.ndarray)  # stays on the device
            # 1e-12 relative: float64 on the GPU (cuBLAS GEMM, CUDA atan2)
            np.testing.assert_allclose(cupy.asnumpy(got), want, rtol=0, atol=1e-12 * np.abs(want).max())
        k32 = layer.kernel_fn(cupy.asarray(a, cupy.float32), None if b is None else cupy.asarray(b, cupy.float32),
                              dtype=np.float32)
        assert k32.ntk.dtype == cupy.float32
        np.testing.assert_allclose(cupy.asnumpy(k32.ntk), ref.ntk, rtol=0, atol=1e-5 * np.abs(ref.ntk).max())
    with contextlib.suppress(AttributeError):
        cupy.get_default_memory_pool().free_all_blocks()
