"""``EmpiricalNTK``: a model's finite-width NTK as a kernel the whole pipeline takes.

``build_gram(EmpiricalNTK(apply_fn, params), X, "gram.zarr")`` writes the empirical Gram
tile by tile into the usual Zarr store; :class:`~ntkscale.operator.StoredGram`, the
solvers, the estimators and the spectral tools then apply unchanged. The object pickles
(cloudpickle) to Dask worker processes with its function and a host copy of its
parameters; each worker process compiles the model once per tile shape and reuses it for
every tile of the same kernel (a module-level cache keyed by the spec).

Store fingerprint (``spec()``): the name, the function's qualified name and a best-effort
hash of its code and closure (:func:`~._model.function_sha256`), the method, the input
shape and the SHA-256 of the parameters (every array leaf's path, dtype, shape and bytes),
so a store built from other parameters is refused. A function's behaviour cannot be hashed
exactly: one that reads a global that changed between runs looks the same to a store, and
one that closes over a value whose ``repr`` depends on the process (a set of strings) looks
different (resume then asks for ``overwrite=True``).
"""

from __future__ import annotations

import json
import threading
import uuid
from collections import OrderedDict
from typing import Any, Callable, Optional, Sequence

import numpy as np

from ..kernels.registry import layer_type
from ..kernels.tile_kernel import TileKernel
from . import memory as mem
from . import ntk as _ntk
from ._model import function_sha256, jax_modules, output_dim, param_count, params_sha256, split_params, x64

__all__ = ["EmpiricalNTK"]

_ENGINES: "OrderedDict[tuple, _ntk.Prepared]" = OrderedDict()  # per worker process
_ENGINES_MAX = 4
_LOCK = threading.Lock()


def _host(leaf: Any) -> Any:
    return np.asarray(leaf) if hasattr(leaf, "shape") and hasattr(leaf, "dtype") else leaf


