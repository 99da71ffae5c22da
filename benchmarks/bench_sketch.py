"""Single- vs double-precision wide passes over a stored float32 Gram (the Nyström sketch).

``StoredGram.matvec(V, precision='single')`` (float32 SGEMMs on the float32 tiles) against
``precision='double'`` (float64 products) with V of shape (n, k), on a local cluster of 2
single-threaded workers, interleaved round by round; prints the median times, the speedup
(the planner's :data:`ntkscale.plan.costs.SINGLE_SPEEDUP` assumes 2) and the relative
difference of the two products, and writes JSON.

    python benchmarks/bench_sketch.py --store runs/fashion-mnist-120k/gram.zarr [--k 250] [--reps 2]

Run alone on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", required=True, help="an existing float32 Gram store")
    ap.add_argument("--kind", default="ntk")
    ap.add_argument("--k", type=int, default=250, help="columns of V (the sketch's width)")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "sketch.json"))
    args = ap.parse_args()

    from distributed import Client

    from ntkscale.runner import local_cluster
    from ntkscale.operator import StoredGram

    times: dict[str, list[float]] = {"single": [], "double": []}
    with local_cluster(dashboard_address=None) as cl, Client(cl) as client:
        op = StoredGram(args.store, args.kind, client=client)
        if "single" not in op.precisions:
            raise SystemExit(f"{args.store} is not a float32 store: no single-precision passes")
        n = op.shape[0]
        V = np.linalg.qr(np.random.default_rng(0).standard_normal((n, args.k)))[0]
        out = {}
        for r in range(args.reps):
            for prec in (("single", "double") if r % 2 == 0 else ("double", "single")):
                t = time.perf_counter()
                out[prec] = op.matvec(V, precision=prec)
                times[prec].append(time.perf_counter() - t)
                print(f"round {r}: {prec} {times[prec][-1]:.1f} s", flush=True)
        diff = float(np.linalg.norm(out["single"] - out["double"]) / np.linalg.norm(out["double"]))
        io = op.io
        op.close()
    med = {p: statistics.median(v) for p, v in times.items()}
    res = {"store": args.store, "n": n, "k": args.k, "io": io, "seconds": times, "median": med,
           "speedup": med["double"] / med["single"], "relative_difference": diff,
           "gflops_single": 2.0 * n * n * args.k / med["single"] / 1e9,
           "gflops_double": 2.0 * n * n * args.k / med["double"] / 1e9}
    print(f"n={n} k={args.k} ({io}): single {med['single']:.1f} s, double {med['double']:.1f} s, "
          f"speedup {res['speedup']:.2f}x (planner assumes 2.0); "
          f"{res['gflops_single']:.0f} / {res['gflops_double']:.0f} GFLOP/s; ‖Δ‖/‖K V‖ = {diff:.2e}")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
