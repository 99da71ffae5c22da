"""Out-of-core blocked Cholesky of ``K + ridge I`` as a task graph over the stored tiles.

Left-looking, one task per upper tile of the factor ``U`` (``K + ridge I = U^T U``)::

    S     = K_ij + ridge delta_ij I - sum_{m<i} U_mi^T U_mj      (GEMM; SYRK on the diagonal)
    U_ii  = chol(S)                                              (POTRF)
    U_ij  = U_ii^-T S                                            (TRSM), i < j

Each task reads its inputs from the Gram and factor stores by URL and writes one chunk;
tasks are submitted together with their dependencies and critical-path priorities. Tiles
that exist are done, so an interrupted factorization resumes.

Placement. By default (``placement='host'``) the tasks run on one worker per machine, one
at a time, with as many BLAS threads as that machine's workers have, as LAPACK would use
them. The factor tile can then be the Gram tile (no sub-tiling to keep workers busy), the
machine's tasks share one tile cache, and no critical path of tile tasks leaves cores idle;
several machines still share the graph. Measured at n = 20000 on 2 cores: float64 alike
(1.22-1.43x vs 1.34x scipy's ``cho_factor``), float32 faster (0.69-0.72x vs 0.79x).

I/O off the critical path. A task reads its Gram block (``O_DIRECT``) on a second thread while
its GEMMs run into a scratch buffer; with one leader, a finished tile is kept in the tile cache
and its chunk written (``O_DIRECT``) on a writer thread while the next task computes, and a last
task flushes the queued writes. Buffered chunk I/O costs CPU that the BLAS threads need (~100 ms
per fresh 32 MB chunk written on the 2-core VM): float64 -14 %, float32 -2 % at n = 12288
(RESULTS §00000e.1). A failing task, and a failing run, first wait for the queued writes, so
none lands in a store that a jitter retry has recreated.

References
----------
Golub & Van Loan, *Matrix Computations*, 4th ed., Alg. 4.2.2 (blocked Cholesky);
Buttari, Langou, Kurzak, Dongarra (2009), "A class of parallel tiled linear algebra
algorithms for multicore architectures" (tile tasks, critical-path priorities).
"""

from __future__ import annotations

import logging
import time
import uuid
import warnings
from typing import TYPE_CHECKING, Any, Callable, Optional

import numpy as np

from ..errors import JitterWarning, NotPositiveDefiniteError
from ..linop import check_ridge, jitter_schedule
from ..storage import StoreAccessError, StoreMismatchError, is_memory
from ..runner import HostSlot
from ..storage.factor_store import FactorStore
from ..storage.ownership import check_dir
from ..storage.writer import StoreLock
from ..storage.url import options_key
from .cholesky_dag import _dependencies, _priorities, factor_tile_size
from .cholesky_tasks import TileBreakdown, _Ctx, _quiet_flush, factor_tile_task, flush_task, release_buffers
from .executor import await_workers, worker_info
from .factor import TiledFactor

if TYPE_CHECKING:  # the operator layer sits above tiling
    from ..operator import StoredGram

__all__ = ["factor_tiles", "factor_tile_task", "TiledFactor", "jitter_schedule", "default_factor_url",
           "factor_tile_size", "PLACEMENTS", "LeaderLostError"]

log = logging.getLogger("ntkscale")

PLACEMENTS = ("host", "worker")
_POLL_S = 2.0  # how often a running factorization checks that its leaders are alive
_CANCEL_WAIT_S = 600.0  # after an error: how long to wait for running tasks to finish
_LEADER_RETRIES = 2  # times a factorization resumes by itself after a leader died
_RESTART_WAIT_S = 60.0  # how long it waits for the cluster's workers to come back first


class LeaderLostError(RuntimeError):
    """A worker running the Cholesky tasks of its host ('host' placement) left the cluster."""

    def __init__(self, gone: list[str], restarts: int = 0):
        again = f" (it already resumed by itself {restarts} times; check the workers' logs)" if restarts else ""
        super().__init__(f"worker(s) {gone} running the Cholesky tasks of their host left the cluster; run the "
                         f"factorization again to resume from the finished tiles{again}")
        self.gone = gone


