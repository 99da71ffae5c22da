"""Matrix functions of a PSD Gram operator applied to a block, by Lanczos (no eigendecomposition).

For training dynamics on MSE (see :mod:`ntkscale.spectral.dynamics`) we need, for a
symmetric PSD operator ``K`` (n x n), a block ``R`` (n, C) and a grid of times,

* the residual decay ``exp(-t c K) R`` (gradient flow) or ``(I - lr c K)^k R`` (GD), and
* the test-point factor ``phi(K) R`` with ``phi(s) = (1 - decay(s)) / s``, continued by its
  limit at ``s = 0`` (``t c``, resp. ``k lr c``), so a singular ``K`` is fine; at
  ``t = inf`` it is the pseudo-inverse ``K^+ R``.

Each column ``r`` of ``R`` gets its own Lanczos recurrence with full reorthogonalization
(classical Gram-Schmidt applied twice), but all active columns share one ``op.matvec``
per step, i.e. one pass over a stored Gram. Memory: the bases, ``8 n k C`` bytes after
k steps (k ~ 100 for NTK Grams with n <= 1500 at tol 1e-10, see the tests). After ``k`` steps
``f(K) r ~= ||r|| Q_k f(T_k) e_1`` (``T_k`` tridiagonal, ``Q_k`` orthonormal), evaluated for
every function and time from one ``eigh`` of ``T_k``. Convergence is checked a
posteriori: every few steps the new approximation is compared with the previous one, for
every requested time (the largest t, where ``phi`` approaches ``K^+``, is the one that
binds); because ``Q_k`` is orthonormal the difference is exact in coefficient space.
A column stops when the change is below ``tol`` (relative to ``||r||`` for the decay,
to the approximation itself for ``phi``) or when the Krylov space becomes invariant.

Ritz values below ``rcond * theta_max`` (default ``n eps``, as in
:func:`ntkscale.spectral.dynamics.gradient_flow`) count as exact zeros.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import numpy as np
from scipy.linalg import eigh_tridiagonal

from ..errors import ConvergenceWarning, NotConvergedError
from ..linop import as_operator
from .validate import check_rhs

__all__ = ["KrylovResult", "lanczos_matfuncs", "krylov_flow", "krylov_descent"]

# Ritz values below -NEG_RTOL * theta_max are a sign of an indefinite operator, not round-off.
NEG_RTOL = 1e-8


@dataclass
class KrylovResult:
    """``f(K) R`` for several functions ``f`` and how it was obtained.

    Attributes
    ----------
    values : ndarray, shape (F, n, C)
        ``f_i(K) R`` for the F functions (for :func:`krylov_flow` / :func:`krylov_descent`:
        the T decays, then the T ``phi`` values if requested).
    passes : int
        Operator passes (``op.matvec`` calls, each on a block of the active columns).
    steps : ndarray of int, shape (C,)
        Lanczos steps (Krylov dimension) per column.
    estimate : float
        A-posteriori error estimate: the largest relative change between the last two
        checked approximations over columns and functions (0 for a column whose Krylov
        space became invariant, where the result is exact up to round-off).
    converged : bool
        False when ``maxiter`` was reached with ``estimate > tol``.
    seconds : float
    history : list of (int, float)
        ``(pass, estimate)`` at each check (max over the columns still running).
    ritz_max : float
        Largest Ritz value seen (a lower bound on ``||K||_2``, usually tight).
    """

    values: np.ndarray
    passes: int
    steps: np.ndarray
    estimate: float
    converged: bool
    seconds: float = 0.0
    history: list = field(default_factory=list)
    ritz_max: float = 0.0


def _as_operator(op: Any) -> Any:
    if hasattr(op, "matvec") and hasattr(op, "shape"):
        return op
    if isinstance(op, np.ndarray):
        return as_operator(op)
    raise TypeError(f"op must be a Gram operator (shape, matvec) or an ndarray, got "
                    f"{type(op).__name__}")


class _Column:
    """Lanczos state of one column: basis rows, tridiagonal, last coefficients."""

    def __init__(self, r: np.ndarray, cap: int):
        self.norm = float(np.linalg.norm(r))
        self.Q = np.empty((min(cap, 32), r.size))  # rows q_0, q_1, ... (grown by doubling)
        self.cap = cap
        self.alpha: list[float] = []
        self.beta: list[float] = []
        self.prev: Optional[np.ndarray] = None  # coefficients at the last check, (F, k)
        self.estimate = 0.0 if self.norm == 0 else np.inf
        self.done = self.norm == 0  # a zero column: f(K) 0 = 0
        self.exact = self.done
        if not self.done:
            self.Q[0] = r / self.norm

    def step(self, w: np.ndarray, norm_est: float) -> float:
        """One Lanczos step given ``w = K q_j``; returns the updated estimate of ``||K||``."""
        j = len(self.alpha)
        q = self.Q[j]
        a = float(q @ w)
        w = w - a * q
        if j > 0:
            w -= self.beta[-1] * self.Q[j - 1]
        basis = self.Q[: j + 1]
        for _ in range(2):  # full reorthogonalization, CGS twice (Giraud et al. 2005)
            w -= basis.T @ (basis @ w)
        b = float(np.linalg.norm(w))
        self.alpha.append(a)
        self.beta.append(b)
        norm_est = max(norm_est, abs(a) + b + (self.beta[-2] if j > 0 else 0.0))  # Gershgorin
        if b <= w.size * np.finfo(np.float64).eps * norm_est or j + 1 >= w.size:
            self.done = self.exact = True  # invariant Krylov space: the result is exact
        elif j + 1 >= self.cap:
            self.done = True  # maxiter: not exact, judged by the last check
        else:
            if j + 1 >= self.Q.shape[0]:
                grown = np.empty((min(2 * self.Q.shape[0], self.cap), self.Q.shape[1]))
                grown[: j + 1] = self.Q[: j + 1]
                self.Q = grown
            self.Q[j + 1] = w / b
        return norm_est

    def ritz(self) -> tuple[np.ndarray, np.ndarray]:
        k = len(self.alpha)
        return eigh_tridiagonal(np.array(self.alpha), np.array(self.beta[: k - 1]))


def _clean(theta: np.ndarray, top: float, rcond: float) -> np.ndarray:
    if theta.size and theta.min() < -NEG_RTOL * top:
        raise ValueError(f"the operator is not positive semidefinite: Ritz value {theta.min():.3e} "
                         f"vs largest {top:.3e}. Symmetrize the Gram ((K + K.T) / 2) or check the "
                         "kernel")
    return np.where(theta > rcond * top, theta, 0.0)


def lanczos_matfuncs(op: Any, R: Any, fn: Callable[[np.ndarray], np.ndarray], *,
                     self_relative: Optional[Sequence[bool]] = None, tol: float = 1e-10,
                     maxiter: Optional[int] = None, rcond: Optional[float] = None,
                     check_every: Optional[int] = None,
                     raise_on_fail: bool = False) -> KrylovResult:
    """``f_i(K) R`` for F scalar functions of a symmetric PSD operator, by Lanczos.

    Parameters
    ----------
    op : GramOperator or ndarray, shape (n, n)
        Symmetric PSD; only ``shape`` and ``matvec(V)`` for V (n, a) are used.
    R : array_like, shape (n,) or (n, C)
    fn : callable
        ``fn(theta)`` for cleaned Ritz values ``theta`` (k,) >= 0 returns the function
        values, shape (F, k). It may raise ``ValueError`` (e.g. an unstable step size).
    self_relative : sequence of bool, length F, optional
        Per function: measure the change relative to the approximation's own norm (True)
        or to ``||r||`` (False, the default: right for contractions such as decays).
    tol : float
        Stop a column when the relative change between successive checks is <= tol.
    maxiter : int, optional
        Lanczos steps per column (default n; n steps are always exact).
    rcond : float, optional
        Ritz values below ``rcond * theta_max`` count as 0 (default ``n eps``).
    check_every : int, optional
        Steps between checks (default: ``max(4, k // 10)`` at step k; each check is an
        ``eigh`` of the k x k tridiagonal per column, so checks stay a small fraction of
        the run while overshooting convergence by at most ~10% of the steps).
    raise_on_fail : bool
        Raise :class:`NotConvergedError` instead of a :class:`ConvergenceWarning`.

    Returns
    -------
    KrylovResult
        ``values`` has shape (F, n, C) (C = 1 for a 1-d ``R``).

    References
    ----------
    Saad, "Analysis of some Krylov subspace approximations to the matrix exponential
    operator", SIAM J. Numer. Anal. 29 (1992); Higham, "Functions of Matrices" (2008),
    Sec. 13.2 (Lanczos for f(A)b); Golub & Van Loan, "Matrix Computations", Sec. 10.1
    (Lanczos with full reorthogonalization).
    """
    t0 = time.perf_counter()
    op = _as_operator(op)
    n = int(op.shape[0])
    if tuple(op.shape) != (n, n):
        raise ValueError(f"op must be square (a train Gram), got shape {tuple(op.shape)}")
    Rm, _ = check_rhs(R, n, "R")
    if not tol > 0:
        raise ValueError(f"tol must be > 0, got {tol!r}")
    cap = n if maxiter is None else int(maxiter)
    if cap < 1:
        raise ValueError(f"maxiter must be >= 1, got {maxiter!r}")
    cap = min(cap, n)
    rc = n * np.finfo(np.float64).eps if rcond is None else float(rcond)
    cols = [_Column(Rm[:, c], cap) for c in range(Rm.shape[1])]
    top, norm_est, passes, history = 0.0, 0.0, 0, []  # top: largest Ritz value so far
    rel: Optional[np.ndarray] = None if self_relative is None else np.asarray(self_relative, bool)
    next_check = 1

    def coefficients(col: _Column, ritz: Optional[tuple] = None) -> np.ndarray:
        theta, S = col.ritz() if ritz is None else ritz
        vals = np.asarray(fn(_clean(theta, top, rc)), dtype=np.float64)
        if vals.ndim != 2 or vals.shape[1] != theta.size:
            raise ValueError(f"fn must return shape (F, {theta.size}), got {vals.shape}")
        if rel is not None and rel.size != vals.shape[0]:
            raise ValueError(f"self_relative has {rel.size} entries for {vals.shape[0]} functions")
        return col.norm * (vals * S[0]) @ S.T  # ||r|| f(T) e_1, shape: (F, k)

    def check(active: list[_Column]) -> float:
        nonlocal top
        ritz = [col.ritz() for col in active]
        top = max([top] + [float(r[0][-1]) for r in ritz])
        worst = 0.0
        for col, rz in zip(active, ritz):
            coef = coefficients(col, rz)
            if col.prev is not None:
                diff = coef.copy()
                diff[:, : col.prev.shape[1]] -= col.prev
                ref = np.full(coef.shape[0], col.norm)
                if rel is not None:
                    ref = np.where(rel, np.linalg.norm(coef, axis=1), ref)
                d = np.linalg.norm(diff, axis=1)
                col.estimate = float(np.max(np.divide(d, ref, out=np.zeros_like(d), where=ref > 0)))
                worst = max(worst, col.estimate)
                if col.estimate <= tol:
                    col.done = True
            col.prev = coef
        return worst

    while True:
        active = [c for c in cols if not c.done]
        if not active:
            break
        j = len(active[0].alpha)
        V = np.stack([c.Q[j] for c in active], axis=1)  # shape: (n, a)
        W = np.asarray(op.matvec(V), dtype=np.float64).reshape(n, len(active))
        passes += 1
        for i, col in enumerate(active):
            norm_est = col.step(W[:, i], norm_est)
        if j + 1 >= next_check or any(c.done for c in active):
            still = [c for c in active if not c.exact]
            if still:
                history.append((passes, check(still)))
            next_check = j + 1 + (check_every or max(4, (j + 1) // 10))

    # final coefficients with the final zero threshold (the same for every column)
    live = [col for col in cols if col.norm > 0]
    ritz = [col.ritz() for col in live]
    top = max([top] + [float(r[0][-1]) for r in ritz])
    coefs = [coefficients(col, rz) for col, rz in zip(live, ritz)]  # each (F, k)
    n_funcs = coefs[0].shape[0] if coefs else np.asarray(fn(np.zeros(1))).shape[0]
    values = np.zeros((n_funcs, n, len(cols)))
    for col, coef in zip(live, coefs):
        values[:, :, cols.index(col)] = coef @ col.Q[: coef.shape[1]]
        if col.exact:
            col.estimate = 0.0
    estimate = max(col.estimate for col in cols)
    converged = estimate <= tol
    if not converged:
        msg = (f"Lanczos stopped at maxiter={cap} steps with a relative change of {estimate:.2e} "
               f"> tol={tol:g}; raise maxiter (up to n={n}, where it is exact) or tol")
        if raise_on_fail:
            raise NotConvergedError(msg)
        warnings.warn(msg, ConvergenceWarning, stacklevel=2)
    return KrylovResult(values=values, passes=passes, steps=np.array([len(c.alpha) for c in cols]),
                        estimate=estimate, converged=converged,
                        seconds=time.perf_counter() - t0, history=history, ritz_max=top)


def _check_times(t: Any) -> np.ndarray:
    ts = np.asarray(t, dtype=np.float64).reshape(-1)
    if ts.size == 0 or np.any(np.isnan(ts)) or np.any(ts < 0):
        raise ValueError(f"t must be a non-empty set of times >= 0 (np.inf allowed), got {t!r}")
    return ts


def _flow_factors(theta: np.ndarray, t: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """``exp(-t c s)`` and ``phi = (1 - exp(-t c s)) / s`` (``t c`` at ``s = 0``), shapes (T, k).

    ``theta`` must be cleaned (exact zeros for null modes). At ``t = inf`` null modes keep
    decay 1 and get ``phi = 0`` (pseudo-inverse).
    """
    pos = theta > 0
    with np.errstate(invalid="ignore", over="ignore"):
        x = np.where(pos[None, :], scale * np.outer(t, theta), 0.0)  # inf * 0 lanes masked
    decay = np.exp(-x)
    phi_pos = -np.expm1(-x) / np.where(pos, theta, 1.0)[None, :]  # no cancellation near 0
    phi_zero = np.where(np.isfinite(t), t * scale, 0.0)[:, None]
    return decay, np.where(pos[None, :], phi_pos, phi_zero)


def _descent_factors(theta: np.ndarray, steps: np.ndarray, lr_scale: float
                    ) -> tuple[np.ndarray, np.ndarray]:
    """``(1 - u)^k`` with ``u = lr c s`` and ``phi = (1 - (1 - u)^k) / s`` (``k lr c`` at 0).

    Raises ``ValueError`` when ``u >= 2`` for some Ritz value (GD diverges).
    """
    u = lr_scale * theta
    if u.size and u.max() >= 2.0:
        raise ValueError(f"learning rate too large for stable GD: lr * scale * s_max = "
                         f"{u.max():.4g} >= 2 with the Ritz estimate s_max = {theta.max():.6g}; "
                         f"reduce the learning rate by a factor > {u.max() / 2:.4g}")
    kf = steps.astype(np.float64)[:, None]
    small = u < 1
    logb = np.log1p(-np.where(small, u, 0.0))
    em1 = np.expm1(kf * logb[None, :])  # (1 - u)^k - 1 for u < 1, accurate for small u
    decay = np.where(small[None, :], em1 + 1.0, np.power(1.0 - u[None, :], kf))
    one_minus = np.where(small[None, :], -em1, 1.0 - decay)
    pos = theta > 0
    phi = one_minus / np.where(pos, theta, 1.0)[None, :]
    return decay, np.where(pos[None, :], phi, kf * lr_scale)


def krylov_flow(op: Any, R: Any, t: Any, scale: float = 1.0, *, phi: bool = True,
                **kwargs: Any) -> KrylovResult:
    """``exp(-t scale K) R`` and ``K^-1 (I - exp(-t scale K)) R`` on a grid of times.

    Parameters
    ----------
    op : GramOperator or ndarray, shape (n, n)
        Symmetric PSD.
    R : array_like, shape (n,) or (n, C)
    t : float or array_like, shape (T,)
        Times >= 0; ``np.inf`` gives the projection on ``null(K)`` and ``K^+ R``.
    scale : float
        ``1/N`` for neural-tangents' loss ``(1/2)(1/N)||f - y||^2``.
    phi : bool
        Also compute the ``phi`` factor (needed for test points; it is the hard part at
        large t, where it approaches ``K^+ R`` and needs the small eigenvalues).
    **kwargs
        ``tol``, ``maxiter``, ``rcond``, ``check_every``, ``raise_on_fail`` of
        :func:`lanczos_matfuncs`.

    Returns
    -------
    KrylovResult
        ``values[:T]`` are the decays ``exp(-t_i scale K) R``, ``values[T:]`` (if ``phi``)
        the ``phi`` factors, each of shape (n, C).

    References
    ----------
    Saad, SIAM J. Numer. Anal. 29 (1992); Lee et al., NeurIPS 2019 (the dynamics).
    """
    ts = _check_times(t)
    sc = float(scale)
    if not (np.isfinite(sc) and sc > 0):
        raise ValueError(f"scale must be finite and > 0, got {scale!r}")

    def fn(theta: np.ndarray) -> np.ndarray:
        decay, ph = _flow_factors(theta, ts, sc)
        return np.vstack([decay, ph]) if phi else decay

    rel = [False] * ts.size + ([True] * ts.size if phi else [])
    return lanczos_matfuncs(op, R, fn, self_relative=rel, **kwargs)


def krylov_descent(op: Any, R: Any, steps: Any, learning_rate: float, scale: float = 1.0, *,
                   phi: bool = True, **kwargs: Any) -> KrylovResult:
    """``(I - lr scale K)^k R`` and ``K^-1 (I - (I - lr scale K)^k) R`` for step counts k.

    Parameters are those of :func:`krylov_flow` with ``steps`` non-negative integers,
    shape (T,), and ``learning_rate`` > 0; raises ``ValueError`` when
    ``lr scale s_max >= 2`` for the largest Ritz value (divergent GD).

    References
    ----------
    Lee et al., NeurIPS 2019 (discrete-time linearized dynamics).
    """
    ks = np.asarray(steps).reshape(-1)
    if ks.size == 0 or not np.issubdtype(ks.dtype, np.integer) or np.any(ks < 0):
        raise ValueError(f"steps must be non-negative integers, got {steps!r}")
    lr_scale = float(learning_rate) * float(scale)
    if not (np.isfinite(lr_scale) and lr_scale > 0):
        raise ValueError(f"learning_rate and scale must be finite and > 0, got "
                         f"{learning_rate!r}, {scale!r}")

    def fn(theta: np.ndarray) -> np.ndarray:
        decay, ph = _descent_factors(theta, ks, lr_scale)
        return np.vstack([decay, ph]) if phi else decay

    rel = [False] * ks.size + ([True] * ks.size if phi else [])
    return lanczos_matfuncs(op, R, fn, self_relative=rel, **kwargs)
