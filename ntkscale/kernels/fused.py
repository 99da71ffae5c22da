"""Fused CPU kernel for chains of Dense, ABRelu/Erf/Exp/Gaussian/Rbf and feature LayerNorm layers
(NumPy + numba).

The plain NumPy recursion makes ~10 passes over n1*n2 temporaries per layer
and spends ~10x the time of the ``X1 @ X2.T`` product. Here each output row is
taken through *all* layers while it sits in L1/L2 cache, in one vectorised
loop per layer, with a branch-free polynomial arccos (AVX2 friendly) instead of
``arctan2``. What remains is one GEMM (BLAS) plus ~10 ns per entry and layer.

The program is the architecture flattened into ``(kind, params)`` rows; the
per-row variances at each activation come from the diagonal statistics, so a
tile never recomputes whole-row norms.

The generic array-namespace recursion (``dense.py``, ``activations.py``) is the reference; tests
check that both agree to ~1e-12 relative.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from .activations_nt import Exp, Gaussian, Rbf
from .layers import ABRelu, Dense, Erf, Identity, Layer
from .norm import LayerNorm

__all__ = ["Program", "compile_program", "run_program", "gram_upper", "acos_poly", "VARIANCE_LAYERS"]

DENSE, ABRELU, ERF, EXP, GAUSSIAN, RBF, NORM = 0, 1, 2, 3, 4, 5, 6
#: layers of the fused chain besides Dense/Identity; each reads the per-row variances entering
#: it (a slot of the diagonal statistics). LayerNorm only over the features of (n, d) rows.
VARIANCE_LAYERS = (ABRelu, Erf, Exp, Gaussian, Rbf, LayerNorm)
#: block edge of the symmetric kernel (its two float64 blocks stay in a core's L2)
SYM_BLOCK = 256

@dataclass(frozen=True)
class Program:
    """A chain architecture as arrays the fused kernel runs.

    ``kinds``: (L,) int64 op codes; ``params``: (L, 4) float64;
    ``slot``: (L,) int64, index of the activation's variance row in the stats.
    ``n_slots``: number of activations (rows of the statistics).
    """

    kinds: np.ndarray
    params: np.ndarray
    slot: np.ndarray
    n_slots: int


def compile_program(layers: Sequence[Layer], in_width: int) -> Optional[Program]:
    """Flatten a chain of Dense/Identity layers and :data:`VARIANCE_LAYERS`; ``None`` if not a chain."""
    kinds, params, slots = [], [], []
    width, n_act = in_width, 0
    for layer in layers:
        if isinstance(layer, Identity):
            continue
        if isinstance(layer, Dense):
            w2, b2, a, b = layer.affine()
            if layer.parameterization == "standard":
                a = width / layer.s[0]
                b = 0.0 if layer.b_std is None else 1.0
                width = layer.out_dim * layer.s[1]
            else:
                width = layer.out_dim
            kinds.append(DENSE); params.append((w2, b2, a, b)); slots.append(-1)
        elif isinstance(layer, ABRelu):
            kinds.append(ABRELU); params.append((layer.a, layer.b, 0.0, 0.0)); slots.append(n_act)
            n_act += 1
        elif isinstance(layer, Erf):
            kinds.append(ERF); params.append((layer.a, layer.b, layer.c, 0.0)); slots.append(n_act)
            n_act += 1
        elif isinstance(layer, LayerNorm):
            if layer.axis not in (-1, 1):  # other axes: the generic path (and its errors)
                return None
            kinds.append(NORM); params.append((layer.eps, 0.0, 0.0, 0.0)); slots.append(n_act)
            n_act += 1
        elif isinstance(layer, (Exp, Gaussian, Rbf)):
            kind, row = ((EXP, (layer.a, layer.b)) if isinstance(layer, Exp) else
                         (GAUSSIAN, (layer.a, layer.b)) if isinstance(layer, Gaussian) else (RBF, (layer.gamma, 0.0)))
            kinds.append(kind); params.append((*row, 0.0, 0.0)); slots.append(n_act)
            n_act += 1
        else:
            return None
    return Program(np.asarray(kinds, np.int64), np.asarray(params, np.float64).reshape(-1, 4),
                   np.asarray(slots, np.int64), n_act)


def slot_factors(program: Program, act_vars: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row factors ``(f, g)`` of shape (n_slots, n) for each activation.

    ABRelu: ``f = sqrt(var)``, ``g = 1/sqrt(var)`` (0 where var = 0).
    Erf(a, b, c): ``f`` unused, ``g = 1/sqrt(1 + 2 b^2 var)``.
    Exp, Gaussian, Rbf: ``f = var`` (their closed forms take the variances), ``g`` unused.
    LayerNorm(eps): ``g = 1/sqrt(eps + var)`` (NNGP and NTK scale by ``g_i g_j``).
    """
    f = np.zeros_like(act_vars)
    g = np.zeros_like(act_vars)
    for l in range(len(program.kinds)):
        s = program.slot[l]
        if s < 0:
            continue
        v = act_vars[s]
        if program.kinds[l] == ABRELU:
            f[s] = np.sqrt(v)
            np.divide(1.0, f[s], out=g[s], where=f[s] > 0)
        elif program.kinds[l] in (EXP, GAUSSIAN, RBF):
            f[s] = v
        elif program.kinds[l] == NORM:
            g[s] = 1.0 / np.sqrt(program.params[l, 0] + v)
        else:
            b = program.params[l, 1]
            g[s] = 1.0 / np.sqrt(1.0 + 2.0 * b * b * v)
    return f, g


