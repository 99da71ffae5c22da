"""``kind = "slurm"`` against a real scheduler: a one-node SLURM started by
``deploy/slurm/local-cluster.sh start`` (``.ci/run`` does it when it can install it).

Workers are SLURM jobs submitted with ``sbatch`` by dask-jobqueue; every result is
compared with an oracle computed without SLURM (a LocalCluster run, or a Gram/solve in
this process). Faults: a worker job ``scancel``-ed during the Gram build and during PCG,
worker jobs reaching their walltime mid-build (``slow``), and no worker ever starting
(the run fails after ``worker_timeout`` naming it and the queue state). Finally
``deploy/slurm/launch.sbatch`` is submitted as deploy/README.md says, with TLS on.

Skipped, with the reason, when ``sinfo`` does not answer. Worker jobs inherit this
process's environment (``sbatch`` exports it): ``SLURM_CONF`` and a ``PYTHONPATH`` that
makes this checkout importable.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from ntkscale.cli.main import cli

from .conftest import REPO, make_certs

pytestmark = pytest.mark.slurm

LOCAL_CONF = Path(os.environ.get("NTKSCALE_SLURM_DIR", "/tmp/ntkscale-slurm")) / "slurm.conf"
LAUNCH = REPO / "deploy" / "slurm" / "launch.sbatch"


def _sinfo_problem() -> str | None:
    if shutil.which("sinfo") is None:
        return "sinfo not found (no SLURM here: `deploy/slurm/local-cluster.sh start` installs and starts one)"
    try:
        r = subprocess.run(["sinfo", "-h", "-o", "%a %t"], capture_output=True, text=True, timeout=15)
    except subprocess.TimeoutExpired:
        return "sinfo did not answer within 15 s"
    if r.returncode != 0 or not r.stdout.strip():
        last = ((r.stderr or r.stdout).strip().splitlines() or ["no output"])[-1][:200]
        return f"sinfo fails ({last}); start one with deploy/slurm/local-cluster.sh start"
    if not any(s.split()[0] == "up" and s.split()[1].startswith(("idle", "mix", "alloc")) for s in r.stdout.splitlines()):
        return f"no usable SLURM node: sinfo says {r.stdout.strip()!r}"
    return None


@pytest.fixture(scope="module", autouse=True)
def slurm_env():
    """Point SLURM commands at the local cluster's configuration and make this checkout
    importable in worker jobs; skip the module without a responding ``sinfo``."""
    saved = {k: os.environ.get(k) for k in ("SLURM_CONF", "PYTHONPATH")}
    if "SLURM_CONF" not in os.environ and LOCAL_CONF.is_file():
        os.environ["SLURM_CONF"] = str(LOCAL_CONF)
    problem = _sinfo_problem()
    if problem:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
        pytest.skip(f"no SLURM: {problem}")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), saved["PYTHONPATH"]) if p)
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _squeue_ids() -> set[str]:
    out = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, timeout=15).stdout
    return set(out.split())


def _wait_queue_empty(ids: set[str], timeout: float = 60) -> None:
    """The jobs ``ids`` have left the queue (so the next test gets both CPUs)."""
    deadline = time.monotonic() + timeout
    while _squeue_ids() & ids:
        assert time.monotonic() < deadline, f"jobs {_squeue_ids() & ids} still queued after {timeout:.0f} s"
        time.sleep(0.5)


def _slurm_table(tmp_path: Path, **extra) -> dict:
    s = {"cores": 1, "memory": "2GB", "jobs": 2, "log_directory": str(tmp_path / "worker-logs"),
         "worker_timeout": "3m", **extra}
    return {"kind": "slurm", "dashboard": False, "slurm": s}


# ----------------------------------------------------------------------------------------
# ntkscale run, end to end

JOB = """
[job]
name = "{name}"
out = "{out}"
stages = ["gram", "fit", "predict"]

