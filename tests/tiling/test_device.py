"""The device seam (ntkscale.tiling.device): tiles on JAX (CPU backend standing in for a GPU)
and on CuPy (``gpu`` marker) equal the NumPy tiles; device resolution and its errors; the
``[kernel] device`` key; one worker per GPU on a local cluster.

Tolerances (JAX/CuPy run the generic float64 recursion with arctan2, the CPU path the
fused numba kernel with a polynomial arccos and another GEMM blocking):
float64 stores agree to 1e-12 relative to the largest entry (measured ~2e-16);
float32 stores to one float32 rounding step (2^-23 relative per entry; measured: equal).
Diagonals are bit-identical on every device: they come from the host statistics.
"""

import os

import numpy as np
import pytest

from ntkscale import stax
from ntkscale._config import ConfigError
from ntkscale.runner import Runner, visible_gpus
from ntkscale.operator import StoredGram
from ntkscale.tiling import build_cross_gram, build_gram, device as devmod
from ntkscale.tiling.device import DeviceUnavailableError, gpu_workers, resolve_device
from ntkscale.tiling.predict import cross_matvec, cross_rows

from .conftest import data

pytest.importorskip("jax")

F64, F32 = 1e-12, 2.0 ** -23


def _close(got, ref, dtype):
    if np.dtype(dtype) == np.float64:
        np.testing.assert_allclose(got, ref, rtol=0, atol=F64 * np.abs(ref).max())
    else:
        np.testing.assert_allclose(got, ref, rtol=F32, atol=1e-30)


def _stores(url_a, url_b, kinds):
    return {k: (StoredGram(url_a, k).to_numpy(), StoredGram(url_b, k).to_numpy()) for k in kinds}


@pytest.fixture(autouse=True)
def _fresh_resolution():
    resolve_device.cache_clear()
    yield
    resolve_device.cache_clear()


