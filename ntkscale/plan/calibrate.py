"""A few seconds of measurements on this machine that the capacity model is scaled by.

:func:`calibrate` times, single-threaded (BLAS, OpenMP and numba pinned to one thread,
as the worker processes of :func:`ntkscale.runner.local_cluster` are):

* one off-diagonal kernel tile (``kernel_tile``, float64 compute, float32 output) of the
  given architecture and input width ``d``: entries per second;
* the tile's input GEMM ``x1 @ x2.T`` alone, so the kernel cost splits into a GEMM part
  (``2 d`` flops per entry) and an elementwise part (per entry, ``d``-independent), which is
  what lets a calibration at one ``d`` predict another;
* dense float64 GEMM, Cholesky (``potrf``) and symmetric eigendecomposition (``syevd``);
* Gram-store tile writes and reads (+ CRC32C check and decode), through
  :class:`ntkscale.storage.GramStore` in a temporary directory (the page cache is warm, as
  it is for a matvec right after a build on a machine with free RAM), the float32 → float64
  cast and a GEMV per entry (what one matvec pass does per stored tile);
* the fixed cost of a tiny ``build_gram`` (store creation, statistics, chunk listings);
* the warm-up of a fresh worker (task-module imports, numba loading the fused kernels) and
  its memory, in a subprocess with the workers' pinned environment.

With a ``client`` the kernel tile is timed on the workers instead (one alone, then all slots
at once: their ratio is the per-slot parallel efficiency), which leaves the workers' kernels
loaded, and the Dask task round trip and per-phase latency are measured.

The result is a JSON-able :class:`Calibration`; :meth:`Calibration.save` / ``load`` cache it.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
import time
from dataclasses import MISSING, asdict, dataclass, field
from typing import Any, Optional

import numpy as np

from ..kernels import Layer, spec_json
from ._measure import (DEFAULT_WORKER_WARMUP_S, build_fixed, client_rates, dense_rates, kernel_rates,
                       n_activations, single_thread, store_rates, stored_pass_rates, worker_warmup,
                       disk_read_rate, store_read_rate)

__all__ = ["Calibration", "calibrate", "DEFAULT_EFFICIENCY", "DEFAULT_TASK_OVERHEAD_S"]

#: Per-slot parallel efficiency without a client measurement: the 2-worker Gram build of
#: benchmarks/bench_gram.py reached 1.84x (quiet machine) and 1.97x (under load) at n = 8192.
DEFAULT_EFFICIENCY = 0.92
#: Scheduler + transfer cost per Dask task without a client measurement (dask's docs: ~1 ms
#: of scheduler time per task; results and arguments add a little).
DEFAULT_TASK_OVERHEAD_S = 2e-3
#: Client-side latency of one ``run_tasks`` phase (submit, first result, gather).
DEFAULT_PHASE_LATENCY_S = 0.02


@dataclass(frozen=True)
class Calibration:
    """Rates measured on one machine (seconds, bytes, flops; single thread unless stated).

    Attributes
    ----------
    d : int
        Input width the kernel tile was measured at.
    arch : str
        Canonical JSON of the architecture (:func:`ntkscale.kernels.spec_json`).
    n_activations : int
        Activation layers of ``arch`` (the elementwise work per entry scales with them).
    kernel_tile : int
        Edge of the measured (off-diagonal) tile.
    kernel_entry_s : float
        Seconds per kernel entry (both kinds, float32 output), GEMM included.
    tile_gemm_flops : float
        Flop/s of the tile's ``x1 @ x2.T`` (shape (T, d) x (d, T)).
    gemm_flops, cholesky_flops : float
        Flop/s of a square float64 GEMM (``2 m³``) and Cholesky (``m³/3``).
    eigh_s_per_n3 : float
        Seconds of ``numpy.linalg.eigh`` (values and vectors) per ``m³`` at m = 1024 (an
        upper bound for larger m, where LAPACK's syevd does a larger share in BLAS-3).
    write_bytes_per_s, read_bytes_per_s : float
        Gram-store chunk writes, and whole-chunk reads with the CRC check (chunk bytes; the
        chunks are in the page cache).
    disk_read_bytes_per_s : float
        Cold reads from this disk by 2 readers (0: not measured; passes over a store larger
        than the page cache run at this rate at best).
    cast_entry_s, gemv_entry_s : float
        float32 → float64 cast, and one ``K @ v`` product, per matrix entry.
    build_fixed_s : float
        Fixed cost of a ``build_gram`` call on the in-process runner (store creation,
        statistics pass, chunk listings, metadata).
    worker_warmup_s : float
        What a fresh worker process spends before its first tile (kernel imports, numba
        loading its cached fused kernels); ``machine['warmup_from']`` says how it was timed.
    worker_rss_bytes : int
        A worker's baseline: resident memory of the client's workers after loading the
        kernels, else the peak of the warm-up subprocess (0 when neither was measured:
        ``process_rss_bytes`` stands in).
    process_rss_bytes : int
        Resident memory of this process after the measurements (the client's baseline).
    efficiency : float
        Per-slot parallel efficiency (measured with a client, else :data:`DEFAULT_EFFICIENCY`).
    task_overhead_s, phase_latency_s : float
        Dask cost per task and per submit/gather phase (measured with a client).
    measured_with_client : bool
    pass_fixed_s, pass_entry_s, pass_column_s, pass_workers : float, float, float, int
        A real ``StoredGram.matvec`` on the calibration cluster of ``pass_workers`` workers:
        ``fixed + n² (entry + (cols - 10) column)`` seconds (0: not measured, the pass is
        modelled from the in-process rates above).
    machine : dict
        Host, CPU count, platform, numpy version, wall seconds of the calibration.
    """

    d: int
    arch: str
    n_activations: int
    kernel_tile: int
    kernel_entry_s: float
    tile_gemm_flops: float
    gemm_flops: float
    cholesky_flops: float
    eigh_s_per_n3: float
    write_bytes_per_s: float
    read_bytes_per_s: float
    cast_entry_s: float
    gemv_entry_s: float
    build_fixed_s: float
    process_rss_bytes: int
    worker_warmup_s: float = DEFAULT_WORKER_WARMUP_S
    worker_rss_bytes: int = 0
    efficiency: float = DEFAULT_EFFICIENCY
    task_overhead_s: float = DEFAULT_TASK_OVERHEAD_S
    phase_latency_s: float = DEFAULT_PHASE_LATENCY_S
    measured_with_client: bool = False
    pass_fixed_s: float = 0.0
    pass_entry_s: float = 0.0
    pass_column_s: float = 0.0
    pass_workers: int = 0
    disk_read_bytes_per_s: float = 0.0
    machine: dict = field(default_factory=dict)

    @property
    def elementwise_entry_s(self) -> float:
        """Kernel seconds per entry beyond the input GEMM (``>= 0``)."""
        return max(self.kernel_entry_s - 2.0 * self.d / self.tile_gemm_flops, 0.0)

    def entry_seconds(self, d: int, n_activations: Optional[int] = None) -> float:
        """Predicted single-thread seconds per kernel entry at input width ``d``.

        ``2 d / tile_gemm_flops`` plus the elementwise part, scaled by
        ``n_activations / self.n_activations`` when another architecture is planned.
        """
        ew = self.elementwise_entry_s
        if n_activations is not None and self.n_activations > 0:
            ew *= max(n_activations, 1) / self.n_activations
        return 2.0 * d / self.tile_gemm_flops + ew

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Calibration":
        fields = cls.__dataclass_fields__
        missing = sorted(n for n, f in fields.items() if n not in data
                         and f.default is MISSING and f.default_factory is MISSING)
        unknown = sorted(set(data) - set(fields))
        if missing or unknown:
            raise ValueError(f"not a Calibration: missing {missing}, unknown {unknown}; "
                             "re-run ntkscale.plan.calibrate to refresh the cache")
        return cls(**data)

    def save(self, path: str) -> None:
        """Write JSON (atomic replace), marked as ntkscale's (``"ntkscale": "calibration"``); a
        file that ntkscale did not write is never replaced (:class:`UnsafePathError`)."""
        from ..storage.ownership import check_target_file

        check_target_file(path, key="calibration file")
        tmp = f"{path}.tmp"
        with open(tmp, "w") as f:
            json.dump({"ntkscale": "calibration", **self.to_dict()}, f, indent=2, sort_keys=True)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str) -> "Calibration":
        with open(path) as f:
            data = json.load(f)
        if isinstance(data, dict):
            data.pop("ntkscale", None)
        return cls.from_dict(data)


def calibrate(d: int, arch: Layer, *, seconds: float = 3.0, client: Any = None,
              tile: int = 1024, cache: Optional[str] = None, warmup: bool = True,
              store: Optional[str] = None) -> Calibration:
    """Measure this machine's kernel, dense-algebra and Gram-store rates (a few seconds).

    Parameters
    ----------
    d : int
        Input width (features) of the planned job.
    arch : Layer
        The planned architecture (``stax.serial(...)``); its kernel tile is timed.
    seconds : float
        Time budget of the measurements (the numba warm-up and store creation come on top;
        ``seconds=3`` takes ~4-6 s in all, plus 1-4 s for the warm-up subprocess).
    client : distributed.Client, optional
        Time the kernel on this cluster's workers (alone and all at once: the per-slot
        efficiency) and measure task overhead and latency. Leaves the workers warm.
    tile : int
        Edge of the timed kernel tile and store chunks (1024: the fused kernel's regime).
    cache : str, optional
        JSON path: load it when it holds a calibration for the same ``d``, architecture and
        host; otherwise measure and write it.
    warmup : bool
        Time a fresh worker's warm-up (False: :data:`DEFAULT_WORKER_WARMUP_S`, for plans of
        builds on workers that are already warm).
    store : str, optional
        A local Gram store (the job's, once built): the cold disk rate is measured on its
        chunk files (:func:`~ntkscale.plan._measure.store_read_rate`) instead of fresh files,
        which a virtual disk's host cache can serve faster than a pass ever reads.

    Returns
    -------
    Calibration

    Notes
    -----
    Medians over repetitions. On a shared machine the rates include the load at the time
    of the call, which is what a job started right after will see.
    """
    if not isinstance(arch, Layer):
        raise TypeError(f"arch must be an ntkscale architecture (stax.serial(...)), got {type(arch).__name__}")
    if not isinstance(d, (int, np.integer)) or d < 1:
        raise ValueError(f"d must be a positive int (input features), got {d!r}")
    if not (seconds > 0):
        raise ValueError(f"seconds must be > 0, got {seconds!r}")
    spec = spec_json(arch)
    host = platform.node()
    if cache is not None and os.path.exists(cache):
        try:
            cal = Calibration.load(cache)
        except (ValueError, json.JSONDecodeError):
            cal = None
        if cal is not None and cal.d == d and cal.arch == spec and cal.machine.get("host") == host \
                and (client is None or cal.measured_with_client):
            return cal
    n_act, _ = n_activations(arch, int(d))
    t_start = time.perf_counter()
    if warmup:
        warmup_s, worker_rss, warmup_from = worker_warmup(arch, int(d))
    else:
        warmup_s, worker_rss, warmup_from = DEFAULT_WORKER_WARMUP_S, 0, "default (not measured)"
    tmp = tempfile.mkdtemp(prefix="ntkscale-calibrate-")
    try:
        with single_thread():
            entry_s, tile_gemm = kernel_rates(arch, int(d), int(tile), 0.35 * seconds)
            gemm, chol, eig = dense_rates(0.25 * seconds)
            write, read, cast, gemv = store_rates(tmp, int(tile), 0.25 * seconds)
            disk_store = store_read_rate(store) if store and os.path.isdir(store) else None
            disk = disk_store or disk_read_rate(tmp)
            fixed = build_fixed(tmp, arch, int(d))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    extra: dict[str, Any] = {}
    client_entry = entry_s
    if client is not None:
        worker_entry, eff, per_task, latency, worker_rss = client_rates(client, arch, int(d), int(tile),
                                                                        0.4 * seconds)
        ptmp = tempfile.mkdtemp(prefix="ntkscale-calibrate-pass-")
        try:
            p_fixed, p_entry, p_col, p_workers = stored_pass_rates(ptmp, client)
        finally:
            shutil.rmtree(ptmp, ignore_errors=True)
        extra = dict(efficiency=eff, task_overhead_s=per_task, phase_latency_s=latency,
                     measured_with_client=True, pass_fixed_s=p_fixed, pass_entry_s=p_entry,
                     pass_column_s=p_col, pass_workers=p_workers)
        entry_s, client_entry = worker_entry, entry_s
    import psutil

    cal = Calibration(
        d=int(d), arch=spec, n_activations=int(n_act), kernel_tile=int(tile), kernel_entry_s=entry_s,
        tile_gemm_flops=tile_gemm, gemm_flops=gemm, cholesky_flops=chol, eigh_s_per_n3=eig,
        write_bytes_per_s=write, read_bytes_per_s=read, cast_entry_s=cast, gemv_entry_s=gemv,
        build_fixed_s=fixed, disk_read_bytes_per_s=disk, process_rss_bytes=int(psutil.Process().memory_info().rss),
        worker_warmup_s=warmup_s, worker_rss_bytes=worker_rss,
        machine={"host": host, "warmup_from": warmup_from, "cpus": os.cpu_count(), "platform": platform.platform(),
                 "numpy": np.__version__, "seconds": time.perf_counter() - t_start,
                 "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
                 "kernel_entry_s_this_process": client_entry,
                 "disk_rate_from": "store chunks" if disk_store else "fresh files"},
        **extra)
    if cache is not None:
        cal.save(cache)
    return cal
