"""Cross-kernel products ``K(X*, X) @ V`` streamed on the cluster, without storing or
gathering the cross Gram.

One task per block of test rows: it computes the block's statistics once, then walks
the training row blocks (read from the train store by URL, cached per worker), forms
each cross tile in float64 and multiplies it by the matching rows of ``V``. Only the
(block, C) products come back. ``cross_rows`` returns whole cross-Gram rows for a
block instead (what posterior variances need), one block at a time. ``device`` says where
the cross tiles are computed (:mod:`ntkscale.tiling.device`; resolved on each worker).
"""

from __future__ import annotations

import uuid
from typing import Any, Iterator, Optional, Sequence

import numpy as np

from ..runner import Runner
from ..kernels import Layer
from . import tasks
from .device import check_device, resolve_device
from .executor import run_tasks

__all__ = ["cross_matvec", "cross_rows"]


def _train_blocks(url: str, build_id: str, storage_options: Optional[dict]) -> tuple[int, int]:
    store = tasks.open_cached(url, build_id, "r", storage_options)
    return store.shape[0], store.tile


def _cross_block(arch: Layer, x: np.ndarray, url: str, build_id: str, kinds: tuple[str, ...],
                 storage_options: Optional[dict],
                 device: str = "cpu") -> Iterator[tuple[slice, dict[str, np.ndarray]]]:
    n, T = _train_blocks(url, build_id, storage_options)
    dev = resolve_device(device)
    st = dev.stats(arch, x, np.float64)
    args = (url, build_id, "r", storage_options)
    for j in range(-(-n // T)):
        cols = slice(j * T, min((j + 1) * T, n))
        xj = tasks._read_rows(*args, "x1", cols)
        stj = tasks._stats_from_rows(tasks._read_rows(*args, "stats1", cols))
        yield cols, dev.compute(arch, x, xj, st, stj, kinds, np.float64, np.float64)


def cross_matvec_task(arch: Layer, x: np.ndarray, url: str, build_id: str, V: dict[str, np.ndarray],
                      storage_options: Optional[dict] = None, device: str = "cpu") -> dict[str, np.ndarray]:
    """``{kind: K_kind(x, X_train) @ V[kind]}`` for one test block x (b, d)."""
    kinds = tuple(V)
    V = {k: tasks.aligned(v) for k, v in V.items()}  # (a received frame's view: see tasks.aligned)
    out = {k: np.zeros((x.shape[0], V[k].shape[1])) for k in kinds}
    for cols, tiles in _cross_block(arch, x, url, build_id, kinds, storage_options, device):
        for k in kinds:
            out[k] += tiles[k] @ V[k][cols]
    return out


def cross_rows_task(arch: Layer, x: np.ndarray, url: str, build_id: str, kinds: tuple[str, ...],
                    storage_options: Optional[dict] = None, device: str = "cpu") -> dict[str, np.ndarray]:
    """``{kind: K_kind(x, X_train)}``, rows of shape (b, n), float64."""
    parts: dict[str, list[np.ndarray]] = {k: [] for k in kinds}
    for _, tiles in _cross_block(arch, x, url, build_id, kinds, storage_options, device):
        for k in kinds:
            parts[k].append(tiles[k])
    return {k: np.hstack(v) for k, v in parts.items()}


def _blocks(m: int, block: int) -> list[slice]:
    return [slice(s, min(s + block, m)) for s in range(0, m, block)]


def cross_matvec(runner: Runner, arch: Layer, X: np.ndarray, url: str, build_id: str,
                 V: dict[str, np.ndarray], *, block: int = 1024,
                 storage_options: Optional[dict] = None, device: str = "cpu") -> dict[str, np.ndarray]:
    """``{kind: K_kind(X, X_train) @ V[kind]}`` with ``X`` (m, d) validated by the caller,
    ``V[kind]`` of shape (n, C); returns (m, C) float64 per kind. Cross tiles are computed
    in float64 on ``device`` (``cpu``, ``cuda``, ``auto``, ...; see :mod:`.device`)."""
    device = check_device(device)
    blocks = _blocks(X.shape[0], block)
    Vs = V if runner.is_sync else runner.client.scatter(V, broadcast=True, hash=False)
    token = uuid.uuid4().hex[:8]
    results = run_tasks(runner, _indexed(cross_matvec_task), [(b.start, arch, X[b], url, build_id, Vs)
                                                           for b in blocks],
                        keys=[f"cross-matvec-{token}-{i}" for i in range(len(blocks))],
                        storage_options=storage_options, device=device)
    out = {k: np.empty((X.shape[0], v.shape[1])) for k, v in V.items()}
    for start, part in results:
        for k, val in part.items():
            out[k][start: start + val.shape[0]] = val
    return out


def cross_rows(runner: Runner, arch: Layer, X: np.ndarray, url: str, build_id: str,
               kinds: Sequence[str], *, block: int = 256, storage_options: Optional[dict] = None,
               device: str = "cpu") -> Iterator[tuple[slice, dict[str, np.ndarray]]]:
    """Yield ``(rows, {kind: K_kind(X[rows], X_train)})`` block by block (in order),
    computed on ``device``."""
    device = check_device(device)
    for b in _blocks(X.shape[0], block):
        [(_, part)] = run_tasks(runner, _indexed(cross_rows_task),
                                [(b.start, arch, X[b], url, build_id, tuple(kinds))],
                                keys=[f"cross-rows-{uuid.uuid4().hex[:8]}"],
                                storage_options=storage_options, device=device)
        yield b, part


class _indexed:
    """Wrap a task so it returns ``(start, result)`` (results arrive out of order)."""

    def __init__(self, fn: Any):
        self.fn = fn

    def __call__(self, start: int, *args: Any, **kwargs: Any) -> tuple[int, Any]:
        return start, self.fn(*args, **kwargs)
