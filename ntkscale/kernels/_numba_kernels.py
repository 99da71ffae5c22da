"""numba kernels behind ``fused.py`` (imported lazily; compiled once, cached on disk)."""

from __future__ import annotations

import math

import numba as nb
import numpy as np

# Chebyshev-interpolated (degree 11, 12 nodes on [0, 1/4], fitted in 50-digit
# arithmetic with mpmath) coefficients of P(z) = (asin(sqrt z)/sqrt z - 1)/z, so
# that asin(s) = s + s z P(z), z = s^2, for 0 <= s <= 1/2. The arccos built on it
# has max abs error 4.4e-16 on [-1, 1] (tests/kernels/test_fused.py checks it).
P0, P1, P2, P3 = 0.1666666666666665, 0.07500000000020764, 0.044642857103423646, 0.03038194736709848
P4, P5, P6, P7 = 0.02237204763174451, 0.017355259955786323, 0.013929652902326633, 0.011875494382636922
P8, P9, P10, P11 = 0.0078029494773533175, 0.01603551434914882, -0.010749050339697808, 0.028169218060881414
HALF_PI = 0.5 * math.pi
INV_2PI = 1.0 / (2.0 * math.pi)
TWO_OVER_PI = 2.0 / math.pi


@nb.njit(inline="always", fastmath=True, cache=True)
def acos_poly(x):
    """Branch-free arccos (selects, one sqrt, Horner polynomial): vectorises."""
    a = abs(x)
    hi = a > 0.5
    z = (1.0 - a) * 0.5 if hi else a * a
    s = math.sqrt(z) if hi else a
    r = P11
    r = r * z + P10; r = r * z + P9; r = r * z + P8; r = r * z + P7; r = r * z + P6
    r = r * z + P5; r = r * z + P4; r = r * z + P3; r = r * z + P2; r = r * z + P1; r = r * z + P0
    r = s + s * z * r
    asin_a = HALF_PI - 2.0 * r if hi else r
    return HALF_PI + asin_a if x < 0 else HALF_PI - asin_a


@nb.njit(fastmath=True, cache=True)
def acos_array(x, out):
    for i in range(x.shape[0]):
        out[i] = acos_poly(x[i])


@nb.njit(fastmath=True, cache=True, inline="always")
def _layers(q, t, i, j0, kinds, params, slot, f1, g1, f2, g2):
    """Take one row segment through every layer: ``q``/``t`` hold NNGP/NTK for
    entries ``(i, j0 + j)`` and are updated in place (they live in L1 cache)."""
    m = q.shape[0]
    for l in range(kinds.shape[0]):
        k = kinds[l]
        if k == 0:  # Dense: t <- A q + W2 t + B ; q <- W2 q + b2
            w2 = params[l, 0]; b2 = params[l, 1]; A = params[l, 2]; B = params[l, 3]
            for j in range(m):
                qj = q[j]
                t[j] = A * qj + w2 * t[j] + B
                q[j] = w2 * qj + b2
        elif k == 1:  # ABRelu(a, b), Cho & Saul arc-cosine form
            a = params[l, 0]; b = params[l, 1]
            fac = (a - b) * (a - b) * INV_2PI
            half = 0.5 * (a * a + b * b)
            s = slot[l]
            fi = f1[s, i]; gi = g1[s, i]
            for j in range(m):
                c = q[j] * gi * g2[s, j0 + j]
                c = min(max(c, -1.0), 1.0)
                theta = acos_poly(c)
                root = fi * f2[s, j0 + j] * math.sqrt(max(1.0 - c * c, 0.0))
                dot = half - fac * theta
                t[j] = t[j] * dot
                q[j] = fac * root + dot * q[j]
        elif k == 3:  # Exp(a, b): q <- a^2 exp(b^2 ((vi + vj)/2 + q)) ; t <- t b^2 q
            a = params[l, 0]; b2 = params[l, 1] * params[l, 1]
            s = slot[l]
            hv = 0.5 * f1[s, i]
            for j in range(m):
                qn = a * a * math.exp(b2 * (hv + 0.5 * f2[s, j0 + j] + q[j]))
                t[j] = t[j] * b2 * qn
                q[j] = qn
        elif k == 4:  # Gaussian(a, b): det = sqrt((1-2b vi)(1-2b vj) - 4 b^2 q^2)
            a2 = params[l, 0] * params[l, 0]; b = params[l, 1]
            s = slot[l]
            ui = 1.0 - 2.0 * b * f1[s, i]
            for j in range(m):
                qj = q[j]
                det = math.sqrt(max(ui * (1.0 - 2.0 * b * f2[s, j0 + j]) - 4.0 * b * b * qj * qj, 0.0))
                inv = 1.0 / det
                t[j] = t[j] * a2 * 4.0 * b * b * qj * inv * inv * inv
                q[j] = a2 * inv
        elif k == 5:  # Rbf(gamma): q <- exp(gamma (2q - vi - vj)) ; t <- t 2 gamma q
            g = params[l, 0]
            s = slot[l]
            vi = f1[s, i]
            for j in range(m):
                qn = math.exp(g * (2.0 * q[j] - vi - f2[s, j0 + j]))
                t[j] = t[j] * 2.0 * g * qn
                q[j] = qn
        elif k == 6:  # LayerNorm over the features: both kernels scale by g_i g_j
            s = slot[l]
            gi = g1[s, i]
            for j in range(m):
                r = gi * g2[s, j0 + j]
                q[j] = q[j] * r
                t[j] = t[j] * r
        else:  # Erf(a, b, c), Williams' arcsine form
            a = params[l, 0]; b = params[l, 1]; cc = params[l, 2]
            s = slot[l]
            gi = g1[s, i]
            a2 = a * a
            b2 = b * b
            for j in range(m):
                gij = gi * g2[s, j0 + j]
                c = 2.0 * b2 * q[j] * gij
                c = min(max(c, -1.0), 1.0)
                asin_c = HALF_PI - acos_poly(c)
                t[j] = t[j] * (a2 * b2 * 2.0 * TWO_OVER_PI * gij / math.sqrt(max(1.0 - c * c, 1e-300)))
                q[j] = a2 * TWO_OVER_PI * asin_c + cc * cc


