"""Empirical-NTK benchmark: Jacobian contraction vs NTK-vector products vs the infinite-width kernel.

Times, in one process on the same inputs (medians over ``--reps`` rounds, every measurement
once per round, interleaved; each function compiled untimed first):

* ``jacobian``   ``empirical_ntk(..., method="jacobian")``: row Jacobians, contracted leaf by leaf;
* ``ntvp``       ``empirical_ntk(..., method="ntvp")``: one VJP + one JVP per (row, output);
* ``stored``     ``build_gram(EmpiricalNTK(...), X, "memory://...", client="sync")`` with
                 ``--tile`` (the tiled path: each tile recomputes its rows' Jacobians);
* ``infinite``   the architecture's analytic ``kernel_fn(x, None, "ntk")`` (stax models only).

Reported per model and n as seconds per Gram entry (``seconds / n^2``) and as ratios against
``jacobian`` measured in the same round. Models (``--width``, d = 32 inputs):

* ``mlp1``   Dense(w) ReLU Dense(w) ReLU Dense(1), NTK parameterization (combinator language);
* ``mlp10``  the same with 10 outputs (``trace=True``: mean over the 10 logits);
* ``resmlp`` a plain-JAX dict model: tanh residual blocks ``h + tanh(h W / sqrt(w))`` with
             3 outputs (no analytic kernel).

``--figures`` also runs the width sweep (ReLU MLP, 2 hidden layers, widths 32-2048, 6 seeds)
and the lazy/rich NTK evolution (1 hidden layer, widths 16-2048, 200 GD steps) and writes
``width_sweep.png``, ``evolution.png`` and their numbers.

Usage::

    python benchmarks/bench_empirical.py                    # n = 32, 128; width 256
    python benchmarks/bench_empirical.py --n 64 256 --width 512 --reps 3 --figures

Writes ``benchmarks/runs/empirical/bench.json`` (and ``figures.json`` with ``--figures``).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time
from pathlib import Path

import numpy as np

import jax
import jax.numpy as jnp

from ntkscale import stax
from ntkscale.empirical import EmpiricalNTK, empirical_ntk, mlp, ntk_evolution, width_sweep
from ntkscale.tiling import build_gram

OUT = Path(__file__).resolve().parent / "runs" / "empirical"
D = 32


def _stax_mlp(width: int, out: int):
    s2 = math.sqrt(2.0)
    net = stax.serial(stax.Dense(width, W_std=s2, b_std=0.1), stax.Relu(),
                      stax.Dense(width, W_std=s2, b_std=0.1), stax.Relu(),
                      stax.Dense(out, W_std=s2, b_std=0.1))
    init_fn, apply_fn, kernel_fn = net
    _, params = init_fn(jax.random.PRNGKey(0), (1, D))
    return apply_fn, params, kernel_fn


def _resmlp(width: int, blocks: int = 2, out: int = 3):
    keys = jax.random.split(jax.random.PRNGKey(1), blocks + 2)
    params = {"in": jax.random.normal(keys[0], (D, width)),
              "blocks": [jax.random.normal(k, (width, width)) for k in keys[1:-1]],
              "out": jax.random.normal(keys[-1], (width, out))}

    def apply_fn(p, x):
        h = x @ p["in"] / math.sqrt(D)
        for W in p["blocks"]:
            h = h + jnp.tanh(h @ W / math.sqrt(width))
        return h @ p["out"] / math.sqrt(width)

    return apply_fn, params, None


def _time(fn, reps: int) -> float:
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def bench(ns: list[int], width: int, reps: int, tile: int) -> dict:
    models = {"mlp1": _stax_mlp(width, 1), "mlp10": _stax_mlp(width, 10), "resmlp": _resmlp(width)}
    rows = []
    for name, (apply_fn, params, kernel_fn) in models.items():
        n_params = sum(int(np.prod(l.shape)) for l in jax.tree_util.tree_leaves(params))
        kern = EmpiricalNTK(apply_fn, params, method="jacobian", name=name)
        for n in ns:
            x = np.random.default_rng(n).standard_normal((n, D)).astype(np.float32)
            calls = {
                "jacobian": lambda: np.asarray(empirical_ntk(apply_fn, params, x, method="jacobian")),
                "ntvp": lambda: np.asarray(empirical_ntk(apply_fn, params, x, method="ntvp")),
                "stored": lambda: build_gram(kern, x, f"memory://bench-{name}-{n}", tile=tile,
                                             dtype=np.float32, compute_dtype=np.float32,
                                             client="sync", overwrite=True, progress=False),
            }
            if kernel_fn is not None:
                calls["infinite"] = lambda: kernel_fn(x.astype(np.float64), None, "ntk")
            first = {k: _time(f, 1) for k, f in calls.items()}  # compile / warm up
            a = np.asarray(calls["jacobian"]())
            agree = float(np.abs(np.asarray(calls["ntvp"]()) - a).max() / np.abs(a).max())
            times = {k: [] for k in calls}
            for _ in range(reps):  # interleaved rounds
                for k, f in calls.items():
                    times[k].append(_time(f, 1))
            med = {k: statistics.median(v) for k, v in times.items()}
            row = {"model": name, "n": n, "params": n_params, "first_call_s": first,
                   "seconds": med, "per_entry_us": {k: 1e6 * v / n ** 2 for k, v in med.items()},
                   "vs_jacobian": {k: v / med["jacobian"] for k, v in med.items()},
                   "ntvp_vs_jacobian_max_rel_diff": agree}
            rows.append(row)
            print(f"{name:7s} n={n:5d} P={n_params:8d}  " + "  ".join(
                f"{k} {1e6 * v / n ** 2:8.2f} us/entry ({v / med['jacobian']:5.2f}x)" for k, v in med.items())
                + f"  |ntvp-jac|/max {agree:.1e}", flush=True)
    return {"rows": rows, "width": width, "d": D, "tile": tile, "reps": reps,
            "jax": jax.__version__, "backend": jax.default_backend(),
            "device": str(jax.devices()[0]), "machine": platform.platform()}


def figures() -> dict:
    from ntkscale.plots._base import new_figure

    x = np.random.default_rng(0).standard_normal((16, 8))
    t0 = time.perf_counter()
    sweep = width_sweep(mlp(2, "relu"), [32, 64, 128, 256, 512, 1024, 2048], x, seeds=range(6))
    print(f"width sweep: slope {sweep.slope:.3f}, mean distance {np.round(sweep.mean, 4)} "
          f"({time.perf_counter() - t0:.0f} s)", flush=True)
    fig, (ax,) = new_figure(1)
    ax.errorbar(sweep.widths, sweep.mean, yerr=sweep.std, fmt="o", label="empirical NTK, 6 seeds")
    w = sweep.widths.astype(float)
    ax.plot(w, np.exp(sweep.intercept) * w ** sweep.slope, "-", label=f"fit: slope {sweep.slope:.2f}")
    ax.plot(w, sweep.mean[0] * (w / w[0]) ** -0.5, ":", color="gray", label="slope -1/2")
    ax.set(xscale="log", yscale="log", xlabel="width",
           ylabel=r"$\|\Theta_w-\Theta_\infty\|_F/\|\Theta_\infty\|_F$", title="ReLU MLP, 2 hidden layers")
    ax.legend()
    fig.savefig(OUT / "width_sweep.png", dpi=120)

    rng = np.random.default_rng(0)
    X = rng.standard_normal((48, 6))
    X *= np.sqrt(6) / np.linalg.norm(X, axis=1, keepdims=True)
    y = (np.sin(2 * X[:, 0]) + 2 * X[:, 1] * X[:, 2])[:, None]
    xtr, xte, ytr, yte = X[:32], X[32:], y[:32], y[32:]
    evo = {}
    fig, axes = new_figure(3, width=4.2)
    for width in (16, 64, 256, 1024, 2048):
        init_fn, apply_fn, _ = mlp(1, "relu")(width)
        _, params = init_fn(jax.random.PRNGKey(0), xtr.shape)
        lam = np.linalg.eigvalsh(np.asarray(empirical_ntk(apply_fn, params, xtr)))[-1]
        ev = ntk_evolution(apply_fn, params, xtr, ytr, xte, yte, lr=ytr.size / lam, steps=300,
                           checkpoints=12)
        evo[width] = {"steps": ev.steps.tolist(), "kernel_distance": ev.kernel_distance.tolist(),
                      "alignment": ev.alignment.tolist(), "train_loss": ev.train_loss.tolist(),
                      "test_loss": ev.test_loss.tolist(), "top_eigenvalues": ev.top_eigenvalues.tolist()}
        print(f"evolution width {width:5d}: kernel distance {ev.kernel_distance[-1]:.4f}, alignment "
              f"{ev.alignment[0]:.3f} -> {ev.alignment[-1]:.3f}, train loss {ev.train_loss[-1]:.2e}, "
              f"test loss {ev.test_loss[-1]:.3f}", flush=True)
        s = ev.steps[1:]
        axes[0].plot(s, ev.kernel_distance[1:], "o-", ms=3)
        axes[1].plot(ev.steps, ev.alignment, "o-", ms=3)
        axes[2].plot(s, ev.train_loss[1:], "o-", ms=3, label=f"width {width}")
    axes[0].set(xscale="log", yscale="log", xlabel="GD step", ylabel="kernel distance from init")
    axes[1].set(xscale="symlog", xlabel="GD step", ylabel="kernel-target alignment")
    axes[2].set(xscale="log", yscale="log", xlabel="GD step", ylabel="train loss")
    axes[2].legend(loc="lower left", fontsize="small")
    fig.savefig(OUT / "evolution.png", dpi=120)
    return {"width_sweep": {"widths": sweep.widths.tolist(), "mean": sweep.mean.tolist(),
                            "std": sweep.std.tolist(), "slope": sweep.slope},
            "evolution": evo}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, nargs="+", default=[32, 128])
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--tile", type=int, default=64)
    ap.add_argument("--figures", action="store_true")
    ap.add_argument("--skip-bench", action="store_true")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    if not args.skip_bench:
        res = bench(args.n, args.width, args.reps, args.tile)
        (OUT / "bench.json").write_text(json.dumps(res, indent=1))
    if args.figures:
        (OUT / "figures.json").write_text(json.dumps(figures(), indent=1))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
