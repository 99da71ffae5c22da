"""Kernel benchmark: ntkscale's NNGP+NTK against the X·Xᵀ GEMM floor and a plain NumPy recursion.

Times, in one process and on the same data (medians over ``--reps`` repetitions):

* ``gemm``          ``x @ x.T`` — the floor: every kernel entry needs one inner product;
* ``ntkscale``      ``kernel_fn(x, None, ('nngp', 'ntk'))`` — both kernels at once (the realistic call;
                    the fused CPU path produces both in one pass);
* ``ntkscale_ntk``  ``kernel_fn(x, None, 'ntk')``;
* ``generic``       the library's array-namespace recursion (``path='generic'``, what CuPy/JAX run);
* ``plain``         :func:`ntkscale.testing.reference_kernels`, a straightforward NumPy recursion
                    (one vectorised expression per layer over whole n×n matrices, ``np.arctan2``).

Architecture (ALGORITHMS.md §2's measured setting): 3 × [Dense(512, W_std=√2, b_std=0.1), Relu]
then Dense(1), NTK parameterization, float64. The numba kernels are warmed up first and that
first call is reported separately as ``warmup_s``: by default numba compiles from scratch into a
temporary cache directory (the cost a fresh install pays once); ``--use-cache`` loads the
on-disk cache instead (the cost of every later process). Target: ntkscale/GEMM ≤ 1.5.

Usage::

    python benchmarks/bench_kernel.py                 # n = 8192, d = 784, 5 repetitions
    python benchmarks/bench_kernel.py --n 2048 --reps 3 --skip-generic

Writes ``benchmarks/results/kernel.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ntkscale import stax
from ntkscale.testing import reference_kernels

HERE = Path(__file__).resolve().parent


def _architecture(depth: int):
    layers, spec = [], []
    for _ in range(depth):
        layers += [stax.Dense(512, W_std=math.sqrt(2.0), b_std=0.1), stax.Relu()]
        spec += [("dense", math.sqrt(2.0), 0.1), ("relu",)]
    layers.append(stax.Dense(1))
    spec.append(("dense", 1.0, None))
    return stax.serial(*layers), spec


def _time(fn, reps: int) -> tuple[float, list[float], object]:
    samples, out = [], None
    for _ in range(reps):
        out = None  # free the previous result before the next run
        t0 = time.perf_counter()
        out = fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples), samples, out


def _rel_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=8192, help="number of samples (rows)")
    p.add_argument("--d", type=int, default=784, help="number of features")
    p.add_argument("--reps", type=int, default=5, help="repetitions per measurement (median reported)")
    p.add_argument("--depth", type=int, default=3, help="hidden Dense+Relu blocks")
    p.add_argument("--skip-generic", action="store_true", help="skip the generic-path timing")
    p.add_argument("--skip-plain", action="store_true", help="skip the plain NumPy recursion")
    p.add_argument("--use-cache", action="store_true",
                   help="warm up from numba's on-disk cache instead of compiling from scratch")
    p.add_argument("--out", type=Path, default=HERE / "results" / "kernel.json")
    args = p.parse_args(argv)
    if args.use_cache:
        return _run(args)
    with tempfile.TemporaryDirectory(prefix="ntkscale-numba-") as cache:
        if "numba" in sys.modules:  # pragma: no cover - numba reads its config once, at import
            print("numba already imported: warm-up may load its existing cache", file=sys.stderr)
        os.environ["NUMBA_CACHE_DIR"] = cache
        return _run(args)


def _run(args: argparse.Namespace) -> dict:

    layer, spec = _architecture(args.depth)
    kernel_fn = layer.kernel_fn
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.n, args.d))
    x /= np.linalg.norm(x, axis=1, keepdims=True) / math.sqrt(args.d)  # |x|²/d = 1, as in ALGORITHMS §2

    # warm-up: numba JIT (or its on-disk cache) on a small problem, then one full-size run untimed
    t0 = time.perf_counter()
    kernel_fn(x[:300], None)
    kernel_fn(x[:300], x[:200])
    warmup = time.perf_counter() - t0
    kernel_fn(x, None)

    results: dict[str, dict] = {}

    def record(name, fn):
        med, samples, out = _time(fn, args.reps)
        results[name] = {"median_s": med, "samples_s": samples}
        print(f"  {name:<14s} median {med:8.3f} s   (min {min(samples):.3f}, max {max(samples):.3f})", flush=True)
        return out

    print(f"n = {args.n}, d = {args.d}, depth {args.depth} ReLU, float64, {args.reps} reps, "
          f"{os.cpu_count()} CPUs; numba warm-up {warmup:.2f} s "
          f"({'disk cache' if args.use_cache else 'compile, empty cache'})", flush=True)
    record("gemm", lambda: x @ x.T)
    k = record("ntkscale", lambda: kernel_fn(x, None, ("nngp", "ntk")))
    k_nngp, k_ntk = k.nngp, k.ntk
    del k
    record("ntkscale_ntk", lambda: kernel_fn(x, None, "ntk"))
    diffs = {}
    if not args.skip_generic:
        g = record("generic", lambda: kernel_fn(x, None, path="generic"))
        diffs["generic_vs_fused"] = max(_rel_diff(k_nngp, g.nngp), _rel_diff(k_ntk, g.ntk))
        del g
    if not args.skip_plain:
        q, t = record("plain", lambda: reference_kernels(spec, x))
        diffs["plain_vs_fused"] = max(_rel_diff(k_nngp, q), _rel_diff(k_ntk, t))
        del q, t

    floor = results["gemm"]["median_s"]
    ratios = {f"{name}/gemm": r["median_s"] / floor for name, r in results.items() if name != "gemm"}
    print("ratios to the GEMM floor (target ntkscale/gemm <= 1.5):")
    for name, r in ratios.items():
        print(f"  {name:<20s} {r:6.2f}")
    for name, v in diffs.items():
        print(f"  max |Δ|/max|K| {name}: {v:.2e}")

    try:
        import numba

        numba_threads = numba.get_num_threads()
    except Exception:  # pragma: no cover
        numba_threads = None
    report = {
        "benchmark": "kernel",
        "config": {"n": args.n, "d": args.d, "depth": args.depth, "reps": args.reps, "dtype": "float64",
                   "architecture": "3 x [Dense(512, W_std=sqrt2, b_std=0.1), Relu] + Dense(1)"
                   if args.depth == 3 else f"{args.depth} x [Dense(512, W_std=sqrt2, b_std=0.1), Relu] + Dense(1)",
                   "get": ["nngp", "ntk"]},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": sys.version.split()[0],
                    "numpy": np.__version__, "numba_threads": numba_threads},
        "warmup_s": warmup,
        "warmup_kind": "numba disk cache" if args.use_cache else "numba compile (empty cache)",
        "timings": results,
        "ratios": ratios,
        "max_rel_diff": diffs,
        "target": {"ntkscale/gemm": 1.5},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
