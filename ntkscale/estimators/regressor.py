"""NTKRegressor: kernel (ridge / ridgeless) regression with an infinite-width NTK or NNGP."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import RegressorMixin
from sklearn.utils.validation import validate_data

from ._base import NTKBase

__all__ = ["NTKRegressor"]


class NTKRegressor(RegressorMixin, NTKBase):
    """Infinite-width NTK / NNGP kernel regression (the mean of an infinitely wide network
    trained to convergence on MSE, or the NNGP posterior mean).

    Parameters
    ----------
    arch : Layer, optional
        Architecture from :mod:`ntkscale.stax`; default :func:`default_arch` (depth-3 ReLU).
    kernel : {'ntk', 'nngp'}
    ridge : float >= 0, 'gcv' or 'loo'
        The ridge λ in ``(K + λ I) α = y``. **Absolute** by default; with
        ``relative_ridge=True`` it is relative to the mean diagonal,
        ``λ = ridge · trace(K)/n`` (neural-tangents' ``diag_reg`` convention).
        ``0`` gives the ridgeless minimum-norm interpolant ``K⁺y``. 'gcv' / 'loo' pick λ
        on ``ridge_grid`` (default: 1e-6…10 × mean diagonal, log-spaced) by generalized
        or closed-form leave-one-out cross-validation from one eigendecomposition.
    relative_ridge : bool
        Interpret ``ridge`` (and ``ridge_grid``) relative to the mean diagonal.
    solver : {'auto', 'cholesky', 'cholesky-f32', 'pcg', 'eigh', 'cg'}
        See :func:`ntkscale.solvers.solve`; ``solver_`` says what ran.
    store : str, optional
        Gram store URL (path, file://, s3://...). None keeps the Gram in memory. A store
        built from the same data and architecture is reused (nothing recomputed); one
        built from other data is refused (StoreMismatchError).
    tile, client, store_dtype : tiled-build options (see :func:`ntkscale.tiling.build_gram`).
    store_nngp : bool
        Also store the NNGP Gram (needed for ``predict(return_std=True)`` with kernel='ntk'
        on a store).
    tol : float
        Iterative solvers' relative residual tolerance.
    ridge_grid : array, optional
        Candidate ridges for 'gcv' / 'loo'.

    Attributes
    ----------
    alpha_ : ndarray, shape (n,) or (n, C)
        Dual coefficients, ``f(x) = K(x, X) α``.
    ridge_ : float
        Absolute ridge used.
    solver_ : str
        Solver that ran. ``fit_info_`` holds its residual, iterations, passes, timings.
    ridge_selection_ : RidgeSelection or None
        The GCV / LOO curve when ``ridge`` was 'gcv' / 'loo'.
    """

    def fit(self, X: Any, y: Any) -> "NTKRegressor":
        """Fit on X (n, d) and y (n,) or (n, C)."""
        X, y = validate_data(self, X, y, multi_output=True, y_numeric=True, dtype=np.float64)
        return self._fit(X, np.asarray(y, dtype=np.float64))

    def predict(self, X: Any, return_std: bool = False) -> Any:
        """Predictions (m,) or (m, C); with ``return_std`` also the posterior standard
        deviation (m,): NNGP posterior for kernel='nngp', infinite-ensemble NTK-GP at
        t = ∞ for kernel='ntk' (the same for every output column)."""
        return self._predict(X, return_std)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags
