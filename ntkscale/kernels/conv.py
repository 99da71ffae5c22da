"""Convolution and pooling layers on NHWC images and ``(n, T, C)`` sequences
(neural-tangents' ``stax`` conventions; 1-d windows on sequences: :mod:`~ntkscale.kernels.windows`).

``Conv(out_chan, filter_shape, strides, padding, W_std, b_std)``, ``AvgPool``,
``GlobalAvgPool``, ``Flatten`` and ``Unflatten`` compose with ``Dense``, the activations
and the combinators. The kernel state of an image (a sequence: height 1) keeps
covariances between positions (:mod:`~ntkscale.kernels.spatial`); which layout an architecture needs is
decided once from its layers (:func:`spatial_mode`):

* no pooling, ``Flatten`` readout: ``"diag"`` (same-position pairs; ~``H W`` per entry);
* any ``AvgPool``/``GlobalAvgPool``: ``"full"`` (all position pairs; ~``(H W)^2``).

Kernel rules (NTK parameterization, ``A`` = mean over the filter window, shifted jointly
on both sides of a pair): ``nngp' = W_std^2 A(nngp) + b_std^2``, ``ntk' = nngp' +
W_std^2 A(ntk)``. Pooling averages each side over its own window (a double sum over
position pairs); it has no parameters, so NNGP and NTK pool alike.

References
----------
Arora et al. (2019), "On Exact Computation with an Infinitely Wide Neural Net" (CNTK).
Novak et al. (2019), "Bayesian Deep Convolutional Networks with Many Channels are GPs".
Shankar et al. (2020), "Neural Kernels Without Tangents", ICML (Myrtle architectures).
"""

from __future__ import annotations

from dataclasses import InitVar, dataclass
from typing import Any, Callable, Optional

from . import spatial, windows
from .backend import Namespace
from .base import (Layer, UnsupportedArchitectureError, check_conv_args, check_nt_axes, layer_type, leaves,
                   need_images)
from .state import KernelState

__all__ = ["Conv", "AvgPool", "GlobalAvgPool", "SumPool", "GlobalSumPool", "Flatten", "Unflatten", "spatial_mode",
           "image_shape", "leaves"]


_map = windows.map_state


@layer_type()
@dataclass(frozen=True)
class Conv(windows.FilterGeometry, Layer):
    """Convolution over NHWC images (2-d ``filter_shape``) or sequences ``(n, T, C)`` (1-d),
    ``Conv(out_chan, filter_shape, strides, padding, W_std, b_std, parameterization)``.

    NTK parameterization: ``z = W_std / sqrt(C_in |f|) * conv(x, W) + b_std * b`` with
    ``W, b ~ N(0, 1)`` (``|f|`` = ``fh fw``, or ``f`` in 1-d). Standard: ``W ~ N(0,
    W_std^2 / (C_in |f|))``, ``b ~ N(0, b_std^2)``; its NTK picks up the fan-in like
    :class:`Dense`. ``padding``: ``'VALID'`` (neural-tangents' default), ``'SAME'``
    (zeros) or ``'CIRCULAR'`` (wrap-around: the kernel is then translation invariant).
    ``strides`` None: ones. ``out_chan`` does not enter the kernel. A 1-d layer is the 2-d
    one with window ``(1, f)`` on the state's height-1 axis (:mod:`~ntkscale.kernels.windows`).

    neural-tangents' signature, ``filter_shape`` required; its ``dimension_numbers`` (None,
    channels last: ``('NHWC', 'HWIO', 'NHWC')``, or ``('NXC', 'XIO', 'NXC')`` for any letter X
    in 1-d) and ``s`` (``(1, 1)``) are accepted at those values only and never enter the spec.
    """

    out_chan: int
    filter_shape: tuple[int, ...]
    strides: Optional[tuple[int, ...]] = None
    padding: str = "VALID"
    W_std: float = 1.0
    b_std: Optional[float] = None
    dimension_numbers: InitVar[Optional[tuple[str, str, str]]] = None
    parameterization: str = "ntk"
    s: InitVar[tuple[int, int]] = (1, 1)

    def __post_init__(self, dimension_numbers: Any, s: Any) -> None:
        check_conv_args(self, dimension_numbers, s)

    def window(self, ns: Namespace, a: Any, mode: str) -> Any:
        """The joint filter-window mean ``A`` of covariances ``a`` in layout ``mode``."""
        (fh, fw), (sh, sw) = self.filter_2d, self.strides_2d
        h_axes, w_axes = ((-2,), (-1,)) if mode == "diag" else ((-4, -2), (-3, -1))
        a = spatial.window_mean(ns, a, h_axes, fh, sh, self.padding)
        return spatial.window_mean(ns, a, w_axes, fw, sw, self.padding)

    def kernel(self, ns: Namespace, k: KernelState) -> KernelState:
        need_images(k, "Conv", len(self.filter_shape))
        w2 = self.W_std ** 2
        b2 = 0.0 if self.b_std is None else self.b_std ** 2
        mode = k.spatial
        avg = _map(k, lambda a: self.window(ns, a, mode))
        nngp = w2 * avg["nngp"] + b2
        if k.ntk is None:
            ntk = None
        elif self.parameterization == "ntk":
            ntk = nngp + w2 * avg["ntk"]
        else:
            ntk = k.width * self.fan * avg["nngp"] + w2 * avg["ntk"] + (0.0 if self.b_std is None else 1.0)
        cov1 = None if k.cov1 is None else w2 * avg["cov1"] + b2
        cov2 = None if k.cov2 is None else (cov1 if k.cov2 is k.cov1 else w2 * avg["cov2"] + b2)
        return k.replace(nngp=nngp, ntk=ntk, cov1=cov1, cov2=cov2, width=self.out_chan)

    def gaussian(self, g: Any) -> bool:
        """A wide ``Conv`` layer's outputs are Gaussian, whatever its inputs."""
        return True

    def out_shape(self, shape: tuple) -> tuple:
        return windows.window_out_shape(shape, self.filter_shape, self.strides, self.padding,
                                        self.out_chan)

    def spec(self) -> dict:
        return {"layer": "Conv", "out_chan": self.out_chan, "filter_shape": list(self.filter_shape),
                "strides": list(self.strides), "padding": self.padding, "W_std": self.W_std,
                "b_std": self.b_std, "parameterization": self.parameterization}


