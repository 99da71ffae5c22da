"""``DaskCluster`` manifests (generated and ``deploy/kubernetes/*.yaml``) against the operator schema.

The schema is the operator's own: the ``DaskCluster`` CRD that the dask-kubernetes wheel ships
in its Helm chart (``dask_kubernetes/operator/deployment/helm/dask-kubernetes-operator/crds/
daskcluster.yaml``, the ``openAPIV3Schema`` with PodSpec and ServiceSpec expanded), checked
with ``jsonschema`` the way ``kubectl apply`` (``--validate=strict``, its default) checks a
custom resource: types, required fields, and unknown fields rejected. ``values.yaml`` is
checked against the chart's own ``values.yaml`` (the chart ships no ``values.schema.json``).
No Kubernetes cluster is reachable from the test machines: nothing here was applied to one.
The hand-written facts in :func:`check_daskcluster` (ports, selector, args) come from the
operator's templates, not from our generator.
"""

from __future__ import annotations

import copy
import importlib.resources
import re
import tomllib

import jsonschema
import pytest

from ntkscale.runner import pinned_env
from ntkscale.clusters import kubernetes_manifest, validate_cluster

from .conftest import REPO

yaml = pytest.importorskip("yaml")
K8S = REPO / "deploy" / "kubernetes"
BASE = {"kind": "kubernetes", "kubernetes": {"name": "ntk", "image": "registry.example/ntkscale:cpu",
                                             "n_workers": 3}}
CHART = importlib.resources.files("dask_kubernetes") / "operator" / "deployment" / "helm" / "dask-kubernetes-operator"


def _strict(schema: dict) -> dict:
    """The CRD schema as the API server applies it with strict field validation: an object
    with ``properties`` admits no other field (unless ``x-kubernetes-preserve-unknown-fields``),
    and ``format: int-or-string`` (ports, ``targetPort``) takes an integer or a string."""
    if isinstance(schema, dict):
        out = {k: _strict(v) if k in ("items", "additionalProperties") else v for k, v in schema.items()}
        if "properties" in out:
            out["properties"] = {k: _strict(v) for k, v in out["properties"].items()}
            if "additionalProperties" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
                out["additionalProperties"] = False
        if out.get("format") == "int-or-string":
            out["type"] = ["integer", "string"]
        return out
    return schema


def _crd_validator(crd_file: str = "daskcluster.yaml") -> tuple[jsonschema.protocols.Validator, dict]:
    crd = yaml.safe_load((CHART / "crds" / crd_file).read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    schema = copy.deepcopy(version["schema"]["openAPIV3Schema"])
    group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
    # apiVersion, kind and metadata are the API server's own; the CRD schema covers the rest
    schema["properties"].update(apiVersion={"enum": [f"{group}/v1"]}, kind={"enum": [kind]},
                                metadata={"type": "object", "required": ["name"], "properties": {
                                    "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
                                    "namespace": {"type": "string"},
                                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                                    "annotations": {"type": "object", "additionalProperties": {"type": "string"}}}})
    schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind", "metadata"} - {"status"})
    return jsonschema.Draft4Validator(_strict(schema)), crd


VALIDATOR, CRD = _crd_validator()


def crd_errors(m: dict) -> list[str]:
    """Every way ``m`` breaks the operator's DaskCluster CRD (empty: valid)."""
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in VALIDATOR.iter_errors(m)]


def rendered_manifests() -> dict[str, dict]:
    """Every manifest ntkscale renders in these tests (plain, GPUs, TLS, the deploy job file)."""
    tls = {"ca_file": "/c/ca.pem", "cert_file": "/c/client.pem", "key_file": "/c/client-key.pem"}
    k = BASE["kubernetes"]
    tables = {"plain": {**BASE, "threads_per_worker": 2, "memory_limit": "6GiB"},
              "gpu": {**BASE, "local_directory": "/scratch", "kubernetes": {
                  **k, "gpus": 2, "namespace": "ml", "env": {"OMP_NUM_THREADS": "4"}, "service_type": "LoadBalancer",
                  "image_pull_policy": "Always", "resources": {"limits": {"memory": "16Gi"}, "requests": {"cpu": 4}}}},
              "tls": {**BASE, "tls": tls, "kubernetes": {**k, "tls_secret": "my-certs", "n_workers": 0}},
              "deploy/kubernetes/job.toml": tomllib.loads((K8S / "job.toml").read_text())["cluster"]}
    return {name: kubernetes_manifest(validate_cluster(t, environ={})) for name, t in tables.items()}


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