@pytest.mark.parametrize("n", [100, 257])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_jax_device_gram_equals_cpu(arch, n, dtype):
    import jax

    x64 = jax.config.read("jax_enable_x64")
    X = data(n)
    name = f"{n}-{np.dtype(dtype).name}"
    build_gram(arch, X, f"memory://cpu-{name}", get=("nngp", "ntk"), tile=64, dtype=dtype, client="sync")
    rep = build_gram(arch, X, f"memory://jax-{name}", get=("nngp", "ntk"), tile=64, dtype=dtype,
                     client="sync", device="jax-cpu")
    assert rep.computed == rep.n_tiles == (-(-n // 64)) * (-(-n // 64) + 1) // 2
    for kind, (cpu, dev) in _stores(f"memory://cpu-{name}", f"memory://jax-{name}", ("nngp", "ntk")).items():
        assert dev.dtype == dtype
        _close(dev, cpu, dtype)
        np.testing.assert_array_equal(np.diag(dev), np.diag(cpu))
        np.testing.assert_array_equal(dev, dev.T)
    assert StoredGram(f"memory://jax-{name}", "ntk").store.meta["devices"] == ["jax-cpu"]
    assert jax.config.read("jax_enable_x64") == x64  # float64 ran in a scoped x64 context


def test_jax_device_cross_gram_and_generic_arch(arch):
    X1, X2 = data(130, seed=1), data(77, seed=2)
    for dt in (np.float64, np.float32):
        build_cross_gram(arch, X1, X2, f"memory://xc-{dt.__name__}", get="ntk", tile=64, dtype=dt,
                         client="sync")
        build_cross_gram(arch, X1, X2, f"memory://xj-{dt.__name__}", get="ntk", tile=64, dtype=dt,
                         client="sync", device="jax-cpu")
        [(cpu, dev)] = _stores(f"memory://xc-{dt.__name__}", f"memory://xj-{dt.__name__}", ("ntk",)).values()
        assert cpu.shape == dev.shape == (130, 77)
        _close(dev, cpu, dt)
    # a residual net with Gelu: no fused program, the generic recursion on both sides
    res = stax.serial(stax.Dense(8, b_std=0.2), stax.FanOut(2),
                      stax.parallel(stax.serial(stax.Relu(), stax.Dense(8, W_std=1.3)), stax.Identity()),
                      stax.FanInSum(), stax.Gelu(), stax.Dense(1))
    X = data(150, seed=8)
    build_gram(res, X, "memory://res-jax", get="ntk", tile=64, dtype=np.float64, client="sync",
               device="jax-cpu")
    ref = res.kernel_fn(X, None, "ntk")
    _close(StoredGram("memory://res-jax", "ntk").to_numpy(), ref, np.float64)


def test_resume_on_another_device(arch):
    X = data(200, seed=3)
    url = "memory://resume-dev"
    stop = []

    def interrupt(result):
        stop.append(result)
        if len(stop) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_gram(arch, X, url, get="ntk", tile=64, dtype=np.float64, client="sync", on_tile=interrupt)
    rep = build_gram(arch, X, url, get="ntk", tile=64, dtype=np.float64, client="sync", device="jax-cpu")
    assert rep.resumed and rep.computed == rep.n_tiles - 3
    meta = StoredGram(url, "ntk").store.meta
    assert meta["devices"] == ["cpu", "jax-cpu"] and meta["complete"]
    _close(StoredGram(url, "ntk").to_numpy(), arch.kernel_fn(X, None, "ntk"), np.float64)


def test_cross_predictions_on_device(arch):
    X, Xt = data(150, seed=4), data(70, seed=5)
    url = "memory://pred-dev"
    build_gram(arch, X, url, get=("nngp", "ntk"), tile=64, dtype=np.float64, client="sync")
    build_id = StoredGram(url, "ntk").store.meta["build_id"]
    V = np.random.default_rng(6).standard_normal((150, 3))
    K = arch.kernel_fn(Xt, X)
    got = cross_matvec(Runner(None), arch, Xt, url, build_id, {"ntk": V, "nngp": V}, block=32,
                       device="jax-cpu")
    for kind in ("ntk", "nngp"):
        want = getattr(K, kind) @ V
        np.testing.assert_allclose(got[kind], want, rtol=0, atol=1e-12 * np.abs(want).max())
    rows = list(cross_rows(Runner(None), arch, Xt, url, build_id, ("ntk",), block=50, device="jax-cpu"))
    _close(np.vstack([r["ntk"] for _, r in rows]), K.ntk, np.float64)


def test_device_compute_returns_host_tiles(arch):
    X = data(90, seed=7)
    cpu, dev = resolve_device("cpu"), resolve_device("jax-cpu")
    assert (cpu.backend, dev.backend, dev.name) == ("numpy", "jax", "jax-cpu")
    s1, s2 = dev.stats(arch, X[:50], "float64"), dev.stats(arch, X[50:], "float64")
    for x2, st2 in ((None, None), (X[50:], s2)):
        out = dev.compute(arch, X[:50], x2, s1, st2, ("ntk",), np.float64, np.float32)
        ref = cpu.compute(arch, X[:50], x2, s1, st2, ("ntk",), np.float64, np.float32)
        assert type(out["ntk"]) is np.ndarray and out["ntk"].dtype == np.float32
        _close(out["ntk"], ref["ntk"], np.float32)
    assert resolve_device("JAX-CPU") is dev  # cached per process, names case-insensitive


def test_device_inputs_come_to_the_host(arch):
    import jax.numpy as jnp

    X = data(70, seed=9).astype(np.float32)
    build_gram(arch, jnp.asarray(X), "memory://jin", get="ntk", tile=64, dtype=np.float64, client="sync")
    _close(StoredGram("memory://jin", "ntk").to_numpy(), arch.kernel_fn(X.astype(np.float64), None, "ntk"),
           np.float64)


# --------------------------------------------------------------------------- resolution
def _no_gpu_libraries(monkeypatch):
    monkeypatch.setattr(devmod, "_cupy_probe", lambda: (None, "CuPy is not installed"))
    monkeypatch.setattr(devmod, "_jax_probe", lambda platform: (None, f"JAX has no {platform} backend"))


def test_cuda_without_gpu_names_the_install(monkeypatch, arch):
    _no_gpu_libraries(monkeypatch)
    with pytest.raises(DeviceUnavailableError) as e:
        resolve_device("cuda")
    msg = str(e.value)
    assert "pip install 'ntkscale[cupy]'" in msg and "jax[cuda12]" in msg and "device='cpu'" in msg
    assert "CuPy is not installed" in msg and "JAX has no gpu backend" in msg
    with pytest.raises(DeviceUnavailableError, match=r"ntkscale\[cupy\]"):
        resolve_device("cupy")
    # a build fails on its first (statistics) task, before any tile
    with pytest.raises(DeviceUnavailableError, match="no usable CUDA GPU"):
        build_gram(arch, data(40), "memory://no-gpu", get="ntk", tile=64, client="sync", device="cuda")
    from ntkscale.storage import GramStore

    assert GramStore.open("memory://no-gpu").done_chunks("ntk") == set()


def test_auto_falls_back_to_cpu(monkeypatch, caplog):
    monkeypatch.setattr(devmod, "visible_gpus", lambda: [])
    assert resolve_device("auto").name == "cpu"
    resolve_device.cache_clear()
    monkeypatch.setattr(devmod, "visible_gpus", lambda: ["0"])
    _no_gpu_libraries(monkeypatch)
    with caplog.at_level("WARNING", logger="ntkscale"):
        assert resolve_device("auto").name == "cpu"
    assert "ntkscale[cupy]" in caplog.text


@pytest.mark.skipif(bool(visible_gpus()), reason="this machine has a GPU")
def test_cuda_on_this_machine_without_gpu():
    try:
        import cupy  # noqa: F401
        pytest.skip("CuPy is installed")
    except ImportError:
        pass
    with pytest.raises(DeviceUnavailableError, match=r"pip install 'ntkscale\[cupy\]'"):
        resolve_device("cuda")
    assert resolve_device("auto").name == "cpu" and not gpu_workers("auto") and gpu_workers("cuda")


def test_bad_device_names(arch):
    with pytest.raises(ValueError, match="'cpu', 'cuda', 'auto'"):
        resolve_device("gpu")
    with pytest.raises(ValueError, match="device must be one of"):
        build_gram(arch, data(10), "memory://bad-dev", client="sync", device="tpu")
    with pytest.raises(ValueError, match="device must be one of"):
        cross_matvec(Runner(None), arch, data(5), "memory://x", "id", {"ntk": np.ones((5, 1))}, device=0)


@pytest.mark.parametrize("env, want", [("1,3", ["1", "3"]), ("", []), ("0,-1,2", ["0"]),
                                       ("GPU-4f2a", ["GPU-4f2a"])])
def test_visible_gpus_reads_cuda_visible_devices(monkeypatch, env, want):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", env)
    assert visible_gpus() == want


# ---------------------------------------------------------------------------- job config
def _job(tmp_path, device=None):
    from ntkscale.job import parse_job

    kernel = {"tile": 64} if device is None else {"tile": 64, "device": device}
    return parse_job({"job": {"out": str(tmp_path / "run")}, "kernel": kernel, "cluster": {"kind": "sync"},
                      "data": {"source": "sphere", "n_train": 150, "n_test": 40, "d": 6}}, environ={})


def test_kernel_device_config(tmp_path):
    assert _job(tmp_path).kernel["device"] == "cpu"
    assert _job(tmp_path, "cuda").kernel["device"] == "cuda"
    assert _job(tmp_path, "auto").resolved()["kernel"]["device"] == "auto"
    with pytest.raises(ConfigError, match=r"'kernel.device' = 'gpu' is not allowed; choose one of: 'cpu', 'cuda'"):
        _job(tmp_path, "gpu")
    with pytest.raises(ConfigError, match="'kernel.device' must be string"):
        _job(tmp_path, 1)


def test_job_stages_use_the_device(tmp_path):
    from ntkscale.job.context import JobContext
    from ntkscale.job.stages import stage_fit, stage_gram, stage_predict

    ctx = JobContext(_job(tmp_path, "jax-cpu"), progress=False)
    try:
        g = stage_gram(ctx)
        assert g["device"] == "jax-cpu" and g["tiles"] == 6
        assert StoredGram(ctx.cfg.store, "ntk").store.meta["devices"] == ["jax-cpu"]
        stage_fit(ctx)
        p = stage_predict(ctx)
        alpha = np.load(ctx.path("fit.npz"))["alpha"]
        pred = np.load(ctx.path("predictions.npz"))["prediction"]
        want = ctx.arch.kernel_fn(ctx.data.X_test, ctx.data.X_train, "ntk") @ alpha.reshape(len(alpha), -1)
        np.testing.assert_allclose(pred, want, rtol=0, atol=1e-10 * np.abs(want).max())
        assert p["n_test"] == 40
    finally:
        ctx.close()


# ------------------------------------------------------------------------- GPU workers
@pytest.mark.cluster
def test_local_cluster_runs_one_worker_per_gpu(monkeypatch):
    from ntkscale.clusters import start_cluster, validate_cluster

    try:
        import dask_cuda  # noqa: F401
        pytest.skip("dask-cuda installed: LocalCUDACluster places the GPUs")
    except ImportError:
        pass
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")  # two (pretend) GPUs: no CUDA call is made
    with start_cluster(validate_cluster({"kind": "local"}, environ={}), gpus=True) as h:
        env = h.client.run(lambda: (os.environ.get("CUDA_VISIBLE_DEVICES"), os.environ.get("OMP_NUM_THREADS")))
        assert sorted(env.values()) == [("0", "1"), ("1", "1")]
        assert sorted(w["name"] for w in h.client.scheduler_info()["workers"].values()) == ["gpu-0", "gpu-1"]
        assert h.describe()["workers"] == 2


def test_gpu_cluster_errors(monkeypatch):
    from ntkscale.clusters import start_cluster, validate_cluster

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    with pytest.raises(ValueError, match="workers = 3 but 2 GPU"):
        start_cluster(validate_cluster({"kind": "local", "workers": 3}, environ={}), gpus=True)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(RuntimeError, match="no GPU visible"):
        start_cluster(validate_cluster({"kind": "local"}, environ={}), gpus=True)
    assert not gpu_workers("auto") and not gpu_workers("jax") and gpu_workers("cupy")


# ------------------------------------------------------------------------------- GPUs
def _cupy_or_skip():
    cupy = pytest.importorskip("cupy")
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            pytest.skip("no CUDA device")
    except Exception as e:  # noqa: BLE001 - CUDA driver missing or broken
        pytest.skip(f"CUDA unavailable: {e}")
    return cupy


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cupy_gram_equals_cpu_float64(arch, dtype):
    _cupy_or_skip()
    X1, X2 = data(300, d=40, seed=10), data(130, d=40, seed=11)
    name = np.dtype(dtype).name
    for device in ("cupy", "cuda"):
        build_gram(arch, X1, f"memory://g-{device}-{name}", get=("nngp", "ntk"), tile=128, dtype=dtype,
                   client="sync", device=device)
        build_cross_gram(arch, X2, X1, f"memory://gx-{device}-{name}", get="ntk", tile=128, dtype=dtype,
                         client="sync", device=device)
    build_gram(arch, X1, f"memory://g-cpu-{name}", get=("nngp", "ntk"), tile=128, dtype=dtype, client="sync")
    build_cross_gram(arch, X2, X1, f"memory://gx-cpu-{name}", get="ntk", tile=128, dtype=dtype, client="sync")
    assert resolve_device("cuda").backend == "cupy"  # CuPy first when importable
    for device in ("cupy", "cuda"):
        for kind, (cpu, gpu) in _stores(f"memory://g-cpu-{name}", f"memory://g-{device}-{name}",
                                        ("nngp", "ntk")).items():
            _close(gpu, cpu, dtype)
            np.testing.assert_array_equal(np.diag(gpu), np.diag(cpu))
        [(cpu, gpu)] = _stores(f"memory://gx-cpu-{name}", f"memory://gx-{device}-{name}", ("ntk",)).values()
        _close(gpu, cpu, dtype)


@pytest.mark.gpu
def test_jax_gpu_tiles_equal_cpu_float64(arch):
    import jax

    try:
        jax.devices("gpu")
    except RuntimeError:
        pytest.skip("JAX has no GPU backend")
    X = data(300, d=40, seed=12)
    build_gram(arch, X, "memory://jg-cpu", get="ntk", tile=128, dtype=np.float64, client="sync")
    build_gram(arch, X, "memory://jg-gpu", get="ntk", tile=128, dtype=np.float64, client="sync", device="jax")
    assert resolve_device("jax").name == "jax-gpu"
    [(cpu, gpu)] = _stores("memory://jg-cpu", "memory://jg-gpu", ("ntk",)).values()
    _close(gpu, cpu, np.float64)


@pytest.mark.parametrize("pool", [False, True])
def test_jax_device_image_gram_equals_cpu(pool):
    """Image kernels on the JAX device (jitted tiles, chunks under ``lax.map``) == CPU store
    (fused numba chain without pooling, array recursion with it)."""
    from ntkscale.kernels import cntk, myrtle

    arch = myrtle((4, 5, 2), 5, b_std=0.1) if pool else cntk((4, 5, 2), 2, b_std=0.1)
    X = data(37, d=40)
    build_gram(arch, X, "memory://img-cpu", get="ntk", tile=16, dtype=np.float64, client="sync",
               overwrite=True)
    build_gram(arch, X, "memory://img-jax", get="ntk", tile=16, dtype=np.float64, client="sync",
               device="jax-cpu", overwrite=True)
    cpu, dev = _stores("memory://img-cpu", "memory://img-jax", ("ntk",))["ntk"]
    np.testing.assert_allclose(dev, cpu, rtol=1e-9, atol=1e-12 * np.abs(cpu).max())
    np.testing.assert_array_equal(dev, dev.T)
