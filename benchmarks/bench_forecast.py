"""Forecasts of the test error (issue 21), checked against real fits on Fashion-MNIST.

From a pool of n0 training images, two forecasts, each checked against kernel regressions fitted
at the larger sizes (exact, in memory) and measured on (a) the real 10 000-image test split and
(b) 5 000 held-out *training-split* images (the pool's own distribution):

1. ``full``: at every size n, the GCV/KARE risk of the full-n fit from the top-k eigenpairs of K_n
   (+ the tail model), before the fit (``ntkscale.spectral.forecast.full_n_forecast``), next to
   the exact GCV (all n pairs) and the measured errors.
2. ``extrapolate``: from the n0-image pool only, GCV of random sub-blocks at n0/8 ... n0 (mean ±
   sem over trials), a scaling law ``c + a p^-γ`` through them, forecast at 2, 4, 8 and 10 × n0.

Depth-3 ReLU NTK (W_std = sqrt 2, b_std = 0.1, as jobs/fashion-mnist-120k.toml), sphere
preprocessing, one-hot targets minus 1/10, float64, ridge ``--ridge`` × mean diagonal.

    python benchmarks/bench_forecast.py --n0 3000 --k 500 --ridge 0.046
    python benchmarks/bench_forecast.py --n0 15000 --factors 2,4 --extrapolate-only \
        --measured 30000:0.19,60000:0.17   # fits too large for memory, measured by jobs
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import scipy.linalg as sla

from ntkscale import stax
from ntkscale.data import load_fashion_mnist
from ntkscale.linop import as_operator
from ntkscale.solvers import randomized_eigh
from ntkscale.spectral.forecast import fit_scaling_law, full_n_forecast, spectrum_gcv


def _kernel_fn():
    layers = []
    for _ in range(3):
        layers += [stax.Dense(512, W_std=2 ** 0.5, b_std=0.1), stax.Relu()]
    return stax.serial(*layers, stax.Dense(1, W_std=2 ** 0.5, b_std=0.1))[2]


def _onehot(lab):
    return np.eye(10)[lab] - 0.1


def _mse(pred, Y):
    return float(np.mean(np.sum((pred - Y) ** 2, axis=1)))


def _data(n_max, n_heldout, seed):
    X, lab = load_fashion_mnist("train", n=n_max + n_heldout, seed=seed)
    perm = np.random.default_rng(seed).permutation(len(X))
    tr, ho = perm[:n_max], perm[n_max:]
    Xt, labt = load_fashion_mnist("test")
    return X[tr], lab[tr], X[ho], lab[ho], Xt, labt


def full_forecasts(kf, X, lab, Xh, labh, Xt, labt, sizes, k, rel):
    rows = []
    for n in sizes:
        t0 = time.perf_counter()
        K = np.asarray(kf(X[:n], None, "ntk"))
        Y = _onehot(lab[:n])
        lam = rel * float(np.trace(K)) / n
        er = randomized_eigh(as_operator(K), k, power_iters=2, seed=0)
        eta, v2 = er.evals / n, (er.evecs.T @ Y) ** 2 / n
        fc = full_n_forecast(eta, v2, float(np.trace(K)) / n, np.sum(Y * Y, 0) / n, n, lam)
        row = {"n": n, "k": k, "ridge_relative": rel, **fc.record()}
        if n <= 16000:  # exact GCV from all n pairs (the forecast's own oracle)
            s, V = np.linalg.eigh(K)
            z2 = ((V.T @ Y) ** 2).sum(1)
            del V
            w = lam / (np.clip(s, 0, None) + lam)
            row["gcv_exact"] = n * float(w * w @ z2) / float(w.sum()) ** 2
        c = sla.cho_factor(K + lam * np.eye(n), lower=True, overwrite_a=True, check_finite=False)
        del K
        alpha = sla.cho_solve(c, Y, check_finite=False)
        del c
        row["test_mse"] = _mse(np.asarray(kf(Xt, X[:n], "ntk")) @ alpha, _onehot(labt))
        ph = np.asarray(kf(Xh, X[:n], "ntk")) @ alpha
        row["heldout_train_mse"] = _mse(ph, _onehot(labh))
        row["seconds"] = time.perf_counter() - t0
        rows.append(row)
        print(json.dumps({k_: (round(v, 4) if isinstance(v, float) else v) for k_, v in row.items()
                          if k_ in ("n", "gcv", "gcv_band", "gcv_exact", "test_mse", "heldout_train_mse",
                                    "tail_share", "seconds")}), flush=True)
    return rows


def extrapolate_heldout(kf, X, lab, n0, rel, trials, factors):
    """The law through held-out errors of nested random sub-blocks (the last 20 % of each
    trial's permutation held out), at n0/8, n0/4, n0/2 and 0.8 n0."""
    from ntkscale.spectral import empirical_learning_curve

    K = np.asarray(kf(X[:n0], None, "ntk"))
    Y = _onehot(lab[:n0])
    lam = rel * float(np.trace(K)) / n0
    sizes = [n0 // 8, n0 // 4, n0 // 2, (4 * n0) // 5]
    cur = empirical_learning_curve(K, Y, sizes, ridge=lam, n_trials=trials, seed=1, cache_bytes=8e9)
    law = fit_scaling_law(cur.p, cur.mean, cur.sem)
    q = [f * n0 for f in factors]
    mid, lo, hi = law.predict(q)
    gam, gam_se = law.exponent
    out = {"n0": n0, "risk": "heldout", "p": cur.p.tolist(), "heldout": cur.mean.tolist(),
           "sem": cur.sem.tolist(), "params": law.params.tolist(), "exponent": gam,
           "exponent_se": gam_se, "forecast_p": q, "forecast": mid.tolist(), "low": lo.tolist(),
           "high": hi.tolist()}
    wrong = cur.misclassified  # the same law through the held-out error rate (1 - accuracy)
    w_mean, w_sem = wrong.mean(1), wrong.std(1, ddof=1) / np.sqrt(wrong.shape[1])
    law_w = fit_scaling_law(cur.p, w_mean, w_sem)
    wm, wl, wh = law_w.predict(q)
    out.update(error_rate=w_mean.tolist(), error_rate_sem=w_sem.tolist(),
               accuracy_forecast=(1 - wm).tolist(), accuracy_low=(1 - wh).tolist(),
               accuracy_high=(1 - wl).tolist(), error_rate_exponent=law_w.exponent[0])
    print(json.dumps({"p": out["p"], "heldout": np.round(cur.mean, 4).tolist(),
                      "sem": np.round(cur.sem, 4).tolist(), "error_rate": np.round(w_mean, 4).tolist()}),
          flush=True)
    print(json.dumps({"accuracy_forecast": dict(zip(q, np.round(1 - wm, 4).tolist()))}), flush=True)
    print(json.dumps({"exponent": round(gam, 3), "se": round(gam_se, 3),
                      "forecast": dict(zip(q, np.round(mid, 4).tolist()))}), flush=True)
    return out


def extrapolate(kf, X, lab, n0, rel, trials, factors):
    K = np.asarray(kf(X[:n0], None, "ntk"))
    Y = _onehot(lab[:n0])
    lam = rel * float(np.trace(K)) / n0
    rng = np.random.default_rng(1)
    subs = [n0 // 8, n0 // 4, n0 // 2]
    p, E, sem = [], [], []
    for m in subs:
        g = []
        for _ in range(trials):
            idx = np.sort(rng.choice(n0, m, replace=False))
            s, V = np.linalg.eigh(K[np.ix_(idx, idx)])
            g.append(spectrum_gcv(np.clip(s, 0, None)[::-1] / m, ((V.T @ Y[idx]) ** 2)[::-1] / m, lam, m))
        p.append(m), E.append(np.mean(g)), sem.append(np.std(g, ddof=1) / np.sqrt(trials))
    s, V = np.linalg.eigh(K)
    full = spectrum_gcv(np.clip(s, 0, None)[::-1] / n0, ((V.T @ Y) ** 2)[::-1] / n0, lam, n0)
    p.append(n0), E.append(full), sem.append(max(sem[-1] / np.sqrt(2), 1e-6))
    law = fit_scaling_law(p, E, sem)
    q = [f * n0 for f in factors]
    mid, lo, hi = law.predict(q)
    gam, gam_se = law.exponent
    out = {"n0": n0, "p": p, "gcv": E, "sem": sem, "params": law.params.tolist(), "exponent": gam,
           "exponent_se": gam_se, "forecast_p": q, "forecast": mid.tolist(), "low": lo.tolist(),
           "high": hi.tolist()}
    print(json.dumps({"exponent": round(gam, 3), "se": round(gam_se, 3),
                      "forecast": dict(zip(q, np.round(mid, 4).tolist()))}), flush=True)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n0", type=int, default=3000)
    ap.add_argument("--factors", default="2,4,8")
    ap.add_argument("--k", type=int, default=500)
    ap.add_argument("--ridge", type=float, default=0.046)
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--extrapolate-only", action="store_true",
                    help="only the extrapolation from the n0 pool (the larger fits measured elsewhere)")
    ap.add_argument("--risk", choices=("gcv", "heldout"), default="gcv",
                    help="the law's points: GCV of sub-blocks, or held-out errors of sub-block fits")
    ap.add_argument("--measured", default="", help="n:test_mse,... measured fits to check the extrapolation on")
    ap.add_argument("--measured-accuracy", default="", help="n:test_accuracy,... of the same fits")
    ap.add_argument("--out", default="benchmarks/runs/forecast.json")
    a = ap.parse_args()
    factors = [int(f) for f in a.factors.split(",")]
    sizes = [a.n0] + [f * a.n0 for f in factors]
    kf = _kernel_fn()
    X, lab, Xh, labh, Xt, labt = _data(a.n0 if a.extrapolate_only else max(sizes), 5000, a.seed)
    ext = (extrapolate_heldout if a.risk == "heldout" else extrapolate)(
        kf, X, lab, a.n0, a.ridge, a.trials, factors + [10])
    if a.measured:  # forecast / measured, and whether the measured point lies in the band
        meas = {int(k): float(v) for k, v in (x.split(":") for x in a.measured.split(","))}
        ext["check"] = []
        for q, mid, lo, hi in zip(ext["forecast_p"], ext["forecast"], ext["low"], ext["high"]):
            if q in meas:
                m = meas[q]
                ext["check"].append({"n": q, "forecast": mid, "band": [lo, hi], "measured": m,
                                     "ratio": mid / m, "inside": bool(min(lo, hi) <= m <= max(lo, hi))})
                print(json.dumps(ext["check"][-1]), flush=True)
    if a.measured_accuracy and "accuracy_forecast" in ext:
        meas = {int(k): float(v) for k, v in (x.split(":") for x in a.measured_accuracy.split(","))}
        ext["check_accuracy"] = []
        for q, mid, lo, hi in zip(ext["forecast_p"], ext["accuracy_forecast"], ext["accuracy_low"],
                                  ext["accuracy_high"]):
            if q in meas:
                m = meas[q]
                ext["check_accuracy"].append({"n": q, "forecast": mid, "band": [lo, hi], "measured": m,
                                              "error_rate_ratio": (1 - mid) / (1 - m),
                                              "inside": bool(lo <= m <= hi)})
                print(json.dumps(ext["check_accuracy"][-1]), flush=True)
    full = [] if a.extrapolate_only else full_forecasts(kf, X, lab, Xh, labh, Xt, labt, sizes, a.k, a.ridge)
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump({"args": vars(a), "extrapolate": ext, "full": full}, f, indent=1)
    print("wrote", a.out)


if __name__ == "__main__":
    main()
