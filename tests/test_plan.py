"""Capacity planning (ntkscale.plan): closed forms, the real store's bytes, the library's own
choices and pass counts, and one real build timed against its estimate."""

import json
import math
import os

import numpy as np
import pytest

from ntkscale import stax
from ntkscale._config import ConfigError
from ntkscale.operator import DenseGram
from ntkscale.plan import Calibration, calibrate, estimate, estimate_from_config, pcg_iterations
from ntkscale.plan.costs import makespan
from ntkscale.tiling import build_gram
from ntkscale.tiling.layout import choose_tile, tile_task_bytes

GiB = 2**30


def _arch(depth=3):
    layers = []
    for _ in range(depth):
        layers += [stax.Dense(512, W_std=2**0.5, b_std=0.1), stax.Relu()]
    return stax.serial(*layers, stax.Dense(1, W_std=2**0.5, b_std=0.1))


ARCH = _arch()


def fake_cal(**kw):
    """A fixed calibration (round numbers): model tests need no measurement."""
    from ntkscale.kernels import spec_json

    base = dict(d=784, arch=spec_json(ARCH), n_activations=3, kernel_tile=1024, kernel_entry_s=1e-7,
                tile_gemm_flops=3e10, gemm_flops=3e10, cholesky_flops=2e10, eigh_s_per_n3=2e-10,
                write_bytes_per_s=5e8, read_bytes_per_s=1e9, cast_entry_s=1e-9, gemv_entry_s=3e-10,
                build_fixed_s=0.05, process_rss_bytes=300 * 2**20)
    base.update(kw)
    return Calibration(**base)


CAL = fake_cal()
PLAN_KW = dict(calibration=CAL, client_memory=16 * GiB, client_threads=2, memory_per_worker=8 * GiB)


# ----------------------------------------------------------------------------- build model
def test_build_flops_are_the_upper_triangle_closed_form():
    # T | n: upper tiles with half-cost diagonal ones are exactly n²/2 entries, 2d flops each
    for n, T in ((8192, 1024), (6000, 1000)):
        p = estimate(n, 784, ARCH, tile=T, fit=False, **PLAN_KW)
        g = n // T
        assert p.stage("gram").tiles == g * (g + 1) // 2
        assert p.stage("gram").flops == pytest.approx(2 * 784 * n * n / 2, rel=1e-12)


