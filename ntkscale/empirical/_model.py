"""A model ``apply_fn(params, x)`` as the empirical-NTK code sees it (JAX, imported lazily).

The parameters may be any pytree (plain dicts and tuples, Flax ``variables["params"]``,
Equinox-style modules). Its *floating-point array* leaves are the trainable parameters
that the NTK differentiates; other array leaves (integer counters, masks) are passed along
unchanged, and non-array leaves (Python numbers, functions, strings) are treated as static.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..kernels.backend import jax_x64

__all__ = ["jax_modules", "x64", "Static", "split_params", "params_sha256", "function_sha256",
           "output_dim"]


def jax_modules() -> tuple[Any, Any]:
    """``(jax, jax.numpy)``, or an ImportError with the install command."""
    try:
        import jax
        import jax.numpy as jnp
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError("empirical NTKs need JAX: pip install 'ntkscale[jax]'") from e
    return jax, jnp


x64 = jax_x64  # the kernels' x64 context (float64 blocks enable JAX x64)


class _ByIdentity:
    """A static leaf that cannot be hashed (a list, a dict): compared by identity."""

    def __init__(self, obj: Any) -> None:
        self.obj = obj

    def __hash__(self) -> int:
        return id(self.obj)

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, _ByIdentity) and other.obj is self.obj


def _hashable(obj: Any) -> Any:
    try:
        hash(obj)
        return obj
    except TypeError:
        return _ByIdentity(obj)


def _unwrap(obj: Any) -> Any:
    return obj.obj if isinstance(obj, _ByIdentity) else obj


def _is_array(leaf: Any) -> bool:
    return hasattr(leaf, "shape") and hasattr(leaf, "dtype")


def _is_float_array(leaf: Any) -> bool:
    return _is_array(leaf) and np.issubdtype(np.dtype(leaf.dtype), np.inexact)


@dataclass(frozen=True)
class Static:
    """The hashable part of a model: its function, tree structure and static leaves.

    ``layout[i]`` is ``"d"`` (differentiated leaf), ``"a"`` (other array leaf, passed as
    data) or ``("s", value)`` (a static non-array leaf). Used as a static argument of the
    jitted kernels, so one compilation serves every call with the same model function.
    """

    apply_fn: Callable[..., Any]
    treedef: Any
    layout: tuple

    def params(self, diff: list, aux: list) -> Any:
        """The parameter pytree from the differentiated and auxiliary leaves."""
        jax, _ = jax_modules()
        d, a = iter(diff), iter(aux)
        leaves = [next(d) if s == "d" else next(a) if s == "a" else _unwrap(s[1]) for s in self.layout]
        return jax.tree_util.tree_unflatten(self.treedef, leaves)

    def outputs(self, diff: list, aux: list, x: Any) -> Any:
        """Model outputs as (n, k): a (n,) output is one column."""
        out = self.apply_fn(self.params(diff, aux), x)
        return out[:, None] if out.ndim == 1 else out

    def row(self, diff: list, aux: list, xi: Any) -> Any:
        """Outputs of one input row, shape (k,) (rows are evaluated independently)."""
        return self.outputs(diff, aux, xi[None])[0]


def split_params(apply_fn: Callable[..., Any], params: Any) -> tuple[Static, list, list]:
    """``(static, diff, aux)``: the model's static part, its floating leaves, its other arrays.

    Raises
    ------
    ValueError
        If ``params`` has no floating-point array leaf (nothing to differentiate).
    """
    jax, _ = jax_modules()
    leaves, treedef = jax.tree_util.tree_flatten(params)
    layout, diff, aux = [], [], []
    for leaf in leaves:
        if _is_float_array(leaf):
            layout.append("d")
            diff.append(leaf)
        elif _is_array(leaf):
            layout.append("a")
            aux.append(leaf)
        else:
            layout.append(("s", _hashable(leaf)))
    if not diff:
        raise ValueError("params has no floating-point array leaves: nothing to differentiate "
                         "(pass the trainable parameters, e.g. Flax variables['params'])")
    return Static(apply_fn, treedef, tuple(layout)), diff, aux


def params_sha256(params: Any) -> str:
    """SHA-256 of the parameters: every array leaf's path, dtype, shape and bytes.

    Static (non-array) leaves enter by their path only (their repr may hold memory
    addresses); two parameter sets with equal arrays hash equal in any process.
    """
    jax, _ = jax_modules()
    h = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        h.update(jax.tree_util.keystr(path).encode())
        if _is_array(leaf):
            a = np.ascontiguousarray(np.asarray(leaf))
            h.update(f"|{a.dtype.str}|{a.shape}|".encode())
            h.update(a.tobytes())
        h.update(b";")
    return h.hexdigest()


_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def _stable_repr(obj: Any) -> str:
    return _ADDRESS.sub("", repr(obj))


def function_sha256(fn: Any) -> str:
    """Best-effort SHA-256 of a function: its qualified name, bytecode, constants, names and
    the values it closes over (by ``repr``, memory addresses removed).

    Two closures of one factory over different values (``make_apply_fn`` of a ReLU and of an
    Erf network) differ; the same function in another process hashes equal unless a value it
    closes over has a process-dependent ``repr``. Objects without ``__code__`` (callable
    instances, ``functools.partial``) enter by their type and ``repr``.
    """
    parts = [getattr(fn, "__module__", "") or "", getattr(fn, "__qualname__", type(fn).__qualname__)]
    code = getattr(fn, "__code__", None)
    if code is None:
        parts.append(_stable_repr(fn))
    else:
        parts += [code.co_code.hex(), _stable_repr(code.co_consts), repr(code.co_names)]
        for cell in getattr(fn, "__closure__", None) or ():
            try:
                parts.append(_stable_repr(cell.cell_contents))
            except ValueError:  # an empty cell
                parts.append("<empty>")
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


def param_count(diff: list) -> int:
    """Number of differentiated scalars."""
    return int(sum(int(np.prod(leaf.shape)) for leaf in diff))


def output_dim(static: Static, diff: list, aux: list, x: Any) -> int:
    """Outputs per input row ``k``, checking the output shape (n,) or (n, k) abstractly.

    Raises
    ------
    ValueError
        If the model's output is not (n,) or (n, k) for an input of n rows, or not floating.
    """
    jax, _ = jax_modules()
    n = x.shape[0]
    try:
        out = jax.eval_shape(lambda d, a, xx: static.apply_fn(static.params(d, a), xx), diff, aux,
                             jax.ShapeDtypeStruct(x.shape, x.dtype))
    except Exception as e:  # noqa: BLE001 - a model that cannot take these inputs
        raise ValueError(f"apply_fn(params, x) failed on inputs of shape {tuple(x.shape)}: "
                         f"{type(e).__name__}: {e}") from e
    shape = getattr(out, "shape", None)
    if shape is None or len(shape) not in (1, 2) or shape[0] != n:
        raise ValueError(f"apply_fn(params, x) must return an array of shape ({n},) or ({n}, k) "
                         f"for x of {n} rows, got "
                         f"{'a ' + type(out).__name__ if shape is None else tuple(shape)}; "
                         "reshape or select the outputs in apply_fn")
    if not np.issubdtype(np.dtype(out.dtype), np.inexact):
        raise ValueError(f"apply_fn(params, x) returns dtype {out.dtype}; the NTK needs "
                         "floating-point outputs")
    return 1 if len(shape) == 1 else int(shape[1])