def default_factor_url(gram_url: str, kind: str = "ntk", dtype: Any = np.float64, ridge: float = 0.0) -> str:
    """Where the factor of ``K + ridge I`` lives by default: a sibling of the Gram store keyed by
    what it factors, ``<gram url>-chol-<kind>-<dtype>-ridge<ridge:.3g>-<hash>`` (the hash of the
    exact ridge), so fits with other ridges or dtypes on one Gram store keep their own factors
    instead of refusing each other's."""
    import hashlib

    tag = hashlib.blake2b(repr(float(ridge)).encode(), digest_size=4).hexdigest()
    return f"{str(gram_url).rstrip('/')}-chol-{kind}-{np.dtype(dtype).name}-ridge{float(ridge):.3g}-{tag}"


def _placement(op: "StoredGram", placement: str) -> tuple[list[HostSlot], int]:
    """The hosts whose leaders run the tasks ('host'; none for 'worker' or in-process) and
    the per-process tile cache in bytes."""
    if placement == "worker":
        return [], int(min(2**30, op.runner.memory_per_slot() / 4))
    hosts = op.runner.hosts()  # a leader's own memory limit bounds its cache: half of it, <= 8 GiB
    per_process = min(h.memory / h.workers for h in hosts) if hosts else op.runner.memory_per_slot()
    return hosts, int(min(8 * 2**30, per_process / 2))


def _run(fs: FactorStore, op: "StoredGram", progress: Optional[bool],
         on_tile: Optional[Callable[[tuple], None]], placement: str = "host") -> int:
    """Compute the missing tiles of ``fs``; return how many were computed."""
    meta = fs.meta
    n, T = int(meta["n"]), int(meta["tile"])
    nb = -(-n // T)
    fs.remove_partials()  # temporary files of writes cut short by a killed process
    done = fs.done_tiles()
    todo = [(i, j) for i in range(nb) for j in range(i, nb) if (i, j) not in done]  # topological
    hosts, cache = _placement(op, placement)
    # one leader runs every task: each tile is written while the next one computes (its readers
    # are in that process; a last task flushes the writes)
    behind = len(hosts) == 1 and not op.runner.is_sync
    ctx = _Ctx(op.url, op.store.meta["build_id"], op.kind, fs.url, meta["factor_id"], float(meta["ridge"]),
               meta["dtype"], uuid.uuid4().hex[:10], cache, options_key(op.storage_options), options_key(fs.storage_options),
               tuple((h.leader, h.threads) for h in hosts), behind)
    bar = None
    if progress and todo:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc="Cholesky tiles", unit="tile")

    def record(result: tuple) -> None:
        if bar is not None:
            bar.update()
        if on_tile is not None and result[4]:
            on_tile(result)

    try:
        if op.runner.is_sync:
            for i, j in todo:
                record(factor_tile_task(ctx, i, j))
        else:
            _run_distributed(op.runner.client, fs, ctx, todo, nb, record, [h.leader for h in hosts])
    except TileBreakdown as e:
        raise NotPositiveDefiniteError("Cholesky of K + ridge*I broke down", pivot=e.tile * T + e.pivot,
                                       tile=e.tile, ridge=ctx.ridge) from None
    finally:
        if bar is not None:
            bar.close()
        try:
            release_buffers() if op.runner.is_sync else op.runner.client.run(release_buffers)
        except Exception:  # pragma: no cover - a closing client: the workers' caches go with them
            pass
    missing = len({(i, j) for i in range(nb) for j in range(i, nb)} - fs.done_tiles())
    if missing:  # pragma: no cover - would be a storage bug
        raise RuntimeError(f"{missing} factor tiles still missing after the factorization")
    fs.remove_partials()  # a worker killed mid-write (its tile was redone)
    fs.set_complete(True)
    return len(todo)


