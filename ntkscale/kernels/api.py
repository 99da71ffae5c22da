"""Kernel entry points: ``kernel_fn``, per-tile computation, diagonal statistics.

``kernel_fn(x1, x2=None, get=None)`` follows neural-tangents. The tiling layer
calls :func:`diag_stats` once per row block and :func:`kernel_tile` once per
tile; the latter picks the fused CPU kernel for NumPy chains and the generic
array-namespace recursion otherwise (CuPy, JAX, residual branches).
"""

from __future__ import annotations

import json
from collections import namedtuple
from typing import Any, Callable, Literal, Optional

import numpy as np

from . import fused, images, registry
from .backend import Namespace, is_numpy, namespace_of
from .base import leaves, provide
from .conv import spatial_mode
from .images import check_input_width, check_spatial
from .combinators import check_gaussian
from .layers import Layer, Serial
from .state import DiagStats, KernelState
from .tile_kernel import TileKernel
from .validate import check_get, check_inputs, resolve_dtype

__all__ = ["DiagStats", "Kernel", "diag_stats", "kernel_tile", "make_kernel_fn", "spec_of", "from_spec",
           "spec_json", "check_input_width", "check_architecture"]

Path = Literal["auto", "fused", "generic"]
_PATHS = ("auto", "fused", "generic")


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


def _program(layer: Layer, ns: Namespace, d: int, path: Path) -> Optional[fused.Program]:
    if not isinstance(path, str) or path not in _PATHS:
        raise ValueError(f"path must be one of {_PATHS}, got {path!r}")
    if path == "generic" or not is_numpy(ns):
        if path == "fused":
            raise ValueError("the fused path runs on NumPy arrays only")
        return None
    prog = fused.compile_program(layer.flat(), d)
    if prog is None and path == "fused":
        raise ValueError("the fused path needs a chain of Dense/Identity layers, ABRelu/Erf/Exp/"
                         "Gaussian/Rbf activations and feature LayerNorms")
    return prog


def _input_state(ns: Namespace, x1: Any, x2: Any, cov1: Any, cov2: Any, want_ntk: bool) -> KernelState:
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
    if spatial_mode(layer) is not None:
        nngp, ntk = images.image_diag(ns, layer, x)
        return DiagStats(cov0=cov0, act_vars=None, nngp=nngp, ntk=ntk)
    prog = _program(layer, ns, d, path)
    k = KernelState(nngp=cov0, ntk=ns.zeros_like(cov0), cov1=None, cov2=None, width=d, diag=True)
    act_vars = None
    if prog is not None:
        rows = []
        for leaf in layer.flat():
            if isinstance(leaf, fused.VARIANCE_LAYERS):
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
        G = fused.gram_upper(x1) if x2 is None else x1 @ x2.T
        q, t = fused.run_program(prog, G, d, stats1.act_vars, s2.act_vars, odt, symmetric=x2 is None)
        out = {"nngp": q, "ntk": t}
    elif spatial_mode(layer) is not None:
        out = images.image_tile(ns, layer, x1, x2, "ntk" in get, odt, fused=prog is None and
                                is_numpy(ns) and path != "generic")
    else:
        k = _input_state(ns, x1, x2, stats1.cov0, s2.cov0, "ntk" in get)
        k = layer.kernel(ns, k)
        out = {"nngp": k.nngp.astype(odt), "ntk": None if k.ntk is None else k.ntk.astype(odt)}
    if x2 is None:  # exact diagonal (c = 1): no sqrt(eps) rounding from the GEMM
        out = {name: _set_diag(ns, out[name], getattr(stats1, name)) for name in get}
    return {name: out[name] for name in get}


def _set_diag(ns: Namespace, a: Any, diag: Any) -> Any:
    idx = ns.arange(a.shape[0])
    if ns.name == "jax":
        return a.at[idx, idx].set(diag.astype(a.dtype))
    a[idx, idx] = diag
    return a


Kernel = namedtuple("Kernel", ["nngp", "ntk", "cov1", "cov2", "x1_is_x2", "is_gaussian", "is_reversed",
                               "diagonal_batch", "diagonal_spatial", "batch_axis", "channel_axis"])
Kernel.__doc__ = """What ``kernel_fn(x1, x2)`` (``get=None``) returns: neural-tangents' ``Kernel`` fields
that describe the output, with NT's meaning.

nngp, ntk : array, shape (n1, n2)
cov1 : array, shape (n1,)
    The NNGP of each ``x1`` row with itself (NT's ``diagonal_batch=True`` layout).
cov2 : array, shape (n2,), or None
    The same for ``x2``; None when ``x2`` is None (NT: ``x1_is_x2``).
x1_is_x2 : bool
is_gaussian : bool
    Whether the outputs are Gaussian (the network ends in a ``Dense``/``Conv`` layer).
is_reversed, diagonal_batch, diagonal_spatial, batch_axis, channel_axis
    ``False, True, False, 0, 1``: the layout of a (n, features) output, as NT reports it.
"""


def make_kernel_fn(layer: Layer) -> Callable[..., Any]:
    """neural-tangents style ``kernel_fn(x1, x2=None, get=None, *, dtype=None)``.

    ``get`` a string returns that array; a tuple returns a namedtuple with those fields;
    None (NT's default) returns a :data:`Kernel` (``nngp``, ``ntk``, ``cov1``, ``cov2``,
    ``x1_is_x2``, ``is_gaussian``, ...). Shapes: (n1, n2); ``x2=None`` is the symmetric
    case ``x1 x1``. Runs under ``jax.jit(kernel_fn, static_argnames='get')`` on JAX arrays
    (the NaN check is skipped for traced values; shapes are still checked).
    """

    def kernel_fn(x1: Any, x2: Any = None, get: Any = None, *, dtype: Any = None,
                  path: Path = "auto") -> Any:
        arch, x1, x2 = images.from_images(layer, x1, x2)
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
        if get is None:
            return Kernel(nngp=out["nngp"], ntk=out["ntk"], cov1=s1.nngp,
                          cov2=None if s2 is None else s2.nngp, x1_is_x2=x2c is None,
                          is_gaussian=bool(arch.gaussian(False)), is_reversed=False,
                          diagonal_batch=True, diagonal_spatial=False, batch_axis=0, channel_axis=1)
        return namedtuple("Kernel", kinds)(*(out[k] for k in kinds))

    kernel_fn.__doc__ = make_kernel_fn.__doc__
    kernel_fn.layer = layer
    return kernel_fn


provide("kernel_fn", make_kernel_fn)  # Layer.kernel_fn (kernels/base.py) hands itself to this


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
