"""numba kernel behind ``conv_fused.py``'s pooled chains: all pixel pairs, one pair at a time.

A pair's covariances live in two buffers of ``H1 W1 H2 W2`` (the ``"full"`` layout,
row-major ``(i1, j1, i2, j2)``) that each layer rewrites: separable joint-shift window sums
for a stride-1 ``Conv``, separable per-axis window sums for ``AvgPool``, the arc-cosine
ReLU with per-position variances, and a final mean (``GlobalAvgPool``) or diagonal mean
(``Flatten``). No temporaries leave the pair: the array recursion's dozens of passes over
``n1 n2 (H W)^2`` arrays become a few passes over one pair's.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from ._numba_kernels import INV_2PI, acos_poly

DENSE, ABRELU, CONV, FLATTEN, GAP, POOL = 0, 1, 3, 4, 5, 6
SAME, CIRCULAR, VALID = 0, 1, 2


@nb.njit(fastmath=True, cache=True, inline="always")
def _src(i, lo, n, mode):
    """Input index of output ``i`` shifted by ``-lo`` (-1: outside, a zero)."""
    k = i - lo
    if mode == CIRCULAR:
        return k % n
    if k < 0 or k >= n:
        return -1
    return k


@nb.njit(fastmath=True, cache=True)
def _joint_fast(a, out, d, f, mode, axis):
    """:func:`_joint` for zero (SAME) or no (VALID) padding: for each pair of rows (or
    tap) the valid outputs form one contiguous run, summed by a unit-stride inner loop."""
    H1, W1, H2, W2 = d[0], d[1], d[2], d[3]
    n = H1 if axis == 0 else W1
    if mode == VALID:
        lo = 0
        no = n - f + 1
    else:
        lo = (f - 1) // 2
        no = n
    if axis == 0:
        oH1, oW1, oH2, oW2 = no, W1, no, W2
    else:
        oH1, oW1, oH2, oW2 = H1, no, H2, no
    m = oH1 * oW1 * oH2 * oW2
    for p in range(m):
        out[p] = 0.0
    if axis == 0:  # rows: shift k applies to i1 and i2; (j1, j2) blocks are contiguous
        for i1 in range(oH1):
            for i2 in range(oH2):
                for k in range(f):
                    a1 = i1 + k - lo
                    a2 = i2 + k - lo
                    if a1 < 0 or a1 >= H1 or a2 < 0 or a2 >= H2:
                        continue
                    for j1 in range(W1):
                        src = (a1 * W1 + j1) * H2 * W2 + a2 * W2
                        dst = (i1 * W1 + j1) * oH2 * W2 + i2 * W2
                        for j2 in range(W2):
                            out[dst + j2] += a[src + j2]
    else:  # columns: shift k on j1 and j2; valid j2 form the run [lo_k, hi_k)
        for i1 in range(H1):
            for j1 in range(oW1):
                for k in range(f):
                    b1 = j1 + k - lo
                    if b1 < 0 or b1 >= W1:
                        continue
                    j2lo = max(0, lo - k)
                    j2hi = min(oW2, W2 + lo - k)
                    for i2 in range(H2):
                        src = ((i1 * W1 + b1) * H2 + i2) * W2 + k - lo
                        dst = ((i1 * oW1 + j1) * H2 + i2) * oW2
                        for j2 in range(j2lo, j2hi):
                            out[dst + j2] += a[src + j2]
    d[0], d[1], d[2], d[3] = oH1, oW1, oH2, oW2


@nb.njit(fastmath=True, cache=True)
def _joint(a, out, d, f, mode, axis):
    """Window sum of length ``f`` shifted jointly on the two axes of one spatial direction
    (``axis`` 0: rows, i1/i2; 1: columns, j1/j2). ``d``: dims (H1, W1, H2, W2), updated."""
    H1, W1, H2, W2 = d[0], d[1], d[2], d[3]
    n = H1 if axis == 0 else W1
    if mode == VALID:
        lo = 0
        no = n - f + 1
    else:
        lo = (f - 1) // 2
        no = n
    if axis == 0:
        oH1, oW1, oH2, oW2 = no, W1, no, W2
    else:
        oH1, oW1, oH2, oW2 = H1, no, H2, no
    for i1 in range(oH1):
        for j1 in range(oW1):
            for i2 in range(oH2):
                for j2 in range(oW2):
                    s = 0.0
                    for k in range(f):
                        if axis == 0:
                            a1 = _src(i1 + k, lo, n, mode)
                            a2 = _src(i2 + k, lo, n, mode)
                            if a1 < 0 or a2 < 0:
                                continue
                            s += a[((a1 * W1 + j1) * H2 + a2) * W2 + j2]
                        else:
                            b1 = _src(j1 + k, lo, n, mode)
                            b2 = _src(j2 + k, lo, n, mode)
                            if b1 < 0 or b2 < 0:
                                continue
                            s += a[((i1 * W1 + b1) * H2 + i2) * W2 + b2]
                    out[((i1 * oW1 + j1) * oH2 + i2) * oW2 + j2] = s
    d[0], d[1], d[2], d[3] = oH1, oW1, oH2, oW2


@nb.njit(fastmath=True, cache=True)
def _pool(a, out, d, f, s, mode, axis):
    """Window sum of length ``f``, stride ``s`` along one of the four axes (``axis`` 0..3),
    zero padding for SAME. The array is seen as (outer, n, inner): each valid tap adds a
    contiguous run of ``inner`` values."""
    n = d[axis]
    if mode == VALID:
        lo = 0
        no = (n - f) // s + 1
    else:
        no = -(-n // s)
        total = max((no - 1) * s + f - n, 0)
        lo = total // 2
    outer = 1
    for ax in range(axis):
        outer *= d[ax]
    inner = 1
    for ax in range(axis + 1, 4):
        inner *= d[ax]
    for p in range(outer * no * inner):
        out[p] = 0.0
    for oo in range(outer):
        for o in range(no):
            dst = (oo * no + o) * inner
            for k in range(f):
                src_i = o * s + k - lo
                if src_i < 0 or src_i >= n:
                    continue
                src = (oo * n + src_i) * inner
                for ii in range(inner):
                    out[dst + ii] += a[src + ii]
    d[axis] = no


@nb.njit(fastmath=True, cache=True)
def _pair(x1, x2, i, j, kinds, params, slot, f1, g1, f2, g2, q, t, tmp, d, H, W):
    C = x1.shape[2]
    P = H * W
    inv_c = 1.0 / C
    for p1 in range(P):
        for p2 in range(P):
            s = 0.0
            for c in range(C):
                s += x1[i, p1, c] * x2[j, p2, c]
            q[p1 * P + p2] = s * inv_c
            t[p1 * P + p2] = 0.0
    d[0], d[1], d[2], d[3] = H, W, H, W
    for l in range(kinds.shape[0]):
        k = kinds[l]
        m = d[0] * d[1] * d[2] * d[3]
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
            P1 = d[0] * d[1]
            P2 = d[2] * d[3]
            for p1 in range(P1):
                fi = f1[s, i, p1]
                gi = g1[s, i, p1]
                for p2 in range(P2):
                    p = p1 * P2 + p2
                    f = fi * f2[s, j, p2]
                    c = q[p] * gi * g2[s, j, p2]
                    c = min(max(c, -1.0), 1.0)
                    theta = acos_poly(c)
                    root = f * math.sqrt(max(1.0 - c * c, 0.0))
                    dot = half - fac * theta
                    t[p] = t[p] * dot
                    q[p] = fac * root + dot * q[p]
        elif k == CONV:
            fh = int(params[l, 0]); fw = int(params[l, 1]); mode = int(params[l, 2])
            w2 = params[l, 3]; b2 = params[l, 4]
            e = d.copy()
            if mode == CIRCULAR:
                _joint(t, tmp, e, fh, mode, 0)
                _joint(tmp, t, e, fw, mode, 1)
                _joint(q, tmp, d, fh, mode, 0)
                _joint(tmp, q, d, fw, mode, 1)
            else:
                _joint_fast(t, tmp, e, fh, mode, 0)
                _joint_fast(tmp, t, e, fw, mode, 1)
                _joint_fast(q, tmp, d, fh, mode, 0)
                _joint_fast(tmp, q, d, fw, mode, 1)
            inv = 1.0 / (fh * fw)
            for p in range(d[0] * d[1] * d[2] * d[3]):
                qn = w2 * q[p] * inv + b2
                t[p] = qn + w2 * t[p] * inv
                q[p] = qn
        elif k == POOL:
            wh = int(params[l, 0]); ww = int(params[l, 1]); sh = int(params[l, 2])
            sw = int(params[l, 3]); mode = int(params[l, 4])
            for buf in (q, t):
                e = d.copy()
                _pool(buf, tmp, e, wh, sh, mode, 0)
                _pool(tmp, buf, e, wh, sh, mode, 2)
                _pool(buf, tmp, e, ww, sw, mode, 1)
                _pool(tmp, buf, e, ww, sw, mode, 3)
            d[0], d[1], d[2], d[3] = e[0], e[1], e[2], e[3]
            inv = 1.0 / (wh * wh * ww * ww)
            for p in range(d[0] * d[1] * d[2] * d[3]):
                q[p] *= inv
                t[p] *= inv
        elif k == GAP:
            sq = 0.0
            st = 0.0
            for p in range(m):
                sq += q[p]
                st += t[p]
            q[0] = sq / m
            t[0] = st / m
            d[0], d[1], d[2], d[3] = 1, 1, 1, 1
        else:  # FLATTEN: mean of the same-position entries
            P1 = d[0] * d[1]
            sq = 0.0
            st = 0.0
            for p in range(P1):
                sq += q[p * P1 + p]
                st += t[p * P1 + p]
            q[0] = sq / P1
            t[0] = st / P1
            d[0], d[1], d[2], d[3] = 1, 1, 1, 1
    return q[0], t[0]


@nb.njit(parallel=True, fastmath=True, cache=True, nogil=True)
def pool_chain_tile(x1, x2, symmetric, H, W, kinds, params, slot, f1, g1, f2, g2, out_q, out_t):
    """Every entry of a tile in the full layout; ``x1`` (n1, H*W, C), ``x2`` (n2, H*W, C);
    ``f``/``g`` (n_slots, n, H*W): ``sqrt``/``1/sqrt`` of each row's same-position variances
    entering each activation (row-major positions of that layer's image). A symmetric tile
    computes ``j >= i`` and mirrors."""
    n1 = x1.shape[0]
    n2 = x2.shape[0]
    P = H * W
    for i in nb.prange(n1):
        q = np.empty(P * P)
        t = np.empty(P * P)
        tmp = np.empty(P * P)
        d = np.empty(4, np.int64)
        j0 = i if symmetric else 0
        for j in range(j0, n2):
            a, b = _pair(x1, x2, i, j, kinds, params, slot, f1, g1, f2, g2, q, t, tmp, d, H, W)
            out_q[i, j] = a
            out_t[i, j] = b
            if symmetric:
                out_q[j, i] = a
                out_t[j, i] = b
