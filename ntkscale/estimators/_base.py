"""What the two estimators share: parameter checks, and fit / predict through
:mod:`ntkscale.pipeline` (the Gram in memory or in a store, the ridge, the solve, cross-kernel
products), plus the posterior variance."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted, validate_data

from .. import pipeline, stax
from .._blas import potrf
from ..kernels import Layer
from ..solvers import SOLVERS
from ..solvers.validate import check_ridge


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
        if self.kernel not in pipeline.KINDS:
            raise ValueError(f"kernel must be 'ntk' or 'nngp', got {self.kernel!r}")
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, got {self.solver!r}")
        if isinstance(self.ridge, str):
            if self.ridge not in pipeline.RIDGE_RULES:
                raise ValueError(f"ridge must be a number >= 0, 'gcv' or 'loo', got {self.ridge!r}")
        else:
            check_ridge(self.ridge)
        arch = default_arch() if self.arch is None else self.arch
        if not isinstance(arch, Layer):
            raise TypeError(f"arch must be an ntkscale architecture (stax.serial(...)), got "
                            f"{type(arch).__name__}")
        return arch

    # ------------------------------------------------------------------ fit
    def _fit(self, X: Any, Y: np.ndarray) -> "NTKBase":
        arch = self._check_params()
        gram = pipeline.gram_operator(arch, X, self.kernel, store=self.store,
                                      kinds=pipeline.stored_kinds(self.kernel, self.store_nngp),
                                      tile=self.tile, dtype=self.store_dtype, client=self.client)
        try:
            choice = pipeline.resolve_ridge(gram.op, Y, self.ridge, relative=self.relative_ridge,
                                            grid=self.ridge_grid)
            res = pipeline.fit(gram.op, Y, choice.ridge, solver=self.solver, tol=self.tol)
        finally:
            gram.close()
        self._grams = gram.dense
        self._cho = self._pinv = None
        self.ridge_, self.ridge_selection_ = choice.ridge, choice.selection
        self.arch_ = arch
        self.X_fit_ = np.asarray(X, dtype=np.float64)
        self.alpha_ = res.alpha
        self.solver_ = res.solver or self.solver
        self.fit_info_ = res.info()
        return self

    # ------------------------------------------------------------- from a run
    @classmethod
    def from_run(cls, run_dir: Any, *, client: Any = None) -> "NTKBase":
        """A fitted estimator from a job's run directory (``ntkscale run JOB.toml``).

        Reads ``config.resolved.json``, ``fit.npz`` and the Gram store
        (:func:`ntkscale.pipeline.load_fit`); nothing is recomputed. ``predict(X)`` streams
        ``K(X, X_train) α`` over the stored training rows, so on the job's test rows it
        equals the job's ``predictions.npz``.

        Parameters
        ----------
        run_dir : str or path
        client : None, 'sync', address or Client
            Where the cross-kernel tasks run (None: a local cluster per ``predict`` call).

        Returns
        -------
        NTKRegressor or NTKClassifier
            Parameters as the job's ``[model]``, ``[kernel]`` and ``[solver]`` sections give
            them (``store`` is the run's store, so a ``fit`` reuses or refuses it); fitted
            attributes ``arch_``, ``X_fit_`` (n, d), ``alpha_``, ``ridge_`` (absolute),
            ``solver_``, ``fit_info_`` (the fit stage's metrics), ``classes_`` (classifier);
            ``ridge_selection_`` is None (the GCV / LOO curve is in the run's metrics.json).

        Notes
        -----
        ``X`` for ``predict`` is in the space of the stored training rows, i.e. after the
        job's ``[data] preprocess`` (what the job's test rows are). For raw rows of a file,
        use ``ntkscale predict JOB.toml --input NEW --out PREDS.parquet``, which applies the
        job's feature selection and preprocessing.
        """
        from sklearn.base import ClassifierMixin

        saved = pipeline.load_fit(run_dir)
        classify = issubclass(cls, ClassifierMixin)
        if classify and saved.classes is None:
            raise ValueError(f"run {saved.run_dir!r} is a regression (no classes in fit.npz); load it "
                             "with NTKRegressor.from_run")
        if not classify and saved.classes is not None:
            raise ValueError(f"run {saved.run_dir!r} is a classification ({saved.classes.size} classes); "
                             "load it with NTKClassifier.from_run")
        k, s = saved.config["kernel"], saved.config["solver"]
        est = cls(arch=saved.arch, kernel=saved.kind, ridge=s["ridge"], relative_ridge=s["relative_ridge"],
                  solver=s["method"], store=saved.store, tile=k.get("tile") or None, client=client,
                  store_dtype=k["dtype"], store_nngp=bool(k.get("store_nngp")), tol=s["tol"],
                  ridge_grid=s.get("ridge_grid") or None)
        alpha = saved.alpha
        if not classify and alpha.shape[1] == 1:  # one target column: 1-D like fit(X, y) gives
            alpha = alpha[:, 0]
        est._grams, est._cho, est._pinv = {}, None, None
        est.arch_, est.X_fit_, est.alpha_ = saved.arch, saved.X_train, alpha
        est.n_features_in_ = int(saved.X_train.shape[1])
        est.ridge_, est.ridge_selection_ = saved.ridge, None
        est.solver_ = saved.fit_metrics.get("solver") or s["method"]
        est.fit_info_ = saved.fit_metrics
        if classify:
            est.classes_ = saved.classes
        return est

    # -------------------------------------------------------------- predict
    def _train_side(self) -> dict[str, Any]:
        """The training side of cross kernels (pipeline.cross_products' keywords)."""
        if self.store is None:
            return {"X_train": self.X_fit_}
        build_id = pipeline.check_store(self.store, self.X_fit_, self.arch_, build="fit the estimator")
        return {"store": str(self.store), "build_id": build_id, "runner": self._runner_or_sync()}

    def _validated(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "alpha_")
        return validate_data(self, X, reset=False, dtype=np.float64)

    def _mean(self, X: np.ndarray, train: dict[str, Any]) -> np.ndarray:
        return pipeline.predict(self.arch_, X, self.alpha_, self.kernel, **train)

    # ------------------------------------------------------ posterior variance
    def _variance(self, X: np.ndarray, train: dict[str, Any]) -> np.ndarray:
        """Posterior variance at each row of X (m,): the NNGP posterior for kernel='nngp',
        the infinite-ensemble NTK-GP variance at t = ∞ for kernel='ntk'
        (Lee et al. 2019, eq. 16; ALGORITHMS.md §6), both with the fitted ridge."""
        from ..kernels import diag_stats

        kinds = ("nngp",) if self.kernel == "nngp" else ("nngp", "ntk")
        kxx = np.asarray(diag_stats(self.arch_, X, dtype=np.float64).nngp)
        var = np.empty(X.shape[0])
        for rows, Kx in pipeline.cross_row_blocks(self.arch_, X, kinds, **train):
            B = self._train_solve(Kx[self.kernel].T)  # shape: (n, b)
            if self.kernel == "nngp":
                var[rows] = kxx[rows] - np.einsum("ij,ji->i", Kx["nngp"], B)
            else:
                var[rows] = (kxx[rows] + np.einsum("ij,ij->j", B, self._nngp_matvec(B))
                             - 2 * np.einsum("ij,ji->i", Kx["nngp"], B))
        return np.maximum(var, 0.0)

    def _runner_or_sync(self) -> Any:
        from ..runner import get_runner

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
            train = self._train_side()  # checks the store against the fitted inputs once
            mean = self._mean(X, train)
            if not return_std:
                return mean
            std = np.sqrt(self._variance(X, train))
            return mean, std
        finally:
            self._close_runner()

    def _train_op(self, kind: str) -> Any:
        from ..linop import DenseGram
        from ..operator import StoredGram

        if self.store is None:
            return DenseGram(self._grams[kind])
        runner = self._runner_or_sync()
        if kind not in pipeline.store_kinds(self.store):
            raise ValueError("predict(return_std=True) with kernel='ntk' needs the NNGP Gram too; "
                             "fit with store_nngp=True")
        return StoredGram(self.store, kind, client=runner.client or "sync")

    def _train_solve(self, B: np.ndarray) -> np.ndarray:
        if self.store is None:
            import scipy.linalg as sla

            if getattr(self, "_cho", None) is None:
                K = np.array(self._grams[self.kernel], dtype=np.float64, order="F")  # (one copy)
                K.flat[::K.shape[0] + 1] += self.ridge_
                self._cho, self._pinv = None, None
                if self.ridge_ > 0:
                    U, info = potrf(K)  # (in place; blocked above OpenBLAS's safe order)
                    if info:
                        raise np.linalg.LinAlgError(f"K + ridge I is not positive definite (leading minor "
                                                    f"{info}); raise the ridge")
                    self._cho = (U, False)
                else:
                    self._pinv = np.linalg.pinv(K, hermitian=True)
            return sla.cho_solve(self._cho, B) if self._cho is not None else self._pinv @ B
        return pipeline.fit(self._train_op(self.kernel), B, self.ridge_, solver=self.solver_,
                            tol=self.tol).alpha

    def _nngp_matvec(self, B: np.ndarray) -> np.ndarray:
        return self._train_op("nngp").matvec(B)

