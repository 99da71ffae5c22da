"""Convolution and pooling layers on NHWC images (neural-tangents' ``stax`` conventions).

``Conv(out_chan, filter_shape, strides, padding, W_std, b_std)``, ``AvgPool``,
``GlobalAvgPool``, ``Flatten`` and ``Unflatten`` compose with ``Dense``, the activations
and the combinators. The kernel state of an image keeps covariances between pixel
positions (:mod:`~ntkscale.kernels.spatial`); which layout an architecture needs is
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

from . import spatial
from .backend import Namespace
from .base import Layer, UnsupportedArchitectureError, _check_weighted, check_nt_axes, layer_type, leaves
from .state import KernelState

__all__ = ["Conv", "AvgPool", "GlobalAvgPool", "SumPool", "GlobalSumPool", "Flatten", "Unflatten", "spatial_mode",
           "image_shape", "check_spatial", "leaves"]


def _pair(value: Any, name: str, layer: str) -> tuple[int, int]:
    try:
        v = tuple(int(x) for x in value)
    except TypeError:
        raise ValueError(f"{layer}: {name} must be two positive ints (height, width), got "
                         f"{value!r}") from None
    if len(v) != 2 or min(v) < 1 or any(int(x) != x for x in value):
        raise ValueError(f"{layer}: {name} must be two positive ints (height, width), got {value!r}")
    return v


def _padding(value: Any, layer: str) -> str:
    p = str(getattr(value, "value", value)).upper()  # a stax.Padding member, or its name
    if p not in spatial.PADDINGS:
        raise ValueError(f"{layer}: padding must be one of {spatial.PADDINGS}, got {value!r}")
    return p


def _need_images(k: KernelState, layer: str) -> None:
    if k.spatial is None:
        raise UnsupportedArchitectureError(
            f"{layer} needs images: pass NHWC inputs (n, H, W, C) or start the architecture "
            "with Unflatten(H, W, C), and put it before Flatten/GlobalAvgPool")


def _map(k: KernelState, fn: Callable[[Any], Any], nngp_only: bool = False) -> dict:
    """``fn`` applied to every covariance of the state (``cov2 is cov1`` preserved)."""
    cov1 = None if k.cov1 is None else fn(k.cov1)
    cov2 = None if k.cov2 is None else (cov1 if k.cov2 is k.cov1 else fn(k.cov2))
    return dict(nngp=fn(k.nngp), ntk=None if k.ntk is None or nngp_only else fn(k.ntk),
                cov1=cov1, cov2=cov2)


# ----------------------------------------------------------------------------
# Conv
# ----------------------------------------------------------------------------
@layer_type()
@dataclass(frozen=True)
class Conv(Layer):
    """2-d convolution over NHWC images, ``Conv(out_chan, filter_shape, strides, padding,
    W_std, b_std, parameterization)``.

    NTK parameterization: ``z = W_std / sqrt(C_in fh fw) * conv(x, W) + b_std * b`` with
    ``W, b ~ N(0, 1)``. Standard: ``W ~ N(0, W_std^2 / (C_in fh fw))``, ``b ~ N(0,
    b_std^2)``; its NTK picks up the fan-in like :class:`Dense`. ``padding``: ``'VALID'``
    (neural-tangents' default), ``'SAME'`` (zeros) or ``'CIRCULAR'`` (wrap-around: the
    kernel is then translation invariant). ``out_chan`` does not enter the kernel.

    neural-tangents' signature, ``filter_shape`` required; its ``dimension_numbers`` (None
    or ``('NHWC', 'HWIO', 'NHWC')``) and ``s`` (``(1, 1)``) are accepted at those values only
    and never enter the spec.
    """

    out_chan: int
    filter_shape: tuple[int, int]
    strides: Optional[tuple[int, int]] = None
    padding: str = "VALID"
    W_std: float = 1.0
    b_std: Optional[float] = None
    dimension_numbers: InitVar[Optional[tuple[str, str, str]]] = None
    parameterization: str = "ntk"
    s: InitVar[tuple[int, int]] = (1, 1)

    def __post_init__(self, dimension_numbers: Any, s: Any) -> None:
        name = _check_weighted(self, "out_chan")
        if dimension_numbers is not None and tuple(dimension_numbers) != ("NHWC", "HWIO", "NHWC"):
            raise UnsupportedArchitectureError(
                f"{name}: dimension_numbers={dimension_numbers!r} is not supported by ntkscale "
                "(only None = ('NHWC', 'HWIO', 'NHWC')); transpose your inputs to NHWC, e.g. "
                "x.transpose(0, 2, 3, 1) for NCHW")
        if tuple(s) != (1, 1):
            raise UnsupportedArchitectureError(
                f"{name}: s={s!r} is not supported by ntkscale for Conv (only s=(1, 1)); set the "
                "width with out_chan instead (Dense supports s)")
        object.__setattr__(self, "filter_shape", _pair(self.filter_shape, "filter_shape", name))
        object.__setattr__(self, "strides", (1, 1) if self.strides is None
                           else _pair(self.strides, "strides", name))
        object.__setattr__(self, "padding", _padding(self.padding, name))

    def window(self, ns: Namespace, a: Any, mode: str) -> Any:
        """The joint filter-window mean ``A`` of covariances ``a`` in layout ``mode``."""
        (fh, fw), (sh, sw) = self.filter_shape, self.strides
        h_axes, w_axes = ((-2,), (-1,)) if mode == "diag" else ((-4, -2), (-3, -1))
        a = spatial.window_mean(ns, a, h_axes, fh, sh, self.padding)
        return spatial.window_mean(ns, a, w_axes, fw, sw, self.padding)

    def kernel(self, ns: Namespace, k: KernelState) -> KernelState:
        _need_images(k, "Conv")
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
            fan_in = k.width * self.filter_shape[0] * self.filter_shape[1]
            ntk = fan_in * avg["nngp"] + w2 * avg["ntk"] + (0.0 if self.b_std is None else 1.0)
        cov1 = None if k.cov1 is None else w2 * avg["cov1"] + b2
        cov2 = None if k.cov2 is None else (cov1 if k.cov2 is k.cov1 else w2 * avg["cov2"] + b2)
        return k.replace(nngp=nngp, ntk=ntk, cov1=cov1, cov2=cov2, width=self.out_chan)

    def gaussian(self, g: Any) -> bool:
        """A wide ``Conv`` layer's outputs are Gaussian, whatever its inputs."""
        return True

    def out_shape(self, shape: tuple) -> tuple:
        (fh, fw), (sh, sw) = self.filter_shape, self.strides
        return (*shape[:-3], spatial.out_size(shape[-3], fh, sh, self.padding),
                spatial.out_size(shape[-2], fw, sw, self.padding), self.out_chan)

    def spec(self) -> dict:
        return {"layer": "Conv", "out_chan": self.out_chan, "filter_shape": list(self.filter_shape),
                "strides": list(self.strides), "padding": self.padding, "W_std": self.W_std,
                "b_std": self.b_std, "parameterization": self.parameterization}


