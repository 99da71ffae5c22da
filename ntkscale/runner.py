"""How a Dask client is obtained: local default, scheduler address, existing Client.

``client=None`` starts a ``distributed.LocalCluster`` with worker *processes*
sized to the machine: one single-threaded worker per core, with BLAS, OpenMP
and numba pinned to one thread each so 2 cores never run 4+ busy threads.
``client="sync"`` runs tasks in this process, one after another (tests, tiny
problems, ``memory://`` stores). For GPU tiles, :func:`local_gpu_cluster` starts one
worker process per GPU, each seeing only its own (``CUDA_VISIBLE_DEVICES``).
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass
import subprocess
from functools import lru_cache
from typing import Any, Iterator, Optional, Sequence, Union

__all__ = ["Runner", "get_runner", "pinned_env", "local_cluster", "local_gpu_cluster", "visible_gpus"]

log = logging.getLogger("ntkscale")

SYNC = "sync"


def pinned_env(threads: int = 1) -> dict[str, str]:
    """Environment for worker processes: every thread pool sized to ``threads``."""
    t = str(int(threads))
    return {"OMP_NUM_THREADS": t, "OPENBLAS_NUM_THREADS": t, "MKL_NUM_THREADS": t,
            "BLIS_NUM_THREADS": t, "VECLIB_MAXIMUM_THREADS": t, "NUMEXPR_NUM_THREADS": t,
            "NUMBA_NUM_THREADS": t}


#: pins a library reads once when it loads (NumPy imports OpenBLAS before Dask applies a
#: Nanny's ``env=`` in the worker): they go in before the worker process starts. numba's is
#: read at its (later) import and stays in ``env=``
_PRE_SPAWN_PINS = tuple(k for k in pinned_env() if k != "NUMBA_NUM_THREADS")


@contextmanager
def _pins_before_spawn(threads: int) -> Iterator[None]:
    """The BLAS/OpenMP pins for ``threads`` in the environment the Nannies made inside spawn
    their workers with.

    A Nanny's ``env=`` reaches the worker only after NumPy has loaded OpenBLAS, so with 2 threads
    per worker NumPy's BLAS ran on 1 (measured; SciPy's, loaded later, on 2). Dask sets its
    ``distributed.nanny.pre-spawn-environ`` before the spawn, but takes a variable from
    ``os.environ`` over that configuration, and writes the values into ``os.environ`` itself: a
    first cluster's pins would decide every later one's. So the pins go into ``os.environ`` and
    the configuration for the Nannies' creation, and ``os.environ`` is put back as it was
    afterwards (each Nanny keeps its copy for restarts). numba reads ``NUMBA_NUM_THREADS`` when it
    is imported, later, so it stays in ``env=``.
    """
    import dask

    pins = {k: v for k, v in pinned_env(threads).items() if k in _PRE_SPAWN_PINS}
    pre = {**dask.config.get("distributed.nanny.pre-spawn-environ", default={}), **pins}
    saved = {k: os.environ.get(k) for k in pins}
    os.environ.update(pins)
    try:
        with dask.config.set({"distributed.nanny.pre-spawn-environ": pre}):
            yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def local_cluster(n_workers: Optional[int] = None, threads_per_worker: int = 1,
                  memory_limit: Union[str, float, None] = "auto", dashboard_address: Optional[str] = ":0",
                  **kwargs: Any) -> Any:
    """A ``LocalCluster`` of worker processes with pinned thread pools.

    ``n_workers`` defaults to ``cores // threads_per_worker`` so that
    workers x threads = cores. The pins are set before each worker process starts
    (:func:`_pins_before_spawn`).
    """
    from distributed import LocalCluster

    cores = os.cpu_count() or 1
    n = n_workers or max(1, cores // threads_per_worker)
    with _pins_before_spawn(threads_per_worker):
        return LocalCluster(n_workers=n, threads_per_worker=threads_per_worker, processes=True,
                            memory_limit=memory_limit, dashboard_address=dashboard_address,
                            env=pinned_env(threads_per_worker), **kwargs)


def visible_gpus() -> list[str]:
    """GPU ids this process may use: ``CUDA_VISIBLE_DEVICES`` when set (up to its first
    invalid entry, as CUDA reads it), else the GPUs ``nvidia-smi -L`` lists; ``[]`` without
    a driver. Cheap: no CUDA context is created."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        out = []
        for g in (g.strip() for g in env.split(",")):
            if not g or g.startswith("-"):
                break
            out.append(g)
        return out
    try:
        r = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return []
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("GPU ")] if r.returncode == 0 else []
    return [str(i) for i in range(len(lines))]


