"""Solver choice at scale on a stored Gram (issue 12: "Solver choice at scale, measured").

On a stored float32 NTK Gram (Fashion-MNIST, depth-3 ReLU, as the main jobs) and a local
cluster of 2 single-threaded workers, measures:

  * the Nyström sketch (one pass of ``rank`` columns; it serves every ridge) and, per
    relative ridge, Nyström-PCG to ``--tol`` (1e-6): passes, seconds, final residual;
  * with ``--cholesky``: the tiled float32 Cholesky + float64 refinement at one ridge
    (factor and solve seconds), for the cubic extrapolation that tells whether it fits a
    budget at larger n (``(n'/n)^3`` x the factor time).

    python benchmarks/bench_scale.py --n 50000 [--ridges 1e-1 1e-2 1e-3] [--rank 500] [--cholesky]
    python benchmarks/bench_scale.py --store runs/fashion-mnist-120k/gram.zarr --ridges 1e-1

``--n`` builds a store of the first n/2 training images and their mirror images (as the
120k job) in ``--dir``; the store is removed afterwards unless ``--keep``. Writes
``benchmarks/results/scale.json``. Run alone on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time

import numpy as np


def _data(n: int) -> tuple[np.ndarray, np.ndarray]:
    from ntkscale.data import load_fashion_mnist

    X, y = load_fashion_mnist("train", n // 2)
    flip = X.reshape(-1, 28, 28)[:, :, ::-1].reshape(len(X), -1)
    X = np.concatenate([X, flip])
    X = X - X.mean(0)
    X *= np.sqrt(X.shape[1]) / np.linalg.norm(X, axis=1, keepdims=True)
    return X, np.concatenate([y, y])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=50000)
    ap.add_argument("--store", default=None, help="an existing Gram store (skips the build)")
    ap.add_argument("--ridges", type=float, nargs="+", default=[1e-1, 1e-2, 1e-3])
    ap.add_argument("--rank", type=int, default=500)
    ap.add_argument("--tol", type=float, default=1e-6)
    ap.add_argument("--maxiter", type=int, default=400)
    ap.add_argument("--cholesky", action="store_true", help="also the tiled float32 Cholesky")
    ap.add_argument("--cholesky-ridge", type=float, default=1e-2)
    ap.add_argument("--dir", default=tempfile.gettempdir())
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "scale.json"))
    args = ap.parse_args()

    from distributed import Client

    from ntkscale.runner import local_cluster
    from ntkscale.job.model import build_arch
    from ntkscale.operator import StoredGram
    from ntkscale.solvers import nystrom, pcg
    from ntkscale.solvers.cholesky import cholesky_solve
    from ntkscale.tiling import build_gram

    res: dict = {"rank": args.rank, "tol": args.tol, "pcg": []}
    work = tempfile.mkdtemp(dir=args.dir, prefix="ntkscale-scale-")
    with local_cluster(dashboard_address=None) as cl, Client(cl) as client:
        try:
            if args.store:
                path = args.store
                from ntkscale.storage import GramStore

                y = None
                n = GramStore.open(path).shape[0]
            else:
                X, y = _data(args.n)
                n = len(X)
                arch = build_arch({"depth": 3, "width": 512, "activation": "relu", "W_std": 2 ** 0.5, "b_std": 0.1,
                                   "parameterization": "ntk"})
                path = os.path.join(work, "gram.zarr")
                t = time.perf_counter()
                rep = build_gram(arch, X, path, get="ntk", client=client)
                res["build_seconds"] = time.perf_counter() - t
                res["tile"] = rep.tile
            if y is None:  # an existing store: targets from the labels are not stored; random ±1
                Y = np.sign(np.random.default_rng(0).standard_normal((n, 10)))
                res["targets"] = "random signs (existing store)"
            else:
                Y = np.eye(10)[y] - 0.1
                res["targets"] = "centered one-hot labels"
            res["n"] = n
            with StoredGram(path, "ntk", client=client) as op:
                md = float(op.diag().mean())
                t = time.perf_counter()
                pre = nystrom(op, args.rank, seed=0)
                res["sketch_seconds"] = time.perf_counter() - t
                print(f"n={n}: Nyström rank {args.rank} sketch {res['sketch_seconds']:.1f} s", flush=True)
                for r in sorted(args.ridges, reverse=True):
                    t = time.perf_counter()
                    passes0 = op.passes
                    sol = pcg(op, Y, r * md, precond=pre, tol=args.tol, maxiter=args.maxiter)
                    row = {"ridge_relative": r, "iterations": sol.iterations, "passes": op.passes - passes0,
                           "seconds": time.perf_counter() - t, "residual": sol.residual,
                           "converged": sol.converged}
                    row["seconds_per_pass"] = row["seconds"] / max(row["passes"], 1)
                    res["pcg"].append(row)
                    print(f"  PCG ridge {r:g}: {row['passes']} passes, {row['seconds']:.1f} s "
                          f"({row['seconds_per_pass']:.2f} s/pass), residual {sol.residual:.2e}", flush=True)
                if args.cholesky:
                    t = time.perf_counter()
                    sol = cholesky_solve(op, Y, args.cholesky_ridge * md, dtype=np.float32,
                                         factor_url=os.path.join(work, "factor.zarr"))
                    res["cholesky_f32"] = {"ridge_relative": args.cholesky_ridge, "seconds": time.perf_counter() - t,
                                           "residual": sol.residual, "refinement_steps": sol.iterations,
                                           "method": sol.method, "info": {k: v for k, v in sol.info.items()
                                                                          if isinstance(v, (int, float, str))}}
                    print(f"  tiled float32 Cholesky + refinement: {res['cholesky_f32']['seconds']:.1f} s, "
                          f"residual {sol.residual:.2e}", flush=True)
        finally:
            if not args.keep:
                shutil.rmtree(work, ignore_errors=True)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(res, fh, indent=2, default=float)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
