"""``ntkscale run`` pointed at a cluster started the way a user starts one: ``dask scheduler``
and two ``dask worker`` OS processes on loopback (plain TCP and TLS), same results as the
embedded default (a LocalCluster)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from ntkscale.cli.main import cli

pytestmark = pytest.mark.cluster

JOB = """
[job]
name = "digits-processes"
out = "{out}"
stages = ["gram", "fit", "predict", "spectrum"]

[data]
source = "sklearn"
name = "digits"
n_train = 700
n_test = 300

[model]
depth = 2

[kernel]
tile = 256

[spectrum]
k = 30

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


def _run(tmp_path, name: str, cluster: dict) -> tuple[dict, np.ndarray]:
    job = tmp_path / f"{name}.toml"
    job.write_text(JOB.format(out=tmp_path / name, cluster=_toml(cluster)))
    r = CliRunner().invoke(cli, ["--log-level", "warning", "run", str(job)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / name / "metrics.json").read_text())
    return m, np.load(tmp_path / name / "predictions.npz")["prediction"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("local"), "local", {"kind": "local", "workers": 2})


@pytest.mark.parametrize("dask_processes", [False, True], ids=["tcp", "tls"], indirect=True)
def test_run_against_dask_scheduler_and_workers(dask_processes, reference, tmp_path):
    m_ref, pred_ref = reference
    m, pred = _run(tmp_path, "remote", dask_processes.cluster_table)
    assert m["cluster"]["kind"] == "address" and m["cluster"]["workers"] == 2
    assert m["cluster"]["tls"] is dask_processes.tls
    assert m["cluster"]["address"].startswith("tls://" if dask_processes.tls else "tcp://")
    # The tiles are computed by other processes, with the same float64 kernel and float32
    # storage: identical stored values, so the fit and predictions agree to round-off.
    np.testing.assert_allclose(pred, pred_ref, rtol=0, atol=1e-9)
    assert m["stages"]["predict"]["test_accuracy"] == m_ref["stages"]["predict"]["test_accuracy"]
    np.testing.assert_allclose(m["stages"]["spectrum"]["eta_top"], m_ref["stages"]["spectrum"]["eta_top"],
                               rtol=1e-9)
