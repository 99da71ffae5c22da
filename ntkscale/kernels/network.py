"""Finite-width networks in JAX with the same parameterization as the kernels.

``init_fn(key, input_shape) -> (output_shape, params)`` and
``apply_fn(params, x) -> outputs`` follow neural-tangents (and
``jax.example_libraries.stax``). Wide networks sampled from here converge to
the analytic NNGP (output covariance over initialisations) and NTK (Jacobian
inner products) as the width grows; the tests check that.
"""

from __future__ import annotations

from typing import Any, Callable

from . import windows
from .base import provide
from .layers import Conv, Dense, FanInSum, FanOut, Layer, Parallel, Serial

__all__ = ["make_init_fn", "make_apply_fn", "empirical_ntk"]


def _jax():
    try:
        import jax
        import jax.numpy as jnp
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError("finite networks need JAX: pip install 'ntkscale[jax]'") from e
    return jax, jnp


def _init(layer: Layer, key: Any, shape: Any) -> tuple[Any, Any]:
    jax, jnp = _jax()
    if isinstance(layer, Dense):
        k1, k2 = jax.random.split(key)
        n_in = shape[-1]
        out = layer.out_dim * (layer.s[1] if layer.parameterization == "standard" else 1)
        W = jax.random.normal(k1, (n_in, out))
        b = None if layer.b_std is None else jax.random.normal(k2, (out,))
        if layer.parameterization == "standard":
            W = W * (layer.W_std / (n_in / layer.s[0]) ** 0.5)
            b = None if b is None else b * layer.b_std
        return tuple(shape[:-1]) + (out,), (W, b)
    if isinstance(layer, Conv):
        k1, k2 = jax.random.split(key)
        # filter (fh, fw, C_in, out) or, 1-d, (f, C_in, out): neural-tangents' HWIO / HIO
        W = jax.random.normal(k1, (*layer.filter_shape, shape[-1], layer.out_chan))
        b = None if layer.b_std is None else jax.random.normal(k2, (layer.out_chan,))
        if layer.parameterization == "standard":
            W = W * (layer.W_std / (shape[-1] * layer.fan) ** 0.5)
            b = None if b is None else b * layer.b_std
        return layer.out_shape(tuple(shape)), (W, b)
    if isinstance(layer, Serial):
        params = []
        for sub, k in zip(layer.layers, jax.random.split(key, len(layer.layers))):
            shape, p = _init(sub, k, shape)
            params.append(p)
        return shape, tuple(params)
    if isinstance(layer, Parallel):
        keys = jax.random.split(key, len(layer.layers))
        pairs = [_init(sub, k, s) for sub, k, s in zip(layer.layers, keys, shape)]
        return [p[0] for p in pairs], tuple(p[1] for p in pairs)
    if isinstance(layer, FanOut):
        return [shape] * layer.num, ()
    if isinstance(layer, FanInSum):
        return shape[0], ()
    if hasattr(layer, "finite_init"):  # a family layer with parameters (e.g. attention)
        return layer.finite_init(jax, jnp, key, tuple(shape))
    return layer.out_shape(tuple(shape)), ()  # activations, pooling, reshapes: no parameters


def _apply(layer: Layer, params: Any, x: Any) -> Any:
    jax, jnp = _jax()
    if isinstance(layer, Dense):
        W, b = params
        if layer.parameterization == "ntk":
            out = (layer.W_std / x.shape[-1] ** 0.5) * (x @ W)
            return out if b is None else out + layer.b_std * b
        out = (x @ W) / layer.s[0] ** 0.5
        return out if b is None else out + b
    if isinstance(layer, Conv):
        W, b = params
        x_in, pad = x, layer.padding
        if pad == "CIRCULAR":
            x_in, pad = windows.circular_pad(jnp, x, layer.filter_shape, layer.strides), "VALID"
        if x.ndim == 3 and len(layer.filter_shape) == 1:  # sequences (n, T, C)
            out = jax.lax.conv_general_dilated(x_in, W, layer.strides, pad,
                                               dimension_numbers=("NHC", "HIO", "NHC"))
        else:  # images; a 1-d filter runs as (1, f) on images of height 1 (Unflatten(1, T, C))
            W4 = W.reshape(*layer.filter_2d, *W.shape[-2:])
            strides = layer.strides_2d if len(layer.filter_shape) == 1 else layer.strides
            out = jax.lax.conv_general_dilated(x_in, W4, strides, pad,
                                               dimension_numbers=("NHWC", "HWIO", "NHWC"))
        if layer.parameterization == "ntk":
            fan_in = x.shape[-1] * layer.fan
            out = (layer.W_std / fan_in ** 0.5) * out
            return out if b is None else out + layer.b_std * b
        return out if b is None else out + b
    if isinstance(layer, Serial):
        for sub, p in zip(layer.layers, params):
            x = _apply(sub, p, x)
        return x
    if isinstance(layer, Parallel):
        return [_apply(sub, p, xi) for sub, p, xi in zip(layer.layers, params, x)]
    if isinstance(layer, FanOut):
        return [x] * layer.num
    if isinstance(layer, FanInSum):
        out = x[0]
        for xi in x[1:]:
            out = out + xi
        return out
    if hasattr(layer, "finite_apply"):
        return layer.finite_apply(jax, jnp, params, x)
    return layer.finite(jax, jnp)(x)  # activations: each layer knows its function


def make_init_fn(layer: Layer) -> Callable[[Any, Any], tuple[Any, Any]]:
    """``init_fn(key, input_shape) -> (output_shape, params)`` for ``layer``."""

    def init_fn(key: Any, input_shape: Any) -> tuple[Any, Any]:
        return _init(layer, key, tuple(input_shape))

    return init_fn


def make_apply_fn(layer: Layer) -> Callable[[Any, Any], Any]:
    """``apply_fn(params, x) -> outputs`` for ``layer``; ``x`` of shape (n, d)."""

    def apply_fn(params: Any, x: Any, **kwargs: Any) -> Any:
        return _apply(layer, params, x)

    return apply_fn


# Layer.init_fn / Layer.apply_fn (kernels/base.py) hand the layer to these
provide("init_fn", make_init_fn)
provide("apply_fn", make_apply_fn)


def empirical_ntk(apply_fn: Callable[[Any, Any], Any], params: Any, x1: Any, x2: Any = None) -> Any:
    """Finite-width NTK ``J(x1) J(x2)^T`` averaged over output units.

    Returns shape (n1, n2): ``(1/k) sum_o <df_o(x1)/dtheta, df_o(x2)/dtheta>`` for a
    network with ``k`` outputs, which converges to the analytic NTK as width grows.
    Holds the whole Jacobian; :func:`ntkscale.empirical.empirical_ntk` is the general version
    (two methods, per-output forms, row blocks within a memory budget, input checks).
    """
    jax, jnp = _jax()
    x2 = x1 if x2 is None else x2

    def flat_jac(x: Any) -> Any:
        jac = jax.jacrev(lambda p: apply_fn(p, x))(params)  # leaves: (n, k, *param_shape)
        leaves = [leaf.reshape(leaf.shape[0], leaf.shape[1], -1) for leaf in jax.tree_util.tree_leaves(jac)]
        return jnp.concatenate(leaves, axis=-1)  # (n, k, P)

    j1 = flat_jac(x1)
    j2 = j1 if x2 is x1 else flat_jac(x2)
    return jnp.einsum("ikp,jkp->ij", j1, j2) / j1.shape[1]
