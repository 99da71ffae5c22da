"""``kind = "slurm"``: a ``dask_jobqueue.SLURMCluster`` whose jobs run pinned workers.

The scheduler runs in the process that calls :func:`start_cluster` (a login or batch
node, see ``deploy/slurm/launch.sbatch``); each SLURM job runs ``processes`` workers with
``cores / processes`` threads each, and the job script exports the pinned thread-pool
environment (:func:`ntkscale.runner.pinned_env`) after the user's prologue so a
``module load`` cannot undo it. With ``gpus_per_job = N`` the job asks for
``--gres=gpu:N`` and runs ``dask cuda worker`` (``dask_cuda.CUDAWorker``: one worker per
GPU, pinned to it through ``CUDA_VISIBLE_DEVICES``).
"""

from __future__ import annotations

from typing import Any, Optional

from .._config import ConfigError
from ..runner import pinned_env
from .spec import ClusterSpec

__all__ = ["slurm_cluster_kwargs", "slurm_job_script", "start_slurm"]

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


def start_slurm(spec: ClusterSpec, security: Optional[Any] = None) -> Any:
    """Start the SLURMCluster and submit ``spec.slurm.jobs`` worker jobs (``sbatch``)."""
    SLURMCluster = _import_slurm_cluster()
    cluster = SLURMCluster(**slurm_cluster_kwargs(spec, security))
    try:
        cluster.scale(jobs=spec.slurm.jobs)
    except Exception:
        cluster.close()
        raise
    return cluster
