"""RPCholesky vs the Nyström sketch as PCG's preconditioner on a stored Gram, through the job
(issue 25: "at equal rank and at equal time").

The LOO job (`jobs/fashion-mnist-120k.toml`: Fashion-MNIST images + mirrors, depth-3 ReLU NTK
stored float32, `method = "auto"` → PCG, tolerance 1e-6, 10 one-hot targets) at a smaller n,
with a fixed relative ridge (default 0.046, what the 120k job's LOO step chose) so that every
run solves the same system. One Gram store is built first (stages gram); then, for each
preconditioner and rank, `ntkscale run` with stages ["fit"] on that store (a fresh run
directory each time, same local 2-worker cluster). Reports PCG iterations, passes over the
store, the preconditioner's build seconds, PCG's seconds and their sum (the fit), and writes JSON.

    python benchmarks/precond_job.py [--n-train 15000] [--ranks 1000 2000 4000 8000] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time

from _jobs import cli, stage_metrics, write_job, write_json

HERE = os.path.dirname(os.path.abspath(__file__))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-train", type=int, default=15000, help="images; with their mirrors n = 2 x this")
    ap.add_argument("--tile", type=int, default=5000)
    ap.add_argument("--ridge", type=float, default=0.046, help="relative to the mean diagonal")
    ap.add_argument("--ranks", type=int, nargs="+", default=[1000, 2000, 4000, 8000])
    ap.add_argument("--kinds", nargs="+", default=["nystrom", "rpcholesky"])
    ap.add_argument("--store", default="", help="an existing Gram store of this job's data (else built)")
    ap.add_argument("--dir", default=tempfile.gettempdir())
    ap.add_argument("--out", default=os.path.join(HERE, "results", "precond_job.json"))
    args = ap.parse_args()
    work = tempfile.mkdtemp(dir=args.dir, prefix="ntkscale-precond-job-")
    store = args.store or os.path.join(work, "gram.zarr")
    common = {"data": {"n_train": args.n_train}, "kernel": {"tile": args.tile, "store": store},
              "forecast": {"enabled": False},
              "solver": {"ridge": args.ridge, "relative_ridge": True, "method": "pcg"}}
    res: dict = {"n": 2 * args.n_train, "ridge_relative": args.ridge, "runs": []}
    try:
        if not args.store:
            job = write_job("fashion-mnist-120k.toml", os.path.join(work, "gram.toml"),
                            {**common, "job": {"name": "gram", "out": os.path.join(work, "gram"),
                                               "stages": ["gram"]}})
            t = time.perf_counter()
            subprocess.run(cli() + [job], check=True, stdout=subprocess.DEVNULL)
            res["gram_seconds"] = time.perf_counter() - t
        for rank in args.ranks:  # interleaved: both kinds at one rank, then the next rank
            for kind in args.kinds:
                name = f"{kind}-{rank}"
                out = os.path.join(work, name)
                job = write_job("fashion-mnist-120k.toml", os.path.join(work, f"{name}.toml"), {
                    **common, "job": {"name": name, "out": out, "stages": ["fit"]},
                    "solver": {**common["solver"], "preconditioner": kind, "pcg_rank": rank}})
                t = time.perf_counter()
                run = subprocess.run(cli() + [job], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                wall = time.perf_counter() - t
                if run.returncode:
                    raise SystemExit(f"{name} failed:\n{run.stdout[-3000:]}")
                f = stage_metrics(out)["fit"]
                row = {"kind": kind, "rank": rank, "iterations": f["iterations"], "passes": f["passes"],
                       "precond_seconds": f.get("precond_seconds"), "precond_columns": f.get("precond_columns"),
                       "precond_passes": f.get("precond_passes"), "pcg_seconds": f["solve_seconds"],
                       "fit_seconds": (f.get("precond_seconds") or 0.0) + f["solve_seconds"],
                       "run_seconds": wall, "residual": f["relative_residual"],
                       "train_accuracy": f.get("train_accuracy")}
                res["runs"].append(row)
                print(f"{kind:10s} rank {rank:5d}: {row['iterations']:4d} iterations, {row['passes']:4d} passes, "
                      f"preconditioner {row['precond_seconds'] or 0:7.1f} s + PCG {row['pcg_seconds']:7.1f} s = fit "
                      f"{row['fit_seconds']:7.1f} s, "
                      f"residual {row['residual']:.1e}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write_json(args.out, res)


if __name__ == "__main__":
    main()
