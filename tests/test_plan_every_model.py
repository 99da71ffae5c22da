"""``ntkscale plan`` measures every model a job accepts (issue 24, defect 4).

The planner's kernel warm-up (:func:`ntkscale.plan._measure._first_kernels`, the cluster
task :func:`~ntkscale.plan._measure._worker_kernel` and the fresh-worker subprocess) timed an
off-diagonal 32 x 16 tile with the statistics of all 48 rows: activations whose kernel reads
per-row statistics (gelu, sin, cos, sign) crashed with a numpy broadcast error.
"""

from __future__ import annotations

import pytest

from ntkscale.job.config import _model
from ntkscale.job.model import build_arch
from ntkscale.kernels import registry
from ntkscale.plan._measure import _first_kernels, _worker_kernel, worker_warmup

#: every [model] a job accepts: fc with each registered activation, and the image / sequence architectures
MODELS = ([({"activation": a, "depth": 1}, 5) for a in registry.ACTIVATIONS]
          + [({"architecture": "cntk", "image_shape": [4, 4, 1], "depth": 1, "activation": "gelu"}, 16),
             ({"architecture": "myrtle", "image_shape": [8, 8, 1], "depth": 5}, 64),
             ({"architecture": "transformer", "sequence_shape": [4, 3], "depth": 1, "heads": 2}, 12),
             ({"architecture": "cntk", "sequence_shape": [6, 2], "depth": 2, "filter": 3}, 12),
             ({"architecture": "myrtle", "sequence_shape": [8, 2], "depth": 5}, 16)])


@pytest.mark.parametrize("model,d", MODELS, ids=lambda m: str(m.get("architecture", m.get("activation")))
                         if isinstance(m, dict) else str(m))
def test_planner_kernels_run_for_every_model(model, d):
    arch = build_arch(_model(model))
    _first_kernels(arch, d)
    assert _worker_kernel(arch, d, 8, 0.0) > 0


@pytest.mark.parametrize("activation", ["gelu", "relu"])
def test_worker_warmup_measures_instead_of_falling_back(activation):
    arch = build_arch(_model({"activation": activation, "depth": 1}))
    seconds, rss, how = worker_warmup(arch, 5)
    assert how == "fresh subprocess", how
    assert seconds > 0 and rss > 0


@pytest.mark.slow
@pytest.mark.parametrize("activation", list(registry.ACTIVATIONS))
def test_plan_command_on_a_local_cluster_for_every_activation(tmp_path, activation):
    from click.testing import CliRunner

    from ntkscale.cli.main import cli

    job = tmp_path / "job.toml"
    job.write_text(f'[job]\nout = "{tmp_path / "run"}"\n[data]\nsource = "sphere"\nn = 40\nd = 4\n'
                   f'[model]\nactivation = "{activation}"\ndepth = 1\n'
                   '[cluster]\nkind = "local"\nworkers = 1\nthreads_per_worker = 1\n')
    r = CliRunner().invoke(cli, ["--log-level", "warning", "plan", str(job), "--json"])
    assert r.exit_code == 0, r.output
