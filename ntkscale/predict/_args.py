"""Argument conventions of neural-tangents' ``predict`` module: ``get``, ``trace_axes``,
kernels given as arrays / ``Kernel`` namedtuples / stores, and the named outputs."""

from __future__ import annotations

import collections
import os
from typing import Any, Callable, NamedTuple, Optional

import numpy as np

__all__ = ["Gaussian", "canonical_get", "named_output", "Targets", "to_numpy", "kernel_part",
           "is_operator", "is_url", "broadcast_to", "url_client", "opener"]


class Gaussian(NamedTuple):
    """A ``(mean, covariance)`` namedtuple (neural-tangents' ``predict.Gaussian``).

    Attributes
    ----------
    mean : ndarray
        Shape of the outputs, e.g. (m, C), with leading time axes if any.
    covariance : ndarray
        Shape of the kernel, (m, m), with leading time axes if any (shared by all outputs).
    """

    mean: np.ndarray
    covariance: np.ndarray


_NAMED: dict[tuple[str, tuple[str, ...]], Any] = {}


def canonical_get(get: Any, default: tuple[str, ...] = ("nngp", "ntk")) -> tuple[tuple[str, ...], bool]:
    """``(kinds, single)``: ``get`` as a tuple of lower-case names, and whether it was one string."""
    if get is None:
        return default, False
    if isinstance(get, str):
        return (get.lower(),), True
    kinds = tuple(str(g).lower() for g in get)
    if not kinds:
        raise ValueError('"get" must be non-empty.')
    if len(set(kinds)) < len(kinds):
        raise ValueError(f'All entries in "get" must be unique. Got {kinds}')
    return kinds, False


def named_output(out: dict[str, Any], kinds: tuple[str, ...], single: bool) -> Any:
    """NT's return convention: the value for a string ``get``, else a namedtuple ``Gaussians``
    with one field per kind, in ``get`` order."""
    if single:
        return out[kinds[0]]
    key = ("Gaussians", kinds)
    if key not in _NAMED:
        _NAMED[key] = collections.namedtuple("Gaussians", kinds)
    return _NAMED[key](*(out[k] for k in kinds))


def to_numpy(x: Any) -> np.ndarray:
    """A float64 NumPy array of ``x`` (NumPy, JAX, or CuPy, copied to the host)."""
    if type(x).__module__.split(".")[0] == "cupy":
        x = x.get()
    return np.asarray(x, dtype=np.float64)


def is_operator(k: Any) -> bool:
    """A Gram operator (``shape`` and ``matvec``): a :class:`ntkscale.operator.StoredGram` or
    :class:`ntkscale.linop.DenseGram`."""
    return hasattr(k, "matvec") and hasattr(k, "shape")


def is_url(k: Any) -> bool:
    return isinstance(k, (str, os.PathLike))


def kernel_part(k: Any, kind: str) -> Any:
    """The ``kind`` ('nngp' or 'ntk') of a kernel given as an array / operator / URL (used
    for every kind, as NT does with arrays), a ``Kernel`` namedtuple or a dict."""
    if k is None or is_operator(k) or is_url(k):
        return k
    if isinstance(k, dict):
        part = k.get(kind)
    elif hasattr(k, "nngp") or hasattr(k, "ntk"):
        part = getattr(k, kind, None)
    else:
        return k
    if part is None:
        raise ValueError(f"the kernel has no {kind!r} part (it has "
                         f"{[f for f in ('nngp', 'ntk') if _has(k, f)]}); compute it with "
                         f"get=('nngp', 'ntk')")
    return part


def _has(k: Any, kind: str) -> bool:
    return (k.get(kind) if isinstance(k, dict) else getattr(k, kind, None)) is not None


def broadcast_to(x: Any, shape: tuple[int, ...], name: str) -> np.ndarray:
    try:
        return np.broadcast_to(to_numpy(x), shape)
    except ValueError:
        raise ValueError(f"{name} of shape {np.shape(x)} does not broadcast to {shape}") from None


