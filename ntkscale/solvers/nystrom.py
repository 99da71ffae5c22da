"""Randomized Nyström approximation of a PSD Gram operator, and the Nyström preconditioner.

One sketch ``Y = K Ω`` (one streaming pass over the tiles, all ``rank`` columns at once)
gives ``K ≈ U diag(lam) Uᵀ``; optional power steps (one pass each) sharpen the top of
the spectrum. The same approximation serves as a PCG preconditioner for any ridge
(:meth:`NystromApprox.preconditioner`) and as a randomized eigendecomposition.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np
import scipy.linalg as sla

__all__ = ["NystromApprox", "nystrom"]


@dataclass
class NystromApprox:
    """``K ≈ U diag(lam) Uᵀ`` with orthonormal ``U``.

    Attributes
    ----------
    U : ndarray, shape (n, r)
        Orthonormal approximate eigenvectors (descending ``lam``).
    lam : ndarray, shape (r,)
        Approximate eigenvalues of K, descending, >= 0.
    shift : float
        Stabilizing shift ν used in the sketch.
    passes : int
        Passes over the Gram (1 + power steps; 0 for one built from columns,
        :func:`ntkscale.solvers.rpcholesky.rpcholesky`).
    info : dict
        How it was built (``kind``; for RPCholesky its pivots, columns computed, residual trace).
    """

    U: np.ndarray
    lam: np.ndarray
    shift: float
    passes: int
    info: dict = field(default_factory=dict)

    @property
    def rank(self) -> int:
        return int(self.lam.shape[0])

    def preconditioner(self, ridge: float) -> Callable[[np.ndarray], np.ndarray]:
        """``P⁻¹`` for ``K + ridge I``: ``(lam_r + μ) U (Λ + μI)⁻¹ Uᵀ + (I − UUᵀ)``.

        Applies to R of shape (n, C). Frangella, Tropp & Udell (2023), eq. (5.3).
        """
        mu = float(ridge)
        lam_r = float(self.lam[-1])
        if lam_r + mu <= 0:
            raise ValueError("the Nyström preconditioner needs ridge > 0 or a full-rank sketch "
                             "(its smallest eigenvalue is 0)")
        scale = (lam_r + mu) / (self.lam + mu) - 1.0  # shape: (r,)
        U = self.U

        def apply(R: np.ndarray) -> np.ndarray:
            return R + U @ (scale[:, None] * (U.T @ R))

        return apply

    def matvec(self, V: np.ndarray) -> np.ndarray:
        """``U diag(lam) Uᵀ V``."""
        return self.U @ (self.lam[:, None] * (self.U.T @ V))


def _precision(op: Any, precision: str) -> str:
    if precision not in ("double", "single", "auto"):
        raise ValueError(f"precision must be 'double', 'single' or 'auto', got {precision!r}")
    offered = tuple(getattr(op, "precisions", ("double",)))
    if precision == "auto":
        return "single" if "single" in offered else "double"
    if precision not in offered:
        raise ValueError(f"this operator offers matvec precisions {offered}, not {precision!r}")
    return precision


def nystrom(op: Any, rank: int, *, power_iters: int = 0, seed: Optional[int] = 0,
            oversample: int = 0, precision: str = "double") -> NystromApprox:
    """Randomized Nyström approximation with the stable shift.

    Parameters
    ----------
    op : GramOperator
        Symmetric PSD operator with ``shape`` and ``matvec(V)`` for V (n, k).
    rank : int
        Number of eigenpairs kept, ``1 <= rank <= n``.
    power_iters : int
        Extra passes ``Ω ← orth(K Ω)`` before the sketch.
    seed : int or None
        Seed of the Gaussian test matrix.
    oversample : int
        Extra sketch columns (discarded after the SVD), improves the kept ones.
    precision : {'double', 'single', 'auto'}
        Arithmetic of the sketch's passes: ``'single'`` on operators that offer it
        (``op.precisions``; a float32 ``StoredGram``: SGEMMs, ~2x faster on wide blocks) with
        the stable shift scaled to float32 rounding; ``'auto'``: single where offered. For
        preconditioners (PCG converges to its tolerance with any SPD preconditioner), not
        for eigenpairs that are reported.

    Returns
    -------
    NystromApprox

    References
    ----------
    Tropp, Yurtsever, Udell & Cevher (2017), "Fixed-rank approximation of a positive-semidefinite
    matrix from streaming data", Alg. 3 (stable shift). Halko, Martinsson & Tropp (2011), §4.5.
    """
    n = op.shape[0]
    if op.shape[0] != op.shape[1]:
        raise ValueError(f"Nyström needs a square symmetric Gram, got shape {op.shape}")
    if not (isinstance(rank, (int, np.integer)) and 1 <= rank <= n):
        raise ValueError(f"rank must be an int in [1, n={n}], got {rank!r}")
    if power_iters < 0 or oversample < 0:
        raise ValueError("power_iters and oversample must be >= 0")
    prec = _precision(op, precision)
    k = min(n, int(rank) + int(oversample))
    rng = np.random.default_rng(seed)
    Omega = _orth(rng.standard_normal((n, k)))  # shape: (n, k)

    def apply(V: np.ndarray) -> np.ndarray:
        return op.matvec(V, precision="single") if prec == "single" else op.matvec(V)

    passes = 0
    for _ in range(power_iters):
        Y = apply(Omega)
        del Omega
        Omega = _orth(Y)
        del Y
        passes += 1
    Y = apply(Omega)  # shape: (n, k)
    passes += 1
    eps = np.finfo(np.float32 if prec == "single" else np.float64).eps
    nu = np.sqrt(n) * eps * np.linalg.norm(Y, 2)
    for i in range(0, n, _ROWS):  # Y += ν Ω without an (n, k) temporary
        Y[i:i + _ROWS] += nu * Omega[i:i + _ROWS]
    M = Omega.T @ Y  # shape: (k, k)
    del Omega  # at most ~3 blocks of (n, k) float64 alive at once (~2.7 GiB at n = 120k, k = 1000)
    M = (M + M.T) / 2
    try:
        C = sla.cholesky(M, lower=False)
    except np.linalg.LinAlgError:
        # the core is not numerically PD (e.g. a rank-deficient K with a tiny shift):
        # fall back to its eigendecomposition, dropping non-positive directions
        w, Q = np.linalg.eigh(M)
        keep = w > w.max() * n * np.finfo(np.float64).eps
        B = Y @ (Q[:, keep] / np.sqrt(w[keep]))
    else:
        B = _solve_right(Y, C)  # Y C⁻¹, written over Y
    del Y
    U, s = _left_singular(B)
    lam = np.maximum(s**2 - nu, 0.0)
    r = min(int(rank), lam.shape[0])
    return NystromApprox(U=np.ascontiguousarray(U[:, :r]), lam=lam[:r], shift=float(nu), passes=passes,
                         info={"kind": "nystrom", "power_iters": int(power_iters), "precision": prec})


_ROWS = 8192  # row block of the in-place updates


def _solve_right(A: np.ndarray, R: np.ndarray) -> np.ndarray:
    """``A R⁻¹`` for upper-triangular R (k, k), written over a C-ordered A (n, k).

    ``Aᵀ`` is Fortran-ordered, so LAPACK's triangular solve works in place on it.
    """
    out = sla.solve_triangular(R, A.T, trans="T", lower=False, overwrite_b=True, check_finite=False).T
    return out


def _orth(A: np.ndarray) -> np.ndarray:
    """Orthonormal basis of the columns of a tall A (n, k), in A's memory where possible.

    Cholesky-QR twice (``A ← A R⁻¹`` with ``RᵀR = AᵀA``; the second pass fixes the first's
    loss of orthogonality, Fukaya et al. 2014): one (n, k) block where Householder QR needs
    about three. Falls back to Householder QR when AᵀA is not numerically PD (A's condition
    number beyond ~1e7).
    """
    A = np.ascontiguousarray(A, dtype=np.float64)
    for _ in range(2):
        try:
            R = sla.cholesky(A.T @ A, lower=False)
        except np.linalg.LinAlgError:
            return np.linalg.qr(A)[0]
        A = _solve_right(A, R)
    return A


def _left_singular(B: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Left singular vectors and values of a tall B (n, k), descending.

    ``B = Q R`` by :func:`_orth`-style Cholesky-QR (in B's memory), then the SVD of the small
    ``R = P S Wᵀ`` gives ``U = Q P``: two (n, k) blocks where LAPACK's tall SVD needs about
    four. Falls back to the tall SVD when BᵀB is not numerically PD.
    """
    B = np.ascontiguousarray(B, dtype=np.float64)
    try:
        R1 = sla.cholesky(B.T @ B, lower=False)
        Q = _solve_right(B, R1)
        R2 = sla.cholesky(Q.T @ Q, lower=False)
    except np.linalg.LinAlgError:
        U, s, _ = np.linalg.svd(B, full_matrices=False)
        return U, s
    Q = _solve_right(Q, R2)
    P, s, _ = np.linalg.svd(R2 @ R1)
    return Q @ P, s
