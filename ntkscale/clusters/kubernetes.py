"""``kind = "kubernetes"``: a ``DaskCluster`` resource for the dask-kubernetes operator.

:func:`kubernetes_manifest` builds the resource as a plain dict (apply it with
``kubectl apply -f``, or let :func:`start_kubernetes` hand it to
``dask_kubernetes.operator.KubeCluster(custom_cluster_spec=...)``). Field names follow
the operator's ``DaskCluster`` schema (``kubernetes.dask.org/v1``): ``spec.worker``
= ``{replicas, spec: PodSpec}``, ``spec.scheduler`` = ``{spec: PodSpec, service:
ServiceSpec}``, with the scheduler's ``tcp-comm`` (8786) and ``http-dashboard`` (8787)
ports. Worker pods get the pinned thread-pool environment
(:func:`ntkscale.runner.pinned_env`) unless ``[cluster.kubernetes.env]`` sets a name
itself; with ``gpus = N`` each worker pod asks for ``nvidia.com/gpu: N`` and runs
``dask cuda worker`` (one worker per GPU).

References
----------
dask-kubernetes operator resources: https://kubernetes.dask.org/en/latest/operator_resources.html
"""

from __future__ import annotations

from typing import Any, Optional

from .._config import ConfigError
from ..runner import pinned_env
from .spec import ClusterSpec

__all__ = ["API_VERSION", "TLS_MOUNT", "kubernetes_manifest", "start_kubernetes"]

API_VERSION = "kubernetes.dask.org/v1"
TLS_MOUNT = "/etc/dask/tls"  # where the TLS secret is mounted in every pod
SCHEDULER_PORT, DASHBOARD_PORT, WORKER_DASHBOARD_PORT = 8786, 8787, 8788


def _env_list(env: dict[str, str]) -> list[dict[str, str]]:
    return [{"name": k, "value": v} for k, v in env.items()]


