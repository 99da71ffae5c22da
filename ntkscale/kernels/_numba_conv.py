"""numba kernel behind ``conv_fused.py``: a pooling-free conv chain, one pair at a time.

Each pair of images is taken through every layer in two small buffers of ``H W``
same-position covariances (the ``"diag"`` layout) that stay in L1 cache, with the
branch-free polynomial arccos of the fully connected fused kernel.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from ._numba_kernels import INV_2PI, acos_poly

DENSE, ABRELU, CONV, FLATTEN = 0, 1, 3, 4
SAME, CIRCULAR, VALID = 0, 1, 2


@nb.njit(fastmath=True, cache=True, inline="always")
def _window(a, pad, row, out, h, w, fh, fw, mode):
    """Mean of ``a`` (h x w) over the filter window into ``out``; returns the output size.

    ``a`` is copied into ``pad`` with its border (zeros for SAME, wrapped values for
    CIRCULAR), then summed separably: along rows into ``row``, then along columns. Both
    sums are branch-free loops over contiguous memory.
    """
    if mode == VALID:
        lo_h = 0; hi_h = 0; lo_w = 0; hi_w = 0
    else:
        lo_h = (fh - 1) // 2; hi_h = fh - 1 - lo_h
        lo_w = (fw - 1) // 2; hi_w = fw - 1 - lo_w
    ph = h + lo_h + hi_h
    pw = w + lo_w + hi_w
    ho = ph - fh + 1
    wo = pw - fw + 1
    for r in range(ph):
        ih = r - lo_h
        if mode == CIRCULAR:
            ih = ih % h
        inside = 0 <= ih < h
        for c in range(pw):
            iw = c - lo_w
            if mode == CIRCULAR:
                iw = iw % w
            pad[r * pw + c] = a[ih * w + iw] if inside and 0 <= iw < w else 0.0
    for r in range(ph):
        for c in range(wo):
            s = 0.0
            for d in range(fw):
                s += pad[r * pw + c + d]
            row[r * wo + c] = s
    inv = 1.0 / (fh * fw)
    for r in range(ho):
        for c in range(wo):
            out[r * wo + c] = 0.0
        for d in range(fh):
            for c in range(wo):
                out[r * wo + c] += row[(r + d) * wo + c]
        for c in range(wo):
            out[r * wo + c] *= inv
    return ho, wo


@nb.njit(fastmath=True, cache=True, inline="always")
def _pair(x1, x2, i, j, kinds, params, slot, f1, g1, f2, g2, q, t, pad, row, H, W):
    C = x1.shape[2]
    P = H * W
    inv_c = 1.0 / C
    for p in range(P):
        s = 0.0
        for c in range(C):
            s += x1[i, p, c] * x2[j, p, c]
        q[p] = s * inv_c
        t[p] = 0.0
    h = H
    w = W
    for l in range(kinds.shape[0]):
        k = kinds[l]
        m = h * w
        if k == DENSE:
            w2 = params[l, 0]; b2 = params[l, 1]
            for p in range(m):
                qn = w2 * q[p] + b2
                t[p] = qn + w2 * t[p]
                q[p] = qn
        elif k == ABRELU:
            a = params[l, 0]; b = params[l, 1]
            fac = (a - b) * (a - b) * INV_2PI
            half = 0.5 * (a * a + b * b)
            s = slot[l]
            for p in range(m):
                f = f1[s, i, p] * f2[s, j, p]
                c = q[p] * g1[s, i, p] * g2[s, j, p]
                c = min(max(c, -1.0), 1.0)
                theta = acos_poly(c)
                root = f * math.sqrt(max(1.0 - c * c, 0.0))
                dot = half - fac * theta
                t[p] = t[p] * dot
                q[p] = fac * root + dot * q[p]
        elif k == CONV:
            fh = int(params[l, 0]); fw = int(params[l, 1]); mode = int(params[l, 2])
            w2 = params[l, 3]; b2 = params[l, 4]
            _window(t, pad, row, t, h, w, fh, fw, mode)  # (in place: a is copied first)
            h, w = _window(q, pad, row, q, h, w, fh, fw, mode)
            m = h * w
            for p in range(m):
                qn = w2 * q[p] + b2
                t[p] = qn + w2 * t[p]
                q[p] = qn
        else:  # FLATTEN: mean over positions
            sq = 0.0
            st = 0.0
            for p in range(m):
                sq += q[p]
                st += t[p]
            q[0] = sq / m
            t[0] = st / m
            h = 1
            w = 1
    return q[0], t[0]


@nb.njit(parallel=True, fastmath=True, cache=True, nogil=True)
def conv_chain_tile(x1, x2, symmetric, H, W, R, kinds, params, slot, f1, g1, f2, g2, out_q, out_t):
    """Every entry of a tile; ``x1`` (n1, H*W, C), ``x2`` (n2, H*W, C); ``f``/``g``
    (n_slots, n, H*W): ``sqrt`` and ``1/sqrt`` (0 where 0) of the self variances entering
    each activation (row-major positions); ``R``: the widest filter border (buffer room).
    A symmetric tile computes ``j >= i`` and mirrors."""
    n1 = x1.shape[0]
    n2 = x2.shape[0]
    P = H * W
    for i in nb.prange(n1):
        q = np.empty(P)
        t = np.empty(P)
        pad = np.empty((H + R) * (W + R))
        row = np.empty((H + R) * (W + R))
        j0 = i if symmetric else 0
        for j in range(j0, n2):
            a, b = _pair(x1, x2, i, j, kinds, params, slot, f1, g1, f2, g2, q, t, pad, row, H, W)
            out_q[i, j] = a
            out_t[i, j] = b
            if symmetric:
                out_q[j, i] = a
                out_t[j, i] = b
