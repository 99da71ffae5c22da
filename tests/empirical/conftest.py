"""Shared models for the empirical-NTK tests (tiny, float64 where values are compared)."""

import numpy as np
import pytest

jax = pytest.importorskip("jax")


def x64():
    if hasattr(jax, "enable_x64"):
        return jax.enable_x64(True)
    from jax.experimental import enable_x64  # older JAX

    return enable_x64()


@pytest.fixture
def f64():
    with x64():
        yield


def tanh_params(d=3, h=5, k=2, seed=0):
    """Parameters of :func:`tanh_apply` as a plain dict of float64 NumPy arrays."""
    rng = np.random.default_rng(seed)
    return {"W": rng.standard_normal((d, h)), "b": 0.3 * rng.standard_normal(h),
            "V": rng.standard_normal((h, k))}


def tanh_apply(p, x):
    """f(x) = tanh(x W / sqrt(d) + b) V / sqrt(h): a 2-layer model in plain JAX, shape (n, k)."""
    jnp = jax.numpy
    d, h = p["W"].shape
    return jnp.tanh(x @ p["W"] / np.sqrt(d) + p["b"]) @ p["V"] / np.sqrt(h)


def tanh_jacobian(p, x):
    """The Jacobian of :func:`tanh_apply` by hand (NumPy), shape (n, k, P), leaves in the
    order W, b, V (each flattened row-major).

    With z = x W / sqrt(d) + b, a = tanh(z), a' = 1 - a^2:
    df_o/dW[e, c] = V[c, o] a'[c] x[e] / sqrt(h d);  df_o/db[c] = V[c, o] a'[c] / sqrt(h);
    df_o/dV[c, q] = [o = q] a[c] / sqrt(h).
    """
    W, b, V = (np.asarray(p[k], np.float64) for k in ("W", "b", "V"))
    d, h = W.shape
    k = V.shape[1]
    n = len(x)
    a = np.tanh(x @ W / np.sqrt(d) + b)
    da = 1 - a ** 2
    jW = np.einsum("co,ic,ie->ioec", V, da, x) / np.sqrt(h * d)        # (n, k, d, h)
    jb = np.einsum("co,ic->ioc", V, da) / np.sqrt(h)                    # (n, k, h)
    jV = np.einsum("oq,ic->iocq", np.eye(k), a) / np.sqrt(h)            # (n, k, h, k)
    return np.concatenate([jW.reshape(n, k, -1), jb.reshape(n, k, -1), jV.reshape(n, k, -1)], axis=2)
