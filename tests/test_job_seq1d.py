"""``[model] architecture = "cntk" | "myrtle"`` with ``sequence_shape = [T, C]``: rows read as
sequences through ``Unflatten(1, T, C)``, 1-d windows (the config, the built architecture against
a hand-written ``stax.serial``, the row-width check before any work, a job end to end on digits
read as 8 rows of 8 pixels, and its tiled store against the dense kernel)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from ntkscale import stax
from ntkscale._config import ConfigError
from ntkscale.cli.main import cli
from ntkscale.job import load_job, parse_job
from ntkscale.job.config import _model
from ntkscale.job.model import build_arch
from ntkscale.kernels import spec_json

DOC = {"data": {"source": "sklearn", "name": "digits"}, "cluster": {"kind": "sync"}}


@pytest.mark.parametrize("model, msg", [
    ({"architecture": "cntk"}, "(one of them): neither is set"),
    ({"architecture": "myrtle", "sequence_shape": [8, 8], "image_shape": [8, 8, 1]}, "both are set, remove one"),
    ({"architecture": "cntk", "sequence_shape": [8]}, "'model.sequence_shape' must be [length, channels]"),
    ({"architecture": "cntk", "sequence_shape": [8, 0]}, "'model.sequence_shape' must be [length, channels]"),
    ({"architecture": "cntk", "sequence_shape": [8, True]}, "'model.sequence_shape' must be"),
    ({"architecture": "myrtle", "sequence_shape": [8, 8, 1]}, "for images give 'model.image_shape'"),
    ({"architecture": "cntk", "sequence_shape": "8x8"}, "'model.sequence_shape'"),
    ({"sequence_shape": [8, 8]}, "'model.sequence_shape' applies to sequence architectures only"),
    ({"architecture": "fc", "image_shape": [8, 8, 1]}, "'model.image_shape' applies to"),
    # VALID: each of depth layers removes filter - 1 positions; 2 x 2 = 4 leaves none of T = 4
    ({"architecture": "cntk", "sequence_shape": [4, 2], "padding": "VALID", "filter": 3},
     "'model.filter' = 3 with padding = 'VALID' and depth = 2 leaves no position of the length 4"),
    ({"architecture": "cntk", "image_shape": [8, 4, 1], "padding": "VALID", "filter": 3},
     "leaves no position of the width 4 of 'model.image_shape'"),
])
def test_sequence_config_errors_name_the_key(model, msg):
    with pytest.raises(ConfigError) as e:
        parse_job({**DOC, "model": model}, environ={})
    assert msg in str(e.value)


def test_sequence_config_accepts_what_fits():
    """The VALID boundary (one position left) parses; the other shape key stays empty."""
    m = parse_job({**DOC, "model": {"architecture": "cntk", "sequence_shape": [5, 2], "padding": "VALID",
                                    "filter": 3}}, environ={}).model
    assert m["sequence_shape"] == [5, 2] and m["image_shape"] == [] and m["padding"] == "VALID"
    m = parse_job({**DOC, "model": {"architecture": "myrtle", "sequence_shape": [16, 3], "depth": 7}},
                  environ={}).model
    assert m["sequence_shape"] == [16, 3] and m["depth"] == 7


def _hand_cntk(t, c, f, padding, depth, W, b):
    layers = [stax.Unflatten(1, t, c)]
    for _ in range(depth):
        layers += [stax.Conv(1, (f,), padding=padding, W_std=W, b_std=b), stax.Relu()]
    return stax.serial(*layers, stax.Flatten(), stax.Dense(1, W_std=W, b_std=b))


def _hand_myrtle(t, c, W, b):
    conv = lambda: [stax.Conv(1, (3,), padding="SAME", W_std=W, b_std=b), stax.Relu()]  # noqa: E731
    pool = stax.AvgPool((2,), (2,), padding="SAME")
    return stax.serial(stax.Unflatten(1, t, c), *conv(), *conv(), pool, *conv(), pool, *conv(),
                       stax.GlobalAvgPool(), stax.Dense(1, W_std=W, b_std=b))


@pytest.mark.parametrize("model, hand", [
    ({"architecture": "cntk", "sequence_shape": [7, 3], "filter": 3, "padding": "SAME", "depth": 2},
     lambda W, b: _hand_cntk(7, 3, 3, "SAME", 2, W, b)),
    ({"architecture": "cntk", "sequence_shape": [9, 2], "filter": 2, "padding": "VALID", "depth": 3},
     lambda W, b: _hand_cntk(9, 2, 2, "VALID", 3, W, b)),
    ({"architecture": "cntk", "sequence_shape": [6, 4], "filter": 5, "padding": "CIRCULAR", "depth": 1},
     lambda W, b: _hand_cntk(6, 4, 5, "CIRCULAR", 1, W, b)),
    ({"architecture": "myrtle", "sequence_shape": [8, 3], "depth": 5}, lambda W, b: _hand_myrtle(8, 3, W, b)),
])
def test_built_architecture_equals_hand_written_1d_serial(model, hand):
    """The job's architecture is the ``stax.serial`` of 1-d ``Conv`` on ``Unflatten(1, T, C)``
    rows: the same spec, and the same NNGP/NTK values on random rows (symmetric and cross)."""
    m = _model({**model, "W_std": 1.3, "b_std": 0.2})
    arch, ref = build_arch(m), hand(1.3, 0.2)
    assert spec_json(arch) == spec_json(ref)
    t, c = m["sequence_shape"]
    rng = np.random.default_rng(0)
    x1, x2 = rng.standard_normal((6, t * c)), rng.standard_normal((4, t * c))
    for get in ("nngp", "ntk"):
        np.testing.assert_allclose(arch.kernel_fn(x1, None, get), ref.kernel_fn(x1, None, get), rtol=1e-12)
        np.testing.assert_allclose(arch.kernel_fn(x1, x2, get), ref.kernel_fn(x1, x2, get), rtol=1e-12)


def test_windows_slide_along_positions():
    """Independent check that rows are (T, C) sequences with windows along T: with CIRCULAR
    padding the kernel is invariant to a cyclic shift of the positions and (infinite width: it
    sees channel inner products only) to any permutation of the channels, but not to a
    non-cyclic permutation of the positions; the same rows read as (T, C, 1) images with f x f
    windows are not invariant to the channel permutation."""
    t, c, n = 6, 5, 5  # c = 5: a 3-wide circular window on 4 columns would miss one, symmetric in all
    x = np.random.default_rng(1).standard_normal((n, t, c))
    perm_c = x[:, :, [2, 0, 4, 1, 3]].reshape(n, -1)
    perm_t = x[:, [0, 2, 1, 3, 4, 5], :].reshape(n, -1)
    shift_t = np.roll(x, 2, axis=1).reshape(n, -1)
    for arch in ("cntk", "myrtle"):
        extra = {"padding": "CIRCULAR", "depth": 2} if arch == "cntk" else {}
        k_fn = build_arch(_model({"architecture": arch, "sequence_shape": [t, c], **extra})).kernel_fn
        k = k_fn(x.reshape(n, -1), None, "ntk")
        np.testing.assert_allclose(k_fn(perm_c, None, "ntk"), k, rtol=1e-12)
        assert not np.allclose(k_fn(perm_t, None, "ntk"), k, rtol=1e-3)
        if arch == "cntk":
            np.testing.assert_allclose(k_fn(shift_t, None, "ntk"), k, rtol=1e-12)
            image = build_arch(_model({"architecture": "cntk", "image_shape": [t, c, 1], **extra})).kernel_fn
            assert not np.allclose(image(perm_c, None, "ntk"), image(x.reshape(n, -1), None, "ntk"), rtol=1e-3)


JOB = """
[job]
out = "{out}"
stages = ["gram", "fit", "predict"]