[data]
source = "sklearn"
name = "digits"
n_train = 400
n_test = 200

[model]
depth = 2

[kernel]
tile = 128

[cluster]
{cluster}
"""


def _toml(table: dict) -> str:
    lines, subs = [], []
    for k, v in table.items():
        if isinstance(v, dict):
            subs.append(f"[cluster.{k}]\n" + "\n".join(f"{a} = {json.dumps(b)}" for a, b in v.items()))
        else:
            lines.append(f"{k} = {json.dumps(v)}")
    return "\n".join(lines) + "\n\n" + "\n\n".join(subs)


def _write_job(tmp_path: Path, name: str, cluster: dict) -> Path:
    job = tmp_path / f"{name}.toml"
    job.write_text(JOB.format(name=name, out=tmp_path / name, cluster=_toml(cluster)))
    return job


def _results(run_dir: Path) -> tuple[dict, np.ndarray]:
    m = json.loads((run_dir / "metrics.json").read_text())
    return m, np.load(run_dir / "predictions.npz")["prediction"]


def _run(tmp_path: Path, name: str, cluster: dict) -> tuple[dict, np.ndarray]:
    job = _write_job(tmp_path, name, cluster)
    r = CliRunner().invoke(cli, ["--log-level", "warning", "run", str(job)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return _results(tmp_path / name)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The digits job on a LocalCluster of 2 workers (the oracle)."""
    return _run(tmp_path_factory.mktemp("local"), "local", {"kind": "local", "workers": 2, "dashboard": False})


def test_run_with_slurm_workers_equals_local(reference, tmp_path):
    before = _squeue_ids()
    m_ref, pred_ref = reference
    m, pred = _run(tmp_path, "slurm", _slurm_table(tmp_path))
    assert m["cluster"]["kind"] == "slurm"
    # the worker jobs ran under SLURM: jobqueue's job script wrote their logs
    logs = list((tmp_path / "worker-logs").glob("*.out")) + list((tmp_path / "worker-logs").glob("*.err"))
    assert logs, "no worker job logs: were the workers SLURM jobs?"
    np.testing.assert_allclose(pred, pred_ref, rtol=0, atol=1e-9)
    assert m["stages"]["predict"]["test_accuracy"] == m_ref["stages"]["predict"]["test_accuracy"]
    _wait_queue_empty(_squeue_ids() - before)


# ----------------------------------------------------------------------------------------
# Faults, through the library: a Gram store and a PCG solve with SLURM workers


@pytest.fixture
def slurm_cluster(tmp_path):
    """A started ``kind = "slurm"`` cluster with its 2 worker jobs connected."""
    from ntkscale.clusters import start_cluster, validate_cluster

    def start(**extra):
        spec = validate_cluster(_slurm_table(tmp_path, **extra), environ={})
        h = start_cluster(spec)
        handles.append(h)
        return h

    handles: list = []
    yield start
    ids: set[str] = set()
    for h in handles:
        if h.cluster is not None:
            ids |= {str(j.job_id) for j in h.cluster.workers.values() if j.job_id}
        h.close()
    _wait_queue_empty(ids)


def _job_ids(handle) -> list[str]:
    return [str(j.job_id) for j in handle.cluster.workers.values() if j.job_id]


def _resubmitted(handle, original: set[str], timeout: float = 120) -> set[str]:
    """Wait until 2 workers are connected again; the job ids that replaced lost ones."""
    handle.client.wait_for_workers(2, timeout=timeout)
    return set(_job_ids(handle)) - original


