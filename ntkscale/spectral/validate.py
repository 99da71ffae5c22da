"""Input checks shared by the spectral modules (pure numpy, no I/O).

Every check runs before any arithmetic and raises a ``ValueError`` that names
the parameter, the value, and where possible the fix.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["as_spectrum", "as_targets", "as_sizes", "check_nonneg", "clean_gram_evals",
           "check_eigh"]

# Eigenvalues of a PSD matrix below -NEG_RTOL * max|eval| are treated as a real
# sign of indefiniteness (not round-off) and rejected.
NEG_RTOL = 1e-8


def check_nonneg(value: Any, name: str) -> float:
    """Return ``value`` as a float, requiring it to be finite and >= 0."""
    v = float(value)
    if not np.isfinite(v) or v < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return v


def as_spectrum(eta: Any, name: str = "eta") -> np.ndarray:
    """Population eigenvalues as a float64 vector, all finite and >= 0."""
    e = np.asarray(eta, dtype=np.float64)
    if e.ndim != 1 or e.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-d array, got shape {e.shape}")
    if not np.all(np.isfinite(e)):
        raise ValueError(f"{name} contains non-finite values")
    if np.any(e < 0):
        raise ValueError(f"{name} must be >= 0 (eigenvalues of a PSD kernel operator); "
                         f"smallest is {e.min():.3e}. Clip round-off negatives with "
                         "np.clip(eta, 0, None)")
    return e


def as_targets(v2: Any, n_modes: int, n_outputs: int | None) -> tuple[np.ndarray, int]:
    """Target power per mode summed over outputs, shape (N,), and the output count C.

    ``v2`` of shape (N, C) fixes C = v2.shape[1]; shape (N,) means the weights
    are already summed over outputs and C = ``n_outputs`` (default 1).
    """
    v = np.asarray(v2, dtype=np.float64)
    if v.ndim not in (1, 2) or v.shape[0] != n_modes:
        raise ValueError(f"v2 must have shape ({n_modes},) or ({n_modes}, C), got {v.shape}")
    if not np.all(np.isfinite(v)) or np.any(v < 0):
        raise ValueError("v2 must be finite and >= 0 (squared target weights)")
    if v.ndim == 2:
        if n_outputs is not None and n_outputs != v.shape[1]:
            raise ValueError(f"n_outputs={n_outputs} contradicts v2 with {v.shape[1]} columns")
        return v.sum(axis=1), v.shape[1]
    c = 1 if n_outputs is None else int(n_outputs)
    if c < 1:
        raise ValueError(f"n_outputs must be >= 1, got {n_outputs!r}")
    return v, c


def as_sizes(p: Any) -> tuple[np.ndarray, bool]:
    """Sample sizes as a flat float64 array (> 0) and whether a scalar was passed."""
    a = np.asarray(p, dtype=np.float64)
    if not np.all(np.isfinite(a)) or np.any(a <= 0):
        raise ValueError(f"p (number of training samples) must be finite and > 0, got {p!r}")
    return a.reshape(-1), a.ndim == 0


def check_eigh(evals: Any, evecs: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate a full eigendecomposition ``K = V diag(evals) V^T`` of an n x n Gram."""
    s = np.asarray(evals, dtype=np.float64)
    v = np.asarray(evecs, dtype=np.float64)
    if s.ndim != 1 or v.shape != (s.size, s.size):
        raise ValueError(f"evecs must be square with one column per eigenvalue: evals {s.shape}, "
                         f"evecs {v.shape} (pass the full output of np.linalg.eigh)")
    if not (np.all(np.isfinite(s)) and np.all(np.isfinite(v))):
        raise ValueError("evals/evecs contain non-finite values")
    return s, v


def clean_gram_evals(evals: np.ndarray, rcond: float | None = None) -> np.ndarray:
    """Clip round-off in the eigenvalues of a PSD Gram matrix.

    Values below ``rcond * max(evals)`` (default ``rcond = n * eps``, the
    ``np.linalg.matrix_rank`` rule) become exactly 0, so that "zero mode" has one
    meaning in every formula. Negative values beyond round-off raise.
    """
    s = np.asarray(evals, dtype=np.float64)
    top = float(np.max(np.abs(s))) if s.size else 0.0
    if s.size and s.min() < -NEG_RTOL * top:
        raise ValueError(f"Gram matrix is not PSD: smallest eigenvalue {s.min():.3e} vs largest "
                         f"{top:.3e}. Symmetrize it ((K + K.T) / 2) or check the kernel")
    tol = (s.size * np.finfo(np.float64).eps if rcond is None else float(rcond)) * top
    return np.where(s > tol, s, 0.0)
