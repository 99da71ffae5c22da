"""Locally connected and transposed convolutions, neural-tangents' ``stax.ConvLocal`` and
``stax.ConvTranspose``, on NHWC images (2-d filters) and sequences ``(n, T, C)`` (1-d).

Both take ``Conv``'s signature and defaults (``out_chan, filter_shape, strides=None,
padding='VALID', W_std=1.0, b_std=None, dimension_numbers=None, parameterization='ntk',
s=(1, 1)``) and its two parameterizations; only the window rule ``A`` differs (NTK
parameterization: ``nngp' = W_std^2 A(nngp) + b_std^2 I``, ``ntk' = nngp' + W_std^2 A(ntk)``;
standard: ``ntk' = C_in |f| A(nngp) + W_std^2 A(ntk) + I`` with a bias):

* ``ConvLocal`` (unshared weights: one filter per output position). Distinct output
  positions are uncorrelated, so ``A`` keeps only the same-position covariances: ``Conv``'s
  window mean of them on the diagonal, zero off it (``I`` the identity over positions, the
  bias too). In the ``"diag"`` layout it is ``Conv``'s rule.
* ``ConvTranspose`` (``lax.conv_transpose``): ``A`` is the transpose of ``Conv``'s joint
  window mean (each side dilated by the stride, zero padded by JAX's rule, averaged over a
  window shifted jointly; :func:`~ntkscale.kernels.spatial.transpose_window_mean`); images
  grow to ``size * stride`` (``SAME``, ``CIRCULAR``) or ``size * stride + max(f - stride, 0)``
  (``VALID``). ``CIRCULAR`` is the ``VALID`` output folded back onto ``size * stride``
  positions, as NT (:func:`~ntkscale.kernels.spatial.wrap_sum`).

Neither runs the fused numba chains (:mod:`~ntkscale.kernels.conv_fused` compiles ``Conv``
only): architectures with them take the array recursion.

References
----------
Novak et al. (2019), "Bayesian Deep Convolutional Networks with Many Channels are GPs", ICLR
(locally connected networks: the CNN-GP without weight sharing keeps only the diagonal).
Novak et al. (2020), "Neural Tangents", ICLR (``stax.ConvLocal``/``ConvTranspose``).
"""

from __future__ import annotations

from dataclasses import InitVar, dataclass
from typing import Any, Optional

from . import spatial, windows
from .backend import Namespace
from .base import Layer, UnsupportedArchitectureError, check_conv_args, need_images, layer_type
from .state import KernelState

__all__ = ["ConvLocal", "ConvTranspose"]

_DN = {1: ("NHC", "HIO", "NHC"), 2: ("NHWC", "HWIO", "NHWC")}


