"""Kernel entry points: ``kernel_fn``, per-tile computation, diagonal statistics.

``kernel_fn(x1, x2=None, get=None)`` follows neural-tangents. The tiling layer
calls :func:`diag_stats` once per row block and :func:`kernel_tile` once per
tile; the latter picks the fused CPU kernel for NumPy chains and the generic
array-namespace recursion otherwise (CuPy, JAX, residual branches).
"""

from __future__ import annotations

import json
from collections import namedtuple
from dataclasses import dataclass
from typing import Any, Callable, Literal, Optional

import numpy as np

from . import conv_fused, fused, registry, spatial
from .backend import Namespace, is_numpy, namespace_of
from .conv import Unflatten, check_spatial, image_shape, leaves, spatial_mode
from .combinators import check_gaussian
from .layers import ABRelu, Erf, Layer, Serial, UnsupportedArchitectureError
from .state import KernelState
from .tile_kernel import TileKernel
from .validate import check_get, check_inputs, resolve_dtype

__all__ = ["DiagStats", "diag_stats", "kernel_tile", "make_kernel_fn", "spec_of", "from_spec",
           "spec_json", "check_input_width", "check_architecture", "WORK_BYTES"]

WORK_BYTES = 256 * 2**20
"""Working memory an image-kernel tile may use at once: its rows are processed in chunks
of pairs whose pixel covariances fit (:func:`image_chunk`); feature kernels ignore it."""

Path = Literal["auto", "fused", "generic"]
_PATHS = ("auto", "fused", "generic")


@dataclass(frozen=True)
class DiagStats:
    """Per-row statistics of a row block, computed once and reused by every tile.

    Attributes
    ----------
    cov0 : array, shape (n,)
        Input variance ``|x|^2 / d``.
    act_vars : ndarray or None, shape (n_activations, n)
        Variance entering each activation (chains on NumPy only).
    nngp, ntk : array, shape (n,)
        Diagonal of the NNGP and NTK Gram matrices.
    """

    cov0: Any
    act_vars: Optional[np.ndarray]
    nngp: Any
    ntk: Any


def _prepare(layer: Layer) -> None:
    if not isinstance(layer, Layer):
        raise TypeError(f"expected an ntkscale layer/architecture, got {type(layer).__name__}")
    # as a one-layer serial: a bare FanOut/parallel/FanInSum is checked for balance too
    Serial((layer,)).check_kernel()
    if not isinstance(layer, TileKernel):
        for leaf in leaves(layer):
            if isinstance(leaf, TileKernel):
                leaf.kernel(None, None)  # raises: a whole kernel cannot be composed with layers
    check_spatial(layer)
    check_gaussian(layer)


