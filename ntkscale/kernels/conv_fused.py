"""Fused CPU kernels for conv chains: the CNTK with a ``Flatten`` readout, and pooled chains.

The array recursion (``conv.py`` + ``spatial.py``) makes ~15 passes over
``n1 n2 H W`` temporaries per layer. Here each pair of images goes through all layers
in two ``H W`` buffers that stay in L1 cache (numba; ``_numba_conv.py``), with the
self variances entering each activation computed once per row block. Supported: a
leading ``Unflatten``, ``Conv`` with stride 1 (any padding), ``Dense`` (NTK
parameterization), ``ABRelu`` (ReLU, leaky, abs), ``Identity``, one ``Flatten``;
anything else runs the array recursion. Tests check both agree to ~1e-12.

Pooled chains (``AvgPool``, ``GlobalAvgPool``: the ``"full"`` pixel-pair layout, e.g. the
Myrtle kernels) have their own program (:func:`compile_pool_program`, ``_numba_pool.py``):
the same ops plus pooling, each pair's ``(H W)^2`` covariances rewritten in place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from .backend import Namespace
from .conv import AvgPool, Conv, Flatten, GlobalAvgPool, Unflatten, image_shape, spatial_mode
from .layers import ABRelu, Dense, Identity, Layer
from .state import KernelState

__all__ = ["ConvProgram", "compile_conv_program", "act_maps", "run_conv_program",
           "compile_pool_program", "pool_act_maps", "run_pool_program"]

DENSE, ABRELU, CONV, FLATTEN, GAP, POOL = 0, 1, 3, 4, 5, 6
_PAD = {"SAME": 0, "CIRCULAR": 1, "VALID": 2}


@dataclass(frozen=True)
class ConvProgram:
    """``kinds`` (L,) op codes, ``params`` (L, 5), ``slot`` (L,) activation index."""

    kinds: np.ndarray
    params: np.ndarray
    slot: np.ndarray
    n_slots: int
    shape: tuple[int, int, int]


def compile_conv_program(layer: Layer) -> Optional[ConvProgram]:
    """The architecture as a fused program, or None if it is not a supported chain."""
    if spatial_mode(layer) != "diag" or image_shape(layer) is None:
        return None
    kinds, params, slots, n_act, flat_seen = [], [], [], 0, False
    for leaf in layer.flat()[1:]:
        if isinstance(leaf, Identity):
            continue
        if isinstance(leaf, Conv):
            if leaf.strides != (1, 1) or leaf.parameterization != "ntk" or flat_seen:
                return None
            b2 = 0.0 if leaf.b_std is None else leaf.b_std ** 2
            kinds.append(CONV); slots.append(-1)
            params.append((*leaf.filter_shape, _PAD[leaf.padding], leaf.W_std ** 2, b2))
        elif isinstance(leaf, Dense):
            if leaf.parameterization != "ntk":
                return None
            w2, b2, _, _ = leaf.affine()
            kinds.append(DENSE); params.append((w2, b2, 0, 0, 0)); slots.append(-1)
        elif isinstance(leaf, ABRelu):
            kinds.append(ABRELU); params.append((leaf.a, leaf.b, 0, 0, 0)); slots.append(n_act)
            n_act += 1
        elif isinstance(leaf, Flatten) and not flat_seen:
            flat_seen = True
            kinds.append(FLATTEN); params.append((0, 0, 0, 0, 0)); slots.append(-1)
        else:
            return None
    if not flat_seen:
        return None
    return ConvProgram(np.asarray(kinds, np.int64), np.asarray(params, np.float64).reshape(-1, 5),
                       np.asarray(slots, np.int64), n_act, image_shape(layer))


def act_maps(ns: Namespace, layer: Layer, program: ConvProgram, x: np.ndarray) -> np.ndarray:
    """Self variances entering each activation: shape (n_slots, n, H*W), zero padded.

    Positions are row-major (as the numba kernel indexes them); after ``Flatten`` a
    variance sits at position 0.
    """
    from . import spatial

    h, w, c = program.shape
    out = np.zeros((program.n_slots, x.shape[0], h * w))
    imgs = x.reshape(x.shape[0], h, w, c)
    s = spatial.self_covariance(ns, imgs, "diag")
    k = KernelState(nngp=s, ntk=None, cov1=None, cov2=None, width=c, diag=True, spatial="diag")
    slot = 0
    for leaf in layer.flat()[1:]:
        if isinstance(leaf, ABRelu):
            v = np.asarray(k.nngp, np.float64).reshape(x.shape[0], -1)
            out[slot, :, : v.shape[1]] = v
            slot += 1
        k = leaf.kernel(ns, k)
    return out


def _factors(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    f = np.sqrt(np.maximum(v, 0.0))
    g = np.zeros_like(f)
    np.divide(1.0, f, out=g, where=f > 0)
    return f, g


def run_conv_program(program: ConvProgram, x1: np.ndarray, x2: Optional[np.ndarray],
                     v1: np.ndarray, v2: Optional[np.ndarray],
                     out_dtype: Any) -> tuple[np.ndarray, np.ndarray]:
    """NNGP and NTK of a tile, shape (n1, n2) each, from rows ``x1``/``x2`` (n, H*W*C).

    ``x2`` None is the symmetric tile ``x1 x1`` (``j >= i`` computed, then mirrored).
    """
    from . import _numba_conv as nc

    h, w, c = program.shape
    sym = x2 is None
    a = np.ascontiguousarray(x1, np.float64).reshape(x1.shape[0], h * w, c)
    b = a if sym else np.ascontiguousarray(x2, np.float64).reshape(x2.shape[0], h * w, c)
    f1, g1 = _factors(v1)
    f2, g2 = (f1, g1) if sym else _factors(v2)
    border = max([int(max(p[0], p[1])) - 1 for k, p in zip(program.kinds, program.params)
                  if k == CONV] + [0])
    out_q = np.empty((a.shape[0], b.shape[0]))
    out_t = np.empty((a.shape[0], b.shape[0]))
    if a.shape[0] and b.shape[0]:
        nc.conv_chain_tile(a, b, sym, h, w, border, program.kinds, program.params, program.slot,
                           f1, g1, f2, g2, out_q, out_t)
    return out_q.astype(out_dtype, copy=False), out_t.astype(out_dtype, copy=False)


def compile_pool_program(layer: Layer) -> Optional[ConvProgram]:
    """A pooled chain (``"full"`` layout) as a fused program, or None if unsupported.

    Supported: a leading ``Unflatten``; stride-1 ``Conv`` (NTK parameterization, any
    padding), ``AvgPool`` (``VALID``/``SAME``), ``Dense`` (NTK parameterization), ``ABRelu``,
    ``Identity`` on images; one ``GlobalAvgPool`` or ``Flatten``; then ``Dense``/``ABRelu``.
    """
    if spatial_mode(layer) != "full" or image_shape(layer) is None:
        return None
    kinds, params, slots, n_act, reduced = [], [], [], 0, False
    for leaf in layer.flat()[1:]:
        if isinstance(leaf, Identity):
            continue
        if isinstance(leaf, Conv):
            if leaf.strides != (1, 1) or leaf.parameterization != "ntk" or reduced:
                return None
            b2 = 0.0 if leaf.b_std is None else leaf.b_std ** 2
            kinds.append(CONV); slots.append(-1)
            params.append((*leaf.filter_shape, _PAD[leaf.padding], leaf.W_std ** 2, b2))
        elif isinstance(leaf, AvgPool):
            if leaf.padding == "CIRCULAR" or reduced:
                return None
            kinds.append(POOL); slots.append(-1)
            params.append((*leaf.window_shape, *leaf.strides, _PAD[leaf.padding]))
        elif isinstance(leaf, Dense):
            if leaf.parameterization != "ntk":
                return None
            w2, b2, _, _ = leaf.affine()
            kinds.append(DENSE); params.append((w2, b2, 0, 0, 0)); slots.append(-1)
        elif isinstance(leaf, ABRelu):
            kinds.append(ABRELU); params.append((leaf.a, leaf.b, 0, 0, 0)); slots.append(n_act)
            n_act += 1
        elif isinstance(leaf, (GlobalAvgPool, Flatten)) and not reduced:
            reduced = True
            kinds.append(GAP if isinstance(leaf, GlobalAvgPool) else FLATTEN)
            params.append((0, 0, 0, 0, 0)); slots.append(-1)
        else:
            return None
    if not reduced:
        return None
    return ConvProgram(np.asarray(kinds, np.int64), np.asarray(params, np.float64).reshape(-1, 5),
                       np.asarray(slots, np.int64), n_act, image_shape(layer))


def pool_act_maps(ns: Namespace, layer: Layer, program: ConvProgram, x: np.ndarray,
                  rows_per_chunk: int) -> np.ndarray:
    """Same-position variances entering each activation of a pooled chain, per row:
    shape (n_slots, n, H*W), zero padded (row-major positions of that layer's image; a
    variance after the reduction sits at position 0). Each row's full self covariance is
    taken through the array recursion, ``rows_per_chunk`` rows at a time."""
    from . import spatial

    h, w, c = program.shape
    out = np.zeros((program.n_slots, x.shape[0], h * w))
    for lo in range(0, x.shape[0], max(1, rows_per_chunk)):
        xi = x[lo:lo + rows_per_chunk]
        s = spatial.self_covariance(ns, xi.reshape(xi.shape[0], h, w, c), "full")
        k = KernelState(nngp=s, ntk=None, cov1=None, cov2=None, width=c, diag=True, spatial="full")
        slot = 0
        for leaf in layer.flat()[1:]:
            if isinstance(leaf, ABRelu):
                v = k.nngp if k.spatial is None else spatial.positional(ns, k.nngp, "full")
                v = np.asarray(v, np.float64).reshape(xi.shape[0], -1)
                out[slot, lo:lo + xi.shape[0], : v.shape[1]] = v
                slot += 1
            k = leaf.kernel(ns, k)
    return out


def run_pool_program(program: ConvProgram, x1: np.ndarray, x2: Optional[np.ndarray],
                     v1: np.ndarray, v2: Optional[np.ndarray],
                     out_dtype: Any) -> tuple[np.ndarray, np.ndarray]:
    """NNGP and NTK of a tile of a pooled chain, shape (n1, n2) each (``x2`` None: symmetric)."""
    from . import _numba_pool as npool

    h, w, c = program.shape
    sym = x2 is None
    a = np.ascontiguousarray(x1, np.float64).reshape(x1.shape[0], h * w, c)
    b = a if sym else np.ascontiguousarray(x2, np.float64).reshape(x2.shape[0], h * w, c)
    f1, g1 = _factors(v1)
    f2, g2 = (f1, g1) if sym else _factors(v2)
    out_q = np.empty((a.shape[0], b.shape[0]))
    out_t = np.empty((a.shape[0], b.shape[0]))
    if a.shape[0] and b.shape[0]:
        npool.pool_chain_tile(a, b, sym, h, w, program.kinds, program.params, program.slot,
                              f1, g1, f2, g2, out_q, out_t)
    return out_q.astype(out_dtype, copy=False), out_t.astype(out_dtype, copy=False)