def test_worker_job_cancelled_during_build_is_resubmitted(slurm_cluster, tmp_path):
    from faults.conftest import TILE, chunk_bytes, data, make_arch

    from ntkscale.tiling import build_gram

    ref = tmp_path / "ref"
    build_gram(make_arch(), data(), ref, get="ntk", tile=TILE, dtype=np.float64, client="sync")
    h = slurm_cluster()
    h.client.wait_for_workers(2, timeout=120)
    original = set(_job_ids(h))
    cancelled: list[str] = []

    def on_tile(result):  # after the 2nd tile, cancel one worker job (the build goes on)
        if len(cancelled) == 0 and len(done) == 1:
            cancelled.append(sorted(original)[0])
            subprocess.run(["scancel", cancelled[0]], check=True, timeout=15)
        done.append(result)

    done: list = []
    got = tmp_path / "got"
    build_gram(make_arch(), data(), got, get="ntk", tile=TILE, dtype=np.float64, client=h.client,
               on_tile=on_tile, _delay=1.5)
    assert cancelled and len(done) == 15
    assert chunk_bytes(got) == chunk_bytes(ref)  # bit-identical Gram
    assert _resubmitted(h, original), "the cancelled job was not replaced"


def test_worker_job_cancelled_during_pcg_is_resubmitted(slurm_cluster, tmp_path, monkeypatch):
    from faults.conftest import N, TILE, data, make_arch

    from ntkscale.operator import StoredGram
    from ntkscale.solvers import solve
    from ntkscale.tiling import build_gram, tasks

    gram = tmp_path / "g"
    build_gram(make_arch(), data(), gram, get="ntk", tile=TILE, dtype=np.float64, client="sync")
    Y = np.random.default_rng(1).standard_normal((N, 2))
    kw = dict(solver="pcg", tol=1e-10, pcg_rank=40, seed=0)
    with StoredGram(gram, "ntk", client="sync") as op:
        lam = 1e-3 * float(np.mean(op.diag()))
        ref = solve(op, Y, lam, **kw)

    h = slurm_cluster()
    h.client.wait_for_workers(2, timeout=120)
    original = set(_job_ids(h))
    real_task, slow = tasks.matvec_task, str(tmp_path / "slow")

    def slow_task(*a, **k):  # while `slow` exists, matvec tasks take a while: the cancel hits a running one
        if os.path.exists(slow):
            time.sleep(0.5)
        return real_task(*a, **k)

    monkeypatch.setattr(tasks, "matvec_task", slow_task)
    with StoredGram(gram, "ntk", client=h.client) as op:
        real, calls = op.matvec, []

        def matvec(V, *a, **k):
            calls.append(1)
            if len(calls) == 4:  # pass 1 is the Nystrom sketch: cancel in PCG's 3rd iteration
                open(slow, "w").close()
                subprocess.Popen(["bash", "-c", f"sleep 0.5; scancel {sorted(original)[0]}"])
            if len(calls) == 7:
                os.remove(slow)
            return real(V, *a, **k)

        op.matvec = matvec
        got = solve(op, Y, lam, **kw)
    assert len(calls) > 4
    # the rerun tasks regroup the partial sums: round-off may move PCG's stopping point by one
    # iteration (66 vs 67 in a CI run of 2026-12-07); the solve must still meet its tolerance
    # against the stored Gram, and equal the reference (to 1e-10 at equal iterations; one
    # iteration apart, the two stopped at residuals a PCG step apart: 1e-7)
    assert got.converged and abs(got.iterations - ref.iterations) <= 1
    with StoredGram(gram, "ntk", client="sync") as op:
        K = op.to_numpy()
    resid = np.linalg.norm(K @ got.x + lam * got.x - Y) / np.linalg.norm(Y)
    assert resid <= 2e-10, resid  # (the true residual; PCG stops on its recursive one)
    rel = float(np.linalg.norm(got.x - ref.x) / np.linalg.norm(ref.x))
    assert rel < (1e-10 if got.iterations == ref.iterations else 1e-7), rel
    assert _resubmitted(h, original), "the cancelled job was not replaced"


