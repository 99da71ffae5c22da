"""Repair of a Gram store: verify every stored chunk, delete the corrupt ones, so that the
build recomputes exactly those (``build_gram(..., repair=True)``).

Verification reads every chunk once and checks its size and CRC32C, in tasks on the
cluster (a few dozen chunks each) so a large store is read in parallel. Corrupt Gram
tiles and row statistics are deleted and recomputed by the build like missing ones;
corrupt input chunks (``x1``/``x2``) are rewritten from the caller's inputs, which the
store's fingerprints have just matched.
"""

from __future__ import annotations

import logging
import uuid
from typing import Optional

import numpy as np

from ..runner import Runner
from ..storage import GramStore
from . import tasks
from .executor import run_tasks

__all__ = ["verify_task", "find_bad_chunks", "repair_store"]

log = logging.getLogger("ntkscale")

_PER_TASK = 32  # chunks verified by one task


def verify_task(url: str, build_id: str, name: str, indices: list[tuple[int, ...]],
                storage_options: Optional[dict] = None) -> list[tuple[str, tuple[int, ...]]]:
    """The corrupt chunks among ``indices`` of array ``name``, as ``(name, index)`` pairs."""
    store = tasks.open_cached(url, build_id, "r", storage_options)
    return [(name, idx) for idx in store.bad_chunks(name, indices)]


def _arrays(gs: GramStore) -> list[str]:
    meta = gs.meta
    sides = ("1",) if meta["symmetric"] else ("1", "2")
    return [f"{a}{s}" for s in sides for a in ("x", "stats")] + list(meta["kinds"])


def find_bad_chunks(gs: GramStore, runner: Runner, *, storage_options: Optional[dict] = None,
                    progress: Optional[bool] = False) -> list[tuple[str, tuple[int, ...]]]:
    """Every corrupt chunk of the store (inputs, statistics, tiles), verified on ``runner``.

    Parameters
    ----------
    gs : GramStore
        The store (its build id names it to the worker tasks).
    runner : Runner
        Where the verification tasks run (a cluster, or this process).
    storage_options : dict, optional
        fsspec options of the store.
    progress : bool, optional
        Progress bar over verification tasks.

    Returns
    -------
    list of (array name, chunk index)
        Sorted; empty when every chunk is sound.
    """
    build_id = gs.meta["build_id"]
    calls = []
    for name in _arrays(gs):
        done = sorted(gs.done_chunks(name))
        calls += [(gs.url, build_id, name, done[k:k + _PER_TASK]) for k in range(0, len(done), _PER_TASK)]
    token = uuid.uuid4().hex[:8]
    found = run_tasks(runner, verify_task, calls, keys=[f"gram-verify-{token}-{k}" for k in range(len(calls))],
                      desc="verifying chunks", progress=progress, storage_options=storage_options)
    return sorted(bad for part in found for bad in part)


def repair_store(gs: GramStore, runner: Runner, inputs: dict[str, Optional[np.ndarray]], *,
                 storage_options: Optional[dict] = None,
                 progress: Optional[bool] = False) -> list[tuple[str, tuple[int, ...]]]:
    """Delete the corrupt chunks of ``gs`` (the build then recomputes exactly those tiles and
    statistics) and rewrite corrupt input chunks from ``inputs``; return what was repaired.

    Parameters
    ----------
    gs : GramStore
        A store whose fingerprints match ``inputs`` (checked by the build), opened ``r+``,
        with its lock held.
    runner : Runner
        Where the verification tasks run.
    inputs : dict
        ``{'x1': X1, 'x2': X2 or None}``, the validated inputs of the build.

    Returns
    -------
    list of (array name, chunk index)
        The corrupt chunks found (``('ntk', (i, j))`` is tile (i, j) of the NTK).
    """
    bad = find_bad_chunks(gs, runner, storage_options=storage_options, progress=progress)
    if not bad:
        return []
    gs.set_complete(False)
    for name, idx in bad:
        gs.delete_chunk(name, idx)
        if inputs.get(name) is not None:
            region = gs.chunk_region(name, idx)
            gs.write_region(name, region, inputs[name][region])
    log.warning("store %s: %d corrupt chunk(s) deleted and recomputed: %s", gs.url, len(bad),
                ", ".join(f"{n} {i}" for n, i in bad[:10]) + (" ..." if len(bad) > 10 else ""))
    return bad
