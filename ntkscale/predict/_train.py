"""The train-train kernel of one kind with NT's diagonal regularizer, in memory or out of core.

:class:`TrainKernel` offers what every ``predict`` function needs from ``K + lambda I``:
``solve(B)`` (infinite time), ``funcs(B, fn)`` (``f(K + lambda I) B`` for scalar functions
of the eigenvalues, finite times) and ``matvec(B)`` (``K B``, unregularized).

* In memory (an array, or an in-memory operator, with ``n <=`` :func:`ntkscale.solvers.dense_limit`):
  as neural-tangents, a cached LAPACK Cholesky factor for ``solve`` and a cached ``eigh`` for
  ``funcs`` (NT clips negative eigenvalues to 0; so does this, plus values below
  ``n eps max`` count as exact zeros, whose ``phi`` is the ``s -> 0`` limit).
* A Gram operator (a :class:`ntkscale.operator.StoredGram`): :func:`ntkscale.solvers.solve`
  (Cholesky, tiled out of core, or Nyström-PCG) and Lanczos
  (:func:`ntkscale.solvers.lanczos_matfuncs`) on ``K + lambda I``; nothing n x n is formed.
  What ran is appended to :attr:`TrainKernel.info`.

:class:`Cross` is the test-train kernel: an array (m, n), an operator with ``matvec``, a
callable ``V -> K(x, X) V``, or a stream over a store (``ntkscale.pipeline.cross_products``).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np
import scipy.linalg

from .._blas import potrf
from ..solvers import dense_limit, lanczos_matfuncs, solve as solve_op
from ._args import is_operator, to_numpy

__all__ = ["TrainKernel", "Cross", "flow_fns"]


class _Shifted:
    """``K + ridge I`` as an operator (shape, matvec) over a Gram operator."""

    in_memory = False

    def __init__(self, op: Any, ridge: float):
        self.op, self.ridge, self.shape = op, float(ridge), tuple(op.shape)

    def matvec(self, V: np.ndarray) -> np.ndarray:
        return np.asarray(self.op.matvec(V), dtype=np.float64) + self.ridge * V


class TrainKernel:
    """``K`` (n x n, one kind) and NT's ridge ``diag_reg`` (x ``mean(diag K)`` unless absolute).

    Parameters
    ----------
    k : array_like or Gram operator, shape (n, n)
    diag_reg : float
    absolute : bool
        NT's ``diag_reg_absolute_scale``.
    solver : str
        :func:`ntkscale.solvers.solve`'s ``solver`` for operators ('auto', 'cholesky', 'pcg', ...).
    tol : float
        Tolerance of the iterative methods (PCG residual, Lanczos relative change).
    n_dense : int, optional
        Operators up to this n that are in memory are treated as arrays; also passed to
        :func:`ntkscale.solvers.solve` (default :func:`ntkscale.solvers.dense_limit`).
    maxiter : int, optional
        Lanczos steps / CG iterations cap.
    pcg_rank : int
        Rank of PCG's preconditioner (:func:`ntkscale.solvers.solve`; RPCholesky columns for a
        stored Gram that computes them): larger ranks cost memory (n x rank) and save passes.
    """

    def __init__(self, k: Any, diag_reg: float, absolute: bool, *, solver: str = "auto",
                 tol: float = 1e-10, n_dense: Optional[int] = None, maxiter: Optional[int] = None,
                 pcg_rank: int = 1000):
        self.solver, self.tol, self.n_dense, self.maxiter = solver, float(tol), n_dense, maxiter
        self.pcg_rank = int(pcg_rank)
        self.info: list[dict] = []
        self.K: Optional[np.ndarray] = None
        self.op: Any = None
        if is_operator(k):
            n = int(k.shape[0])
            limit = dense_limit() if n_dense is None else int(n_dense)
            if getattr(k, "in_memory", False) and n <= limit:
                self.K = np.asarray(k.to_numpy(), dtype=np.float64)
            else:
                self.op = k
        else:
            self.K = to_numpy(k)
        shape = tuple(self.K.shape if self.K is not None else self.op.shape)
        if len(shape) != 2 or shape[0] != shape[1]:
            raise ValueError(f"k_train_train must be square (n, n) without output axes, got shape {shape}")
        self.n = shape[0]
        if self.K is not None:
            scale = float(np.trace(self.K)) / self.n
        else:
            scale = float(np.mean(self.op.diag()))
        self.ridge = float(diag_reg) * (1.0 if absolute else scale)
        self._cho: Any = None
        self._eig: Optional[tuple[np.ndarray, np.ndarray]] = None

    @property
    def stored(self) -> bool:
        return self.op is not None

    def _eigh(self) -> tuple[np.ndarray, np.ndarray]:
        if self._eig is None:
            A = self.K + self.ridge * np.eye(self.n)
            s, v = np.linalg.eigh(A)
            s = np.maximum(s, 0.0)  # PSD: negative values are round-off (NT clips them too)
            s[s <= self.n * np.finfo(np.float64).eps * (s.max() if s.size else 0.0)] = 0.0
            self._eig = (s, v)
            self.info.append({"method": "eigh", "n": self.n, "ridge": self.ridge})
        return self._eig

    def solve(self, B: np.ndarray) -> np.ndarray:
        """``(K + ridge I)^-1 B`` (the pseudo-inverse for a singular ``K`` at ridge 0), B (n, k)."""
        if self.op is not None:
            res = solve_op(self.op, B, self.ridge, solver=self.solver, tol=self.tol,
                           maxiter=self.maxiter, n_dense=self.n_dense, pcg_rank=self.pcg_rank)
            self.info.append({"method": res.method, "solver": res.info.get("solver"),
                              "auto": res.info.get("auto"), "residual": res.residual,
                              "iterations": res.iterations, "passes": res.passes, "ridge": res.ridge})
            return np.asarray(res.x, dtype=np.float64).reshape(B.shape)
        if self._cho is None:
            A = np.array(self.K, dtype=np.float64, order="F")
            A.flat[::self.n + 1] += self.ridge
            U, info = potrf(A)  # (blocked above the order OpenBLAS's threaded potrf survives)
            if info == 0:
                self._cho = (U, False)
                self.info.append({"method": "lapack-cholesky", "n": self.n, "ridge": self.ridge})
            else:
                self._cho = False  # singular K + ridge I: the minimum-norm solution (t -> inf)
        if self._cho is False:
            s, v = self._eigh()
            inv = np.divide(1.0, s, out=np.zeros_like(s), where=s > 0)
            return v @ (inv[:, None] * (v.T @ B))
        return scipy.linalg.cho_solve(self._cho, B)

    def funcs(self, B: np.ndarray, fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """``f_i(K + ridge I) B`` for the F rows of ``fn(s)`` (s: eigenvalues >= 0, shape (k,) ->
        (F, k)), shape (F, n, b); ``fn.self_relative`` (from :func:`flow_fns`) is the Lanczos
        convergence measure per row."""
        if self.op is not None:
            res = lanczos_matfuncs(_Shifted(self.op, self.ridge), B, fn,
                                   self_relative=getattr(fn, "self_relative", None),
                                   tol=self.tol, maxiter=self.maxiter, raise_on_fail=True)
            self.info.append({"method": "lanczos", "passes": res.passes, "steps": int(res.steps.max()),
                              "estimate": res.estimate, "ridge": self.ridge})
            return res.values
        s, v = self._eigh()
        f = np.asarray(fn(s), dtype=np.float64)  # shape: (F, n)
        return np.einsum("ik,fk,kb->fib", v, f, v.T @ B, optimize=True)

    def matvec(self, B: np.ndarray) -> np.ndarray:
        """``K B`` (no ridge), B (n, k)."""
        if self.op is not None:
            return np.asarray(self.op.matvec(B), dtype=np.float64)
        return self.K @ B

    def dense(self, what: str) -> np.ndarray:
        """The n x n array; refused for an out-of-core Gram (``what`` says who asked)."""
        if self.K is None:
            raise ValueError(f"{what} is an n x n matrix (n = {self.n}); with a stored Gram it is not "
                             "formed: pass x_test (e.g. a subset of x_train) / k_test_train to get it "
                             "for chosen points")
        return self.K


def flow_fns(ts: np.ndarray, scale: float, which: tuple[str, ...]) -> Callable[[np.ndarray], np.ndarray]:
    """Scalar functions of the eigenvalues ``s`` (k,) for times ``ts`` (T,), stacked (len(which) T, k).

    ``'expm1'``: ``expm1(-s t c)`` (train residual change); ``'decay'``: ``exp(-s t c)``;
    ``'phi'``: ``(1 - exp(-s t c)) / s`` (``t c`` at ``s = 0``, ``0`` there at ``t = inf``,
    the pseudo-inverse); ``'phi2'``: ``phi`` at ``2 t``; ``'sdecay2'``: ``s exp(-2 s t c)``.
    ``c = scale`` (``1/N``, ``N = y_train.size``).
    """
    def fn(s: np.ndarray) -> np.ndarray:
        pos = s > 0
        rows = []
        for w in which:
            t = 2.0 * ts if w in ("phi2", "sdecay2") else ts
            with np.errstate(invalid="ignore", over="ignore"):
                x = np.where(pos[None, :], scale * np.outer(t, s), 0.0)  # inf * 0 lanes masked
            if w == "expm1":
                rows.append(np.expm1(-x))
            elif w == "decay":
                rows.append(np.exp(-x))
            elif w == "sdecay2":
                rows.append(s[None, :] * np.exp(-x))
            else:
                ph = -np.expm1(-x) / np.where(pos, s, 1.0)[None, :]
                zero = np.where(np.isfinite(t), t * scale, 0.0)[:, None]
                rows.append(np.where(pos[None, :], ph, zero))
        return np.vstack(rows)
    # Lanczos convergence measure per row: relative to the result for the growing functions
    fn.self_relative = [w in ("phi", "phi2", "sdecay2") for w in which for _ in ts]  # type: ignore[attr-defined]
    return fn


class Cross:
    """A test-train kernel (m, n): products ``K V`` and, where needed, the whole array.

    Parameters
    ----------
    k : array (m, n), operator with ``matvec`` and ``shape``, or callable ``V -> K V``
    n : int
        Number of training points.
    rows : callable, optional
        ``() -> ndarray (m, n)`` for :meth:`dense` when ``k`` is not an array (a stream).
    """

    def __init__(self, k: Any, n: int, rows: Optional[Callable[[], np.ndarray]] = None,
                 m: Optional[int] = None):
        self._rows = rows
        self.K: Optional[np.ndarray] = None
        self._apply: Callable[[np.ndarray], np.ndarray]
        if is_operator(k):
            if tuple(k.shape)[1] != n:
                raise ValueError(f"k_test_train must have shape (m, {n}), got {tuple(k.shape)}")
            self.m, self._apply = int(k.shape[0]), k.matvec
            if self._rows is None and hasattr(k, "to_numpy"):
                self._rows = k.to_numpy
        elif callable(k):
            self.m, self._apply = m, k
        else:
            self.K = to_numpy(k)
            if self.K.ndim != 2 or self.K.shape[1] != n:
                raise ValueError(f"k_test_train must have shape (m, {n}) (test x train, no output axes), "
                                 f"got {self.K.shape}")
            self.m = self.K.shape[0]

    def apply(self, V: np.ndarray) -> np.ndarray:
        """``K V``, V (n, k) -> (m, k)."""
        if self.K is not None:
            return self.K @ V
        out = np.asarray(self._apply(V), dtype=np.float64)
        self.m = out.shape[0]
        return out

    def dense(self) -> np.ndarray:
        if self.K is None:
            if self._rows is None:
                raise ValueError("the covariance needs the whole test-train kernel (m, n): pass it as an "
                                 "array (or an operator with to_numpy), not a callable")
            self.K = np.asarray(self._rows(), dtype=np.float64)
            self.m = self.K.shape[0]
        return self.K
