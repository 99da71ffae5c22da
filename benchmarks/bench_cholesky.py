"""Out-of-core tiled Cholesky benchmark (issue: blocked Cholesky of K + ridge I on Dask).

Builds a depth-3 ReLU NTK Gram (W_std=sqrt2, b_std=0.1) of n Gaussian points, d=784, stored
float64, then measures (medians over --reps):
  * tiled float64 factorization on a 2-worker local cluster (single-threaded workers)
    vs scipy's LAPACK potrf on the same matrix in memory (this process, all cores; above
    n = 12288, where OpenBLAS's threaded potrf segfaults on the AVX-512 VM, blocked by
    ``ntkscale._blas.potrf`` with every call threaded on blocks <= 12288);
  * the float32 factor + float64 iterative refinement path vs the float64 path
    (factor time, solve/refinement time, steps, final relative residual);
  * the peer: scikit-learn ``KernelRidge(alpha=ridge, kernel='precomputed').fit(K, y)`` on the same
    in-memory Gram, ridge and targets (its fit copies K and solves with ``assume_a='pos'``), timed
    after the tiled and scipy runs, with the max relative difference of its ``dual_coef_`` to
    ntkscale's solutions (``--no-sklearn`` skips it);
  * peak RSS of this process and of the workers, and the 2-process GEMM ceiling of the machine.
Prints a table with ratios and writes JSON.

    python benchmarks/bench_cholesky.py [--n 20000] [--reps 3] [--tile T] [--ridge 1e-3] [--dir /tmp] [--no-sklearn]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import tempfile
import time
from typing import Any

import numpy as np


def _rss_gib() -> float:
    """Peak resident set size of the calling process (GiB; Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _median_time(fn, reps: int) -> tuple[float, list[float], object]:
    times, out = [], None
    for _ in range(reps):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), times, out