def test_build_time_scales_as_n_squared_at_fixed_tile():
    ns = (32768, 65536, 131072)
    tiles = [(n // 1024) * (n // 1024 + 1) / 2 for n in ns]
    # compute only (I/O and task overheads free): ∝ n² up to the fixed and O(n) costs (input
    # hashing, statistics: < 0.5 % here)
    free = fake_cal(write_bytes_per_s=1e30, read_bytes_per_s=1e30, task_overhead_s=0.0, worker_warmup_s=0.0)
    t = [estimate(n, 784, ARCH, tile=1024, workers=1, fit=False, **dict(PLAN_KW, calibration=free))
         .stage("gram").seconds for n in ns]
    assert t[1] / t[0] == pytest.approx(4.0, rel=1e-2) and t[2] / t[1] == pytest.approx(4.0, rel=1e-2)
    # with per-tile chunk writes (diagonal tiles write a whole chunk for half the compute) the
    # ratio lies between the tile-count ratio g(g+1)/2 and 4
    t = [estimate(n, 784, ARCH, tile=1024, workers=1, fit=False, fresh_workers=False, **PLAN_KW)
         .stage("gram").seconds for n in ns]
    for k in (0, 1):
        assert tiles[k + 1] / tiles[k] * 0.999 < t[k + 1] / t[k] < 4.0


def test_workers_halve_the_build_time_modulo_efficiency():
    kw = dict(PLAN_KW, calibration=fake_cal(efficiency=0.9), fresh_workers=False)  # no fixed warm-up
    t = {w: estimate(100_000, 784, ARCH, tile=2048, workers=w, fit=False, **kw).stage("gram").seconds
         for w in (1, 2, 4, 8)}
    # 1 -> 2 slots: twice the slots, each at efficiency 0.9
    assert t[1] / t[2] == pytest.approx(2 * 0.9, rel=0.01)
    # 2 -> 4 -> 8: same efficiency; list scheduling adds at most one tile (1225 tiles here)
    assert t[2] / t[4] == pytest.approx(2.0, rel=0.01)
    assert t[4] / t[8] == pytest.approx(2.0, rel=0.02)
    # threads count as slots too
    t4 = estimate(100_000, 784, ARCH, tile=2048, workers=2, threads_per_worker=2, fit=False, **kw)
    assert t4.slots == 4 and t4.stage("gram").seconds == pytest.approx(t[4], rel=1e-9)


def test_list_schedule_makespan():
    # Graham's example: greedy in order puts 3,3 | 2,2 | 2 -> 7 (optimum 6)
    assert makespan([3, 3, 2, 2, 2], 2) == 7
    assert makespan([1.0] * 10, 3) == 4
    assert makespan([5.0], 4) == 5
    assert makespan([], 2) == 0


def test_worker_memory_is_threads_times_tile_task_bytes():
    for threads, kinds, dt in ((1, ("ntk",), "float32"), (4, ("nngp", "ntk"), "float64")):
        p = estimate(50_000, 784, ARCH, kinds=kinds, store_dtype=dt, threads_per_worker=threads,
                     workers=3, fit=False, **PLAN_KW)
        item = 4 if dt == "float32" else 8
        # the tile is the build's own choice for this memory budget
        assert p.tile == choose_tile(50_000, 50_000, 784, memory_per_task=8 * GiB / threads,
                                     n_kinds=len(kinds), store_itemsize=item, parallel_tasks=3 * threads,
                                     symmetric=True)
        expect = CAL.process_rss_bytes + threads * tile_task_bytes(p.tile, 784, len(kinds), item)
        assert p.stage("gram").worker_peak_bytes == expect
        assert expect <= 8 * GiB


def test_memory_over_the_worker_limit_is_reported():
    p = estimate(50_000, 784, ARCH, tile=8192, memory_per_worker=1 * GiB, fit=False,
                 calibration=CAL, client_memory=16 * GiB)
    assert any("exceeds" in n for n in p.stage("gram").notes)
    assert any("limit" in n for n in p.notes)


@pytest.mark.parametrize("dtype,kinds,n,tile", [("float32", ("nngp", "ntk"), 700, 256),
                                                ("float64", ("ntk",), 700, 300),
                                                ("float32", ("ntk",), 300, 512)])
def test_disk_bytes_match_a_real_store(tmp_path, dtype, kinds, n, tile):
    """The estimate counts chunks as zarr writes them (edge tiles padded, CRC32C, no
    compression): it must match the store on disk. Tolerance 2 %: only the zarr.json
    documents (~0.6 kB each) are approximated."""
    d = 30
    X = np.random.default_rng(0).standard_normal((n, d))
    arch = _arch(2)
    build_gram(arch, X, tmp_path / "g", get=kinds, tile=tile, dtype=np.dtype(dtype), client="sync")
    on_disk = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(tmp_path / "g") for f in fs)
    p = estimate(n, d, arch, kinds=kinds, store_dtype=dtype, tile=tile, fit=False, **PLAN_KW)
    assert p.stage("gram").bytes_on_disk == pytest.approx(on_disk, rel=0.02)


# ----------------------------------------------------------------------------- solve / spectrum
class _Op:
    def __init__(self, n):
        self.shape = (n, n)

    def diag(self):
        return np.ones(self.shape[0])


@pytest.mark.parametrize("n,rel", [(2000, 1e-3), (2000, 0.0), (60_000, 1e-2), (60_000, 1e-3),
                                   (60_000, 1e-5), (60_000, 1e-7), (60_000, 0.0), (40_000, 1e-2)])
def test_auto_solver_choice_matches_the_library(n, rel):
    from ntkscale.solvers.api import _choose, dense_limit

    mem = 16 * GiB
    solver, _, densify = _choose(_Op(n), rel, dense_limit(mem))
    p = estimate(n, 784, ARCH, ridge_relative=rel, **dict(PLAN_KW, client_memory=mem))
    method = p.stage("fit").method
    expect = {("cholesky", True): "LAPACK Cholesky", ("eigh", True): "LAPACK eigh",
              ("pcg", False): "RPCholesky-PCG", ("cholesky", False): "tiled Cholesky"}[(solver, densify)]
    assert expect in method


def test_dense_solve_cost_is_n_cubed_over_three():
    p = estimate(4096, 784, ARCH, **PLAN_KW)
    assert p.stage("fit").flops == pytest.approx(4096**3 / 3)
    # 16 n² bytes at peak: K and its Fortran-order copy factored in place (solvers.cholesky._dense)
    assert p.stage("fit").client_peak_bytes == CAL.process_rss_bytes + 16 * 4096**2


def test_pcg_and_eigen_pass_counts_match_the_solvers():
    """Pass counts against the real solvers on a small in-memory Gram (counting matvecs)."""
    from ntkscale.solvers import randomized_eigh, solve

    class Counting(DenseGram):
        passes = 0

        def matvec(self, V):
            self.passes += 1
            return super().matvec(V)

    rng = np.random.default_rng(1)
    X = rng.standard_normal((400, 8))
    K = _arch(2).kernel_fn(X, None, "ntk")
    Y = rng.standard_normal((400, 3))
    op = Counting(K)
    lam = 1e-3 * np.mean(np.diag(K))
    res = solve(op, Y, lam, solver="pcg", pcg_rank=40, tol=1e-10, maxiter=400)
    p = estimate(400, 8, _arch(2), solver="pcg", ridge_relative=1e-3, pcg_rank=40,
                 pcg_iters=res.iterations, n_outputs=3, **PLAN_KW)
    assert p.stage("fit").passes == op.passes == res.passes
    for power in (0, 2):
        op.passes = 0
        er = randomized_eigh(op, 30, power_iters=power)
        sp = estimate(400, 8, _arch(2), spectrum_k=30, power_iters=power, fit=False, **PLAN_KW)
        assert sp.stage("spectrum").passes == op.passes == er.passes
    # RPCholesky: no sketch pass, in the plan as in the solver
    op.passes = 0
    res = solve(op, Y, lam, solver="pcg", pcg_rank=40, tol=1e-10, maxiter=400, preconditioner="rpcholesky")
    p = estimate(400, 8, _arch(2), solver="pcg", ridge_relative=1e-3, pcg_rank=40, preconditioner="rpcholesky",
                 pcg_iters=res.iterations, n_outputs=3, **PLAN_KW)
    assert p.stage("fit").passes == op.passes == res.passes == res.iterations + 1 + res.iterations // 25


def test_rpcholesky_plan_skips_the_sketch_and_advises_a_rank_within_memory():
    """At n = 120k the sketch is a wide pass and RPCholesky is columns: at rank 1000 RPCholesky
    plans cheaper and with no sketch notes; the advised rank respects the client memory (F of
    n x r float32 + three r x r float64 blocks), and a tight budget forbids the large ranks."""
    from ntkscale.plan.costs import Resources
    from ntkscale.plan.solve_costs import best_pcg_rank

    kw = dict(n_outputs=10, solver="pcg", ridge_relative=0.046, tol=1e-6, **PLAN_KW)
    ny = estimate(120_000, 784, ARCH, pcg_rank=1000, preconditioner="nystrom", **kw).stage("fit")
    rpc = estimate(120_000, 784, ARCH, pcg_rank=1000, preconditioner="rpcholesky", **kw).stage("fit")
    assert rpc.seconds < ny.seconds and rpc.passes == ny.passes - 1
    assert "RPCholesky-PCG, rank 1000" in rpc.method and any("kernel columns" in x for x in rpc.notes)
    assert "Nyström-PCG, rank 1000" in ny.method
    default = estimate(120_000, 784, ARCH, pcg_rank=1000, **kw).stage("fit")  # 'auto': RPCholesky
    assert default.method == rpc.method and default.seconds == rpc.seconds
    auto = estimate(120_000, 784, ARCH, pcg_rank=1000, preconditioner="rpcholesky",
                    **{**kw, "solver": "auto"}).stage("fit")
    assert any(x.startswith("auto: ") and "RPCholesky-PCG" in x and "Nyström" not in x for x in auto.notes)
    big = estimate(120_000, 784, ARCH, pcg_rank=8000, preconditioner="rpcholesky", **kw).stage("fit")
    # F float32 (n r 4) + 3 r² 8 + two (n, 100) float64 blocks, over the client baseline
    assert big.client_peak_bytes >= 120_000 * 8000 * 4 + 3 * 8 * 8000**2
    res = Resources(cal=CAL, slots=2, workers=2, threads=1, gpus=0, efficiency=1.0, client_threads=2,
                    client_memory=16 * GiB, memory_per_worker=8 * GiB, entry_s=1e-7)
    args = (120_000, 8000, 4, 10, res, 0.046, 1e-6, 400, True, 784)
    r_big, s_big = best_pcg_rank(*args, 12 * GiB)
    r_small, s_small = best_pcg_rank(*args, 2 * GiB)
    assert r_small < r_big and s_small > s_big  # the budget binds: a smaller rank, a slower fit
    assert 120_000 * r_small * 4 + 24.0 * r_small**2 <= 2 * GiB < 120_000 * r_big * 4
    assert best_pcg_rank(*args, 1e6) == (0, math.inf)  # nothing fits


def test_pcg_iteration_heuristic_hits_its_anchors():
    assert pcg_iterations(1e-1) == 40 and pcg_iterations(1e-2) == 75 and pcg_iterations(1e-3) == 86
    assert pcg_iterations(1e-4) == math.ceil(86 * 10**0.5)
    assert pcg_iterations(1e-6, maxiter=500) == 500
    assert pcg_iterations(1e-3, tol=1e-4) == math.ceil(86 / 2)


@pytest.mark.parametrize("n, rank, measured", [(30000, 500, 64), (30000, 1000, 47), (30000, 1500, 40),
                                                (120000, 500, 126)])
def test_pcg_iterations_follow_measured_runs(n, rank, measured):
    # Nyström-PCG to 1e-6 at relative ridge 0.046 on Fashion-MNIST NTKs (benchmarks/RESULTS.md):
    # the n and rank scaling reproduces each measured count to 10 %.
    assert abs(pcg_iterations(0.046, tol=1e-6, n=n, rank=rank) / measured - 1) < 0.10


def test_gpu_workers_are_stated_uncalibrated_and_faster_per_slot():
    cpu = estimate(100_000, 784, ARCH, workers=4, fit=False, **PLAN_KW)
    gpu = estimate(100_000, 784, ARCH, gpus=4, fit=False, **PLAN_KW)
    assert gpu.slots == 4 and gpu.stage("gram").seconds < cpu.stage("gram").seconds
    assert any("uncalibrated" in n for n in gpu.notes)


# ----------------------------------------------------------------------------- report / config
def test_table_and_dict():
    p = estimate(20_000, 784, ARCH, n_test=5000, kinds=("nngp", "ntk"), spectrum_k=100,
                 curve_points=4, n_outputs=10, **PLAN_KW)
    assert [s.name for s in p.stages] == ["gram", "fit", "predict", "spectrum", "curve"]
    text = p.table()
    for name in ("gram", "fit", "predict", "spectrum", "curve", "total"):
        assert name in text
    d = json.loads(json.dumps(p.to_dict()))
    assert d["totals"]["seconds"] == pytest.approx(sum(s["seconds"] for s in d["stages"]))
    assert d["totals"]["bytes_on_disk"] == p.stage("gram").bytes_on_disk
    with pytest.raises(KeyError, match="planned"):
        p.stage("dynamics")


def test_bad_arguments_name_the_problem():
    with pytest.raises(ValueError, match="kinds"):
        estimate(1000, 10, ARCH, kinds=("ntk", "foo"), **PLAN_KW)
    with pytest.raises(ValueError, match="solver"):
        estimate(1000, 10, ARCH, solver="lu", **PLAN_KW)
    with pytest.raises(ValueError, match="workers"):
        estimate(1000, 10, ARCH, workers=0, **PLAN_KW)
    with pytest.raises(TypeError, match="calibration"):
        estimate(1000, 10, ARCH, calibration=3.0)
    with pytest.raises(ValueError, match="exceed n"):
        estimate(1000, 10, ARCH, curve_points=[900], curve_n_test=200, **PLAN_KW)


def test_estimate_from_config_defaults_and_overrides():
    cfg = {"data": {"source": "fashion-mnist", "n_train": 8192, "flip": True},
           "kernel": {"store_nngp": True},
           "cluster": {"workers": 4, "threads_per_worker": 2, "memory_limit": "6GiB"},
           "spectrum": {"k": 50}, "curve": {"p": [100, 1000], "trials": 2}}
    p = estimate_from_config(cfg, **PLAN_KW_NO_MEM)
    assert (p.n, p.d, p.n_test) == (16384, 784, 10000)
    assert p.kinds == ("nngp", "ntk") and p.workers == 4 and p.threads_per_worker == 2
    assert p.memory_per_worker == 6 * GiB
    assert [s.name for s in p.stages] == ["gram", "fit", "predict", "spectrum", "curve"]
    assert "k=50" in p.stage("spectrum").method and "p=1000" in p.stage("curve").method
    # n = 16384 > 12000: the spectrum stage adds the tail quadrature's 20 passes of 10 + 8 columns
    assert "tail quadrature, 20+ passes of 18 columns" in p.stage("spectrum").method
    # the same job as keywords gives the same plan
    q = estimate(16384, 784, ARCH, n_test=10000, kinds=("nngp", "ntk"), workers=4, threads_per_worker=2,
                 memory_per_worker=6 * GiB, spectrum_k=50, curve_points=[100, 1000], curve_trials=2,
                 n_outputs=10, tail_steps=20, tail_columns=18, **PLAN_KW_NO_MEM)
    assert p.total_seconds == pytest.approx(q.total_seconds, rel=1e-12)
    q0 = estimate(16384, 784, ARCH, n_test=10000, kinds=("nngp", "ntk"), workers=4, threads_per_worker=2,
                  memory_per_worker=6 * GiB, spectrum_k=50, curve_points=[100, 1000], curve_trials=2,
                  n_outputs=10, **PLAN_KW_NO_MEM)
    assert p.stage("spectrum").passes == q0.stage("spectrum").passes + 20
    assert p.stage("spectrum").seconds > q0.stage("spectrum").seconds
    # sections missing: only the sizes are needed; stages can be dropped
    p2 = estimate_from_config({"job": {"stages": ["gram", "fit"]}}, n=3000, d=20, **PLAN_KW)
    assert [s.name for s in p2.stages] == ["gram", "fit"] and p2.kinds == ("ntk",)


PLAN_KW_NO_MEM = {k: v for k, v in PLAN_KW.items() if k != "memory_per_worker"}


def test_estimate_from_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="data.n_train"):
        estimate_from_config({}, **PLAN_KW)
    # the [data] table is validated by the job schema first (a file source needs its path)
    with pytest.raises(ConfigError, match="data.path"):
        estimate_from_config({"data": {"source": "file", "n_train": 100}}, **PLAN_KW)
    with pytest.raises(ConfigError, match="pass d="):
        estimate_from_config({"data": {"source": "file", "path": "x.npz", "n_train": 100}}, **PLAN_KW)
    with pytest.raises(ConfigError, match="kernel.dtype"):
        estimate_from_config({"kernel": {"dtype": "float16"}}, n=100, d=4, **PLAN_KW)
    with pytest.raises(ConfigError, match="cluster.memory_limit"):
        estimate_from_config({"cluster": {"memory_limit": "lots"}}, n=100, d=4, **PLAN_KW_NO_MEM)


