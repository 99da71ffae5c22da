"""Ridgeless regression through the tiled path, against the float64 minimum-norm solution.

What a user gets at ridge 0 beyond memory: ``solve(StoredGram, Y, 0.0, solver='auto')`` picks the
out-of-core tiled Cholesky with a jitter retry (``n_dense=0`` forces that route at any n, the
switch ``auto`` uses when the float64 Gram does not fit in half the RAM). For each store dtype
(float64, float32) the Gram is built by ``build_gram`` into a Zarr store under ``--root``, solved
there, and compared with

* the interpolation residual ``||K64 alpha - Y|| / ||Y||`` against the float64 Gram,
* the float64 minimum-norm predictions (``--pinv``: eigh of K64, eigenvalues below ``rcond *
  lambda_max`` dropped, as ``numpy.linalg.pinv(K64, rcond, hermitian=True)``; only for small n),
* test accuracy / MSE on Fashion-MNIST's test split, and each other.

Injected structure (``--dup``, ``--near``, ``--bad``): exact duplicates with the same label,
near-duplicates at relative distance delta (``x + delta*|x|*g/|g|``) with the same label, exact
duplicates with another label (inconsistent). The duplicated rows replace the last rows of the
training set, so n stays as given.

Usage::

    python benchmarks/bench_ridgeless.py                         # n = 20000, the real 10k test split
    python benchmarks/bench_ridgeless.py --n 4000 --n-test 2000 --dup 0.02 \
        --near 1e-6 1e-4 1e-3 --pinv                             # the small-case proof

Writes ``benchmarks/runs/ridgeless-<n>[-tag].json`` and deletes its stores (``--keep`` keeps them).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # this checkout's ntkscale, not an installed one


def inject(X, y, dup, near, bad, seed=0):
    """Replace the last rows of (X, y) by copies of earlier rows; return X, y and the groups
    ``{name: (copy rows, source rows)}``."""
    rng = np.random.default_rng(seed)
    n = len(X)
    X, y = X.copy(), y.copy()
    plan = [("dup", 0.0, dup, False)] + [(f"near{d:g}", d, dup, False) for d in near] + [("bad", 0.0, bad, False)]
    k_all = [int(round(f * n)) for _, _, f, _ in plan]
    end, groups = n, {}
    src_pool = rng.permutation(n - sum(k_all))
    used = 0
    for (name, delta, _, _), k in zip(plan, k_all):
        if k == 0:
            continue
        src = np.sort(src_pool[used:used + k])
        used += k
        dst = np.arange(end - k, end)
        end -= k
        X[dst] = X[src]
        if delta > 0:
            g = rng.standard_normal(X[src].shape)
            X[dst] += delta * np.linalg.norm(X[src], axis=1, keepdims=True) * g / np.linalg.norm(g, axis=1, keepdims=True)
        y[dst] = (y[src] + 1) % 10 if name == "bad" else y[src]
        groups[name] = (dst, src)
    return X, y, groups


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--n-test", type=int, default=10000)
    p.add_argument("--tile", type=int, default=0, help="Gram tile (default n/5 rounded up to 8)")
    p.add_argument("--dtypes", nargs="+", default=["float64", "float32"])
    p.add_argument("--dup", type=float, default=0.0, help="fraction of rows made exact duplicates")
    p.add_argument("--near", type=float, nargs="*", default=[], help="relative distances of near-duplicates")
    p.add_argument("--bad", type=float, default=0.0, help="fraction of duplicates with another label")
    p.add_argument("--pinv", action="store_true", help="compare with the float64 min-norm (eigh) solution")
    p.add_argument("--rcond", type=float, nargs="+", default=[1e-12, 1e-10, 1e-8])
    p.add_argument("--root", default="/tmp/ridgeless-bench")
    p.add_argument("--tag", default="")
    p.add_argument("--keep", action="store_true")
    a = p.parse_args(argv)

    from ntkscale import stax
    from ntkscale.data.fashion_mnist import load_fashion_mnist
    from ntkscale.operator import StoredGram
    from ntkscale.pipeline import decode_classes, encode_classes
    from ntkscale.solvers import solve
    from ntkscale.tiling import build_gram

    t_all = time.perf_counter()
    X, y = load_fashion_mnist("train", a.n)
    Xt, yt = load_fashion_mnist("test", a.n_test)
    X, y, groups = inject(X, y, a.dup, a.near, a.bad)
    classes = np.arange(10)
    Y, Yt = encode_classes(y, classes), encode_classes(yt, classes)
    kw = dict(W_std=2 ** 0.5, b_std=0.1)  # jobs/fashion-mnist-120k.toml's depth-3 ReLU NTK
    arch = stax.serial(*[m for _ in range(3) for m in (stax.Dense(512, **kw), stax.Relu())], stax.Dense(1, **kw))
    tile = a.tile or -(-(-(-a.n // 5)) // 8) * 8
    os.makedirs(a.root, exist_ok=True)
    out = {"n": a.n, "n_test": a.n_test, "tile": tile, "inject": {"dup": a.dup, "near": a.near, "bad": a.bad},
           "groups": {k: len(v[0]) for k, v in groups.items()}, "machine": f"{os.cpu_count()} cores, shared (under load)",
           "fits": {}}
    alphas, K64 = {}, None
    for dt in a.dtypes:
        url = os.path.join(a.root, f"gram-{a.n}{a.tag}-{dt}")
        t0 = time.perf_counter()
        build_gram(arch, X, url, get="ntk", tile=tile, dtype=np.dtype(dt), client="sync", overwrite=True,
                   progress=False)
        t_build = time.perf_counter() - t0
        op = StoredGram(url, client="sync")
        import warnings

        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            res = solve(op, Y, 0.0, solver="auto", n_dense=0)
        info = {k: v for k, v in res.info.items() if isinstance(v, (int, float, str, bool, type(None)))}
        out["fits"][dt] = {"method": res.method, "build_seconds": t_build, "solve_seconds": res.seconds,
                           "residual_jittered_system": res.residual, "warnings": [str(x.message) for x in w], **info}
        alphas[dt] = res.x
        if dt == "float64" or K64 is None:
            K64 = np.asarray(op.to_numpy(), dtype=np.float64) if dt == "float64" else None
        if not a.keep:
            shutil.rmtree(url, ignore_errors=True)
            shutil.rmtree(res.info.get("factor_url") or "/nonexistent", ignore_errors=True)
        print(dt, json.dumps(out["fits"][dt], default=str), flush=True)
    if K64 is None:
        raise SystemExit("the float64 store is needed for the residuals (--dtypes float64 ...)")
    mean_diag = float(np.mean(np.diag(K64)))
    out["mean_diag"] = mean_diag
    if a.pinv:
        t0 = time.perf_counter()
        wv, V = np.linalg.eigh(K64)
        VtY = V.T @ Y
        out["eig"] = {"min": float(wv.min()), "max": float(wv.max()), "negative": int((wv < 0).sum()),
                      "smallest_10_relative": (np.sort(wv)[:10] / mean_diag).tolist()}
        # Smallest eigenvalue per injected group's size: one per pair; report the k-th smallest
        pos = np.sort(wv)
        n_inj = sum(len(v[0]) for v in groups.values())
        out["eig"]["first_clean_relative"] = float(pos[n_inj] / mean_diag) if n_inj < len(pos) else None
        for rc in a.rcond:
            keep = wv > rc * wv.max()
            alphas[f"pinv{rc:g}"] = V[:, keep] @ (VtY[keep] / wv[keep, None])
            out.setdefault("pinv", {})[f"{rc:g}"] = {"rank": int(keep.sum()), "cut": int((~keep).sum()),
                                                     "cutoff_relative": float(rc * wv.max() / mean_diag)}
        out["pinv_seconds"] = time.perf_counter() - t0
        del V
    # Train side: interpolation residual against the float64 Gram; fitted values on injected rows.
    names = list(alphas)
    A = np.hstack([alphas[k] for k in names])  # shape: (n, C * len(names))
    KA = K64 @ A
    C = Y.shape[1]
    t0 = time.perf_counter()
    from ntkscale.pipeline.cross import cross_products

    P = cross_products(arch, Xt, {"ntk": A}, X_train=X)["ntk"]  # shape: (m, C * len(names))
    out["predict_seconds"] = time.perf_counter() - t0
    ref = f"pinv{a.rcond[0]:g}" if a.pinv else "float64"
    Pref = P[:, names.index(ref) * C:(names.index(ref) + 1) * C]
    out["reference"] = ref
    out["solutions"] = {}
    for i, k in enumerate(names):
        a_k, Ka, Pk = A[:, i * C:(i + 1) * C], KA[:, i * C:(i + 1) * C], P[:, i * C:(i + 1) * C]
        row = {"interp_residual_K64": float(np.linalg.norm(Ka - Y) / np.linalg.norm(Y)),
               "alpha_norm": float(np.linalg.norm(a_k)),
               "pred_rel_diff_vs_ref": float(np.linalg.norm(Pk - Pref) / np.linalg.norm(Pref)),
               "pred_max_abs_diff_vs_ref": float(np.max(np.abs(Pk - Pref))),
               "test_accuracy": float(np.mean(decode_classes(Pk, classes) == yt)),
               "test_mse": float(np.mean(np.sum((Pk - Yt) ** 2, axis=1)))}
        for g, (dst, src) in groups.items():  # fitted values at the copies vs at their sources
            row[f"fit_{g}_copy_minus_source"] = float(np.max(np.abs(Ka[dst] - Ka[src])))
            if g == "bad":  # min-norm: both copies get the average of their two labels
                avg = 0.5 * (Y[dst] + Y[src])
                row["fit_bad_max_dev_from_average"] = float(max(np.max(np.abs(Ka[dst] - avg)),
                                                                np.max(np.abs(Ka[src] - avg))))
        out["solutions"][k] = row
        print(k, json.dumps(row), flush=True)
    if "float32" in alphas and "float64" in alphas:
        i32, i64 = names.index("float32"), names.index("float64")
        P32, P64 = P[:, i32 * C:(i32 + 1) * C], P[:, i64 * C:(i64 + 1) * C]
        out["f32_vs_f64_pred_rel_diff"] = float(np.linalg.norm(P32 - P64) / np.linalg.norm(P64))
        out["f32_vs_f64_label_agreement"] = float(np.mean(decode_classes(P32, classes) == decode_classes(P64, classes)))
    out["total_seconds"] = time.perf_counter() - t_all
    os.makedirs(os.path.join(HERE, "runs"), exist_ok=True)
    path = os.path.join(HERE, "runs", f"ridgeless-{a.n}{a.tag}.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1, default=str)
    print("wrote", path, f"({out['total_seconds']:.0f} s)")
    if not a.keep:
        shutil.rmtree(a.root, ignore_errors=True) if not os.listdir(a.root) else None
    return out


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
