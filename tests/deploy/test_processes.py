"""Real clusters: separate ``dask scheduler``/``dask worker`` OS processes (tcp and TLS),
LocalCluster (plain and TLS) and the in-process ``sync`` kind, all through ``start_cluster``.

Oracles: results computed in this process with numpy (exact integer sums, so the
tolerance is 0), worker PIDs equal to the processes the fixture started, the pinned
``OMP_NUM_THREADS`` read inside each worker, and an in-memory TLS handshake between the
generated certificates (Python's ``ssl``, independent of Dask).
"""

from __future__ import annotations

import os
import ssl

import numpy as np
import pytest

from ntkscale.clusters import make_security, start_cluster, validate_cluster

from .conftest import make_certs

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("certs"), "scheduler.example")


def test_make_certs_loads_and_handshakes(certs, tmp_path):
    from distributed.security import Security

    sec = Security(tls_ca_file=certs["ca_file"], tls_client_cert=certs["cert_file"],
                   tls_client_key=certs["key_file"], tls_scheduler_cert=certs["scheduler_cert_file"],
                   tls_scheduler_key=certs["scheduler_key_file"], require_encryption=True)
    server_ctx = sec.get_listen_args("scheduler")["ssl_context"]  # loads cert + key, checks they match
    client_ctx = sec.get_connection_args("client")["ssl_context"]
    assert isinstance(server_ctx, ssl.SSLContext) and client_ctx.verify_mode == ssl.CERT_REQUIRED
    # Mutual TLS handshake in memory: each side verifies the other's chain against the CA.
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_side=False)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    done = {"c": False, "s": False}
    for _ in range(10):
        for key, obj, out, peer_in in (("c", client, c_out, s_in), ("s", server, s_out, c_in)):
            if not done[key]:
                try:
                    obj.do_handshake()
                    done[key] = True
                except ssl.SSLWantReadError:
                    pass
            peer_in.write(out.read())
        if all(done.values()):
            break
    assert all(done.values())
    assert dict(x[0] for x in server.getpeercert()["subject"])["commonName"] == "ntkscale-dask-client"
    san = client.getpeercert()["subjectAltName"]
    assert ("DNS", "scheduler.example") in san and ("IP Address", "127.0.0.1") in san
    # idempotent: a second run keeps every file byte for byte
    before = {k: open(v, "rb").read() for k, v in certs.items() if k.endswith("_file")}
    again = make_certs(os.path.dirname(certs["ca_file"]), "scheduler.example")
    assert again == certs and before == {k: open(v, "rb").read() for k, v in certs.items() if k.endswith("_file")}


def test_missing_certificate_file_is_a_config_error(tmp_path):
    from ntkscale._config import ConfigError

    spec = validate_cluster({"kind": "address", "address": "tls://127.0.0.1:1",
                             "tls": {"ca_file": str(tmp_path / "nope.pem"), "cert_file": "c.pem"}}, environ={})
    with pytest.raises(ConfigError, match=r"'cluster\.tls\.ca_file' = .*nope\.pem.* does not exist"):
        make_security(spec)


@pytest.mark.parametrize("dask_processes", [False, True], indirect=True, ids=["tcp", "tls"])
def test_address_kind_runs_on_both_worker_processes(dask_processes):
    spec = validate_cluster(dask_processes.cluster_table, environ={})
    with start_cluster(spec, timeout=30) as h:
        d = h.describe()
        assert (d["kind"], d["address"], d["workers"], d["threads"], d["tls"]) == \
            ("address", dask_processes.address, 2, 2, dask_processes.tls)
        c = h.client
        pids = c.run(os.getpid)
        assert sorted(pids.values()) == sorted(dask_processes.pids[1:])  # the OS processes we started
        assert set(c.run(os.getenv, "OMP_NUM_THREADS").values()) == {"1"}  # pinned in each worker
        rng = np.random.default_rng(0)
        blocks = [rng.integers(-1000, 1000, size=(200, 50)) for _ in range(2)]
        futs = [c.submit(np.sum, b, workers=[w], allow_other_workers=False, pure=False)
                for b, w in zip(blocks, sorted(pids))]
        assert c.gather(futs) == [int(b.sum()) for b in blocks]  # exact integers
        assert {next(iter(c.who_has(f)[f.key])) for f in futs} == set(pids)  # one task on each worker
        import dask.array as da

        x = da.from_array(np.arange(10_000, dtype=np.int64), chunks=1_000)
        assert int((x * x).sum().compute()) == int(np.sum(np.arange(10_000, dtype=np.int64) ** 2))
        assert h.runner.slots() == 2 and h.client_arg is c
    assert h.client is None  # closed; the processes keep running for the next test


@pytest.mark.parametrize("dask_processes", [True], indirect=True, ids=["tls"])
def test_tls_rejects_a_client_from_another_ca(dask_processes, tmp_path):
    other = make_certs(tmp_path / "other-ca")
    table = {**dask_processes.cluster_table, "tls": other}
    with pytest.raises((OSError, TimeoutError)):
        start_cluster(validate_cluster(table, environ={}), timeout=3)
    plain = {"kind": "address", "address": dask_processes.address.replace("tls://", "tcp://")}
    with pytest.raises((OSError, TimeoutError)):
        start_cluster(validate_cluster(plain, environ={}), timeout=3)


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
def test_local_kind(tls, certs):
    table = {"kind": "local", "workers": 2, "dashboard": False, "memory_limit": "1GiB"}
    if tls:
        table["tls"] = certs
    with start_cluster(validate_cluster(table, environ={})) as h:
        d = h.describe()
        assert d["workers"] == 2 and d["threads"] == 2 and d["memory_per_worker"] == 2**30
        assert d["address"].startswith("tls://" if tls else "tcp://") and d["tls"] is tls
        assert d["dashboard"] is None
        assert set(h.client.run(os.getenv, "OPENBLAS_NUM_THREADS").values()) == {"1"}
        assert h.client.submit(sum, range(101)).result() == 5050
        cluster = h.cluster
    assert cluster.status.name == "closed"


def test_sync_kind():
    with start_cluster(validate_cluster({"kind": "sync"}, environ={"NTKSCALE_CLUSTER_WORKERS": "3"})) as h:
        assert h.client is None and h.client_arg == "sync" and h.runner.is_sync
        d = h.describe()
        assert d["kind"] == "sync" and d["address"] is None and d["env_overrides"] == {
            "cluster.workers": "NTKSCALE_CLUSTER_WORKERS"}


def test_local_temporary_tls():
    spec = validate_cluster({"kind": "local", "workers": 1, "dashboard": False, "tls": {"temporary": True}},
                            environ={})
    import importlib.util

    if importlib.util.find_spec("cryptography") is None:
        with pytest.raises(ImportError, match="needs the 'cryptography' package"):
            make_security(spec)
        return
    with start_cluster(spec) as h:
        assert h.describe()["address"].startswith("tls://")
        assert h.client.submit(sum, [1, 2]).result() == 3
