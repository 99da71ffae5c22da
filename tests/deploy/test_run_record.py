"""The run record says what ran: every worker that joined or left, when, and in which stage.

Oracles: the pid the fault wrapper killed (``faults.conftest.dying``) is the pid of the
worker the ledger records as lost; its nanny's replacement has the same name and a later
join time; a worker process this test starts after the run began is recorded with a join
time after that; the summary arithmetic is checked on hand-written ledgers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner

from ntkscale.cli.main import cli
from ntkscale.clusters import start_cluster, validate_cluster
from ntkscale.clusters.ledger import LedgerPlugin, counts_at, summarize, summary_line
from ntkscale.tiling import tasks

from .conftest import _child_env
from faults.conftest import dying, fired_pid

JOB = """
[job]
name = "record"
out = "{out}"
stages = ["gram", "fit", "predict"]

[data]
source = "sklearn"
name = "digits"
n_train = 400
n_test = 100

[model]
depth = 2

[kernel]
tile = 128

[solver]
method = "pcg"
pcg_rank = 50
tol = 1e-10

[cluster]
{cluster}
"""


def _w(addr, name, host="h", joined=0.0, left=None, threads=1, mem=2**30, gpus=()):
    return {"address": addr, "name": name, "host": host, "nthreads": threads, "memory_limit": mem,
            "gpus": list(gpus), "joined": joined, "left": left}


def test_summary_counts_losses_replacements_and_late_joins():
    ws = [_w("a1", "a-0", "A", 0, 10.0, gpus=["0"]), _w("a2", "a-1", "A", 0, gpus=["1"]),
          _w("b1", "b-0", "B", 0, 10.5, threads=2, mem=2**31), _w("b2", "b-0", "B", 14.0, threads=2, mem=2**31),
          _w("c1", "c-0", "C", 30.0), _w("a3", "a-0", "A", 16.0, gpus=["0"])]
    rec = summarize(ws, {"gram": [0.0, 8.0], "fit": [8.0, 20.0], "predict": [20.0, 40.0]}, end=41.0)
    assert rec["at_stage_start"]["fit"] == {"workers": 3, "threads": 4, "hosts": 2, "gpus": 2,
                                            "memory": 4 * 2**30, "memory_per_worker": 2**30}
    assert rec["at_stage_start"]["predict"]["workers"] == 3  # a-0 and b-0 back
    assert rec["final"]["workers"] == 4 and rec["final"]["hosts"] == 3
    assert rec["max"]["workers"] == 4 and rec["max"]["threads"] == 5 and rec["max"]["gpus"] == 2
    assert [(x["name"], x["stage"], x["replaced_by"], x["replaced_at"]) for x in rec["lost"]] == [
        ("a-0", "fit", "a3", 16.0), ("b-0", "fit", "b2", 14.0)]
    assert [(x["name"], x["stage"]) for x in rec["joined_late"]] == [("c-0", "predict")]
    assert counts_at(ws, 12.0)["workers"] == 1
    line = summary_line({"kind": "address", **rec})
    assert line.startswith("4 workers on 3 hosts (5 threads, 1.0 GiB to 2.0 GiB each, 2 GPUs); "
                           "worker a-0 lost at 10 s during fit, replaced at 16 s; ")
    assert "worker c-0 joined at 30 s during predict" in line
    assert summary_line({"kind": "sync"}).startswith("no workers")


def _run(tmp_path, cluster: str):
    job = tmp_path / "job.toml"
    job.write_text(JOB.format(out=tmp_path / "run", cluster=cluster))
    r = CliRunner().invoke(cli, ["--log-level", "warning", "run", str(job)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    return m, (tmp_path / "run" / "report.md").read_text(), np.load(tmp_path / "run" / "predictions.npz")


@pytest.mark.cluster
def test_local_run_records_a_worker_killed_during_fit_and_its_restart(tmp_path, monkeypatch):
    trigger = tmp_path / "kill"
    trigger.touch()  # the first Gram pass (the fit's first PCG iteration) kills its worker
    monkeypatch.setattr(tasks, "matvec_task", dying(tasks.matvec_task, str(trigger)))
    m, report, _ = _run(tmp_path, 'kind = "local"\nworkers = 2\nmemory_limit = "1GiB"\ndashboard = false')
    c = m["cluster"]
    killed = fired_pid(trigger)
    assert killed is not None and c["source"] == "scheduler-plugin"
    assert c["requested"]["workers"] == 2 and c["workers"] == 2 and c["threads"] == 2
    (lost,) = c["lost"]
    dead = next(w for w in c["workers_joined"] if w["address"] == lost["address"])
    assert dead["pid"] == killed and lost["stage"] == "fit"
    fit0, fit1 = c["stage_times"]["fit"]
    assert fit0 <= lost["at"] <= fit1 and lost["replaced_at"] >= lost["at"]
    new = next(w for w in c["workers_joined"] if w["address"] == lost["replaced_by"])
    assert new["name"] == dead["name"] and new["replaces"] == dead["address"] and new["pid"] != killed
    assert len(c["workers_joined"]) == 3 and c["final"]["workers"] == 2
    assert c["at_stage_start"]["gram"]["workers"] == 2 and c["max"]["memory"] == 2 * 2**30
    assert f"worker {dead['name']} lost at {lost['at']:.0f} s during fit, replaced at" in report
    assert "2 workers on 1 host (2 threads, 2 × 1.0 GiB)" in report


@pytest.mark.cluster
def test_address_kind_records_a_worker_that_joined_late(dask_processes, tmp_path):
    spec = validate_cluster(dask_processes.cluster_table, environ={})
    with start_cluster(spec, timeout=30) as h:
        h.start_ledger(time.time())
        time.sleep(0.5)
        late = subprocess.Popen([sys.executable, "-m", "dask", "worker", dask_processes.address, "--host",
                                 "127.0.0.1", "--nthreads", "1", "--no-nanny", "--no-dashboard", "--memory-limit",
                                 "512MiB", "--name", "late", "--local-directory", str(tmp_path / "late")],
                                env=_child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            from ntkscale.tiling.executor import await_workers

            assert await_workers(h.client, 3, 60) == 3
            rec = h.record({"work": [0.2, 100.0]})
            late.terminate()
            late.wait(30)
            for _ in range(100):
                after = h.record({"work": [0.2, 100.0]})
                if after["lost"]:
                    break
                time.sleep(0.1)
        finally:
            if late.poll() is None:
                late.kill()
    assert rec["source"] == "scheduler-plugin" and rec["workers"] == 3
    (j,) = rec["joined_late"]
    assert j["name"] == "late" and j["at"] >= 0.5 and j["stage"] == "work"
    w = next(w for w in rec["workers_joined"] if w["name"] == "late")
    assert w["memory_limit"] == 512 * 2**20 and w["gpus"] == [] and w["host"] == "127.0.0.1"
    assert [(x["name"], x["replaced_by"]) for x in after["lost"]] == [("late", None)]
    assert after["final"]["workers"] == 2 and after["max"]["workers"] == 3
    # the plugin is gone with the run: a shared scheduler keeps no ledger of ours
    from distributed import Client

    with Client(dask_processes.address, timeout=30) as c:
        assert not [p for p in c.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.plugins))
                    if p.startswith("ntkscale-ledger")]


@pytest.mark.parametrize("kind", ["slurm", "kubernetes"])
def test_slurm_and_kubernetes_record_workers_that_arrive_after_the_start(kind, monkeypatch):
    """Their code path through start_cluster with a stand-in cluster (a LocalCluster started
    empty, scaled afterwards as SLURM jobs / pods arrive)."""
    from distributed import LocalCluster

    from ntkscale.clusters import kubernetes, slurm

    made = []

    def fake(spec, security=None):
        made.append(LocalCluster(n_workers=0, processes=False, dashboard_address=":0", threads_per_worker=1))
        return made[-1]

    monkeypatch.setattr(slurm, "start_slurm", fake)
    monkeypatch.setattr(kubernetes, "start_kubernetes", fake)
    table = ({"kind": "slurm", "slurm": {"cores": 2, "memory": "2GiB", "jobs": 1}} if kind == "slurm"
             else {"kind": "kubernetes", "workers": 2, "kubernetes": {"image": "x"}})
    with start_cluster(validate_cluster(table, environ={}), timeout=30) as h:
        h.start_ledger(time.time())
        assert h.record()["workers_joined"] == []  # nothing yet: the record says so
        time.sleep(0.3)  # "after the start" by more than the clock offset's error
        made[0].scale(2)
        h.client.wait_for_workers(2, timeout=30)
        rec = h.record({"gram": [0.0, 1000.0]})
    assert rec["kind"] == kind and rec["requested"]["workers"] == 2 and rec["workers"] == 2
    assert kind in rec["requested"] and len(rec["joined_late"]) == 2
    assert summary_line(rec).startswith("2 workers on 1 host (2 threads")


def test_a_scheduler_without_ntkscale_gets_the_polled_record(monkeypatch):
    """register_plugin fails (the scheduler cannot import the plugin): the ledger polls."""
    from distributed import Client, LocalCluster

    def refuse(self, plugin, name=None):
        raise ModuleNotFoundError("No module named 'ntkscale'")

    monkeypatch.setattr(Client, "register_plugin", refuse)
    with LocalCluster(n_workers=1, processes=False, dashboard_address=":0", threads_per_worker=1) as cl, \
            Client(cl) as c:
        from ntkscale.clusters.handle import ClusterHandle

        h = ClusterHandle(validate_cluster({"kind": "address", "address": cl.scheduler_address}, environ={}),
                          client=c)
        h.start_ledger(time.time())
        cl.scale(2)
        c.wait_for_workers(2, timeout=30)
        rec = h.record({"gram": [0.0, 1000.0]})
        h.ledger.close()
    assert rec["source"] == "polled" and "ntkscale" in rec["ledger_error"]
    assert rec["workers"] == 2 and [w["at_start"] for w in rec["workers_joined"]] == [True, False]
    assert len(rec["joined_late"]) == 1


def test_sync_says_there_were_no_workers():
    with start_cluster(validate_cluster({"kind": "sync"}, environ={})) as h:
        rec = h.record()
    assert rec["source"] == "none" and rec["workers_joined"] == [] and "no workers" in summary_line(rec)


def test_plugin_seeds_present_workers_with_their_event_time():
    class WS:
        address, name, host, nthreads, memory_limit, resources, extra, pid = "tcp://x:1", "w", "x", 2, 0, {}, {}, 7

    class Sched:
        workers = {"tcp://x:1": WS()}
        events = {"all": [(time.time() - 5, {"action": "add-worker", "worker": "tcp://x:1"})]}

    p = LedgerPlugin("t")
    p.start(Sched())
    p.remove_worker(Sched(), "tcp://x:1", stimulus_id="handle-worker-cleanup-1712345678.25")
    (r,) = p.state()["records"]
    assert p.t_start - r["joined"] == pytest.approx(5, abs=1) and r["memory_limit"] is None
    assert r["reason"] == "handle-worker-cleanup" and r["left"] >= p.t_start


def test_the_clock_offset_ignores_a_slow_first_round_trip():
    """The first call to the scheduler may import ntkscale there (seconds on a loaded CI
    machine): its half round trip must not become the offset's error, or a worker that joined
    just after the start is dated before it (CI failure of 2026-12-07: joined_late empty)."""
    from ntkscale.clusters.ledger import WorkerLedger

    class Slow:
        calls = 0

        def register_plugin(self, plugin, name=None):
            pass

        def run_on_scheduler(self, fn, name):
            Slow.calls += 1
            now = time.time()  # same clock as the client: the true offset is 0
            if Slow.calls == 1:
                time.sleep(1.0)  # stamped early, answered late
            return {"now": now, "records": []}

    led = WorkerLedger(Slow(), t0=time.time())
    assert Slow.calls >= 3
    assert abs(led._shift + led.t0) < 0.05, led._shift + led.t0  # shift = -t0 when clocks agree
