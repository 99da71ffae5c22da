"""Empirical (finite-width) NTKs of any JAX model ``apply_fn(params, x)``.

Two methods, same kernel to rounding (tests/empirical/test_methods.py):

``jacobian``
    Row Jacobians ``J(x) = d f(x) / d theta`` (``jax.vmap`` of ``jax.jacrev`` over rows),
    contracted leaf by leaf of the parameter pytree, ``sum_leaves einsum(J1, J2)``: the
    flattened Jacobians are never concatenated into one (n, k, P) array.
``ntvp``
    NTK-vector products, ``Theta v = J1 (J2^T v)``: for each output ``o`` and row ``j`` of
    ``x2`` a VJP gives the ``P``-vector ``J2[j, o]^T`` and a JVP through the ``x1`` batch
    gives ``J1 J2[j, o]^T``, a column of the kernel. The Jacobian of a batch is never
    held; memory is one ``P``-vector per row of the ``x2`` batch.

Conventions (neural-tangents' ``empirical_ntk_fn``): with ``k`` outputs per row,

* ``trace=True``: shape (n1, n2), ``(1/k) sum_o <df_o(x1)/dtheta, df_o(x2)/dtheta>``: the
  *mean* over outputs (neural-tangents' ``trace_axes=(-1,)`` averages over logits, it
  does not sum), which tends to the infinite-width NTK of one output;
* ``trace="diagonal"``: shape (n1, n2, k), the per-output kernels ``Theta_oo``
  (neural-tangents' ``trace_axes=(), diagonal_axes=(-1,)``);
* ``trace=False``: shape (n1, n2, k, k), ``Theta[i, j, o, o'] = <df_o(x1_i), df_o'(x2_j)>``
  (neural-tangents' ``trace_axes=()``).

A model with outputs of shape (n,) has ``k = 1``. Rows are evaluated one at a time for the
Jacobians (``apply_fn(params, x[i:i+1])``), so the model must treat rows independently (no
batch statistics). Precision follows the parameters and inputs (enable JAX x64 for
float64); contractions run at ``Precision.HIGHEST`` (no TF32 on GPUs).

References
----------
Jacot, Gabriel & Hongler, "Neural Tangent Kernel", NeurIPS 2018 (definition).
Novak, Sohl-Dickstein & Schoenholz, "Fast Finite Width Neural Tangent Kernel", ICML 2022
(the Jacobian-contraction and NTK-vector-product methods, their costs);
neural-tangents ``_src/empirical.py`` (``empirical_ntk_fn``, ``trace_axes`` conventions).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np

from . import memory as mem
from ._jitted import jitted
from ._model import Static, jax_modules, output_dim, param_count, split_params

__all__ = ["empirical_ntk", "empirical_ntk_diag", "ntk_vector_product", "Prepared", "prepare"]

MODES = {True: "trace", "diagonal": "diagonal", False: "full"}


def _mode(trace: Any) -> str:
    for key, mode in MODES.items():
        if trace is key or (isinstance(trace, str) and trace == key):
            return mode
    raise ValueError(f"trace must be True (mean over outputs), 'diagonal' (per output) or False "
                     f"(all output pairs), got {trace!r}")


# ----------------------------------------------------------------------------- checks
def _check_x(x: Any, name: str) -> Any:
    jax, jnp = jax_modules()
    x = x if hasattr(x, "shape") and hasattr(x, "dtype") else np.asarray(x)
    if x.ndim < 1 or x.shape[0] < 1:
        raise ValueError(f"{name} must be an array of input rows, shape (n, ...) with n >= 1, "
                         f"got shape {tuple(x.shape)}")
    kind = np.dtype(x.dtype).kind
    if kind not in "fiub":
        raise TypeError(f"{name} has unsupported dtype {x.dtype}; pass real numbers or integer "
                        "tokens")
    if kind == "f" and not isinstance(x, jax.core.Tracer):
        ok = np.isfinite(np.asarray(x).reshape(x.shape[0], -1)).all(axis=1)
        if not ok.all():
            bad = np.flatnonzero(~ok)
            shown = ", ".join(str(i) for i in bad[:10]) + (" ..." if bad.size > 10 else "")
            raise ValueError(f"{name} has NaN or Inf in {bad.size} row(s): {shown}; drop or "
                             "impute those rows first")
    return as_rows(x)


def is_traced(x: Any) -> bool:
    jax, _ = jax_modules()
    return isinstance(x, jax.core.Tracer)


def as_rows(x: Any, dtype: Any = None) -> Any:
    """Inputs as a host NumPy array (JAX's canonical dtype), or as they are when traced.

    Blocks are sliced, padded and assembled on the host: eager JAX ops would compile one
    small program per shape, which costs more than the kernel for small tiles.
    """
    jax, jnp = jax_modules()
    if is_traced(x):
        return x if dtype is None else x.astype(dtype)
    x = np.asarray(x)
    dt = jax.dtypes.canonicalize_dtype(x.dtype if dtype is None else dtype)
    return x if x.dtype == dt else x.astype(dt)


def _xp(x: Any) -> Any:
    return jax_modules()[1] if is_traced(x) else np


def _check_params(diff: list) -> None:
    jax, _ = jax_modules()
    for i, leaf in enumerate(diff):
        if isinstance(leaf, jax.core.Tracer):
            continue
        if not np.isfinite(np.asarray(leaf)).all():
            raise ValueError(f"params has NaN or Inf (floating leaf {i} of shape "
                             f"{tuple(leaf.shape)}); the NTK of such a model is undefined")


class Prepared:
    """A checked model and its sizes: what every method needs before any heavy work."""

    def __init__(self, static: Static, diff: list, aux: list, k: int, n_params: int,
                 itemsize: int) -> None:
        self.static, self.diff, self.aux = static, diff, aux
        self.k, self.n_params, self.itemsize = k, n_params, itemsize

    @property
    def bytes_per_row(self) -> int:
        """Bytes of one row's Jacobian (``k x P x itemsize``)."""
        return mem.jacobian_bytes_per_row(self.n_params, self.k, self.itemsize)


def prepare(apply_fn: Callable[..., Any], params: Any, x1: Any, x2: Any = None,
            check: bool = True) -> tuple[Prepared, Any, Any]:
    """Split and check a model and its inputs; ``(model, x1, x2)``, inputs as :func:`as_rows`.

    Raises
    ------
    ValueError
        NaN/Inf in inputs or parameters, inputs of different trailing shapes, no floating
        parameter, an output not of shape (n,) or (n, k).
    """
    _, jnp = jax_modules()
    if not callable(apply_fn):
        raise TypeError(f"apply_fn must be a function apply_fn(params, x), got "
                        f"{type(apply_fn).__name__}")
    static, diff, aux = split_params(apply_fn, params)
    if check:
        x1 = _check_x(x1, "x1")
        x2 = None if x2 is None else _check_x(x2, "x2")
        _check_params(diff)
    else:
        x1 = as_rows(x1)
        x2 = None if x2 is None else as_rows(x2)
    if x2 is not None and tuple(x1.shape[1:]) != tuple(x2.shape[1:]):
        raise ValueError(f"x1 rows have shape {tuple(x1.shape[1:])} but x2 rows "
                         f"{tuple(x2.shape[1:])}; both must be inputs of the same model")
    k = output_dim(static, diff, aux, x1)
    if x2 is not None:
        output_dim(static, diff, aux, x2)
    itemsize = np.dtype(jnp.result_type(*diff)).itemsize
    return Prepared(static, diff, aux, k, param_count(diff), itemsize), x1, x2


# ------------------------------------------------------------------------ computation
def _pad(x: Any, size: int) -> Any:
    """``x`` with rows appended (copies of row 0) up to ``size``: one compiled block shape."""
    xp = _xp(x)
    extra = size - x.shape[0]
    return x if extra == 0 else xp.concatenate([x, xp.repeat(x[:1], extra, axis=0)])


def _host(x: Any, like: Any) -> Any:
    """A block result on the host when the inputs are (NumPy), else as it is (traced)."""
    return x if is_traced(like) else np.asarray(x)


def _swap(block: Any, mode: str) -> Any:
    """The mirrored block of a symmetric kernel: swap rows/columns (and output pairs)."""
    return block.transpose((1, 0, 3, 2) if mode == "full" else (1, 0, 2) if mode == "diagonal"
                           else (1, 0))


def gram(model: Prepared, x1: Any, x2: Optional[Any], mode: str, method: str, batch: int,
         memory: int = mem.DEFAULT_MEMORY) -> Any:
    """The kernel of checked inputs in row blocks of ``batch`` (``x2 is None``: symmetric,
    computing only blocks on and above the diagonal). NumPy in, NumPy out; traced in,
    traced out."""
    xp = _xp(x1)
    fns = jitted()
    s, d, a = model.static, model.diff, model.aux
    sym = x2 is None
    xs2 = x1 if sym else x2
    n1, n2 = x1.shape[0], xs2.shape[0]
    b1, b2 = min(batch, n1), min(batch, n2)
    r1 = [(i, min(i + b1, n1)) for i in range(0, n1, b1)]
    r2 = r1 if sym else [(j, min(j + b2, n2)) for j in range(0, n2, b2)]
    # keep the x2 Jacobians between row blocks when all of them fit the budget
    keep = method == "jacobian" and len(r1) > 1 and n2 * model.bytes_per_row <= memory // 2
    cache: dict[int, list] = {}
    blocks: list[list[Any]] = []
    for bi, (s1, e1) in enumerate(r1):
        xb1 = _pad(x1[s1:e1], b1)
        J1 = fns["jac"](s, d, a, xb1) if method == "jacobian" else None
        row = []
        for bj, (s2, e2) in enumerate(r2):
            if sym and bj < bi:
                row.append(_swap(blocks[bj][bi], mode))
                continue
            xb2 = _pad(xs2[s2:e2], b2)
            if method == "jacobian":
                if sym and bi == bj:
                    J2 = J1
                elif bj in cache:
                    J2 = cache[bj]
                else:
                    J2 = fns["jac"](s, d, a, xb2)
                    if keep:
                        cache[bj] = J2
                blk = fns["contract"](J1, J2, mode)
            else:
                blk = fns["ntvp"](s, d, a, xb1, xb2, mode)
            row.append(_host(blk, x1)[: e1 - s1, : e2 - s2])
        blocks.append(row)
    return xp.concatenate([xp.concatenate(row, axis=1) for row in blocks], axis=0)


def diagonal(model: Prepared, x: Any, method: str, batch: int) -> Any:
    """Per-output diagonal ``Theta_oo(x_i, x_i)``, shape (n, k), in row blocks."""
    fn = jitted()["diag_" + method]
    n = x.shape[0]
    b = min(batch, n)
    out = [_host(fn(model.static, model.diff, model.aux, _pad(x[i:i + b], b)), x)[: min(b, n - i)]
           for i in range(0, n, b)]
    return _xp(x).concatenate(out, axis=0)


def outputs(model: Prepared, x: Any, batch: int) -> Any:
    """Model outputs as (n, k), in row blocks."""
    fn = jitted()["outputs"]
    n = x.shape[0]
    b = min(batch, n)
    return _xp(x).concatenate([_host(fn(model.static, model.diff, model.aux, _pad(x[i:i + b], b)), x)
                               [: min(b, n - i)] for i in range(0, n, b)], axis=0)


def resolve(model: Prepared, method: str, n_rows: int, memory: int,
            batch_size: Optional[int]) -> tuple[str, int]:
    """``(method, rows per batch)`` from the memory rules of :mod:`.memory`."""
    m = mem.choose_method(method, model.n_params, model.k, model.itemsize, memory)
    b = mem.choose_batch(m, model.n_params, model.k, model.itemsize, n_rows, memory, batch_size)
    return m, b


# ----------------------------------------------------------------------------- public
def _jnp_out(a: Any) -> Any:
    return jax_modules()[1].asarray(a)


def empirical_ntk(apply_fn: Callable[[Any, Any], Any], params: Any, x1: Any, x2: Any = None, *,
                  method: str = "auto", trace: Any = True, batch_size: Optional[int] = None,
                  memory: int = mem.DEFAULT_MEMORY) -> Any:
    """Empirical NTK ``Theta(x1, x2)`` of the model ``apply_fn(params, x)`` at ``params``.

    Parameters
    ----------
    apply_fn : callable
        ``apply_fn(params, x) -> outputs`` of shape (n,) or (n, k): plain JAX, a Flax
        ``lambda p, x: model.apply({"params": p}, x)``, an Equinox-style callable pytree
        (``lambda m, x: jax.vmap(m)(x)``), or the combinator language's ``apply_fn``.
    params : pytree
        Parameters; every floating-point array leaf is differentiated (pass only the
        trainable ones), other leaves are passed through unchanged.
    x1 : array, shape (n1, ...)
        Input rows (any trailing shape the model takes; integer tokens are fine).
    x2 : array, shape (n2, ...), optional
        Second inputs; None computes the symmetric ``Theta(x1, x1)`` (upper blocks only).
    method : {'auto', 'jacobian', 'ntvp'}
        ``jacobian``: contract row Jacobians leaf by leaf; ``ntvp``: NTK-vector products
        (never holds a Jacobian); ``auto``: ``jacobian`` if 8 row Jacobians per side fit
        ``memory``, else ``ntvp`` (:mod:`ntkscale.empirical.memory`).
    trace : True, 'diagonal' or False
        Output convention (module notes): True gives (n1, n2), the **mean** over the ``k``
        outputs (neural-tangents' convention: averaged over logits, not summed);
        ``'diagonal'`` gives (n1, n2, k); False gives (n1, n2, k, k).
    batch_size : int, optional
        Rows per block on each side (default from ``memory``).
    memory : int
        Byte budget for Jacobian blocks / tangents (default 1 GiB).

    Returns
    -------
    jax.Array
        shape (n1, n2), (n1, n2, k) or (n1, n2, k, k); dtype of the parameters.

    Raises
    ------
    ValueError
        Before any work: NaN/Inf in inputs or parameters, mismatched input shapes, an
        output not of shape (n,) or (n, k), a bad ``method``/``trace``/``batch_size``.
    """
    mode = _mode(trace)
    mem.check_method(method)
    memory = mem.check_memory(memory)
    batch_size = mem.check_batch(batch_size)
    model, x1, x2 = prepare(apply_fn, params, x1, x2)
    n = max(x1.shape[0], 0 if x2 is None else x2.shape[0])
    m, b = resolve(model, method, n, memory, batch_size)
    return _jnp_out(gram(model, x1, x2, mode, m, b, memory))


def empirical_ntk_diag(apply_fn: Callable[[Any, Any], Any], params: Any, x: Any, *,
                       method: str = "auto", trace: Any = True, batch_size: Optional[int] = None,
                       memory: int = mem.DEFAULT_MEMORY) -> Any:
    """Diagonal ``Theta(x_i, x_i)``: shape (n,) (``trace=True``, mean over outputs) or (n, k)
    (``trace='diagonal'``); O(n) rather than O(n^2) work. See :func:`empirical_ntk`."""
    mode = _mode(trace)
    if mode == "full":
        raise ValueError("empirical_ntk_diag takes trace=True or 'diagonal'")
    mem.check_method(method)
    memory = mem.check_memory(memory)
    batch_size = mem.check_batch(batch_size)
    model, x, _ = prepare(apply_fn, params, x)
    m, b = resolve(model, method, x.shape[0], memory, batch_size)
    d = diagonal(model, x, m, b)
    return _jnp_out(d.mean(-1) if mode == "trace" else d)


def ntk_vector_product(apply_fn: Callable[[Any, Any], Any], params: Any, x1: Any, x2: Any,
                       v: Any) -> Any:
    """``Theta(x1, x2) v = J(x1) (J(x2)^T v)`` without forming the kernel or a Jacobian.

    This is the full (not output-averaged) operator that drives gradient descent in
    function space, ``f <- f - (lr/N) Theta (f - y)``.

    Parameters
    ----------
    v : array, shape (n2, k) (or (n2,) for a model with outputs of shape (n,))

    Returns
    -------
    jax.Array, shape (n1, k) (or (n1,)): ``sum_{j, o'} Theta[i, j, o, o'] v[j, o']``.
    """
    _, jnp = jax_modules()
    model, x1, x2 = prepare(apply_fn, params, x1, x2)
    v = jnp.asarray(v)
    vec = v.ndim == 1
    v2 = v[:, None] if vec else v
    if v2.shape != (x2.shape[0], model.k):
        raise ValueError(f"v must have shape ({x2.shape[0]}, {model.k})"
                         f"{f' or ({x2.shape[0]},)' if model.k == 1 else ''}, got {tuple(v.shape)}")
    out = jitted()["vp"](model.static, model.diff, model.aux, x1, x2,
                       v2.astype(jnp.result_type(*model.diff)))
    return out[:, 0] if vec else out
