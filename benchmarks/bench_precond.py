"""PCG preconditioners from passes (Nyström sketch) vs from kernel columns (RPCholesky) (issue 25).

Fashion-MNIST (Debian package ``dataset-fashion-mnist``; synthetic sphere data otherwise), first
n training images centered and scaled to norm √d, depth-3 ReLU NTK (W_std=√2, b_std=0.1, as
``jobs/fashion-mnist-120k.toml``), float64 in memory, 10 one-hot right-hand sides. For each
relative ridge (λ = r · mean diag K; 0.046 is the 120k LOO job's) and rank it runs PCG to
``--tol`` with

  * no preconditioner (once per ridge);
  * the Nyström sketch (``solvers.nystrom``: 1 pass over the Gram, rank columns);
  * RPCholesky (``solvers.rpcholesky``, accelerated/rejection and accept-all): no pass,
    ``columns`` kernel columns (n entries each) computed.

and reports iterations, passes (CG's + the sketch's), columns computed, build and solve seconds.
It also times computing a block of kernel columns K(X, X[S]) from the inputs (what a stored
Gram's ``columns`` does on the workers), to turn column counts into seconds.

    python benchmarks/bench_precond.py [--n 10000] [--ranks 500 1000 2000] [--ridges 0.046 1e-3]

Timings on a shared 2-core VM are under load; iteration and column counts are load-independent.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np


def load(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, str]:
    from ntkscale.data import load_fashion_mnist

    try:
        X, y = load_fashion_mnist("train", n)
        return X, np.eye(10)[y] - 0.1, "fashion-mnist"
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
    from ntkscale.linop import DenseGram
    from ntkscale.solvers import pcg
    from ntkscale.solvers.api import build_preconditioner
    from ntkscale.solvers.rpcholesky import rpcholesky

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--ranks", type=int, nargs="+", default=[500, 1000, 2000])
    ap.add_argument("--ridges", type=float, nargs="+", default=[0.046, 1e-3])
    ap.add_argument("--tol", type=float, default=1e-8)
    ap.add_argument("--maxiter", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "runs",
                                                  f"precond-{time.strftime('%Y%m%d-%H%M%S')}.json"))
    args = ap.parse_args()

    X, Y, source = load(args.n, args.seed)
    A = arch()
    t = time.perf_counter()
    K = np.asarray(A.kernel_fn(X, None, "ntk"), dtype=np.float64)  # shape: (n, n)
    t_gram = time.perf_counter() - t
    S = np.random.default_rng(1).choice(args.n, 100, replace=False)
    t = time.perf_counter()
    A.kernel_fn(X, X[S], "ntk")  # 100 columns from the inputs
    t_col = (time.perf_counter() - t) / 100
    op = DenseGram(K)
    mean_diag = float(np.mean(np.diag(K)))
    print(f"{source}, n = {args.n}: Gram {t_gram:.1f} s, one kernel column from the inputs {1e3 * t_col:.1f} ms "
          f"(under load)")
    res = {"n": args.n, "source": source, "tol": args.tol, "gram_s": t_gram, "column_s": t_col,
           "ranks": args.ranks, "ridges": args.ridges, "rows": []}

    pres = {}
    for rank in args.ranks:
        for kind, label in (("nystrom", "nystrom"), ("rpcholesky", "rpchol")):
            pres[(rank, label)] = build_preconditioner(op, rank, kind, seed=args.seed)
        t = time.perf_counter()
        pre = rpcholesky(np.diag(K), op.columns, rank, seed=args.seed, accept="all")
        pre.info.update(seconds=time.perf_counter() - t, passes=0)
        pres[(rank, "rpchol-all")] = pre
    hdr = (f"{'ridge':>7} {'precond':>11} {'rank':>5} {'iters':>6} {'passes':>6} {'columns':>7} "
           f"{'resid/tr':>9} {'build s':>8} {'solve s':>8}")
    print(hdr)
    for r in args.ridges:
        lam = r * mean_diag
        out = pcg(op, Y, lam, tol=args.tol, maxiter=args.maxiter)
        row = {"ridge": r, "precond": "none", "rank": 0, "iterations": out.iterations, "passes": out.passes,
               "columns": 0, "residual_fraction": None, "build_s": 0.0, "solve_s": out.seconds,
               "converged": out.converged}
        res["rows"].append(row)
        print(f"{r:7.0e} {'none':>11} {0:5d} {out.iterations:6d} {out.passes:6d} {0:7d} {'':>9} {0:8.1f} "
              f"{out.seconds:8.1f}  {out.converged}")
        for rank in args.ranks:
            for label in ("nystrom", "rpchol", "rpchol-all"):
                pre = pres[(rank, label)]
                out = pcg(op, Y, lam, precond=pre, tol=args.tol, maxiter=args.maxiter)
                info = pre.info
                frac = info.get("residual_fraction")
                row = {"ridge": r, "precond": label, "rank": pre.rank, "iterations": out.iterations,
                       "passes": out.passes + pre.passes, "columns": int(info.get("columns", 0)),
                       "residual_fraction": frac, "build_s": info["seconds"], "solve_s": out.seconds,
                       "converged": out.converged}
                res["rows"].append(row)
                fs = f"{frac:9.2e}" if frac is not None else f"{'':>9}"
                print(f"{r:7.0e} {label:>11} {pre.rank:5d} {out.iterations:6d} {row['passes']:6d} "
                      f"{row['columns']:7d} {fs} {info['seconds']:8.1f} {out.seconds:8.1f}  {out.converged}")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(res, fh, indent=2, default=str)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    import sys
    import warnings

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this checkout's ntkscale

    from ntkscale.solvers import ConvergenceWarning

    warnings.simplefilter("ignore", ConvergenceWarning)  # non-convergence is in the table
    main()
