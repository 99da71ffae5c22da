"""Memory estimates for empirical NTKs: bytes per row of Jacobian, row batches, method choice.

The Jacobian of one input row is ``k x P`` numbers (``k`` outputs, ``P`` trainable
scalars), so the ``jacobian`` method holds ``b1 + b2`` row Jacobians for a block of
``b1 x b2`` entries. The ``ntvp`` method never holds a row Jacobian: it handles one
output at a time and holds one ``P``-vector (a row of ``J^T``) per row of its ``x2``
batch, plus the forward tangents of its ``x1`` batch.

Rules (``memory`` is a byte budget for these arrays, default :data:`DEFAULT_MEMORY`):

* ``jacobian``: ``b = memory // (2 * k * P * itemsize)`` rows per batch on each side;
* ``ntvp``: ``b = memory // (2 * P * itemsize)`` rows per batch (``k`` times more);
* ``auto``: ``jacobian`` when at least :data:`MIN_ROWS` rows per side fit, else ``ntvp``.
  Both give the same kernel to rounding and neither is uniformly faster (for MLPs of
  75k-140k parameters on a CPU ``ntvp`` took 0.5-1.5x the ``jacobian`` time,
  ``benchmarks/bench_empirical.py``); ``auto`` decides by memory alone.

Activations of the forward passes come on top (``b x width`` per layer, usually far less
than ``b x P``); lower ``memory`` or pass ``batch_size`` for models whose activations
dominate (long sequences).
"""

from __future__ import annotations

import warnings
from typing import Any, Optional

__all__ = ["DEFAULT_MEMORY", "MIN_ROWS", "jacobian_bytes_per_row", "choose_method", "choose_batch"]

DEFAULT_MEMORY = 1 << 30
"""Default budget (bytes) for the Jacobian blocks or tangents of one call or one tile."""

MIN_ROWS = 8
"""``auto`` takes the Jacobian method when this many row Jacobians per side fit."""

METHODS = ("auto", "jacobian", "ntvp")


def jacobian_bytes_per_row(n_params: int, n_outputs: int, itemsize: int) -> int:
    """Bytes of one input row's Jacobian: ``n_params x n_outputs x itemsize``."""
    return int(n_params) * int(n_outputs) * int(itemsize)


def check_method(method: Any) -> str:
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    return method


def check_memory(memory: Any) -> int:
    if isinstance(memory, bool) or not isinstance(memory, (int, float)) or not memory > 0:
        raise ValueError(f"memory must be a positive number of bytes, got {memory!r}")
    return int(memory)


def check_batch(batch_size: Any) -> Optional[int]:
    if batch_size is None:
        return None
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int or None, got {batch_size!r}")
    return batch_size


def choose_method(method: str, n_params: int, n_outputs: int, itemsize: int,
                  memory: int = DEFAULT_MEMORY) -> str:
    """Resolve ``"auto"``: ``"jacobian"`` if ``2 * MIN_ROWS`` row Jacobians fit ``memory``."""
    if check_method(method) != "auto":
        return method
    per_row = jacobian_bytes_per_row(n_params, n_outputs, itemsize)
    return "jacobian" if 2 * MIN_ROWS * per_row <= memory else "ntvp"


def choose_batch(method: str, n_params: int, n_outputs: int, itemsize: int, n_rows: int,
                 memory: int = DEFAULT_MEMORY, batch_size: Optional[int] = None) -> int:
    """Rows per batch for ``method`` (``batch_size`` if given), at most ``n_rows``.

    Warns (``ResourceWarning``) when even one row exceeds ``memory``: the call then runs
    one row at a time and may need more memory than the budget.
    """
    if batch_size is not None:
        return max(1, min(int(batch_size), int(n_rows)))
    per_row = (jacobian_bytes_per_row(n_params, n_outputs, itemsize) if method == "jacobian"
               else jacobian_bytes_per_row(n_params, 1, itemsize))
    b = int(memory) // (2 * per_row)
    if b < 1:
        warnings.warn(f"one input row needs {2 * per_row / 2**20:.0f} MiB of "
                      f"{'Jacobians' if method == 'jacobian' else 'tangents'} ({n_params} parameters, "
                      f"{n_outputs} outputs), over the memory budget {memory / 2**20:.0f} MiB; "
                      "running one row at a time", ResourceWarning, stacklevel=3)
        b = 1
    return max(1, min(b, int(n_rows)))
