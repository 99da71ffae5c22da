"""``[cluster]`` validation and ``NTKSCALE_CLUSTER_*`` overrides (no processes started)."""

from __future__ import annotations

import datetime

import pytest

from ntkscale._config import ConfigError
from ntkscale.clusters import KINDS, validate_cluster
from ntkscale.clusters._env import parse_env_value

SLURM = {"kind": "slurm", "slurm": {"cores": 8, "memory": "32GiB"}}
K8S = {"kind": "kubernetes", "kubernetes": {"image": "ghcr.io/example/ntkscale:cpu"}}
TLS = {"ca_file": "ca.pem", "cert_file": "client.pem", "key_file": "client-key.pem"}


def v(table, **env):
    return validate_cluster(table, environ=env)


def test_defaults_are_a_local_cluster():
    s = v(None)
    assert (s.kind, s.workers, s.threads_per_worker, s.memory_limit, s.dashboard) == ("local", None, 1, "auto", True)
    assert s.tls is None and s.slurm is None and s.kubernetes is None and s.env_overrides == {}
    assert v({}) == s


def test_unknown_kind_lists_allowed_values():
    with pytest.raises(ConfigError, match=r"'cluster\.kind' = 'lokal'") as e:
        v({"kind": "lokal"})
    assert all(repr(k) in str(e.value) for k in KINDS)


@pytest.mark.parametrize("table, key", [
    ({"workers": "many"}, "cluster.workers"),
    ({"workers": 0}, "cluster.workers"),
    ({"workers": True}, "cluster.workers"),
    ({"threads_per_worker": 1.5}, "cluster.threads_per_worker"),
    ({"memory_limit": "lots"}, "cluster.memory_limit"),
    ({"memory_limit": 2.0}, "cluster.memory_limit"),
    ({"dashboard": "yes"}, "cluster.dashboard"),
    ({"local_directory": 3}, "cluster.local_directory"),
    ({"slurm": "gpu"}, "cluster.slurm"),
    ({**SLURM, "slurm": {"memory": "1GiB"}}, "cluster.slurm.cores"),
    ({**SLURM, "slurm": {"cores": 4, "memory": "1GiB", "walltime": "1 hour"}}, "cluster.slurm.walltime"),
    ({**SLURM, "slurm": {"cores": 4, "memory": "1GiB", "worker_timeout": "soon"}}, "cluster.slurm.worker_timeout"),
    ({**SLURM, "slurm": {"cores": 4, "memory": "1GiB", "worker_timeout": "0s"}}, "cluster.slurm.worker_timeout"),
    ({**SLURM, "slurm": {"cores": 4, "memory": "lots"}}, "cluster.slurm.memory"),
    ({**SLURM, "slurm": {"cores": 4, "memory": "1GiB", "processes": 3}}, "cluster.slurm.processes"),
    ({**SLURM, "slurm": {"cores": 4, "memory": "1GiB", "gpus_per_job": 2, "processes": 4}}, "cluster.slurm.processes"),
    ({**SLURM, "slurm": {"cores": 4, "memory": "1GiB", "job_extra_directives": [1]}},
     "cluster.slurm.job_extra_directives"),
    ({**SLURM, "workers": 8, "slurm": {"cores": 4, "memory": "1GiB", "jobs": 3}}, "cluster.slurm.jobs"),
    ({**SLURM, "threads_per_worker": 3, "slurm": {"cores": 4, "memory": "1GiB"}}, "cluster.slurm.cores"),
    ({"kind": "kubernetes"}, "cluster.kubernetes.image"),
    ({**K8S, "kubernetes": {"image": "x", "name": "My_Cluster"}}, "cluster.kubernetes.name"),
    ({**K8S, "kubernetes": {"image": "x", "resources": {"request": {}}}}, "cluster.kubernetes.resources.request"),
    ({**K8S, "kubernetes": {"image": "x", "service_type": "Ingress"}}, "cluster.kubernetes.service_type"),
    ({**K8S, "kubernetes": {"image": "x", "env": {"A": [1]}}}, "cluster.kubernetes.env.A"),
    ({"kind": "address"}, "cluster.address"),
    ({"kind": "address", "address": "host:8786"}, "cluster.address"),
    ({"kind": "address", "address": "tls://host:8786"}, "cluster.address"),
    ({"kind": "address", "address": "tcp://host:8786", "tls": TLS}, "cluster.address"),
    ({"tls": {"cert_file": "c.pem"}}, "cluster.tls.ca_file"),
    ({"kind": "address", "address": "tls://h:1", "tls": {"temporary": True}}, "cluster.tls.temporary"),
    ({"tls": {"temporary": True, "ca_file": "ca.pem"}}, "cluster.tls.temporary"),
    ({"tls": {**TLS, "worker_key_file": "k.pem"}}, "cluster.tls.worker_key_file"),
    ({"kind": "sync", "tls": TLS}, "cluster.tls"),
])
def test_errors_name_the_key(table, key):
    with pytest.raises(ConfigError) as e:
        v(table)
    assert f"'{key}'" in str(e.value) or f"[{key}]" in str(e.value), str(e.value)


