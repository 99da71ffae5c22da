"""``DaskCluster`` manifests (generated and ``deploy/kubernetes/*.yaml``) against the operator schema.

The schema facts checked here come from the dask-kubernetes operator's CRD and templates
(``kubernetes.dask.org/v1``; ``spec.worker = {replicas, spec: PodSpec}``,
``spec.scheduler = {spec: PodSpec, service: ServiceSpec}``, scheduler ports ``tcp-comm``
8786 and ``http-dashboard`` 8787), not from our generator.
"""

from __future__ import annotations

import re
import tomllib

import pytest

from ntkscale.runner import pinned_env
from ntkscale.clusters import kubernetes_manifest, validate_cluster

from .conftest import REPO

yaml = pytest.importorskip("yaml")
K8S = REPO / "deploy" / "kubernetes"
BASE = {"kind": "kubernetes", "kubernetes": {"name": "ntk", "image": "registry.example/ntkscale:cpu",
                                             "n_workers": 3}}
# top-level keys of the dask-kubernetes-operator Helm chart's values.yaml
CHART_KEYS = {"image", "imagePullSecrets", "nameOverride", "fullnameOverride", "serviceAccount", "rbac",
              "podAnnotations", "podSecurityContext", "securityContext", "resources", "volumes",
              "volumeMounts", "nodeSelector", "tolerations", "affinity", "kopfArgs", "metrics",
              "workerAllocation"}


def check_daskcluster(m: dict) -> None:
    """Fail unless ``m`` has the fields the operator's DaskCluster schema requires."""
    assert m["apiVersion"] == "kubernetes.dask.org/v1" and m["kind"] == "DaskCluster"
    name = m["metadata"]["name"]
    assert isinstance(name, str) and name
    w, s = m["spec"]["worker"], m["spec"]["scheduler"]
    assert isinstance(w["replicas"], int) and w["replicas"] >= 0
    (wc,) = w["spec"]["containers"]
    assert wc["image"] and isinstance(wc["args"], list) and all(isinstance(a, str) for a in wc["args"])
    assert "worker" in wc["args"][:3]  # dask worker / dask cuda worker
    for c in (wc, *s["spec"]["containers"]):
        for e in c.get("env", []):
            assert set(e) == {"name", "value"} and isinstance(e["value"], str)  # k8s EnvVar
    sc = s["spec"]["containers"][0]
    assert "scheduler" in sc["args"][:2]
    assert {p["name"]: p["containerPort"] for p in sc["ports"]} == {"tcp-comm": 8786, "http-dashboard": 8787}
    svc = s["service"]
    assert svc["selector"] == {"dask.org/cluster-name": name, "dask.org/component": "scheduler"}
    assert {p["port"]: p["targetPort"] for p in svc["ports"]} == {8786: "tcp-comm", 8787: "http-dashboard"}
    assert all(p["protocol"] == "TCP" for p in svc["ports"])


def env_of(container: dict) -> dict:
    return {e["name"]: e["value"] for e in container["env"]}


def test_generated_manifest_matches_schema_and_spec():
    m = kubernetes_manifest(validate_cluster({**BASE, "threads_per_worker": 2, "memory_limit": "6GiB"},
                                             environ={}))
    check_daskcluster(m)
    assert m["metadata"]["name"] == "ntk" and m["spec"]["worker"]["replicas"] == 3
    wc = m["spec"]["worker"]["spec"]["containers"][0]
    assert wc["image"] == "registry.example/ntkscale:cpu"
    args = wc["args"]
    assert args[:2] == ["dask", "worker"]
    assert args[args.index("--nthreads") + 1] == "2" and args[args.index("--memory-limit") + 1] == "6GiB"
    assert env_of(wc) == pinned_env(2)  # BLAS/OpenMP/numba pinned to the worker's threads
    assert "resources" not in wc and "volumes" not in m["spec"]["worker"]["spec"]
    assert yaml.safe_load(yaml.safe_dump(m)) == m  # plain data, YAML round trip


