"""What every solver returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["SolveResult"]


@dataclass
class SolveResult:
    """Solution of ``(K + ridge I) x = y`` and how it was obtained.

    Attributes
    ----------
    x : ndarray, shape (n,) or (n, C)
        Solution, float64, same layout as ``y``.
    method : str
        'lapack-cholesky', 'tiled-cholesky', 'tiled-cholesky-f32+refine', 'pcg',
        'eigh-pinv', 'cg-minnorm', ...
    ridge : float
        Absolute ridge used (including any jitter that was added).
    residual : float
        Largest relative residual over columns, ``||(K + ridge I) x - y|| / ||y||``,
        computed in float64 (for the ridgeless methods: ``||K x - y|| / ||y||``).
    iterations : int
        CG iterations, or refinement steps of a float32 factorization.
    passes : int
        Streaming passes over the stored Gram (matvecs) this solve made.
    seconds : float
        Wall time.
    converged : bool
        False when an iterative method stopped at its iteration cap.
    history : list of float
        Relative residual per iteration / refinement step (max over columns).
    info : dict
        Method-specific details (preconditioner rank, jitter, factor URL, ...).
    """

    x: np.ndarray
    method: str
    ridge: float
    residual: float
    iterations: int = 0
    passes: int = 0
    seconds: float = 0.0
    converged: bool = True
    history: list = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