def test_estimate_from_config_reads_the_parsed_job():
    """One parse, the job schema's rules: what the job refuses the planner refuses, a
    JobConfig and its document plan alike, and [spectrum] enabled = false drops the stage
    as ``run`` does."""
    from ntkscale.job import parse_job

    doc = {"data": {"source": "sphere", "n": 3000, "d": 8}, "spectrum": {"enabled": False},
           "cluster": {"workers": 2}}
    p = estimate_from_config(doc, **PLAN_KW)
    q = estimate_from_config(parse_job(doc, environ={}), **PLAN_KW)
    assert [s.name for s in p.stages] == ["gram", "fit", "curve"]
    assert p.to_dict() == q.to_dict()
    with pytest.raises(ConfigError, match="spectrum.k"):  # the schema's k >= 2 (the old reader took 1)
        estimate_from_config({"spectrum": {"k": 1}}, n=100, d=4, **PLAN_KW)
    with pytest.raises(ConfigError, match="model.activation"):
        estimate_from_config({"model": {"activation": "tanhh"}}, n=100, d=4, **PLAN_KW)


def test_a_stage_without_cost_model_is_named_in_the_notes():
    p = estimate_from_config({"export": {"enabled": True}}, n=500, d=4, **PLAN_KW)
    assert [s.name for s in p.stages] == ["gram", "fit", "spectrum", "curve"]
    assert any("no cost model" in n and "export" in n for n in p.notes)


