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

In a store (``attrs["ntkscale"]["diag_layout"] == "packed"``, :func:`with_diag_layout`),
the packed diagonal tiles of Gram kind ``k`` form the array ``k_diag`` (:func:`diag_name`),
chunk ``(i, 0)`` for tile ``(i, i)``; :class:`PackedDiagonalStore` (the base of
:class:`~ntkscale.storage.gram_store.GramStore`) routes tile ``(i, i)`` there.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import chunks
from .tiled_store import StoreMismatchError, TiledStore, codecs

__all__ = ["MIN_PACKED_TILE", "DIAG_LAYOUTS", "packed_rows", "pack_upper", "unpack_in_place", "copy_symmetric",
           "diag_name", "with_diag_layout", "create_packed_array", "PackedDiagonalStore"]

#: Smallest tile that is packed: below it the packed rectangle is not smaller than the tile.
MIN_PACKED_TILE = 3
DIAG_LAYOUTS = ("full", "packed")  # how a symmetric store holds its diagonal tiles


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


# ------------------------------------------------------------------ in a store
def diag_name(kind: str) -> str:
    """The array of the packed diagonal tiles of Gram kind ``kind``."""
    return f"{kind}_diag"


def with_diag_layout(meta: dict) -> dict:
    """``meta`` with the diagonal layout of a new store: ``'packed'`` for a symmetric store with
    tiles of at least MIN_PACKED_TILE unless ``meta`` names one (``'full'``: the layout of
    earlier versions, for tests and calibration)."""
    layout = meta.get("diag_layout")
    packable = bool(meta.get("symmetric")) and int(meta["tile"]) >= MIN_PACKED_TILE
    if layout is None:
        return dict(meta, diag_layout="packed") if packable else dict(meta)
    if layout not in DIAG_LAYOUTS or (layout == "packed" and not packable):
        raise ValueError(f"diag_layout={layout!r} needs to be one of {DIAG_LAYOUTS} ('packed': symmetric "
                         f"stores with tiles >= {MIN_PACKED_TILE})")
    return dict(meta)


def create_packed_array(group: Any, kind: str, n: int, T: int, dtype: str) -> None:
    """The (empty) array of the packed diagonal tiles of an ``n x n`` Gram kind in ``group``:
    one ``(ceil(T/2), T + 1)`` chunk per diagonal tile."""
    h = packed_rows(T)
    group.create_array(diag_name(kind), shape=(-(-n // T) * h, T + 1), chunks=(h, T + 1), dtype=dtype,
                       fill_value=0, **codecs())


class PackedDiagonalStore(TiledStore):
    """A tiled store whose Gram kinds may hold their diagonal tiles packed: which kinds do,
    and tile ``(i, i)`` of such a kind read, written and keyed through its packed chunk.

    The base of :class:`~ntkscale.storage.gram_store.GramStore` (its layout, tiles and checks).
    """

    @property
    def diag_layout(self) -> str:
        """How diagonal tiles are stored: ``'packed'`` (upper triangles, arrays ``{kind}_diag``)
        or ``'full'`` (whole tiles in the main arrays: stores without the key, cross Grams).

        Raises
        ------
        StoreMismatchError
            For a layout this version does not know (a store from a newer ntkscale).
        """
        if "diag_layout" not in self._cache:
            layout = self.meta.get("diag_layout", "full")
            if layout not in DIAG_LAYOUTS:
                raise StoreMismatchError(f"store {self.url!r} has diag_layout={layout!r}, which this ntkscale "
                                         f"does not read ({DIAG_LAYOUTS}); upgrade ntkscale or rebuild the store")
            self._cache["diag_layout"] = layout
        return self._cache["diag_layout"]

    def diag_packed(self, name: str) -> bool:
        """Whether ``name`` is a Gram kind whose diagonal tiles are packed (see :attr:`diag_layout`)."""
        key = ("packed", name)
        if key not in self._cache:
            self._cache[key] = self.diag_layout == "packed" and name in self.meta["kinds"]
        return self._cache[key]

    def _packed_tile(self, name: str, i: int, j: int) -> bool:
        return i == j and self.diag_packed(name)

    def _tile_key(self, name: str, i: int, j: int) -> str:
        """Store key of tile ``(i, j)`` of ``name`` (its packed chunk for a packed diagonal tile)."""
        if self._packed_tile(name, i, j):
            return chunks.chunk_key(self._array(diag_name(name)), i, 0)
        return chunks.chunk_key(self._array(name), i, j)

    def tile_nbytes(self, name: str, i: int, j: int) -> int:
        """Bytes of the stored chunk of tile ``(i, j)`` of ``name`` (raw layout): its packed
        chunk's for a packed diagonal tile, else :meth:`chunk_nbytes`."""
        return self.chunk_nbytes(diag_name(name) if self._packed_tile(name, i, j) else name)

    def _read_packed(self, name: str, i: int) -> np.ndarray:
        """Diagonal tile ``(i, i)`` of ``name`` from its packed chunk through zarr's indexing (any
        codec), shape (T, T): exact on and above the diagonal. A missing chunk reads as zeros."""
        T, h = self.tile, packed_rows(self.tile)
        P = np.asarray(self._array(diag_name(name))[i * h:(i + 1) * h, :])  # shape: (h, T + 1)
        flat = np.empty(T * T, dtype=P.dtype)
        flat[: P.size] = P.reshape(-1)
        return unpack_in_place(flat, T)

    def _fill_diagonal(self, name: str, rows: slice, cols: slice, out: np.ndarray) -> None:
        """Overwrite the parts of ``out`` (region ``rows, cols`` of ``name``) that lie in
        diagonal tiles with those tiles' symmetric values, from their packed chunks."""
        n1, n2 = self.shape
        T = self.tile
        r0, r1, _ = rows.indices(n1)
        c0, c1, _ = cols.indices(n2)
        for d in range(max(r0, c0) // T, -(-min(r1, c1) // T)):
            a0, a1 = max(r0, d * T), min(r1, (d + 1) * T)
            b0, b1 = max(c0, d * T), min(c1, (d + 1) * T)
            if a0 < a1 and b0 < b1:
                U = self._read_packed(name, d)
                copy_symmetric(U, slice(a0 - d * T, a1 - d * T), slice(b0 - d * T, b1 - d * T),
                               out[a0 - r0: a1 - r0, b0 - c0: b1 - c0])

    def _write_packed(self, name: str, i: int, values: np.ndarray) -> None:
        """Write diagonal tile ``(i, i)`` of ``name`` packed from ``values``' upper triangle."""
        h = packed_rows(self.tile)
        self._array(diag_name(name))[i * h:(i + 1) * h, :] = pack_upper(np.asarray(values), self.tile)
