"""``gradient_descent_mse_ensemble``: NT's infinite ensemble of infinitely wide networks trained on
MSE, from a ``kernel_fn``, in memory or on a stored train Gram."""

from __future__ import annotations

import json
import logging
from typing import Any, Callable, Optional

import numpy as np

from ._args import Targets, canonical_get, check_reg, check_time, named_output, opener, to_numpy
from ._posterior import posterior, train_set
from ._train import Cross
from .functions import _solver_opts, _Trains

__all__ = ["gradient_descent_mse_ensemble"]

log = logging.getLogger("ntkscale")


def _dependency(kinds: tuple[str, ...], compute_cov: bool) -> tuple[str, ...]:
    for g in kinds:
        if g not in ("nngp", "ntk"):
            raise NotImplementedError(f'Can only get either "nngp" or "ntk" predictions, got {g}.')
    dep: tuple[str, ...] = ()
    if "nngp" in kinds or ("ntk" in kinds and compute_cov):
        dep += ("nngp",)
    if "ntk" in kinds:
        dep += ("ntk",)
    return dep


def _merge_kwargs(train_kw: dict, test_kw: dict) -> dict:
    """NT's rule: test-test kwargs override the train-train ones; a non-array value that
    differs between them is refused."""
    out = dict(train_kw)
    for k, v in test_kw.items():
        if k in train_kw and not isinstance(v, np.ndarray) and train_kw[k] != v:
            raise ValueError(f"Same keyword argument {k} of `kernel_fn` is set to different values "
                             f"{train_kw[k]} != {v} when computing the train-train and test-train/test-test "
                             "kernels.")
        out[k] = v
    return out


class _StoreSide:
    """The test side of a stored train Gram: cross products streamed over the store's inputs
    (:func:`ntkscale.pipeline.cross_products` / ``cross_row_blocks`` on the store's runner)."""

    def __init__(self, op: Any, kernel_fn: Callable, x_train: np.ndarray, kw: dict):
        from ..kernels import from_spec
        from ..pipeline import check_store

        self.op, self.kernel_fn, self.x_train, self.kw = op, kernel_fn, x_train, kw
        meta = op.store.meta
        try:
            self.arch = from_spec(json.loads(meta["arch"]))
        except Exception as e:  # noqa: BLE001 - a user layer the spec cannot rebuild
            log.info("cross kernels computed here with kernel_fn (the store's architecture cannot be "
                     "rebuilt: %s)", e)
            self.arch = None
        self.build_id = check_store(op.url, x_train, self.arch,
                                    build="build it with ntkscale.tiling.build_gram") \
            if self.arch is not None else str(meta["build_id"])

    def check_kernel_fn(self, kind: str, stored: Any) -> None:
        """The user's ``kernel_fn`` must be the store's kernel: compare a few diagonal entries."""
        k = min(8, self.x_train.shape[0])
        mine = np.diagonal(to_numpy(self.kernel_fn(self.x_train[:k], None, kind, **self.kw)))
        theirs = np.asarray(stored.diag()[:k], dtype=np.float64)
        if not np.allclose(mine, theirs, rtol=1e-4, atol=1e-12 * float(np.max(np.abs(theirs)))):
            raise ValueError(f"kernel_fn does not give the stored {kind} Gram's diagonal "
                             f"({mine[:3]} vs {theirs[:3]}): the store holds another architecture")

    def cross(self, kind: str, x_test: np.ndarray) -> Cross:
        from ..pipeline import cross_products, cross_row_blocks

        n = self.x_train.shape[0]
        if self.arch is not None:
            where = {"store": self.op.url, "build_id": self.build_id, "runner": self.op.runner}
        else:
            where = None

        def apply(V: np.ndarray) -> np.ndarray:
            if where is not None:
                return cross_products(self.arch, x_test, {kind: V}, **where)[kind]
            return np.concatenate([to_numpy(self.kernel_fn(x_test[s:s + 2048], self.x_train, kind, **self.kw)) @ V
                                   for s in range(0, x_test.shape[0], 2048)])

        def rows() -> np.ndarray:
            if where is None:
                return to_numpy(self.kernel_fn(x_test, self.x_train, kind, **self.kw))
            out = np.empty((x_test.shape[0], n))
            for sl, K in cross_row_blocks(self.arch, x_test, (kind,), **where):
                out[sl] = K[kind]
            return out

        return Cross(apply, n, rows=rows, m=x_test.shape[0])


