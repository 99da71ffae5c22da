"""Kernel benchmark: ntkscale's NNGP+NTK against the X·Xᵀ GEMM floor and a plain NumPy recursion.

Times, in one process and on the same data (medians over ``--reps`` rounds; each round runs
every measurement once, interleaved, so that a shared machine's drifts hit them alike):

* ``gemm``          ``x @ x.T`` — the floor: every kernel entry needs one inner product;
* ``ntkscale``      ``kernel_fn(x, None, ('nngp', 'ntk'))`` — both kernels at once (the realistic call;
                    the fused CPU path produces both in one pass);
* ``ntkscale_ntk``  ``kernel_fn(x, None, 'ntk')``;
* ``generic``       the library's array-namespace recursion (``path='generic'``, what CuPy/JAX run);
* ``plain``         :func:`ntkscale.testing.reference_kernels`, a straightforward NumPy recursion
                    (one vectorised expression per layer over whole n×n matrices, ``np.arctan2``).
* ``neural_tangents`` the peer: neural-tangents' ``kernel_fn(x, None, ('nngp', 'ntk'))`` of the same
                    architecture, ``jax.jit``-compiled (compiled untimed first), float64 (``jax_enable_x64``),
                    on this machine's jax backend; only when ``neural_tangents`` imports (it is not a
                    dependency: its 0.6.5 release needs TensorFlow and tf2jax), else reported as missing.

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


def _time_interleaved(fns: dict, reps: int) -> dict[str, list[float]]:
    """Run every function once per round, ``reps`` rounds: slow drifts of a shared machine
    (other jobs, turbo, thermal) then hit all measurements alike instead of one of them."""
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            out = fn()
            samples[name].append(time.perf_counter() - t0)
            del out  # free before the next measurement
    return samples


def _neural_tangents_peer(depth: int, x: np.ndarray):
    """neural-tangents' jitted ``kernel_fn`` on ``x`` (a no-argument callable returning (nngp, ntk)
    as NumPy arrays), or ``(None, why)`` when the package does not import with this jax."""
    try:
        import jax

        jax.config.update("jax_enable_x64", True)  # float64, like the other measurements
        from neural_tangents import stax as nt_stax
    except Exception as e:  # ImportError, or a release incompatible with the installed jax
        return None, f"{type(e).__name__}: {e}"
    layers = []
    for _ in range(depth):
        layers += [nt_stax.Dense(512, W_std=math.sqrt(2.0), b_std=0.1), nt_stax.Relu()]
    layers.append(nt_stax.Dense(1))
    kernel_fn = jax.jit(nt_stax.serial(*layers)[2], static_argnames="get")
    xj = jax.device_put(x)

    def run():
        return jax.block_until_ready(kernel_fn(xj, None, ("nngp", "ntk")))

    return run, f"neural_tangents {getattr(sys.modules.get('neural_tangents'), '__version__', '?')}, jax {jax.__version__}"


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
    p.add_argument("--skip-nt", action="store_true", help="skip the neural-tangents peer")
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

    print(f"n = {args.n}, d = {args.d}, depth {args.depth} ReLU, float64, {args.reps} reps, "
          f"{os.cpu_count()} CPUs; numba warm-up {warmup:.2f} s "
          f"({'disk cache' if args.use_cache else 'compile, empty cache'})", flush=True)

    # correctness first (one run each), then the timed rounds
    k = kernel_fn(x, None, ("nngp", "ntk"))
    diffs = {}
    fns = {"gemm": lambda: x @ x.T,
           "ntkscale": lambda: kernel_fn(x, None, ("nngp", "ntk")),
           "ntkscale_ntk": lambda: kernel_fn(x, None, "ntk")}
    if not args.skip_generic:
        g = kernel_fn(x, None, path="generic")
        diffs["generic_vs_fused"] = max(_rel_diff(k.nngp, g.nngp), _rel_diff(k.ntk, g.ntk))
        del g
        fns["generic"] = lambda: kernel_fn(x, None, path="generic")
    if not args.skip_plain:
        q, t = reference_kernels(spec, x)
        diffs["plain_vs_fused"] = max(_rel_diff(k.nngp, q), _rel_diff(k.ntk, t))
        del q, t
        fns["plain"] = lambda: reference_kernels(spec, x)
    nt_run, nt_info = (None, "skipped (--skip-nt)") if args.skip_nt else _neural_tangents_peer(args.depth, x)
    if nt_run is not None:
        t = time.perf_counter()
        out = nt_run()  # jit compile for this shape, untimed in the rounds
        nt_compile = time.perf_counter() - t
        diffs["neural_tangents_vs_fused"] = max(_rel_diff(np.asarray(out.nngp), k.nngp),
                                                _rel_diff(np.asarray(out.ntk), k.ntk))
        del out
        fns["neural_tangents"] = nt_run
        print(f"peer: {nt_info} (compile + first run {nt_compile:.2f} s)", flush=True)
    else:
        print(f"peer neural_tangents not measured: {nt_info}", flush=True)
    del k

    samples = _time_interleaved(fns, args.reps)
    results = {name: {"median_s": statistics.median(v), "samples_s": v} for name, v in samples.items()}
    for name, r in results.items():
        v = r["samples_s"]
        print(f"  {name:<14s} median {r['median_s']:8.3f} s   (min {min(v):.3f}, max {max(v):.3f})")

    floor = results["gemm"]["median_s"]
    ratios = {f"{name}/gemm": r["median_s"] / floor for name, r in results.items() if name != "gemm"}
    # the same ratio taken within each round, then the median: robust to drifts between rounds
    paired = {f"{name}/gemm": statistics.median(a / b for a, b in zip(v, samples["gemm"]))
              for name, v in samples.items() if name != "gemm"}
    print("ratios to the GEMM floor (target ntkscale/gemm <= 1.5):  median-of-medians | median per round")
    for name, r in ratios.items():
        print(f"  {name:<20s} {r:6.2f} | {paired[name]:6.2f}")
    for name, v in diffs.items():
        print(f"  max |Δ|/max|K| {name}: {v:.2e}")
    if nt_run is not None:  # the peer ratio: < 1 means ntkscale is faster than neural-tangents
        nt = results["neural_tangents"]["median_s"]
        ratios["ntkscale/neural_tangents"] = results["ntkscale"]["median_s"] / nt
        paired["ntkscale/neural_tangents"] = statistics.median(
            a / b for a, b in zip(samples["ntkscale"], samples["neural_tangents"]))
        print(f"  ntkscale/neural_tangents {ratios['ntkscale/neural_tangents']:6.2f} | "
              f"{paired['ntkscale/neural_tangents']:6.2f}")

    try:
        import numba

        numba_threads = numba.get_num_threads()
    except Exception:  # pragma: no cover
        numba_threads = None
    report = {
        "benchmark": "kernel",
        "config": {"n": args.n, "d": args.d, "depth": args.depth, "reps": args.reps, "dtype": "float64",
                   "architecture": f"{args.depth} x [Dense(512, W_std=sqrt2, b_std=0.1), Relu] + Dense(1)",
                   "get": ["nngp", "ntk"]},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": sys.version.split()[0],
                    "numpy": np.__version__, "numba_threads": numba_threads},
        "warmup_s": warmup,
        "warmup_kind": "numba disk cache" if args.use_cache else "numba compile (empty cache)",
        "timings": results,
        "ratios": ratios,
        "ratios_paired": paired,
        "max_rel_diff": diffs,
        "peer_neural_tangents": {"measured": nt_run is not None, "info": nt_info},
        "target": {"ntkscale/gemm": 1.5},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