def test_gpu_env_and_resources():
    table = {**BASE, "kubernetes": {**BASE["kubernetes"], "gpus": 2, "namespace": "ml",
                                    "env": {"OMP_NUM_THREADS": "4", "EXTRA": "x"},
                                    "resources": {"limits": {"memory": "16Gi"}, "requests": {"cpu": 4}}}}
    m = kubernetes_manifest(validate_cluster(table, environ={}))
    check_daskcluster(m)
    wc = m["spec"]["worker"]["spec"]["containers"][0]
    assert wc["args"][:3] == ["dask", "cuda", "worker"]
    assert wc["resources"] == {"limits": {"memory": "16Gi", "nvidia.com/gpu": "2"}, "requests": {"cpu": "4"}}
    env = env_of(wc)
    assert env["OMP_NUM_THREADS"] == "4" and env["EXTRA"] == "x"  # the user's env wins over the pins
    assert env["OPENBLAS_NUM_THREADS"] == "1"
    assert m["metadata"]["namespace"] == "ml"
    assert "nvidia.com/gpu" not in str(m["spec"]["scheduler"])  # the scheduler needs no GPU


def test_tls_manifest_mounts_secret_and_names_tls_address():
    tls = {"ca_file": "/certs/ca.pem", "cert_file": "/certs/client.pem", "key_file": "/certs/client-key.pem",
           "worker_cert_file": "/certs/worker.pem", "worker_key_file": "/certs/worker-key.pem",
           "scheduler_cert_file": "/certs/scheduler.pem", "scheduler_key_file": "/certs/scheduler-key.pem"}
    m = kubernetes_manifest(validate_cluster({**BASE, "tls": tls}, environ={}))
    check_daskcluster(m)
    wpod, spod = m["spec"]["worker"]["spec"], m["spec"]["scheduler"]["spec"]
    for pod in (wpod, spod):
        assert pod["volumes"] == [{"name": "dask-tls", "secret": {"secretName": "ntk-tls"}}]
        assert pod["containers"][0]["volumeMounts"][0]["mountPath"] == "/etc/dask/tls"
    wargs, sargs = wpod["containers"][0]["args"], spod["containers"][0]["args"]
    assert wargs[2] == "tls://ntk-scheduler:8786"
    assert wargs[wargs.index("--tls-cert") + 1] == "/etc/dask/tls/worker.pem"
    assert sargs[sargs.index("--tls-key") + 1] == "/etc/dask/tls/scheduler-key.pem"
    assert sargs[sargs.index("--protocol") + 1] == "tls"


def test_deploy_daskcluster_yaml_is_the_rendered_job_toml():
    files = yaml.safe_load((K8S / "daskcluster.yaml").read_text())
    check_daskcluster(files)
    table = tomllib.loads((K8S / "job.toml").read_text())["cluster"]
    assert files == kubernetes_manifest(validate_cluster(table, environ={})), \
        "deploy/kubernetes/daskcluster.yaml is stale: regenerate it (deploy/README.md)"


def test_deploy_helm_values_use_chart_keys():
    values = yaml.safe_load((K8S / "values.yaml").read_text())
    assert set(values) <= CHART_KEYS, set(values) - CHART_KEYS
    assert "--all-namespaces" in values["kopfArgs"] and values["rbac"]["cluster"] is True


def test_start_refuses_tls_on_kubernetes():
    from ntkscale._config import ConfigError
    from ntkscale.clusters.kubernetes import start_kubernetes

    spec = validate_cluster({**BASE, "tls": {"ca_file": "a", "cert_file": "b"}}, environ={})
    with pytest.raises(ConfigError, match="kind = 'address'"):
        start_kubernetes(spec)


@pytest.mark.parametrize("module, kind, extra", [("dask_kubernetes", "kubernetes", "ntkscale[kubernetes]"),
                                                 ("dask_jobqueue", "slurm", "ntkscale[slurm]")])
def test_missing_extra_names_it(monkeypatch, module, kind, extra):
    from ntkscale.clusters import start_cluster

    monkeypatch.setitem(__import__("sys").modules, module, None)  # import fails as if not installed
    table = BASE if kind == "kubernetes" else {"kind": "slurm", "slurm": {"cores": 1, "memory": "1GiB"}}
    with pytest.raises(ImportError, match=re.escape(extra)):
        start_cluster(validate_cluster(table, environ={}))