def gradient_descent_mse_ensemble(kernel_fn: Callable, x_train: Any, y_train: Any, learning_rate: float = 1.,
                                  diag_reg: float = 0.0, diag_reg_absolute_scale: bool = False,
                                  trace_axes: Any = (-1,), *, k_train_train: Any = None, solver: str = "auto",
                                  tol: float = 1e-10, n_dense: Optional[int] = None,
                                  maxiter: Optional[int] = None, pcg_rank: int = 1000,
                                  **kernel_fn_train_train_kwargs: Any
                                  ) -> Callable[..., Any]:
    """Mean [and covariance] of an infinite ensemble of infinite-width networks trained by gradient
    descent on MSE (NT's ``predict.gradient_descent_mse_ensemble``).

    With ``K`` the NNGP and ``Theta`` the NTK (train-train plus NT's ridge), ``N = y_train.size``
    and ``t`` in units of ``learning_rate``, for ``get='ntk'``: mean
    ``Theta(x,X) Theta^-1 (I - exp(-Theta t/N)) y``, covariance ``K(x,x) + A K(X,X) A^T -
    (A K(X,x) + h.c.)`` with ``A = Theta(x,X) Theta^-1 (I - exp(-Theta t/N))``; for
    ``get='nngp'`` (only the last layer trained) the same with ``K`` throughout and covariance
    ``K(x,x) - K(x,X) K^-1 (I - exp(-2 K t/N)) K(X,x)``. ``t=None`` is infinite time (a solve;
    :func:`ntkscale.predict.gp_inference`).

    Parameters
    ----------
    kernel_fn : callable
        ``kernel_fn(x1, x2, get, **kwargs)`` returning arrays or a ``Kernel`` namedtuple
        (``ntkscale.stax`` or any NT-compatible analytic kernel function).
    x_train : array, shape (n, ...)
    y_train : array, shape (n, C) (or (n,) with ``trace_axes=()``)
    learning_rate, diag_reg, diag_reg_absolute_scale, trace_axes
        As NT (``diag_reg`` relative to ``mean(diag K)`` of each kind unless absolute).
    k_train_train : StoredGram, store URL, or namedtuple / dict of them, optional
        Keyword-only, not in NT: the train Gram(s) in a store built from ``x_train`` with this
        architecture (:func:`ntkscale.tiling.build_gram`, ``get=('nngp', 'ntk')`` for the NTK
        covariance). Then nothing n x n is formed: infinite time by
        :func:`ntkscale.solvers.solve` (tiled Cholesky / Nyström-PCG), finite times by Lanczos on
        the operator, and ``K(x_test, X)`` streamed over the store's inputs on its runner
        (:func:`ntkscale.pipeline.cross_products`; the covariance holds the (m, n) rows). The
        store must be of ``x_train`` (fingerprint) and ``kernel_fn`` must give its diagonal.
        Without it the train kernels are computed by ``kernel_fn`` and decomposed in memory
        (``eigh`` / Cholesky, cached), as NT.
    solver, tol, n_dense, maxiter, pcg_rank
        Out-of-core controls: :func:`ntkscale.solvers.solve` (``solver``, ``n_dense``, PCG's
        preconditioner rank ``pcg_rank``) and the Lanczos / PCG tolerance ``tol``.
    **kernel_fn_train_train_kwargs
        Passed to ``kernel_fn`` (NT's rule for test-test / test-train overrides).

    Returns
    -------
    predict_fn(t=None, x_test=None, get=None, compute_cov=False, **kernel_fn_test_test_kwargs)
        ``t`` scalar or array of any shape (leading output axes) or None; ``x_test`` (m, ...)
        or None (train set, unregularized: NT's convention); ``get`` 'nngp', 'ntk' or a tuple
        (None: both). Returns the mean ``t.shape + (m, *out)`` or ``Gaussian(mean,
        covariance)`` with covariance ``t.shape + (m, m)``, a namedtuple ``Gaussians`` over a
        tuple ``get``. ``predict_fn.info`` lists what ran (solver, passes, residuals).

    References
    ----------
    Lee et al., "Wide neural networks of any depth evolve as linear models under gradient
    descent", NeurIPS 2019, Eqs. (13)-(16); Jacot, Gabriel & Hongler, "Neural tangent kernel",
    NeurIPS 2018; neural-tangents ``predict.gradient_descent_mse_ensemble``.
    """
    y = Targets(y_train, trace_axes)
    x_tr = to_numpy(x_train)
    if x_tr.shape[0] != y.n:
        raise ValueError(f"x_train has {x_tr.shape[0]} rows but y_train has {y.n}")
    reg, absolute = check_reg(diag_reg), bool(diag_reg_absolute_scale)
    opts = _solver_opts(solver, tol, n_dense, maxiter, pcg_rank)
    train_kw = dict(kernel_fn_train_train_kwargs)
    lr = float(learning_rate)
    info: list[dict] = []
    if k_train_train is not None:
        trains = _Trains(k_train_train, reg, absolute, opts)
        stored = opener(k_train_train)
        sides: dict[str, _StoreSide] = {}

        def side(kind: str) -> _StoreSide:
            if kind not in sides:
                op = stored(kind)
                if not (hasattr(op, "store") and hasattr(op, "url")):
                    raise TypeError("k_train_train must be a StoredGram (or a store URL, or a namedtuple of "
                                    f"them); got {type(op).__name__}. For arrays use gradient_descent_mse / "
                                    "gp_inference, or leave k_train_train out")
                sides[kind] = _StoreSide(op, kernel_fn, x_tr, train_kw)
                sides[kind].check_kernel_fn(kind, op)
            return sides[kind]
    else:
        dense: dict[str, np.ndarray] = {}
        trains = _Trains(dense, reg, absolute, opts)

    def predict_fn(t: Any = None, x_test: Any = None, get: Any = None, compute_cov: bool = False,
                   **kernel_fn_test_test_kwargs: Any) -> Any:
        kinds, single = canonical_get(get)
        dep = _dependency(kinds, compute_cov)
        kw = _merge_kwargs(train_kw, kernel_fn_test_test_kwargs)
        if k_train_train is None:
            missing = tuple(k for k in dep if k not in dense)
            if missing:
                K = kernel_fn(x_tr, None, missing if len(missing) > 1 else missing[0], **train_kw)
                dense.update({k: to_numpy(getattr(K, k)) for k in missing} if len(missing) > 1
                             else {missing[0]: to_numpy(K)})
        else:
            for k in dep:
                side(k)
        ts, lead = (None, ()) if t is None else check_time(t, lr)
        out = {}
        if x_test is None:
            for g in kinds:
                out[g] = train_set(g, trains, y, ts, lead, compute_cov)
        else:
            xt = to_numpy(x_test)
            crosses: dict[str, Cross] = {}
            if k_train_train is None:
                K = kernel_fn(xt, x_tr, dep, **kw)
                crosses = {k: Cross(to_numpy(getattr(K, k)), y.n) for k in dep}
            else:
                crosses = {k: side(k).cross(k, xt) for k in dep}
            nngp_tt = to_numpy(kernel_fn(xt, None, "nngp", **kw)) if compute_cov else None
            for g in kinds:
                out[g] = posterior(g, trains, y, crosses.__getitem__,
                                   (lambda kind: nngp_tt) if compute_cov else None, ts, lead)
        info[:] = trains.info()
        return named_output(out, kinds, single)

    predict_fn.info = info  # type: ignore[attr-defined]
    return predict_fn