def acos_poly(x: np.ndarray) -> np.ndarray:
    """The fused kernel's arccos, elementwise over a NumPy array (for tests)."""
    from . import _numba_kernels as nk

    x = np.ascontiguousarray(x, np.float64)
    out = np.empty_like(x)
    nk.acos_array(x.ravel(), out.ravel())
    return out


def gram_upper(x: np.ndarray) -> np.ndarray:
    """``x x^T`` with only its upper triangle computed (BLAS ``syrk``: half the flops of
    ``x @ x.T``, which NumPy runs as a full GEMM), shape (n, n), C order, same dtype as ``x``
    (float32 or float64). The strict lower triangle holds zeros (:func:`run_program` with
    ``symmetric=True`` reads only the upper one); above
    :data:`ntkscale._blas.SYRK_THREADED_MAX` rows (OpenBLAS's threaded ``syrk`` crashes
    there) it is NumPy's full ``x @ x.T``."""
    from scipy.linalg import blas

    from .._blas import SYRK_THREADED_MAX

    if x.shape[0] == 0:  # (BLAS refuses a 0 x 0 output's leading dimension)
        return np.zeros((0, 0), x.dtype)
    if x.shape[0] > SYRK_THREADED_MAX:
        return x @ x.T
    syrk = blas.dsyrk if x.dtype == np.float64 else blas.ssyrk
    xt = np.ascontiguousarray(x).T  # (d, n) in Fortran order: no copy into BLAS
    # Fortran C = xt^T xt with its lower triangle set is, read back in C order (the transpose
    # view), the upper triangle of x x^T
    if x.shape[0] ** 2 * x.shape[1] >= SYRK_SMALL:
        return syrk(1.0, xt, trans=1, lower=1).T
    with _blas_controller().limit(limits=1, user_api="blas"):
        return syrk(1.0, xt, trans=1, lower=1).T


#: below n^2 d of this, ``syrk`` runs on one BLAS thread: OpenBLAS's idle threads spin
#: (~0.1 s) after a threaded call and take the cores from the numba chain that follows, which
#: at n = 2048, d = 64 made a Dense + Exp kernel ~1.5x slower (0.037-0.046 s against
#: 0.023-0.030 s, measured); at n = 4096, d = 784 the threaded product wins
SYRK_SMALL = 2 * 10**9
_CONTROLLER: list = []


def _blas_controller() -> object:
    """A cached ``threadpoolctl.ThreadpoolController`` (its ``limit`` costs ~10 us; a fresh
    ``threadpool_limits`` scans the loaded libraries, ~0.7 ms)."""
    if not _CONTROLLER:
        from threadpoolctl import ThreadpoolController

        _CONTROLLER.append(ThreadpoolController())
    return _CONTROLLER[0]


def run_program(program: Program, G: np.ndarray, in_width: int,
                act1: np.ndarray, act2: np.ndarray, out_dtype: np.dtype,
                symmetric: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Run the fused chain on the input products ``G = x1 @ x2.T``.

    Parameters
    ----------
    G : ndarray, shape (n1, n2)
        Inner products of the two row blocks (not yet divided by ``in_width``).
        Overwritten with the NNGP when its dtype is ``out_dtype``.
    act1, act2 : ndarray, shape (n_slots, n1) / (n_slots, n2)
        Variances entering each activation (from the diagonal statistics).
    symmetric : bool
        ``G`` is ``x x^T`` of one block: compute the blocks on and above the
        diagonal and write their transposes (half the elementwise work). Only the upper
        triangle of ``G`` is read (:func:`gram_upper` computes just that).

    Returns
    -------
    nngp, ntk : ndarray, shape (n1, n2), dtype ``out_dtype``
    """
    from . import _numba_kernels as nk

    f1, g1 = slot_factors(program, act1)
    f2, g2 = slot_factors(program, act2)
    n1, n2 = G.shape
    G = np.ascontiguousarray(G)
    # the NNGP output may reuse G's memory: each row of G is read before it is written
    out_q = G if G.dtype == out_dtype and G.flags.writeable else np.empty((n1, n2), out_dtype)
    out_t = np.empty((n1, n2), out_dtype)
    if n1 and n2 and symmetric:
        nk.chain_kernel_sym(G, 1.0 / in_width, program.kinds, program.params, program.slot,
                            f1, g1, out_q, out_t, SYM_BLOCK)
    elif n1 and n2:
        nk.chain_kernel(G, 1.0 / in_width, program.kinds, program.params, program.slot,
                        f1, g1, f2, g2, out_q, out_t)
    return out_q, out_t
