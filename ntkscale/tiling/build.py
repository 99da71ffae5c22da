"""Build NTK/NNGP Gram matrices tile by tile on a Dask cluster into a Zarr store.

The build is resumable: chunks that exist are finished tiles, and a re-run
computes only the missing ones. A store built from other data, another
architecture or other settings is refused (unless ``overwrite=True``).
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import numpy as np

from .. import __version__
from ..runner import Runner, get_runner
from ..kernels import Layer, TileKernel, check_architecture, check_input_width, spec_json
from ..kernels.images import tile_work_bytes
from ..kernels.conv import spatial_mode
from ..kernels.backend import namespace_of
from ..kernels.fused import compile_program
from ..kernels.validate import check_get, check_inputs, resolve_dtype
from ..storage import FORMAT, GramStore, StoreAccessError, StoreMismatchError, fingerprint, is_local, is_memory
from ..storage.ownership import check_dir
from ..storage.gram_store import STAT_ROWS
from ..storage.writer import StoreLock
from . import tasks
from .device import check_device, gpu_workers, to_host
from . import space
from .executor import run_tasks
from .layout import OBJECT_STORE_MIN_TILE, TilePlan, check_tile, choose_tile
from .repair import repair_store

__all__ = ["BuildReport", "build_gram", "build_cross_gram", "check_build"]

log = logging.getLogger("ntkscale")


@dataclass
class BuildReport:
    """What a build did."""

    url: str
    shape: tuple[int, int]
    tile: int
    kinds: tuple[str, ...]
    n_tiles: int
    computed: int
    resumed: bool
    seconds: float
    dashboard: Optional[str] = None
    tile_seconds: list[float] = field(default_factory=list)
    repaired: list[tuple[str, tuple[int, ...]]] = field(default_factory=list)  # corrupt chunks redone


def build_gram(arch: Layer, X: Any, store: Any, *, get: Sequence[str] | str = ("ntk",),
               tile: Optional[int] = None, dtype: Any = np.float32, compute_dtype: Any = np.float64,
               client: Any = None, overwrite: bool = False, progress: Optional[bool] = None,
               storage_options: Optional[dict] = None,
               on_tile: Optional[Callable[[tuple], None]] = None, device: str = "cpu",
               repair: bool = False, check_space: bool = True, _delay: float = 0.0) -> BuildReport:
    """Compute the symmetric Gram ``K(X, X)`` into ``store`` (upper-triangle tiles).

    Parameters
    ----------
    arch : Layer
        Architecture from :mod:`ntkscale.stax` (``serial(Dense(...), Relu(), ...)``).
    X : array, shape (n, d)
        Training inputs (validated: 2-d, real, finite).
    store : str or path
        Local path, ``file://``, ``memory://`` (in-process runs only), ``s3://``, ...
    get : 'ntk', 'nngp' or both
        Kernels to store.
    tile : int, optional
        Tile edge; default from the per-worker memory budget (see ``plan.choose_tile``).
    dtype : float32 (default) or float64
        Storage dtype. Kernels are computed in ``compute_dtype`` (float64).
    client : None, 'sync', scheduler address or distributed.Client
        None starts a local cluster of single-threaded worker processes.
    overwrite : bool
        Replace a store built from other data/architecture instead of refusing.
    progress : bool, optional
        Progress bar over tiles (default: only when attached to a terminal).
    on_tile : callable, optional
        Called with ``(i, j, seconds, pid)`` after each tile (may raise to stop).
    device : {'cpu', 'cuda', 'auto', 'cupy', 'jax', 'jax-cpu'}
        Where workers compute tiles (:mod:`ntkscale.tiling.device`; resolved on each
        worker). With ``client=None`` and a GPU device, the local cluster runs one worker
        per GPU. Recorded in the store metadata (``devices``) but not part of store
        compatibility: a build may resume on another device (tiles then agree to rounding).
    repair : bool
        Verify every stored chunk (size and CRC32C, read once in tasks on the cluster),
        delete the corrupt ones and recompute exactly those tiles (inputs are rewritten from
        ``X``); they are listed in ``BuildReport.repaired``.
    check_space : bool
        Before computing tiles, refuse (:class:`~ntkscale.storage.DiskFullError`) when a local
        store's file system has less free space than the missing chunks need; also skipped
        with ``NTKSCALE_SKIP_SPACE_CHECK=1``.

    Returns
    -------
    BuildReport

    Raises
    ------
    StoreLockedError
        Another build (or factorization) is writing the store.
    DiskFullError
        Too little free space (before any tile), or a write found the disk full: the store
        stays incomplete with whole chunks only, and a re-run resumes.
    """
    return _build(arch, X, None, store, get=get, tile=tile, dtype=dtype, compute_dtype=compute_dtype,
                  client=client, overwrite=overwrite, progress=progress,
                  storage_options=storage_options, on_tile=on_tile, device=device, delay=_delay,
                  repair=repair, check_space=check_space)


def build_cross_gram(arch: Layer, X1: Any, X2: Any, store: Any, **kwargs: Any) -> BuildReport:
    """Compute the cross Gram ``K(X1, X2)`` of shape (n1, n2) (e.g. test x train) into ``store``.

    Same options as :func:`build_gram`; every tile is stored (no symmetry).
    """
    delay = kwargs.pop("_delay", 0.0)
    return _build(arch, X1, X2, store, delay=delay, **kwargs)


@dataclass
class _Checked:
    """What :func:`_preflight` checked and derived (no side effects)."""

    x1: np.ndarray
    x2: Optional[np.ndarray]
    kinds: tuple[str, ...]
    store_dt: np.dtype
    comp_dt: np.dtype
    tile: Optional[int]
    expect: dict
    existing: Optional[GramStore]
    device: str


def check_build(arch: Layer, X: Any, store: Any, **kwargs: Any) -> Optional[GramStore]:
    """Every check :func:`build_gram` makes before it writes anything, without writing: the
    architecture, the inputs, the tile, the store location (it must be new, empty or a Gram
    store ntkscale wrote: :mod:`ntkscale.storage.ownership`) and an existing store's settings
    (refused unless it matches, holds no tile yet, or ``overwrite=True``). Takes
    :func:`build_gram`'s keywords (``get``, ``tile``, ``dtype``, ``overwrite``, ...) and ``key``, the
    setting that named the store (for the messages).

    Returns
    -------
    GramStore or None
        The existing store a build would resume, or None when it would create one.
    """
    keep = {"get", "tile", "dtype", "compute_dtype", "overwrite", "storage_options", "device", "key"}
    return _preflight(arch, X, None, store, **{k: v for k, v in kwargs.items() if k in keep}).existing


def _preflight(arch: Layer, X1: Any, X2: Any, url: Any, *, get: Any = ("ntk",), tile: Optional[int] = None,
               dtype: Any = np.float32, compute_dtype: Any = np.float64, overwrite: bool = False,
               storage_options: Optional[dict] = None, device: str = "cpu", key: str = "store") -> _Checked:
    if not isinstance(arch, Layer):
        raise TypeError(f"arch must be an ntkscale architecture (stax.serial(...)), got {type(arch).__name__}")
    check_architecture(arch)
    kinds, _ = check_get(get)
    store_dt = resolve_dtype(dtype)
    comp_dt = resolve_dtype(compute_dtype)
    if tile is not None and (isinstance(tile, bool) or not isinstance(tile, (int, np.integer)) or tile < 1):
        raise ValueError(f"tile must be a positive int, got {tile!r}")
    device = check_device(device)
    x1, x2 = _prepare_inputs(X1, X2, comp_dt)
    check_input_width(arch, x1.shape[1])  # e.g. an image architecture's Unflatten(H, W, C)
    if isinstance(arch, TileKernel):  # e.g. an empirical NTK: its model must take these rows
        arch.check_rows(x1[:1])
    url = str(url)
    n1, n2 = len(x1), len(x1 if x2 is None else x2)
    if tile is not None:
        tile = check_tile(int(tile), n1, n2, x1.shape[1], n_kinds=len(kinds), store_itemsize=store_dt.itemsize,
                          symmetric=x2 is None, work_bytes=tile_work_bytes(arch))
    expect = {
        "fingerprint1": fingerprint(x1), "fingerprint2": None if x2 is None else fingerprint(x2),
        "arch": spec_json(arch), "symmetric": x2 is None, "store_dtype": store_dt.name,
        "compute_dtype": comp_dt.name, "kinds": list(kinds),
    }
    if tile is not None:
        expect["tile"] = int(tile)
    # nothing is written before every check has passed: the location must be ntkscale's to
    # write (storage.ownership), an existing store must match (or hold no tile yet, or
    # overwrite=True); the tile must fit the workers and the disk must hold the store (_build)
    check_dir(url, "gram-store", storage_options=storage_options, key=key)
    existing = _check_existing(url, storage_options, expect, overwrite)
    return _Checked(x1, x2, kinds, store_dt, comp_dt, tile, expect, existing, device)


def _prepare_inputs(X1: Any, X2: Any, compute_dtype: np.dtype) -> tuple[np.ndarray, Optional[np.ndarray]]:
    # CuPy/JAX inputs come to the host: the store keeps host inputs and every worker moves
    # its tiles to its own device (tiling.device)
    X1, X2 = to_host(X1), None if X2 is None else to_host(X2)
    ns = namespace_of(*(x for x in (X1, X2) if hasattr(x, "shape")))
    x1, x2 = check_inputs(ns, np.asarray(X1), None if X2 is None else np.asarray(X2), compute_dtype)
    return np.ascontiguousarray(x1), None if x2 is None else np.ascontiguousarray(x2)


def _build(arch: Layer, X1: Any, X2: Any, url: Any, *, get: Any = ("ntk",), tile: Optional[int] = None,
           dtype: Any = np.float32, compute_dtype: Any = np.float64, client: Any = None,
           overwrite: bool = False, progress: Optional[bool] = None,
           storage_options: Optional[dict] = None, on_tile: Optional[Callable] = None,
           device: str = "cpu", delay: float = 0.0, repair: bool = False,
           check_space: bool = True) -> BuildReport:
    t0 = time.perf_counter()
    pre = _preflight(arch, X1, X2, url, get=get, tile=tile, dtype=dtype, compute_dtype=compute_dtype,
                     overwrite=overwrite, storage_options=storage_options, device=device)
    x1, x2, kinds, store_dt, comp_dt, tile, expect, before = (
        pre.x1, pre.x2, pre.kinds, pre.store_dt, pre.comp_dt, pre.tile, pre.expect, pre.existing)
    device = pre.device
    url = str(url)
    n1, n2 = len(x1), len(x1 if x2 is None else x2)
    runner = lock = None
    try:
        runner = get_runner(client, quiet=not progress, gpus=client is None and gpu_workers(device))
        if is_memory(url) and not runner.is_sync:
            raise StoreAccessError(f"{url!r} lives in this process's memory and worker processes "
                                   "cannot see it; use client='sync' or a path / object-store URL")
        if tile is not None:
            check_tile(int(tile), n1, n2, x1.shape[1], memory_per_task=runner.memory_per_slot(),
                       n_kinds=len(kinds), store_itemsize=store_dt.itemsize, symmetric=x2 is None,
                       work_bytes=tile_work_bytes(arch))
        T = tile if tile is not None else _auto_tile(arch, n1, n2, x1.shape[1], kinds, store_dt, runner, x2 is None,
                                                     object_store=not is_local(url) and not is_memory(url))
        if before is None:
            space.check_new(url, n1, n2, T, x2 is None, kinds, store_dt.itemsize, check_space)
        lock = StoreLock(url, what="Gram build", storage_options=storage_options, kind="gram-store").acquire()
        existing = _check_existing(url, storage_options, expect, overwrite)  # again, under the lock
        if existing is None:
            existing = _create(url, x1, x2, kinds, store_dt, comp_dt, T, expect, runner, arch,
                               storage_options, device)
            resumed = False
        else:
            resumed = True
        gs = existing
        meta = gs.meta
        build_id = meta["build_id"]
        gs.remove_partials()  # temporary files of writes cut short by a killed process
        repaired = repair_store(gs, runner, {"x1": x1, "x2": x2}, storage_options=storage_options,
                                progress=progress) if repair and resumed else []
        space.check_space(gs, check_space)
        _run_stats(gs, runner, arch, build_id, storage_options, progress, device)
        plan = TilePlan(meta["shape"][0], meta["shape"][1], meta["tile"], meta["symmetric"])
        done = set.intersection(*(gs.done_chunks(k) for k in meta["kinds"]))
        # largest first (off-diagonal tiles before the half-cost diagonal ones): the
        # scheduler runs tasks roughly in submission order, so workers finish together
        todo = sorted((t for t in plan.tiles() if t not in done), key=plan.cost, reverse=True)
        if resumed and todo:
            _note_device(gs, device)
        times: list[float] = []

        def record(result: tuple) -> None:
            times.append(result[2])
            if on_tile is not None:
                on_tile(result)

        token = uuid.uuid4().hex[:8]
        run_tasks(runner, tasks.tile_task, [(gs.url, build_id, i, j, arch) for i, j in todo],
                  keys=[f"gram-tile-{build_id[:8]}-{token}-{i}-{j}" for i, j in todo],
                  desc="Gram tiles", progress=progress, on_result=record,
                  storage_options=storage_options, delay=delay, device=device)
        missing = [t for t in plan.tiles() if t not in
                   set.intersection(*(gs.done_chunks(k) for k in meta["kinds"]))]
        if missing:  # pragma: no cover - would be a storage bug
            raise RuntimeError(f"{len(missing)} tiles still missing after the build, e.g. {missing[:3]}")
        gs.remove_partials()  # a worker killed mid-write (its tile was redone elsewhere)
        gs.set_complete(True)
        return BuildReport(url=gs.url, shape=tuple(meta["shape"]), tile=meta["tile"], kinds=tuple(meta["kinds"]),
                           n_tiles=len(plan.tiles()), computed=len(todo), resumed=resumed,
                           seconds=time.perf_counter() - t0, dashboard=runner.dashboard(),
                           tile_seconds=times, repaired=repaired)
    except OSError as e:  # ENOSPC / EDQUOT, here or on a worker: say what to free and how to resume
        full = space.disk_full_error(url, e, storage_options)
        if full is None:
            raise
        raise full from e
    finally:
        if runner is not None:
            runner.close()
        if lock is not None:
            lock.release()


def _try_open(url: str, storage_options: Optional[dict]) -> Optional[GramStore]:
    try:
        return GramStore.open(url, mode="r+", storage_options=storage_options)
    except StoreAccessError:
        return None


def _check_existing(url: str, storage_options: Optional[dict], expect: dict,
                    overwrite: bool) -> Optional[GramStore]:
    """The store at ``url`` to resume, or None to create one (nothing there, ``overwrite``, or
    a store of other settings without a single finished tile: nothing of value to keep).

    Raises
    ------
    StoreMismatchError
        A store of other data or settings that holds finished tiles (unless ``overwrite``).
    """
    existing = _try_open(url, storage_options)
    if existing is None or overwrite:
        if existing is not None:
            log.info("Gram store %s: replacing it (overwrite=True)", url)
        return None
    n = max(existing.shape)
    if expect.get("tile", 0) >= n and existing.tile >= n:  # both one tile (stores before tiles were clipped)
        expect = dict(expect, tile=existing.tile)
    try:
        existing.check_compatible(expect)
    except StoreMismatchError:
        if existing.has_tiles():
            raise
        log.info("Gram store %s holds no finished tile of its earlier settings; replacing it", url)
        return None
    return existing


def _auto_tile(arch: Layer, n1: int, n2: int, d: int, kinds: tuple[str, ...], store_dt: np.dtype,
               runner: Runner, symmetric: bool, object_store: bool = False) -> int:
    """``choose_tile`` for this architecture and cluster; on an object store (``object_store``)
    tiles of at least :data:`~.layout.OBJECT_STORE_MIN_TILE` (one request per chunk: latency)."""
    # pixel-pair kernels (pooling) cost ~10^4-10^5 x a dense entry: tiles sized by memory
    # alone would be hours-long tasks (a 1024^2 Myrtle-5 tile at 28x28 is ~14 h of a worker);
    # there the compute dwarfs any request latency, so this rule wins on object stores too
    if spatial_mode(arch) == "full":
        bounds = dict(min_tile=64, max_tile=256)
    else:
        bounds = dict(min_tile=OBJECT_STORE_MIN_TILE) if object_store else {}
    return choose_tile(n1, n2, d, memory_per_task=runner.memory_per_slot(), n_kinds=len(kinds),
                       store_itemsize=store_dt.itemsize, parallel_tasks=runner.slots(),
                       symmetric=symmetric, work_bytes=tile_work_bytes(arch), **bounds)


def _create(url: str, x1: np.ndarray, x2: Optional[np.ndarray], kinds: tuple[str, ...],
            store_dt: np.dtype, comp_dt: np.dtype, tile: int, expect: dict, runner: Runner,
            arch: Layer, storage_options: Optional[dict], device: str = "cpu") -> GramStore:
    n1, n2 = len(x1), len(x1 if x2 is None else x2)
    d = x1.shape[1]
    prog = compile_program(arch.flat(), d)
    n_rows = len(STAT_ROWS) + (prog.n_slots if prog is not None else 0)
    meta = dict(expect, format=FORMAT, shape=[n1, n2], tile=int(tile), d=d, devices=[device],
                version=__version__, build_id=uuid.uuid4().hex, stat_rows=n_rows)
    log.info("creating Gram store %s: %dx%d, tile %d, kinds %s", url, n1, n2, tile, kinds)
    return GramStore.create(url, meta, x1, x2, n_rows, storage_options=storage_options)


def _note_device(gs: GramStore, device: str) -> None:
    """Add ``device`` to the store's ``devices`` (information only: a resume may use another)."""
    meta = gs.meta
    if device not in meta.get("devices", []):
        log.info("resuming %s on device %r (built so far on %s): tiles agree to rounding", gs.url,
                 device, meta.get("devices", ["cpu"]))
        meta["devices"] = [*meta.get("devices", ["cpu"]), device]
        gs.group.attrs["ntkscale"] = meta


def _run_stats(gs: GramStore, runner: Runner, arch: Layer, build_id: str,
               storage_options: Optional[dict], progress: Optional[bool], device: str = "cpu") -> None:
    meta = gs.meta
    T = meta["tile"]
    calls = []
    for which in (1,) if meta["symmetric"] else (1, 2):
        n = meta["shape"][which - 1]
        done = gs.done_chunks(f"stats{which}")
        calls += [(gs.url, build_id, which, b, arch, meta["compute_dtype"])
                  for b in range(-(-n // T)) if (0, b) not in done]
    run_tasks(runner, tasks.stats_task, calls,
              keys=[f"gram-stats-{build_id[:8]}-{uuid.uuid4().hex[:6]}-{c[2]}-{c[3]}" for c in calls],
              desc="row statistics", progress=False, storage_options=storage_options, device=device)
