"""SLURM job scripts from ``[cluster.slurm]``, generated without SLURM (dask-jobqueue only).

The expected ``#SBATCH`` values are derived by hand from the spec (cores -> cpus-per-task,
memory in GiB -> ``--mem=<n>G`` rounded up as SLURM reads G as GiB, per-worker memory =
job memory / processes), not read back from jobqueue.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from ntkscale.runner import pinned_env
from ntkscale.clusters import slurm_cluster_kwargs, validate_cluster

from .conftest import REPO, make_certs

SLURM = {"kind": "slurm", "dashboard": False,
         "slurm": {"queue": "compute", "account": "proj42", "walltime": "02:30:00", "cores": 8,
                   "memory": "32GiB", "jobs": 3, "job_script_prologue": ["module load python/3.11"],
                   "job_extra_directives": ["--exclusive"]}}


def script(table):
    pytest.importorskip("dask_jobqueue")
    from ntkscale.clusters import slurm_job_script

    return slurm_job_script(validate_cluster(table, environ={}))


def sbatch(text: str) -> list[str]:
    return [ln[len("#SBATCH "):] for ln in text.splitlines() if ln.startswith("#SBATCH ")]


def worker_line(text: str) -> str:
    (line,) = [ln for ln in text.splitlines() if " -m " in ln]
    return line


def test_kwargs_without_jobqueue():
    kw = slurm_cluster_kwargs(validate_cluster(SLURM, environ={}))
    assert (kw["cores"], kw["processes"], kw["memory"], kw["queue"], kw["account"]) == (8, 8, "32GiB", "compute", "proj42")
    assert kw["job_script_prologue"][0] == "module load python/3.11"  # the user's lines first ...
    assert kw["job_script_prologue"][1:] == [f"export {k}={v}" for k, v in pinned_env(1).items()]  # ... pins last
    assert kw["scheduler_options"] == {"dashboard": False} and "security" not in kw


def test_cpu_job_script():
    text = script(SLURM)
    lines = sbatch(text)
    for want in ("-p compute", "-A proj42", "-t 02:30:00", "--cpus-per-task=8", "--mem=32G", "--exclusive"):
        assert want in lines, (want, lines)
    assert not any("gres" in ln for ln in lines)
    body = text.splitlines()
    for k, val in pinned_env(1).items():
        assert f"export {k}={val}" in body
    assert body.index("module load python/3.11") < body.index("export OMP_NUM_THREADS=1")
    w = worker_line(text)
    assert re.search(r"-m distributed\.cli\.dask_worker tcp://\S+:\d+ ", w), w
    assert "--nthreads 1 " in w and "--nworkers 8" in w and "--nanny" in w
    assert "--memory-limit 4.00GiB" in w  # 32 GiB / 8 processes


def test_threads_follow_cores_per_process():
    text = script({**SLURM, "threads_per_worker": 4, "slurm": {**SLURM["slurm"], "memory": "10GB"}})
    w = worker_line(text)
    assert "--nthreads 4 " in w and "--nworkers 2" in w
    assert "export OPENBLAS_NUM_THREADS=4" in text.splitlines()
    assert "--mem=10G" in sbatch(text)  # 10 GB = 9.31 GiB, rounded up to 10G


def test_gpu_job_script_uses_dask_cuda_worker():
    text = script({**SLURM, "slurm": {**SLURM["slurm"], "gpus_per_job": 4}})
    assert "--gres=gpu:4" in sbatch(text)
    w = worker_line(text)
    assert re.search(r"-m dask cuda worker tcp://\S+:\d+ ", w), w
    assert "--nthreads 2 " in w and "--memory-limit 8.00GiB" in w  # 8 cores, 32 GiB over 4 GPUs
    assert "--nworkers" not in w and "--nanny" not in w  # not options of `dask cuda worker`
    assert "export MKL_NUM_THREADS=2" in text.splitlines()


def test_tls_job_script(tmp_path: Path):
    tls = make_certs(tmp_path / "certs")
    text = script({**SLURM, "tls": tls})
    w = worker_line(text)
    assert re.search(r" tls://\S+:\d+ ", w), w
    assert f"--tls-ca-file {tls['ca_file']}" in w
    assert f"--tls-cert {tls['worker_cert_file']}" in w and f"--tls-key {tls['worker_key_file']}" in w
    assert "--protocol tls://" in w


def test_deploy_slurm_job_toml_validates():
    job = tomllib.loads((REPO / "deploy" / "slurm" / "job.toml").read_text())
    spec = validate_cluster(job["cluster"], environ={})
    assert spec.kind == "slurm" and spec.slurm.cores >= 1
    try:  # the whole example job file is valid for `ntkscale run` (when the job module exists)
        from ntkscale.job import load_job
    except ImportError:
        pass
    else:
        assert load_job(str(REPO / "deploy" / "slurm" / "job.toml"), environ={}).cluster == spec
    sb = (REPO / "deploy" / "slurm" / "launch.sbatch").read_text()
    assert sb.startswith("#!") and "ntkscale run" in sb and "#SBATCH" in sb


FAKE_SBATCH = """#!/usr/bin/env bash
# stand-in for sbatch: run the job script now, in its own session; print a SLURM-like reply
set -e
n=$(ls "$FAKE_SLURM_DIR"/job-*.sh 2>/dev/null | wc -l)
cp "$1" "$FAKE_SLURM_DIR/job-$n.sh"
setsid bash "$FAKE_SLURM_DIR/job-$n.sh" >"$FAKE_SLURM_DIR/job-$n.log" 2>&1 </dev/null &
echo "$!" >>"$FAKE_SLURM_DIR/pids"
echo "Submitted batch job $!"
"""
FAKE_SCANCEL = """#!/usr/bin/env bash
kill -TERM -- "-$1" 2>/dev/null || true
"""


@pytest.mark.cluster
def test_start_cluster_submits_jobs_that_run_pinned_workers(tmp_path, monkeypatch):
    """kind = "slurm" end to end with stand-in sbatch/scancel: 1 job x 2 worker processes."""
    import os
    import signal

    pytest.importorskip("dask_jobqueue")
    from ntkscale.clusters import start_cluster

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("sbatch", FAKE_SBATCH), ("scancel", FAKE_SCANCEL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM_DIR", str(tmp_path))
    spec = validate_cluster({"kind": "slurm", "dashboard": False, "local_directory": str(tmp_path / "scratch"),
                             "slurm": {"cores": 2, "memory": "2GiB", "jobs": 1}}, environ={})
    try:
        with start_cluster(spec, timeout=30) as h:
            h.client.wait_for_workers(2, timeout=60)
            d = h.describe()
            assert (d["kind"], d["workers"], d["threads"], d["memory_per_worker"]) == ("slurm", 2, 2, 2**30)
            assert set(h.client.run(os.getenv, "OMP_NUM_THREADS").values()) == {"1"}
            assert h.client.submit(sum, range(10)).result() == 45
        script = (tmp_path / "job-0.sh").read_text()
        assert "--nworkers 2" in script and "export NUMBA_NUM_THREADS=1" in script
    finally:  # never leave workers behind, whatever failed
        for pid in (tmp_path / "pids").read_text().split() if (tmp_path / "pids").exists() else []:
            try:
                os.killpg(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
