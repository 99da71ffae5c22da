"""Image inputs of the kernel API: shapes, working memory, tiles in chunks of pairs.

What :mod:`~ntkscale.kernels.api` does for architectures with image layers
(:mod:`~ntkscale.kernels.conv`): check that rows are flattened ``Unflatten(H, W, C)``
images, size the chunks of pairs an image tile is computed in (its pixel covariances,
:mod:`~ntkscale.kernels.spatial`), run the diagonal statistics and the tiles, and accept
neural-tangents' 4-d NHWC inputs in ``kernel_fn``.
"""

from __future__ import annotations

import functools
from typing import Any, Optional

import numpy as np

from . import conv_fused, spatial
from .backend import Namespace, is_numpy
from .combinators import Serial
from .base import leaves
from .conv import AvgPool, Conv, Flatten, GlobalAvgPool, Unflatten, image_shape, spatial_mode
from .layers import Layer, UnsupportedArchitectureError
from .state import KernelState

__all__ = ["WORK_BYTES", "CACHE_BYTES", "check_spatial", "check_input_width", "tile_work_bytes", "image_chunk", "image_state",
           "image_diag", "image_tile", "from_images"]

WORK_BYTES = 256 * 2**20
"""Working memory an image-kernel tile may use at once: its rows are processed in chunks
of pairs whose pixel covariances fit (:func:`image_chunk`); feature kernels ignore it."""

CACHE_BYTES = 4 * 2**20
"""The chunk budget on NumPy (≤ :data:`WORK_BYTES`): the recursion's temporaries of a chunk
stay in the CPU caches. Measured against one 256 MiB chunk (2 cores, float64, NNGP + NTK,
identical values; quiet machine, interleaved): a transformer block on (n, 8, 16) sequences
0.250 → 0.090 s at n = 256 and 0.92 → 0.32 s at n = 512. The size sweep (transformer, ReLU CNNs
on the generic path, 2.3-3.0× faster) shared the machine with a CI run: 4 MiB was best for the
sequences, 8 MiB 10-20 % better for images (benchmarks/RESULTS.md §00000h.5)."""


@functools.lru_cache(maxsize=None)
def _heap_for_chunks() -> None:
    """Free one ``2 × CACHE_BYTES`` block, once per process, before the first cache-sized chunk.

    glibc's malloc serves blocks above its mmap threshold (128 KiB at start) by ``mmap`` and
    unmaps them on ``free``: every chunk's temporaries (0.1-1 MB each) would be page-faulted
    in again, chunk after chunk. Freeing an mmapped block raises that threshold to its size
    (glibc's dynamic threshold, up to 32 MiB), after which the temporaries are reused from the
    heap. Measured: the transformer block at n = 256 in 0.087 s instead of 0.157 s. Elsewhere
    (other allocators) it is one harmless allocation."""
    block = np.empty(2 * CACHE_BYTES, np.uint8)
    del block


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


def check_input_width(layer: Layer, d: int) -> None:
    """Refuse inputs of ``d`` features that the architecture cannot read (before any work).

    Raises
    ------
    ValueError
        An image architecture without a leading ``Unflatten(H, W, C)`` (2-d inputs need
        it), or one whose ``H*W*C`` is not ``d``.
    """
    if spatial_mode(layer) is None:
        return
    shape = image_shape(layer)
    if shape is None:
        raise ValueError("this architecture has image layers (Conv/pooling/Flatten) but the "
                         f"inputs are rows of {d} features: start it with Unflatten(H, W, C), "
                         "or pass NHWC images (n, H, W, C) to kernel_fn")
    if int(np.prod(shape)) != d:
        raise ValueError(f"Unflatten{shape} expects H*W*C = {int(np.prod(shape))} features per "
                         f"row but the inputs have {d}")


def tile_work_bytes(layer: Layer) -> int:
    """Working memory a tile task needs besides its blocks: :data:`WORK_BYTES` for image
    kernels (their pixel covariances, processed in chunks), 0 for feature kernels."""
    return WORK_BYTES if spatial_mode(layer) is not None else 0