def local_gpu_cluster(gpus: Optional[Sequence[str]] = None, threads_per_worker: int = 1,
                      memory_limit: Union[str, float, None] = "auto",
                      dashboard_address: Optional[str] = ":0", **kwargs: Any) -> Any:
    """One worker process per GPU, each with ``CUDA_VISIBLE_DEVICES`` set to its own GPU.

    Parameters
    ----------
    gpus : sequence of str, optional
        GPU ids (default :func:`visible_gpus`); one worker each, named ``gpu-<id>``.
    threads_per_worker, memory_limit, dashboard_address, **kwargs
        As for :func:`local_cluster` (``memory_limit="auto"``: host memory / workers).

    Notes
    -----
    ``dask_cuda.LocalCUDACluster`` when dask-cuda is installed (it sets each worker's
    ``CUDA_VISIBLE_DEVICES``, own GPU first, and does not apply the thread pins); otherwise
    a ``LocalCluster`` whose worker specs add ``CUDA_VISIBLE_DEVICES=<id>`` to the pinned
    environment. Either way a worker's own GPU is its device 0. JAX's up-front grab of 75 %
    of the GPU's memory is turned off in the plain LocalCluster's workers (``XLA_PYTHON_CLIENT_PREALLOCATE=false``
    unless set): a tile needs a few GB, and CuPy or a client process may share the GPU.
    """
    gpus = [str(g) for g in (visible_gpus() if gpus is None else gpus)]
    if not gpus:
        raise RuntimeError("no GPU visible (CUDA_VISIBLE_DEVICES is empty or nvidia-smi lists none); "
                           "use device='cpu', or run on a machine with an NVIDIA GPU and driver")
    try:
        from dask_cuda import LocalCUDACluster
    except ImportError:
        LocalCUDACluster = None
    if LocalCUDACluster is not None:
        return LocalCUDACluster(CUDA_VISIBLE_DEVICES=",".join(gpus), n_workers=len(gpus),
                                threads_per_worker=threads_per_worker, memory_limit=memory_limit,
                                dashboard_address=dashboard_address, **kwargs)
    if memory_limit == "auto":
        from distributed.system import MEMORY_LIMIT

        memory_limit = int(MEMORY_LIMIT / len(gpus))
    with _pins_before_spawn(threads_per_worker):
        cluster = _gpu_cluster_class()(gpus, n_workers=0, threads_per_worker=threads_per_worker,
                                       processes=True, memory_limit=memory_limit,
                                       dashboard_address=dashboard_address,
                                       env={**pinned_env(threads_per_worker), "XLA_PYTHON_CLIENT_PREALLOCATE":
                                            os.environ.get("XLA_PYTHON_CLIENT_PREALLOCATE", "false")},
                                       **kwargs)
        try:  # the Nannies are made (and read the pre-spawn pins) here
            cluster.scale(len(gpus))
            cluster.wait_for_workers(len(gpus), timeout=120)
        except BaseException:
            cluster.close()
            raise
    return cluster


@lru_cache(maxsize=1)
def _gpu_cluster_class() -> type:
    from copy import deepcopy

    from distributed import LocalCluster

    class GPULocalCluster(LocalCluster):
        """LocalCluster whose workers each get one GPU (``CUDA_VISIBLE_DEVICES=<id>``)."""

        def __init__(self, gpus: Sequence[str], **kwargs: Any):
            self.gpus = list(gpus)
            super().__init__(**kwargs)

        def new_worker_spec(self) -> dict:
            free = [g for g in self.gpus if f"gpu-{g}" not in self.worker_spec]
            if not free:
                raise ValueError(f"every GPU ({', '.join(self.gpus)}) has its worker already")
            spec = deepcopy(self.new_spec)
            spec["options"]["env"] = {**spec["options"].get("env", {}), "CUDA_VISIBLE_DEVICES": free[0]}
            return {f"gpu-{free[0]}": spec}

    return GPULocalCluster


