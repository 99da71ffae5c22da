"""Typed numerical errors and warnings, each with a fix in its message.

The lowest module of the package (no ntkscale imports): tiling (the tiled Cholesky), the
solvers and the estimators raise and catch the same classes.
"""

from __future__ import annotations

from typing import Optional

__all__ = ["NotPositiveDefiniteError", "ConvergenceWarning", "NotConvergedError", "JitterWarning",
           "InvalidRidgeError", "TileSizeError", "IncompleteStoreError", "StaleFitError"]


class NotPositiveDefiniteError(ValueError):
    """A Cholesky factorization broke down: the matrix (plus ridge) is not numerically
    positive definite.

    Attributes
    ----------
    pivot : int or None
        Global (0-based) row where the factorization failed.
    tile : int or None
        Diagonal tile index (tiled factorizations).
    ridge : float
        The absolute ridge that was in use.
    """

    def __init__(self, message: str, *, pivot: Optional[int] = None, tile: Optional[int] = None,
                 ridge: float = 0.0):
        self.pivot, self.tile, self.ridge = pivot, tile, ridge
        where = []
        if tile is not None:
            where.append(f"diagonal tile {tile}")
        if pivot is not None:
            where.append(f"pivot {pivot}")
        loc = f" at {', '.join(where)}" if where else ""
        super().__init__(
            f"{message}{loc} (ridge={ridge:g}). The Gram matrix is singular or ill-conditioned "
            "(duplicate or near-duplicate rows, or too small a ridge): pass a ridge (e.g. "
            "1e-6 x mean diagonal), use jitter=True to retry with a growing jitter, or use the "
            "ridgeless solver (ridge=0 picks a pseudo-inverse method)")


class InvalidRidgeError(ValueError, TypeError):
    """A ridge that is not a finite real number >= 0 (NaN, inf, negative, a string, a bool...).

    Raised by the one ridge check, :func:`ntkscale.linop.check_ridge` (and
    :func:`~ntkscale.linop.check_ridges` for grids), wherever a ridge enters: solvers,
    factorizations, spectral theory, estimators and the job config (which wraps it in a
    ``ConfigError`` naming the key). Both a ``ValueError`` and a ``TypeError``, as
    scikit-learn's ``InvalidParameterError``, so callers catching either keep working.
    """


class NotConvergedError(RuntimeError):
    """An iterative solver stopped before reaching its tolerance (raised when asked to)."""


class TileSizeError(ValueError):
    """A tile size outside the sane range (too many tasks, or a task no worker can hold)."""


class IncompleteStoreError(RuntimeError):
    """A Gram store whose build was interrupted (run the build again to finish it)."""


class StaleFitError(RuntimeError):
    """A saved fit that was solved on another Gram store or kernel (fit again)."""


class ConvergenceWarning(UserWarning):
    """An iterative solver stopped before reaching its tolerance."""


class JitterWarning(UserWarning):
    """A factorization succeeded only after adding jitter to the diagonal."""