# ----------------------------------------------------------------------------
# Pooling and reshaping
# ----------------------------------------------------------------------------
@layer_type()
@dataclass(frozen=True)
class AvgPool(Layer):
    """Average pooling, ``AvgPool(window_shape, strides=None, padding='VALID')``, with
    neural-tangents' (and ``jax.example_libraries.stax``'s) defaults: ``strides=None`` means
    stride (1, 1), not the window; write ``AvgPool((2, 2), (2, 2))`` for non-overlapping
    windows.

    With ``'SAME'`` the zero padding counts in the mean (neural-tangents'
    ``normalize_edges=False``). Needs the ``"full"`` layout: a pooled covariance is the
    mean over pairs of positions of the two windows.
    """

    window_shape: tuple[int, int]
    strides: Optional[tuple[int, int]] = None
    padding: str = "VALID"
    normalize_edges: InitVar[bool] = False
    batch_axis: InitVar[int] = 0
    channel_axis: InitVar[int] = -1

    def __post_init__(self, normalize_edges: bool = False, batch_axis: int = 0,
                      channel_axis: int = -1) -> None:
        kind = type(self).__name__
        w = _pair(self.window_shape, "window_shape", kind)
        object.__setattr__(self, "window_shape", w)
        object.__setattr__(self, "strides", (1, 1) if self.strides is None
                           else _pair(self.strides, "strides", kind))
        object.__setattr__(self, "padding", _padding(self.padding, kind))
        check_nt_axes(kind, batch_axis=batch_axis, channel_axis=channel_axis)
        if normalize_edges and self.padding == "SAME":  # VALID/CIRCULAR windows have no edges
            raise UnsupportedArchitectureError(
                f"{kind}: normalize_edges=True with padding='SAME' is not supported by ntkscale "
                "(zero padding counts in the mean, NT's default normalize_edges=False); use "
                "padding='VALID' or 'CIRCULAR', where normalize_edges changes nothing")

    def kernel(self, ns: Namespace, k: KernelState) -> KernelState:
        _need_images(k, "AvgPool")
        if k.spatial != "full":  # spatial_mode() chooses "full" whenever a pool is present
            raise UnsupportedArchitectureError("AvgPool needs the full pixel-pair layout")
        (wh, ww), (sh, sw) = self.window_shape, self.strides

        def pool(a: Any) -> Any:
            for ax in (-4, -2):  # each side over its own window: separable per axis
                a = spatial.window_mean(ns, a, (ax,), wh, sh, self.padding)
            for ax in (-3, -1):
                a = spatial.window_mean(ns, a, (ax,), ww, sw, self.padding)
            return a

        return k.replace(**_map(k, pool))

    def out_shape(self, shape: tuple) -> tuple:
        (wh, ww), (sh, sw) = self.window_shape, self.strides
        return (*shape[:-3], spatial.out_size(shape[-3], wh, sh, self.padding),
                spatial.out_size(shape[-2], ww, sw, self.padding), shape[-1])

    def finite(self, jax: Any, jnp: Any) -> Callable[[Any], Any]:
        (wh, ww), (sh, sw) = self.window_shape, self.strides
        pad = "SAME" if self.padding != "VALID" else "VALID"

        def f(x: Any) -> Any:
            if self.padding == "CIRCULAR":
                x = _circular_pad(jnp, x, (wh, ww), (sh, sw))
            s = jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, wh, ww, 1), (1, sh, sw, 1),
                                      "VALID" if self.padding == "CIRCULAR" else pad)
            return s / (wh * ww)

        return f

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
        _need_images(k, "GlobalAvgPool")
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
        scale = float(self.window_shape[0] * self.window_shape[1]) ** 2
        k = AvgPool.kernel(self, ns, k)
        return k.replace(**_map(k, lambda a: scale * a))

    def finite(self, jax: Any, jnp: Any) -> Callable[[Any], Any]:
        mean, size = AvgPool.finite(self, jax, jnp), self.window_shape[0] * self.window_shape[1]
        return lambda x: size * mean(x)

    def spec(self) -> dict:
        return {**AvgPool.spec(self), "layer": "SumPool"}