def _run_resuming(fs: FactorStore, op: "StoredGram", progress: Optional[bool],
                  on_tile: Optional[Callable[[tuple], None]], placement: str) -> tuple[int, int]:
    """:func:`_run`, resumed up to ``_LEADER_RETRIES`` times when a leading worker dies: the
    cluster gets up to ``_RESTART_WAIT_S`` to bring its workers back (a nanny restarts a
    killed one), then the tasks are planned again on the workers there. Returns the tiles
    computed and the number of restarts."""
    before = len(fs.done_tiles())
    client = None if op.runner.is_sync else op.runner.client
    workers = 0 if client is None else len(worker_info(client))
    for restarts in range(_LEADER_RETRIES + 1):
        try:
            _run(fs, op, progress, on_tile, placement)
            return len(fs.done_tiles()) - before, restarts
        except LeaderLostError as e:
            if restarts == _LEADER_RETRIES:
                raise LeaderLostError(e.gone, restarts) from None
            log.warning("%s; resuming by itself from its %d finished tiles", e.args[0].split(";")[0],
                        len(fs.done_tiles()))
            if not await_workers(client, max(1, workers), _RESTART_WAIT_S):  # else: plan on those there are
                raise LeaderLostError(e.gone, restarts + 1) from None
    raise AssertionError("unreachable")  # pragma: no cover


def _drain(client: Any, futures: list) -> None:
    """Wait until none of ``futures`` is processing on a worker (tasks that have not started
    see the stop marker and return at once; tasks pinned to a worker that left never start)."""
    from distributed import wait

    keys, deadline = {f.key for f in futures}, time.monotonic() + _CANCEL_WAIT_S
    while time.monotonic() < deadline:
        busy = keys & {k for ks in client.processing().values() for k in ks}
        if not busy:
            return
        try:
            wait([f for f in futures if f.key in busy], timeout=_POLL_S)
        except TimeoutError:
            pass


def _run_distributed(client: Any, fs: FactorStore, ctx: _Ctx, todo: list[tuple[int, int]], nb: int,
                     record: Callable[[tuple], None], leaders: list[str]) -> None:
    from distributed import wait

    prio = _priorities(nb)
    deps = _dependencies(todo)
    where = dict(workers=leaders, allow_other_workers=False) if leaders else {}
    futures: dict[tuple[int, int], Any] = {}
    for t in todo:  # row-major: predecessors are submitted first
        futures[t] = client.submit(factor_tile_task, ctx, *t, [futures[p] for p in deps[t]],
                                   key=f"chol-{ctx.factor_id[:8]}-{ctx.run}-{t[0]}-{t[1]}",
                                   priority=prio[t], pure=False, **where)
    flush = None
    if ctx.write_behind:  # the last tiles' writes are queued on the leader: wait for them there
        flush = client.submit(flush_task, list(futures.values()), key=f"chol-{ctx.factor_id[:8]}-{ctx.run}-flush",
                              priority=-1, pure=False, **where)
    try:
        pending, seen = set(futures.values()) | ({flush} if flush is not None else set()), set()
        while pending:
            try:
                done, pending = wait(pending, timeout=_POLL_S, return_when="FIRST_COMPLETED")
            except TimeoutError:
                done = set()
            for fut in done:
                try:  # a result held by a worker that died since is gone: the task waits again
                    if fut.status in ("pending", "lost"):
                        raise TimeoutError
                    result = fut.result(timeout=_POLL_S)
                except TimeoutError:
                    pending.add(fut)
                    continue
                if fut.key not in seen and fut is not flush:
                    seen.add(fut.key)
                    record(result)
            gone = set(leaders) - set(worker_info(client)) if pending and leaders else ()
            if gone:  # tasks pinned to a worker that left would wait forever
                raise LeaderLostError(sorted(gone))
    except BaseException:
        # Tasks not started yet skip their work; wait for the running ones so that no
        # task of this run writes after we return (a retry may recreate the store).
        fs.request_stop(ctx.run)
        every = list(futures.values()) + ([flush] if flush is not None else [])
        _drain(client, every)
        client.cancel(every)
        if flush is not None:  # no queued write may land after this (a retry recreates the store)
            try:
                client.run(_quiet_flush, workers=leaders)
            except Exception:  # noqa: BLE001 - a leader that left took its queue with it
                pass
        raise
    finally:
        try:
            fs.clear_stop(ctx.run)
        except OSError:  # pragma: no cover
            pass


