"""Kernels given by a direct tile computation rather than by a layer recursion.

A :class:`TileKernel` is a :class:`~ntkscale.kernels.base.Layer` that is not composed
with other layers: it computes the Gram entries of two row blocks itself (for example the
empirical, finite-width NTK of a trained JAX model, :class:`ntkscale.empirical.EmpiricalNTK`).
:func:`~ntkscale.kernels.diag_stats` and :func:`~ntkscale.kernels.kernel_tile` hand such a
kernel to its :meth:`TileKernel.diag_stats` / :meth:`TileKernel.kernel_tile`, so the Gram
build, the stored operator, the solvers and the spectral tools take it wherever they take
an architecture.

A subclass implements two methods on host or device arrays of its own choice:

* ``diag(x, kinds, dtype) -> {kind: (n,)}``, the exact diagonal ``K(x_i, x_i)``;
* ``tile(x1, x2, kinds, dtype) -> {kind: (n1, n2)}`` (``x2 is None``: the symmetric
  block ``K(x1, x1)``);

and :meth:`Layer.spec` (the store fingerprint: a store refuses a kernel of another spec).
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from .backend import Namespace, namespace_of
from .base import Layer, UnsupportedArchitectureError
from .state import DiagStats
from .validate import check_inputs, resolve_dtype

__all__ = ["TileKernel"]


class TileKernel(Layer):
    """Base class: a kernel computed tile by tile by :meth:`tile`, with diagonal :meth:`diag`.

    Inputs arrive as rows of shape (n, d) (the store's layout); outputs are returned in the
    array library of the inputs (NumPy in, NumPy out; JAX tracers in, JAX arrays out, so
    the ``jax`` devices of :mod:`ntkscale.tiling.device` may jit the tile).
    """

    # -- what subclasses provide ---------------------------------------------
    def diag(self, x: Any, kinds: tuple[str, ...], dtype: np.dtype) -> dict[str, Any]:  # pragma: no cover
        """``{kind: K(x_i, x_i)}`` for each kind, shape (n,)."""
        raise NotImplementedError

    def tile(self, x1: Any, x2: Optional[Any], kinds: tuple[str, ...],
             dtype: np.dtype) -> dict[str, Any]:  # pragma: no cover
        """``{kind: K(x1, x2)}`` for each kind, shape (n1, n2); ``x2 is None``: ``K(x1, x1)``."""
        raise NotImplementedError

    def check_rows(self, x: Any) -> None:
        """Raise a ValueError if rows shaped like ``x`` (n, d) cannot be taken (called by the
        Gram build on the host before it creates a store; default: any rows)."""

    # -- the Layer contract ----------------------------------------------------
    def kernel(self, ns: Namespace, k: Any) -> Any:
        raise UnsupportedArchitectureError(
            f"{type(self).__name__} is a whole kernel, not a layer: it cannot be composed with "
            "serial/parallel; pass it on its own wherever an architecture is taken")

    def check_kernel(self) -> None:
        """A tile kernel always has its kernel (it computes it directly)."""

    @classmethod
    def from_spec(cls, args: dict) -> "Layer":
        raise UnsupportedArchitectureError(
            f"spec names a {cls.spec_name} kernel ({args.get('name')!r}), which cannot be rebuilt "
            "from JSON (it holds a function and its parameters); pass the kernel object instead")

    # -- entry points of kernels.api ------------------------------------------
    def diag_stats(self, x: Any, *, dtype: Any = None, validate: bool = True) -> DiagStats:
        """:class:`~ntkscale.kernels.state.DiagStats` of a row block (no activation variances)."""
        ns = namespace_of(x)
        dt = resolve_dtype(dtype)
        if validate:
            x, _ = check_inputs(ns, x, None, dt)
        d = _diag_of(self, ns, x, dt)
        cov0 = ns.sum(x * x, axis=1) / x.shape[1]
        return DiagStats(cov0=cov0, act_vars=None, nngp=d["nngp"], ntk=d["ntk"])

    def kernel_tile(self, x1: Any, x2: Optional[Any], stats1: Any, stats2: Any,
                    get: tuple[str, ...], *, dtype: Any = None, out_dtype: Any = None) -> dict[str, Any]:
        """One tile as :func:`~ntkscale.kernels.api.kernel_tile` returns it.

        The symmetric tile is symmetrized and its diagonal set from ``stats1``, so stored
        diagonals and tiles agree exactly (as for the layer kernels).
        """
        ns = namespace_of(x1, x2)
        dt = resolve_dtype(dtype)
        odt = dt if out_dtype is None else np.dtype(out_dtype)
        kinds = tuple(get)
        out = _from_host(ns, self.tile(_to_host(ns, x1), None if x2 is None else _to_host(ns, x2),
                                       kinds, dt))
        res = {}
        for kind in kinds:
            a = out[kind].astype(dt)
            if x2 is None:
                a = 0.5 * (a + a.T)
                idx = ns.arange(a.shape[0])
                dg = getattr(stats1, kind).astype(dt)
                a = a.at[idx, idx].set(dg) if ns.name == "jax" else _set(a, idx, dg)
            res[kind] = a.astype(odt)
        return res


def _set(a: Any, idx: Any, values: Any) -> Any:
    a[idx, idx] = values
    return a


def _diag_of(kern: TileKernel, ns: Namespace, x: Any, dt: np.dtype) -> dict[str, Any]:
    out = _from_host(ns, kern.diag(_to_host(ns, x), ("nngp", "ntk"), dt))
    return {k: v.astype(dt) for k, v in out.items()}


def _to_host(ns: Namespace, x: Any) -> Any:
    """CuPy blocks go to the host (a tile kernel computes with its own library); NumPy and
    JAX arrays are passed as they are."""
    return x.get() if ns.name == "cupy" else x


def _from_host(ns: Namespace, out: dict[str, Any]) -> dict[str, Any]:
    """Results in the inputs' library: NumPy for NumPy, JAX for JAX, CuPy for CuPy."""
    if ns.name == "jax":
        return {k: ns.asarray(v) for k, v in out.items()}
    if ns.name == "cupy":
        return {k: ns.asarray(np.asarray(v)) for k, v in out.items()}
    return {k: np.asarray(v) for k, v in out.items()}