@layer_type()
@dataclass(frozen=True)
class AvgPool(Layer):
    """Average pooling, ``AvgPool(window_shape, strides=None, padding='VALID')``, over NHWC
    images (2-d window) or sequences ``(n, T, C)`` (1-d), with neural-tangents' (and
    ``jax.example_libraries.stax``'s) defaults: ``strides=None`` means stride 1, not the
    window; write ``AvgPool((2, 2), (2, 2))`` (or ``AvgPool((2,), (2,))``) for
    non-overlapping windows.

    With ``'SAME'`` the zero padding counts in the mean (neural-tangents'
    ``normalize_edges=False``). Needs the ``"full"`` layout: a pooled covariance is the
    mean over pairs of positions of the two windows.
    """

    window_shape: tuple[int, ...]
    strides: Optional[tuple[int, ...]] = None
    padding: str = "VALID"
    normalize_edges: InitVar[bool] = False
    batch_axis: InitVar[int] = 0
    channel_axis: InitVar[int] = -1

    def __post_init__(self, normalize_edges: bool = False, batch_axis: int = 0,
                      channel_axis: int = -1) -> None:
        kind = type(self).__name__
        w = windows.shape_arg(self.window_shape, "window_shape", kind)
        object.__setattr__(self, "window_shape", w)
        object.__setattr__(self, "strides", (1,) * len(w) if self.strides is None
                           else windows.shape_arg(self.strides, "strides", kind, len(w)))
        object.__setattr__(self, "padding", windows.padding_arg(self.padding, kind))
        check_nt_axes(kind, batch_axis=batch_axis, channel_axis=channel_axis)
        if normalize_edges and self.padding == "SAME":  # VALID/CIRCULAR windows have no edges
            raise UnsupportedArchitectureError(
                f"{kind}: normalize_edges=True with padding='SAME' is not supported by ntkscale "
                "(zero padding counts in the mean, NT's default normalize_edges=False); use "
                "padding='VALID' or 'CIRCULAR', where normalize_edges changes nothing")

    @property
    def window_2d(self) -> tuple[int, int]:
        """``(wh, ww)`` on the kernel state's axes (``(1, w)`` for a 1-d window)."""
        return windows.as_2d(self.window_shape)

    @property
    def strides_2d(self) -> tuple[int, int]:
        return windows.as_2d(self.strides)

    @property
    def size(self) -> int:
        """Positions in a window: ``wh ww`` (2-d) or ``w`` (1-d)."""
        return self.window_2d[0] * self.window_2d[1]

    def kernel(self, ns: Namespace, k: KernelState) -> KernelState:
        need_images(k, type(self).__name__, len(self.window_shape))
        if k.spatial != "full":  # spatial_mode() chooses "full" whenever a pool is present
            raise UnsupportedArchitectureError("AvgPool needs the full pixel-pair layout")
        (wh, ww), (sh, sw) = self.window_2d, self.strides_2d

        def pool(a: Any) -> Any:
            for ax in (-4, -2):  # each side over its own window: separable per axis
                a = spatial.window_mean(ns, a, (ax,), wh, sh, self.padding)
            for ax in (-3, -1):
                a = spatial.window_mean(ns, a, (ax,), ww, sw, self.padding)
            return a

        return k.replace(**_map(k, pool))

    def out_shape(self, shape: tuple) -> tuple:
        return windows.window_out_shape(shape, self.window_shape, self.strides, self.padding)

    def finite(self, jax: Any, jnp: Any) -> Callable[[Any], Any]:
        return lambda x: windows.finite_pool(jax, jnp, x, self.window_shape, self.strides,
                                             self.padding) / self.size

    def spec(self) -> dict:
        return {"layer": "AvgPool", "window_shape": list(self.window_shape),
                "strides": list(self.strides), "padding": self.padding}