def test_typo_suggests_the_key():
    with pytest.raises(ConfigError, match=r"'cluster\.worker' \(did you mean 'workers'\?\)"):
        v({"worker": 2})
    with pytest.raises(ConfigError, match=r"'cluster\.slurm\.queu' \(did you mean 'queue'\?\)"):
        v({"slurm": {"queu": "gpu"}})  # checked even when kind is not slurm


def test_slurm_derived_counts():
    s = v({**SLURM, "workers": 10})  # 8 cores, 1 thread each -> 8 processes/job -> 2 jobs
    assert (s.slurm.processes, s.slurm.jobs, s.workers, s.threads_per_worker) == (8, 2, 16, 1)
    s = v({**SLURM, "threads_per_worker": 2, "slurm": {**SLURM["slurm"], "jobs": 3}})
    assert (s.slurm.processes, s.slurm.jobs, s.workers, s.threads_per_worker) == (4, 3, 12, 2)
    s = v({**SLURM, "slurm": {**SLURM["slurm"], "gpus_per_job": 4}})  # one worker per GPU
    assert (s.slurm.processes, s.threads_per_worker, s.workers) == (4, 2, 4)


def test_kubernetes_workers_and_tables():
    s = v({**K8S, "workers": 5, "kubernetes": {**K8S["kubernetes"], "env": {"FLAG": True, "N": 3},
                                               "resources": {"limits": {"cpu": 2, "memory": "8Gi"}}}})
    assert s.workers == s.kubernetes.n_workers == 5
    assert dict(s.kubernetes.env) == {"FLAG": "true", "N": "3"}
    assert dict(s.kubernetes.resources["limits"]) == {"cpu": "2", "memory": "8Gi"}
    with pytest.raises(ConfigError, match="n_workers"):
        v({**K8S, "workers": 5, "kubernetes": {**K8S["kubernetes"], "n_workers": 4}})


def test_other_kinds_settings_are_ignored():
    s = v({"kind": "local", "address": "tcp://h:1", "slurm": {"queue": "gpu"}, "kubernetes": {"name": "x"}})
    assert s.address is None and s.slurm is None and s.kubernetes is None


def test_tls_roles():
    s = v({"kind": "address", "address": "tls://h:8786", "tls": {**TLS, "worker_cert_file": "w.pem"}})
    assert s.protocol == "tls://" and s.tls.require_encryption
    assert s.tls.role_files("client") == ("client.pem", "client-key.pem")
    assert s.tls.role_files("worker") == ("w.pem", None)  # w.pem must then hold its key
    assert s.tls.role_files("scheduler") == ("client.pem", "client-key.pem")


# --- environment overrides -------------------------------------------------------------

