"""Arguments and finite-network helpers of the window layers (``Conv``, ``AvgPool``,
``SumPool``) for images (two spatial axes) and sequences (one): pure, any namespace.

A window layer takes neural-tangents' shapes: ``filter_shape``/``window_shape`` of two
ints ``(fh, fw)`` acts on NHWC images ``(n, H, W, C)``, of one int ``(f,)`` on sequences
``(n, T, C)``. The kernel state reads a sequence as an image of height 1 (``Unflatten(1,
T, C)``, :func:`~ntkscale.kernels.images.from_images`), so a 1-d layer is the 2-d one with
window ``(1, f)`` and stride ``(1, s)`` (:func:`as_2d`), exact because a height-1 window
with stride 1 on a height-1 axis is the identity under every padding. The finite
network's arrays keep their own rank: a window acts on the trailing spatial axes (the
last ``len(window)`` before the channels), so a 1-d layer also runs on ``(n, 1, T, C)``.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from . import spatial
from .state import KernelState

__all__ = ["FilterGeometry", "shape_arg", "padding_arg", "channels_last", "as_2d", "window_out_shape", "transpose_out_shape",
           "map_state", "height", "circular_pad", "finite_pool"]


def shape_arg(value: Any, name: str, layer: str, rank: Optional[int] = None) -> tuple[int, ...]:
    """``value`` as a tuple of one (sequences) or two (images) positive ints.

    ``rank``: the length it must have (a layer's ``strides`` must match its window).

    Raises
    ------
    ValueError
        Not a sequence of one or two positive ints (or not of length ``rank``).
    """
    what = ("one positive int (sequences) or two (images: height, width)" if rank is None
            else f"{rank} positive int{'s' if rank > 1 else ''}, like the window")
    try:
        v = tuple(int(x) for x in value)
        exact = all(int(x) == x for x in value)
    except (TypeError, ValueError):
        raise ValueError(f"{layer}: {name} must be {what}, got {value!r}") from None
    if not exact or len(v) not in ((1, 2) if rank is None else (rank,)) or min(v) < 1:
        raise ValueError(f"{layer}: {name} must be {what}, got {value!r}")
    return v


def padding_arg(value: Any, layer: str) -> str:
    """A ``stax.Padding`` member or its name, upper case; one of :data:`spatial.PADDINGS`."""
    p = str(getattr(value, "value", value)).upper()
    if p not in spatial.PADDINGS:
        raise ValueError(f"{layer}: padding must be one of {spatial.PADDINGS}, got {value!r}")
    return p


def channels_last(dn: Any, rank: int) -> bool:
    """Whether ``dimension_numbers`` ``dn`` is the channels-last layout ntkscale computes:
    ``('NHWC', 'HWIO', 'NHWC')`` in 2-d, ``('NXC', 'XIO', 'NXC')`` (one letter X) in 1-d."""
    dn = tuple(dn)
    if rank == 2:
        return dn == ("NHWC", "HWIO", "NHWC")
    lhs, rhs, out = (str(v) for v in dn) if len(dn) == 3 else ("", "", "")
    return (len(lhs) == 3 and lhs == out and lhs[0] == "N" and lhs[2] == "C"
            and lhs[1] not in "NCIO" and rhs == lhs[1] + "IO")


def as_2d(v: tuple[int, ...]) -> tuple[int, int]:
    """A window or strides on the kernel state's ``(H, W)`` axes: ``(f,) -> (1, f)``."""
    return (1, v[0]) if len(v) == 1 else (v[0], v[1])


class FilterGeometry:
    """``filter_2d``, ``strides_2d`` and ``fan`` of a layer with ``filter_shape`` and ``strides``
    (1-d or 2-d): shared by ``Conv``, ``ConvLocal`` and ``ConvTranspose`` (a mixin; no fields)."""

    filter_shape: tuple[int, ...]
    strides: Optional[tuple[int, ...]]

    @property
    def filter_2d(self) -> tuple[int, int]:
        """``(fh, fw)`` on the kernel state's axes (``(1, f)`` for a 1-d filter)."""
        return as_2d(self.filter_shape)

    @property
    def strides_2d(self) -> tuple[int, int]:
        return as_2d(self.strides)

    @property
    def fan(self) -> int:
        """Positions in a filter: ``fh fw`` (2-d) or ``f`` (1-d)."""
        return self.filter_2d[0] * self.filter_2d[1]


def window_out_shape(shape: tuple, window: tuple[int, ...], strides: tuple[int, ...],
                     padding: str, channels: Optional[int] = None) -> tuple:
    """Finite-network output shape of a window over the trailing spatial axes of ``shape``
    (``(n, H, W, C)`` or ``(n, T, C)``; a 1-d window on ``(n, 1, T, C)`` moves along T)."""
    k = len(window)
    sizes = tuple(spatial.out_size(s, w, st, padding) for s, w, st in
                  zip(shape[-1 - k:-1], window, strides))
    return (*shape[:-1 - k], *sizes, shape[-1] if channels is None else channels)


def transpose_out_shape(shape: tuple, window: tuple[int, ...], strides: tuple[int, ...],
                        padding: str, channels: int) -> tuple:
    """Finite-network output shape of a transposed window (``lax.conv_transpose``; ``CIRCULAR``
    as ``SAME``) over the trailing spatial axes of ``shape``, like :func:`window_out_shape`."""
    k = len(window)
    sizes = tuple(spatial.transpose_out_size(s, w, st, padding) for s, w, st in
                  zip(shape[-1 - k:-1], window, strides))
    return (*shape[:-1 - k], *sizes, channels)


def map_state(k: KernelState, fn: Callable[[Any], Any]) -> dict:
    """``fn`` applied to every covariance of the state (``cov2 is cov1`` preserved)."""
    cov1 = None if k.cov1 is None else fn(k.cov1)
    cov2 = None if k.cov2 is None else (cov1 if k.cov2 is k.cov1 else fn(k.cov2))
    return dict(nngp=fn(k.nngp), ntk=None if k.ntk is None else fn(k.ntk), cov1=cov1, cov2=cov2)


def height(k: KernelState) -> int:
    """Image height ``H`` of a spatial state (1 for sequences): trailing axes ``(H, W)``
    in the ``"diag"`` layout, ``(H, W, H, W)`` in ``"full"``."""
    return int(k.nngp.shape[-2] if k.spatial == "diag" else k.nngp.shape[-4])


def circular_pad(jnp: Any, x: Any, window: tuple[int, ...], strides: tuple[int, ...]) -> Any:
    """Wrap-around padding of ``x`` (n, ..., C) by XLA's SAME amounts on its trailing
    ``len(window)`` spatial axes (then a VALID window, as neural-tangents)."""
    k = len(window)
    widths = [(0, 0)] * (x.ndim - 1 - k)
    for size, w, s in zip(x.shape[-1 - k:-1], window, strides):
        widths.append(spatial.pads(size, w, s, "CIRCULAR"))
    return jnp.pad(x, widths + [(0, 0)], mode="wrap")


def finite_pool(jax: Any, jnp: Any, x: Any, window: tuple[int, ...], strides: tuple[int, ...],
                padding: str) -> Any:
    """Window sums of ``x`` (n, ..., C) over its trailing ``len(window)`` spatial axes, zero
    padded (``SAME``), wrapped (``CIRCULAR``) or not (``VALID``)."""
    if padding == "CIRCULAR":
        x, padding = circular_pad(jnp, x, window, strides), "VALID"
    ones = (1,) * (x.ndim - 1 - len(window))
    return jax.lax.reduce_window(x, 0.0, jax.lax.add, (*ones, *window, 1), (*ones, *strides, 1),
                                 padding)