@layer_type("EmpiricalNTK")
class EmpiricalNTK(TileKernel):
    """The empirical NTK of ``apply_fn`` at ``params``, computed tile by tile.

    Parameters
    ----------
    apply_fn : callable
        ``apply_fn(params, x) -> (n,) or (n, k)`` (see :func:`ntkscale.empirical.empirical_ntk`).
        Must be picklable by cloudpickle for a cluster (lambdas and closures are).
    params : pytree
        Parameters (floating leaves are differentiated). A host (NumPy) copy is kept.
    method : {'auto', 'jacobian', 'ntvp'}
    trace : True
        A store holds one (n, n) kernel: the mean over the model's ``k`` outputs
        (neural-tangents' convention). Per-output kernels: ``empirical_ntk(..., trace=...)``.
    name : str, optional
        Recorded in the spec (default: the function's name).
    input_shape : tuple of int, optional
        Shape of one input as the model takes it; stored rows (n, d) are reshaped to
        ``(n, *input_shape)`` (e.g. ``(28, 28, 1)`` images or ``(seq_len,)`` tokens; the
        store keeps floats, so a token model casts them back, ``x.astype(int)``).
    batch_size : int, optional
        Rows per Jacobian block inside a tile (default from ``memory``).
    memory : int
        Byte budget of Jacobian blocks per tile (default 1 GiB): any tile size is safe,
        bigger tiles only take more blocks (:mod:`ntkscale.empirical.memory`).

    Notes
    -----
    Kinds: ``'ntk'`` is the empirical NTK (mean over outputs). ``'nngp'`` is defined as the
    one-draw output covariance ``(1/k) f(x1) . f(x2)``, a single-sample Monte-Carlo estimate
    of the NNGP at initialization (neural-tangents' ``monte_carlo_kernel_fn`` with one
    sample), not a converged NNGP.

    The kernel is computed in the build's compute dtype (float64 by default, under
    ``jax.enable_x64``): parameters are cast to it.
    """

    def __init__(self, apply_fn: Callable[[Any, Any], Any], params: Any, *, method: str = "auto",
                 trace: Any = True, name: Optional[str] = None,
                 input_shape: Optional[Sequence[int]] = None, batch_size: Optional[int] = None,
                 memory: int = mem.DEFAULT_MEMORY) -> None:
        jax, _ = jax_modules()
        if not callable(apply_fn):
            raise TypeError(f"apply_fn must be a function apply_fn(params, x), got "
                            f"{type(apply_fn).__name__}")
        self.method = mem.check_method(method)
        if trace is not True:
            raise ValueError(f"EmpiricalNTK stores one (n, n) kernel, the mean over outputs: trace "
                             f"must be True, got {trace!r}; for per-output kernels use "
                             "ntkscale.empirical.empirical_ntk(..., trace='diagonal' or False)")
        self.trace = True
        self.memory = mem.check_memory(memory)
        self.batch_size = mem.check_batch(batch_size)
        if input_shape is not None:
            shape = tuple(input_shape)
            if not shape or not all(isinstance(s, (int, np.integer)) and s > 0 for s in shape):
                raise ValueError(f"input_shape must be a tuple of positive ints, got {input_shape!r}")
            input_shape = tuple(int(s) for s in shape)
        self.input_shape = input_shape
        self._apply_fn = apply_fn
        self.params = jax.tree_util.tree_map(_host, params)
        _, diff, _ = split_params(apply_fn, self.params)  # no floating leaf: error now
        _ntk._check_params(diff)
        self.n_params = param_count(diff)
        self.params_sha256 = params_sha256(self.params)
        qualname = getattr(apply_fn, "__qualname__", type(apply_fn).__name__)
        self.fn = f"{getattr(apply_fn, '__module__', '?')}.{qualname}"
        self.fn_sha256 = function_sha256(apply_fn)
        # one token per constructed kernel, shared by its pickled copies: each worker process
        # prepares (and compiles) the model once for all the tiles of one kernel
        self._token = uuid.uuid4().hex
        self.name = str(name) if name is not None else getattr(apply_fn, "__name__", "apply_fn")

    @property
    def apply_fn(self) -> Callable[[Any, Any], Any]:
        """The model's own ``apply_fn(params, x)`` (``kernel_fn`` gives the empirical NTK)."""
        return self._apply_fn

    # -- description --------------------------------------------------------------
    def spec(self) -> dict:
        return {"layer": "EmpiricalNTK", "name": self.name, "fn": self.fn, "fn_sha256": self.fn_sha256,
                "method": self.method,
                "trace": "mean", "input_shape": None if self.input_shape is None else list(self.input_shape),
                "params_sha256": self.params_sha256}

    def _key(self) -> str:
        return json.dumps(self.spec(), sort_keys=True)

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, EmpiricalNTK) and other._key() == self._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return (f"EmpiricalNTK({self.name!r}, method={self.method!r}, params={self.n_params}, "
                f"sha256={self.params_sha256[:12]})")

    # -- computation ----------------------------------------------------------------
    def _rows(self, x: Any, dtype: np.dtype) -> Any:
        x = _ntk.as_rows(x, dtype)
        if self.input_shape is None:
            return x
        if x.ndim != 2 or x.shape[1] != int(np.prod(self.input_shape)):
            raise ValueError(f"rows of shape {tuple(x.shape[1:])} cannot be reshaped to input_shape "
                             f"{self.input_shape} ({int(np.prod(self.input_shape))} values per row)")
        return x.reshape((x.shape[0],) + self.input_shape)

    def check_rows(self, x: Any) -> None:
        """Check that the model takes rows like ``x`` (reshape, output (n,) or (n, k)),
        abstractly (``jax.eval_shape``): a build fails here, before it creates its store."""
        with x64(np.float64):
            a = self._rows(x, np.float64)
            static, diff, aux = split_params(self._apply_fn, self.params)
            output_dim(static, diff, aux, a)

    def _engine(self, dtype: np.dtype, x: Any) -> _ntk.Prepared:
        """The prepared model in ``dtype`` (cached per process by spec, dtype, row shape)."""
        _, jnp = jax_modules()
        key = (self._token, np.dtype(dtype).name, tuple(x.shape[1:]))
        with _LOCK:
            model = _ENGINES.get(key)
            if model is not None:
                _ENGINES.move_to_end(key)
                return model
        static, diff, aux = split_params(self._apply_fn, self.params)
        diff = [jnp.asarray(leaf, dtype=dtype) for leaf in diff]
        aux = [jnp.asarray(leaf) for leaf in aux]
        k = output_dim(static, diff, aux, x)
        model = _ntk.Prepared(static, diff, aux, k, param_count(diff), np.dtype(dtype).itemsize)
        with _LOCK:
            _ENGINES[key] = model
            while len(_ENGINES) > _ENGINES_MAX:
                _ENGINES.popitem(last=False)
        return model

    def tile(self, x1: Any, x2: Optional[Any], kinds: tuple[str, ...], dtype: np.dtype) -> dict[str, Any]:
        with x64(dtype):
            a = self._rows(x1, dtype)
            b = None if x2 is None else self._rows(x2, dtype)
            model = self._engine(dtype, a)
            n = max(a.shape[0], 0 if b is None else b.shape[0])
            m, bs = _ntk.resolve(model, self.method, n, self.memory, self.batch_size)
            out = {}
            if "ntk" in kinds:
                out["ntk"] = _ntk.gram(model, a, b, "trace", m, bs, self.memory)
            if "nngp" in kinds:
                f1 = _ntk.outputs(model, a, bs)
                f2 = f1 if b is None else _ntk.outputs(model, b, bs)
                out["nngp"] = (f1 @ f2.T) / model.k
            return out

    def diag(self, x: Any, kinds: tuple[str, ...], dtype: np.dtype) -> dict[str, Any]:
        with x64(dtype):
            a = self._rows(x, dtype)
            model = self._engine(dtype, a)
            m, bs = _ntk.resolve(model, self.method, a.shape[0], self.memory, self.batch_size)
            out = {}
            if "ntk" in kinds:
                out["ntk"] = _ntk.diagonal(model, a, m, bs).mean(-1)
            if "nngp" in kinds:
                out["nngp"] = (_ntk.outputs(model, a, bs) ** 2).mean(-1)
            return out