def test_env_overrides_applied_and_recorded():
    table = {"kind": "local", "workers": 2, "slurm": {"cores": 4, "memory": "8GiB"}}
    s = v(table, NTKSCALE_CLUSTER_KIND="address", NTKSCALE_CLUSTER_ADDRESS="tcp://10.0.0.1:8786",
          NTKSCALE_CLUSTER_WORKERS="8", NTKSCALE_CLUSTER_DASHBOARD="false", UNRELATED="1")
    assert (s.kind, s.address, s.workers, s.dashboard) == ("address", "tcp://10.0.0.1:8786", 8, False)
    assert s.env_overrides == {"cluster.kind": "NTKSCALE_CLUSTER_KIND", "cluster.address": "NTKSCALE_CLUSTER_ADDRESS",
                               "cluster.workers": "NTKSCALE_CLUSTER_WORKERS",
                               "cluster.dashboard": "NTKSCALE_CLUSTER_DASHBOARD"}
    assert table == {"kind": "local", "workers": 2, "slurm": {"cores": 4, "memory": "8GiB"}}  # not mutated


def test_env_overrides_sub_tables():
    s = v(SLURM, NTKSCALE_CLUSTER_SLURM_QUEUE="gpu", NTKSCALE_CLUSTER_SLURM_WALLTIME="02:30:00",
          NTKSCALE_CLUSTER_SLURM_ACCOUNT="12345", NTKSCALE_CLUSTER_SLURM_CORES="16",
          NTKSCALE_CLUSTER_SLURM_JOB_EXTRA_DIRECTIVES='["--exclusive", "--constraint=a100"]')
    sl = s.slurm
    assert (sl.queue, sl.walltime, sl.account, sl.cores) == ("gpu", "02:30:00", "12345", 16)
    assert sl.job_extra_directives == ("--exclusive", "--constraint=a100")
    assert s.env_overrides["cluster.slurm.queue"] == "NTKSCALE_CLUSTER_SLURM_QUEUE"
    k = v(K8S, NTKSCALE_CLUSTER_KUBERNETES_ENV='{A = "1"}', NTKSCALE_CLUSTER_TLS_CA_FILE="ca.pem",
          NTKSCALE_CLUSTER_TLS_CERT_FILE="c.pem")
    assert dict(k.kubernetes.env) == {"A": "1"} and k.tls.ca_file == "ca.pem"


@pytest.mark.parametrize("var, value", [
    ("NTKSCALE_CLUSTER_WORKERS", "many"),
    ("NTKSCALE_CLUSTER_WORKERS", "0"),
    ("NTKSCALE_CLUSTER_KIND", "cloud"),
    ("NTKSCALE_CLUSTER_SLURM_WALLTIME", "soon"),
])
def test_env_value_failing_validation_names_the_variable(var, value):
    with pytest.raises(ConfigError, match=f"set by environment variable {var}="):
        v(SLURM, **{var: value})


def test_unknown_env_variable_is_an_error():
    with pytest.raises(ConfigError, match="NTKSCALE_CLUSTER_WORKRES names no key of \\[cluster\\]"):
        v({}, NTKSCALE_CLUSTER_WORKRES="2")
    with pytest.raises(ConfigError, match="NTKSCALE_CLUSTER_SLURM_QUEUEE names no key of \\[cluster.slurm\\]"):
        v({}, NTKSCALE_CLUSTER_SLURM_QUEUEE="gpu")
    with pytest.raises(ConfigError, match="names no key"):
        v({}, NTKSCALE_CLUSTER_SLURM="x")  # a sub-table is not a scalar key


@pytest.mark.parametrize("raw, want_str, expected", [
    ("8", False, 8), ("1.5", False, 1.5), ("true", False, True), ('"quoted"', False, "quoted"),
    ("4GiB", False, "4GiB"), ("tcp://h:8786", False, "tcp://h:8786"), ("01:00:00", False, "01:00:00"),
    ("inf", False, "inf"), ("nan", False, "nan"), ("1979-05-27", False, "1979-05-27"),
    ('["a", 1]', False, ["a", 1]), ("{x = 1}", False, {"x": 1}),
    ("12345", True, "12345"), ('"gpu"', True, "gpu"), ("true", True, "true"),
])
def test_parse_env_value(raw, want_str, expected):
    got = parse_env_value(raw, want_str=want_str)
    assert got == expected and type(got) is type(expected)
    assert not isinstance(got, (datetime.date, datetime.time))