# ----------------------------------------------------------------------------- calibration
@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("cal") / "cal.json")
    return calibrate(64, _arch(2), seconds=0.5, tile=512, cache=path), path


def test_calibration_rates_are_sane_and_cached(measured):
    cal, path = measured
    assert 1e8 < cal.gemm_flops < 1e13 and 1e8 < cal.cholesky_flops < 1e13
    assert 1e6 < cal.write_bytes_per_s and 1e6 < cal.read_bytes_per_s
    # the kernel costs at least its GEMM; the elementwise part is d-independent
    assert cal.kernel_entry_s >= 2 * 64 / cal.tile_gemm_flops * 0.5
    assert cal.entry_seconds(1000) - cal.entry_seconds(64) == pytest.approx(2 * 936 / cal.tile_gemm_flops)
    again = calibrate(64, _arch(2), cache=path)  # same d / arch / host: read, not measured
    assert again == cal
    assert Calibration.load(path) == cal
    with pytest.raises(ValueError, match="not a Calibration"):
        Calibration.from_dict({"d": 3})


# ----------------------------------------------------------------------------- real build
@pytest.mark.cluster
def test_cluster_calibration_measures_a_real_pass(client, tmp_path):
    """A real StoredGram pass on the cluster is measured by the calibration and drives the
    pass model (the model's accuracy against measured passes and builds is timed in
    ``benchmarks/bench_plan.py``, not here: a timing ratio fails under load)."""
    from ntkscale.plan.costs import Resources, pass_cost

    cal = calibrate(784, ARCH, seconds=1.0, client=client, warmup=False, tile=512)
    assert cal.pass_entry_s > 0 and cal.pass_column_s >= 0 and cal.pass_workers == 2
    p = estimate(3000, 16, ARCH, tile=1024, workers=2, fit=False, calibration=cal, fresh_workers=False)
    res = Resources(cal=cal, slots=2, workers=2, threads=1, gpus=0, efficiency=cal.efficiency,
                    client_threads=2, client_memory=2.0**33, memory_per_worker=2.0**32,
                    entry_s=cal.entry_seconds(16))
    one, ten = (pass_cost(3000, p.tile, 4, c, res)["seconds"] for c in (1, 10))
    assert 0 < one <= ten and np.isfinite(ten)  # more columns never cost less


def test_store_read_rate_reads_the_stores_largest_chunks(tmp_path):
    """The cold disk rate measured on an existing store's chunk files (not fresh files)."""
    from ntkscale.plan._measure import store_read_rate
    from ntkscale.tiling import build_gram

    arch = stax.serial(stax.Dense(8), stax.Relu(), stax.Dense(1))
    url = str(tmp_path / "g.zarr")
    build_gram(arch, np.random.default_rng(0).standard_normal((300, 5)), url, tile=64, client="sync")
    assert store_read_rate(url) is None  # too few bytes to say anything about the disk
    rate = store_read_rate(url, min_bytes=0, nbytes=4 * 64 * 64 * 4)
    assert rate is not None and rate > 0
    assert store_read_rate(str(tmp_path / "missing"), min_bytes=0) is None