@dataclass(frozen=True)
class _WindowLayer(windows.FilterGeometry, Layer):
    """The fields, checks, kernel bookkeeping and spec both layers share with ``Conv``."""

    out_chan: int
    filter_shape: tuple[int, ...]
    strides: Optional[tuple[int, ...]] = None
    padding: str = "VALID"
    W_std: float = 1.0
    b_std: Optional[float] = None
    dimension_numbers: InitVar[Optional[tuple[str, str, str]]] = None
    parameterization: str = "ntk"
    s: InitVar[tuple[int, int]] = (1, 1)

    positions = "diag"  # spatial_mode: same-position covariances suffice unless something pools

    def __post_init__(self, dimension_numbers: Any, s: Any) -> None:
        check_conv_args(self, dimension_numbers, s)

    def window(self, ns: Namespace, a: Any, mode: str) -> tuple[Any, Any]:
        """``(A(a), I)``: the window rule on covariances ``a`` in layout ``mode``, and the
        pattern the bias adds (1, or the identity over positions)."""
        raise NotImplementedError  # pragma: no cover

    def kernel(self, ns: Namespace, k: KernelState) -> KernelState:
        need_images(k, type(self).__name__, len(self.filter_shape))
        w2 = self.W_std ** 2
        b2 = 0.0 if self.b_std is None else self.b_std ** 2
        one: Any = 1.0

        def rule(a: Any) -> Any:
            nonlocal one
            out, one = self.window(ns, a, k.spatial)
            return out

        avg = windows.map_state(k, rule)
        nngp = w2 * avg["nngp"] + b2 * one
        if k.ntk is None:
            ntk = None
        elif self.parameterization == "ntk":
            ntk = nngp + w2 * avg["ntk"]
        else:
            ntk = k.width * self.fan * avg["nngp"] + w2 * avg["ntk"]
            ntk = ntk if self.b_std is None else ntk + one
        cov1 = None if k.cov1 is None else w2 * avg["cov1"] + b2 * one
        cov2 = None if k.cov2 is None else (cov1 if k.cov2 is k.cov1 else w2 * avg["cov2"] + b2 * one)
        return k.replace(nngp=nngp, ntk=ntk, cov1=cov1, cov2=cov2, width=self.out_chan)

    def gaussian(self, g: Any) -> bool:
        """A wide layer's outputs are Gaussian, whatever its inputs."""
        return True

    def _scale(self, fan_in: int) -> tuple[float, float]:
        """``(weight factor, bias factor)`` of ``apply``: NTK ``W_std / sqrt(fan_in)``,
        ``b_std``; standard 1, 1 (the scales sit in the parameters)."""
        if self.parameterization == "ntk":
            return self.W_std / fan_in ** 0.5, (self.b_std or 0.0)
        return 1.0, 1.0

    def _draw(self, jax: Any, key: Any, w_shape: tuple, b_shape: tuple, fan_in: int) -> tuple[Any, Any]:
        k1, k2 = jax.random.split(key)
        W = jax.random.normal(k1, w_shape)
        b = None if self.b_std is None else jax.random.normal(k2, b_shape)
        if self.parameterization == "standard":
            W = W * (self.W_std / fan_in ** 0.5)
            b = None if b is None else b * self.b_std
        return W, b

    def _lax_args(self, x: Any) -> tuple[tuple, tuple, tuple]:
        """``(filter, strides, dimension_numbers)`` for ``x``: the layer's own rank, or a 1-d
        filter as ``(1, f)`` on images of height 1 (``Unflatten(1, T, C)`` rows)."""
        if x.ndim == 3 or len(self.filter_shape) == 2:
            return self.filter_shape, self.strides, _DN[len(self.filter_shape)]
        return self.filter_2d, self.strides_2d, _DN[2]

    def spec(self) -> dict:
        return {"layer": self.spec_name, "out_chan": self.out_chan, "filter_shape": list(self.filter_shape),
                "strides": list(self.strides), "padding": self.padding, "W_std": self.W_std,
                "b_std": self.b_std, "parameterization": self.parameterization}


@layer_type()
@dataclass(frozen=True)
class ConvLocal(_WindowLayer):
    """Locally connected (unshared) convolution, neural-tangents' ``ConvLocal(out_chan,
    filter_shape, strides=None, padding='VALID', W_std=1.0, b_std=None,
    dimension_numbers=None, parameterization='ntk', s=(1, 1))``.

    ``z[p] = W_std / sqrt(C_in |f|) * <W[p], patch_p(x)> + b_std * b[p]`` (NTK
    parameterization) with a filter ``W[p]`` and a bias ``b[p]`` of its own at every output
    position ``p``; finite parameters as NT: ``W`` (*out_positions, |f| C_in, out_chan),
    ``b`` (1, *out_positions, out_chan), run by ``lax.conv_general_dilated_local``.
    ``CIRCULAR`` wraps the inputs, then ``VALID``. Kernel: same positions only (module
    docstring).
    """

    def window(self, ns: Namespace, a: Any, mode: str) -> tuple[Any, Any]:
        (fh, fw), (sh, sw) = self.filter_2d, self.strides_2d
        d = spatial.positional(ns, a, mode)  # (.., H, W)
        d = spatial.window_mean(ns, d, (-2,), fh, sh, self.padding)
        d = spatial.window_mean(ns, d, (-1,), fw, sw, self.padding)
        if mode == "diag":
            return d, 1.0
        return spatial.diagonal_full(ns, d), spatial.diagonal_full(ns, ns.ones(d.shape[-2:], dtype=d.dtype))

    def out_shape(self, shape: tuple) -> tuple:
        return windows.window_out_shape(shape, self.filter_shape, self.strides, self.padding, self.out_chan)

    def finite_init(self, jax: Any, jnp: Any, key: Any, shape: tuple) -> tuple[tuple, Any]:
        """``(output_shape, (W, b))`` as NT draws them: ``W`` (*out_positions, |f| C_in,
        out_chan) and ``b`` (1, *out_positions, out_chan) (None without ``b_std``), ``N(0, 1)``
        (standard parameterization: times ``W_std / sqrt(C_in |f|)`` and ``b_std``); the
        positions are the layer's own rank (T_out for a 1-d filter)."""
        out = self.out_shape(tuple(shape))
        rank = len(self.filter_shape)
        pos = out[-1 - rank:-1]
        fan_in = shape[-1] * self.fan
        return out, self._draw(jax, key, (*pos, fan_in, self.out_chan), (1, *pos, self.out_chan), fan_in)

    def finite_apply(self, jax: Any, jnp: Any, params: Any, x: Any) -> Any:
        W, b = params
        f, st, dn = self._lax_args(x)
        pad = self.padding
        if pad == "CIRCULAR":
            x_in, pad = windows.circular_pad(jnp, x, f, st), "VALID"
        else:
            x_in = x
        out_pos = self.out_shape(tuple(x.shape))[1:-1]  # (H', W') of x's own rank
        W = W.reshape(*out_pos, *W.shape[-2:])
        out = jax.lax.conv_general_dilated_local(x_in, W, st, pad, f, dimension_numbers=dn)
        w_scale, b_scale = self._scale(x.shape[-1] * self.fan)
        out = w_scale * out
        return out if b is None else out + b_scale * b.reshape(1, *out_pos, b.shape[-1])


