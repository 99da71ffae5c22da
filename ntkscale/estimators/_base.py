"""Shared machinery of the estimators: the Gram (in memory or in a store), the ridge
convention and selection, the solve, and cross-kernel products for predictions."""

from __future__ import annotations

import logging
from typing import Any, Optional

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted, validate_data

from .. import stax
from ..kernels import Layer
from ..solvers import SOLVERS, solve
from ..solvers.validate import check_ridge

log = logging.getLogger("ntkscale")

_RIDGE_RULES = ("gcv", "loo")
_BATCH = 2048  # test rows per in-memory cross-kernel batch


def default_arch() -> Layer:
    """Depth-3 ReLU network (NTK parameterization, W_std=√2, b_std=0.1), the default ``arch``."""
    layers: list = []
    for _ in range(3):
        layers += [stax.Dense(512, W_std=2**0.5, b_std=0.1), stax.Relu()]
    return stax.serial(*layers, stax.Dense(1, W_std=2**0.5, b_std=0.1))


class NTKBase(BaseEstimator):
    """Kernel regression with an infinite-width NTK/NNGP (see :class:`NTKRegressor`)."""

    def __init__(self, arch: Optional[Layer] = None, kernel: str = "ntk", ridge: Any = 0.0,
                 relative_ridge: bool = False, solver: str = "auto", store: Optional[str] = None,
                 tile: Optional[int] = None, client: Any = None, store_dtype: str = "float32",
                 store_nngp: bool = False, tol: float = 1e-8, ridge_grid: Optional[Any] = None):
        self.arch = arch
        self.kernel = kernel
        self.ridge = ridge
        self.relative_ridge = relative_ridge
        self.solver = solver
        self.store = store
        self.tile = tile
        self.client = client
        self.store_dtype = store_dtype
        self.store_nngp = store_nngp
        self.tol = tol
        self.ridge_grid = ridge_grid

    # ------------------------------------------------------------ validation
    def _check_params(self) -> Layer:
        if self.kernel not in ("ntk", "nngp"):
            raise ValueError(f"kernel must be 'ntk' or 'nngp', got {self.kernel!r}")
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, got {self.solver!r}")
        if isinstance(self.ridge, str):
            if self.ridge not in _RIDGE_RULES:
                raise ValueError(f"ridge must be a number >= 0, 'gcv' or 'loo', got {self.ridge!r}")
        else:
            check_ridge(self.ridge)
        arch = default_arch() if self.arch is None else self.arch
        if not isinstance(arch, Layer):
            raise TypeError(f"arch must be an ntkscale architecture (stax.serial(...)), got "
                            f"{type(arch).__name__}")
        return arch

    def _kinds(self) -> tuple[str, ...]:
        if self.store is not None and (self.store_nngp or self.kernel == "nngp"):
            return ("nngp", "ntk") if self.kernel == "ntk" else ("nngp",)
        return (self.kernel,)

    # ------------------------------------------------------------- the Gram
    def _train_operator(self, arch: Layer, X: np.ndarray) -> Any:
        from ..operator import DenseGram, StoredGram

        if self.store is None:
            K = arch.kernel_fn(X, None, ("nngp", "ntk"), dtype=np.float64)
            self._grams = {"nngp": np.asarray(K.nngp), "ntk": np.asarray(K.ntk)}
            return DenseGram(self._grams[self.kernel])
        from ..cluster import get_runner
        from ..tiling import build_gram

        runner = get_runner(self.client, quiet=True)
        try:
            rep = build_gram(arch, X, self.store, get=self._kinds(), tile=self.tile,
                             dtype=self.store_dtype, client=runner.client or "sync")
        except BaseException:
            runner.close()
            raise
        log.info("Gram store %s: %d tiles, %d computed now", self.store, rep.n_tiles, rep.computed)
        self._runner = runner
        return StoredGram(self.store, self.kernel, client=runner.client or "sync")

    def _absolute_ridge(self, op: Any, Y: np.ndarray) -> tuple[float, Any]:
        if isinstance(self.ridge, str):
            from ..solvers.ridge import choose_ridge

            sel = choose_ridge(op, Y, self.ridge, self.ridge_grid, relative=self.relative_ridge)
            return float(sel.ridge), sel
        scale = float(np.mean(op.diag())) if self.relative_ridge else 1.0
        return float(self.ridge) * scale, None

    # ------------------------------------------------------------------ fit
    def _fit(self, X: Any, Y: np.ndarray) -> "NTKBase":
        arch = self._check_params()
        op = self._train_operator(arch, X)
        try:
            self.ridge_, self.ridge_selection_ = self._absolute_ridge(op, Y)
            res = solve(op, Y, self.ridge_, solver=self.solver, tol=self.tol)
        finally:
            if hasattr(self, "_runner"):
                op.close()
                self._runner.close()
                del self._runner
        self._cho = self._pinv = None
        self.arch_ = arch
        self.X_fit_ = np.asarray(X, dtype=np.float64)
        self.alpha_ = res.x
        self.solver_ = res.info.get("solver", self.solver)
        self.fit_info_ = {k: v for k, v in vars(res).items() if k != "x"}
        return self

    # -------------------------------------------------------------- predict
    def _cross(self, X: np.ndarray, V: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``{kind: K_kind(X, X_fit) @ V[kind]}`` (batched in memory, or on the cluster)."""
        if self.store is None:
            out = {k: np.empty((X.shape[0], v.shape[1])) for k, v in V.items()}
            for s in range(0, X.shape[0], _BATCH):
                K = self.arch_.kernel_fn(X[s:s + _BATCH], self.X_fit_, tuple(V), dtype=np.float64)
                for k, v in V.items():
                    out[k][s:s + _BATCH] = np.asarray(getattr(K, k)) @ v
            return out
        from ..storage import GramStore
        from ..tiling.predict import cross_matvec

        build_id = GramStore.open(self.store).meta["build_id"]
        return cross_matvec(self._runner_or_sync(), self.arch_, X, str(self.store), build_id, V)

    def _validated(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "alpha_")
        return validate_data(self, X, reset=False, dtype=np.float64)

    def _mean(self, X: np.ndarray) -> np.ndarray:
        a = self.alpha_.reshape(self.alpha_.shape[0], -1)
        mean = self._cross(X, {self.kernel: a})[self.kernel]
        return mean[:, 0] if self.alpha_.ndim == 1 else mean

    # ------------------------------------------------------ posterior variance
    def _variance(self, X: np.ndarray) -> np.ndarray:
        """Posterior variance at each row of X (m,): the NNGP posterior for kernel='nngp',
        the infinite-ensemble NTK-GP variance at t = ∞ for kernel='ntk'
        (Lee et al. 2019, eq. 16; ALGORITHMS.md §6), both with the fitted ridge."""
        from ..kernels import diag_stats

        kinds = ("nngp",) if self.kernel == "nngp" else ("nngp", "ntk")
        kxx = np.asarray(diag_stats(self.arch_, X, dtype=np.float64).nngp)
        var = np.empty(X.shape[0])
        for rows, Kx in self._cross_row_blocks(X, kinds):
            B = self._train_solve(Kx[self.kernel].T)  # shape: (n, b)
            if self.kernel == "nngp":
                var[rows] = kxx[rows] - np.einsum("ij,ji->i", Kx["nngp"], B)
            else:
                var[rows] = (kxx[rows] + np.einsum("ij,ij->j", B, self._nngp_matvec(B))
                             - 2 * np.einsum("ij,ji->i", Kx["nngp"], B))
        return np.maximum(var, 0.0)

    def _cross_row_blocks(self, X: np.ndarray, kinds: tuple[str, ...]) -> Any:
        if self.store is None:
            for s in range(0, X.shape[0], _BATCH):
                K = self.arch_.kernel_fn(X[s:s + _BATCH], self.X_fit_, kinds, dtype=np.float64)
                yield slice(s, s + K[0].shape[0]), {k: np.asarray(getattr(K, k)) for k in kinds}
            return
        from ..storage import GramStore
        from ..tiling.predict import cross_rows

        build_id = GramStore.open(self.store).meta["build_id"]
        yield from cross_rows(self._runner_or_sync(), self.arch_, X, str(self.store), build_id, kinds)

    def _runner_or_sync(self) -> Any:
        from ..cluster import get_runner

        if getattr(self, "_pred_runner", None) is None:
            self._pred_runner = get_runner(self.client, quiet=True)
        return self._pred_runner

    def _close_runner(self) -> None:
        runner = getattr(self, "_pred_runner", None)
        if runner is not None:
            runner.close()
            self._pred_runner = None

    def _predict(self, X: Any, return_std: bool) -> Any:
        X = self._validated(X)
        try:
            mean = self._mean(X)
            if not return_std:
                return mean
            std = np.sqrt(self._variance(X))
            return mean, std
        finally:
            self._close_runner()

    def _train_op(self, kind: str) -> Any:
        from ..operator import DenseGram, StoredGram

        if self.store is None:
            return DenseGram(self._grams[kind])
        runner = self._runner_or_sync()
        if kind not in _store_kinds(self.store):
            raise ValueError("predict(return_std=True) with kernel='ntk' needs the NNGP Gram too; "
                             "fit with store_nngp=True")
        return StoredGram(self.store, kind, client=runner.client or "sync")

    def _train_solve(self, B: np.ndarray) -> np.ndarray:
        if self.store is None:
            import scipy.linalg as sla

            if getattr(self, "_cho", None) is None:
                K = self._grams[self.kernel] + self.ridge_ * np.eye(self.X_fit_.shape[0])
                self._cho = sla.cho_factor(K) if self.ridge_ > 0 else None
                self._pinv = None if self.ridge_ > 0 else np.linalg.pinv(K, hermitian=True)
            return sla.cho_solve(self._cho, B) if self._cho is not None else self._pinv @ B
        return solve(self._train_op(self.kernel), B, self.ridge_, solver=self.solver_, tol=self.tol).x

    def _nngp_matvec(self, B: np.ndarray) -> np.ndarray:
        return self._train_op("nngp").matvec(B)


def _store_kinds(url: Any) -> list[str]:
    from ..storage import GramStore

    return list(GramStore.open(url).meta["kinds"])