@layer_type()
@dataclass(frozen=True)
class GlobalAvgPool(Layer):
    """Mean over all positions: images ``(n, H, W, C)`` or sequences ``(n, T, C)`` -> features
    ``(n, C)`` (a sequence is an image of height 1 to the kernel; ``batch_axis``/``channel_axis``:
    neural-tangents' keywords, defaults only)."""

    batch_axis: InitVar[int] = 0
    channel_axis: InitVar[int] = -1

    def __post_init__(self, batch_axis: int = 0, channel_axis: int = -1) -> None:
        check_nt_axes(type(self).__name__, batch_axis=batch_axis, channel_axis=channel_axis)

    def kernel(self, ns: Namespace, k: KernelState) -> KernelState:
        need_images(k, "GlobalAvgPool")
        if k.spatial != "full":
            raise UnsupportedArchitectureError("GlobalAvgPool needs the full pixel-pair layout")
        return k.replace(**_map(k, lambda a: spatial.full_mean(ns, a, pairs=True)), spatial=None)

    def out_shape(self, shape: tuple) -> tuple:
        return (shape[0], shape[-1])

    def finite(self, jax: Any, jnp: Any) -> Callable[[Any], Any]:
        # every axis between batch and channels: (H, W) of images, T of sequences
        return lambda x: jnp.mean(x, axis=tuple(range(1, x.ndim - 1)))

    def spec(self) -> dict:
        return {"layer": "GlobalAvgPool"}


@layer_type()
@dataclass(frozen=True)
class Flatten(Layer):
    """Images ``(n, H, W, C)`` -> features ``(n, H W C)`` (row-major, like NumPy's reshape).

    The kernel of the flattened features is the mean over positions of the same-position
    covariances; the width (for a following standard-parameterized ``Dense``) is ``H W C``.
    On feature rows ``(n, d)`` it is a no-op, as in neural-tangents. ``batch_axis`` and
    ``batch_axis_out`` (NT's keywords) are accepted at their default 0 only.
    """

    batch_axis: InitVar[int] = 0
    batch_axis_out: InitVar[int] = 0

    def __post_init__(self, batch_axis: int = 0, batch_axis_out: int = 0) -> None:
        check_nt_axes("Flatten", batch_axis=batch_axis, batch_axis_out=batch_axis_out)

    def kernel(self, ns: Namespace, k: KernelState) -> KernelState:
        if k.spatial is None:  # feature rows: nothing to flatten (neural-tangents: a no-op)
            return k
        h, w = k.nngp.shape[-2:]
        if k.spatial == "diag":
            out = _map(k, lambda a: spatial.diag_mean(ns, a))
        else:
            out = _map(k, lambda a: spatial.full_mean(ns, a, pairs=False))
        return k.replace(**out, spatial=None, width=k.width * h * w)

    def out_shape(self, shape: tuple) -> tuple:
        size = 1
        for v in shape[1:]:
            size *= v
        return (shape[0], size)

    def finite(self, jax: Any, jnp: Any) -> Callable[[Any], Any]:
        return lambda x: x.reshape(x.shape[0], -1)

    def spec(self) -> dict:
        return {"layer": "Flatten"}


