"""``ntkscale.predict`` (neural-tangents' ``nt.predict``) on a stored 100k Gram (issue 22).

A porting user's script at a size where NT's ``predict`` would need the n x n kernels in device
memory (100 000² float64 = 80 GB each): Fashion-MNIST's first ``--n-train`` training images and
their mirror images (n = 2 x ``--n-train``; the 120k job's data at n = 100 000), the depth-3
ReLU NTK and NNGP stored as float32 upper tiles by the job's ``gram`` stage. Then, with NT's
names and signatures (``k_train_train=`` the store is the one keyword NT does not have):

0. the store opened as ``StoredGram(url, kind, client=client)`` on a local Dask cluster (2
   workers x 1 thread, as the README's example). A URL alone runs the passes in this process
   (one task at a time, 2 BLAS threads on skinny products, CRC checks on the same 2 cores): a
   first attempt that way made ~24 passes in ~30 min on a loaded machine, where the job's
   2-worker passes take ~20 s (not measured side by side);
1. ``predict.max_learning_rate(store, y_train_size=N)`` (Lanczos on the store);
2. ``predict.gradient_descent_mse_ensemble(kernel_fn, x_train, y_train, learning_rate=lr,
   diag_reg=0.046, k_train_train=store)``, ``predict_fn(t=None, x_test, 'ntk')`` on the 10 000
   test images (PCG, RPCholesky preconditioner from kernel columns);
3. the same at finite times ``t`` = 15 and 150 steps of gradient descent at that rate
   (Lanczos on ``Theta + ridge``);
4. ``compute_cov=True`` for ``--cov-points`` test images (NTK ensemble covariance: needs both
   stored kinds).

Reported: seconds and passes of each call, the solver's residual, test accuracy and MSE
(sum over the 10 centred one-hot outputs, as the job's predict stage) at each t, and the
covariance's checks (symmetric, PSD, below the prior NNGP variance). The job's own ``fit`` +
``predict`` stages on the same store and ridge give a second path to the t = None predictions
(``--job-check``). Peak RSS of all processes: run under ``benchmarks/watch_rss.py``.

    python benchmarks/predict_store.py [--n-train 50000] [--dir /work/s14] [--job-check]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import time

import numpy as np

from _jobs import cli, stage_metrics, write_job, write_json

HERE = os.path.dirname(os.path.abspath(__file__))


def _scores(mean: np.ndarray, Yt: np.ndarray) -> dict:
    return {"accuracy": float(np.mean(mean.argmax(-1) == Yt.argmax(-1))),
            "test_mse": float(np.mean(np.sum((mean - Yt) ** 2, axis=-1)))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-train", type=int, default=50000, help="images; with their mirrors n = 2 x this")
    ap.add_argument("--tile", type=int, default=10000)
    ap.add_argument("--ridge", type=float, default=0.046, help="NT's diag_reg (relative to the mean diagonal)")
    ap.add_argument("--pcg-rank", type=int, default=8000)
    ap.add_argument("--tol", type=float, default=1e-6, help="PCG residual and Lanczos tolerance")
    ap.add_argument("--steps", type=float, nargs="+", default=[15.0, 150.0])
    ap.add_argument("--store-dir", default="", help="a folder of an earlier run (kept): reuse its gram.zarr")
    ap.add_argument("--cov-points", type=int, default=8)
    ap.add_argument("--job-check", action="store_true", help="also run the job's fit + predict stages")
    ap.add_argument("--dir", default="/tmp")
    ap.add_argument("--keep", action="store_true", help="keep the store (else deleted at the end)")
    ap.add_argument("--out", default=os.path.join(HERE, "runs", "predict-100k", "predict_store.json"))
    args = ap.parse_args()

    import ntkscale as nt
    from ntkscale.data import load_dataset
    from ntkscale.job.config import load_job
    from ntkscale.job.model import build_arch
    from ntkscale.pipeline import encode_targets

    from distributed import Client

    from ntkscale.operator import StoredGram
    from ntkscale.runner import local_cluster

    reuse = bool(args.store_dir)
    work = args.store_dir or os.path.join(args.dir, f"predict-store-{2 * args.n_train}")
    if not reuse:
        os.makedirs(work, exist_ok=False)  # never reuse (or delete) a folder this run did not make
    store = os.path.join(work, "gram.zarr")
    common = {"data": {"n_train": args.n_train}, "forecast": {"enabled": False},
              "kernel": {"tile": args.tile, "store": store, "store_nngp": True},
              "solver": {"ridge": args.ridge, "relative_ridge": True, "method": "pcg", "tol": args.tol,
                         "preconditioner": "rpcholesky", "pcg_rank": args.pcg_rank}}
    rec: dict = {"n": 2 * args.n_train, "diag_reg": args.ridge, "tol": args.tol, "pcg_rank": args.pcg_rank}
    cluster = client = None
    try:
        job = os.path.join(work, "gram.toml")
        if not reuse:
            write_job("fashion-mnist-120k.toml", job,
                      {**common, "job": {"name": "gram", "out": os.path.join(work, "gram"), "stages": ["gram"]}})
            t0 = time.perf_counter()
            subprocess.run(cli() + [job], check=True, stdout=subprocess.DEVNULL)
            rec["gram_seconds"] = time.perf_counter() - t0
            print(f"gram (ntk + nngp, n = {rec['n']}): {rec['gram_seconds']:.1f} s", flush=True)
        cluster = local_cluster()
        client = Client(cluster)
        grams = {kind: StoredGram(store, kind, client=client) for kind in ("nngp", "ntk")}

        cfg = load_job(job)
        d = load_dataset(cfg.data, seed=cfg.job["seed"])
        classes = np.unique(d.y_train)
        Y, Yt = encode_targets(d.y_train, classes), encode_targets(d.y_test, classes)
        kernel_fn = build_arch(cfg.model).kernel_fn

        t0 = time.perf_counter()
        lr = nt.predict.max_learning_rate(grams["ntk"], y_train_size=Y.size)
        rec["max_learning_rate"] = {"value": lr, "seconds": time.perf_counter() - t0}
        print(f"max_learning_rate {lr:.4g} ({rec['max_learning_rate']['seconds']:.1f} s)", flush=True)

        fn = nt.predict.gradient_descent_mse_ensemble(
            kernel_fn, d.X_train, Y, learning_rate=lr, diag_reg=args.ridge, k_train_train=grams,
            tol=args.tol, pcg_rank=args.pcg_rank)
        calls = []
        t0 = time.perf_counter()
        mean_inf = np.asarray(fn(t=None, x_test=d.X_test, get="ntk"))
        calls.append({"t": None, "seconds": time.perf_counter() - t0, **_scores(mean_inf, Yt),
                      "info": [dict(i) for i in fn.info]})
        print(f"t=None: {calls[-1]}", flush=True)
        t0 = time.perf_counter()
        mean_t = np.asarray(fn(t=np.asarray(args.steps), x_test=d.X_test, get="ntk"))  # (T, m, C)
        secs = time.perf_counter() - t0
        for s, m in zip(args.steps, mean_t):
            calls.append({"t": s, **_scores(m, Yt)})
        calls[-1].update({"seconds_all_t": secs, "info": [dict(i) for i in fn.info]})
        print(f"t={args.steps}: {calls[-len(args.steps):]}", flush=True)
        rec["calls"] = calls

        m = args.cov_points
        t0 = time.perf_counter()
        g = fn(t=None, x_test=d.X_test[:m], get="ntk", compute_cov=True)
        cov = np.asarray(g.covariance)
        prior = np.diagonal(np.asarray(kernel_fn(d.X_test[:m], None, "nngp")))
        rec["covariance"] = {
            "m": m, "seconds": time.perf_counter() - t0, "info": [dict(i) for i in fn.info],
            "asymmetry": float(np.max(np.abs(cov - cov.T)) / np.max(np.abs(cov))),
            "min_eigenvalue_relative": float(np.linalg.eigvalsh((cov + cov.T) / 2)[0] / np.max(np.diag(cov))),
            "variance_over_prior": [float(v) for v in np.diag(cov) / prior],
            "mean_matches_t_none": float(np.max(np.abs(np.asarray(g.mean) - mean_inf[:m])))}
        print(f"covariance: {rec['covariance']}", flush=True)

        if args.job_check:  # the job's own fit + predict on the same store and ridge: a second path
            out = os.path.join(work, "fit")
            job2 = write_job("fashion-mnist-120k.toml", os.path.join(work, "fit.toml"),
                             {**common, "job": {"name": "fit", "out": out, "stages": ["fit", "predict"]}})
            t0 = time.perf_counter()
            subprocess.run(cli() + [job2], check=True, stdout=subprocess.DEVNULL)
            st = stage_metrics(out)
            rec["job_check"] = {"seconds": time.perf_counter() - t0,
                                "accuracy": st["predict"].get("test_accuracy"),
                                "test_mse": st["predict"].get("test_mse")}
            print(f"job fit+predict: {rec['job_check']}", flush=True)
        write_json(args.out, rec)
    finally:
        if client is not None:
            client.close()
            cluster.close()
        if not (args.keep or reuse):
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