@layer_type()
@dataclass(frozen=True)
class ConvTranspose(_WindowLayer):
    """Transposed convolution, neural-tangents' ``ConvTranspose(out_chan, filter_shape,
    strides=None, padding='VALID', W_std=1.0, b_std=None, dimension_numbers=None,
    parameterization='ntk', s=(1, 1))`` (``jax.example_libraries.stax.GeneralConvTranspose``).

    ``z = W_std / sqrt(C_in |f|) * conv_transpose(x, W) + b_std * b`` (NTK parameterization;
    ``|f|`` the filter's positions, the fan-in as NT counts it), ``W`` (*filter, C_in,
    out_chan) and ``b`` (1, ..., 1, out_chan) ``N(0, 1)``, run by ``lax.conv_transpose``
    (``CIRCULAR``: ``VALID``, then folded onto ``size * stride`` positions). Output length
    per axis: :func:`~ntkscale.kernels.spatial.transpose_out_size`.
    """

    def window(self, ns: Namespace, a: Any, mode: str) -> tuple[Any, Any]:
        (fh, fw), (sh, sw) = self.filter_2d, self.strides_2d
        h_axes, w_axes = ((-2,), (-1,)) if mode == "diag" else ((-4, -2), (-3, -1))
        a = spatial.transpose_window_mean(ns, a, h_axes, fh, sh, self.padding)
        return spatial.transpose_window_mean(ns, a, w_axes, fw, sw, self.padding), 1.0

    def out_shape(self, shape: tuple) -> tuple:
        return windows.transpose_out_shape(shape, self.filter_shape, self.strides, self.padding, self.out_chan)

    def finite_init(self, jax: Any, jnp: Any, key: Any, shape: tuple) -> tuple[tuple, Any]:
        """``(output_shape, (W, b))`` as NT draws them: ``W`` (*filter, C_in, out_chan), ``b``
        (1, ..., 1, out_chan) (None without ``b_std``)."""
        fan_in = shape[-1] * self.fan
        w_shape = (*self.filter_shape, shape[-1], self.out_chan)
        return self.out_shape(tuple(shape)), self._draw(jax, key, w_shape, (1,) * (len(shape) - 1)
                                                        + (self.out_chan,), fan_in)

    def finite_apply(self, jax: Any, jnp: Any, params: Any, x: Any) -> Any:
        W, b = params
        f, st, dn = self._lax_args(x)
        W = W.reshape(*f, *W.shape[-2:])
        pad = "VALID" if self.padding == "CIRCULAR" else self.padding
        out = jax.lax.conv_transpose(x, W, st, pad, dimension_numbers=dn)
        if self.padding == "CIRCULAR":
            for i, size in enumerate(x.shape[1:-1]):
                out = spatial.wrap_sum(jnp, out, 1 + i, size * st[i])
        w_scale, b_scale = self._scale(x.shape[-1] * self.fan)
        out = w_scale * out
        return out if b is None else out + b_scale * b.reshape((1,) * (out.ndim - 1) + (b.shape[-1],))

