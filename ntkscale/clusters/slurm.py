"""``kind = "slurm"``: a ``dask_jobqueue.SLURMCluster`` whose jobs run pinned workers.

The scheduler runs in the process that calls :func:`start_cluster` (a login or batch
node, see ``deploy/slurm/launch.sbatch``); each SLURM job runs ``processes`` workers with
``cores / processes`` threads each, and the job script exports the pinned thread-pool
environment (:func:`ntkscale.runner.pinned_env`) after the user's prologue so a
``module load`` cannot undo it. With ``gpus_per_job = N`` the job asks for
``--gres=gpu:N`` and runs ``dask cuda worker`` (``dask_cuda.CUDAWorker``: one worker per
GPU, pinned to it through ``CUDA_VISIBLE_DEVICES``).

Lost worker jobs (``scancel``, walltime reached, node failure) are **resubmitted**: the
cluster runs ``adapt(minimum_jobs=jobs, maximum_jobs=jobs)``, so once the scheduler has
forgotten a lost job (``distributed.deploy.lost-worker-timeout``, 15 s) a new job with the
same name is submitted; the tasks of the lost workers run again on the others meanwhile.
When no worker at all is connected for ``[cluster.slurm] worker_timeout`` (default 1 h:
jobs pending in a busy queue, or failing at start), the scheduler fails the waiting tasks
(``distributed.scheduler.no-workers-timeout``) and :class:`QueueWatch` logs the timeout and
``squeue``'s view of the worker jobs, so the run ends with a clear error instead of hanging.
"""

from __future__ import annotations

import logging
import subprocess
import time
from typing import Any, Optional

from .._config import ConfigError
from ..runner import pinned_env
from .spec import ClusterSpec

__all__ = ["QueueWatch", "slurm_cluster_kwargs", "slurm_job_script", "start_slurm"]

log = logging.getLogger("ntkscale")

CUDA_WORKER_COMMAND = "dask cuda worker"  # run as `python -m dask cuda worker` (dask's CLI entry point)


def _import_slurm_cluster() -> Any:
    try:
        from dask_jobqueue import SLURMCluster
    except ImportError as e:
        raise ImportError("kind = 'slurm' needs dask-jobqueue: pip install 'ntkscale[slurm]' "
                          "(or pip install dask-jobqueue)") from e
    return SLURMCluster


def slurm_cluster_kwargs(spec: ClusterSpec, security: Optional[Any] = None) -> dict[str, Any]:
    """Keyword arguments for ``dask_jobqueue.SLURMCluster`` from a ``kind = "slurm"`` spec.

    Parameters
    ----------
    spec : ClusterSpec
        With ``spec.slurm`` set.
    security : distributed.security.Security, optional
        From :func:`ntkscale.clusters.tls.make_security`; jobqueue turns its worker
        certificates into ``--tls-*`` flags of the worker command.
    """
    s = spec.slurm
    if s is None:
        raise ConfigError(f"kind = {spec.kind!r} has no [cluster.slurm] settings; set kind = 'slurm'")
    threads = s.cores // s.processes
    pins = [f"export {k}={v}" for k, v in pinned_env(threads).items()]
    directives = list(s.job_extra_directives)
    if s.gpus_per_job:
        directives.append(f"--gres=gpu:{s.gpus_per_job}")
    kw: dict[str, Any] = dict(
        cores=s.cores, memory=s.memory, processes=s.processes, walltime=s.walltime,
        job_extra_directives=directives, job_script_prologue=[*s.job_script_prologue, *pins],
        local_directory=spec.local_directory, log_directory=s.log_directory,
        scheduler_options={"dashboard_address": ":8787"} if spec.dashboard else {"dashboard": False})
    for k in ("queue", "account", "interface", "python"):
        if getattr(s, k) is not None:
            kw[k] = getattr(s, k)
    if s.gpus_per_job:
        kw["worker_command"] = CUDA_WORKER_COMMAND
        kw["worker_extra_args"] = []  # `dask cuda worker` has no --nanny/--nworkers
    if spec.tls is not None:
        kw["protocol"] = "tls://"
        kw["security"] = security
    return kw