[data]
source = "sklearn"
name = "digits"
n_train = {n_train}
n_test = {n_test}
preprocess = "sphere"

[model]
architecture = "{arch}"
sequence_shape = {shape}

[kernel]
tile = 128
dtype = "float64"

[cluster]
kind = "sync"
"""


def _write(tmp_path, arch="cntk", shape="[8, 8]", n_train=400, n_test=200, name="seq.toml"):
    path = tmp_path / name
    path.write_text(JOB.format(out=tmp_path / "run", arch=arch, shape=shape, n_train=n_train, n_test=n_test))
    return str(path)


def test_row_width_checked_before_any_work(tmp_path):
    """Rows of 64 digits pixels against sequence_shape = [8, 4] (T C = 32): ``run`` and ``plan``
    refuse with a ConfigError naming the key before a run directory or a kernel exists."""
    from ntkscale.plan import estimate_from_config

    job = _write(tmp_path, shape="[8, 4]")
    for args in (["run", job], ["plan", job]):
        r = CliRunner().invoke(cli, ["--log-level", "warning", *args])
        assert isinstance(r.exception, ConfigError), r.output
        msg = str(r.exception)
        assert "'model.sequence_shape' = [8, 4]" in msg and "length x channels = 32" in msg
        assert "64 features per row" in msg
    assert not (tmp_path / "run").exists()
    with pytest.raises(ConfigError, match=r"'model.sequence_shape' = \[8, 4\].* planned data has 64 .*e\.g\. \[8, 8\]"):
        estimate_from_config(load_job(job), calibration="unused.json")  # refused before the calibration is read


@pytest.mark.parametrize("arch,n_train,n_test,floor", [
    ("cntk", 400, 200, 0.93),   # 0.965 measured
    ("myrtle", 200, 150, 0.93),  # 0.987 measured; position pairs + pooling: fewer points
])
def test_seq1d_job_on_digits_and_store_equals_dense(tmp_path, arch, n_train, n_test, floor):
    """8x8 digits read as T = 8 rows of C = 8 pixels through ``ntkscale run`` (gram, fit,
    predict in-process, ragged 128-row tiles): a sensible test accuracy, the report names the
    1-d model, and the tiled Gram store equals the dense kernel of the job's rows."""
    from ntkscale.job.context import JobContext
    from ntkscale.operator import StoredGram

    job = _write(tmp_path, arch=arch, n_train=n_train, n_test=n_test)
    r = CliRunner().invoke(cli, ["--log-level", "warning", "run", job], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    acc = metrics["stages"]["predict"]["test_accuracy"]
    assert acc > floor, acc
    report = (tmp_path / "run" / "report.md").read_text()
    assert "8x8 sequences" in report and ("3-tap" in report if arch == "cntk" else "2-tap average pooling" in report)
    cfg = load_job(job)
    X = JobContext(cfg).data.X_train
    dense = build_arch(cfg.model).kernel_fn(X, None, "ntk")
    stored = StoredGram(cfg.store, "ntk").to_numpy()
    assert stored.shape == (n_train, n_train)
    np.testing.assert_allclose(stored, dense, rtol=1e-10, atol=1e-12 * np.abs(dense).max())


def test_sequence_job_plans(tmp_path):
    """The planner reads the 1-d job: its architecture (the work counted as for the 2-d Myrtle)
    and every stage, from a fixed calibration (the kernel timing of sequence models is
    ``tests/test_plan_every_model.py``)."""
    from ntkscale.plan import Calibration, estimate_from_config
    from ntkscale.plan._measure import n_activations

    cfg = load_job(_write(tmp_path, arch="myrtle"))
    arch = build_arch(cfg.model)
    image = build_arch(_model({"architecture": "myrtle", "image_shape": [8, 8, 1]}))
    assert n_activations(arch, 64) == n_activations(image, 64)  # the same layers, 1-d windows
    cal = Calibration(d=64, arch=spec_json(arch), n_activations=n_activations(arch, 64)[0], kernel_tile=1024,
                      kernel_entry_s=1e-6, tile_gemm_flops=3e10, gemm_flops=3e10, cholesky_flops=2e10, eigh_s_per_n3=2e-10,
                      write_bytes_per_s=5e8, read_bytes_per_s=1e9, cast_entry_s=1e-9, gemv_entry_s=3e-10,
                      build_fixed_s=0.05, process_rss_bytes=300 * 2**20)
    plan = estimate_from_config(cfg, calibration=cal, client_memory=16 * 2**30, memory_per_worker=8 * 2**30,
                                fresh_workers=False)
    assert [s.name for s in plan.stages] == ["gram", "fit", "predict"]
    assert plan.stages[0].seconds > 0 and plan.n == 400 and plan.d == 64
