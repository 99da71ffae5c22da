"""PCG vs direct solves on a real NTK Gram (issue: solvers).

Fashion-MNIST (Debian package ``dataset-fashion-mnist``; synthetic sphere data otherwise),
first n training images centered and scaled to norm √d, depth-3 ReLU NTK (W_std=√2,
b_std=0.1), float64, in memory. For relative ridges 1e-1…1e-6 (λ = r · mean diag K) and
Nyström ranks 500…4000 it measures:

  * PCG iterations (= passes over the Gram) and time to 1e-8 relative residual,
    including the sketch (one pass of ``rank`` columns, shared by all ridges), with the
    peak memory (tracemalloc) of sketch + solve;
  * the direct path: LAPACK Cholesky (``scipy.linalg.cho_factor`` + ``cho_solve``) per
    ridge, which is the floor PCG has to beat.

Prints the table, says where PCG beats the direct path, and writes JSON.

    python benchmarks/bench_solve.py [--n 20000] [--ranks 500 1000 2000 4000] [--maxiter 1500]

For each rank, ridges run from large to small; after the first ridge that does not converge
within --maxiter, the smaller ridges of that rank are skipped (reported as such).
"""

from __future__ import annotations

import argparse
import json
import os
import time
import tracemalloc

import numpy as np
import scipy.linalg as sla


def load(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, str]:
    from ntkscale.data import load_fashion_mnist

    try:
        X, y = load_fashion_mnist("train", n)
        Y = np.eye(10)[y] - 0.1
        return X, Y, "fashion-mnist"
    except FileNotFoundError:
        rng = np.random.default_rng(seed)
        X = rng.standard_normal((n, 784))
        X *= np.sqrt(784) / np.linalg.norm(X, axis=1, keepdims=True)
        return X, np.sign(X[:, :10]), "synthetic sphere (dataset-fashion-mnist not installed)"


def arch():
    from ntkscale import stax

    layers = []
    for _ in range(3):
        layers += [stax.Dense(512, W_std=2**0.5, b_std=0.1), stax.Relu()]
    return stax.serial(*layers, stax.Dense(1, W_std=2**0.5, b_std=0.1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--ranks", type=int, nargs="+", default=[500, 1000, 2000, 4000])
    ap.add_argument("--ridges", type=float, nargs="+", default=[1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6])
    ap.add_argument("--maxiter", type=int, default=1500)
    ap.add_argument("--tol", type=float, default=1e-8)
    ap.add_argument("--direct-ridges", type=float, nargs="+", default=[1e-1, 1e-6],
                    help="ridges at which the direct path is timed (its flops do not depend on "
                         "the ridge; the median over these is the reference for every ridge)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "solve.json"))
    args = ap.parse_args()

    from ntkscale.operator import DenseGram
    from ntkscale.solvers import nystrom, pcg

    X, Y, source = load(args.n)
    t = time.perf_counter()
    K = np.asarray(arch().kernel_fn(X, None, "ntk", dtype=np.float64))
    t_kernel = time.perf_counter() - t
    op = DenseGram(K)
    mean_diag = float(np.mean(np.diag(K)))
    t = time.perf_counter()
    op.matvec(Y)
    t_pass = time.perf_counter() - t
    print(f"{source}: n={args.n}, C={Y.shape[1]}, kernel {t_kernel:.1f} s, one pass (matvec of "
          f"{Y.shape[1]} columns) {t_pass:.3f} s")
    res: dict = {"n": args.n, "source": source, "tol": args.tol, "pass_s": t_pass, "direct": {}, "pcg": []}

    for r in args.direct_ridges:
        lam = r * mean_diag
        tracemalloc.start()
        t = time.perf_counter()
        A = K + lam * np.eye(args.n)
        x = sla.cho_solve(sla.cho_factor(A, overwrite_a=True), Y)
        sec = time.perf_counter() - t
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        del A
        resid = np.linalg.norm(op.matvec(x) + lam * x - Y) / np.linalg.norm(Y)
        res["direct"][r] = {"seconds": sec, "peak_bytes": peak, "residual": float(resid)}
        print(f"direct  ridge {r:7.0e}: {sec:7.1f} s  peak {peak / 2**30:5.2f} GiB  residual {resid:.1e}")

    direct_s = float(np.median([v["seconds"] for v in res["direct"].values()]))
    res["direct_median_s"] = direct_s
    print(f"direct median {direct_s:.1f} s (the reference for every ridge)")
    print(f"\n{'rank':>5} {'ridge':>7} {'iters':>6} {'sketch s':>9} {'solve s':>8} {'total s':>8} "
          f"{'peak GiB':>8} {'vs direct':>9}  converged")
    for rank in args.ranks:
        tracemalloc.start()
        t = time.perf_counter()
        pre = nystrom(op, rank, seed=0)
        t_sketch = time.perf_counter() - t
        peak_sketch = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        failed_at = None
        for r in sorted(args.ridges, reverse=True):
            if failed_at is not None:  # smaller ridge, worse conditioning: cannot converge sooner
                res["pcg"].append({"rank": rank, "ridge": r, "skipped": f"not converged at {failed_at:g}"})
                print(f"{rank:5d} {r:7.0e}  skipped: no convergence in {args.maxiter} at ridge {failed_at:g}")
                continue
            lam = r * mean_diag
            tracemalloc.start()
            t = time.perf_counter()
            out = pcg(op, Y, lam, precond=pre, tol=args.tol, maxiter=args.maxiter)
            t_solve = time.perf_counter() - t
            peak = max(peak_sketch, tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()
            total = t_sketch + t_solve
            ratio = total / direct_s
            failed_at = None if out.converged else r
            res["pcg"].append({"rank": rank, "ridge": r, "iterations": out.iterations, "passes": out.passes + 1,
                               "sketch_s": t_sketch, "solve_s": t_solve, "total_s": total, "peak_bytes": peak,
                               "vs_direct": ratio, "converged": out.converged, "residual": out.residual})
            print(f"{rank:5d} {r:7.0e} {out.iterations:6d} {t_sketch:9.1f} {t_solve:8.1f} {total:8.1f} "
                  f"{peak / 2**30:8.2f} {ratio:9.2f}  {out.converged}")
    wins = [(e["rank"], e["ridge"]) for e in res["pcg"] if e.get("converged") and e["vs_direct"] < 1]
    print("\nPCG beats the direct path at (rank, relative ridge):", wins or "nowhere")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(res, fh, indent=2, default=str)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    import warnings

    from ntkscale.solvers import ConvergenceWarning

    warnings.simplefilter("ignore", ConvergenceWarning)  # non-convergence is in the table
    main()
