"""NTK evolution under gradient descent: how far the empirical kernel moves while training.

A network trained by full-batch GD on ``(1/2) mean((f - y)^2)``
(:func:`ntkscale.kernels.train.train_mse_gd`) is stopped at checkpoints, where this
module records the empirical NTK on the training inputs and

* the relative kernel distance from initialization ``||Theta_t - Theta_0||_F / ||Theta_0||_F``;
* the kernel-target alignment ``<Theta_t, Y Y^T>_F / (||Theta_t||_F ||Y Y^T||_F)``
  (uncentred; ``= y^T Theta y / (||Theta||_F ||y||^2)`` for one output);
* the top eigenvalues of ``Theta_t`` (train Gram);
* train and test losses.

Lazy regime (wide, NTK parameterization, small learning rate): the kernel moves by
``O(1/sqrt(width))`` and the network trains like its linearization. Rich regime (narrow,
or a large learning rate, or the output scale of the standard parameterization): the
kernel moves by O(1) and aligns with the target.

References
----------
Lee et al., "Wide neural networks of any depth evolve as linear models under gradient
descent", NeurIPS 2019 (relative kernel change ~ 1/sqrt(width), their Fig. 1).
Chizat, Oyallon & Bach, "On lazy training in differentiable programming", NeurIPS 2019.
Fort et al., "Deep learning versus kernel learning", NeurIPS 2020 (kernel distance, alignment).
Cristianini et al., "On kernel-target alignment", NeurIPS 2001.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import numpy as np

from ..kernels.train import train_mse_gd
from ._model import jax_modules
from .ntk import empirical_ntk

__all__ = ["Evolution", "ntk_evolution", "kernel_distance", "kernel_alignment"]


def kernel_distance(k: Any, k0: Any) -> float:
    """``||k - k0||_F / ||k0||_F`` in float64."""
    k, k0 = np.asarray(k, np.float64), np.asarray(k0, np.float64)
    return float(np.linalg.norm(k - k0) / np.linalg.norm(k0))


def kernel_alignment(k: Any, y: Any) -> float:
    """Uncentred kernel-target alignment ``<K, Y Y^T>_F / (||K||_F ||Y Y^T||_F)``; y (n,) or (n, C)."""
    k = np.asarray(k, np.float64)
    y = np.asarray(y, np.float64)
    y = y[:, None] if y.ndim == 1 else y
    yy = y @ y.T
    return float(np.sum(k * yy) / (np.linalg.norm(k) * np.linalg.norm(yy)))


@dataclass(frozen=True)
class Evolution:
    """What :func:`ntk_evolution` recorded at T checkpoints (n training points).

    Attributes
    ----------
    steps : ndarray of int, shape (T,)
    t : ndarray, shape (T,)
        ``steps x lr``.
    kernel_distance : ndarray, shape (T,)
        ``||Theta_t - Theta_0||_F / ||Theta_0||_F`` (0 at step 0).
    alignment : ndarray, shape (T,)
        Kernel-target alignment of ``Theta_t``.
    top_eigenvalues : ndarray, shape (T, top_k)
        Largest eigenvalues of ``Theta_t`` (train Gram), descending.
    train_loss, test_loss : ndarray, shape (T,) (``test_loss`` None without test data)
        ``(1/2) mean((f - y)^2)``.
    kernel0, kernel : ndarray, shape (n, n)
        Train Gram at initialization and at the last checkpoint.
    params : pytree
        Parameters at the last checkpoint.
    """

    steps: np.ndarray
    t: np.ndarray
    kernel_distance: np.ndarray
    alignment: np.ndarray
    top_eigenvalues: np.ndarray
    train_loss: np.ndarray
    test_loss: Optional[np.ndarray]
    kernel0: np.ndarray
    kernel: np.ndarray
    params: Any


def _checkpoints(steps: Optional[int], checkpoints: Any) -> np.ndarray:
    if checkpoints is None or isinstance(checkpoints, (int, np.integer)):
        if steps is None or not isinstance(steps, (int, np.integer)) or steps < 1:
            raise ValueError(f"steps must be a positive int when checkpoints is not a list, got {steps!r}")
        count = 10 if checkpoints is None else int(checkpoints)
        if count < 1:
            raise ValueError(f"checkpoints must be >= 1, got {checkpoints!r}")
        ks = np.unique(np.round(np.geomspace(1, int(steps), count)).astype(np.int64))
    else:
        ks = np.asarray(list(checkpoints))
        if ks.size == 0 or not np.issubdtype(ks.dtype, np.integer) or ks.min() < 0:
            raise ValueError(f"checkpoints must be non-negative step counts, got {checkpoints!r}")
        if steps is not None and ks.max() > steps:
            raise ValueError(f"checkpoint {int(ks.max())} is past steps={steps}")
    return np.unique(np.concatenate([[0], ks, [] if steps is None else [int(steps)]]).astype(np.int64))


def ntk_evolution(apply_fn: Callable[[Any, Any], Any], params: Any, x_train: Any, y_train: Any,
                  x_test: Any = None, y_test: Any = None, *, lr: float, steps: Optional[int] = None,
                  checkpoints: Any = None, method: str = "auto", top_k: int = 5,
                  batch_size: Optional[int] = None) -> Evolution:
    """Train ``apply_fn`` by full-batch GD and record its empirical NTK at checkpoints.

    Parameters
    ----------
    apply_fn : callable
        ``apply_fn(params, x) -> (n,) or (n, C)``; plain JAX (no optax needed).
    params : pytree
        Initial parameters.
    x_train : array, shape (n, ...)
    y_train : array, shape (n,) or (n, C)
    x_test, y_test : arrays, optional
        For the test loss (both or neither).
    lr : float
        Learning rate of ``theta <- theta - lr grad`` on ``(1/2) mean((f - y)^2)``.
    steps : int, optional
        Total steps (always a checkpoint).
    checkpoints : sequence of int, or int, optional
        Steps at which to record (step 0 is always added); an int or None: that many (10)
        geometrically spaced steps up to ``steps``.
    method : {'auto', 'jacobian', 'ntvp'}
        Empirical NTK method (:func:`~ntkscale.empirical.empirical_ntk`).
    top_k : int
        Eigenvalues recorded per checkpoint.

    Returns
    -------
    Evolution
    """
    jax, jnp = jax_modules()
    ks = _checkpoints(steps, checkpoints)
    if (x_test is None) != (y_test is None):
        raise ValueError("pass both x_test and y_test, or neither")
    if not isinstance(top_k, (int, np.integer)) or top_k < 1:
        raise ValueError(f"top_k must be a positive int, got {top_k!r}")
    x = jnp.asarray(x_train)
    y = np.asarray(y_train, np.float64)
    out_shape = jax.eval_shape(apply_fn, params, x).shape
    vector = len(out_shape) == 1
    fn = (lambda p, xx: apply_fn(p, xx)[:, None]) if vector else apply_fn
    y2 = y[:, None] if y.ndim == 1 else y
    yt = None
    if x_test is not None:
        yt = np.asarray(y_test, np.float64)
        yt = yt[:, None] if yt.ndim == 1 else yt
        shape_t = jax.eval_shape(fn, params, jnp.asarray(x_test)).shape
        if tuple(shape_t) != yt.shape:
            raise ValueError(f"y_test has shape {np.shape(y_test)} but the network outputs "
                             f"{tuple(shape_t)} on x_test")
    kernels: list[np.ndarray] = []

    def record(step: int, p: Any) -> None:
        kernels.append(np.asarray(empirical_ntk(apply_fn, p, x, method=method,
                                                batch_size=batch_size), np.float64))

    traj = train_mse_gd(fn, params, x, y2, lr, ks, x_test, on_record=record)
    k0 = kernels[0]
    dist = np.array([kernel_distance(k, k0) for k in kernels])
    align = np.array([kernel_alignment(k, y2) for k in kernels])
    kk = min(int(top_k), k0.shape[0])
    top = np.stack([np.linalg.eigvalsh(0.5 * (k + k.T))[::-1][:kk] for k in kernels])
    test_loss = None
    if yt is not None:
        f = traj.test if traj.test.ndim == 3 else traj.test[..., None]
        test_loss = 0.5 * np.mean((f - yt[None]) ** 2, axis=(1, 2))
    return Evolution(steps=traj.steps, t=traj.t, kernel_distance=dist, alignment=align,
                     top_eigenvalues=top, train_loss=traj.train_loss, test_loss=test_loss,
                     kernel0=k0, kernel=kernels[-1], params=traj.params)