def check_architecture(layer: Layer) -> None:
    """All static checks of an architecture, before any work: a closed form exists,
    branches balance, images are unflattened first and reduced before the end, and every
    nonlinearity sees Gaussian pre-activations.

    Raises
    ------
    UnsupportedArchitectureError
    TypeError
        Not an ntkscale layer.
    """
    _prepare(layer)


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
    mode, shape = spatial_mode(layer), image_shape(layer)
    per_pair = 6 * itemsize * spatial.entry_floats(mode, shape[0], shape[1])
    return max(1, int(work_bytes // per_pair))


def _program(layer: Layer, ns: Namespace, d: int, path: Path) -> Optional[fused.Program]:
    if not isinstance(path, str) or path not in _PATHS:
        raise ValueError(f"path must be one of {_PATHS}, got {path!r}")
    if path == "generic" or not is_numpy(ns):
        if path == "fused":
            raise ValueError("the fused path runs on NumPy arrays only")
        return None
    prog = fused.compile_program(layer.flat(), d)
    if prog is None and path == "fused":
        raise ValueError("the fused path needs a chain of Dense/ABRelu/Erf/Identity layers")
    return prog


def _images(layer: Layer, x: Any) -> Any:
    return None if x is None else x.reshape(x.shape[0], *image_shape(layer))


def _input_state(ns: Namespace, x1: Any, x2: Any, cov1: Any, cov2: Any, want_ntk: bool,
                 layer: Optional[Layer] = None) -> KernelState:
    mode = None if layer is None else spatial_mode(layer)
    if mode is not None:
        pair, s1, s2 = spatial.input_covariances(ns, _images(layer, x1), _images(layer, x2), mode)
        return KernelState(nngp=pair, ntk=ns.zeros_like(pair) if want_ntk else None, cov1=s1,
                           cov2=s2, width=image_shape(layer)[2], spatial=mode)
    d = x1.shape[1]
    other = x1 if x2 is None else x2
    nngp = (x1 @ other.T) / d
    ntk = ns.zeros_like(nngp) if want_ntk else None
    return KernelState(nngp=nngp, ntk=ntk, cov1=cov1, cov2=cov1 if x2 is None else cov2, width=d)


def diag_stats(layer: Layer, x: Any, *, dtype: Any = None, path: Path = "auto",
               validate: bool = True) -> DiagStats:
    """Diagonal statistics of a row block ``x`` of shape (n, d).

    Returns the input variances, the variance at each activation (for the
    fused path) and the NNGP/NTK diagonals, all from an O(n * depth) pass.
    """
    _prepare(layer)
    if isinstance(layer, TileKernel):  # a kernel computed directly (kernels/tile_kernel.py)
        return layer.diag_stats(x, dtype=dtype, validate=validate)
    ns = namespace_of(x)
    dt = resolve_dtype(dtype)
    if validate:
        x, _ = check_inputs(ns, x, None, dt)
    d = x.shape[1]
    cov0 = ns.sum(x * x, axis=1) / d
    mode = spatial_mode(layer)
    if mode is not None:
        check_input_width(layer, d)
        nngp, ntk = [], []
        step = image_chunk(layer, itemsize=np.dtype(x.dtype).itemsize)
        for lo in range(0, x.shape[0], step):
            xi = _images(layer, x[lo:lo + step])
            s = spatial.self_covariance(ns, xi, mode)
            k = layer.kernel(ns, KernelState(nngp=s, ntk=ns.zeros_like(s), cov1=None, cov2=None,
                                             width=image_shape(layer)[2], diag=True, spatial=mode))
            nngp.append(k.nngp)
            ntk.append(k.ntk)
        cat = (lambda parts: ns.concatenate(parts) if parts else ns.zeros((0,), x.dtype))
        return DiagStats(cov0=cov0, act_vars=None, nngp=cat(nngp), ntk=cat(ntk))
    prog = _program(layer, ns, d, path)
    k = KernelState(nngp=cov0, ntk=ns.zeros_like(cov0), cov1=None, cov2=None, width=d, diag=True)
    act_vars = None
    if prog is not None:
        rows = []
        for leaf in layer.flat():
            if isinstance(leaf, (ABRelu, Erf)):
                rows.append(np.asarray(k.nngp, np.float64))
            k = leaf.kernel(ns, k)
        act_vars = np.stack(rows) if rows else np.zeros((0, x.shape[0]))
    else:
        k = layer.kernel(ns, k)
    return DiagStats(cov0=cov0, act_vars=act_vars, nngp=k.nngp, ntk=k.ntk)


def kernel_tile(layer: Layer, x1: Any, x2: Optional[Any], stats1: DiagStats,
                stats2: Optional[DiagStats], get: tuple[str, ...] = ("nngp", "ntk"), *,
                dtype: Any = None, out_dtype: Any = None, path: Path = "auto") -> dict[str, Any]:
    """Compute one tile of the Gram matrices for row blocks ``x1`` and ``x2``.

    Parameters
    ----------
    x1 : array, shape (n1, d)
    x2 : array, shape (n2, d), or None for the symmetric (diagonal) tile ``x1 x1``
    stats1, stats2 : DiagStats
        From :func:`diag_stats` on the same blocks (``stats2`` ignored if ``x2`` is None).
    get : tuple of {'nngp', 'ntk'}

    Returns
    -------
    dict mapping each kind in ``get`` to an array of shape (n1, n2).

    Inputs are trusted (validated once upstream); only shapes are checked here.
    """
    if isinstance(layer, TileKernel):  # a kernel computed directly (kernels/tile_kernel.py)
        return layer.kernel_tile(x1, x2, stats1, stats2, get, dtype=dtype, out_dtype=out_dtype)
    ns = namespace_of(x1, x2)
    dt = resolve_dtype(dtype)
    odt = dt if out_dtype is None else np.dtype(out_dtype)
    x1 = x1.astype(dt) if x1.dtype != dt else x1
    if x2 is not None:
        x2 = x2.astype(dt) if x2.dtype != dt else x2
    s2 = stats1 if x2 is None else stats2
    d = x1.shape[1]
    prog = _program(layer, ns, d, path)
    if prog is not None and stats1.act_vars is not None and s2.act_vars is not None:
        G = x1 @ (x1 if x2 is None else x2).T
        q, t = fused.run_program(prog, G, d, stats1.act_vars, s2.act_vars, odt, symmetric=x2 is None)
        out = {"nngp": q, "ntk": t}
    elif spatial_mode(layer) is not None:
        cprog = conv_fused.compile_conv_program(layer) if prog is None and is_numpy(ns) \
            and path != "generic" else None
        pprog = conv_fused.compile_pool_program(layer) if cprog is None and prog is None and \
            is_numpy(ns) and path != "generic" else None
        if cprog is not None:
            check_input_width(layer, d)
            v1 = conv_fused.act_maps(ns, layer, cprog, x1)
            v2 = None if x2 is None else conv_fused.act_maps(ns, layer, cprog, x2)
            q, t = conv_fused.run_conv_program(cprog, x1, x2, v1, v2, odt)
            out = {"nngp": q, "ntk": t}
        elif pprog is not None:
            check_input_width(layer, d)
            rows = image_chunk(layer, itemsize=8)
            v1 = conv_fused.pool_act_maps(ns, layer, pprog, x1, rows)
            v2 = None if x2 is None else conv_fused.pool_act_maps(ns, layer, pprog, x2, rows)
            q, t = conv_fused.run_pool_program(pprog, x1, x2, v1, v2, odt)
            out = {"nngp": q, "ntk": t}
        else:
            out = _image_tile(ns, layer, x1, x2, "ntk" in get, odt)
    else:
        k = _input_state(ns, x1, x2, stats1.cov0, s2.cov0, "ntk" in get)
        k = layer.kernel(ns, k)
        out = {"nngp": k.nngp.astype(odt), "ntk": None if k.ntk is None else k.ntk.astype(odt)}
    if x2 is None:  # exact diagonal (c = 1): no sqrt(eps) rounding from the GEMM
        out = {name: _set_diag(ns, out[name], getattr(stats1, name)) for name in get}
    return {name: out[name] for name in get}


def _image_tile(ns: Namespace, layer: Layer, x1: Any, x2: Optional[Any], want_ntk: bool,
                odt: np.dtype) -> dict[str, Any]:
    """One tile of an image kernel, in chunks of row pairs that fit :data:`WORK_BYTES`.

    A symmetric tile (``x2`` None) computes its upper chunks only and mirrors them.
    """
    check_input_width(layer, x1.shape[1])
    pairs = image_chunk(layer, itemsize=np.dtype(x1.dtype).itemsize)
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
            k = layer.kernel(ns, _input_state(ns, xa, xb, None, None, want_ntk, layer))
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
        k = layer.kernel(ns, _input_state(ns, xa, xb, None, None, want_ntk, layer))
        return k.nngp.astype(odt), (ns.zeros_like(k.nngp) if k.ntk is None else k.ntk).astype(odt)

    cols = blocks(other, b)
    q, t = jax.lax.map(lambda xa: jax.lax.map(lambda xb: chunk(xa, xb), cols), blocks(x1, a))

    def assemble(v: Any) -> Any:  # (rows/a, cols/b, a, b) -> (n1, n2)
        nr, nc = v.shape[0], v.shape[1]
        return v.transpose(0, 2, 1, 3).reshape(nr * a, nc * b)[:n1, :n2]

    return {"nngp": assemble(q), "ntk": assemble(t) if want_ntk else None}


def _set_diag(ns: Namespace, a: Any, diag: Any) -> Any:
    idx = ns.arange(a.shape[0])
    if ns.name == "jax":
        return a.at[idx, idx].set(diag.astype(a.dtype))
    a[idx, idx] = diag
    return a


def make_kernel_fn(layer: Layer) -> Callable[..., Any]:
    """neural-tangents style ``kernel_fn(x1, x2=None, get=None, *, dtype=None)``.

    ``get`` a string returns that array; a tuple (or None, meaning both) returns a
    namedtuple ``Kernel`` with those fields. Shapes: (n1, n2); ``x2=None`` is the
    symmetric case ``x1 x1``.
    """

    def kernel_fn(x1: Any, x2: Any = None, get: Any = None, *, dtype: Any = None,
                  path: Path = "auto") -> Any:
        arch, x1, x2 = _from_images(layer, x1, x2)
        _prepare(arch)
        kinds, single = check_get(get)
        ns = namespace_of(x1, x2)
        dt = resolve_dtype(dtype)
        x1c, x2c = check_inputs(ns, x1, x2, dt)
        s1 = diag_stats(arch, x1c, dtype=dt, path=path, validate=False)
        s2 = None if x2c is None else diag_stats(arch, x2c, dtype=dt, path=path, validate=False)
        out = kernel_tile(arch, x1c, x2c, s1, s2, kinds, dtype=dt, path=path)
        if single:
            return out[kinds[0]]
        return namedtuple("Kernel", kinds)(*(out[k] for k in kinds))

    kernel_fn.__doc__ = make_kernel_fn.__doc__
    return kernel_fn


def _from_images(layer: Layer, x1: Any, x2: Any) -> tuple[Layer, Any, Any]:
    """NHWC inputs (4-d, neural-tangents' convention) as rows, with a leading Unflatten."""
    if getattr(x1, "ndim", 2) != 4:
        if x2 is not None and getattr(x2, "ndim", 2) == 4:
            raise ValueError("x1 is not an NHWC image batch but x2 is; pass both as (n, H, W, C)")
        return layer, x1, x2
    shape = tuple(int(v) for v in x1.shape[1:])
    if x2 is not None and tuple(getattr(x2, "shape", ())[1:]) != shape:
        raise ValueError(f"x1 holds images of shape {shape} but x2 has shape "
                         f"{tuple(getattr(x2, 'shape', ()))}; both must be (n, H, W, C) alike")
    if spatial_mode(layer) is None:
        raise UnsupportedArchitectureError(
            f"4-d inputs {tuple(x1.shape)} need an image architecture (Conv/pooling/Flatten); "
            "for a fully connected one flatten them first, x.reshape(len(x), -1)")
    declared = image_shape(layer)
    if declared is None:
        layer = Serial((Unflatten(*shape), layer))
    elif declared != shape:
        raise ValueError(f"the architecture's Unflatten{declared} does not match images of "
                         f"shape {shape}")
    flat = (lambda x: None if x is None else x.reshape(x.shape[0], -1))
    return layer, flat(x1), flat(x2)


# ----------------------------------------------------------------------------
# JSON specs (stored with every Gram so a store refuses other architectures)
# ----------------------------------------------------------------------------
def spec_of(layer: Layer) -> dict:
    """The architecture as a JSON-able dict."""
    return layer.spec()


def spec_json(layer: Layer) -> str:
    """Canonical JSON text of the spec (sorted keys), for fingerprints."""
    return json.dumps(spec_of(layer), sort_keys=True, separators=(",", ":"))


def from_spec(spec: dict) -> Layer:
    """Rebuild an architecture from :func:`spec_of` output (via :data:`registry.LAYERS`)."""
    return registry.from_spec(spec)
