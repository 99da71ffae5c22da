"""Top-k eigenpairs: randomized_eigh (matvec passes only) vs LAPACK eigh (issue: eigensolver).

Fashion-MNIST (Debian package ``dataset-fashion-mnist``; synthetic sphere data otherwise),
first n training images centered and scaled to norm √d, depth-3 ReLU NTK (W_std=√2,
b_std=0.1), float64 in memory. Measures, median over ``--reps``:

  * ``randomized_eigh(op, k)`` on the DenseGram (defaults: oversample k/2, 2 power steps,
    the Ritz/error pass; and a wider variant: oversample k, 3 power steps): seconds, passes,
    accuracy of the top k eigenvalues against LAPACK, whether its a-posteriori bounds
    hold, ε against λ_{k+1};
  * optionally (``--stored``) the same on a StoredGram (float32 tiles) read by a
    2-worker local cluster — one streaming pass per sketch/power step;
  * the peer: full ``scipy.linalg.eigh(K, driver='evd')`` (``--eigh-reps`` times), and
    ``scipy.linalg.eigh(K, subset_by_index=top k)`` (MRRR, ``driver='evr'``).

Prints the table with time ratios and writes JSON.

    python benchmarks/bench_eigen.py [--n 20000] [--k 500] [--reps 3] [--eigh-reps 1] [--stored]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

import numpy as np
import scipy.linalg as sla


def load(n: int, seed: int = 0) -> tuple[np.ndarray, str]:
    from ntkscale.data import load_fashion_mnist

    try:
        return load_fashion_mnist("train", n)[0], "fashion-mnist"
    except FileNotFoundError:
        X = np.random.default_rng(seed).standard_normal((n, 784))
        return X * np.sqrt(784) / np.linalg.norm(X, axis=1, keepdims=True), "synthetic sphere"


def arch():
    from ntkscale import stax

    layers = []
    for _ in range(3):
        layers += [stax.Dense(512, W_std=2**0.5, b_std=0.1), stax.Relu()]
    return stax.serial(*layers, stax.Dense(1, W_std=2**0.5, b_std=0.1))


def accuracy(r, w: np.ndarray) -> dict:
    """Errors of EigResult ``r`` against exact descending eigenvalues ``w`` (length >= k + 1)."""
    k = r.k
    rel = np.abs(w[:k] - r.evals) / w[:k]
    idx = [i for i in (0, 9, 99, k // 2 - 1, k - 1) if i < k]
    return {"rel_err_at": {str(i + 1): float(rel[i]) for i in idx}, "max_rel_err": float(rel.max()),
            "n_below_1e-3": int(np.sum(rel < 1e-3)), "n_below_1e-6": int(np.sum(rel < 1e-6)),
            "bounds_hold": bool(np.all(w[:k] - r.evals <= r.error_bounds)),
            "residual_bounds_hold": bool(np.all(np.abs(w[:k] - r.evals) <= r.residual_norms)),
            "eps": r.error_estimate, "eps_over_lambda_k1": float(r.error_estimate / w[k]),
            "max_rel_bound_top10": float(np.max(r.error_bounds[:10] / w[:10]))}


def timed(fn, reps: int, label: str = ""):
    times, out = [], None
    for _ in range(reps):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
        print(f"  {label}: {times[-1]:.1f} s", flush=True)
    return statistics.median(times), times, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--k", type=int, default=500)
    ap.add_argument("--reps", type=int, default=3, help="repetitions of randomized_eigh (median)")
    ap.add_argument("--eigh-reps", type=int, default=1, help="repetitions of the LAPACK peers")
    ap.add_argument("--power-iters", type=int, default=2)
    ap.add_argument("--oversample", type=int, default=None)
    ap.add_argument("--stored", action="store_true", help="also a StoredGram on a 2-worker cluster")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "eigen.json"))
    args = ap.parse_args()

    from ntkscale.operator import DenseGram
    from ntkscale.solvers.eigen import randomized_eigh

    n, k = args.n, args.k
    X, source = load(n)
    t = time.perf_counter()
    K = np.asarray(arch().kernel_fn(X, None, "ntk", dtype=np.float64))
    t_kernel = time.perf_counter() - t
    op = DenseGram(K)
    kw = dict(oversample=args.oversample, power_iters=args.power_iters)
    print(f"{source}: n={n}, k={k}, kernel {t_kernel:.1f} s, threads: {os.cpu_count()} cores")
    res: dict = {"n": n, "k": k, "source": source, "kernel_s": t_kernel, "power_iters": args.power_iters,
                 "oversample": args.oversample, "runs": {}}

    name = f"randomized_eigh (dense, q={args.power_iters})"
    runs = {name: timed(lambda: randomized_eigh(op, k, seed=0, **kw), args.reps, name)}
    acc_kw = dict(oversample=k, power_iters=args.power_iters + 1)  # wider sketch, one more step
    name = f"randomized_eigh (dense, p=k, q={args.power_iters + 1})"
    runs[name] = timed(lambda: randomized_eigh(op, k, seed=0, **acc_kw), args.reps, name)

    t_sub, times_sub, (w_sub, _) = timed(
        lambda: sla.eigh(K, subset_by_index=[n - k - 1, n - 1], driver="evr"), args.eigh_reps, "evr")
    w_top = w_sub[::-1]  # shape: (k + 1,), exact top k + 1
    # last use of K: with one rep LAPACK may overwrite it (saves an n² copy at n = 20000)
    t_full, times_full, (w_full, _) = timed(
        lambda: sla.eigh(K, driver="evd", overwrite_a=args.eigh_reps == 1), args.eigh_reps, "evd")
    K = op = _ = None  # free the n² arrays (K, eigenvectors) before the stored run
    w_full = w_full[::-1]
    res["agreement_evr_vs_evd"] = float(np.max(np.abs(w_top - w_full[:k + 1]) / w_full[:k + 1]))
    res["lambda_over_n"] = {str(i): float(w_full[i - 1] / n) for i in (1, 10, 100, k, k + 1)}
    del w_full

    if args.stored:
        from distributed import Client

        from ntkscale.runner import local_cluster
        from ntkscale.operator import StoredGram
        from ntkscale.tiling import build_gram

        with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp, \
                local_cluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cl, \
                Client(cl) as client:
            t = time.perf_counter()
            build_gram(arch(), X, os.path.join(tmp, "g"), get="ntk", client=client)
            res["store_build_s"] = time.perf_counter() - t
            print(f"  store built in {res['store_build_s']:.1f} s", flush=True)
            with StoredGram(os.path.join(tmp, "g"), client=client) as sop:
                name = "randomized_eigh (stored f32, 2 workers)"
                runs[name] = timed(lambda: randomized_eigh(sop, k, seed=0, **kw), args.reps, name)

    print(f"\n{'method':38s} {'median s':>9s} {'passes':>6s} {'vs evd':>7s} {'vs evr-k':>8s} "
          f"{'rel@1':>8s} {'rel@100':>8s} {'rel@k/2':>8s} {'rel@k':>8s} {'<1e-3':>6s} {'bounds':>6s} "
          f"{'eps/λk+1':>8s}")
    print(f"{'scipy eigh full (evd)':38s} {t_full:9.1f} {'-':>6s} {1.0:7.2f} {t_full / t_sub:8.2f}")
    print(f"{'scipy eigh top k+1 (evr subset)':38s} {t_sub:9.1f} {'-':>6s} {t_sub / t_full:7.2f} {1.0:8.2f}")
    res["eigh_full_evd"] = {"seconds": t_full, "times": times_full}
    res["eigh_subset_evr"] = {"seconds": t_sub, "times": times_sub}
    for name, (sec, times, r) in runs.items():
        acc = accuracy(r, w_top)
        e = acc["rel_err_at"]
        res["runs"][name] = {"seconds": sec, "times": times, "passes": r.passes,
                             "speedup_vs_evd": t_full / sec, "speedup_vs_evr_subset": t_sub / sec,
                             "sketch_columns": r.info.get("sketch_columns"), **acc}
        print(f"{name:38s} {sec:9.1f} {r.passes:6d} {sec / t_full:7.3f} {sec / t_sub:8.3f} "
              f"{e['1']:8.1e} {e.get('100', np.nan):8.1e} {e[str(k // 2)]:8.1e} {e[str(k)]:8.1e} "
              f"{acc['n_below_1e-3']:6d} {str(acc['bounds_hold']):>6s} {acc['eps_over_lambda_k1']:8.2f}")
    print("\n(vs evd / vs evr-k: time ratio to the LAPACK peer, < 1 is faster; rel@i: |λ_i − λ̂_i|/λ_i;"
          " bounds: 0 <= λ_i − λ̂_i <= error_bounds_i for all i <= k; the stored run's bounds are"
          " for the float32 store, compared here with float64 eigenvalues)")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(res, fh, indent=2, default=str)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
