"""Spatial covariance algebra for convolutional kernels (pure array math, any namespace).

A convolutional kernel state keeps, for every pair of inputs, covariances between pixel
positions. Two layouts (``KernelState.spatial``):

* ``"diag"``: same-position covariances only, trailing axes ``(H, W)``. Enough when the
  readout is ``Flatten`` and nothing pools: a convolution then mixes a position's
  covariance only with its neighbours' same-position covariances (Xiao et al. 2018;
  Arora et al. 2019 §4). Cost per Gram entry ~ ``H W``.
* ``"full"``: all position pairs, trailing axes ``(H1, W1, H2, W2)``. Needed as soon as
  anything pools (``AvgPool``, ``GlobalAvgPool``): a pooled covariance sums over pairs of
  positions. Cost per Gram entry ~ ``(H W)^2``.

Leading axes are batch axes: ``(n1, n2)`` for a pair matrix, ``(n,)`` for a self
covariance or a diagonal. Every function is pure (no in-place updates), so it runs on
NumPy, CuPy and JAX arrays alike.

References
----------
Arora et al. (2019), "On Exact Computation with an Infinitely Wide Neural Net", NeurIPS
(CNTK with and without global average pooling).
Novak et al. (2019), "Bayesian Deep Convolutional Networks with Many Channels are
Gaussian Processes", ICLR (the ``diagonal_spatial`` layout; padding conventions).
Novak et al. (2020), "Neural Tangents", ICLR (``stax.Conv``/``AvgPool``/``GlobalAvgPool``).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from .backend import Namespace

__all__ = ["PADDINGS", "out_size", "pads", "positional", "self_vars", "pair_vars",
           "window_mean", "diag_mean", "full_mean", "input_covariances", "self_covariance", "entry_floats",
           "transpose_out_size", "transpose_pads", "dilate", "wrap_sum", "transpose_window_mean",
           "diagonal_full"]

PADDINGS = ("VALID", "SAME", "CIRCULAR")


def out_size(size: int, window: int, stride: int, padding: str) -> int:
    """Output length of a window of ``window`` with ``stride`` along an axis of ``size``."""
    if padding == "VALID":
        return max(0, (size - window) // stride + 1)
    return -(-size // stride)  # SAME and CIRCULAR: ceil(size / stride)


def pads(size: int, window: int, stride: int, padding: str) -> tuple[int, int]:
    """``(low, high)`` padding of an axis (XLA's SAME rule: the extra one goes high)."""
    if padding == "VALID":
        return 0, 0
    total = max((out_size(size, window, stride, padding) - 1) * stride + window - size, 0)
    return total // 2, total - total // 2


def _pad(ns: Namespace, a: Any, axes: Sequence[int], lo: int, hi: int, padding: str) -> Any:
    if lo == 0 and hi == 0:
        return a
    widths = [(0, 0)] * a.ndim
    for ax in axes:
        widths[ax] = (lo, hi)
    if padding == "CIRCULAR":
        if lo > a.shape[axes[0]] or hi > a.shape[axes[0]]:
            raise ValueError("circular padding wider than the image; use a smaller filter")
        return ns.pad(a, widths, mode="wrap")
    return ns.pad(a, widths)


def _take(a: Any, axes: Sequence[int], start: int, count: int, stride: int) -> Any:
    idx = [slice(None)] * a.ndim
    for ax in axes:
        idx[ax] = slice(start, start + (count - 1) * stride + 1, stride)
    return a[tuple(idx)]


def window_mean(ns: Namespace, a: Any, axes: Sequence[int], window: int, stride: int,
                padding: str) -> Any:
    """Mean over a sliding window moved jointly along ``axes`` (all of one size).

    ``out[.., i, .., i', ..] = (1/window) sum_k a[.., s i + k - lo, .., s i' + k - lo, ..]``
    with the same shift ``k`` on every axis in ``axes``: one ``axes`` entry is a
    same-position window (``"diag"`` convolution, pooling of one side), two are the joint
    shift of a convolution in the ``"full"`` layout. Zero padding (``SAME``) divides by
    the full window, like neural-tangents and the finite network's zero-padded input.
    """
    size = a.shape[axes[0]]
    n_out = out_size(size, window, stride, padding)
    if n_out < 1:
        raise ValueError(f"a window of {window} does not fit an axis of {size} with VALID "
                         "padding; use padding='SAME' or a smaller window")
    lo, hi = pads(size, window, stride, padding)
    p = _pad(ns, a, axes, lo, hi, padding)
    out = _take(p, axes, 0, n_out, stride)
    for k in range(1, window):
        out = out + _take(p, axes, k, n_out, stride)
    return out * (1.0 / window)


def transpose_out_size(size: int, window: int, stride: int, padding: str) -> int:
    """Output length of a transposed window (``lax.conv_transpose``) along an axis of ``size``:
    ``size stride`` (``SAME``, ``CIRCULAR``), ``size stride + max(window - stride, 0)`` (``VALID``)."""
    return size * stride + (max(window - stride, 0) if padding == "VALID" else 0)


def transpose_pads(window: int, stride: int, padding: str) -> tuple[int, int]:
    """``(low, high)`` zero padding of the stride-dilated axis before a transposed window
    (JAX's ``lax.conv_transpose`` rule, ``'SAME'`` or ``'VALID'``)."""
    if padding == "SAME":
        total = window + stride - 2
        lo = window - 1 if stride > window - 1 else -(-total // 2)
    else:
        total = window + stride - 2 + max(window - stride, 0)
        lo = window - 1
    return lo, total - lo


def dilate(ns: Namespace, a: Any, axis: int, stride: int) -> Any:
    """``stride - 1`` zeros between neighbours along ``axis``: length ``(size - 1) stride + 1``."""
    if stride == 1:
        return a
    a = ns.moveaxis(a, axis, -1)
    size = a.shape[-1]
    z = ns.zeros((*a.shape, stride - 1), dtype=a.dtype)
    b = ns.concatenate([a[..., None], z], axis=-1).reshape(*a.shape[:-1], size * stride)
    return ns.moveaxis(b[..., : (size - 1) * stride + 1], -1, axis)


def wrap_sum(ns: Namespace, a: Any, axis: int, length: int) -> Any:
    """Fold ``axis`` (size ``X``) onto ``length`` positions, centred: ``out[o] = sum_m a[o +
    (X - length) // 2 + m length]`` (neural-tangents' ``_same_pad_for_filter_shape_transpose``,
    the transpose of wrap-around padding: a ``CIRCULAR`` transposed window)."""
    size = a.shape[axis]
    lo = (size - length) // 2
    front = (length - lo % length) % length  # index a + front == a - lo (mod length)
    back = -(size + front) % length
    widths = [(0, 0)] * a.ndim
    widths[axis] = (front, back)
    p = ns.pad(a, widths) if front or back else a
    out = None
    for start in range(0, p.shape[axis], length):
        idx = [slice(None)] * a.ndim
        idx[axis] = slice(start, start + length)
        out = p[tuple(idx)] if out is None else out + p[tuple(idx)]
    return out


def transpose_window_mean(ns: Namespace, a: Any, axes: Sequence[int], window: int, stride: int,
                          padding: str) -> Any:
    """The transpose of :func:`window_mean`: covariances after a transposed convolution.

    Each axis in ``axes`` (one: same-position covariances; two: both sides of a pair) is
    dilated by ``stride``, zero padded by :func:`transpose_pads`, and averaged over a window
    shifted jointly on all of them (stride 1); ``CIRCULAR`` is ``VALID`` folded onto ``size
    stride`` positions per axis (:func:`wrap_sum`), as neural-tangents' ``ConvTranspose``.
    """
    size = a.shape[axes[0]]
    lo, hi = transpose_pads(window, stride, "VALID" if padding == "CIRCULAR" else padding)
    for ax in axes:
        a = dilate(ns, a, ax, stride)
    out = window_mean(ns, _pad(ns, a, axes, lo, hi, "SAME"), axes, window, 1, "VALID")
    if padding == "CIRCULAR":
        for ax in axes:
            out = wrap_sum(ns, out, ax, size * stride)
    return out


def diagonal_full(ns: Namespace, d: Any) -> Any:
    """Same-position covariances ``d`` (.., H, W) as a ``"full"`` layout (.., H, W, H, W),
    zero between distinct positions (an unshared convolution's outputs)."""
    h, w = d.shape[-2:]
    eye = ns.reshape(ns.eye(h * w, dtype=d.dtype), (h, w, h, w))
    return d[..., :, :, None, None] * eye


def positional(ns: Namespace, c: Any, mode: str) -> Any:
    """Same-position entries of covariances ``c``: shape ``(.., H, W)``.

    ``mode="diag"`` returns ``c``; ``"full"`` the diagonal ``c[.., h, w, h, w]``.
    """
    if mode == "diag":
        return c
    h, w = c.shape[-2:]
    lead = c.shape[:-4]
    flat = ns.reshape(c, (*lead, h * w, h * w))
    return ns.reshape(ns.diagonal(flat, axis1=-2, axis2=-1), (*lead, h, w))


def self_vars(ns: Namespace, c: Any, mode: Optional[str]) -> tuple[Any, Any]:
    """Variances that broadcast against self covariances ``c`` of shape ``(n, *S)``."""
    if mode != "full":
        return c, c
    var = positional(ns, c, "full")  # (n, H, W)
    return var[:, :, :, None, None], var[:, None, None, :, :]


def pair_vars(ns: Namespace, cov1: Any, cov2: Any, mode: Optional[str]) -> tuple[Any, Any]:
    """Variances that broadcast against pair covariances of shape ``(n1, n2, *S)``."""
    if mode != "full":
        return cov1[:, None], cov2[None, :]
    v1 = positional(ns, cov1, "full")
    v2 = v1 if cov2 is cov1 else positional(ns, cov2, "full")
    return v1[:, None, :, :, None, None], v2[None, :, None, None, :, :]


def diag_mean(ns: Namespace, c: Any) -> Any:
    """Mean over positions of a ``"diag"`` layout: ``(.., H, W) -> (..)``."""
    return ns.mean(c, axis=(-2, -1))


def full_mean(ns: Namespace, c: Any, pairs: bool) -> Any:
    """``pairs=True``: mean over all position pairs ``(.., H, W, H, W) -> (..)`` (global
    average pooling); ``False``: mean of the same-position entries (flattening)."""
    if pairs:
        return ns.mean(c, axis=(-4, -3, -2, -1))
    return ns.mean(positional(ns, c, "full"), axis=(-2, -1))


def input_covariances(ns: Namespace, x1: Any, x2: Any, mode: str) -> tuple[Any, Any, Any]:
    """Input covariances of NHWC images ``x1`` (n1, H, W, C) and ``x2`` (n2, H, W, C).

    Returns ``(pair, self1, self2)``: pair covariances ``(n1, n2, *S)`` and self
    covariances ``(n, *S)``, each ``sum_c x[.., c] x'[.., c] / C`` (``self2 is self1``
    when ``x2`` is None, the symmetric case).
    """
    c = x1.shape[-1]
    other = x1 if x2 is None else x2
    if mode == "diag":
        pair = ns.einsum("ahwc,bhwc->abhw", x1, other) / c
    else:
        pair = ns.einsum("aijc,bklc->abijkl", x1, other) / c
    s1 = self_covariance(ns, x1, mode)
    s2 = s1 if x2 is None else self_covariance(ns, x2, mode)
    return pair, s1, s2


def self_covariance(ns: Namespace, x: Any, mode: str) -> Any:
    """Self covariances ``(n, *S)`` of NHWC images ``x`` (n, H, W, C) in layout ``mode``."""
    c = x.shape[-1]
    if mode == "diag":
        return ns.einsum("ahwc,ahwc->ahw", x, x) / c
    return ns.einsum("aijc,aklc->aijkl", x, x) / c


def entry_floats(mode: str, height: int, width: int) -> int:
    """Floats of one pair's covariance array in ``mode`` at an ``height x width`` image."""
    hw = height * width
    return hw if mode == "diag" else hw * hw