def factor_tiles(op: "StoredGram", ridge: float, *, factor_url: Optional[str] = None, dtype: Any = np.float64,
                 jitter: bool | float = False, overwrite: bool = False, tile: Optional[int] = None,
                 progress: Optional[bool] = None, on_tile: Optional[Callable[[tuple], None]] = None,
                 placement: str = "host") -> TiledFactor:
    """Upper Cholesky factor ``U`` of ``K + ridge I`` (``= U^T U``), tile by tile, into a store.

    Parameters
    ----------
    op : StoredGram
        Symmetric stored Gram, shape (n, n); its runner (``op.runner``) runs the tasks.
    ridge : float
        Absolute ridge (added as ``K + ridge I``; NT's relative ``diag_reg`` is
        ``ridge / mean(diag K)``), finite, >= 0.
    factor_url : str, optional
        Factor store; default :func:`default_factor_url` (keyed by the kernel kind, dtype and
        ridge). A store of another Gram, kind, ridge or dtype is refused unless
        ``overwrite=True``; a complete matching one is reused. The location must be new,
        empty or a factor store ntkscale wrote (:mod:`ntkscale.storage.ownership`).
    dtype : float64 (default) or float32
        Factor dtype and compute dtype of the tiles (float32: half the bytes, ~2x GEMMs).
    jitter : bool or float
        On breakdown retry with ``ridge + j * mean(diag K)``, ``j`` from 1e-10 (or the
        given float) growing 10x up to 1e-4; a :class:`JitterWarning` names the ``j`` used.
    tile : int, optional
        Factor tile edge, an exact divisor of the Gram's tile (default: the Gram's tile, or a
        divisor of it when the Gram's grid is too coarse to keep ``op.runner``'s workers busy;
        an existing factor store's tile is kept). Tasks read sub-blocks of the Gram's tiles.
    progress : bool, optional
        Progress bar over tiles.
    on_tile : callable, optional
        Called with ``(i, j, seconds, pid, True)`` after each computed tile (may raise to stop;
        tiles written so far are kept and a re-run resumes).
    placement : {'host', 'worker'}
        Where tile tasks run on a distributed cluster. ``'host'`` (default): on one worker
        per machine, one task at a time, each with as many BLAS threads as all the workers of
        that machine have (they idle meanwhile): multi-threaded BLAS on big tiles runs faster
        than one single-threaded task per core, and a machine's tasks share one tile cache.
        ``'worker'``: one task per worker thread, BLAS threads as the workers are set.
        If a leading worker dies, the factorization waits for the cluster's workers to come
        back, plans again on them and resumes from its finished tiles, up to twice; then it
        stops with :class:`LeaderLostError` and a re-run resumes. (Under ``'worker'`` the
        scheduler reruns the tasks of a dead worker elsewhere.)

    Returns
    -------
    TiledFactor

    Raises
    ------
    NotPositiveDefiniteError
        Breakdown at diagonal tile ``tile``, global pivot ``pivot`` (the factor store is left
        incomplete, without the failing tile).
    StoreLockedError
        Another factorization is writing the factor store.
    """
    t0 = time.perf_counter()
    if not getattr(op, "symmetric", False) or op.shape[0] != op.shape[1]:
        raise ValueError("factor_tiles needs a symmetric stored train Gram (a cross Gram has no Cholesky)")
    ridge = check_ridge(ridge)
    if placement not in PLACEMENTS:
        raise ValueError(f"placement must be one of {PLACEMENTS}, got {placement!r}")
    dt = np.dtype(dtype)
    if dt not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64, got {dt}")
    schedule = jitter_schedule(jitter)
    url = default_factor_url(op.url, op.kind, dt, ridge) if factor_url is None else str(factor_url)
    check_dir(url, "factor-store", storage_options=op.storage_options, key="factor_url")
    if is_memory(url) and not op.runner.is_sync:
        raise StoreAccessError(f"{url!r} lives in this process's memory and worker processes cannot see it; "
                               "use client='sync' or a path / object-store URL")
    gmeta = op.store.meta
    n, Tg = op.shape[0], int(gmeta["tile"])
    if tile is not None and (isinstance(tile, bool) or not isinstance(tile, (int, np.integer)) or tile < 1
                             or Tg % tile):
        raise ValueError(f"tile must be a positive exact divisor of the Gram's tile {Tg}, got {tile!r}")
    base = dict(gram_url=op.url, gram_build_id=gmeta["build_id"], kind=op.kind, n=n, dtype=dt.name,
                base_ridge=float(ridge))
    lock = StoreLock(url, what="Cholesky factorization", storage_options=op.storage_options,
                     kind="factor-store").acquire()
    try:  # one factorization per factor store
        fs = None if overwrite else FactorStore.try_open(url, storage_options=op.storage_options)
        rel = 0.0
        if fs is not None:
            fs.check_compatible(dict(base, tile=tile) if tile is not None else base)
            if Tg % fs.tile:
                fs.check_compatible(dict(base, tile=Tg))  # refuses: not a divisor of this Gram's tile
            rel = float(fs.meta.get("jitter", 0.0))
            if rel > 0 and not schedule:
                raise StoreMismatchError(f"factor store {fs.url!r} was factored with jitter {rel:g} x mean "
                                         "diagonal; pass jitter=True to reuse it, or overwrite=True to replace it")
        mean_diag = float(np.mean(op.diag())) if (schedule or rel) else 0.0
        pending = [j for j in schedule if j > rel]
        hosts = len(op.runner.hosts())  # 'host' on one machine runs tasks one by one: no grid needed
        slots = op.runner.slots() if placement == "worker" else (hosts if hosts > 1 else 0)
        T = fs.tile if fs is not None else int(tile or factor_tile_size(Tg, n, slots))
        base["tile"] = T
        breakdowns: list[tuple[float, Optional[int], Optional[int]]] = []
        while True:
            if fs is None:
                fs = FactorStore.create(url, dict(base, ridge=float(ridge) + rel * mean_diag, jitter=rel,
                                                  factor_id=uuid.uuid4().hex),
                                        storage_options=op.storage_options)
            try:
                resumed = bool(fs.done_tiles())
                computed, restarts = _run_resuming(fs, op, progress, on_tile, placement)
                break
            except NotPositiveDefiniteError as e:
                breakdowns.append((rel, e.pivot, e.tile))
                if not pending:
                    if schedule:
                        raise NotPositiveDefiniteError(f"Cholesky of K + ridge*I broke down even with jitter "
                                                       f"{rel:g} x mean diagonal", pivot=e.pivot, tile=e.tile,
                                                       ridge=e.ridge) from None
                    raise
                rel, fs = pending.pop(0), None
    finally:
        lock.release()
    meta = fs.meta
    if rel > 0:
        warnings.warn(f"K + ridge*I is not numerically positive definite at ridge={ridge:g}; factored with "
                      f"jitter {rel:g} x mean diagonal (absolute ridge {meta['ridge']:g})", JitterWarning,
                      stacklevel=2)
    nb = -(-n // T)
    return TiledFactor(url=fs.url, n=n, tile=T, dtype=dt, ridge=float(meta["ridge"]), jitter=rel,
                       seconds=time.perf_counter() - t0, computed=computed, n_tiles=nb * (nb + 1) // 2,
                       resumed=resumed and computed > 0, factor_id=meta["factor_id"],
                       storage_options=op.storage_options, restarts=restarts, breakdowns=breakdowns,
                       mean_diag=mean_diag)
