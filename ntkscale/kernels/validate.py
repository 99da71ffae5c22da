"""Input checks for kernel computations: shapes, dtypes, finiteness.

All checks run before any heavy work and raise errors that name the problem
and the fix.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from .backend import Namespace

__all__ = ["check_inputs", "check_get", "resolve_dtype", "is_tracer", "KINDS"]

KINDS = ("nngp", "ntk")


def resolve_dtype(dtype: Any) -> np.dtype:
    """Compute dtype: float64 (default) or float32."""
    try:
        dt = np.dtype(np.float64 if dtype is None else dtype)
    except TypeError:
        raise ValueError(f"dtype must be float32 or float64, got {dtype!r}") from None
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"dtype must be float32 or float64, got {dt}")
    return dt


def check_get(get: Any) -> tuple[tuple[str, ...], bool]:
    """Normalise ``get`` to a tuple of kinds; the bool says whether one string was given."""
    if get is None:
        return KINDS, False
    single = isinstance(get, str)
    msg = f"get must be 'nngp', 'ntk' or a tuple of them, got {get!r}"
    try:
        kinds = (get,) if single else tuple(get)
    except TypeError:  # not iterable, e.g. an int
        raise ValueError(msg) from None
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds or len(set(kinds)) != len(kinds):
        raise ValueError(msg)
    return kinds, single


def _check_one(ns: Namespace, x: Any, name: str, dtype: np.dtype) -> Any:
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        x = np.asarray(x)
    if x.ndim != 2:
        hint = " (reshape a single sample with x[None, :])" if x.ndim == 1 else \
            " (flatten images first, e.g. x.reshape(len(x), -1))" if x.ndim > 2 else ""
        raise ValueError(f"{name} must be a 2-d array of shape (n_samples, n_features), "
                         f"got shape {tuple(x.shape)}{hint}")
    kind = np.dtype(x.dtype).kind
    if kind not in "fiub":
        raise TypeError(f"{name} has unsupported dtype {x.dtype}; pass real numbers "
                        "(float32/float64, or integers that are cast)")
    if x.shape[1] == 0:
        raise ValueError(f"{name} has no features (shape {tuple(x.shape)})")
    x = x.astype(dtype) if x.dtype != dtype else x
    if is_tracer(x):  # under jax.jit / grad / vmap: values are unknown, shapes were checked
        return x
    finite = ns.all(ns.isfinite(x), axis=1)
    if not bool(ns.all(finite)):
        bad = np.flatnonzero(~np.asarray(_to_host(finite)))
        shown = ", ".join(str(i) for i in bad[:10]) + (" ..." if bad.size > 10 else "")
        raise ValueError(f"{name} has NaN or Inf in {bad.size} row(s): {shown}; "
                         "drop or impute those rows first")
    return x


def is_tracer(x: Any) -> bool:
    """Whether ``x`` is an abstract JAX value (inside ``jax.jit``, ``grad``, ``vmap``): its
    values cannot be read, so the finiteness check is skipped (NaN rows then give NaN
    kernel rows, as in neural-tangents). Checked by class, without importing JAX."""
    return any(c.__name__ == "Tracer" and c.__module__.startswith("jax")
               for c in type(x).__mro__)


def _to_host(x: Any) -> Any:
    if hasattr(x, "get"):  # cupy
        return x.get()
    return np.asarray(x)


def check_inputs(ns: Namespace, x1: Any, x2: Optional[Any], dtype: np.dtype) -> tuple[Any, Optional[Any]]:
    """Validate ``x1`` (and ``x2``): 2-d, real, finite, same feature count; cast to ``dtype``."""
    x1 = _check_one(ns, x1, "x1", dtype)
    if x2 is None:
        return x1, None
    x2 = _check_one(ns, x2, "x2", dtype)
    if x1.shape[1] != x2.shape[1]:
        raise ValueError(f"x1 has {x1.shape[1]} features but x2 has {x2.shape[1]}; "
                         "both must have the same number of columns")
    return x1, x2

