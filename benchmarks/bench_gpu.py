"""GPU benchmark: device tiles against CPU float64, tile throughput against the GEMM floor,
and a Gram build plus a Nyström-PCG solve at n = 50 000 on one GPU.

Three parts, for every GPU backend that resolves here (``cupy``; ``jax`` with a GPU
backend), through the same seam the workers use (:mod:`ntkscale.tiling.device`):

* ``accuracy``    ``Device.compute`` of a diagonal and an off-diagonal tile (m rows, d = 784)
                  against the CPU path (NumPy, fused numba kernel) in float64: max |Δ| / max |K|
                  per kind, for float64 and float32 output;
* ``throughput``  entries/s of one depth-3 ReLU NTK tile (8192 × 8192, d = 784, float64 compute,
                  float32 out), device-resident (inputs already on the GPU, output left there)
                  and end to end (``Device.compute``: host inputs in, host float32 tile out), against
                  the GEMM floor of the same size: ``x1 @ x2.T`` on the GPU in float64 (cuBLAS,
                  the kernel's own GEMM). Target: device-resident ≥ 50 % of the floor's rate;
* ``build+solve`` ``build_gram(..., device='cuda')`` of the n × n NTK (float32 store) on one
                  worker owning one GPU (``local_gpu_cluster``), then ``solve(..., 'pcg')`` with a
                  Nyström preconditioner on the stored Gram (its passes are store reads + GEMV on
                  CPU workers, one per core). Fashion-MNIST (centered, norm √d) when Debian's
                  files are present, else synthetic rows on the sphere with a 10-class teacher.

``--dry-run`` (alias ``--cpu``) runs the same code at tiny sizes with JAX's CPU backend as the
device (``jax-cpu``) and in-process clients, to check the script anywhere.

Usage::

    benchmarks/gpu.sh                          # installs ntkscale if needed, then this file
    python benchmarks/bench_gpu.py --n 50000 --tile 8192 --reps 5
    python benchmarks/bench_gpu.py --dry-run

Writes ``benchmarks/results/gpu.json`` (dry run: ``gpu-dry-run.json``) and prints a table.
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # JAX and CuPy share the GPU

import argparse
import json
import math
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ntkscale import __version__, stax
from ntkscale.kernels import DiagStats, kernel_tile
from ntkscale.tiling import device as devmod
from ntkscale.tiling.device import Device, DeviceUnavailableError, resolve_device

HERE = Path(__file__).resolve().parent
F64 = np.dtype(np.float64)


def _arch(depth: int = 3) -> Any:
    layers = []
    for _ in range(depth):
        layers += [stax.Dense(512, W_std=math.sqrt(2.0), b_std=0.1), stax.Relu()]
    return stax.serial(*layers, stax.Dense(1))


def _rows(n: int, d: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True) * math.sqrt(d)


def _devices(dry: bool) -> list[Device]:
    if dry:
        return [resolve_device("jax-cpu")]
    out = []
    for name in ("cupy", "jax"):
        try:
            dev = resolve_device(name)
        except DeviceUnavailableError as e:
            print(f"[skip] {name}: {e}", file=sys.stderr)
            continue
        if dev.name != "jax-cpu":
            out.append(dev)
    if not out:
        raise SystemExit("no GPU backend: install CuPy (pip install 'ntkscale[cupy]') or "
                         "jax[cuda12] on a machine with an NVIDIA GPU, or pass --dry-run")
    return out


def _median_time(fn: Callable[[], Any], reps: int) -> float:
    fn()  # warm-up: compilation, memory pools
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


# ------------------------------------------------------------------------------ accuracy
def accuracy(dev: Device, arch: Any, m: int, d: int) -> dict:
    cpu = resolve_device("cpu")
    x1, x2 = _rows(m, d, 1), _rows(m, d, 2)
    s1, s2 = cpu.stats(arch, x1, F64), cpu.stats(arch, x2, F64)
    out = {}
    for label, b, sb in (("diagonal", None, None), ("off_diagonal", x2, s2)):
        for odt in (np.float64, np.float32):
            ref = cpu.compute(arch, x1, b, s1, sb, ("nngp", "ntk"), F64, F64)
            got = dev.compute(arch, x1, b, s1, sb, ("nngp", "ntk"), F64, odt)
            for kind in ("nngp", "ntk"):
                err = np.abs(got[kind].astype(F64) - ref[kind]).max() / np.abs(ref[kind]).max()
                out[f"{label}_{kind}_{np.dtype(odt).name}"] = float(err)
    return out


# ---------------------------------------------------------------------------- throughput
def _resident(dev: Device, arch: Any, x1: np.ndarray, x2: np.ndarray, s1: DiagStats,
              s2: DiagStats) -> tuple[Callable[[], Any], Callable[[], Any], Any]:
    """(gemm, tile) closures on device-resident inputs, each synchronized; and a context."""
    if dev.backend == "cupy":
        import contextlib

        import cupy

        put = lambda a: cupy.asarray(a, dtype=F64)  # noqa: E731
        a, b = put(x1), put(x2)
        st1, st2 = devmod._stats_on(put, s1), devmod._stats_on(put, s2)
        sync = cupy.cuda.Device().synchronize

        def gemm() -> None:
            a @ b.T
            sync()

        def tile() -> None:
            kernel_tile(arch, a, b, st1, st2, ("ntk",), dtype=F64, out_dtype=np.float32)
            sync()
        return gemm, tile, contextlib.nullcontext()

    import jax

    ctx = devmod._precision(jax, F64)
    with devmod._precision(jax, F64):
        args = [jax.device_put(np.asarray(v, F64), dev.handle) for v in
                (x1, s1.cov0, s1.nngp, s1.ntk, x2, s2.cov0, s2.nngp, s2.ntk)]
    mm = jax.jit(lambda p, q: p @ q.T)
    fn = devmod._jitted(arch, ("ntk",), "float64", "float32", False)  # what Device.compute runs
    return (lambda: mm(args[0], args[4]).block_until_ready(),
            lambda: fn(*args)["ntk"].block_until_ready(), ctx)


def throughput(dev: Device, arch: Any, T: int, d: int, reps: int) -> dict:
    cpu = resolve_device("cpu")
    x1, x2 = _rows(T, d, 3), _rows(T, d, 4)
    s1, s2 = cpu.stats(arch, x1, F64), cpu.stats(arch, x2, F64)
    gemm, tile, ctx = _resident(dev, arch, x1, x2, s1, s2)
    with ctx:
        t_gemm = _median_time(gemm, reps)
        t_tile = _median_time(tile, reps)
    t_e2e = _median_time(lambda: dev.compute(arch, x1, x2, s1, s2, ("ntk",), F64, np.float32), reps)
    e = float(T) * T
    return {"tile": T, "d": d, "gemm_s": t_gemm, "tile_s": t_tile, "end_to_end_s": t_e2e,
            "gemm_tflops": 2.0 * e * d / t_gemm / 1e12, "tile_entries_per_s": e / t_tile,
            "end_to_end_entries_per_s": e / t_e2e, "tile_vs_gemm_floor": t_gemm / t_tile,
            "end_to_end_vs_gemm_floor": t_gemm / t_e2e, "target_ratio": 0.5,
            "meets_target": bool(t_gemm / t_tile >= 0.5)}


# --------------------------------------------------------------------------- build+solve
def _data(n: int, d: int) -> tuple[np.ndarray, np.ndarray, str]:
    if d == 784 and n <= 60000:
        try:
            from ntkscale.data.fashion_mnist import load_fashion_mnist

            X, y = load_fashion_mnist("train", n=n, seed=0 if n < 60000 else None)
            return X, np.eye(10)[y] - 0.1, "fashion-mnist"
        except FileNotFoundError:
            pass
    X = _rows(n, d, 5)
    W = np.random.default_rng(6).standard_normal((d, 10))
    return X, np.eye(10)[np.argmax(np.tanh(X @ W / math.sqrt(d)), axis=1)] - 0.1, "synthetic (sphere, teacher)"


def build_and_solve(device: str, arch: Any, n: int, d: int, T: int, args: argparse.Namespace,
                    dry: bool) -> dict:
    from ntkscale.operator import StoredGram
    from ntkscale.solvers import solve
    from ntkscale.tiling import build_gram

    X, Y, source = _data(n, d)
    root = tempfile.mkdtemp(prefix="ntkscale-gpu-", dir=args.store_dir)
    url = os.path.join(root, "gram.zarr")
    try:
        client, cluster = "sync", None
        if not dry:
            from distributed import Client

            from ntkscale.runner import local_gpu_cluster, visible_gpus

            cluster = local_gpu_cluster(visible_gpus()[:1], threads_per_worker=args.threads,
                                        dashboard_address=":0")
            client = Client(cluster)
        try:
            t = time.perf_counter()
            rep = build_gram(arch, X, url, get="ntk", tile=T, dtype=np.float32, client=client,
                             device=device, progress=False)
            build_s = time.perf_counter() - t
        finally:
            if cluster is not None:
                client.close()
                cluster.close()
        with StoredGram(url, "ntk", client="sync" if dry else None) as K:
            lam = args.ridge * float(np.mean(K.diag()))
            res = solve(K, Y, lam, solver="pcg", tol=args.tol, maxiter=args.maxiter,
                        pcg_rank=min(args.rank, n // 2))
        return {"n": n, "d": d, "data": source, "device": device, "tile": rep.tile, "tiles": rep.n_tiles,
                "build_s": build_s, "build_entries_per_s": float(n) * n / build_s,
                "tile_s_median": statistics.median(rep.tile_seconds), "ridge": lam,
                "solve_s": res.seconds, "solve_method": res.method, "iterations": res.iterations,
                "passes": res.passes, "relative_residual": res.residual, "converged": res.converged,
                "train_accuracy": float(np.mean(np.argmax(Y - lam * res.x, 1) == np.argmax(Y, 1)))}
    finally:
        shutil.rmtree(root, ignore_errors=True)


# ---------------------------------------------------------------------------------- main
def _environment(devices: list[Device]) -> dict:
    import jax

    env = {"python": platform.python_version(), "numpy": np.__version__, "jax": jax.__version__,
           "ntkscale": __version__, "machine": platform.machine(), "cpus": os.cpu_count(),
           "devices": {d.name: d.description for d in devices}}
    try:
        import cupy

        env["cupy"] = cupy.__version__
    except ImportError:
        pass
    return env


def _table(r: dict) -> str:
    lines = [f"{'backend':<10} {'max rel err f64':>16} {'tile s':>9} {'GEMM s':>9} {'tile/GEMM':>10} "
             f"{'e2e/GEMM':>9} {'Gentries/s':>11}"]
    for name, b in r["backends"].items():
        acc = max(v for k, v in b["accuracy"].items() if k.endswith("float64"))
        t = b["throughput"]
        lines.append(f"{name:<10} {acc:16.2e} {t['tile_s']:9.4f} {t['gemm_s']:9.4f} "
                     f"{t['tile_vs_gemm_floor']:9.0%} {t['end_to_end_vs_gemm_floor']:9.0%} "
                     f"{t['tile_entries_per_s'] / 1e9:11.2f}")
    s = r.get("build_solve")
    if s:
        lines.append(f"build n={s['n']} ({s['data']}) on {s['device']}: {s['build_s']:.1f} s, "
                     f"{s['tiles']} tiles of {s['tile']}; Nyström-PCG: {s['solve_s']:.1f} s, "
                     f"{s['iterations']} iterations, residual {s['relative_residual']:.1e}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dry-run", "--cpu", dest="dry", action="store_true",
                   help="tiny sizes, JAX on CPU as the device, in-process clients")
    p.add_argument("--n", type=int, default=None, help="build+solve size (default 50000; dry 600)")
    p.add_argument("--d", type=int, default=None, help="input width (default 784; dry 64)")
    p.add_argument("--tile", type=int, default=None, help="tile edge (default 8192; dry 256)")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--threads", type=int, default=4, help="threads of the GPU worker (I/O overlap)")
    p.add_argument("--ridge", type=float, default=1e-3, help="relative ridge (x mean diag)")
    p.add_argument("--tol", type=float, default=1e-6)
    p.add_argument("--maxiter", type=int, default=300)
    p.add_argument("--rank", type=int, default=1000, help="Nyström rank")
    p.add_argument("--skip-build", action="store_true", help="only accuracy and throughput")
    p.add_argument("--store-dir", default=None, help="where the temporary store goes")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    dry = args.dry
    n = args.n or (600 if dry else 50000)
    d = args.d or (64 if dry else 784)
    T = args.tile or (256 if dry else 8192)
    out = args.out or HERE / "results" / ("gpu-dry-run.json" if dry else "gpu.json")
    arch = _arch(3)
    devices = _devices(dry)
    result: dict = {"dry_run": dry, "environment": _environment(devices), "backends": {}}
    for dev in devices:
        print(f"[{dev.name}] {dev.description}", file=sys.stderr)
        result["backends"][dev.name] = {"accuracy": accuracy(dev, arch, 128 if dry else 1024, d),
                                        "throughput": throughput(dev, arch, T, d, args.reps)}
    if not args.skip_build:
        device = "jax-cpu" if dry else "cuda"
        print(f"[build+solve] n={n} on {resolve_device(device).description}", file=sys.stderr)
        result["build_solve"] = build_and_solve(device, arch, n, d, T, args, dry)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(_table(result))
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
