"""Full-batch gradient descent on MSE for finite JAX networks (neural-tangents conventions).

Loss ``(1/2) mean((f(X) - y)^2)`` over all n x C entries (``N = y.size``), plain GD
``theta <- theta - lr grad``, so the function-space update of the linearized network is
``f <- f - (lr/N) Theta (f - y)``: the dynamics of :func:`ntkscale.spectral.gradient_descent`
with ``t = steps x lr``. The steps between recorded points run inside one jitted
``lax.fori_loop``; precision follows the parameters and inputs (enable JAX x64, e.g.
``with jax.enable_x64(True):``, to compare with float64 theory below ~1e-4).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

__all__ = ["Trajectory", "train_mse_gd"]

_GD_LOOP: Any = None  # the jitted loop, built on first use (JAX is optional)


def _gd_loop(jax: Any) -> Callable[..., Any]:
    """``run(apply_fn, params, x, y, lr, k)``: k GD steps in one jitted ``fori_loop``.

    ``apply_fn`` is a static argument, so repeated calls with the same function object
    (several seeds, several segments) reuse one compilation per shape and dtype.
    """
    global _GD_LOOP
    if _GD_LOOP is None:
        jnp = jax.numpy

        def run(apply_fn: Callable[[Any, Any], Any], params: Any, x: Any, y: Any, lr: Any,
                k: Any) -> Any:
            def loss(p: Any) -> Any:
                return 0.5 * jnp.mean((apply_fn(p, x) - y) ** 2)

            def body(_: Any, q: Any) -> Any:
                return jax.tree_util.tree_map(lambda a, g: a - lr * g, q, jax.grad(loss)(q))

            return jax.lax.fori_loop(0, k, body, params)

        _GD_LOOP = jax.jit(run, static_argnums=0)
    return _GD_LOOP


@dataclass(frozen=True)
class Trajectory:
    """Outputs of a network along full-batch GD; T recorded steps, n train / m test points.

    Attributes
    ----------
    steps : ndarray of int, shape (T,)
    t : ndarray, shape (T,)
        ``steps x learning_rate`` (neural-tangents time).
    train : ndarray, shape (T, n, C) (or (T, n) for 1-d ``y``)
    test : ndarray or None, shape (T, m, C) (or (T, m))
    train_loss : ndarray, shape (T,)
        ``(1/2) mean((f_train - y)^2)``.
    params : pytree
        Parameters after the last recorded step.
    """

    steps: np.ndarray
    t: np.ndarray
    train: np.ndarray
    test: Optional[np.ndarray]
    train_loss: np.ndarray
    params: Any


def train_mse_gd(apply_fn: Callable[[Any, Any], Any], params: Any, x_train: Any, y_train: Any,
                 learning_rate: float, steps: Any, x_test: Any = None,
                 on_record: Optional[Callable[[int, Any], None]] = None) -> Trajectory:
    """Train ``apply_fn`` by full-batch GD on ``(1/2) mean((f - y)^2)``, recording outputs.

    Parameters
    ----------
    apply_fn : callable
        ``apply_fn(params, x) -> (n, C)`` (e.g. from ``stax.serial``).
    params : pytree
        Initial parameters (e.g. from the architecture's ``init_fn``).
    x_train : array_like, shape (n, d)
    y_train : array_like, shape (n,) or (n, C)
    learning_rate : float
        > 0; GD on the linearized network is stable for ``lr < 2 N / lambda_max(Theta)``.
    steps : int or array_like of int, shape (T,)
        Step counts at which to record outputs (any order; recorded sorted, unique).
    x_test : array_like, shape (m, d), optional
    on_record : callable, optional
        Called as ``on_record(step, params)`` at each recorded step (e.g. to compute the
        empirical NTK there: :func:`ntkscale.empirical.ntk_evolution`).

    Returns
    -------
    Trajectory

    References
    ----------
    Lee et al., "Wide neural networks of any depth evolve as linear models under gradient
    descent", NeurIPS 2019 (the experiment this reproduces); neural-tangents
    ``predict.gradient_descent_mse`` (loss and time conventions).
    """
    try:
        import jax
        import jax.numpy as jnp
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError("training finite networks needs JAX: pip install 'ntkscale[jax]'") from e
    ks = np.unique(np.asarray(steps).reshape(-1))
    if ks.size == 0 or not np.issubdtype(ks.dtype, np.integer) or ks[0] < 0:
        raise ValueError(f"steps must be non-negative integers, got {steps!r}")
    lr = float(learning_rate)
    if not (np.isfinite(lr) and lr > 0):
        raise ValueError(f"learning_rate must be finite and > 0, got {learning_rate!r}")
    y_np = np.asarray(y_train)
    vec = y_np.ndim == 1
    x = jnp.asarray(x_train)
    y = jnp.asarray(y_np[:, None] if vec else y_np, dtype=x.dtype)
    if y.ndim != 2 or y.shape[0] != x.shape[0]:
        raise ValueError(f"y_train must have shape ({x.shape[0]},) or ({x.shape[0]}, C), got "
                         f"{y_np.shape}")
    out_shape = jax.eval_shape(apply_fn, params, x).shape
    if tuple(out_shape) != tuple(y.shape):
        raise ValueError(f"the network outputs shape {tuple(out_shape)} but y_train is "
                         f"{tuple(y.shape)}; the last Dense layer must have C = y.shape[1] units")
    xt = None if x_test is None else jnp.asarray(x_test)

    run = _gd_loop(jax)
    train, test, done = [], [], 0
    for k in ks:
        if k > done:
            params = run(apply_fn, params, x, y, lr, int(k - done))
            done = int(k)
        if on_record is not None:
            on_record(int(k), params)
        train.append(np.asarray(apply_fn(params, x), dtype=np.float64))
        if xt is not None:
            test.append(np.asarray(apply_fn(params, xt), dtype=np.float64))
    f_train = np.stack(train)
    f_test = np.stack(test) if xt is not None else None
    yy = np.asarray(y, dtype=np.float64)
    losses = 0.5 * np.mean((f_train - yy[None]) ** 2, axis=(1, 2))
    if vec:
        f_train = f_train[..., 0]
        f_test = None if f_test is None else f_test[..., 0]
    return Trajectory(steps=ks, t=lr * ks.astype(np.float64), train=f_train, test=f_test,
                      train_loss=losses, params=params)
