"""Randomly pivoted Cholesky (RPCholesky): a low-rank ``K ≈ F Fᵀ`` from ``r`` kernel columns.

Where the Nyström sketch ``Y = K Ω`` (:mod:`.nystrom`) needs a streaming pass over every
stored entry (plus one per power step), RPCholesky reads only the diagonal and the columns
at its pivots: ``r`` columns, ``r·n`` entries, which a caller can compute from the inputs
(:func:`ntkscale.linop.operator_columns`). The result is returned as a
:class:`~.nystrom.NystromApprox`, so the same Frangella-Tropp-Udell preconditioner serves
both (Díaz, Epperly, Frangella, Tropp & Webber 2023 precondition KRR exactly so).
"""

from __future__ import annotations

import time
from typing import Callable, Optional

import numpy as np
import scipy.linalg as sla

from .nystrom import NystromApprox, _left_singular

__all__ = ["rpcholesky", "Columns"]

Columns = Callable[[np.ndarray], np.ndarray]

_MAX_STALLS = 8  # blocks in a row that accept no pivot before stopping (numerical rank reached)


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
    2024, Alg. 3), while the columns come in blocks. Then ``F = U Σ Wᵀ`` (thin SVD) gives
    ``K ≈ F Fᵀ = U diag(σ²) Uᵀ``.

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
        Storage of ``F`` (n, rank): float64 (default) or float32 (half the memory; the residual
        columns are still formed in float64).

    Returns
    -------
    NystromApprox
        ``U`` (n, k), ``lam = σ²`` (k,), ``shift = 0``, ``passes = 0``; ``info`` holds
        ``kind='rpcholesky'``, ``pivots`` (k,), ``columns`` (candidates computed, accepted or
        not), ``blocks``, ``residual_trace`` (``Σ d`` at the end) and ``residual_fraction``
        (over ``trace(K)``), ``seconds``.

    Notes
    -----
    Memory: ``F`` is ``n · rank · itemsize`` bytes (float64: 4.8 GB at n = 120 000, rank 5000;
    0.96 GB at rank 1000), plus one (n, b) block of columns; the SVD at the end makes one more
    float64 copy of ``F``. Flops: ``O(rank² n)``. Entries read: ``diag`` plus
    ``columns · n``.

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
    floor = float(np.max(d, initial=0.0)) * n * np.finfo(np.float64).eps  # rounding level of a pivot
    F = np.zeros((n, int(rank)), dtype=factor_dtype)  # shape: (n, rank)
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
        if k:
            G -= F[:, :k] @ np.asarray(F[S, :k], dtype=np.float64).T
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
    U, s = _left_singular(F[:, :k])
    del F
    res = float(d.sum())
    info = {"kind": "rpcholesky", "pivots": np.asarray(pivots, dtype=np.int64), "columns": int(computed),
            "blocks": int(blocks), "block": b, "accept": accept, "residual_trace": res,
            "residual_fraction": res / trace0 if trace0 > 0 else 0.0,
            "seconds": time.perf_counter() - t0}
    return NystromApprox(U=np.ascontiguousarray(U), lam=s**2, shift=0.0, passes=0, info=info)
