"""The forecast stage on real jobs (issue 21): the 60k job (60 000 images, no mirrors) and the
120k flip job, each with its forecast made before the fit and checked against the fit's
measured test MSE on the real 10 000-image test split.

    python benchmarks/runs/forecast-jobs/run_jobs.py [60k] [120k]
"""
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from _jobs import cli, stage_metrics, write_job  # noqa: E402

WORK = os.environ.get("FORECAST_WORK", "/work/s15")
HERE = os.path.dirname(os.path.abspath(__file__))

JOBS = {
    "60k": {"job": {"name": "n60000", "out": f"{WORK}/n60000",
                    "stages": ["gram", "fit", "predict", "spectrum", "forecast"]},
            "data": {"n_train": 60000, "flip": False}, "kernel": {"tile": 6000},
            "solver": {"ridge": 0.046, "relative_ridge": True, "method": "pcg", "pcg_rank": 4000,
                       "preconditioner": "rpcholesky"},
            "forecast": {"enabled": True}},
    "120k": {"job": {"name": "flip120k", "out": f"{WORK}/flip120k"}},  # the headline job as it is
}

if __name__ == "__main__":
    out = {}
    for name in sys.argv[1:] or list(JOBS):
        ov = JOBS[name]
        job = write_job("fashion-mnist-120k.toml", f"{WORK}/{name}.toml", ov)
        t = time.perf_counter()
        with open(f"{WORK}/{name}.log", "w") as log:
            r = subprocess.run(cli() + [job], stdout=log, stderr=subprocess.STDOUT, text=True)
        if r.returncode:
            print(name, "failed, see", f"{WORK}/{name}.log", flush=True)
            sys.exit(1)
        m = stage_metrics(ov["job"]["out"])
        f = m["forecast"]
        out[name] = {"seconds": time.perf_counter() - t, "test_mse": m["predict"]["test_mse"],
                     "test_accuracy": m["predict"]["test_accuracy"], "ridge": m["fit"]["ridge"],
                     "forecast": {k: f[k] for k in ("risk", "sizes", "points", "points_sem", "n_test",
                                                   "grouped", "exponent", "exponent_se", "forecast_p",
                                                   "forecast", "forecast_low", "forecast_high", "gcv",
                                                   "gcv_band", "tail_share", "forecast_over_measured",
                                                   "gcv_over_measured") if k in f},
                     "stage_seconds": {s: v.get("seconds") for s, v in m.items() if isinstance(v, dict)}}
        print(name, json.dumps(out[name]), flush=True)
        with open(os.path.join(HERE, f"{name}.json"), "w") as fh:
            json.dump(out[name], fh, indent=1)
