"""``batch(kernel_fn, batch_size)``: neural-tangents' ``nt.batch``, a kernel computed in
blocks of rows (to bound memory) that equals the unbatched one.

``ntkscale.tiling`` is the place for Gram matrices at scale (tiles as tasks, stores, many
devices); this is the in-memory idiom a ported NT script uses, kept to a block loop over
``kernel_fn``: symmetric blocks are computed once (the lower triangle is the upper one
transposed) and diagonal blocks as ``kernel_fn(x_i, None)`` so the diagonal is exact.

References
----------
Novak et al. (2020), "Neural Tangents", ICLR; NT's ``_src/batching.py`` (the signature).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .backend import namespace_of

__all__ = ["batch"]

_MATRICES = ("nngp", "ntk")


def batch(kernel_fn: Callable[..., Any], batch_size: int = 0, device_count: int = -1,
          store_on_device: bool = True) -> Callable[..., Any]:
    """``kernel_fn`` evaluated in ``batch_size`` x ``batch_size`` blocks of rows.

    Parameters
    ----------
    kernel_fn : callable
        ``kernel_fn(x1, x2=None, get=None, **kwargs)``, e.g. ``serial(...)[2]``.
    batch_size : int
        Rows per block; ``0`` (NT's default) computes the kernel in one call. Unlike NT, the
        sample counts need not be multiples of it (the last block is smaller).
    device_count : int
        Accepted for NT compatibility; blocks run one after another on the inputs' device
        (``ntkscale.tiling`` distributes Gram matrices over many devices and workers).
    store_on_device : bool
        False returns NumPy arrays (host memory); True keeps the blocks' array type.

    Returns
    -------
    callable
        Same signature and results as ``kernel_fn`` (arrays (n1, n2), or the ``Kernel``
        namedtuple with ``cov1`` (n1,) and ``cov2`` (n2,) assembled from the blocks).
    """
    if not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool) or batch_size < 0:
        raise ValueError(f"batch: batch_size must be an int >= 0, got {batch_size!r}")
    if not isinstance(device_count, (int, np.integer)) or isinstance(device_count, bool):
        raise ValueError(f"batch: device_count must be an int, got {device_count!r}")

    def batched(x1: Any, x2: Any = None, get: Any = None, **kwargs: Any) -> Any:
        n1 = x1.shape[0]
        if batch_size == 0 or (n1 <= batch_size and (x2 is None or x2.shape[0] <= batch_size)):
            return _host(kernel_fn(x1, x2, get, **kwargs), store_on_device)
        rows1 = [slice(s, min(s + batch_size, n1)) for s in range(0, n1, batch_size)]
        rows2 = rows1 if x2 is None else \
            [slice(s, min(s + batch_size, x2.shape[0])) for s in range(0, x2.shape[0], batch_size)]
        blocks: dict[tuple[int, int], Any] = {}
        for i, r1 in enumerate(rows1):
            for j, r2 in enumerate(rows2):
                if x2 is None and j < i:
                    continue  # the transpose of block (j, i)
                other = None if x2 is None and i == j else (x1 if x2 is None else x2)[r2]
                blocks[i, j] = kernel_fn(x1[r1], other, get, **kwargs)

        def block(i: int, j: int, pick: Callable[[Any], Any]) -> Any:
            return pick(blocks[i, j]) if (i, j) in blocks else pick(blocks[j, i]).T

        def assemble(pick: Callable[[Any], Any]) -> Any:
            first = pick(blocks[0, 0])
            if first is None:
                return None
            ns = namespace_of(first)
            return ns.concatenate([ns.concatenate([block(i, j, pick) for j in range(len(rows2))], axis=1)
                                   for i in range(len(rows1))], axis=0)

        first = blocks[0, 0]
        if not hasattr(first, "_fields"):  # one array
            return _host(assemble(lambda b: b), store_on_device)
        fields = {}
        for name in first._fields:
            if name in _MATRICES:
                fields[name] = assemble(lambda b, name=name: getattr(b, name))
            elif name == "cov1":
                parts = [getattr(blocks[i, i if x2 is None else 0], "cov1") for i in range(len(rows1))]
                fields[name] = namespace_of(parts[0]).concatenate(parts)
            elif name == "cov2":
                parts = None if x2 is None else [blocks[0, j].cov2 for j in range(len(rows2))]
                fields[name] = None if parts is None else namespace_of(parts[0]).concatenate(parts)
            elif name == "x1_is_x2":
                fields[name] = x2 is None
            else:
                fields[name] = getattr(first, name)
        return _host(type(first)(**fields), store_on_device)

    batched.__doc__ = getattr(kernel_fn, "__doc__", None)
    if hasattr(kernel_fn, "layer"):
        batched.layer = kernel_fn.layer
    return batched


def _host(result: Any, store_on_device: bool) -> Any:
    """NumPy copies of the arrays in ``result`` when ``store_on_device`` is False."""
    if store_on_device:
        return result

    def to_np(a: Any) -> Any:
        if a is None or isinstance(a, (bool, int, float)):
            return a
        return np.asarray(a.get() if hasattr(a, "get") and not isinstance(a, np.ndarray) else a)

    if hasattr(result, "_fields"):
        return type(result)(*(to_np(v) for v in result))
    return to_np(result)
