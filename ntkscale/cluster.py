"""How a Dask client is obtained: local default, scheduler address, existing Client.

``client=None`` starts a ``distributed.LocalCluster`` with worker *processes*
sized to the machine: one single-threaded worker per core, with BLAS, OpenMP
and numba pinned to one thread each so 2 cores never run 4+ busy threads.
``client="sync"`` runs tasks in this process, one after another (tests, tiny
problems, ``memory://`` stores).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Optional, Union

__all__ = ["Runner", "get_runner", "pinned_env", "local_cluster"]

log = logging.getLogger("ntkscale")

SYNC = "sync"


def pinned_env(threads: int = 1) -> dict[str, str]:
    """Environment for worker processes: every thread pool sized to ``threads``."""
    t = str(int(threads))
    return {"OMP_NUM_THREADS": t, "OPENBLAS_NUM_THREADS": t, "MKL_NUM_THREADS": t,
            "BLIS_NUM_THREADS": t, "VECLIB_MAXIMUM_THREADS": t, "NUMEXPR_NUM_THREADS": t,
            "NUMBA_NUM_THREADS": t}


def local_cluster(n_workers: Optional[int] = None, threads_per_worker: int = 1,
                  memory_limit: Union[str, float, None] = "auto", dashboard_address: Optional[str] = ":0",
                  **kwargs: Any) -> Any:
    """A ``LocalCluster`` of worker processes with pinned thread pools.

    ``n_workers`` defaults to ``cores // threads_per_worker`` so that
    workers x threads = cores.
    """
    from distributed import LocalCluster

    cores = os.cpu_count() or 1
    n = n_workers or max(1, cores // threads_per_worker)
    return LocalCluster(n_workers=n, threads_per_worker=threads_per_worker, processes=True,
                        memory_limit=memory_limit, dashboard_address=dashboard_address,
                        env=pinned_env(threads_per_worker), **kwargs)


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


def get_runner(client: Any = None, *, quiet: bool = False) -> Runner:
    """Resolve ``client``: None (start a local cluster), ``"sync"``, an address
    string (``tcp://host:8786`` or ``tls://...``), or a ``distributed.Client``."""
    if isinstance(client, str) and client.lower() in (SYNC, "synchronous"):
        return Runner(None)
    from distributed import Client

    if client is None:
        cluster = local_cluster()
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
