"""Start or connect the cluster a :class:`ClusterSpec` describes; one handle to close it.

>>> from ntkscale.clusters import start_cluster, validate_cluster
>>> spec = validate_cluster({"kind": "sync"}, environ={})
>>> with start_cluster(spec) as h:
...     h.describe()["kind"]
'sync'

Library functions take ``client=handle.client_arg`` (a ``distributed.Client``, or
``"sync"``); they wrap it in a non-owning :class:`ntkscale.runner.Runner`, so only
:meth:`ClusterHandle.close` shuts the cluster down.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Optional

from ..runner import Runner, local_cluster, local_gpu_cluster, visible_gpus
from .spec import ClusterSpec
from .tls import make_security

__all__ = ["ClusterHandle", "start_cluster"]

log = logging.getLogger("ntkscale")


@dataclass
class ClusterHandle:
    """A running (or connected) cluster: the client, the cluster object we own, the spec.

    Attributes
    ----------
    spec : ClusterSpec
    client : distributed.Client or None
        ``None`` for ``kind = "sync"``.
    cluster : object or None
        The ``LocalCluster``/``SLURMCluster``/``KubeCluster`` we started (``None`` for
        ``address`` and ``sync``: nothing of ours to shut down but the client).
    runner : ntkscale.runner.Runner
        Non-owning runner over ``client`` for library code that takes a Runner.
    """

    spec: ClusterSpec
    client: Any = None
    cluster: Any = None
    runner: Optional[Runner] = None
    ledger: Any = None  # ntkscale.clusters.ledger.WorkerLedger, from start_ledger()

    def __post_init__(self) -> None:
        if self.runner is None:
            self.runner = Runner(self.client)

    @property
    def client_arg(self) -> Any:
        """What to pass as ``client=`` to library functions (the Client, or ``"sync"``)."""
        return self.client if self.client is not None else "sync"

    @property
    def address(self) -> Optional[str]:
        """The scheduler address (``None`` for ``sync``)."""
        if self.client is None:
            return None
        return self.client.scheduler.address

    @property
    def dashboard(self) -> Optional[str]:
        """The dashboard URL, when the scheduler serves one."""
        if self.client is None or (not self.spec.dashboard and self.spec.kind != "address"):
            return None
        try:
            info = self.client.scheduler_info()
            if "dashboard" not in info.get("services", {}):
                return None
            return self.client.dashboard_link
        except Exception:  # pragma: no cover - a scheduler without the http services
            return None

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary for run reports.

        Returns
        -------
        dict
            ``kind``, ``address``, ``workers`` (connected now), ``threads`` (total task
            slots), ``threads_per_worker`` (configured), ``memory_per_worker`` (bytes,
            smallest worker), ``dashboard``,
            ``tls`` (bool), ``env_overrides`` (``{dotted key: variable}``).
        """
        out: dict[str, Any] = {"kind": self.spec.kind, "address": self.address, "workers": 0, "threads": 1,
                               "threads_per_worker": self.spec.threads_per_worker, "memory_per_worker": None, "dashboard": self.dashboard,
                               "tls": self.spec.tls is not None, "env_overrides": dict(self.spec.env_overrides)}
        if self.client is not None:
            workers = self.client.scheduler_info().get("workers", {})
            out["workers"] = len(workers)
            out["threads"] = sum(w.get("nthreads", 1) for w in workers.values())
            mem = [w.get("memory_limit") or 0 for w in workers.values()]
            out["memory_per_worker"] = min(mem) if mem and min(mem) else None
        else:
            out["workers"] = 1
        return out

    def requested(self) -> dict[str, Any]:
        """What the ``[cluster]`` section asked for (workers, threads, memory; SLURM jobs,
        Kubernetes replicas), to set beside what joined."""
        s = self.spec
        out: dict[str, Any] = {"workers": s.workers, "threads_per_worker": s.threads_per_worker,
                               "memory_limit": s.memory_limit}
        if s.slurm is not None:
            out["slurm"] = {k: getattr(s.slurm, k) for k in ("jobs", "processes", "cores", "memory",
                                                              "gpus_per_job", "walltime")}
        if s.kubernetes is not None:
            out["kubernetes"] = {"n_workers": s.kubernetes.n_workers, "gpus": s.kubernetes.gpus,
                                 "resources": {k: dict(v) for k, v in s.kubernetes.resources.items()}}
        return out

    def start_ledger(self, t0: Optional[float] = None) -> Any:
        """Start recording every worker that joins or leaves (:mod:`ntkscale.clusters.ledger`);
        ``t0``: ``time.time()`` at the run start. ``None`` for ``sync``."""
        if self.client is not None and self.ledger is None:
            from .ledger import WorkerLedger

            self.ledger = WorkerLedger(self.client, t0)
        return self.ledger

    def record(self, stages: Optional[dict[str, Any]] = None, end: Optional[float] = None) -> dict[str, Any]:
        """The run record's ``cluster``: :meth:`describe`, the requested spec and what ran.

        Parameters
        ----------
        stages : dict, optional
            ``{stage: [start, end]}`` in seconds since the run start (attributes events to stages).
        end : float, optional
            Seconds since the run start for the ``final`` counts (default: now).

        Returns
        -------
        dict
            :meth:`describe`'s keys, with ``workers``, ``threads`` and ``memory_per_worker``
            the most that ran at once; ``requested``; ``source`` (``"scheduler-plugin"``,
            ``"polled"`` or ``"none"``) and :func:`ntkscale.clusters.ledger.summarize`'s keys
            (``workers_joined``, ``at_stage_start``, ``max``, ``final``, ``lost``, ``joined_late``).
        """
        from .ledger import summarize

        out = self.describe()
        out["requested"] = self.requested()
        if self.client is None:
            out.update(source="none", workers_joined=[], lost=[], joined_late=[],
                       note="kind = sync: no workers, tasks ran in the client process")
            return out
        ledger = self.start_ledger()
        workers = ledger.workers()
        end = ledger.now() if end is None else end  # after the poll: what it saw is before `end`
        out.update(summarize(workers, dict(stages or {}), end), source=ledger.source)
        if ledger.error:
            out["ledger_error"] = ledger.error
        peak = out["max"]
        out.update(workers=peak["workers"], threads=peak["threads"], memory_per_worker=min(
            (w["memory_limit"] for w in out["workers_joined"] if w["memory_limit"]), default=None))
        return out

    def close(self) -> None:
        """Close the client, then the cluster we started (idempotent)."""
        client, cluster, ledger = self.client, self.cluster, self.ledger
        self.client = self.cluster = self.ledger = None
        self.runner = Runner(None)
        try:
            if ledger is not None:
                ledger.close()
            if client is not None:
                client.close()
        finally:
            if cluster is not None:
                cluster.close()

    def __enter__(self) -> "ClusterHandle":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _local(spec: ClusterSpec, security: Any, gpus: bool = False) -> Any:
    kwargs: dict[str, Any] = {}
    if spec.local_directory:
        kwargs["local_directory"] = spec.local_directory
    if not spec.dashboard:  # the scheduler's HTTP server (/health) still listens, on a free port
        kwargs["scheduler_kwargs"] = {"dashboard": False}
    if security is not None:
        kwargs.update(security=security, protocol="tls://", host="127.0.0.1")
    if gpus:  # one worker per GPU: the first `workers` GPUs, or all of them
        ids = visible_gpus()
        if spec.workers and spec.workers > len(ids):
            raise ValueError(f"cluster.workers = {spec.workers} but {len(ids)} GPU(s) are visible; GPU tiles "
                             "run one worker per GPU: lower workers or leave it out")
        return local_gpu_cluster(ids[: spec.workers or len(ids)], threads_per_worker=spec.threads_per_worker,
                                 memory_limit=spec.memory_limit, dashboard_address=":0", **kwargs)
    return local_cluster(n_workers=spec.workers, threads_per_worker=spec.threads_per_worker,
                         memory_limit=spec.memory_limit, dashboard_address=":0",
                         **kwargs)


