"""Width convergence: distance between the empirical NTK at width w and the infinite-width NTK.

For an architecture of the combinator language, ``arch(w)`` is the network at width ``w``
(its ``init_fn``/``apply_fn`` give the finite network, its ``kernel_fn`` the limit). At
initialization the empirical NTK fluctuates around the limit with relative size
``~ C / sqrt(w)`` (and a bias ``O(1/w)``), so the relative Frobenius distance
``||Theta_w - Theta_inf||_F / ||Theta_inf||_F`` falls with slope ~ -1/2 on log-log axes.

References
----------
Jacot, Gabriel & Hongler, "Neural Tangent Kernel", NeurIPS 2018 (convergence as width grows).
Hanin & Nica, "Finite depth and width corrections to the neural tangent kernel", ICLR 2020
(fluctuations of order depth/width in variance, i.e. 1/sqrt(width) in size).
Novak et al., "Neural Tangents", ICLR 2020, Fig. 2 (the same experiment).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import numpy as np

from ..kernels import layers as L
from ..kernels.registry import make_activation
from ._model import jax_modules, x64
from .ntk import empirical_ntk

__all__ = ["WidthSweep", "width_sweep", "mlp", "relative_distance"]


def relative_distance(a: Any, b: Any) -> float:
    """``||a - b||_F / ||b||_F`` in float64."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def mlp(depth: int = 2, activation: str = "relu", *, W_std: float = 2 ** 0.5, b_std: Optional[float] = 0.1,
        out_dim: int = 1, parameterization: str = "ntk") -> Callable[[int], L.Layer]:
    """A factory ``width -> serial(Dense(width), act, ... , Dense(out_dim))`` (``depth`` hidden
    layers; activation by its job-file name, e.g. ``"relu"``, ``"erf"``)."""
    if not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth must be a positive int, got {depth!r}")

    def arch(width: int) -> L.Layer:
        layers: list = []
        for _ in range(depth):
            layers += [L.Dense(width, W_std=W_std, b_std=b_std, parameterization=parameterization),
                       make_activation(activation)]
        return L.serial(*layers, L.Dense(out_dim, W_std=W_std, b_std=b_std,
                                         parameterization=parameterization))

    return arch


@dataclass(frozen=True)
class WidthSweep:
    """Result of :func:`width_sweep`; W widths, S seeds.

    Attributes
    ----------
    widths : ndarray of int, shape (W,)
    seeds : ndarray of int, shape (S,)
    distance : ndarray, shape (W, S)
        ``||Theta_w - Theta_inf||_F / ||Theta_inf||_F`` per width and seed.
    mean, std : ndarray, shape (W,)
        Over seeds (``std`` with ``ddof=1``; 0 for one seed).
    slope, intercept : float
        Least-squares fit ``log(mean) = intercept + slope * log(width)`` (~ -1/2 expected).
    """

    widths: np.ndarray
    seeds: np.ndarray
    distance: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    slope: float
    intercept: float


def width_sweep(arch: Callable[[int], L.Layer], widths: Sequence[int], x: Any, *,
                seeds: Sequence[int] = (0, 1, 2), method: str = "auto", dtype: Any = np.float64,
                batch_size: Optional[int] = None) -> WidthSweep:
    """Relative distance of the empirical NTK at each width to the infinite-width NTK.

    Parameters
    ----------
    arch : callable
        ``arch(width) -> Layer`` from the combinator language, e.g. :func:`mlp` or
        ``lambda w: stax.serial(stax.Dense(w), stax.Relu(), stax.Dense(1))``.
    widths : sequence of int
        At least two, for the slope.
    x : array, shape (n, d)
    seeds : sequence of int
        One network per seed and width (``jax.random.PRNGKey(seed)``).
    method : {'auto', 'jacobian', 'ntvp'}
    dtype : float64 (default, under ``jax.enable_x64``) or float32

    Returns
    -------
    WidthSweep
    """
    jax, jnp = jax_modules()
    ws = np.asarray(sorted(int(w) for w in widths))
    if ws.size < 2 or ws[0] < 1:
        raise ValueError(f"widths must be at least two positive ints, got {widths!r}")
    seeds = np.asarray([int(s) for s in seeds])
    if seeds.size < 1:
        raise ValueError("seeds must name at least one seed")
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or not np.isfinite(x).all():
        raise ValueError(f"x must be a finite (n, d) array, got shape {x.shape}")
    dt = np.dtype(dtype)
    dist = np.zeros((ws.size, seeds.size))
    for a, w in enumerate(ws):
        net = arch(int(w))
        init_fn, apply_fn, kernel_fn = net
        k_inf = np.asarray(kernel_fn(x, None, "ntk"), np.float64)
        with x64(dt):
            xj = jnp.asarray(x, dtype=dt)
            for b, seed in enumerate(seeds):
                _, params = init_fn(jax.random.PRNGKey(int(seed)), x.shape)
                params = jax.tree_util.tree_map(lambda p: p.astype(dt), params)
                k_emp = empirical_ntk(apply_fn, params, xj, method=method, batch_size=batch_size)
                dist[a, b] = relative_distance(k_emp, k_inf)
    mean = dist.mean(axis=1)
    std = dist.std(axis=1, ddof=1) if seeds.size > 1 else np.zeros_like(mean)
    slope, intercept = np.polyfit(np.log(ws), np.log(mean), 1)
    return WidthSweep(widths=ws, seeds=seeds, distance=dist, mean=mean, std=std,
                      slope=float(slope), intercept=float(intercept))
