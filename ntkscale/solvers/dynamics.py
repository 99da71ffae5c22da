"""Linearized training dynamics on MSE from a Gram operator, without an eigendecomposition.

Same conventions and outputs as :mod:`ntkscale.spectral.dynamics` (neural-tangents: loss
``(1/2)(1/N)||f - y||^2``, ``N = y.size``, ``t = steps x learning_rate``), but the
matrix functions of the train NTK ``K`` are applied by Lanczos
(:mod:`ntkscale.solvers.krylov`), one operator pass per Lanczos step for all outputs:

* ``f_train(t) = y + exp(-t K / N) (f0(X) - y)``;
* ``f_test(t) = f0(x) + K(x, X) phi_t(K) (y - f0(X))``, ``phi_t(s) = (1 - e^{-s t/N}) / s``
  (``t/N`` at ``s = 0``; the pseudo-inverse at ``t = inf``).

The test-train NTK enters only through products ``K(x, X) V`` with one (n, T C) block,
so a stored cross Gram is streamed once.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np

from ..spectral.dynamics import Predictions, mse_loss
from .krylov import KrylovResult, krylov_descent, krylov_flow
from .validate import check_rhs

__all__ = ["gradient_flow_op", "gradient_descent_op"]


def _cross(k_test_train: Any, n: int) -> Optional[Callable[[np.ndarray], np.ndarray]]:
    """``V -> K(x, X) V`` from an array (m, n), an operator with ``matvec`` or a callable."""
    if k_test_train is None:
        return None
    if hasattr(k_test_train, "matvec"):
        if tuple(k_test_train.shape)[1] != n:
            raise ValueError(f"k_test_train must have shape (m, {n}), got "
                             f"{tuple(k_test_train.shape)}")
        return k_test_train.matvec
    if callable(k_test_train):
        return k_test_train
    kx = np.asarray(k_test_train, dtype=np.float64)
    if kx.ndim != 2 or kx.shape[1] != n:
        raise ValueError(f"k_test_train must have shape (m, {n}) (test x train NTK), got "
                         f"{kx.shape}")
    return lambda V: kx @ V


def _predict(op: Any, y: Any, f0_train: Any, f0_test: Any, k_test_train: Any,
             run: Callable[[np.ndarray, bool, float], KrylovResult], times: np.ndarray,
             scalar: bool, return_info: bool) -> Any:
    n = int(op.shape[0])
    Y, vec = check_rhs(y, n, "y")
    n_total = Y.size  # N = n C (neural-tangents)
    f0 = np.zeros_like(Y) if f0_train is None else np.asarray(f0_train, np.float64).reshape(Y.shape)
    cross = _cross(k_test_train, n)
    if cross is None and f0_test is not None:
        raise ValueError("f0_test given without k_test_train (the test-train NTK)")
    res = run(f0 - Y, cross is not None, 1.0 / n_total)
    T, C = times.size, Y.shape[1]
    train = Y[None] + res.values[:T]  # shape: (T, n, C)
    test = None
    if cross is not None:
        block = res.values[T:].transpose(1, 0, 2).reshape(n, T * C)  # phi (f0 - y), all t at once
        kv = np.asarray(cross(block), dtype=np.float64)
        if kv.ndim != 2 or kv.shape[1] != T * C:
            raise ValueError(f"k_test_train(V) must return shape (m, {T * C}) for V of shape "
                             f"({n}, {T * C}), got {kv.shape}")
        m = kv.shape[0]
        f0x = (np.zeros((m, C)) if f0_test is None
               else np.asarray(f0_test, np.float64).reshape(m, C))
        test = f0x[None] - kv.reshape(m, T, C).transpose(1, 0, 2)  # shape: (T, m, C)
    loss = np.atleast_1d(mse_loss(train, Y))
    if vec:
        train = train[..., 0]
        test = None if test is None else test[..., 0]
    if scalar:
        train = train[0]
        test = None if test is None else test[0]
    out = Predictions(t=times, train=train, test=test, train_loss=loss)
    return (out, res) if return_info else out


def gradient_flow_op(op: Any, y: Any, t: Any, f0_train: Any = None, f0_test: Any = None,
                     k_test_train: Any = None, *, tol: float = 1e-10,
                     maxiter: Optional[int] = None, rcond: Optional[float] = None,
                     check_every: Optional[int] = None, raise_on_fail: bool = False,
                     return_info: bool = False) -> Any:
    """Train/test predictions of the linearized network under gradient flow, by Lanczos.

    Parameters
    ----------
    op : GramOperator or ndarray, shape (n, n)
        Train NTK ``Theta`` (symmetric PSD); only ``shape`` and ``matvec`` are used.
    y : array_like, shape (n,) or (n, C)
        Train targets; ``N = y.size`` sets the time scale.
    t : float or array_like, shape (T,)
        Times >= 0; ``np.inf`` gives the converged (kernel regression) solution.
    f0_train : array_like, shape like ``y``, optional
        Outputs at initialization (default 0).
    f0_test : array_like, shape (m,) or (m, C), optional
    k_test_train : array_like (m, n), operator with ``matvec``, or callable, optional
        Test-train NTK ``Theta_xX``, or ``V -> Theta_xX V`` for V (n, k) (called once,
        with k = T C); required for test predictions.
    tol, maxiter, rcond, check_every, raise_on_fail
        Lanczos controls, see :func:`ntkscale.solvers.krylov.lanczos_matfuncs`.
    return_info : bool
        Also return the :class:`~ntkscale.solvers.krylov.KrylovResult` (passes, estimate).

    Returns
    -------
    Predictions or (Predictions, KrylovResult)
        As :func:`ntkscale.spectral.gradient_flow`; no time axis for a scalar ``t``.

    References
    ----------
    Lee et al., "Wide neural networks of any depth evolve as linear models under gradient
    descent", NeurIPS 2019; Saad, SIAM J. Numer. Anal. 29 (1992) (Krylov exponential).
    """
    ts = np.asarray(t, dtype=np.float64).reshape(-1)
    kw = dict(tol=tol, maxiter=maxiter, rcond=rcond, check_every=check_every,
              raise_on_fail=raise_on_fail)
    return _predict(op, y, f0_train, f0_test, k_test_train,
                    lambda R, phi, scale: krylov_flow(op, R, ts, scale, phi=phi, **kw),
                    ts, np.ndim(t) == 0, return_info)


def gradient_descent_op(op: Any, y: Any, learning_rate: float, steps: Any, f0_train: Any = None,
                        f0_test: Any = None, k_test_train: Any = None, *, tol: float = 1e-10,
                        maxiter: Optional[int] = None, rcond: Optional[float] = None,
                        check_every: Optional[int] = None, raise_on_fail: bool = False,
                        return_info: bool = False) -> Any:
    """Predictions after ``steps`` full-batch GD steps ``f <- f - (lr/N) Theta (f - y)``.

    Parameters are those of :func:`gradient_flow_op`, with ``learning_rate`` > 0 and
    ``steps`` a non-negative integer or integer array, shape (T,). Raises ``ValueError``
    when ``learning_rate >= 2 N / s_max`` for the largest Ritz value (divergent GD).

    Returns
    -------
    Predictions or (Predictions, KrylovResult)
        ``t = steps * learning_rate``, as :func:`ntkscale.spectral.gradient_descent`.

    References
    ----------
    Lee et al., NeurIPS 2019 (discrete-time linearized dynamics).
    """
    ks = np.asarray(steps).reshape(-1)
    if not np.issubdtype(ks.dtype, np.integer) or np.any(ks < 0):
        raise ValueError(f"steps must be non-negative integers, got {steps!r}")
    kw = dict(tol=tol, maxiter=maxiter, rcond=rcond, check_every=check_every,
              raise_on_fail=raise_on_fail)
    lr = float(learning_rate)
    return _predict(op, y, f0_train, f0_test, k_test_train,
                    lambda R, phi, scale: krylov_descent(op, R, ks, lr, scale, phi=phi, **kw),
                    lr * ks.astype(np.float64), np.ndim(steps) == 0, return_info)