@layer_type()
@dataclass(frozen=True)
class GlobalSumPool(GlobalAvgPool):
    """Sum over all positions, ``GlobalSumPool(batch_axis=0, channel_axis=-1)``
    (neural-tangents): ``GlobalAvgPool`` times ``H W``, kernels times ``(H W)^2``."""

    def kernel(self, ns: Namespace, k: KernelState) -> KernelState:
        _need_images(k, "GlobalSumPool")
        scale = float(k.nngp.shape[-1] * k.nngp.shape[-2]) ** 2  # full layout: (..., H, W, H, W)
        k = GlobalAvgPool.kernel(self, ns, k)
        return k.replace(**_map(k, lambda a: scale * a))

    def finite(self, jax: Any, jnp: Any) -> Callable[[Any], Any]:
        return lambda x: jnp.sum(x, axis=(-3, -2))

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


def _circular_pad(jnp: Any, x: Any, window: tuple[int, int], strides: tuple[int, int]) -> Any:
    """Wrap-around padding of NHWC ``x`` by XLA's SAME amounts (then a VALID window)."""
    widths = [(0, 0)]
    for size, w, s in zip(x.shape[1:3], window, strides):
        widths.append(spatial.pads(size, w, s, "CIRCULAR"))
    return jnp.pad(x, widths + [(0, 0)], mode="wrap")


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


def check_spatial(layer: Layer) -> None:
    """Images must be unflattened first and reduced (Flatten/GlobalAvgPool) before the end.

    Raises
    ------
    UnsupportedArchitectureError
        ``Unflatten`` not first, a ``Conv``/``AvgPool`` after the images were reduced, or an
        architecture whose output is still an image (neural-tangents would return per-pixel
        kernels; a Gram matrix needs one number per pair).
    """
    if spatial_mode(layer) is None:
        return
    chain = layer.flat()
    for pos, leaf in enumerate(leaves(layer)):
        if isinstance(leaf, Unflatten) and not (pos == 0 and chain[0] is leaf):
            raise UnsupportedArchitectureError("Unflatten must be the first layer of the architecture")
    images = True  # inputs are images (Unflatten first, or NHWC inputs to kernel_fn)

    def walk(seq: list[Layer], images: bool) -> bool:
        for leaf in seq:
            subs = leaf.sublayers()  # in a flat chain only parallel combinators are left
            if subs is not None:
                outs = {walk(sub.flat(), images) for sub in subs}
                if len(outs) > 1:
                    raise UnsupportedArchitectureError(
                        "parallel branches must all keep images or all reduce them")
                images = outs.pop()
            elif (isinstance(leaf, (Conv, AvgPool)) or leaf.positions is not None) and not images:
                raise UnsupportedArchitectureError(
                    f"{type(leaf).__name__} after Flatten/GlobalAvgPool: the images were already "
                    "reduced to features")
            elif isinstance(leaf, Flatten):
                images = False  # on features a no-op (neural-tangents)
            elif isinstance(leaf, GlobalAvgPool):
                if not images:
                    raise UnsupportedArchitectureError(
                        f"{type(leaf).__name__} applied to features, not images")
                images = False
        return images

    if walk(chain, images):
        raise UnsupportedArchitectureError(
            "the architecture ends with images: add Flatten() or GlobalAvgPool() (and a Dense "
            "readout) so each pair of inputs gets one kernel value")

