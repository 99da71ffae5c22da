"""The ``[cluster]`` section of a job file: schema, validation, environment overrides.

Schema (defaults shown)::

    [cluster]
    kind = "local"              # local | address | slurm | kubernetes | sync
    workers = <cores>           # local: worker processes; slurm/kubernetes: total workers
    threads_per_worker = 1      # BLAS/OpenMP/numba are pinned to this in every worker
    memory_limit = "auto"       # per worker ("4GiB", bytes, or a fraction in (0, 1]); slurm: memory/processes
    address = ""                # kind = "address": "tcp://host:8786" or "tls://host:8786"
    dashboard = true
    local_directory = ""        # worker scratch

    [cluster.tls]               # any kind but sync; deploy/tls/make-certs.sh prints one
    ca_file, cert_file, key_file            # cert/key serve every role of this process
    scheduler_cert_file, scheduler_key_file, worker_cert_file, worker_key_file   # per role
    require_encryption = true
    temporary = false           # local only: in-memory self-signed credentials (needs cryptography)

    [cluster.slurm]             # dask_jobqueue.SLURMCluster
    cores, memory               # required: per job (--cpus-per-task, --mem)
    processes = cores / threads_per_worker   # workers per job (= gpus_per_job with GPUs)
    jobs = ceil(workers / processes)         # jobs to submit (default 1)
    queue, account, interface, python, log_directory
    walltime = "01:00:00"
    job_extra_directives = [], job_script_prologue = []
    gpus_per_job = 0            # > 0: --gres=gpu:N and `dask cuda worker`
    worker_timeout = "1h"       # no worker connected this long (jobs lost, queue stuck): the run fails

    [cluster.kubernetes]        # dask-kubernetes operator DaskCluster
    image                       # required: an image with ntkscale (deploy/docker)
    name = "ntkscale", namespace, n_workers = workers or 2, gpus = 0
    resources = {requests = {...}, limits = {...}}, env = {}
    service_type = "ClusterIP", image_pull_policy = "IfNotPresent", tls_secret = "<name>-tls"

One job file can switch between a laptop, a scheduler address, SLURM and Kubernetes by
changing ``kind`` (or ``NTKSCALE_CLUSTER_KIND``): the sub-tables of the other kinds are
checked for typos and otherwise ignored. Every error names the key (or the environment
variable that set it), what was found and what is allowed.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Union

from .._config import ConfigError, check_keys, get, section
from ._env import apply_env_overrides

__all__ = ["KINDS", "ClusterSpec", "KubernetesSpec", "SlurmSpec", "TLSSpec", "validate_cluster"]

KINDS = ("local", "address", "slurm", "kubernetes", "sync")
_PROTOCOLS = ("tcp", "tls", "ucx", "inproc")

TLS_SCHEMA: dict[str, Any] = {
    "ca_file": str, "cert_file": str, "key_file": str, "require_encryption": bool, "temporary": bool,
    "scheduler_cert_file": str, "scheduler_key_file": str, "worker_cert_file": str, "worker_key_file": str}
SLURM_SCHEMA: dict[str, Any] = {
    "queue": str, "account": str, "walltime": str, "cores": int, "memory": str, "processes": int,
    "jobs": int, "job_extra_directives": list, "job_script_prologue": list, "interface": str,
    "gpus_per_job": int, "python": str, "log_directory": str, "worker_timeout": str}
KUBERNETES_SCHEMA: dict[str, Any] = {
    "name": str, "namespace": str, "image": str, "n_workers": int, "resources": dict, "env": dict,
    "gpus": int, "service_type": str, "tls_secret": str, "image_pull_policy": str}
SCHEMA: dict[str, Any] = {
    "kind": str, "workers": int, "threads_per_worker": int, "memory_limit": (str, int, float),
    "address": str, "dashboard": bool, "local_directory": str,
    "tls": TLS_SCHEMA, "slurm": SLURM_SCHEMA, "kubernetes": KUBERNETES_SCHEMA}

MemoryLimit = Union[str, int, float]


@dataclass(frozen=True)
class TLSSpec:
    """``[cluster.tls]``: certificates for :class:`distributed.security.Security`.

    ``cert_file``/``key_file`` serve every role this process plays (client; scheduler for
    ``local``/``slurm``); ``worker_*``/``scheduler_*`` override them per role.
    ``temporary`` asks for in-memory self-signed credentials (``local`` kind only).
    """

    ca_file: Optional[str] = None
    cert_file: Optional[str] = None
    key_file: Optional[str] = None
    require_encryption: bool = True
    temporary: bool = False
    scheduler_cert_file: Optional[str] = None
    scheduler_key_file: Optional[str] = None
    worker_cert_file: Optional[str] = None
    worker_key_file: Optional[str] = None

    def role_files(self, role: str) -> tuple[Optional[str], Optional[str]]:
        """``(cert, key)`` for ``role`` in ``{"client", "scheduler", "worker"}``."""
        cert = getattr(self, f"{role}_cert_file", None) or self.cert_file
        key = getattr(self, f"{role}_key_file", None) or (self.key_file if cert == self.cert_file else None)
        return cert, key


@dataclass(frozen=True)
class SlurmSpec:
    """``[cluster.slurm]``: one SLURM job runs ``processes`` workers on ``cores`` cores."""

    cores: int
    memory: str
    processes: int
    jobs: int
    queue: Optional[str] = None
    account: Optional[str] = None
    walltime: str = "01:00:00"
    job_extra_directives: tuple[str, ...] = ()
    job_script_prologue: tuple[str, ...] = ()
    interface: Optional[str] = None
    gpus_per_job: int = 0
    python: Optional[str] = None
    log_directory: Optional[str] = None
    worker_timeout: str = "1h"

    @property
    def worker_timeout_s(self) -> float:
        """``worker_timeout`` in seconds."""
        from dask.utils import parse_timedelta

        return float(parse_timedelta(self.worker_timeout, default="s"))


@dataclass(frozen=True)
class KubernetesSpec:
    """``[cluster.kubernetes]``: a ``DaskCluster`` resource for the dask-kubernetes operator."""

    name: str
    image: str
    n_workers: int
    namespace: Optional[str] = None
    resources: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    gpus: int = 0
    service_type: str = "ClusterIP"
    tls_secret: Optional[str] = None
    image_pull_policy: str = "IfNotPresent"


@dataclass(frozen=True)
class ClusterSpec:
    """A validated ``[cluster]`` section (see :func:`validate_cluster`).

    ``workers`` is the total number of workers (``None``: one per core for ``local``).
    ``env_overrides`` maps each dotted key that came from the environment to its variable.
    """

    kind: str = "local"
    workers: Optional[int] = None
    threads_per_worker: int = 1
    memory_limit: MemoryLimit = "auto"
    address: Optional[str] = None
    dashboard: bool = True
    local_directory: Optional[str] = None
    tls: Optional[TLSSpec] = None
    slurm: Optional[SlurmSpec] = None
    kubernetes: Optional[KubernetesSpec] = None
    env_overrides: Mapping[str, str] = field(default_factory=dict)

    @property
    def protocol(self) -> str:
        """``"tls://"`` when TLS is configured, else ``"tcp://"``."""
        return "tls://" if self.tls is not None else "tcp://"


def validate_cluster(table: Optional[Mapping[str, Any]], path: str = "cluster",
                     environ: Optional[Mapping[str, str]] = None) -> ClusterSpec:
    """Validate a ``[cluster]`` table (plus ``NTKSCALE_CLUSTER_*`` overrides) into a spec.

    Parameters
    ----------
    table : mapping or None
        The ``[cluster]`` table of the job file (``None`` or ``{}``: a local cluster).
    path : str
        Dotted name of the table, used in messages.
    environ : mapping, optional
        Environment to read overrides from (default ``os.environ``; ``{}`` for none).

    Returns
    -------
    ClusterSpec

    Raises
    ------
    ConfigError
        Unknown key, wrong type, value out of range, or inconsistent settings; when the
        offending value came from the environment the message names the variable.
    """
    environ = os.environ if environ is None else environ
    if table is not None and not isinstance(table, Mapping):
        raise ConfigError(f"'{path}' must be a table ([{path}]), got {type(table).__name__}")
    merged, origin = apply_env_overrides(table or {}, SCHEMA, environ, path)
    try:
        return _validate(merged, path, origin)
    except ConfigError as e:
        hits = [f"{var}={environ[var]!r}" for key, var in origin.items() if f"'{key}'" in str(e)]
        if hits:
            raise ConfigError(f"{e} (set by environment variable {', '.join(hits)})") from None
        raise


def _opt_str(t: Mapping[str, Any], key: str, path: str) -> Optional[str]:
    v = get(t, key, str, "", path=path)
    return v or None


def _memory(t: Mapping[str, Any], key: str, path: str, default: Any) -> Any:
    from dask.utils import parse_bytes

    v = get(t, key, (str, int, float), default, path=path)
    if isinstance(v, float) and not 0 < v <= 1:
        raise ConfigError(f"'{path}.{key}' = {v!r}: a number is a fraction of system memory in (0, 1]; "
                          "use a string like \"4GiB\" for an amount")
    if isinstance(v, int) and v < 0:
        raise ConfigError(f"'{path}.{key}' = {v!r} must be >= 0 bytes (0: no limit)")
    if isinstance(v, str) and v != "auto":
        try:
            parse_bytes(v)
        except (ValueError, TypeError):
            raise ConfigError(f"'{path}.{key}' = {v!r} is not a size; use \"auto\" or a size like "
                              "\"4GiB\", \"500MB\"") from None
    return v


def _validate(t: dict[str, Any], path: str, origin: Mapping[str, str]) -> ClusterSpec:
    check_keys(t, SCHEMA, path)
    kind = get(t, "kind", str, "local", path=path, choices=KINDS)
    workers = get(t, "workers", int, None, path=path, min=1)
    threads = get(t, "threads_per_worker", int, 1, path=path, min=1)
    memory_limit = _memory(t, "memory_limit", path, "auto")
    dashboard = get(t, "dashboard", bool, True, path=path)
    local_directory = _opt_str(t, "local_directory", path)
    address = _opt_str(t, "address", path)
    tls_t, slurm_t, k8s_t = (section(t, s, path) for s in ("tls", "slurm", "kubernetes"))
    check_keys(tls_t, TLS_SCHEMA, f"{path}.tls")
    check_keys(slurm_t, SLURM_SCHEMA, f"{path}.slurm")
    check_keys(k8s_t, KUBERNETES_SCHEMA, f"{path}.kubernetes")
    tls = _tls(tls_t, f"{path}.tls", kind) if tls_t else None

    if kind == "address":
        if address is None:
            raise ConfigError(f"kind = 'address' needs '{path}.address' (e.g. \"tcp://scheduler-host:8786\", "
                              "or \"tls://...\" with [cluster.tls])")
        m = re.fullmatch(r"([a-z]+)://(\S+)", address)
        if not m or m.group(1) not in _PROTOCOLS:
            raise ConfigError(f"'{path}.address' = {address!r} must look like \"tcp://host:8786\" "
                              f"(protocol one of {', '.join(_PROTOCOLS)})")
        if (m.group(1) == "tls") != (tls is not None):
            fix = ("add a [cluster.tls] table with ca_file, cert_file, key_file" if tls is None
                   else "use a tls:// address, or remove [cluster.tls]")
            raise ConfigError(f"'{path}.address' = {address!r} and [cluster.tls] disagree: {fix}")
    else:
        address = None  # only meaningful for kind = "address"
    if kind == "sync" and tls is not None:
        raise ConfigError(f"kind = 'sync' runs tasks in this process; remove [{path}.tls]")

    slurm = _slurm(slurm_t, f"{path}.slurm", workers, threads, t) if kind == "slurm" else None
    k8s = _kubernetes(k8s_t, f"{path}.kubernetes", workers) if kind == "kubernetes" else None
    if slurm is not None:
        workers = slurm.jobs * slurm.processes
        threads = slurm.cores // slurm.processes
    if k8s is not None:
        workers = k8s.n_workers
    return ClusterSpec(kind=kind, workers=workers, threads_per_worker=threads, memory_limit=memory_limit,
                       address=address, dashboard=dashboard, local_directory=local_directory, tls=tls,
                       slurm=slurm, kubernetes=k8s, env_overrides=dict(origin))


def _tls(t: Mapping[str, Any], path: str, kind: str) -> TLSSpec:
    temporary = get(t, "temporary", bool, False, path=path)
    files = {k: _opt_str(t, k, path) for k in TLS_SCHEMA if k.endswith("_file")}
    require = get(t, "require_encryption", bool, True, path=path)
    if temporary:
        if kind != "local":
            raise ConfigError(f"'{path}.temporary' = true only works with kind = 'local' (the credentials "
                              "live in this process); give ca_file, cert_file and key_file instead")
        if any(files.values()):
            raise ConfigError(f"'{path}.temporary' = true and certificate files are exclusive; remove one")
        return TLSSpec(temporary=True, require_encryption=require)
    for k in ("ca_file", "cert_file"):
        if files[k] is None:
            raise ConfigError(f"[{path}] needs '{path}.{k}' (or temporary = true for a local cluster); "
                              "deploy/tls/make-certs.sh makes a CA and certificates")
    for role in ("scheduler", "worker"):
        if files[f"{role}_key_file"] and not files[f"{role}_cert_file"]:
            raise ConfigError(f"'{path}.{role}_key_file' needs '{path}.{role}_cert_file'")
    return TLSSpec(require_encryption=require, **files)


def _slurm(t: Mapping[str, Any], path: str, workers: Optional[int], threads: int,
           top: Mapping[str, Any]) -> SlurmSpec:
    cores = get(t, "cores", int, path=path, min=1)
    memory = get(t, "memory", str, path=path)
    _memory(t, "memory", path, None)
    gpus = get(t, "gpus_per_job", int, 0, path=path, min=0)
    default_p = gpus if gpus else max(1, cores // threads)
    processes = get(t, "processes", int, default_p, path=path, min=1)
    if gpus and processes != gpus:
        raise ConfigError(f"'{path}.processes' = {processes} but gpus_per_job = {gpus}: `dask cuda worker` "
                          "starts one worker per GPU; set processes = gpus_per_job or leave it out")
    if processes > cores or cores % processes:
        raise ConfigError(f"'{path}.processes' = {processes} must divide '{path}.cores' = {cores} "
                          "(each worker gets cores / processes threads)")
    if "threads_per_worker" in top and cores // processes != threads:
        raise ConfigError(f"'{path}.cores' / '{path}.processes' = {cores}/{processes} gives "
                          f"{cores // processes} threads per worker but threads_per_worker = {threads}; make cores a "
                          "multiple of threads_per_worker and set processes = cores / threads_per_worker, "
                          "or drop threads_per_worker")
    jobs_default = -(-workers // processes) if workers else 1
    jobs = get(t, "jobs", int, jobs_default, path=path, min=1)
    if workers and "jobs" in t and jobs * processes != workers:
        raise ConfigError(f"'{path}.jobs' = {jobs} x processes = {processes} gives {jobs * processes} workers "
                          f"but workers = {workers}; set one of them")
    walltime = get(t, "walltime", str, "01:00:00", path=path)
    if not re.fullmatch(r"(\d+-)?\d+(:\d{1,2}){0,2}", walltime):
        raise ConfigError(f"'{path}.walltime' = {walltime!r} is not a SLURM time; use \"HH:MM:SS\", "
                          "\"MM\" or \"D-HH:MM:SS\"")
    worker_timeout = get(t, "worker_timeout", str, "1h", path=path)
    try:
        from dask.utils import parse_timedelta

        ok = parse_timedelta(worker_timeout, default="s") > 0
    except (ValueError, TypeError, KeyError):
        ok = False
    if not ok:
        raise ConfigError(f"'{path}.worker_timeout' = {worker_timeout!r} is not a positive duration; use e.g. "
                          "\"10m\", \"1h\", \"90s\"")
    lists = {}
    for k in ("job_extra_directives", "job_script_prologue"):
        v = get(t, k, list, [], path=path)
        if not all(isinstance(x, str) for x in v):
            raise ConfigError(f"'{path}.{k}' must be an array of strings, got {v!r}")
        lists[k] = tuple(v)
    return SlurmSpec(cores=cores, memory=memory, processes=processes, jobs=jobs,
                     queue=_opt_str(t, "queue", path), account=_opt_str(t, "account", path),
                     walltime=walltime, interface=_opt_str(t, "interface", path), gpus_per_job=gpus,
                     python=_opt_str(t, "python", path), log_directory=_opt_str(t, "log_directory", path),
                     worker_timeout=worker_timeout, **lists)


def _str_table(v: Mapping[str, Any], key: str) -> dict[str, str]:
    out = {}
    for k, x in v.items():
        if isinstance(x, (dict, list)):
            raise ConfigError(f"'{key}.{k}' must be a string or number, got {type(x).__name__}")
        out[str(k)] = str(x).lower() if isinstance(x, bool) else str(x)
    return out


def _kubernetes(t: Mapping[str, Any], path: str, workers: Optional[int]) -> KubernetesSpec:
    name = get(t, "name", str, "ntkscale", path=path)
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name) or len(name) > 40:
        raise ConfigError(f"'{path}.name' = {name!r} must be a DNS label: lower-case letters, digits and '-', "
                          "at most 40 characters (the operator appends '-scheduler', '-default-worker-...')")
    if "image" not in t:
        raise ConfigError(f"missing required key '{path}.image': an image with ntkscale installed, e.g. built "
                          "from deploy/docker/Dockerfile.cpu (or Dockerfile.cuda for gpus > 0)")
    image = get(t, "image", str, path=path)
    n = get(t, "n_workers", int, workers or 2, path=path, min=0)
    if workers and "n_workers" in t and n != workers:
        raise ConfigError(f"'{path}.n_workers' = {n} but workers = {workers}; set one of them")
    res = get(t, "resources", dict, {}, path=path)
    check_keys(res, ("requests", "limits"), f"{path}.resources")
    resources = {k: _str_table(section(res, k, f"{path}.resources"), f"{path}.resources.{k}") for k in res}
    env = _str_table(get(t, "env", dict, {}, path=path), f"{path}.env")
    return KubernetesSpec(name=name, image=image, n_workers=n, namespace=_opt_str(t, "namespace", path),
                          resources=resources, env=env, gpus=get(t, "gpus", int, 0, path=path, min=0),
                          service_type=get(t, "service_type", str, "ClusterIP", path=path,
                                           choices=("ClusterIP", "NodePort", "LoadBalancer")),
                          tls_secret=_opt_str(t, "tls_secret", path),
                          image_pull_policy=get(t, "image_pull_policy", str, "IfNotPresent", path=path,
                                                choices=("Always", "IfNotPresent", "Never")))