def start_cluster(spec: ClusterSpec, *, timeout: float = 120.0, gpus: bool = False) -> ClusterHandle:
    """Start (or connect to) the cluster ``spec`` describes and return its handle.

    Parameters
    ----------
    spec : ClusterSpec
        From :func:`ntkscale.clusters.validate_cluster`.
    timeout : float
        Seconds to wait for the scheduler (``address``) and, for ``local``, for all
        workers. SLURM and Kubernetes workers arrive when their jobs/pods start; the
        handle is returned without waiting for them.
    gpus : bool
        ``local`` only: one worker process per visible GPU, each seeing only its own
        (:func:`ntkscale.runner.local_gpu_cluster`); other kinds place GPU workers
        themselves (``slurm.gpus_per_job``, ``kubernetes.gpus``, ``dask worker`` with
        ``CUDA_VISIBLE_DEVICES``).

    Returns
    -------
    ClusterHandle
        Use as a context manager, or call :meth:`ClusterHandle.close`.

    Notes
    -----
    ``local``: ``LocalCluster`` of worker processes with pinned thread pools
    (:func:`ntkscale.runner.local_cluster`), TLS when ``[cluster.tls]`` is set.
    ``address``: a ``Client`` to an existing scheduler (with ``Security`` for tls://).
    ``slurm``: ``dask_jobqueue.SLURMCluster`` scaled to ``slurm.jobs`` jobs.
    ``kubernetes``: ``dask_kubernetes.operator.KubeCluster`` from :func:`kubernetes_manifest`.
    ``sync``: no cluster; tasks run in this process.
    """
    if spec.kind == "sync":
        return ClusterHandle(spec)
    from distributed import Client

    roles = ("client",) if spec.kind == "address" else ("client", "scheduler", "worker")
    security = make_security(spec, roles)
    cluster = None
    try:
        if spec.kind == "local":
            cluster = _local(spec, security, gpus)
            client = Client(cluster, security=security, timeout=timeout)
            client.wait_for_workers(len(cluster.workers), timeout=timeout)
        elif spec.kind == "address":
            client = Client(spec.address, security=security, timeout=timeout)
        elif spec.kind == "slurm":
            from .slurm import start_slurm

            cluster = start_slurm(spec, security)
            client = Client(cluster, security=security, timeout=timeout)
        elif spec.kind == "kubernetes":
            from .kubernetes import start_kubernetes

            cluster = start_kubernetes(spec, security)
            client = Client(cluster, timeout=timeout)
        else:  # pragma: no cover - validate_cluster rejects other kinds
            raise ValueError(f"unknown cluster kind {spec.kind!r}")
    except BaseException:
        if cluster is not None:
            cluster.close()
        raise
    handle = ClusterHandle(spec, client=client, cluster=cluster)
    if handle.dashboard:
        log.info("Dask dashboard: %s", handle.dashboard)
    return handle