def slurm_job_script(spec: ClusterSpec, security: Optional[Any] = None) -> str:
    """The ``sbatch`` script one worker job would run (no SLURM needed to generate it).

    Builds ``SLURMCluster(**slurm_cluster_kwargs(spec))`` (which starts a scheduler in
    this process, the address written into the script), returns ``job_script()`` and
    closes the cluster again.
    """
    SLURMCluster = _import_slurm_cluster()
    if spec.tls is not None and security is None:
        from .tls import make_security

        security = make_security(spec, roles=("client", "scheduler", "worker"))
    cluster = SLURMCluster(**slurm_cluster_kwargs(spec, security))
    try:
        return cluster.job_script()
    finally:
        cluster.close()


def queue_state(cluster: Any) -> str:
    """``squeue``'s line for each worker job of ``cluster`` (id, state, reason), or why there is none."""
    ids = [str(j.job_id) for j in list(getattr(cluster, "workers", {}).values()) if getattr(j, "job_id", None)]
    if not ids:
        return "no worker job submitted"
    try:
        r = subprocess.run(["squeue", "-h", "-j", ",".join(ids), "-o", "job %i %T (%r)"],
                           capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"squeue failed: {e}"
    out = (r.stdout.strip() or r.stderr.strip()).replace("\n", "; ")
    return f"squeue: {out}" if out else f"jobs {', '.join(ids)} are no longer in the queue (ended)"


class QueueWatch:
    """Logs, once, when no worker has been connected to ``cluster`` for ``timeout`` seconds.

    Runs as a periodic callback on the cluster's event loop. The failing itself is done by
    the scheduler (``no-workers-timeout``, set to the same value by :func:`start_slurm`);
    this adds the SLURM side to the error: the timeout's key and ``squeue``'s state.
    """

    def __init__(self, cluster: Any, timeout: float, setting: str, interval: float = 2.0) -> None:
        from tornado.ioloop import PeriodicCallback

        self.cluster, self.timeout, self.setting = cluster, timeout, setting
        self.since: Optional[float] = time.monotonic()
        self.reported = False
        self._pc = PeriodicCallback(self.check, interval * 1000)
        cluster.loop.add_callback(self._pc.start)

    def check(self) -> None:
        if getattr(self.cluster.status, "name", "") in ("closing", "closed"):
            self._pc.stop()
            return
        if self.cluster.scheduler_info.get("workers"):
            self.since, self.reported = None, False
            return
        now = time.monotonic()
        self.since = self.since or now
        if not self.reported and now - self.since >= self.timeout:
            self.reported = True
            log.error("no SLURM worker connected for %.0f s ([cluster.slurm] worker_timeout = %r): the waiting "
                      "tasks fail; %s", now - self.since, self.setting, queue_state(self.cluster))


def start_slurm(spec: ClusterSpec, security: Optional[Any] = None) -> Any:
    """Start the SLURMCluster and keep ``spec.slurm.jobs`` worker jobs submitted (``sbatch``).

    ``adapt(minimum_jobs=jobs, maximum_jobs=jobs)`` resubmits lost jobs; the scheduler's
    ``no-workers-timeout`` is ``[cluster.slurm] worker_timeout`` (see the module notes).
    """
    import dask

    SLURMCluster = _import_slurm_cluster()
    s = spec.slurm
    with dask.config.set({"distributed.scheduler.no-workers-timeout": f"{s.worker_timeout_s}s"}):
        cluster = SLURMCluster(**slurm_cluster_kwargs(spec, security))
    try:
        cluster.scale(jobs=s.jobs)
        cluster.adapt(minimum_jobs=s.jobs, maximum_jobs=s.jobs, interval="2s")
        cluster._ntkscale_watch = QueueWatch(cluster, s.worker_timeout_s, s.worker_timeout)
    except Exception:
        cluster.close()
        raise
    return cluster
