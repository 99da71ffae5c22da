"""Array-namespace dispatch for the kernel math (NumPy, CuPy, JAX).

The kernel recursions are written once against a tiny namespace ``xp`` that
offers the handful of functions they need. ``namespace_of`` picks it from the
arrays themselves, so a CuPy array stays on its GPU and a JAX array stays a
JAX array: no silent host copies.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np

__all__ = ["Namespace", "namespace_of", "is_numpy", "jax_x64"]


@dataclass(frozen=True)
class Namespace:
    """The functions the kernel math uses, bound to one array library."""

    name: str
    xp: Any  # the array module (numpy, cupy, jax.numpy)
    erf: Callable[[Any], Any]

    def __getattr__(self, item: str) -> Any:  # sqrt, arctan2, where, ...
        return getattr(self.xp, item)


def _numpy_ns() -> Namespace:
    from scipy.special import erf

    return Namespace("numpy", np, erf)


def _cupy_ns() -> Namespace:
    import cupy
    from cupyx.scipy.special import erf

    return Namespace("cupy", cupy, erf)


def _jax_ns() -> Namespace:
    import jax.numpy as jnp
    from jax.scipy.special import erf

    return Namespace("jax", jnp, erf)


def _library_of(x: Any) -> str:
    mod = type(x).__module__.split(".")[0]
    if isinstance(x, (np.ndarray, np.generic)):
        return "numpy"
    if mod == "cupy":
        return "cupy"
    if mod in ("jax", "jaxlib"):
        return "jax"
    raise TypeError(
        f"unsupported array type {type(x).__module__}.{type(x).__name__}; "
        "pass a numpy, cupy or jax array"
    )


def namespace_of(*arrays: Any) -> Namespace:
    """Return the namespace shared by ``arrays`` (``None`` entries are skipped).

    Raises
    ------
    TypeError
        If the arrays come from different libraries (for example a CuPy and a
        NumPy array): move them to one device first.
    """
    libs = {_library_of(a) for a in arrays if a is not None}
    if len(libs) > 1:
        raise TypeError(
            f"inputs mix array libraries {sorted(libs)}; move them to one device "
            "(e.g. cupy.asarray / jax.device_put) before calling"
        )
    lib = libs.pop() if libs else "numpy"
    return {"numpy": _numpy_ns, "cupy": _cupy_ns, "jax": _jax_ns}[lib]()


def is_numpy(ns: Namespace) -> bool:
    """True when ``ns`` is the NumPy namespace (the fused CPU path applies)."""
    return ns.name == "numpy"


@contextlib.contextmanager
def jax_x64(dtype: Any) -> Iterator[None]:
    """Enable JAX float64 for this block (and thread) when ``dtype`` is float64 and it is
    not on already: JAX keeps float64 arrays only with x64 enabled. Imports JAX only then."""
    if dtype is None or np.dtype(dtype) != np.float64:
        yield
        return
    import jax

    if jax.config.read("jax_enable_x64"):
        yield
        return
    if hasattr(jax, "enable_x64"):
        ctx = jax.enable_x64(True)
    else:  # pragma: no cover - JAX before 0.4.36
        from jax.experimental import enable_x64

        ctx = enable_x64()
    with ctx:
        yield
