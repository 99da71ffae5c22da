"""Randomly pivoted Cholesky (RPCholesky): a low-rank ``K ≈ F Fᵀ`` from ``r`` kernel columns.

Where the Nyström sketch ``Y = K Ω`` (:mod:`.nystrom`) needs a streaming pass over every
stored entry (plus one per power step), RPCholesky reads only the diagonal and the columns
at its pivots: ``r`` columns, ``r·n`` entries, which a caller can compute from the inputs
(:func:`ntkscale.linop.operator_columns`). :func:`rpcholesky_factor` returns the factor
``F`` itself (:class:`ColumnFactor`, PCG's preconditioner ``P = F Fᵀ + μ I`` applied by
Woodbury in ``n·r`` memory, Díaz, Epperly, Frangella, Tropp & Webber 2023);
:func:`rpcholesky` returns its eigen-form :class:`~.nystrom.NystromApprox` (thin SVD of ``F``,
the same Frangella-Tropp-Udell preconditioner as the sketch, ~3 more ``n·r`` float64 blocks).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import scipy.linalg as sla

from .nystrom import NystromApprox, _left_singular

__all__ = ["rpcholesky", "rpcholesky_factor", "ColumnFactor", "Columns"]

Columns = Callable[[np.ndarray], np.ndarray]

_MAX_STALLS = 8  # blocks in a row that accept no pivot before stopping (numerical rank reached)
_GRAM_CHUNK_BYTES = 2**27  # float64 rows of F converted at a time for Fᵀ F (a SYRK per chunk)
# ... and for the products with a few columns (each apply of the preconditioner): a buffer this
# size, reused, so the float64 rows never leave the cache hierarchy. At n = 120 000, k = 8000,
# 10 columns, both products of an apply: 2.1 s, against 3.8 s with 128 MB chunks in a reused
# buffer and ~7-10 s with a fresh 128 MB array per chunk (page faults), where float32 SGEMMs
# would take 1.0 s (they cannot be used: see ColumnFactor.preconditioner).
_APPLY_CHUNK_BYTES = 2**24


def _step(F: np.ndarray, nbytes: int) -> int:
    """Rows of ``F`` per float64 chunk of at most ``nbytes``."""
    return max(1, nbytes // (8 * max(1, F.shape[1])))


def _chunks(F: np.ndarray, nbytes: int):
    """``(r0, rows as float64)`` over F, each chunk converted into one reused buffer (a float64
    F is yielded as views, no copy)."""
    step = _step(F, nbytes)
    if F.dtype == np.float64:
        for r0 in range(0, F.shape[0], step):
            yield r0, F[r0:r0 + step]
        return
    buf = np.empty((min(step, F.shape[0]), F.shape[1]))
    for r0 in range(0, F.shape[0], step):
        rows = buf[: min(step, F.shape[0] - r0)]
        np.copyto(rows, F[r0:r0 + rows.shape[0]])
        yield r0, rows


def _gram64(F: np.ndarray) -> np.ndarray:
    """``Fᵀ F`` in float64 (k, k), F converted a chunk of rows at a time (no n·k float64 copy)."""
    G = np.zeros((F.shape[1], F.shape[1]))
    for _, C in _chunks(F, _GRAM_CHUNK_BYTES):
        G += C.T @ C
    return G


def _tmul64(F: np.ndarray, R: np.ndarray) -> np.ndarray:
    """``Fᵀ R`` in float64 (k, C) by chunks of rows."""
    out = np.zeros((F.shape[1], R.shape[1]))
    for r0, C in _chunks(F, _APPLY_CHUNK_BYTES):
        out += C.T @ R[r0:r0 + C.shape[0]]
    return out


def _mul64(F: np.ndarray, S: np.ndarray) -> np.ndarray:
    """``F S`` in float64 (n, C) by chunks of rows."""
    out = np.empty((F.shape[0], S.shape[1]))
    for r0, C in _chunks(F, _APPLY_CHUNK_BYTES):
        np.matmul(C, S, out=out[r0:r0 + C.shape[0]])
    return out


@dataclass
class ColumnFactor:
    """``K ≈ F Fᵀ`` from randomly pivoted Cholesky (:func:`rpcholesky_factor`).

    Attributes
    ----------
    F : ndarray, shape (n, k)
        The factor (float64, or float32 to halve its memory); products with it are formed in
        float64 a chunk of rows at a time.
    info : dict
        The build record (``kind='rpcholesky'``, ``pivots`` (k,), ``columns``, ``blocks``,
        ``residual_trace``, ``residual_fraction``, ``seconds``).
    passes : int
        Passes over a stored Gram (always 0: the columns come from the inputs).
    """

    F: np.ndarray
    info: dict = field(default_factory=dict)
    passes: int = 0

    @property
    def rank(self) -> int:
        return int(self.F.shape[1])

    def preconditioner(self, ridge: float) -> Callable[[np.ndarray], np.ndarray]:
        """``P⁻¹`` for ``K + ridge I``: the Frangella-Tropp-Udell preconditioner of
        ``F Fᵀ = U diag(σ²) Uᵀ`` (as :meth:`NystromApprox.preconditioner`), formed from F:

        ``P⁻¹ R = R − F W diag(d) Wᵀ Fᵀ R``,  ``d = (σ² − λ_r) / ((σ² + μ) σ²)``,

        with ``Fᵀ F = W diag(σ²) Wᵀ`` (a (k, k) eigh, so ``U = F W Σ⁻¹`` is never stored),
        ``λ_r = min σ²``, μ = ridge: the same operator as ``I + U diag((λ_r + μ)/(σ² + μ) − 1) Uᵀ``
        (Frangella, Tropp & Udell 2023, eq. (5.3), scaled by ``λ_r + μ``; Díaz et al. 2023 use RPCholesky
        columns in it). Set-up: ``n k²`` flops and a (k, k) eigh; each application ``4 n k C``, all
        in float64 (F converted a chunk of rows at a time): in the top directions the subtraction
        cancels to a relative ``(λ_r + μ)/σ²``, which float32 products would not resolve.
        (The plain Woodbury form ``P = F Fᵀ + μ I`` took 52 PCG iterations where this one takes
        43 on the digits NTK at rank 200.) Applies to R of shape (n, C).
        """
        mu = float(ridge)
        s2, W = self.setup()
        lam_r = float(s2[0])
        if lam_r + mu <= 0:
            raise ValueError("the RPCholesky preconditioner needs ridge > 0 or a full-rank factor")
        d = np.divide(s2 - lam_r, (s2 + mu) * s2, out=np.zeros_like(s2), where=s2 > 0)  # shape: (k,)
        F = self.F

        def apply(R: np.ndarray) -> np.ndarray:
            S = W @ (d[:, None] * (W.T @ _tmul64(F, R)))  # shape: (k, C)
            return R - _mul64(F, S)

        return apply

    def setup(self) -> tuple[np.ndarray, np.ndarray]:
        """``Fᵀ F = W diag(σ²) Wᵀ``: ``(σ², W)`` (σ² ascending, clipped at 0), computed once
        (``n k²`` + a (k, k) eigh) and kept for every ridge (:meth:`preconditioner`, ``pcg_path``)."""
        if "_eig" not in self.__dict__:
            s2, W = np.linalg.eigh(_gram64(self.F))  # ascending
            self.__dict__["_eig"] = (np.maximum(s2, 0.0), W)
        return self.__dict__["_eig"]

    def matvec(self, V: np.ndarray) -> np.ndarray:
        """``F Fᵀ V`` (n, C)."""
        return _mul64(self.F, _tmul64(self.F, V))

    def to_nystrom(self, copy: bool = True) -> NystromApprox:
        """The eigen-form ``U diag(σ²) Uᵀ`` (thin SVD of F; ~3 float64 (n, k) blocks).
        ``copy=False`` lets the SVD work in a float64 F's memory (F is garbage afterwards)."""
        U, s = _left_singular(np.array(self.F, dtype=np.float64) if copy else self.F)
        return NystromApprox(U=np.ascontiguousarray(U), lam=s**2, shift=0.0, passes=0, info=self.info)


