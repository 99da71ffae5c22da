"""Top-k eigenpairs of a symmetric PSD Gram operator through its ``matvec`` only.

:func:`randomized_eigh` = Nyström sketch with the stable shift (:func:`.nystrom`, one
streaming pass per sketch / power step, all columns at once) + one optional extra pass
``K [U, G]`` that serves two purposes:

* Rayleigh–Ritz on the sketch basis ``U`` (``k + oversample`` columns): the returned
  pairs are the Ritz pairs ``(θ_i, u_i)``, so ``θ_i <= λ_i`` for every i (Cauchy
  interlacing; the Nyström values are lower bounds too, and in our measurements the
  Ritz values are never below them: e.g. worst relative error of the top 100 on a
  digits NTK 6.2 % → 4.0 % with 2 power steps);
* a-posteriori error estimates for the top k pairs (see :class:`EigResult`):
  residual norms ``r_i = ||K u_i − θ_i u_i||``, a probabilistic upper bound ``ε`` on
  ``||K − U diag(θ) Uᵀ||₂`` from ``n_probes`` Gaussian probes, and from both an
  index-matched bound ``0 <= λ_i − θ_i <= error_bounds[i]``.

When ``k + oversample >= n`` a sketch would hold n columns anyway, so the operator is
read whole (``op.to_numpy()``) and LAPACK ``eigh`` is used (``method='exact'``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import scipy.linalg as sla

from .nystrom import nystrom

__all__ = ["EigResult", "randomized_eigh"]

# Halko, Martinsson & Tropp (2011), Lemma 4.1 with alpha = 10: for any matrix B and r
# Gaussian probes, ||B|| <= 10 sqrt(2/pi) max_i ||B w_i|| with probability >= 1 - 10^-r.
_HALKO_FACTOR = 10.0 * np.sqrt(2.0 / np.pi)


@dataclass
class EigResult:
    """Top-k eigenpairs of a PSD operator and their a-posteriori error estimates.

    Attributes
    ----------
    evals : ndarray, shape (k,)
        Eigenvalue estimates, descending, ``>= 0`` (lower bounds: ``evals[i] <= λ_i``).
    evecs : ndarray, shape (n, k)
        Orthonormal eigenvector estimates (columns), float64.
    passes : int
        Streaming passes over the Gram: ``power_iters + 1`` (sketch) ``+ 1`` (Ritz / error
        pass, when ``estimate_error``); 1 for ``method='exact'`` (one full read).
    error_estimate : float or None
        ``ε``: with probability ``>= 1 − 10^-n_probes``, ``||K − U diag(evals) Uᵀ||₂ <= ε``
        (Halko et al. 2011, Lemma 4.1). By Weyl's inequality ``λ_i <= evals[i] + ε``.
        Exact path: ``λ_{k+1}`` (0 for k = n). None without ``estimate_error``.
    residual_norms : ndarray, shape (k,) or None
        ``r_i = ||K u_i − evals[i] u_i||₂``. Each ``evals[i]`` lies within ``r_i`` of *some*
        eigenvalue of K (Krylov–Bogoliubov); index-matched (``|λ_i − evals[i]| <= r_i``)
        only when the top-k subspace was captured, which residuals cannot tell.
    error_bounds : ndarray, shape (k,) or None
        Index-matched bound ``0 <= λ_i − evals[i] <= error_bounds[i]`` (probability as for
        ``ε``): ``min(ε, 2ρ²/(η_i + sqrt(η_i² + 4ρ²)))`` with ``ρ = ||R||₂`` the residual
        block norm and ``η_i = evals[i] − ε`` where positive (Li & Li 2005 quadratic
        residual bound; ``ε`` bounds the spectrum of K on the complement of span U).
    method : str
        'nystrom+ritz', 'nystrom' (no error pass) or 'exact'.
    info : dict
        Sketch columns, stabilizing shift, probes, seconds.
    """

    evals: np.ndarray
    evecs: np.ndarray
    passes: int
    error_estimate: Optional[float]
    residual_norms: Optional[np.ndarray]
    error_bounds: Optional[np.ndarray] = None
    method: str = "nystrom+ritz"
    info: dict = field(default_factory=dict)

    @property
    def k(self) -> int:
        return int(self.evals.shape[0])


def _check(op: Any, k: Any, oversample: Optional[int], power_iters: int,
           n_probes: int) -> tuple[int, int, int]:
    if len(op.shape) != 2 or op.shape[0] != op.shape[1]:
        raise ValueError(f"randomized_eigh needs a square symmetric Gram, got shape {op.shape}")
    n = int(op.shape[0])
    if not (isinstance(k, (int, np.integer)) and 1 <= k <= n):
        raise ValueError(f"k must be an int in [1, n={n}], got {k!r}")
    k = int(k)
    p = max(10, k // 2) if oversample is None else oversample
    if not isinstance(p, (int, np.integer)) or p < 0:
        raise ValueError(f"oversample must be an int >= 0 (or None for max(10, k//2)), got {oversample!r}")
    if not isinstance(power_iters, (int, np.integer)) or power_iters < 0:
        raise ValueError(f"power_iters must be an int >= 0, got {power_iters!r}")
    if not isinstance(n_probes, (int, np.integer)) or n_probes < 1:
        raise ValueError(f"n_probes must be an int >= 1, got {n_probes!r}")
    return n, k, int(p)


def _residual_bounds(evals: np.ndarray, R: np.ndarray, eps: float) -> np.ndarray:
    """min(ε, Li–Li quadratic bound) per pair; R has shape (n, k)."""
    rho2 = float(np.linalg.eigvalsh(R.T @ R)[-1]) if R.size else 0.0  # ||R||₂²
    eta = evals - eps
    quad = np.full(evals.shape, np.inf)
    sep = eta > 0
    quad[sep] = 2 * rho2 / (eta[sep] + np.sqrt(eta[sep] ** 2 + 4 * rho2))
    return np.minimum(eps, quad)


def _exact(op: Any, k: int, t0: float) -> EigResult:
    """Dense LAPACK path: the whole Gram in memory."""
    K = np.asarray(op.to_numpy(), dtype=np.float64)
    K = (K + K.T) / 2
    n = K.shape[0]
    w, V = sla.eigh(K, subset_by_index=None if k == n else [n - k - 1, n - 1])
    tail = 0.0 if k == n else max(float(w[0]), 0.0)  # λ_{k+1} = ||K − V_k Λ_k V_kᵀ||₂
    w, V = w[::-1][:k], np.ascontiguousarray(V[:, ::-1][:, :k])
    R = K @ V - V * w  # shape: (n, k)
    res = np.linalg.norm(R, axis=0)
    evals = np.maximum(w, 0.0)
    return EigResult(evals=evals, evecs=V, passes=1, error_estimate=tail, residual_norms=res,
                     error_bounds=res.copy(), method="exact",
                     info={"seconds": time.perf_counter() - t0})


def randomized_eigh(op: Any, k: int, *, oversample: Optional[int] = None, power_iters: int = 2,
                    seed: Optional[int] = 0, estimate_error: bool = True,
                    n_probes: int = 10) -> EigResult:
    """Top-k eigenpairs of a symmetric PSD operator from ``power_iters + 2`` passes.

    Parameters
    ----------
    op : GramOperator
        ``shape`` (n, n) and ``matvec(V)`` for V of shape (n, m) (one pass for all m
        columns); ``to_numpy()`` only on the exact path.
    k : int
        Number of eigenpairs, ``1 <= k <= n``.
    oversample : int, optional
        Extra sketch columns (default ``max(10, k // 2)``: NTK spectra decay like 1/k,
        so the k-th eigenvalue needs a wide sketch). ``k + oversample >= n`` → exact path.
    power_iters : int
        Power steps ``Ω ← orth(K Ω)`` before the sketch, one pass each.
    seed : int or None
        Seed of the sketch and of the probes.
    estimate_error : bool
        One more pass ``K [U, G]`` (``k + oversample + n_probes`` columns): Rayleigh–Ritz
        on the sketch basis and the error estimates of :class:`EigResult`.
    n_probes : int
        Gaussian probes for ``ε`` (failure probability ``10^-n_probes``).

    Returns
    -------
    EigResult
        ``evals`` (k,) descending, ``evecs`` (n, k), ``passes``, ``error_estimate``,
        ``residual_norms``, ``error_bounds``.

    Notes
    -----
    Accuracy with the defaults on ReLU NTK Grams (1/k-like spectra): relative error of the
    top k/5 eigenvalues < 1e-4, of the top k/2 < 1e-2, of the k-th 2–8 % (tests/solvers/
    test_eigen.py); ``oversample=k, power_iters=3`` costs 1.7x and gains ~10x at the k-th.
    Dense cost per pass ``2 n² (k + oversample)`` flops, plus ``O(n (k + oversample)²)``
    on the client per QR; memory a few ``n × (k + oversample)`` float64 blocks.

    References
    ----------
    Tropp, Yurtsever, Udell & Cevher (2017), SIAM J. Sci. Comput. 39(4), Alg. 3 (stable
    Nyström); Halko, Martinsson & Tropp (2011), SIAM Rev. 53(2), §4.5 (power steps) and
    Lemma 4.1 (probe bound); Parlett, *The Symmetric Eigenvalue Problem* (1998), Thm 4.5.1
    (residual bound) and §10.1 (Rayleigh–Ritz, interlacing); Li & Li (2005), Linear
    Algebra Appl. 395, "A note on eigenvalues of perturbed Hermitian matrices" (quadratic
    residual bound).
    """
    t0 = time.perf_counter()
    n, k, p = _check(op, k, oversample, power_iters, n_probes)
    if k + p >= n:
        return _exact(op, k, t0)
    ny = nystrom(op, k + p, power_iters=power_iters, seed=seed, oversample=0)
    info: dict[str, Any] = {"sketch_columns": k + p, "shift": ny.shift}
    if not estimate_error:
        info["seconds"] = time.perf_counter() - t0
        return EigResult(evals=ny.lam[:k].copy(), evecs=np.ascontiguousarray(ny.U[:, :k]),
                         passes=ny.passes, error_estimate=None, residual_norms=None,
                         error_bounds=None, method="nystrom", info=info)
    U = ny.U  # shape: (n, k + p), orthonormal
    rng = np.random.default_rng(None if seed is None else [int(seed), 1])
    G = rng.standard_normal((n, n_probes))  # shape: (n, s), independent of U
    W = op.matvec(np.hstack([U, G]))  # shape: (n, k + p + s); the extra pass
    KU, KG = W[:, :k + p], W[:, k + p:]
    H = U.T @ KU
    theta, S = np.linalg.eigh((H + H.T) / 2)
    theta, S = theta[::-1][:k], S[:, ::-1][:, :k]
    V = U @ S  # Ritz vectors, shape: (n, k)
    KV = KU @ S
    R = KV - V * theta  # shape: (n, k)
    res = np.linalg.norm(R, axis=0)
    E_G = KG - V @ (theta[:, None] * (V.T @ G))  # (K − VΘVᵀ) G
    probe = float(np.max(np.linalg.norm(E_G, axis=0) / np.linalg.norm(G, axis=0)))
    eps = _HALKO_FACTOR * probe
    evals = np.maximum(theta, 0.0)
    info.update(n_probes=n_probes, probe_norm=probe, seconds=time.perf_counter() - t0)
    return EigResult(evals=evals, evecs=np.ascontiguousarray(V), passes=ny.passes + 1,
                     error_estimate=eps, residual_norms=res,
                     error_bounds=_residual_bounds(evals, R, eps), method="nystrom+ritz", info=info)
