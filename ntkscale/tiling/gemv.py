"""Products of one stored Gram tile with a block of vectors, float64-accurate without a
float64 copy of the tile (pure NumPy/BLAS; no I/O).

A float32 tile is cast to float64 a band of rows at a time into a small reused buffer,
and each band feeds two DGEMMs: ``K_band @ V_cols`` for the tile's row block and
``K_bandᵀ @ V_rows[band]`` accumulated in place (BLAS ``beta = 1``) into the column
block. The result equals ``K.astype(float64) @ V`` to float64 rounding (the stored
float32 values are exact in float64), at the cost of the float32 GEMV itself: the
product is bound by reading the tile once, not by casts or page faults of fresh
float64 copies (a whole-tile ``astype`` allocates 2x the tile on every call).

Band height (:func:`band_rows`): for a few right-hand columns (CG, Lanczos) the products
are memory-bound, so the band is kept cache-sized (``CACHE_BYTES``) and the float64 copy
never reaches RAM; for many columns (sketches, eigensolver passes) the products are
compute-bound and the band is ``BAND`` rows, so the mirrored product's DGEMM has a deep
inner dimension (it rewrites its (p, k) output once per band).
"""

from __future__ import annotations

from typing import Optional

import numpy as np
from scipy.linalg.blas import dgemm

__all__ = ["BAND", "CACHE_BYTES", "WIDE", "band_rows", "band_buffer", "tile_products",
           "tile_products_single", "diag_tile_products"]

BAND = 256  # rows per cast band for many columns (and the scratch's height)
CACHE_BYTES = 1 << 20  # float64 band size for few columns: stays in L2
WIDE = 64  # columns from which the products are compute-bound


