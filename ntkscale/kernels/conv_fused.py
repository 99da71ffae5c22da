"""Fused CPU kernels for conv chains: the CNTK with a ``Flatten`` readout, and pooled chains.

The array recursion (``conv.py`` + ``spatial.py``) makes ~15 passes over ``n1 n2 S``
temporaries per layer (``S`` = ``H W`` positions, or ``(H W)^2`` pixel pairs once anything
pools). Here each pair of images goes through all layers in a few buffers of one pair's
covariances (numba), with the self variances entering each activation computed once per
row block: ``_numba_conv.py`` for the same-position (``"diag"``) layout, ``_numba_pool.py``
for the pixel-pair (``"full"``) one. Supported: a leading ``Unflatten``, ``Conv`` with
stride 1 (NTK parameterization, any padding), ``Dense`` (NTK parameterization), ``ABRelu``
(ReLU, leaky, abs), ``Identity``, ``AvgPool`` (``VALID``/``SAME``; pooled chains), one
``Flatten`` or ``GlobalAvgPool``, then ``Dense``/``ABRelu``; anything else runs the array
recursion. Tests check both agree to ~1e-12.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from .backend import Namespace
from .conv import AvgPool, Conv, Flatten, GlobalAvgPool, image_shape, spatial_mode
from .layers import ABRelu, Dense, Identity, Layer
from .state import KernelState

__all__ = ["ConvProgram", "compile_conv_program", "act_maps", "run_conv_program"]

DENSE, ABRELU, CONV, FLATTEN, GAP, POOL = 0, 1, 3, 4, 5, 6
_PAD = {"SAME": 0, "CIRCULAR": 1, "VALID": 2}


@dataclass(frozen=True)
class ConvProgram:
    """``kinds`` (L,) op codes, ``params`` (L, 5), ``slot`` (L,) activation index;
    ``mode`` the covariance layout (``"diag"`` or ``"full"``), ``shape`` the images'."""

    kinds: np.ndarray
    params: np.ndarray
    slot: np.ndarray
    n_slots: int
    shape: tuple[int, int, int]
    mode: str


def _op(leaf: Layer, mode: str, reduced: bool) -> Optional[tuple[int, tuple]]:
    """``(op code, params)`` of one leaf, or None if the fused kernels cannot run it."""
    # 1-d windows (sequences, images of height 1) run as their 2-d (1, f) equivalents
    if isinstance(leaf, Conv) and leaf.strides_2d == (1, 1) and leaf.parameterization == "ntk" \
            and not reduced:
        b2 = 0.0 if leaf.b_std is None else leaf.b_std ** 2
        return CONV, (*leaf.filter_2d, _PAD[leaf.padding], leaf.W_std ** 2, b2)
    if type(leaf) is AvgPool and mode == "full" and leaf.padding != "CIRCULAR" and not reduced:
        return POOL, (*leaf.window_2d, *leaf.strides_2d, _PAD[leaf.padding])
    if isinstance(leaf, Dense) and leaf.parameterization == "ntk":
        w2, b2, _, _ = leaf.affine()
        return DENSE, (w2, b2, 0, 0, 0)
    if isinstance(leaf, ABRelu):
        return ABRELU, (leaf.a, leaf.b, 0, 0, 0)
    if isinstance(leaf, Flatten) and not reduced:
        return FLATTEN, (0, 0, 0, 0, 0)
    if type(leaf) is GlobalAvgPool and not reduced:  # not GlobalSumPool
        return GAP, (0, 0, 0, 0, 0)
    return None


def compile_conv_program(layer: Layer) -> Optional[ConvProgram]:
    """The architecture as a fused program, or None if it is not a supported chain."""
    mode = spatial_mode(layer)
    if mode is None or image_shape(layer) is None:
        return None
    kinds, params, slots, n_act, reduced = [], [], [], 0, False
    for leaf in layer.flat()[1:]:
        if isinstance(leaf, Identity):
            continue
        op = _op(leaf, mode, reduced)
        if op is None:
            return None
        kinds.append(op[0])
        params.append(op[1])
        slots.append(n_act if op[0] == ABRELU else -1)
        n_act += op[0] == ABRELU
        reduced = reduced or op[0] in (FLATTEN, GAP)
    if not reduced:
        return None
    return ConvProgram(np.asarray(kinds, np.int64), np.asarray(params, np.float64).reshape(-1, 5),
                       np.asarray(slots, np.int64), n_act, image_shape(layer), mode)


def act_maps(ns: Namespace, layer: Layer, program: ConvProgram, x: np.ndarray,
             rows_per_chunk: int) -> np.ndarray:
    """Same-position variances entering each activation, per row: shape (n_slots, n, H*W),
    zero padded (row-major positions of that layer's image, as the numba kernels index
    them; after the reduction a variance sits at position 0). Each row's self covariance
    goes through the array recursion, ``rows_per_chunk`` rows at a time."""
    from . import spatial

    h, w, c = program.shape
    out = np.zeros((program.n_slots, x.shape[0], h * w))
    for lo in range(0, x.shape[0], max(1, rows_per_chunk)):
        xi = x[lo:lo + rows_per_chunk]
        s = spatial.self_covariance(ns, xi.reshape(xi.shape[0], h, w, c), program.mode)
        k = KernelState(nngp=s, ntk=None, cov1=None, cov2=None, width=c, diag=True,
                        spatial=program.mode)
        slot = 0
        for leaf in layer.flat()[1:]:
            if isinstance(leaf, ABRelu):
                v = k.nngp if k.spatial is None else spatial.positional(ns, k.nngp, k.spatial)
                v = np.asarray(v, np.float64).reshape(xi.shape[0], -1)
                out[slot, lo:lo + xi.shape[0], : v.shape[1]] = v
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
    """NNGP and NTK of a tile, shape (n1, n2) each, from rows ``x1``/``x2`` (n, H*W*C) and
    their :func:`act_maps` ``v1``/``v2``. ``x2`` None is the symmetric tile ``x1 x1``
    (``j >= i`` computed, then mirrored)."""
    h, w, c = program.shape
    sym = x2 is None
    a = np.ascontiguousarray(x1, np.float64).reshape(x1.shape[0], h * w, c)
    b = a if sym else np.ascontiguousarray(x2, np.float64).reshape(x2.shape[0], h * w, c)
    f1, g1 = _factors(v1)
    f2, g2 = (f1, g1) if sym else _factors(v2)
    out_q = np.empty((a.shape[0], b.shape[0]))
    out_t = np.empty((a.shape[0], b.shape[0]))
    if a.shape[0] and b.shape[0]:
        args = (program.kinds, program.params, program.slot, f1, g1, f2, g2, out_q, out_t)
        if program.mode == "diag":
            from . import _numba_conv as nc

            border = max([int(max(p[0], p[1])) - 1 for k, p in zip(program.kinds, program.params)
                          if k == CONV] + [0])
            nc.conv_chain_tile(a, b, sym, h, w, border, *args)
        else:
            from . import _numba_pool as npool

            npool.pool_chain_tile(a, b, sym, h, w, *args)
    return out_q.astype(out_dtype, copy=False), out_t.astype(out_dtype, copy=False)
