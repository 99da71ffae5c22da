"""Ridgeless flip job at n=20000 (tile 5000, f32 factor): factor seconds, orig vs new, interleaved."""
import json, os, subprocess, sys, time, shutil
sys.path.insert(0, "/work/main/benchmarks")
from _jobs import cli, stage_metrics, write_job
if __name__ == "__main__":
    base = "/work/s13/abjob"; os.makedirs(base, exist_ok=True)
    store = f"{base}/gram.zarr"
    rows = []
    for r in range(3):
        for name, env in (("orig", {"PYTHONPATH": "/work/s13/orig"}), ("new", {})):
            out, factor = f"{base}/{name}-{r}", f"{base}/factor-{name}-{r}"
            stages = ["gram", "fit"] if not os.path.exists(store) else ["fit"]
            job = write_job("fashion-mnist-120k-ridgeless.toml", f"{base}/{name}-{r}.toml", {
                "job": {"name": f"{name}-{r}", "out": out, "stages": stages}, "data": {"n_train": 10000},
                "kernel": {"tile": 5000, "store": store}, "solver": {"factor_store": factor}})
            p = subprocess.run(cli() + [job], env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            if p.returncode:
                print(p.stdout[-2000:]); sys.exit(1)
            f = stage_metrics(out)["fit"]
            rows.append((name, r, f["factor_seconds"], f["solve_seconds"], f["relative_residual"]))
            print(rows[-1], flush=True)
            shutil.rmtree(factor, ignore_errors=True)
    json.dump(rows, open(f"{base}/ab_job.json", "w"))
