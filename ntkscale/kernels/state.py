"""The kernel state that flows through the layers of an architecture, and the per-row
statistics of a row block that every tile reuses (the bottom of ``kernels/``: no imports
from the package)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Optional

import numpy as np

__all__ = ["KernelState", "DiagStats"]


@dataclass(frozen=True)
class KernelState:
    """Covariances of a batch pair at one point of the network.

    Two modes share one set of layer rules:

    * matrix mode (``diag=False``): ``nngp``/``ntk`` have shape ``(n1, n2)``,
      ``cov1`` shape ``(n1,)`` and ``cov2`` shape ``(n2,)`` are the variances
      of the two row blocks (``cov2 is cov1`` in the symmetric case).
    * diagonal mode (``diag=True``): ``nngp``/``ntk`` have shape ``(n,)`` and are
      the kernel's diagonal; ``cov1``/``cov2`` are unused (``None``).

    ``width`` is the feature count of the current representation (channels, for
    images); only the standard parameterization reads it (its NTK scales with fan-in).

    ``spatial`` is None for feature vectors, or the layout of image covariances
    (:mod:`~ntkscale.kernels.spatial`): ``"diag"`` adds trailing axes ``(H, W)``
    (same-position pairs), ``"full"`` adds ``(H1, W1, H2, W2)`` (all position pairs), to
    ``nngp``/``ntk`` and to the self covariances ``cov1``/``cov2``.
    """

    nngp: Any
    ntk: Optional[Any]
    cov1: Optional[Any]
    cov2: Optional[Any]
    width: int
    diag: bool = False
    spatial: Optional[str] = None

    def replace(self, **kw: Any) -> "KernelState":
        return replace(self, **kw)


@dataclass(frozen=True)
class DiagStats:
    """Per-row statistics of a row block, computed once and reused by every tile.

    Attributes
    ----------
    cov0 : array, shape (n,)
        Input variance ``|x|^2 / d``.
    act_vars : ndarray or None, shape (n_activations, n)
        Variance entering each activation (chains on NumPy only).
    nngp, ntk : array, shape (n,)
        Diagonal of the NNGP and NTK Gram matrices.
    """

    cov0: Any
    act_vars: Optional[np.ndarray]
    nngp: Any
    ntk: Any