@pytest.mark.slow
def test_walltime_reached_mid_build_jobs_are_resubmitted(slurm_cluster, tmp_path):
    from faults.conftest import TILE, chunk_bytes, data, make_arch

    from ntkscale.tiling import build_gram

    ref = tmp_path / "ref"
    build_gram(make_arch(), data(), ref, get="ntk", tile=TILE, dtype=np.float64, client="sync")
    h = slurm_cluster(walltime="00:01:00")
    h.client.wait_for_workers(2, timeout=120)
    original = set(_job_ids(h))
    t0 = time.monotonic()
    got = tmp_path / "got"
    # 15 tiles x 12 s on 2 workers: ~90 s, past the 1-minute walltime of both jobs
    build_gram(make_arch(), data(), got, get="ntk", tile=TILE, dtype=np.float64, client=h.client, _delay=12.0)
    assert time.monotonic() - t0 > 75
    assert chunk_bytes(got) == chunk_bytes(ref)
    assert len(_resubmitted(h, original)) >= 2, "jobs past their walltime were not replaced"


def test_no_worker_within_worker_timeout_fails_clearly(slurm_cluster, tmp_path, caplog):
    from distributed.scheduler import NoWorkerError

    from ntkscale.tiling import build_gram
    from faults.conftest import data, make_arch

    # the jobs stay pending (BeginTime) for an hour: no worker ever connects
    h = slurm_cluster(worker_timeout="15s", job_extra_directives=["--begin=now+3600"])
    t0 = time.monotonic()
    with caplog.at_level(logging.ERROR, logger="ntkscale"), pytest.raises(NoWorkerError, match="without any running workers"):
        build_gram(make_arch(), data(100), tmp_path / "g", get="ntk", tile=64, client=h.client)
    took = time.monotonic() - t0
    assert 10 < took < 60, took
    deadline = time.monotonic() + 10
    while "worker_timeout" not in caplog.text and time.monotonic() < deadline:
        time.sleep(0.5)
    assert "worker_timeout = '15s'" in caplog.text and "PENDING (BeginTime)" in caplog.text, caplog.text


# ----------------------------------------------------------------------------------------
# deploy/slurm/launch.sbatch: the scheduler and driver inside a batch job, TLS on


def _job_state(job_id: str) -> str:
    out = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True, timeout=15).stdout
    for tok in out.split():
        if tok.startswith("JobState="):
            return tok.split("=", 1)[1]
    return "UNKNOWN"


def test_launch_sbatch_with_tls(reference, tmp_path):
    import socket

    tls = make_certs(tmp_path / "certs", socket.gethostname())
    cluster = _slurm_table(tmp_path, jobs=1)
    cluster["tls"] = tls
    job = _write_job(tmp_path, "driver", cluster)
    # As deploy/README.md says, with the driver's size overridden to fit a 2-CPU node next
    # to its one worker job (options on the command line win over #SBATCH lines).
    env = dict(os.environ, NTKSCALE_VENV=sys.prefix)
    r = subprocess.run(["sbatch", "--parsable", "--cpus-per-task=1", "--mem=2G", f"--chdir={tmp_path}",
                        f"--output={tmp_path}/ntkscale-driver-%j.out", str(LAUNCH), str(job)],
                       capture_output=True, text=True, timeout=30, env=env, check=True)
    job_id = r.stdout.strip().split(";")[0]
    deadline = time.monotonic() + 240
    while (state := _job_state(job_id)) in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING"):
        assert time.monotonic() < deadline, f"driver job {job_id} still {state}"
        time.sleep(1)
    out = (tmp_path / f"ntkscale-driver-{job_id}.out").read_text()
    assert state == "COMPLETED", f"driver job {job_id} {state}:\n{out[-3000:]}"
    assert f"SLURM job {job_id}" in out
    m, pred = _results(tmp_path / "driver")
    assert m["cluster"]["kind"] == "slurm" and m["cluster"]["tls"] is True
    assert m["cluster"]["address"].startswith("tls://")
    m_ref, pred_ref = reference
    np.testing.assert_allclose(pred, pred_ref, rtol=0, atol=1e-9)
