"""Cost per Gram entry of image kernels (issue 14) against the fully connected NTK.

Times, in one process, one thread (``NUMBA_NUM_THREADS=1``, BLAS pinned: what one Dask worker
runs), interleaved round by round, medians over ``--reps`` rounds, float64 compute:

* ``fc``            depth-3 ReLU NTK on the flattened images (fused numba chain: one GEMM + ~4 ns
                    per entry and layer) — the reference every ratio is taken against;
* ``cntk_fused``    CNTK without pooling, ``cntk(image, depth)``: Conv 3x3 SAME + ReLU per layer,
                    Flatten, Dense — the numba conv chain (same-position covariances, ~H W per entry);
* ``cntk_generic``  the same kernel by the array recursion (what CuPy/JAX run; here NumPy);
* ``myrtle``        Myrtle-5 (conv stages with 2x2 average pooling, global average pooling): all
                    pixel-pair covariances, ~(H W)^2 per entry, at several image sizes
                    (``--myrtle-sizes``): the fused numba pixel-pair kernel on 16x16 or 32x32
                    pairs, and (``_generic``) the array recursion on a few pairs.

For each kernel it also prints the largest n whose symmetric Gram (n^2 / 2 entries) takes at
most one hour on ``--workers`` single-threaded workers at the measured rate: the practical n on
this machine.

Usage::

    NUMBA_NUM_THREADS=1 OMP_NUM_THREADS=1 python benchmarks/bench_conv.py
    python benchmarks/bench_conv.py --reps 3 --n 256 --myrtle-sizes 8 14 28

Writes ``benchmarks/results/conv.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

os.environ.setdefault("NUMBA_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from ntkscale import stax  # noqa: E402
from ntkscale.kernels import cntk, diag_stats, kernel_tile, myrtle  # noqa: E402

HERE = Path(__file__).resolve().parent


def _images(n: int, h: int, seed: int = 0) -> np.ndarray:
    """Fashion-MNIST when installed (resized by block means for h < 28), else Gaussian."""
    try:
        from ntkscale.data.fashion_mnist import load_fashion_mnist
        x = load_fashion_mnist("train")[0][:n].astype(np.float64).reshape(n, 28, 28)
        src = "fashion-mnist"
    except Exception:  # noqa: BLE001 - the dataset is optional
        x = np.random.default_rng(seed).normal(size=(n, 28, 28))
        src = "gaussian"
    if h != 28:
        idx = (np.arange(h) * 28) // h
        x = x[:, idx][:, :, idx]
    x = x - x.mean(axis=0)
    x *= np.sqrt(h * h) / np.maximum(np.linalg.norm(x.reshape(n, -1), axis=1), 1e-12)[:, None, None]
    return x.reshape(n, h * h), src


def _timer(arch, x1, x2, path="auto"):
    s1 = diag_stats(arch, x1, path=path)
    s2 = diag_stats(arch, x2, path=path)

    def run() -> float:
        t0 = time.perf_counter()
        kernel_tile(arch, x1, x2, s1, s2, ("nngp", "ntk"), path=path)
        return time.perf_counter() - t0

    run()  # warm up (numba compile / caches)
    return run, x1.shape[0] * x2.shape[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=256, help="rows per side of the timed cross tile")
    ap.add_argument("--depth", type=int, default=2, help="conv layers of the CNTK")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--workers", type=int, default=2, help="workers for the practical-n estimate")
    ap.add_argument("--myrtle-sizes", type=int, nargs="*", default=[8, 14, 28])
    ap.add_argument("--out", default=str(HERE / "results" / "conv.json"))
    args = ap.parse_args()

    x, src = _images(2 * args.n, 28)
    x1, x2 = x[: args.n], x[args.n:]
    fc = stax.serial(*[layer for _ in range(3) for layer in
                       (stax.Dense(512, W_std=2 ** 0.5, b_std=0.1), stax.Relu())], stax.Dense(1))
    cn = cntk((28, 28, 1), args.depth, b_std=0.1)
    timers = {"fc": _timer(fc, x1, x2), "cntk_fused": _timer(cn, x1, x2),
              "cntk_generic": _timer(cn, x1[:64], x2[:64], path="generic")}
    for h in args.myrtle_sizes:
        # tiles of m x m pairs: the per-row variance maps (2m rows of the array recursion)
        # are a small share of m^2 pairs, as in real tiles
        m = 16 if h >= 20 else 32
        xm, _ = _images(2 * m, h)
        arch_m = myrtle((h, h, 1), 5, b_std=0.1)
        timers[f"myrtle5_{h}x{h}"] = _timer(arch_m, xm[:m], xm[m:])
        mg = 4 if h >= 20 else 8
        timers[f"myrtle5_{h}x{h}_generic"] = _timer(arch_m, xm[:mg], xm[m:m + mg], path="generic")
    times: dict[str, list[float]] = {k: [] for k in timers}
    for _ in range(args.reps):  # interleaved rounds
        for name, (run, _) in timers.items():
            times[name].append(run())
    rows = {}
    fc_entry = statistics.median(times["fc"]) / timers["fc"][1]
    print(f"data: {src}; tile {args.n}x{args.n} (fewer pairs for the slow kernels), "
          f"{args.reps} interleaved rounds, 1 thread")
    print(f"{'kernel':18s} {'us/entry':>12s} {'x fc':>10s} {'n in 1 h':>10s}")
    for name, (run, entries) in timers.items():
        per = statistics.median(times[name]) / entries
        n_hour = int(np.sqrt(2 * 3600 * args.workers / per))
        rows[name] = {"seconds_per_entry": per, "ratio_to_fc": per / fc_entry,
                      "n_practical_1h": n_hour, "entries_timed": entries,
                      "runs_s": times[name]}
        print(f"{name:18s} {per * 1e6:12.2f} {per / fc_entry:10.1f} {n_hour:10d}")
    out = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
           "data": src, "n": args.n, "depth": args.depth, "reps": args.reps,
           "workers": args.workers, "results": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
