"""Layer normalisation, ``LayerNorm`` (neural-tangents' ``stax.LayerNorm``).

For features ``(n, d)``, sequences ``(n, T, C)`` and images ``(n, H, W, C)``. In the
infinite-width limit the per-position mean over channels vanishes and the variance over
channels converges to the position's variance, so the layer divides every covariance
by the square roots of the two variances it pairs:

    nngp'[x1, x2, p1, p2] = nngp[x1, x2, p1, p2] / sqrt((eps + v1[p1]) (eps + v2[p2]))

and the NTK the same (no parameters). Normalising over positions too (``axis`` holding
spatial axes besides the channels) replaces ``v[p]`` by its mean over those axes.

References
----------
Ba, Kiros & Hinton (2016), "Layer Normalization", arXiv:1607.06450.
Novak et al. (2020), "Neural Tangents", ICLR (``stax.LayerNorm`` and its kernel rule).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from . import spatial
from .backend import Namespace
from .base import Layer, UnsupportedArchitectureError, _check_float, layer_type
from .state import KernelState

__all__ = ["LayerNorm"]

_AXIS_HINT = ("LayerNorm: ntkscale reads axis counted from the trailing channel axis: -1 "
              "(channels, every input rank), (-2, -1) for sequences (n, T, C) or rows of images, "
              "(-3, -2, -1) for images (n, H, W, C); 1 only for feature vectors (n, d)")


def _axes(axis: Any) -> tuple[int, ...]:
    vals = (axis,) if isinstance(axis, int) and not isinstance(axis, bool) else tuple(axis)
    out = []
    for a in vals:
        if not isinstance(a, int) or isinstance(a, bool):
            raise ValueError(f"LayerNorm: axis must be an int or a sequence of ints, got {axis!r}")
        out.append(a)
    if not out or len(set(out)) != len(out):
        raise ValueError(f"LayerNorm: axis must name distinct axes, got {axis!r}")
    return tuple(sorted(out))


@layer_type()
@dataclass(frozen=True)
class LayerNorm(Layer):
    """``LayerNorm(axis=-1, eps=1e-12, batch_axis=0, channel_axis=-1)``, neural-tangents'
    signature and defaults: ``(x - mean) / sqrt(eps + var)`` over ``axis``.

    Supported (kernel and finite network): ``batch_axis=0``, ``channel_axis=-1`` and an
    ``axis`` that holds the channels (neural-tangents requires that too: a wide limit exists
    only then) plus, optionally, trailing spatial axes, counted from the end: ``-1``,
    ``(-2, -1)``, ``(-3, -2, -1)``. A sequence is an image of height 1 to the kernel, so
    ``(-2, -1)`` normalises a sequence over ``(T, C)`` and an image over ``(W, C)``.
    Positive axes other than ``axis=1`` on feature vectors are refused (their meaning
    depends on the input rank, which a flattened Gram store does not keep), as are the batch
    axis (a kernel tile sees only its rows) and other ``batch_axis``/``channel_axis``.
    """

    axis: Any = -1
    eps: float = 1e-12
    batch_axis: int = 0
    channel_axis: int = -1

    def __post_init__(self) -> None:
        object.__setattr__(self, "eps", _check_float("eps", self.eps, nonneg=True, layer="LayerNorm"))
        if self.batch_axis != 0 or self.channel_axis != -1:
            raise UnsupportedArchitectureError(
                f"LayerNorm: ntkscale supports batch_axis=0 and channel_axis=-1 (NT's defaults: "
                f"batch first, channels last), got batch_axis={self.batch_axis!r}, "
                f"channel_axis={self.channel_axis!r}; move the axes of the inputs instead")
        axes = _axes(self.axis)
        if 0 in axes:
            raise UnsupportedArchitectureError(
                "LayerNorm: normalising over the batch axis (0) couples all inputs; ntkscale's "
                "kernels are computed tile by tile and do not support it")
        if axes == (1,):
            pass  # feature vectors (n, d); checked against the state in kernel()
        elif any(a > 0 for a in axes):
            raise UnsupportedArchitectureError(f"{_AXIS_HINT}; got axis={self.axis!r}")
        elif -1 not in axes:
            raise UnsupportedArchitectureError(
                f"LayerNorm: axis must include the channel axis -1 (without it the wide limit "
                f"has no kernel; neural-tangents refuses it too), got axis={self.axis!r}")
        elif axes != tuple(range(-len(axes), 0)) or len(axes) > 3:
            raise UnsupportedArchitectureError(f"{_AXIS_HINT}; got axis={self.axis!r}")
        object.__setattr__(self, "axis", axes[0] if len(axes) == 1 else axes)

    def _spatial_axes(self, k: KernelState) -> tuple[int, ...]:
        """Which of the (H, W) position axes (0, 1) the variances are averaged over."""
        axes = _axes(self.axis)
        if k.spatial is None:
            if axes not in ((-1,), (1,)):
                raise UnsupportedArchitectureError(
                    f"LayerNorm(axis={self.axis!r}) on feature vectors: use axis=-1")
            return ()
        if axes == (1,):
            raise UnsupportedArchitectureError(f"{_AXIS_HINT}; got axis=1 on positional inputs")
        return tuple(3 + a for a in axes if a != -1)  # -2 -> W (1), -3 -> H (0)

    def kernel(self, ns: Namespace, k: KernelState) -> KernelState:
        sp = self._spatial_axes(k)
        mode = k.spatial
        if k.diag:  # nngp holds self covariances (n, *S)
            v = self._scale(ns, spatial.positional(ns, k.nngp, mode) if mode else k.nngp, sp)
            a, b = _outer(v, v, mode, same_row=True)
            root = ns.sqrt(a * b)
            return k.replace(nngp=k.nngp / root, ntk=None if k.ntk is None else k.ntk / root)
        v1 = self._scale(ns, spatial.positional(ns, k.cov1, mode) if mode else k.cov1, sp)
        v2 = v1 if k.cov2 is k.cov1 else \
            self._scale(ns, spatial.positional(ns, k.cov2, mode) if mode else k.cov2, sp)
        a, b = _outer(v1, v2, mode, same_row=False)
        root = ns.sqrt(a * b)
        s1, s1b = _outer(v1, v1, mode, same_row=True)
        cov1 = k.cov1 / ns.sqrt(s1 * s1b)
        if k.cov2 is k.cov1:
            cov2 = cov1
        else:
            s2, s2b = _outer(v2, v2, mode, same_row=True)
            cov2 = k.cov2 / ns.sqrt(s2 * s2b)
        return k.replace(nngp=k.nngp / root, ntk=None if k.ntk is None else k.ntk / root,
                         cov1=cov1, cov2=cov2)

    def _scale(self, ns: Namespace, var: Any, sp: tuple[int, ...]) -> Any:
        """``eps + var``, ``var`` averaged over the normalised position axes ``sp`` (of the
        ``(H, W)`` trailing axes of ``var``, shape (n,) or (n, H, W))."""
        if sp:
            var = ns.mean(var, axis=tuple(1 + a for a in sp), keepdims=True)
        return self.eps + var

    def gaussian(self, g: Any) -> Any:
        """Needs Gaussian inputs (neural-tangents refuses others too); keeps them Gaussian
        (a deterministic rescaling in the wide limit)."""
        if not g:
            raise UnsupportedArchitectureError(
                "LayerNorm is applied to non-Gaussian inputs (the network's inputs, an "
                "activation's outputs, or a sum with a branch that carries them): its kernel "
                "rule holds for Gaussian pre-activations only. Put a Dense or Conv layer before it "
                "(neural-tangents refuses this too)")
        return g

    def finite(self, jax: Any, jnp: Any) -> Callable[[Any], Any]:
        axes = _axes(self.axis)

        def f(x: Any) -> Any:
            ax = tuple(a % x.ndim for a in axes)
            mean = jnp.mean(x, axis=ax, keepdims=True)
            var = jnp.var(x, axis=ax, keepdims=True)
            return (x - mean) / jnp.sqrt(self.eps + var)

        return f

    def spec(self) -> dict:
        axis = list(self.axis) if isinstance(self.axis, tuple) else self.axis
        return {"layer": "LayerNorm", "axis": axis, "eps": self.eps, "batch_axis": self.batch_axis,
                "channel_axis": self.channel_axis}

    @classmethod
    def from_spec(cls, args: dict) -> "LayerNorm":
        axis = args.get("axis", -1)
        return cls(**{**args, "axis": tuple(axis) if isinstance(axis, list) else axis})


def _outer(v1: Any, v2: Any, mode: Any, same_row: bool) -> tuple[Any, Any]:
    """Per-position variances ``v1`` (n1, *P) and ``v2`` (n2, *P) arranged to broadcast against
    pair covariances (``same_row=False``: (n1, n2, ...)) or self covariances / diagonals
    (``same_row=True``: (n, ...); then ``v1 is v2``'s rows pair with themselves).

    ``*P`` is ``()`` for features, ``(H, W)`` (or size-1 axes after averaging) for images.
    """
    if mode is None:
        return (v1, v2) if same_row else (v1[:, None], v2[None, :])
    if mode == "diag":
        return (v1, v2) if same_row else (v1[:, None], v2[None, :])
    # full layout: (.., H1, W1, H2, W2)
    a = v1[..., :, :, None, None]
    b = v2[..., None, None, :, :]
    return (a, b) if same_row else (a[:, None], b[None, :])