@layer_type()
@dataclass(frozen=True)
class SumPool(AvgPool):
    """Sum pooling, ``SumPool(window_shape, strides=None, padding='VALID', batch_axis=0,
    channel_axis=-1)`` (neural-tangents): ``AvgPool`` times the window size ``wh ww``, so
    its kernels are ``AvgPool``'s times ``(wh ww)^2`` (zero padding counts, as NT)."""

    def kernel(self, ns: Namespace, k: KernelState) -> KernelState:
        scale = float(self.size) ** 2
        k = AvgPool.kernel(self, ns, k)
        return k.replace(**_map(k, lambda a: scale * a))

    def finite(self, jax: Any, jnp: Any) -> Callable[[Any], Any]:
        return lambda x: windows.finite_pool(jax, jnp, x, self.window_shape, self.strides,
                                             self.padding)

    def spec(self) -> dict:
        return {**AvgPool.spec(self), "layer": "SumPool"}


@layer_type()
@dataclass(frozen=True)
class GlobalSumPool(GlobalAvgPool):
    """Sum over all positions, ``GlobalSumPool(batch_axis=0, channel_axis=-1)``
    (neural-tangents): ``GlobalAvgPool`` times ``H W``, kernels times ``(H W)^2``."""

    def kernel(self, ns: Namespace, k: KernelState) -> KernelState:
        need_images(k, "GlobalSumPool")
        scale = float(k.nngp.shape[-1] * k.nngp.shape[-2]) ** 2  # full layout: (..., H, W, H, W)
        k = GlobalAvgPool.kernel(self, ns, k)
        return k.replace(**_map(k, lambda a: scale * a))

    def finite(self, jax: Any, jnp: Any) -> Callable[[Any], Any]:
        return lambda x: jnp.sum(x, axis=tuple(range(1, x.ndim - 1)))  # (H, W) or T

    def spec(self) -> dict:
        return {"layer": "GlobalSumPool"}


@layer_type()
@dataclass(frozen=True)
class Unflatten(Layer):
    """Rows ``(n, H W C)`` read as NHWC images ``(n, H, W, C)``: the first layer of an image
    architecture whose inputs are stored flattened (every Gram store, every job file).

    ``kernel_fn`` also accepts 4-d NHWC inputs directly, like neural-tangents; then this
    layer is optional (and, if present, must match the images' shape).
    """

    height: int
    width: int
    channels: int = 1

    def __post_init__(self) -> None:
        for name in ("height", "width", "channels"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"Unflatten: {name} must be a positive int, got {v!r}")

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.height, self.width, self.channels

    @property
    def size(self) -> int:
        return self.height * self.width * self.channels

    def kernel(self, ns: Namespace, k: KernelState) -> KernelState:
        if k.spatial is None:
            raise UnsupportedArchitectureError("Unflatten must be the first layer of the architecture")
        return k  # the input state was built from the images already (api._input_state)

    def out_shape(self, shape: tuple) -> tuple:
        if shape[-1] != self.size:
            raise ValueError(f"Unflatten{self.shape}: inputs have {shape[-1]} features, "
                             f"expected H*W*C = {self.size}")
        return (*shape[:-1], *self.shape)

    def finite(self, jax: Any, jnp: Any) -> Callable[[Any], Any]:
        return lambda x: x.reshape(x.shape[0], *self.shape) if x.ndim == 2 else x


# ----------------------------------------------------------------------------
# Architecture analysis
# ----------------------------------------------------------------------------
def spatial_mode(layer: Layer) -> Optional[str]:
    """Covariance layout the architecture needs: None (no images), ``"diag"`` or ``"full"``."""
    every = leaves(layer)
    if any(isinstance(leaf, (AvgPool, GlobalAvgPool)) or leaf.positions == "full" for leaf in every):
        return "full"
    # Flatten needs the per-position layout on positional inputs (a Dense before it acts on
    # channels); on (n, d) rows it is a no-op (images.from_images drops the layout then)
    if any(isinstance(leaf, (Conv, Flatten, Unflatten)) or leaf.positions == "diag" for leaf in every):
        return "diag"
    return None


def image_shape(layer: Layer) -> Optional[tuple[int, int, int]]:
    """``(H, W, C)`` of the leading :class:`Unflatten`, or None."""
    first = layer.flat()[0] if layer.flat() else None
    return first.shape if isinstance(first, Unflatten) else None
