"""In-memory Cholesky above the order OpenBLAS's threaded ``potrf`` survives (issue 25).

``ntkscale._blas.potrf`` factors n > POTRF_THREADED_MAX (12 288) blocked, each LAPACK/BLAS call
threaded on blocks of at most that order. Its floor and its peer, measured in the same run,
rounds interleaved (each round: the candidate, then the one-thread LAPACK ``potrf`` the guard
used before):

* ``blocked``: ``_blas.potrf`` (2 BLAS threads);
* ``one-thread``: LAPACK ``dpotrf`` under ``threadpool_limits(1)`` (the old guard);
* ``threaded-lapack`` (only n <= --lapack-max, default 14 000: larger orders crash this VM):
  LAPACK ``dpotrf`` with 2 threads, the machine's floor for the factorization.

Also the relative residual ``‖UᵀU − A‖_F / ‖A‖_F`` of each factor. Medians and ranges over
--rounds; JSON to --out.

    python benchmarks/bench_potrf.py --n 14000 20000 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import numpy as np
from scipy.linalg.lapack import dpotrf
from threadpoolctl import threadpool_limits

from ntkscale import _blas


def _matrix(n: int) -> np.ndarray:
    """A depth-1 ReLU-like SPD Gram: exp kernel of 64-d Gaussian points + 1e-3 I, F-ordered."""
    r = np.random.default_rng(0)
    X = r.standard_normal((n, 64)) / 8
    sq = (X * X).sum(1)
    A = X @ X.T
    A *= 2.0
    A -= sq[:, None]
    A -= sq[None]
    np.exp(0.5 * A, out=A)
    A.flat[::n + 1] += 1e-3
    return np.asfortranarray(A)


def _time(fn, A0):
    A = np.array(A0, order="F")
    t = time.perf_counter()
    U, info = fn(A)
    dt = time.perf_counter() - t
    assert info == 0, info
    idx = np.random.default_rng(1).choice(A0.shape[0], 400, replace=False)  # residual on a sample of columns
    res = np.linalg.norm(U.T @ U[:, idx] - A0[:, idx]) / np.linalg.norm(A0[:, idx])
    return dt, float(res)


def _one_thread(A):
    with threadpool_limits(limits=1, user_api="blas"):
        return dpotrf(A, lower=0, clean=1, overwrite_a=1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, nargs="+", default=[14000, 20000])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--lapack-max", type=int, default=14000)
    ap.add_argument("--out", default="benchmarks/runs/potrf/potrf.json")
    a = ap.parse_args()
    rec = {"args": vars(a), "potrf_threaded_max": _blas.POTRF_THREADED_MAX, "sizes": {}}
    for n in a.n:
        A0 = _matrix(n)
        cands = {"blocked": lambda A: _blas.potrf(A), "one-thread": _one_thread}
        if n <= a.lapack_max:
            cands["threaded-lapack"] = lambda A: dpotrf(A, lower=0, clean=1, overwrite_a=1)
        runs = {k: [] for k in cands}
        for fn in cands.values():  # warm-up: BLAS threads, first-touch of the library code
            _time(fn, _matrix(1000))
        for _ in range(a.rounds):
            for k, fn in cands.items():
                runs[k].append(_time(fn, A0))
        flops = n ** 3 / 3
        row = {}
        for k, v in runs.items():
            ts = [t for t, _ in v]
            row[k] = {"median_s": statistics.median(ts), "min_s": min(ts), "max_s": max(ts),
                      "gflops": flops / statistics.median(ts) / 1e9, "residual": max(r for _, r in v)}
        row["blocked_over_one_thread"] = row["blocked"]["median_s"] / row["one-thread"]["median_s"]
        if "threaded-lapack" in row:
            row["blocked_over_threaded_lapack"] = row["blocked"]["median_s"] / row["threaded-lapack"]["median_s"]
        rec["sizes"][n] = row
        print(n, json.dumps({k: (round(v["median_s"], 2), round(v["min_s"], 2), round(v["max_s"], 2))
                             if isinstance(v, dict) else round(v, 3) for k, v in row.items()}), flush=True)
        del A0
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as fh:
        json.dump(rec, fh, indent=1)
    print("wrote", a.out)


if __name__ == "__main__":
    main()
