"""A stored tiled Cholesky factor: solves and log-determinants by streaming its tiles.

See :mod:`ntkscale.tiling.cholesky` for how the factor is computed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

import numpy as np
from scipy.linalg import solve_triangular

from ..storage import StoreAccessError
from ..storage.factor_store import FactorStore

__all__ = ["TiledFactor"]


@dataclass
class TiledFactor:
    """A stored tiled Cholesky factor ``U`` (``K + ridge I = U^T U``).

    Attributes: ``url`` (factor store), ``n``, ``tile``, ``dtype`` (float32 | float64),
    ``ridge`` (absolute ridge factored, jitter included), ``jitter`` (relative jitter added:
    ``ridge - requested = jitter * mean(diag K)``; 0 if none), ``seconds`` (wall time of
    :func:`factor_tiles`), ``computed`` / ``n_tiles`` (tiles computed by this call / in all),
    ``resumed`` (tiles of an earlier run were reused), ``restarts`` (times it resumed by
    itself after a leading worker died), ``breakdowns`` (one ``(jitter, pivot, tile)`` per
    factorization that broke down before this one succeeded: the relative jitter tried, the
    global pivot and the diagonal tile where POTRF failed), ``mean_diag`` (mean of diag K,
    the unit of the relative jitter; 0 when no jitter was asked for).
    """

    url: str
    n: int
    tile: int
    dtype: np.dtype
    ridge: float
    jitter: float
    seconds: float
    computed: int = 0
    n_tiles: int = 0
    resumed: bool = False
    factor_id: str = ""
    storage_options: Optional[dict] = None
    restarts: int = 0  # times the factorization resumed by itself after a leading worker died
    breakdowns: list = field(default_factory=list)  # (jitter, pivot, tile) of each failed try
    mean_diag: float = 0.0

    def _store(self) -> FactorStore:
        fs = FactorStore.open(self.url, storage_options=self.storage_options)
        if fs.meta.get("factor_id") != self.factor_id or not fs.meta.get("complete"):
            raise StoreAccessError(f"factor store {self.url!r} was replaced or is incomplete; factor again")
        return fs

    _memory: Optional[dict] = field(default=None, repr=False, compare=False)

    @property
    def nbytes(self) -> int:
        """Bytes of the stored upper tiles (what :meth:`keep_tiles` holds)."""
        nb = -(-self.n // self.tile)
        return nb * (nb + 1) // 2 * self.tile ** 2 * np.dtype(self.dtype).itemsize

    def keep_tiles(self, max_bytes: float) -> bool:
        """Keep the tiles in memory across :meth:`solve` calls (refinement solves many times)
        if they take at most ``max_bytes``; return whether they will be kept."""
        self._memory = {} if self.nbytes <= max_bytes else None
        return self._memory is not None

    def drop_tiles(self) -> None:
        """Forget the tiles kept by :meth:`keep_tiles`."""
        self._memory = None

    def _tiles(self, order: list[tuple[int, int]]) -> Iterator[np.ndarray]:
        mem = self._memory
        if mem is not None and all(t in mem for t in order):
            yield from (mem[t] for t in order)
            return
        for t, tile in zip(order, self._store().stream_tiles(order)):
            if mem is not None:
                mem[t] = tile
            yield tile

    def solve(self, B: Any) -> np.ndarray:
        """``(K + ridge I)^-1 B``: forward ``U^T z = B``, then back ``U x = z``.

        Each sweep streams every factor tile once (or takes them from memory, see
        :meth:`keep_tiles`). The sweeps run in the factor's dtype: a float32 factor gives a
        float32-accurate solution (refinement corrects it against float64 residuals).

        Parameters
        ----------
        B : array, shape (n,) or (n, C)

        Returns
        -------
        ndarray, shape like ``B``, float64
        """
        B = np.asarray(B, dtype=np.float64)
        if B.ndim not in (1, 2) or B.shape[0] != self.n or not np.all(np.isfinite(B)):
            raise ValueError(f"B must be finite with shape ({self.n},) or ({self.n}, C), got {B.shape}")
        Z = np.array(B.reshape(self.n, -1), dtype=self.dtype)  # shape: (n, C)
        T = self.tile
        nb = -(-self.n // T)
        sl = [slice(k * T, min((k + 1) * T, self.n)) for k in range(nb)]
        fwd = self._tiles([(i, j) for i in range(nb) for j in range(i, nb)])
        for i in range(nb):  # U^T z = b: z_i = U_ii^-T (b_i - sum_{m<i} U_mi^T z_m)
            Z[sl[i]] = solve_triangular(next(fwd), Z[sl[i]], trans="T", check_finite=False)
            for j in range(i + 1, nb):
                Z[sl[j]] -= next(fwd).T @ Z[sl[i]]
        bwd = self._tiles([(i, j) for i in reversed(range(nb)) for j in range(i, nb)])
        for i in reversed(range(nb)):  # U x = z: x_i = U_ii^-1 (z_i - sum_{j>i} U_ij x_j)
            Uii = next(bwd)
            for j in range(i + 1, nb):
                Z[sl[i]] -= next(bwd) @ Z[sl[j]]
            Z[sl[i]] = solve_triangular(Uii, Z[sl[i]], check_finite=False)
        Z = Z.astype(np.float64, copy=False)
        return Z[:, 0] if B.ndim == 1 else Z

    def pivots(self) -> np.ndarray:
        """The Cholesky pivots ``U_ii^2``, shape (n,), float64 (reads the diagonal tiles only,
        or takes them from memory after :meth:`keep_tiles`).

        Pivot ``i`` is the Schur complement of ``A[:i, :i]`` in ``A[:i+1, :i+1]``
        (``A = K + ridge I``), so ``lambda_min(A) <= min(pivots) <= max(pivots) <= lambda_max(A)``
        and ``max(diag A) / min(pivots)`` is a lower bound on ``cond(A)``: a tiny pivot is a
        certificate of (near-)rank-deficiency, e.g. a row that (nearly) repeats an earlier one.
        """
        nb = -(-self.n // self.tile)
        return np.concatenate([np.diag(t).astype(np.float64) ** 2
                               for t in self._tiles([(i, i) for i in range(nb)])])

    def logdet(self) -> float:
        """``log det(K + ridge I) = 2 sum_i log U_ii``."""
        fs, T = self._store(), self.tile
        return float(sum(2 * np.log(np.diag(fs.read_tile(i, i)).astype(np.float64)).sum()
                         for i in range(-(-self.n // T))))