@dataclass(frozen=True)
class HostSlot:
    """A machine of the cluster: its host address, the worker that leads there, the worker
    threads and memory limit of all its workers, and how many workers it runs."""

    host: str
    leader: str
    threads: int
    memory: float
    workers: int


@dataclass
class Runner:
    """Where tasks run: a distributed Client, or this process (``client is None``)."""

    client: Any = None
    owned: Any = None  # a cluster we started and must close
    owns_client: bool = False  # a Client we created (from None or an address)

    @property
    def is_sync(self) -> bool:
        return self.client is None

    def slots(self) -> int:
        """Parallel task slots (total worker threads)."""
        if self.client is None:
            return 1
        info = self.client.scheduler_info()
        return max(1, sum(w.get("nthreads", 1) for w in info.get("workers", {}).values()))

    def memory_per_slot(self) -> float:
        """Bytes of worker memory per task slot (smallest worker)."""
        if self.client is None:
            try:
                total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
            except (ValueError, OSError):  # pragma: no cover
                total = 4 * 2**30
            return total / 2
        per = [w.get("memory_limit") or 0 for w in self.client.scheduler_info()["workers"].values()]
        threads = [w.get("nthreads", 1) for w in self.client.scheduler_info()["workers"].values()]
        vals = [m / t for m, t in zip(per, threads) if m]
        return min(vals) if vals else 4 * 2**30

    def hosts(self) -> list[HostSlot]:
        """One :class:`HostSlot` per machine of the cluster (workers grouped by their host
        address; the first worker, by address, leads). Empty for this process."""
        if self.client is None:
            return []
        try:
            workers = self.client.scheduler_info(n_workers=-1)["workers"]
        except TypeError:  # pragma: no cover - distributed before n_workers
            workers = self.client.scheduler_info()["workers"]
        groups: dict[str, list[tuple[str, dict]]] = {}
        for addr, w in sorted(workers.items()):
            groups.setdefault(str(w.get("host") or addr.rsplit(":", 1)[0]), []).append((addr, w))
        return [HostSlot(host, ws[0][0], sum(int(w.get("nthreads", 1)) for _, w in ws),
                         float(sum(w.get("memory_limit") or 0 for _, w in ws)) or 4.0 * 2**30, len(ws))
                for host, ws in groups.items()]

    def dashboard(self) -> Optional[str]:
        return None if self.client is None else getattr(self.client, "dashboard_link", None)

    def close(self) -> None:
        """Close what this runner created (never a Client passed in by the caller)."""
        if self.owns_client and self.client is not None:
            self.client.close()
        if self.owned is not None:
            self.owned.close()
        self.owned = None
        if self.owns_client:
            self.client = None


def get_runner(client: Any = None, *, quiet: bool = False, gpus: bool = False) -> Runner:
    """Resolve ``client``: None (start a local cluster), ``"sync"``, an address
    string (``tcp://host:8786`` or ``tls://...``), or a ``distributed.Client``.
    ``gpus``: the local cluster started for ``None`` runs one worker per GPU."""
    if isinstance(client, str) and client.lower() in (SYNC, "synchronous"):
        return Runner(None)
    from distributed import Client

    if client is None:
        cluster = local_gpu_cluster() if gpus else local_cluster()
        runner = Runner(Client(cluster), owned=cluster, owns_client=True)
    elif isinstance(client, str):
        runner = Runner(Client(client), owns_client=True)
    elif isinstance(client, Client):
        runner = Runner(client)
    else:
        raise TypeError(f"client must be None, 'sync', a scheduler address or a distributed.Client, "
                        f"got {type(client).__name__}")
    if not quiet and runner.dashboard():
        log.info("Dask dashboard: %s", runner.dashboard())
    return runner
