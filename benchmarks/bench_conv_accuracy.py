"""Accuracy of FC, CNTK and pooled (Myrtle-5) NTKs on the same small Fashion-MNIST split.

Pooled kernels cost ~(H W)^2 per entry (``bench_conv.py``), so this compares the three kernels
where the pooled one is affordable on 2 cores: images block-averaged to ``--size`` pixels (14x14
by default), ``--n-train`` training and ``--n-test`` test images (the first of each split after a
seeded shuffle), kernels computed in-process (``kernel_fn``, the fused CPU kernels), kernel
ridge regression on one-hot targets with the ridge chosen by closed-form leave-one-out over a
grid relative to the mean diagonal. Prints a table and writes JSON.

Usage::

    python benchmarks/bench_conv_accuracy.py                       # 14x14, n = 600 / 500
    python benchmarks/bench_conv_accuracy.py --size 28 --n-train 200 --n-test 200

Writes ``benchmarks/results/conv_accuracy.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import scipy.linalg as sla

from ntkscale import stax
from ntkscale.data.fashion_mnist import load_fashion_mnist
from ntkscale.kernels import cntk, myrtle

HERE = Path(__file__).resolve().parent


def _images(split: str, n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    x, y = load_fashion_mnist(split)[:2]
    idx = np.random.default_rng(seed).permutation(len(x))[:n]
    x = x[idx].astype(np.float64).reshape(n, 28, 28)
    if size != 28:
        if 28 % size:
            raise SystemExit(f"--size must divide 28, got {size}")
        f = 28 // size
        x = x.reshape(n, size, f, size, f).mean(axis=(2, 4))
    return x.reshape(n, -1), np.asarray(y)[idx]


def _loo_ridge(K: np.ndarray, Y: np.ndarray, grid: np.ndarray) -> tuple[float, list[float]]:
    """Ridge (absolute) minimising the closed-form leave-one-out squared error."""
    w, V = np.linalg.eigh(K)
    VY = V.T @ Y
    errs = []
    for lam in grid:
        h = 1.0 / (w + lam)
        alpha = V @ (h[:, None] * VY)
        diag = (V * V) @ h  # diag((K + lam I)^-1)
        errs.append(float(np.mean((alpha / diag[:, None]) ** 2)))
    return float(grid[int(np.argmin(errs))]), errs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=14)
    ap.add_argument("--n-train", type=int, default=600)
    ap.add_argument("--n-test", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(HERE / "results" / "conv_accuracy.json"))
    args = ap.parse_args()

    xtr, ytr = _images("train", args.n_train, args.size, args.seed)
    xte, yte = _images("test", args.n_test, args.size, args.seed)
    mean = xtr.mean(axis=0)
    d = xtr.shape[1]

    def sphere(x: np.ndarray) -> np.ndarray:  # centred by the training mean, norm sqrt(d)
        x = x - mean
        return x * np.sqrt(d) / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    xtr, xte = sphere(xtr), sphere(xte)
    classes = np.unique(ytr)
    Y = (ytr[:, None] == classes[None, :]).astype(np.float64) - 1.0 / classes.size
    shape = (args.size, args.size, 1)
    w, b = 2 ** 0.5, 0.1
    archs = {
        "fc_depth3": stax.serial(*[layer for _ in range(3) for layer in
                                   (stax.Dense(512, W_std=w, b_std=b), stax.Relu())], stax.Dense(1, W_std=w, b_std=b)),
        "cntk_depth2": cntk(shape, 2, W_std=w, b_std=b),
        "myrtle5": myrtle(shape, 5, W_std=w, b_std=b),
    }
    rows = {}
    print(f"Fashion-MNIST {args.size}x{args.size}, n_train {args.n_train}, n_test {args.n_test}, seed {args.seed}")
    print(f"{'kernel':14s} {'test acc':>9s} {'ridge/diag':>11s} {'seconds':>9s}")
    for name, arch in archs.items():
        t0 = time.perf_counter()
        K = arch.kernel_fn(xtr, None, "ntk")
        Ks = arch.kernel_fn(xte, xtr, "ntk")
        secs = time.perf_counter() - t0
        scale = float(np.mean(np.diag(K)))
        grid = scale * np.logspace(-6, 1, 15)
        lam, errs = _loo_ridge(K, Y, grid)
        alpha = sla.cho_solve(sla.cho_factor(K + lam * np.eye(len(K))), Y)
        acc = float(np.mean(classes[np.argmax(Ks @ alpha, axis=1)] == yte))
        rows[name] = {"test_accuracy": acc, "ridge_relative": lam / scale, "kernel_seconds": secs,
                      "loo_errors": errs}
        print(f"{name:14s} {acc:9.4f} {lam / scale:11.2e} {secs:9.1f}")
    out = {"size": args.size, "n_train": args.n_train, "n_test": args.n_test, "seed": args.seed,
           "results": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