from ntkscale._blas import POTRF_THREADED_MAX, potrf as blas_potrf  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--d", type=int, default=784)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--tile", type=int, default=None, help="Gram tile edge (default: the build planner's)")
    ap.add_argument("--factor-tile", type=int, default=None, help="factor tile, a divisor of the Gram tile")
    ap.add_argument("--ridge", type=float, default=1e-3, help="ridge relative to the mean diagonal")
    ap.add_argument("--workers", type=int, default=2, help="worker processes of the local cluster")
    ap.add_argument("--blas-threads", type=int, default=1,
                    help="BLAS threads per worker (one Dask thread each; workers x threads = cores)")
    ap.add_argument("--placement", default="host", choices=["host", "worker"],
                    help="tiled factor: one task per host with all its cores' BLAS threads (default), "
                         "or one single-threaded task per worker")
    ap.add_argument("--no-sklearn", action="store_true", help="skip the scikit-learn KernelRidge peer")
    ap.add_argument("--dir", default=tempfile.gettempdir())
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "cholesky.json"))
    args = ap.parse_args()
    n = args.n
    need = 1.1 * (n * n / 2 + n * 4096) * (8 + 8 + 4)  # Gram + float64 + float32 factors (upper tiles)
    free = shutil.disk_usage(args.dir).free
    if free < need:
        raise SystemExit(f"{args.dir} has {free / 2**30:.1f} GiB free, the stores need ~{need / 2**30:.1f} GiB; "
                         "pass --dir elsewhere or a smaller --n")

    import scipy.linalg as sla
    from bench_gram import arch_depth3, parallel_ceiling
    from distributed import Client

    from ntkscale.operator import StoredGram
    from ntkscale.solvers.cholesky import cholesky_solve
    from ntkscale.tiling import build_gram, choose_tile
    from ntkscale.tiling.cholesky import factor_tiles

    arch = arch_depth3()
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, args.d))
    y = rng.standard_normal(n)
    work = tempfile.mkdtemp(dir=args.dir, prefix="ntkscale-bench-chol-")
    gram, f64, f32 = (os.path.join(work, s) for s in ("gram", "chol64", "chol32"))
    tile = args.tile or choose_tile(n, n, args.d, memory_per_task=4 * 2**30, n_kinds=1, parallel_tasks=2,
                                    symmetric=True)
    res: dict = {"n": n, "d": args.d, "tile": tile, "reps": args.reps, "cores": os.cpu_count(),
                 "gram_store_dtype": "float64", "ridge_relative": args.ridge,
                 "scipy_potrf": "blocked (ntkscale._blas.potrf)" if n > POTRF_THREADED_MAX else "lapack"}
    try:
        from distributed import LocalCluster

        from ntkscale.runner import pinned_env

        with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=None,
                          env=pinned_env(args.blas_threads)) as cl, Client(cl) as client:
            client.run(lambda: arch.kernel_fn(np.ones((4, 3)), None, "ntk"))  # warm numba in workers
            t = time.perf_counter()
            build_gram(arch, X, gram, get="ntk", tile=tile, dtype=np.float64, client=client)
            res["build_s"] = time.perf_counter() - t
            op = StoredGram(gram, "ntk", client=client)
            lam = args.ridge * float(op.diag().mean())
            res["ridge"] = lam
            nb = -(-n // tile)
            res["n_tiles"] = nb * (nb + 1) // 2
            def tiled(url: str, dt: Any) -> tuple[float, Any]:
                t = time.perf_counter()
                f = factor_tiles(op, lam, factor_url=url, dtype=dt, tile=args.factor_tile, overwrite=True,
                                 placement=args.placement)
                return time.perf_counter() - t, f

            def dense() -> tuple[float, Any]:
                B = np.array(A, order="F")  # LAPACK's layout, so overwrite_a works in place (no hidden copy)
                t = time.perf_counter()
                # scipy's LAPACK potrf; above POTRF_THREADED_MAX, where OpenBLAS's threaded potrf
                # segfaults on the AVX-512 VM, blocked with every call threaded (ntkscale._blas.potrf)
                U, info = blas_potrf(B)
                assert info == 0, info
                return time.perf_counter() - t, (U, False)

            # float64: the first tiled run before the dense matrix is loaded (client memory of the
            # tiled path alone), then scipy and tiled interleaved so that both see the same machine
            t64, f = tiled(f64, np.float64)
            res["client_peak_rss_tiled_gib"] = _rss_gib()
            A = op.to_numpy()
            A[np.diag_indices_from(A)] += lam
            times, c = {"f64": [t64], "scipy": []}, None
            for rep in range(args.reps):
                c = None  # free the previous factor first
                t, c = dense()
                times["scipy"].append(t)
                if rep < args.reps - 1:
                    times["f64"].append(tiled(f64, np.float64)[0])
            times["f32"] = [tiled(f32, np.float32)[0] for _ in range(args.reps)]
            res["factor_tile"], res["factor_tiles"] = f.tile, f.n_tiles
            for name, url, dt in (("f64", f64, np.float64), ("f32", f32, np.float32)):
                med = statistics.median(times[name])
                res[f"tiled_{name}_factor_s"], res[f"tiled_{name}_factor_all"] = med, times[name]
                # reuses the complete factor (costs nothing): solve + refinement only
                t = time.perf_counter()
                r = cholesky_solve(op, y, lam, dtype=dt, factor_url=url)
                res[f"tiled_{name}_solve_s"] = time.perf_counter() - t
                res[f"tiled_{name}_steps"], res[f"tiled_{name}_residual"] = r.iterations, r.residual
                res[f"tiled_{name}_history"], res[f"tiled_{name}_passes"] = r.history, r.passes
                res[f"tiled_{name}_total_s"] = med + res[f"tiled_{name}_solve_s"]
                res[f"x_{name}"] = r.x
            res["parallel_ceiling_2w"] = (parallel_ceiling(client, tile, tile) if args.workers == 2
                                          else float("nan"))
            res["workers"], res["blas_threads"], res["placement"] = args.workers, args.blas_threads, args.placement
            res["worker_peak_rss_gib"] = max(client.run(_rss_gib).values())
            op.close()
        times = times["scipy"]
        res["scipy_cho_factor_s"], res["scipy_cho_factor_all"] = statistics.median(times), times
        t = time.perf_counter()
        x_ref = sla.cho_solve(c, y, check_finite=False)
        res["scipy_cho_solve_s"] = time.perf_counter() - t
        res["client_peak_rss_gib"] = _rss_gib()
        kr = None
        if not args.no_sklearn:  # the peer, on the same Gram (ridge taken off again), ridge and y
            from sklearn.kernel_ridge import KernelRidge

            c = None  # free scipy's factor first
            A[np.diag_indices_from(A)] -= lam
            kr_times = []
            for _ in range(args.reps):
                kr = None
                t = time.perf_counter()
                kr = KernelRidge(alpha=lam, kernel="precomputed").fit(A, y).dual_coef_
                kr_times.append(time.perf_counter() - t)
            res["sklearn_kernel_ridge_fit_s"], res["sklearn_kernel_ridge_fit_all"] = statistics.median(kr_times), kr_times
            res["sklearn_vs_scipy_x_max_reldiff"] = float(np.abs(kr - x_ref).max() / np.abs(x_ref).max())
        for name in ("f64", "f32"):
            x = res.pop(f"x_{name}")
            res[f"tiled_{name}_vs_scipy_x_reldiff"] = float(np.linalg.norm(x - x_ref) / np.linalg.norm(x_ref))
            if kr is not None:  # max |dual_coef_ - x| / max |x|
                res[f"sklearn_vs_tiled_{name}_x_max_reldiff"] = float(np.abs(kr - x).max() / np.abs(x).max())
    finally:
        shutil.rmtree(work, ignore_errors=True)

    flops = n ** 3 / 3
    res["tiled_f64_vs_scipy"] = res["tiled_f64_factor_s"] / res["scipy_cho_factor_s"]
    res["tiled_f32_vs_f64_factor"] = res["tiled_f32_factor_s"] / res["tiled_f64_factor_s"]
    res["tiled_f32_vs_f64_total"] = res["tiled_f32_total_s"] / res["tiled_f64_total_s"]
    # time to a float64-accurate solution: scipy factor + solve vs the float32 factor + refinement
    res["scipy_factor_solve_s"] = res["scipy_cho_factor_s"] + res["scipy_cho_solve_s"]
    res["tiled_f32_refined_vs_scipy_solution"] = res["tiled_f32_total_s"] / res["scipy_factor_solve_s"]
    if "sklearn_kernel_ridge_fit_s" in res:  # < 1: ntkscale's solution is faster than the peer's
        for name in ("f64", "f32"):
            res[f"tiled_{name}_total_vs_sklearn"] = res[f"tiled_{name}_total_s"] / res["sklearn_kernel_ridge_fit_s"]
    print(f"n={n} d={args.d} Gram tile={tile} ({res['n_tiles']} tiles), factor tile={res['factor_tile']} "
          f"({res['factor_tiles']} tiles), ridge={args.ridge:g} x mean diag (medians of {args.reps}); "
          f"Gram build {res['build_s']:.1f} s")
    where = "all cores" + ("" if res["scipy_potrf"] == "lapack" else ", blocked above POTRF_THREADED_MAX")
    print(f"  scipy cho_factor in memory ({where})   {res['scipy_cho_factor_s']:8.2f} s "
          f"{flops / res['scipy_cho_factor_s'] / 1e9:6.1f} GFLOP/s")
    for name in ("f64", "f32"):
        print(f"  tiled {name} factor, {args.workers}w x {args.blas_threads} thr, {args.placement:6s}  {res[f'tiled_{name}_factor_s']:8.2f} s "
              f"{flops / res[f'tiled_{name}_factor_s'] / 1e9:6.1f} GFLOP/s")
    print(f"  tiled f64 / scipy                        {res['tiled_f64_vs_scipy']:8.2f} x "
          f"(GEMM speed-up of 2 processes over 1 on this machine: {res['parallel_ceiling_2w']:.2f})")
    for name in ("f64", "f32"):
        print(f"  {name}: solve {res[f'tiled_{name}_solve_s']:6.2f} s, "
              f"{res[f'tiled_{name}_steps']} refinement steps, residual {res[f'tiled_{name}_residual']:.2e}, total {res[f'tiled_{name}_total_s']:7.2f} s, "
              f"|x - x_scipy|/|x| {res[f'tiled_{name}_vs_scipy_x_reldiff']:.1e}")
    print(f"  f32+refine / f64: factor {res['tiled_f32_vs_f64_factor']:.2f} x, total "
          f"{res['tiled_f32_vs_f64_total']:.2f} x")
    print(f"  float64-accurate solution: f32 factor + refinement {res['tiled_f32_total_s']:.2f} s vs scipy "
          f"cho_factor + cho_solve {res['scipy_factor_solve_s']:.2f} s = "
          f"{res['tiled_f32_refined_vs_scipy_solution']:.2f} x")
    if "sklearn_kernel_ridge_fit_s" in res:
        print(f"  peer: sklearn KernelRidge(precomputed).fit {res['sklearn_kernel_ridge_fit_s']:.2f} s; tiled f64 "
              f"total {res['tiled_f64_total_vs_sklearn']:.2f} x, f32+refine total {res['tiled_f32_total_vs_sklearn']:.2f} x "
              f"of it; max |dual_coef - x|/max|x|: vs f64 {res['sklearn_vs_tiled_f64_x_max_reldiff']:.1e}, "
              f"vs f32+refine {res['sklearn_vs_tiled_f32_x_max_reldiff']:.1e}, "
              f"vs scipy {res['sklearn_vs_scipy_x_max_reldiff']:.1e}")
    print(f"  peak RSS: workers {res['worker_peak_rss_gib']:.2f} GiB, client during tiled runs "
          f"{res['client_peak_rss_tiled_gib']:.2f} GiB, client with scipy {res['client_peak_rss_gib']:.2f} GiB")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(res, fh, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