def _tls_volume(secret: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    volumes = [{"name": "dask-tls", "secret": {"secretName": secret}}]
    mounts = [{"name": "dask-tls", "mountPath": TLS_MOUNT, "readOnly": True}]
    return volumes, mounts


def kubernetes_manifest(spec: ClusterSpec) -> dict[str, Any]:
    """The ``DaskCluster`` custom resource for a ``kind = "kubernetes"`` spec.

    Parameters
    ----------
    spec : ClusterSpec
        With ``spec.kubernetes`` set (image, workers, resources, env, gpus ...).
        ``threads_per_worker`` and ``memory_limit`` become the worker's ``--nthreads``
        and ``--memory-limit``. With ``[cluster.tls]`` the pods mount the secret
        ``kubernetes.tls_secret`` (default ``<name>-tls``, holding the files named in
        ``[cluster.tls]`` by their base names) at ``/etc/dask/tls`` and talk ``tls://``.

    Returns
    -------
    dict
        ``{"apiVersion": "kubernetes.dask.org/v1", "kind": "DaskCluster", "metadata":
        {...}, "spec": {"worker": {...}, "scheduler": {...}}}``; ``yaml.safe_dump`` it
        for ``kubectl apply -f -``.
    """
    k = spec.kubernetes
    if k is None:
        raise ConfigError(f"kind = {spec.kind!r} has no [cluster.kubernetes] settings; set kind = 'kubernetes'")
    labels = {"app.kubernetes.io/name": "ntkscale", "dask.org/cluster-name": k.name}
    worker_env = {**pinned_env(spec.threads_per_worker), **dict(k.env)}
    sched_env = dict(k.env)
    worker_cmd = ["dask", "cuda", "worker"] if k.gpus else ["dask", "worker"]
    worker_args = [*worker_cmd, "--name", "$(DASK_WORKER_NAME)", "--nthreads", str(spec.threads_per_worker),
                   "--memory-limit", str(spec.memory_limit), "--dashboard", "--dashboard-address",
                   str(WORKER_DASHBOARD_PORT)]
    sched_args = ["dask", "scheduler", "--host", "0.0.0.0", "--port", str(SCHEDULER_PORT),
                  "--dashboard-address", f":{DASHBOARD_PORT}"]
    if spec.local_directory:
        worker_args += ["--local-directory", spec.local_directory]
    secret = None
    if spec.tls is not None:
        from .tls import tls_cli_args

        if spec.tls.temporary:
            raise ConfigError("[cluster.tls] temporary = true cannot reach pods; give certificate files "
                              "(deploy/tls/make-certs.sh) and store them in a Kubernetes secret")
        secret = k.tls_secret or f"{k.name}-tls"
        # the operator's DASK_SCHEDULER_ADDRESS is tcp://; name the tls:// address explicitly
        worker_args.insert(len(worker_cmd), f"tls://{k.name}-scheduler:{SCHEDULER_PORT}")
        worker_args += ["--protocol", "tls", *tls_cli_args(spec.tls, "worker", TLS_MOUNT)]
        sched_args += ["--protocol", "tls", *tls_cli_args(spec.tls, "scheduler", TLS_MOUNT)]
    worker_res: dict[str, dict[str, str]] = {kk: dict(v) for kk, v in k.resources.items()}
    if k.gpus:
        worker_res.setdefault("limits", {})["nvidia.com/gpu"] = str(k.gpus)
    worker_container: dict[str, Any] = {
        "name": "worker", "image": k.image, "imagePullPolicy": k.image_pull_policy, "args": worker_args,
        "env": _env_list(worker_env),
        "ports": [{"name": "http-dashboard", "containerPort": WORKER_DASHBOARD_PORT, "protocol": "TCP"}]}
    if worker_res:
        worker_container["resources"] = worker_res

    def probe(**timing: int) -> dict[str, Any]:  # fresh dicts: no YAML anchors when dumped
        return {"httpGet": {"port": "http-dashboard", "path": "/health"}, **timing}

    sched_container: dict[str, Any] = {
        "name": "scheduler", "image": k.image, "imagePullPolicy": k.image_pull_policy, "args": sched_args,
        "env": _env_list(sched_env),
        "ports": [{"name": "tcp-comm", "containerPort": SCHEDULER_PORT, "protocol": "TCP"},
                  {"name": "http-dashboard", "containerPort": DASHBOARD_PORT, "protocol": "TCP"}],
        "readinessProbe": probe(initialDelaySeconds=0, periodSeconds=1, timeoutSeconds=300),
        "livenessProbe": probe(initialDelaySeconds=15, periodSeconds=20)}
    worker_pod: dict[str, Any] = {"containers": [worker_container]}
    sched_pod: dict[str, Any] = {"containers": [sched_container]}
    if secret:
        for pod, c in ((worker_pod, worker_container), (sched_pod, sched_container)):
            pod["volumes"], c["volumeMounts"] = _tls_volume(secret)
    metadata: dict[str, Any] = {"name": k.name, "labels": labels}
    if k.namespace:
        metadata["namespace"] = k.namespace
    return {
        "apiVersion": API_VERSION,
        "kind": "DaskCluster",
        "metadata": metadata,
        "spec": {
            "idleTimeout": 0,
            "worker": {"replicas": k.n_workers, "spec": worker_pod},
            "scheduler": {
                "spec": sched_pod,
                "service": {
                    "type": k.service_type,
                    "selector": {"dask.org/cluster-name": k.name, "dask.org/component": "scheduler"},
                    "ports": [{"name": "tcp-comm", "protocol": "TCP", "port": SCHEDULER_PORT,
                               "targetPort": "tcp-comm"},
                              {"name": "http-dashboard", "protocol": "TCP", "port": DASHBOARD_PORT,
                               "targetPort": "http-dashboard"}]}}}}


def start_kubernetes(spec: ClusterSpec, security: Optional[Any] = None) -> Any:
    """Create the ``DaskCluster`` through ``dask_kubernetes.operator.KubeCluster``.

    Needs the operator installed in the cluster (``deploy/kubernetes/values.yaml``) and a
    kube config. TLS clusters are refused here (``KubeCluster`` talks to the scheduler
    without certificates): apply :func:`kubernetes_manifest` with ``kubectl`` and connect
    with ``kind = "address"`` instead.
    """
    if spec.tls is not None:
        raise ConfigError("kind = 'kubernetes' with [cluster.tls]: KubeCluster cannot connect over TLS; "
                          "apply the manifest (ntkscale.clusters.kubernetes_manifest, or "
                          "deploy/kubernetes/daskcluster.yaml) with kubectl and use kind = 'address' "
                          "with the tls:// address of the scheduler service")
    try:
        from dask_kubernetes.operator import KubeCluster
    except ImportError as e:
        raise ImportError("kind = 'kubernetes' needs dask-kubernetes: pip install 'ntkscale[kubernetes]' "
                          "(or pip install dask-kubernetes)") from e
    k = spec.kubernetes
    return KubeCluster(custom_cluster_spec=kubernetes_manifest(spec), namespace=k.namespace,
                       n_workers=k.n_workers, shutdown_on_close=True)