def band_rows(p: int, k: int, band: int = BAND) -> int:
    """Rows per cast band for a tile of ``p`` columns times ``k`` right-hand columns."""
    if k >= WIDE:
        return band
    return int(max(8, min(band, CACHE_BYTES // (8 * max(p, 1)))))


def band_buffer(cols: int, band: int = BAND) -> np.ndarray:
    """A reusable float64 scratch for :func:`tile_products` on tiles of ``cols`` columns."""
    return np.empty((band, cols), dtype=np.float64)


def tile_products(K: np.ndarray, v_cols: np.ndarray, out_rows: np.ndarray,
                  v_rows: Optional[np.ndarray] = None, out_cols: Optional[np.ndarray] = None,
                  scratch: Optional[np.ndarray] = None) -> None:
    """``out_rows += K @ v_cols`` and, if ``v_rows`` is given, ``out_cols += Kᵀ @ v_rows``.

    Parameters
    ----------
    K : ndarray, shape (m, p), float32 or float64, rows C-contiguous
        One Gram tile (a view into a read buffer is fine; it is not modified).
    v_cols : ndarray, shape (p, k), float64
        Rows of V matching the tile's columns.
    out_rows : ndarray, shape (m, k), float64
        Accumulator for the tile's row block (updated in place).
    v_rows : ndarray, shape (m, k), float64, optional
        Rows of V matching the tile's rows (the mirrored product of a symmetric store).
    out_cols : ndarray, shape (p, k), float64, **Fortran-ordered**, optional
        Accumulator for the column block (updated in place by BLAS).
    scratch : ndarray, shape (b, >= p), float64, C-contiguous, optional
        Band buffer from :func:`band_buffer` (allocated here if None).
    """
    m, p = K.shape
    mirrored = v_rows is not None
    if mirrored and (out_cols is None or not out_cols.flags.f_contiguous or out_cols.dtype != np.float64):
        raise ValueError("out_cols must be a Fortran-ordered float64 array for the in-place update")
    if K.dtype == np.float64:
        out_rows += K @ v_cols
        if mirrored:
            dgemm(1.0, K.T, v_rows, beta=1.0, c=out_cols, overwrite_c=1)
        return
    if scratch is None:
        scratch = band_buffer(p)
    b = min(scratch.shape[0], band_rows(p, v_cols.shape[1], scratch.shape[0]))
    part = np.empty((b, v_cols.shape[1]))
    for r0 in range(0, m, b):
        r1 = min(r0 + b, m)
        band = scratch.reshape(-1)[: (r1 - r0) * p].reshape(r1 - r0, p)  # contiguous at edges too
        np.copyto(band, K[r0:r1])  # float32 -> float64, into cache-sized scratch
        np.matmul(band, v_cols, out=part[: r1 - r0])
        out_rows[r0:r1] += part[: r1 - r0]
        if mirrored:
            dgemm(1.0, band.T, v_rows[r0:r1], beta=1.0, c=out_cols, overwrite_c=1)


def tile_products_single(K: np.ndarray, v_cols: np.ndarray, out_rows: np.ndarray,
                         v_rows: Optional[np.ndarray] = None, out_cols: Optional[np.ndarray] = None) -> None:
    """:func:`tile_products` in single precision: SGEMMs on the float32 tile itself (no cast),
    each tile's float32 result added to the float64 accumulators.

    For sketches that need not be exact (a Nyström preconditioner): the product carries the
    float32 GEMM's rounding, about ``sqrt(p) * 6e-8`` relative per entry, and runs at the
    SGEMM rate (~2x DGEMM) on wide blocks of ``V``.

    Parameters
    ----------
    K : ndarray, shape (m, p), float32
    v_cols : ndarray, shape (p, k), float32
    out_rows : ndarray, shape (m, k), float64 (updated in place)
    v_rows : ndarray, shape (m, k), float32, optional
    out_cols : ndarray, shape (p, k), float64, optional (updated in place)
    """
    out_rows += np.matmul(K, v_cols)
    if v_rows is not None:
        out_cols += np.matmul(K.T, v_rows)


def diag_tile_products(U: np.ndarray, v: np.ndarray, out: np.ndarray,
                       scratch: Optional[np.ndarray] = None) -> None:
    """``out += S @ v`` for the symmetric diagonal tile ``S`` given by its upper triangle.

    ``S = U + strict(U)ᵀ`` (a packed diagonal tile is exact only on and above its diagonal,
    :mod:`ntkscale.storage.packed`); ``U``'s lower triangle is never read (it may hold any
    bits, NaN patterns included). As in
    :func:`tile_products`, ``U`` is cast a band of rows at a time into the float64 scratch,
    from the band's diagonal block rightwards (the upper triangle's part of those rows);
    the diagonal block's lower half is filled with its mirror in the scratch, so the band
    gives its rows' products in one GEMM, and the part right of the block gives the
    mirrored products of the rows below it (``strict(U)ᵀ v``). Every entry of the upper
    triangle is read once: half the work of a full-tile product.

    Parameters
    ----------
    U : ndarray, shape (m, m), float32 or float64, rows C-contiguous
        A diagonal tile (a view into a read buffer is fine; it is not modified).
    v : ndarray, shape (m, k), float64
        Rows of V matching the tile's rows (= its columns).
    out : ndarray, shape (m, k), float64
        Accumulator for the tile's row block (updated in place).
    scratch : ndarray, shape (b, >= m), float64, C-contiguous, optional
        Band buffer from :func:`band_buffer` (allocated here if None).
    """
    m, k = U.shape[0], v.shape[1]
    if U.shape != (m, m) or v.shape[0] != m or out.shape != (m, k):
        raise ValueError(f"diag_tile_products needs U (m, m), v and out (m, k); got {U.shape}, "
                         f"{v.shape}, {out.shape}")
    if scratch is None:
        scratch = band_buffer(m)
    b = max(1, min(scratch.shape[0], band_rows(m, k, scratch.shape[0])))
    lower = np.tri(b, b, -1, dtype=bool)  # strict lower triangle of a diagonal block
    part = np.empty((m, k))
    for r0 in range(0, m, b):
        r1 = min(r0 + b, m)
        h, w = r1 - r0, m - r0
        band = scratch.reshape(-1)[: h * w].reshape(h, w)  # U[r0:r1, r0:m], contiguous
        np.copyto(band[:, h:], U[r0:r1, r1:m])
        block = band[:, :h]  # the diagonal block: its upper half cast, then mirrored
        np.copyto(block, U[r0:r1, r0:r1], where=~lower[:h, :h])  # (garbage below is never cast)
        np.copyto(block, block.T, where=lower[:h, :h])
        np.matmul(band, v[r0:m], out=part[:h])
        out[r0:r1] += part[:h]
        if r1 < m:  # strict(U)ᵀ: the band's right part feeds the rows below it
            np.matmul(band[:, h:].T, v[r0:r1], out=part[: m - r1])
            out[r1:m] += part[: m - r1]