@nb.njit(parallel=True, fastmath=True, cache=True, nogil=True)
def chain_kernel(G, inv_d, kinds, params, slot, f1, g1, f2, g2, out_q, out_t):
    """All layers for every entry of a cross tile, one row per task."""
    n1, n2 = G.shape
    for i in nb.prange(n1):
        q = np.empty(n2)
        t = np.zeros(n2)
        for j in range(n2):
            q[j] = G[i, j] * inv_d
        _layers(q, t, i, 0, kinds, params, slot, f1, g1, f2, g2)
        for j in range(n2):
            out_q[i, j] = q[j]
            out_t[i, j] = t[j]


@nb.njit(fastmath=True, cache=True, inline="always")
def _transpose_into(src, dst, r0, c0, mi, mj):
    """``dst[r0 + jj, c0 + ii] = src[ii, jj]`` for ``src`` of shape (mi, mj), in 8 x 8 tiles when
    both edges are multiples of 8 (each tile reads 8 cache lines of ``src`` whole instead of one
    element per line: ~10 % of the symmetric chain at n = 8192, measured)."""
    if mi % 8 == 0 and mj % 8 == 0:
        for jb in range(0, mj, 8):
            for ib in range(0, mi, 8):
                for a in range(8):
                    for b in range(8):
                        dst[r0 + jb + a, c0 + ib + b] = src[ib + b, jb + a]
    else:
        for jj in range(mj):
            for ii in range(mi):
                dst[r0 + jj, c0 + ii] = src[ii, jj]


@nb.njit(parallel=True, fastmath=True, cache=True, nogil=True)
def chain_kernel_sym(G, inv_d, kinds, params, slot, f, g, out_q, out_t, bs):
    """Symmetric tile: compute the ``bs`` x ``bs`` blocks on and above the diagonal only and
    write each one and its transpose while it is in cache (no separate mirror pass).

    Only ``G``'s upper triangle needs to hold ``x x^T`` (``fused.gram_upper``): a diagonal
    block also runs its lower entries through the layers but keeps only its upper half.
    ``out_q`` may be ``G`` itself: a block reads only G[I, J] (I <= J) before any
    write, and writes go to G[I, J] and G[J, I], which no later block reads.
    """
    n = G.shape[0]
    nblk = (n + bs - 1) // bs
    npairs = nblk * (nblk + 1) // 2
    pair_i = np.empty(npairs, np.int64)
    pair_j = np.empty(npairs, np.int64)
    c = 0
    for a in range(nblk):
        for b in range(a, nblk):
            pair_i[c] = a
            pair_j[c] = b
            c += 1
    for p in nb.prange(npairs):
        bi = pair_i[p]
        bj = pair_j[p]
        i0 = bi * bs; i1 = min(i0 + bs, n)
        j0 = bj * bs; j1 = min(j0 + bs, n)
        mi = i1 - i0; mj = j1 - j0
        bq = np.empty((mi, mj))
        bt = np.empty((mi, mj))
        for ii in range(mi):  # each row read, scaled and taken through the layers in L1
            q = bq[ii]
            t = bt[ii]
            for jj in range(mj):
                q[jj] = G[i0 + ii, j0 + jj] * inv_d
                t[jj] = 0.0
            _layers(q, t, i0 + ii, j0, kinds, params, slot, f, g, f, g)
        if bi == bj:  # diagonal block: keep the upper half and mirror it (exact symmetry)
            for ii in range(mi):
                for jj in range(ii, mj):
                    out_q[i0 + ii, j0 + jj] = bq[ii, jj]
                    out_t[i0 + ii, j0 + jj] = bt[ii, jj]
                    out_q[j0 + jj, i0 + ii] = bq[ii, jj]
                    out_t[j0 + jj, i0 + ii] = bt[ii, jj]
        else:
            for ii in range(mi):
                for jj in range(mj):
                    out_q[i0 + ii, j0 + jj] = bq[ii, jj]
                    out_t[i0 + ii, j0 + jj] = bt[ii, jj]
            _transpose_into(bq, out_q, j0, i0, mi, mj)
            _transpose_into(bt, out_t, j0, i0, mi, mj)
