"""Packed diagonal tiles of a symmetric Gram store: the upper triangle folded into a rectangle.

A diagonal tile ``U`` (``T x T``, symmetric) is stored as its upper triangle (the diagonal
included) folded into ``h = ceil(T/2)`` rows of ``T + 1`` entries: packed row ``r`` holds
``U[r, r:T]`` (``T - r`` entries) followed by ``U[T-1-r, T-1-r:T]`` (``r + 1`` entries); for
odd ``T`` the middle row ``r = (T-1)/2`` holds its first part only (then zeros). That is
``T(T+1)/2`` entries in ``h(T+1)``, about half of ``T²``.

Unpacking works in place, in a buffer of a whole ``T x T`` tile that holds the packed
rows at its start (:func:`unpack_in_place`): read flat, packed row ``r`` starts at
``r(T+1)``, which is where ``U[r, r]`` lies in the ``T x T`` tile, so every first part is
already in place; only the second parts move, each to the end of row ``T-1-r``, past the
packed data (rows ``>= T/2``), so no move overwrites a part not yet moved. The tile's
lower triangle is then garbage: readers use the upper triangle, or mirror it
(:func:`copy_symmetric`).
"""

from __future__ import annotations

import numpy as np

__all__ = ["MIN_PACKED_TILE", "packed_rows", "pack_upper", "unpack_in_place", "copy_symmetric"]

#: Smallest tile that is packed: below it the packed rectangle is not smaller than the tile.
MIN_PACKED_TILE = 3


def packed_rows(T: int) -> int:
    """Rows ``h = ceil(T/2)`` of a packed ``T x T`` diagonal tile (each ``T + 1`` long)."""
    return (int(T) + 1) // 2


def pack_upper(U: np.ndarray, T: int) -> np.ndarray:
    """The packed form of the upper triangle of ``U``, zero-padded to a ``T x T`` tile.

    Parameters
    ----------
    U : ndarray, shape (m, m), m <= T
        A diagonal tile (an edge tile may be smaller than ``T``); only its upper triangle
        (the diagonal included) is read.
    T : int
        The store's tile edge.

    Returns
    -------
    ndarray, shape (ceil(T/2), T + 1), U's dtype, C order
    """
    m = U.shape[0]
    if U.shape != (m, m) or m > T:
        raise ValueError(f"pack_upper needs a square tile of edge <= {T}, got shape {U.shape}")
    P = np.zeros((packed_rows(T), T + 1), dtype=U.dtype)
    for r in range(min(P.shape[0], m)):  # first parts: U[r, r:T]
        P[r, : m - r] = U[r, r:m]
    for r in range(T // 2):  # second parts: U[s, s:T], s = T-1-r > r
        s = T - 1 - r
        if s < m:
            P[r, T - r: T - r + m - s] = U[s, s:m]
    return P


def unpack_in_place(data: np.ndarray, T: int) -> np.ndarray:
    """Unfold a packed diagonal tile held at the start of a tile buffer, in place.

    Parameters
    ----------
    data : ndarray, shape (>= T*T,), 1-d, contiguous
        Its first ``ceil(T/2) * (T+1)`` entries are the packed tile (see :func:`pack_upper`).

    Returns
    -------
    ndarray, shape (T, T), a view of ``data``
        Upper triangle (the diagonal included) exact; the lower triangle is garbage.
    """
    if data.ndim != 1 or data.size < T * T:
        raise ValueError(f"unpack_in_place needs a flat buffer of at least {T * T} entries")
    for r in range(T // 2):
        src = (r + 1) * T  # packed row r's second part: U[T-1-r, T-1-r:T], r + 1 entries
        dst = (T - 1 - r) * (T + 1)
        data[dst: dst + r + 1] = data[src: src + r + 1]
    return data[: T * T].reshape(T, T)


def copy_symmetric(U: np.ndarray, rows: slice, cols: slice, out: np.ndarray, band: int = 256) -> None:
    """``out[...] = S[rows, cols]`` for the symmetric ``S`` whose upper triangle is ``U``'s.

    Copied a band of rows at a time: the part right of the band's diagonal block straight
    from ``U``, the part left of it as a transposed copy of ``U``'s columns, and the small
    diagonal block entry by entry (``np.where``); ``U``'s lower triangle is never read.

    Parameters
    ----------
    U : ndarray, shape (T, T)
        A diagonal tile whose upper triangle is exact (its lower triangle may be garbage).
    rows, cols : slice
        Contiguous index ranges (step 1) within ``0:T``.
    out : ndarray, shape (rows, cols)
        Written in place.
    """
    r0, r1, c0, c1 = rows.start, rows.stop, cols.start, cols.stop
    for a in range(r0, r1, band):
        b = min(a + band, r1)
        o = out[a - r0: b - r0]
        hi = max(c0, b)  # columns >= b: above the diagonal for every row of the band
        if hi < c1:
            o[:, hi - c0:] = U[a:b, hi:c1]
        lo = min(c1, a)  # columns < a: below the diagonal for every row of the band
        if c0 < lo:
            o[:, : lo - c0] = U[c0:lo, a:b].T
        m0, m1 = max(c0, a), min(c1, b)  # columns crossing the diagonal inside the band
        if m0 < m1:
            upper = np.arange(a, b)[:, None] <= np.arange(m0, m1)[None, :]
            o[:, m0 - c0: m1 - c0] = np.where(upper, U[a:b, m0:m1], U[m0:m1, a:b].T)
