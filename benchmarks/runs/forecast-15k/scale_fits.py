"""Measured fits at 30k and 60k (no mirrors), ridge 0.046 x mean diag, real test split."""
import json, os, subprocess, sys, time
sys.path.insert(0, "/work/main/benchmarks")
from _jobs import cli, stage_metrics, write_job
if __name__ == "__main__":
    out = {}
    for n in (30000, 60000):
        d = f"/work/s13/scale/n{n}"
        job = write_job("fashion-mnist-120k.toml", f"/work/s13/scale/n{n}.toml", {
            "job": {"name": f"n{n}", "out": d, "stages": ["gram", "fit", "predict"]},
            "data": {"n_train": n, "flip": False}, "kernel": {"tile": 5000 if n == 30000 else 6000},
            "solver": {"ridge": 0.046, "relative_ridge": True, "method": "pcg", "pcg_rank": 4000,
                       "preconditioner": "rpcholesky"},
            "forecast": {"enabled": False}})
        t = time.perf_counter()
        r = subprocess.run(cli() + [job], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if r.returncode:
            print(r.stdout[-3000:]); sys.exit(1)
        m = stage_metrics(d)
        out[n] = {"seconds": time.perf_counter() - t, "test_mse": m["predict"]["test_mse"],
                  "test_accuracy": m["predict"]["test_accuracy"], "ridge": m["fit"]["ridge"],
                  "iterations": m["fit"]["iterations"], "residual": m["fit"]["relative_residual"]}
        print(n, out[n], flush=True)
    json.dump(out, open("/work/s13/scale/fits.json", "w"), indent=1)