def _rejection_cholesky(H: np.ndarray, rng: np.random.Generator, floor: float,
                        reject: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Accept pivots of the residual block ``H`` (b, b) by rejection; their Cholesky factor.

    Candidate ``j`` (sampled with probability ∝ its residual diagonal ``u_j`` at the block's
    start) is accepted with probability ``H_jj / u_j``, where ``H_jj`` is its residual after
    the pivots accepted before it in this block; accepted pivots are eliminated from ``H``.
    A residual below ``floor`` is rejected (it is rounding, not signal). ``reject=False``
    accepts every candidate above the floor (plain block RPCholesky). Overwrites ``H``.

    Returns ``(idx, L)``: accepted positions (m,) and the lower-triangular L (m, m) with
    ``L Lᵀ = H₀[idx, idx]``.
    """
    b = H.shape[0]
    u = np.diag(H).copy()
    acc = []
    for j in range(b):
        h = H[j, j]
        if h > floor and (not reject or rng.random() * u[j] < h):
            acc.append(j)
            H[j:, j] /= np.sqrt(h)
            H[j + 1:, j + 1:] -= np.outer(H[j + 1:, j], H[j + 1:, j])
    idx = np.asarray(acc, dtype=np.int64)
    return idx, np.tril(H[np.ix_(idx, idx)])


def rpcholesky(diag: np.ndarray, columns: Columns, rank: int, *, block: Optional[int] = None,
               seed: Optional[int] = 0, tol: float = 0.0,
               factor_dtype: type = np.float64, accept: str = "rejection") -> NystromApprox:
    """:func:`rpcholesky_factor`, returned in eigen-form (``ColumnFactor.to_nystrom``): ``U`` (n, k),
    ``lam = σ²`` (k,), ``shift = 0``, ``passes = 0``, the same ``info``."""
    return rpcholesky_factor(diag, columns, rank, block=block, seed=seed, tol=tol, factor_dtype=factor_dtype,
                             accept=accept).to_nystrom(copy=False)


def rpcholesky_factor(diag: np.ndarray, columns: Columns, rank: int, *, block: Optional[int] = None,
                      seed: Optional[int] = 0, tol: float = 0.0,
                      factor_dtype: type = np.float64, accept: str = "rejection") -> ColumnFactor:
    r"""Block (accelerated) randomly pivoted Cholesky of a PSD kernel matrix.

    With the residual diagonal ``d = diag(K − F Fᵀ)`` (``F`` empty at the start), repeat:

    1. sample a block ``S`` of ``b`` candidate pivots i.i.d. with probability ``d_i / Σ d``
       (repeats dropped);
    2. compute the residual columns ``G = K[:, S] − F F[S]ᵀ`` (``columns(S)``, shape (n, b));
    3. accept candidates by rejection on ``H = G[S]``: candidate ``j`` is kept with
       probability ``h_jj / d_{S_j}``, ``h_jj`` its residual after the block's earlier
       accepted pivots (``accept='all'``: kept whenever ``h_jj`` is above rounding); then
       ``H[A, A] = L Lᵀ`` (Cholesky over the accepted ``A``);
    4. ``F ← [F, G[:, A] L⁻ᵀ]``, ``d ← max(d − rowsum((G[:, A] L⁻ᵀ)²), 0)``;

    until ``rank`` pivots are accepted, or ``Σ d <= tol · trace(K)``, or the residual is
    rounding (no pivot accepted in several blocks). The rejection step makes the accepted
    pivots follow the sequential RPCholesky distribution exactly (Epperly, Tropp & Webber
    2024, Alg. 3), while the columns come in blocks.

    Parameters
    ----------
    diag : ndarray, shape (n,)
        ``diag(K)``.
    columns : callable
        ``columns(idx)`` -> ``K[:, idx]``, float array of shape (n, len(idx)), exact Gram columns
        for distinct indices in any order.
    rank : int
        Pivots to accept (``1 <= rank <= n``); fewer when the matrix's numerical rank is lower.
    block : int, optional
        Candidates per block (default ``min(rank, 100)``): fewer, larger ``columns`` calls.
    seed : int or None
        Seed of the pivot sampling (the result is deterministic for a given seed).
    tol : float
        Stop once the residual trace ``Σ d`` is at most ``tol · trace(K)``.
    accept : {'rejection', 'all'}
        ``'rejection'`` (default): accelerated RPCholesky, the pivots follow the sequential
        distribution and some computed columns are discarded. ``'all'``: block RPCholesky
        (Chen et al. 2023, §2.3), every computed column above rounding becomes a pivot; the
        block's pivots are sampled together, so with large blocks some are redundant.
    factor_dtype : numpy dtype
        Storage of ``F`` (n, rank): float64 (default) or float32 (half the memory; the update
        ``F Fᵀ[:, S]`` of a block of columns is then a float32 GEMM, its rounding ~1e-7 of the
        kernel's scale, and candidates whose residual is below ``1e3 · eps32 · max diag`` count
        as rounding).

    Returns
    -------
    ColumnFactor
        ``F`` (n, k), k <= rank; ``info`` holds ``kind='rpcholesky'``, ``pivots`` (k,),
        ``columns`` (candidates computed, accepted or not), ``blocks``, ``residual_trace``
        (``Σ d`` at the end) and ``residual_fraction`` (over ``trace(K)``), ``seconds``.

    Notes
    -----
    Memory: ``F`` is ``n · rank · itemsize`` bytes (float32: 3.8 GB at n = 120 000, rank 8000;
    float64: 0.96 GB at rank 1000), plus one (n, b) float64 block of columns. Flops:
    ``n · rank²`` (block updates). Entries read: ``diag`` plus ``columns · n``.

    References
    ----------
    Chen, Epperly, Tropp & Webber (2023), "Randomly pivoted Cholesky: practical approximation of
    a kernel matrix with few entry evaluations", CPAM 2024, Alg. 1 and Thm. 3.1
    (``E tr(K − F Fᵀ) <= (1 + ε) tr(K − [K]_k)`` for ``r >= k/ε + k log(1/(εη))``, with
    ``η = tr(K − [K]_k) / tr(K)``). Epperly, Tropp & Webber (2024), "Embrace rejection: kernel
    matrix approximation by accelerated randomly pivoted Cholesky", Alg. 3. Díaz, Epperly,
    Frangella, Tropp & Webber (2023), "Robust, randomized preconditioning for kernel ridge
    regression" (RPCholesky-Nyström preconditioner, eq. (1.3)).
    """
    t0 = time.perf_counter()
    d = np.array(diag, dtype=np.float64).reshape(-1)  # shape: (n,)
    n = d.size
    if not (isinstance(rank, (int, np.integer)) and 1 <= rank <= n):
        raise ValueError(f"rank must be an int in [1, n={n}], got {rank!r}")
    if np.any(~np.isfinite(d)) or np.any(d < 0):
        raise ValueError("diag must be finite and >= 0 (the diagonal of a PSD kernel)")
    if tol < 0:
        raise ValueError(f"tol must be >= 0, got {tol}")
    if accept not in ("rejection", "all"):
        raise ValueError(f"accept must be 'rejection' or 'all', got {accept!r}")
    b = min(int(rank), 100) if block is None else int(block)
    if b < 1:
        raise ValueError(f"block must be >= 1, got {block!r}")
    rng = np.random.default_rng(seed)
    trace0 = float(d.sum())
    F = np.zeros((n, int(rank)), dtype=factor_dtype)  # shape: (n, rank)
    f32 = F.dtype == np.float32
    # rounding level of a pivot: float64 columns, or float32 updates of them
    unit = 1e3 * np.finfo(np.float32).eps if f32 else n * np.finfo(np.float64).eps
    floor = float(np.max(d, initial=0.0)) * unit
    pivots: list[int] = []
    k = computed = blocks = stalls = 0
    while k < rank:
        total = float(d.sum())
        if total <= max(tol * trace0, floor) or stalls >= _MAX_STALLS:
            break
        S = rng.choice(n, size=min(b, rank - k), p=d / total)
        _, first = np.unique(S, return_index=True)
        S = S[np.sort(first)]  # shape: (s,), distinct, in sampling order
        G = np.asarray(columns(S), dtype=np.float64)  # shape: (n, s)
        if G.shape != (n, S.size):
            raise ValueError(f"columns(idx) returned shape {G.shape}, expected {(n, S.size)}")
        computed += S.size
        blocks += 1
        if k:  # (F's own dtype: a float32 F is never copied to float64)
            G -= F[:, :k] @ F[S, :k].T
        H = G[S].copy()
        H = (H + H.T) / 2
        acc, L = _rejection_cholesky(H, rng, floor, accept == "rejection")
        if acc.size == 0:
            stalls += 1
            continue
        stalls = 0
        acc = acc[: rank - k]
        L = L[: acc.size, : acc.size]
        Fn = sla.solve_triangular(L, G[:, acc].T, lower=True, check_finite=False).T  # shape: (n, m)
        F[:, k:k + acc.size] = Fn
        d -= np.einsum("ij,ij->i", Fn, Fn)
        np.maximum(d, 0.0, out=d)
        d[S[acc]] = 0.0  # pivots are exact
        pivots.extend(S[acc].tolist())
        k += acc.size
    if k == 0:
        raise ValueError("RPCholesky accepted no pivot: the kernel's diagonal is zero")
    res = float(d.sum())
    info = {"kind": "rpcholesky", "pivots": np.asarray(pivots, dtype=np.int64), "columns": int(computed),
            "blocks": int(blocks), "block": b, "accept": accept, "residual_trace": res,
            "residual_fraction": res / trace0 if trace0 > 0 else 0.0,
            "seconds": time.perf_counter() - t0}
    return ColumnFactor(F=F if k == F.shape[1] else np.ascontiguousarray(F[:, :k]), info=info)
