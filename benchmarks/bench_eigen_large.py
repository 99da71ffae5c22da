"""Top-k eigenpairs at the largest n this machine holds comfortably (issue: eigensolver).

A float64 n x n Gram does not fit in RAM beyond n ~ 35000 here (23 GiB), so there is no LAPACK
peer at this size: the Gram is built into a float32 Zarr store on a 2-worker local cluster and
``randomized_eigh`` streams it (one pass per sketch / power step / Ritz pass). Accuracy comes
from the solver's own a-posteriori bounds (residual norms, ε from Gaussian probes), and the
LAPACK time is the n³ extrapolation of the measured n = 20000 ``eigh`` (bench_eigen.py).

    python benchmarks/bench_eigen_large.py [--n 50000] [--k 500] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import tempfile
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=50000)
    ap.add_argument("--k", type=int, default=500)
    ap.add_argument("--power-iters", type=int, default=2)
    ap.add_argument("--dir", default=tempfile.gettempdir())
    ap.add_argument("--eigh-20k-s", type=float, default=786.0,
                    help="measured full scipy eigh time at n=20000 (bench_eigen.py), for the n³ extrapolation")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "eigen_large.json"))
    args = ap.parse_args()

    from distributed import Client

    from ntkscale.runner import local_cluster
    from ntkscale.data import load_dataset, validate_data
    from ntkscale.operator import StoredGram
    from ntkscale.solvers import randomized_eigh
    from ntkscale.tiling import build_gram

    try:
        data = load_dataset(validate_data({"source": "fashion-mnist", "n_train": args.n, "n_test": 0}))
    except Exception as e:  # no Debian package: uniform sphere points
        print(f"Fashion-MNIST unavailable ({e}); synthetic sphere data")
        data = load_dataset(validate_data({"source": "sphere", "n": args.n, "d": 784, "test_fraction": 0.0}))
    X = data.X_train
    from ntkscale.estimators._base import default_arch

    arch = default_arch()
    tmp = tempfile.mkdtemp(prefix="ntkscale-eig-large-", dir=args.dir)
    res: dict = {"n": args.n, "k": args.k, "data": data.name, "power_iters": args.power_iters}
    try:
        with local_cluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cl, Client(cl) as client:
            t = time.perf_counter()
            rep = build_gram(arch, X, os.path.join(tmp, "g"), get="ntk", client=client)
            res["build_s"] = time.perf_counter() - t
            res["tiles"], res["tile"] = rep.n_tiles, rep.tile
            res["store_bytes"] = sum(os.path.getsize(os.path.join(dp, f))
                                     for dp, _, fs in os.walk(tmp) for f in fs)
            print(f"{data.name}: n={args.n}, store {res['store_bytes'] / 2**30:.1f} GiB "
                  f"({rep.n_tiles} tiles of {rep.tile}) built in {res['build_s']:.1f} s", flush=True)
            with StoredGram(os.path.join(tmp, "g"), client=client) as op:
                t = time.perf_counter()
                er = randomized_eigh(op, args.k, power_iters=args.power_iters, seed=0)
                res["eigh_s"] = time.perf_counter() - t
                worker_rss = client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    lam = er.evals
    res.update(passes=er.passes, eps=er.error_estimate, lambda_1=float(lam[0]), lambda_k=float(lam[-1]),
               eps_over_lambda_k=float(er.error_estimate / lam[-1]),
               max_rel_bound_top100=float(np.max(er.error_bounds[:100] / lam[:100])),
               median_rel_bound=float(np.median(er.error_bounds / lam)),
               max_rel_bound=float(np.max(er.error_bounds / lam)),
               eta_1=float(lam[0] / args.n), eta_k=float(lam[-1] / args.n),
               client_peak_gib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
               worker_peak_gib=max(worker_rss.values()),
               lapack_eigh_extrapolated_s=args.eigh_20k_s * (args.n / 20000) ** 3,
               lapack_memory_gib=2 * 8 * args.n ** 2 / 2**30)
    res["speedup_vs_extrapolated_eigh"] = res["lapack_eigh_extrapolated_s"] / res["eigh_s"]
    print(f"randomized_eigh k={args.k}: {res['eigh_s']:.1f} s, {er.passes} passes; "
          f"ε/λ_k = {res['eps_over_lambda_k']:.2g}; relative error bounds: top-100 max "
          f"{res['max_rel_bound_top100']:.1e}, median {res['median_rel_bound']:.1e}, max {res['max_rel_bound']:.1e}")
    print(f"peak RSS: client {res['client_peak_gib']:.2f} GiB, worker {res['worker_peak_gib']:.2f} GiB; "
          f"LAPACK eigh would need {res['lapack_memory_gib']:.0f} GiB and ~{res['lapack_eigh_extrapolated_s']:.0f} s "
          f"(n³ from n=20000): {res['speedup_vs_extrapolated_eigh']:.0f}x")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(res, fh, indent=2, default=str)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