@pytest.mark.parametrize("name", ["plain", "gpu", "tls", "deploy/kubernetes/job.toml"])
def test_rendered_manifests_validate_against_the_operator_crd(name):
    assert CRD["metadata"]["name"] == "daskclusters.kubernetes.dask.org"
    m = rendered_manifests()[name]
    assert crd_errors(m) == []
    assert crd_errors(yaml.safe_load(yaml.safe_dump(m))) == []  # as kubectl reads the YAML


def test_deploy_daskcluster_yaml_validates_against_the_operator_crd():
    assert crd_errors(yaml.safe_load((K8S / "daskcluster.yaml").read_text())) == []


def _broken(path: tuple, value=None, delete=False) -> dict:
    m = copy.deepcopy(rendered_manifests()["plain"])
    node = m
    for key in path[:-1]:
        node = node[key]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return m


WORKER = ("spec", "worker", "spec", "containers", 0)


@pytest.mark.parametrize("path, value, delete, where", [
    (("spec", "worker", "replicas"), "3", False, "spec/worker/replicas"),  # string for an integer
    (("spec", "scheduler", "service"), None, True, "spec/scheduler"),  # a required field gone
    (("spec", "worker", "spec", "containers"), None, True, "spec/worker/spec"),  # PodSpec needs containers
    ((*WORKER, "name"), None, True, "spec/worker/spec/containers/0"),  # a container needs a name
    ((*WORKER, "args"), "dask worker", False, "spec/worker/spec/containers/0/args"),  # a string, not a list
    ((*WORKER, "env", 0, "value"), 1, False, "spec/worker/spec/containers/0/env/0/value"),
    ((*WORKER, "resources"), {"limits": {"cpu": 2}}, False, "spec/worker/spec/containers/0/resources/limits/cpu"),
    ((*WORKER, "imagePullPolicy"), ["Always"], False, "spec/worker/spec/containers/0/imagePullPolicy"),
    ((*WORKER, "command_"), ["x"], False, "spec/worker/spec/containers/0"),  # a misspelt (unknown) field
    (("spec", "workers"), {"replicas": 1}, False, "spec"),
    (("apiVersion",), "kubernetes.dask.org/v2", False, "apiVersion"),
    (("metadata", "name"), "NTK_cluster", False, "metadata/name"),
])
def test_broken_manifests_are_rejected(path, value, delete, where):
    errors = crd_errors(_broken(path, value, delete))
    assert errors and any(e.startswith(where + ":") for e in errors), errors


def _chart_mismatches(ours, chart, path=""):
    """Keys of ``ours`` the chart's values.yaml does not have, and values whose type differs
    from the chart's default (a null or empty default takes anything)."""
    out = []
    for k, v in ours.items():
        p = f"{path}.{k}" if path else k
        if not isinstance(chart, dict) or k not in chart:
            out.append(f"{p}: not a key of the chart's values.yaml")
        elif isinstance(v, dict) and isinstance(chart[k], dict) and chart[k]:
            out += _chart_mismatches(v, chart[k], p)
        elif chart[k] not in (None, {}, [], "") and type(v) is not type(chart[k]):
            out.append(f"{p}: {type(v).__name__}, the chart's default is a {type(chart[k]).__name__}")
    return out


def test_deploy_helm_values_match_the_chart_shipped_in_dask_kubernetes():
    assert not (CHART / "values.schema.json").is_file()  # if a release adds one, validate against it here
    chart = yaml.safe_load((CHART / "values.yaml").read_text())
    values = yaml.safe_load((K8S / "values.yaml").read_text())
    assert _chart_mismatches(values, chart) == []
    assert "--all-namespaces" in values["kopfArgs"] and values["rbac"]["cluster"] is True
    assert _chart_mismatches({"rbac": {"clustr": True}, "kopfArgs": "--all-namespaces"}, chart) == [
        "rbac.clustr: not a key of the chart's values.yaml", "kopfArgs: str, the chart's default is a list"]


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
