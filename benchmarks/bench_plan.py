"""Capacity-plan benchmark: ``ntkscale.plan.estimate`` against the measured job, stage by stage.

Job (the n = 8192 setting of the other benchmarks): Fashion-MNIST training images
(``/usr/share/datasets/fashion-mnist``; synthetic sphere data with 10 random classes when the
package is missing), d = 784, depth-3 ReLU NTK (W_std = √2, b_std = 0.1), NTK + NNGP stored
float32, a LocalCluster of 2 single-threaded worker processes; then

* ``gram``      ``build_gram`` (fresh workers, tile chosen by the library);
* ``fit``       ``StoredGram`` + ``ntkscale.solvers.solve`` (``solver='auto'``) at relative
                ridge 1e-3 with one-hot targets (10 columns);
* ``predict``   ``cross_matvec`` of ``--n-test`` test images (0: skipped, the default);
* ``spectrum``  ``randomized_eigh(op, k=200)`` (2 power steps, error pass).

The plan is made first, before the cluster starts, from ``calibrate(d, arch)`` in this
process (how ``ntkscale plan`` is used: before booking); ``--client-calibration`` calibrates on
the started cluster instead (its workers are then warm when the build starts). Peak memory
per stage: Linux ``VmHWM`` of the client and of each worker, reset before every stage
(``/proc/<pid>/clear_refs``). Prints estimated vs measured seconds and peaks with their
ratios and writes ``benchmarks/results/plan.json``. ``--client-threads 1`` pins the client's
BLAS (on a loaded 2-core machine multi-threaded OpenBLAS in the client, next to the worker
processes, measured 10-30x slower QR/SVD in ``randomized_eigh``).

    python benchmarks/bench_plan.py                   # n = 8192
    python benchmarks/bench_plan.py --n 2048 --out /tmp/plan.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def arch_depth3():
    from ntkscale import stax

    layers = []
    for _ in range(3):
        layers += [stax.Dense(512, W_std=2 ** 0.5, b_std=0.1), stax.Relu()]
    return stax.serial(*layers, stax.Dense(1, W_std=2 ** 0.5, b_std=0.1))


def load(n: int, n_test: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    from ntkscale.data import FASHION_MNIST_DIR, load_fashion_mnist

    if os.path.exists(os.path.join(FASHION_MNIST_DIR, "train-images-idx3-ubyte.gz")):
        X, y = load_fashion_mnist("train", n=n, seed=0)
        Xt = load_fashion_mnist("test", n=n_test, seed=0)[0] if n_test else np.zeros((0, 784))
        return X, y, Xt, "fashion-mnist"
    rng = np.random.default_rng(0)
    Z = rng.standard_normal((n + n_test, 784))
    Z *= math.sqrt(784) / np.linalg.norm(Z, axis=1, keepdims=True)
    return Z[:n], rng.integers(0, 10, n), Z[n:], "synthetic sphere (fashion-mnist not installed)"


def _hwm(reset: bool = False) -> int:
    """Peak RSS (VmHWM, bytes) of this process; ``reset`` starts a new peak."""
    if reset:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0  # pragma: no cover


class Peaks:
    """Reset / read the peak RSS of the client and of every worker around a stage."""

    def __init__(self, client):
        self.client = client

    def reset(self) -> None:
        _hwm(reset=True)
        self.client.run(_hwm, True)

    def read(self) -> dict:
        workers = self.client.run(_hwm)
        return {"client": _hwm(), "worker_max": max(workers.values())}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=8192)
    p.add_argument("--n-test", type=int, default=0, help="test images for the predict stage (0: skip)")
    p.add_argument("--k", type=int, default=200, help="eigenpairs of the spectrum stage")
    p.add_argument("--ridge", type=float, default=1e-3, help="ridge relative to the mean diagonal")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seconds", type=float, default=3.0, help="calibration budget")
    p.add_argument("--client-threads", type=int, default=None,
                   help="BLAS threads of this (client) process (default: all cores)")
    p.add_argument("--client-calibration", action="store_true",
                   help="calibrate on the started cluster (workers warm) instead of in this process")
    p.add_argument("--dir", default=None, help="scratch directory for the store")
    p.add_argument("--out", type=Path, default=HERE / "results" / "plan.json")
    args = p.parse_args(argv)
    if args.client_threads:
        import importlib

        from threadpoolctl import threadpool_limits

        importlib.import_module("scipy.linalg")  # load scipy's own OpenBLAS before limiting every pool

        with threadpool_limits(limits=args.client_threads):
            return _run(args)
    return _run(args)


def _run(args: argparse.Namespace) -> dict:
    import psutil
    from distributed import Client

    from ntkscale.runner import local_cluster
    from ntkscale.operator import StoredGram
    from ntkscale.plan import calibrate, estimate
    from ntkscale.solvers import randomized_eigh, solve
    from ntkscale.tiling import build_gram

    arch = arch_depth3()
    X, y, Xt, source = load(args.n, args.n_test)
    d = X.shape[1]
    classes = np.unique(y)
    Y = np.eye(classes.size)[np.searchsorted(classes, y)] - 1.0 / classes.size  # shape: (n, C)
    client_memory = float(psutil.virtual_memory().available)
    t0 = time.perf_counter()
    cal = None if args.client_calibration else calibrate(d, arch, seconds=args.seconds)
    t_cal = time.perf_counter() - t0
    scratch = tempfile.mkdtemp(prefix="bench-plan-", dir=args.dir)
    store = os.path.join(scratch, "gram.zarr")
    measured: dict[str, dict] = {}
    try:
        with local_cluster(n_workers=args.workers, threads_per_worker=1, dashboard_address=None) as cluster, \
                Client(cluster) as client:
            mem = min(w["memory_limit"] for w in client.scheduler_info()["workers"].values())
            if cal is None:
                t0 = time.perf_counter()
                cal = calibrate(d, arch, seconds=args.seconds, client=client, warmup=False)
                t_cal = time.perf_counter() - t0
            plan = estimate(args.n, d, arch, n_test=args.n_test, kinds=("nngp", "ntk"), workers=args.workers,
                            memory_per_worker=mem, ridge_relative=args.ridge, spectrum_k=args.k,
                            n_outputs=Y.shape[1], calibration=cal, client_memory=client_memory,
                            client_threads=args.client_threads or os.cpu_count(),
                            fresh_workers=not args.client_calibration)
            print(f"{source}: n = {args.n}, d = {d}, {args.workers} workers, calibration {t_cal:.1f} s "
                  f"({'on the cluster' if args.client_calibration else 'in this process'}), "
                  f"load average {os.getloadavg()[0]:.1f}")
            print(plan.table(), "\n", flush=True)
            peaks = Peaks(client)

            peaks.reset()
            t0 = time.perf_counter()
            rep = build_gram(arch, X, store, get=("nngp", "ntk"), dtype=np.float32, client=client)
            measured["gram"] = {"seconds": time.perf_counter() - t0, "tile": rep.tile, **peaks.read()}
            if rep.tile != plan.tile:
                print(f"WARNING: the build chose tile {rep.tile}, the plan {plan.tile}", file=sys.stderr)

            op = StoredGram(store, "ntk", client=client)
            lam = args.ridge * float(np.mean(op.diag()))
            peaks.reset()
            t0 = time.perf_counter()
            res = solve(op, Y, lam)
            measured["fit"] = {"seconds": time.perf_counter() - t0, "solver": res.info.get("solver"),
                               "passes": res.passes, **peaks.read()}
            if args.n_test:
                from ntkscale.tiling.predict import cross_matvec

                peaks.reset()
                t0 = time.perf_counter()
                cross_matvec(op.runner, arch, Xt, store, op.store.meta["build_id"], {"ntk": res.x})
                measured["predict"] = {"seconds": time.perf_counter() - t0, **peaks.read()}
            peaks.reset()
            t0 = time.perf_counter()
            er = randomized_eigh(op, args.k)
            measured["spectrum"] = {"seconds": time.perf_counter() - t0, "passes": er.passes, **peaks.read()}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    rows = []
    print(f"{'stage':<9} {'est s':>8} {'meas s':>8} {'ratio':>6}   {'est worker':>10} {'meas worker':>11} "
          f"{'ratio':>6}   {'est client':>10} {'meas client':>11} {'ratio':>6}")
    for name, m in measured.items():
        s = plan.stage(name)
        row = {"stage": name, "estimated_s": s.seconds, "measured_s": m["seconds"],
               "time_ratio": s.seconds / m["seconds"], "estimated_worker_peak": s.worker_peak_bytes,
               "measured_worker_peak": m["worker_max"],
               "worker_peak_ratio": s.worker_peak_bytes / m["worker_max"],
               "estimated_client_peak": s.client_peak_bytes, "measured_client_peak": m["client"],
               "client_peak_ratio": s.client_peak_bytes / m["client"], "method": s.method,
               **{k: v for k, v in m.items() if k not in ("seconds", "worker_max", "client")}}
        rows.append(row)
        print(f"{name:<9} {s.seconds:8.2f} {m['seconds']:8.2f} {row['time_ratio']:6.2f}   "
              f"{s.worker_peak_bytes / 2**20:8.0f}Mi {m['worker_max'] / 2**20:9.0f}Mi {row['worker_peak_ratio']:6.2f}   "
              f"{s.client_peak_bytes / 2**20:8.0f}Mi {m['client'] / 2**20:9.0f}Mi {row['client_peak_ratio']:6.2f}")
    total_est = sum(r["estimated_s"] for r in rows)
    total_meas = sum(r["measured_s"] for r in rows)
    print(f"{'total':<9} {total_est:8.2f} {total_meas:8.2f} {total_est / total_meas:6.2f}")
    report = {
        "benchmark": "plan",
        "config": {"n": args.n, "d": d, "n_test": args.n_test, "k": args.k, "ridge_relative": args.ridge,
                   "workers": args.workers, "kinds": ["nngp", "ntk"], "store_dtype": "float32",
                   "data": source, "calibration": "cluster" if args.client_calibration else "in-process",
                   "client_threads": args.client_threads or os.cpu_count(),
                   "calibration_seconds": t_cal},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": sys.version.split()[0],
                    "load_average_end": list(os.getloadavg())},
        "stages": rows,
        "totals": {"estimated_s": total_est, "measured_s": total_meas, "ratio": total_est / total_meas},
        "plan": plan.to_dict(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=float))
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