class Targets:
    """``y_train`` with NT's ``trace_axes``: the kernels of this library are ``Theta x I`` over
    every output axis, so the traced axes must be all axes but the first (batch) one.

    Attributes
    ----------
    y : ndarray, shape (n, *out)
        As given, float64.
    y2 : ndarray, shape (n, C)
        Outputs flattened, C = prod(out) (1 for ``y`` of shape (n,)).
    out : tuple
        Output shape ``y.shape[1:]``.
    """

    def __init__(self, y_train: Any, trace_axes: Any = (-1,)):
        y = to_numpy(y_train)
        if y.ndim < 1 or y.shape[0] == 0:
            raise ValueError(f"y_train must have shape (n, ...) with n >= 1, got {y.shape}")
        if not np.all(np.isfinite(y)):
            raise ValueError("y_train has NaN or Inf")
        axes = (trace_axes,) if isinstance(trace_axes, int) else tuple(trace_axes)
        try:
            canon = {int(a) % y.ndim if -y.ndim <= int(a) < y.ndim else None for a in axes}
        except (TypeError, ValueError):
            raise ValueError(f"trace_axes must be a tuple of ints, got {trace_axes!r}") from None
        if None in canon or canon != set(range(1, y.ndim)):
            raise NotImplementedError(
                f"trace_axes={trace_axes!r} for y_train of shape {y.shape}: ntkscale's kernels have no "
                f"output axes (Theta x I over the outputs), so trace_axes must be every axis of y_train "
                f"but the first, i.e. {tuple(range(-(y.ndim - 1), 0)) if y.ndim > 1 else ()} (NT's "
                f"default (-1,) for y of shape (n, C); () for y of shape (n,)); per-output kernels "
                f"(trace_axes=() on multi-output y) are not supported")
        self.y = y
        self.out = y.shape[1:]
        self.y2 = y.reshape(y.shape[0], -1)
        self.n, self.C = self.y2.shape

    def shape(self, lead: tuple[int, ...], rows: int) -> tuple[int, ...]:
        """``lead + (rows,) + out``: the shape NT gives a prediction."""
        return tuple(lead) + (rows,) + self.out

    def flat(self, f: Any, rows: int, name: str) -> np.ndarray:
        """An output array broadcast to ``(rows, *out)`` and flattened to (rows, C)."""
        return broadcast_to(f, (rows,) + self.out, name).reshape(rows, self.C)


def check_time(t: Any, learning_rate: float) -> tuple[np.ndarray, tuple[int, ...]]:
    """``(times, t_shape)``: ``t * learning_rate`` flattened (T,), and the shape of ``t``."""
    ts = np.asarray(to_numpy(t) * float(learning_rate), dtype=np.float64)
    if np.any(np.isnan(ts)) or np.any(ts < 0):
        raise ValueError(f"t must be >= 0 (np.inf allowed; None for infinite time), got {t!r}")
    return ts.reshape(-1), ts.shape


def check_reg(diag_reg: Any) -> float:
    r = float(diag_reg)
    if not (np.isfinite(r) and r >= 0):
        raise ValueError(f"diag_reg must be a finite number >= 0, got {diag_reg!r}")
    return r


def url_client() -> Any:
    """Where the passes over a store given by URL run: the running ``distributed`` client (the
    user's ``Client(...)``, dask's own convention for default clients), else in-process."""
    try:
        from distributed import default_client

        return default_client()
    except (ImportError, ValueError):  # (ValueError: no client is running)
        return "sync"


def opener(k: Any) -> Callable[[str], Any]:
    """``kind -> kernel`` for a kernel given as array / operator / namedtuple / dict / URL (a
    URL is opened with :func:`url_client`)."""
    opened: dict[str, Any] = {}

    def get(kind: str) -> Any:
        part = kernel_part(k, kind)
        if is_url(part):
            if kind not in opened:
                from ..operator import StoredGram

                opened[kind] = StoredGram(part, kind, client=url_client())
            return opened[kind]
        return part
    return get