def image_chunk(layer: Layer, work_bytes: Optional[int] = None, itemsize: int = 8) -> int:
    """Pairs of rows an image-kernel chunk holds: ~6 live covariance arrays per pair in
    ``work_bytes`` (default :data:`WORK_BYTES`)."""
    work_bytes = WORK_BYTES if work_bytes is None else work_bytes
    mode = spatial_mode(layer)
    height, width = largest_plane(layer)
    per_pair = 6 * itemsize * spatial.entry_floats(mode, height, width)
    return max(1, int(work_bytes // per_pair))


def largest_plane(layer: Layer) -> tuple[int, int]:
    """``(H, W)`` of the largest feature map in the network (a strided ``ConvTranspose``
    grows the input's); the input's when the shapes cannot be followed."""
    shape = image_shape(layer)
    best = (int(shape[0]), int(shape[1]))
    try:
        s: tuple = (1, int(np.prod(shape)))
        for leaf in layer.flat():
            s = tuple(leaf.out_shape(s))
            if len(s) == 4 and s[1] * s[2] > best[0] * best[1]:
                best = (int(s[1]), int(s[2]))
    except Exception:  # noqa: BLE001 - a layer without shape rules: the input's size
        pass
    return best

def _images(layer: Layer, x: Any) -> Any:
    return None if x is None else x.reshape(x.shape[0], *image_shape(layer))

def image_state(ns: Namespace, layer: Layer, x1: Any, x2: Optional[Any], want_ntk: bool) -> KernelState:
    """The input kernel state of row blocks ``x1``/``x2`` (n, H*W*C) read as images."""
    mode = spatial_mode(layer)
    pair, s1, s2 = spatial.input_covariances(ns, _images(layer, x1), _images(layer, x2), mode)
    return KernelState(nngp=pair, ntk=ns.zeros_like(pair) if want_ntk else None, cov1=s1,
                       cov2=s2, width=image_shape(layer)[2], spatial=mode)


def image_diag(ns: Namespace, layer: Layer, x: Any) -> tuple[Any, Any]:
    """NNGP and NTK diagonals (n,) of rows ``x``: each row's self covariance through the
    layers, in chunks of rows that fit :data:`WORK_BYTES`."""
    check_input_width(layer, x.shape[1])
    mode = spatial_mode(layer)
    nngp, ntk = [], []
    step = image_chunk(layer, itemsize=np.dtype(x.dtype).itemsize)
    for lo in range(0, x.shape[0], step):
        s = spatial.self_covariance(ns, _images(layer, x[lo:lo + step]), mode)
        k = layer.kernel(ns, KernelState(nngp=s, ntk=ns.zeros_like(s), cov1=None, cov2=None,
                                         width=image_shape(layer)[2], diag=True, spatial=mode))
        nngp.append(k.nngp)
        ntk.append(k.ntk)
    cat = (lambda parts: ns.concatenate(parts) if parts else ns.zeros((0,), x.dtype))
    return cat(nngp), cat(ntk)


def image_tile(ns: Namespace, layer: Layer, x1: Any, x2: Optional[Any], want_ntk: bool,
               odt: np.dtype, fused: bool = False) -> dict[str, Any]:
    """One tile of an image kernel: NNGP and NTK of shape (n1, n2) (``x2`` None: symmetric).

    With ``fused`` (NumPy, a supported chain: :mod:`~ntkscale.kernels.conv_fused`) the numba
    kernels run it pair by pair; otherwise the array recursion runs in chunks of row pairs
    that fit :data:`WORK_BYTES` (a symmetric tile computes its upper chunks and mirrors
    them; on JAX the chunks run under ``lax.map``).
    """
    check_input_width(layer, x1.shape[1])
    prog = conv_fused.compile_conv_program(layer) if fused else None
    if prog is not None:
        rows = image_chunk(layer, itemsize=8)
        v1 = conv_fused.act_maps(ns, layer, prog, x1, rows)
        v2 = None if x2 is None else conv_fused.act_maps(ns, layer, prog, x2, rows)
        q, t = conv_fused.run_conv_program(prog, x1, x2, v1, v2, odt)
        return {"nngp": q, "ntk": t}
    pairs = image_chunk(layer, itemsize=np.dtype(x1.dtype).itemsize,
                        work_bytes=min(WORK_BYTES, CACHE_BYTES) if is_numpy(ns) else WORK_BYTES)
    if is_numpy(ns):
        _heap_for_chunks()
    if ns.name == "jax":
        return _image_tile_mapped(ns, layer, x1, x2, want_ntk, odt, pairs)
    sym = x2 is None
    other = x1 if sym else x2
    n1, n2 = x1.shape[0], other.shape[0]
    # square-ish chunks: a x b <= pairs
    a = max(1, min(n1, int(pairs ** 0.5)))
    b = max(1, min(n2, pairs // a))
    if sym:
        b = a
    r_lo, c_lo = list(range(0, n1, a)), list(range(0, n2, b))
    blocks: dict[tuple[int, int], tuple[Any, Any]] = {}
    for bi, r in enumerate(r_lo):
        for bj, c in enumerate(c_lo):
            if sym and bj < bi:
                q, t = blocks[(bj, bi)]
                blocks[(bi, bj)] = (q.T, None if t is None else t.T)
                continue
            xa = x1[r:r + a]
            xb = None if sym and bi == bj else other[c:c + b]
            k = layer.kernel(ns, image_state(ns, layer, xa, xb, want_ntk))
            blocks[(bi, bj)] = (k.nngp.astype(odt), None if k.ntk is None else k.ntk.astype(odt))

    def assemble(which: int) -> Any:
        if blocks[(0, 0)][which] is None:
            return None
        return ns.concatenate([ns.concatenate([blocks[(bi, bj)][which] for bj in range(len(c_lo))],
                                              axis=1) for bi in range(len(r_lo))], axis=0)

    return {"nngp": assemble(0), "ntk": assemble(1)}


def _image_tile_mapped(ns: Namespace, layer: Layer, x1: Any, x2: Optional[Any], want_ntk: bool,
                       odt: np.dtype, pairs: int) -> dict[str, Any]:
    """JAX: the chunks as two nested ``lax.map`` loops over zero-padded row blocks, so a
    jitted tile compiles one chunk (a Python loop would unroll thousands of them)."""
    import jax

    other = x1 if x2 is None else x2
    n1, n2 = x1.shape[0], other.shape[0]
    a = max(1, min(n1, int(pairs ** 0.5)))
    b = max(1, min(n2, pairs // a))

    def blocks(x: Any, size: int) -> Any:
        pad = -x.shape[0] % size  # zero rows: finite kernels (zero variances are handled)
        x = ns.concatenate([x, ns.zeros((pad, x.shape[1]), x.dtype)]) if pad else x
        return x.reshape(-1, size, x.shape[1])

    def chunk(xa: Any, xb: Any) -> tuple[Any, Any]:
        k = layer.kernel(ns, image_state(ns, layer, xa, xb, want_ntk))
        return k.nngp.astype(odt), (ns.zeros_like(k.nngp) if k.ntk is None else k.ntk).astype(odt)

    cols = blocks(other, b)
    q, t = jax.lax.map(lambda xa: jax.lax.map(lambda xb: chunk(xa, xb), cols), blocks(x1, a))

    def assemble(v: Any) -> Any:  # (rows/a, cols/b, a, b) -> (n1, n2)
        nr, nc = v.shape[0], v.shape[1]
        return v.transpose(0, 2, 1, 3).reshape(nr * a, nc * b)[:n1, :n2]

    return {"nngp": assemble(q), "ntk": assemble(t) if want_ntk else None}


def _flatten_only(layer: Layer) -> bool:
    """Whether only ``Flatten`` makes ``layer`` positional (no Conv, Unflatten, pooling,
    attention): then it is the fully connected network with a no-op Flatten."""
    every = leaves(layer)
    return (spatial_mode(layer) == "diag" and any(isinstance(leaf, Flatten) for leaf in every)
            and not any(isinstance(leaf, (Conv, Unflatten)) or leaf.positions for leaf in every))


def _check_one_d(layer: Layer) -> None:
    """Sequences take 1-d windows only, as neural-tangents (a 2-d window needs NHWC images).

    Raises
    ------
    UnsupportedArchitectureError
        A ``Conv``/``ConvLocal``/``ConvTranspose``/``AvgPool``/``SumPool`` with a 2-d window on
        ``(n, T, C)`` inputs.
    """
    for leaf in leaves(layer):
        # Conv, ConvLocal, ConvTranspose: filter_shape; AvgPool, SumPool: window_shape
        window = getattr(leaf, "window_shape", None) if isinstance(leaf, AvgPool) else \
            getattr(leaf, "filter_shape", None)
        if window is not None and len(window) != 1:
            raise UnsupportedArchitectureError(
                f"{type(leaf).__name__} has a 2-d window {tuple(window)} but the inputs are sequences "
                "(n, T, C): give it a 1-d window, e.g. (3,), as neural-tangents, or pass images "
                "(n, 1, T, C)")


def from_images(layer: Layer, x1: Any, x2: Any) -> tuple[Layer, Any, Any]:
    """NHWC images (4-d) or sequences ``(n, T, C)`` (3-d), neural-tangents' conventions, as
    rows, with a leading Unflatten: a sequence is read as an image of height 1,
    ``Unflatten(1, T, C)`` (exact: every layer treats the size-1 height axis trivially)."""
    ndim = getattr(x1, "ndim", 2)
    if ndim not in (3, 4):
        if x2 is not None and getattr(x2, "ndim", 2) == 4:
            raise ValueError("x1 is not an NHWC image batch but x2 is; pass both as (n, H, W, C)")
        if ndim == 2 and isinstance(layer, Layer) and _flatten_only(layer):
            # Flatten on feature rows is a no-op (neural-tangents): rows are 1x1 images with d
            # channels, on which Dense, activations and Flatten act exactly as on features
            return Serial((Unflatten(1, 1, int(x1.shape[1])), layer)), x1, x2
        return layer, x1, x2
    shape = tuple(int(v) for v in x1.shape[1:])
    if x2 is not None and tuple(getattr(x2, "shape", ())[1:]) != shape:
        raise ValueError(f"x1 has shape {tuple(x1.shape)} but x2 has shape "
                         f"{tuple(getattr(x2, 'shape', ()))}; both must be (n, H, W, C) or "
                         "(n, T, C) alike")
    what = "images (n, H, W, C)" if ndim == 4 else "sequences (n, T, C)"
    if ndim == 3 and spatial_mode(layer) is None:
        return layer, x1, x2  # a feature architecture: check_inputs refuses 3-d arrays
    if spatial_mode(layer) is None:
        raise UnsupportedArchitectureError(
            f"{ndim}-d inputs {tuple(x1.shape)} ({what}) need an image architecture (layers over "
            "positions: Conv/GlobalSelfAttention/pooling, reduced by Flatten/GlobalAvgPool; a "
            "sequence is an image of height 1); for a fully connected one flatten them first, "
            "x.reshape(len(x), -1)")
    if ndim == 3:
        _check_one_d(layer)
        shape = (1, *shape)
    declared = image_shape(layer)
    if declared is None:
        layer = Serial((Unflatten(*shape), layer))
    elif declared != shape:
        raise ValueError(f"the architecture's Unflatten{declared} does not match {what} of "
                         f"shape {tuple(x1.shape[1:])}" + (" (a sequence is Unflatten(1, T, C))"
                                                           if ndim == 3 else ""))
    flat = (lambda x: None if x is None else x.reshape(x.shape[0], -1))
    return layer, flat(x1), flat(x2)
