"""Passes over a stored Gram against their floors (issue 12: passes at the disk floor).

One pass = ``StoredGram.matvec(V)`` with V of shape (n, k): every stored tile read once and
multiplied twice (symmetric store). Measured on 2 single-threaded workers, round by round
(each round runs every variant once, so all see the same machine state), medians:

  * cold pass: the store's chunk files dropped from the page cache (``posix_fadvise
    DONTNEED``) before the pass, against the **read floor**: the same chunk files read
    cold by 2 threads (the workers' concurrency) into reused buffers, dropped first too;
  * warm pass: after a pass that left the store in the page cache, against the **GEMV
    floor**: the same tile products on in-memory tiles, in the same worker processes
    (each task reads a tile untimed, then times only its products);
  * variants (the levers): ``legacy`` (zarr read, CRC, float64 copy of the tile, two
    GEMVs: the path before the fused pass), and for each ``--io`` mode (``mapped``: chunks
    memory-mapped with kernel read-ahead hints; ``direct``: ``O_DIRECT`` reads into reused
    aligned buffers; ``buffered``: plain reads into reused buffers) the fused products
    (CRC, banded float64 products, no tile copy) with and without the read-ahead thread.

    python benchmarks/bench_pass.py [--n 16384] [--k 10] [--reps 3]
    python benchmarks/bench_pass.py --store runs/fmnist-120k/gram.zarr --reps 1   # an existing store

Writes ``benchmarks/results/pass.json``. Run alone on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from typing import Any

import numpy as np


def chunk_files(store_path: str, kind: str) -> list[str]:
    root = os.path.join(store_path, kind, "c")
    return sorted(os.path.join(dp, f) for dp, _, fs in os.walk(root) for f in fs)


def drop_cache(files: list[str]) -> None:
    os.sync()
    for f in files:
        fd = os.open(f, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def read_floor(files: list[str], threads: int = 2, cold: bool = True) -> float:
    """Seconds to read ``files`` with ``threads`` readers: cold, page cache dropped first and
    O_DIRECT reads, as passes over a store larger than RAM read (plain reads after a drop cost a
    core in page-cache copies on the 2-core VM: ~1.0 GB/s against 1.6-1.8 GB/s direct, which made
    this floor too low by that much before); warm, plain reads from the page cache."""
    from ntkscale.plan._measure import read_files

    if cold:
        drop_cache(files)
    return read_files(files, threads, direct=cold)


def legacy_task(url: str, build_id: str, kind: str, tiles: list, V: np.ndarray) -> dict:
    """The pass before the fused path: zarr indexing read, whole-tile float64 copy, 2 GEMVs."""
    from ntkscale.tiling.tasks import open_cached

    store = open_cached(url, build_id, "r")
    out: dict = {}
    for i, j in tiles:
        rows, cols = store.tile_bounds(i, j)
        K = store.read(kind, rows, cols).astype(np.float64, copy=False)
        out[i] = out.get(i, 0) + K @ V[cols]
        if store.symmetric and i != j:
            out[j] = out.get(j, 0) + K.T @ V[rows]
    return out


def gemv_floor_task(url: str, build_id: str, kind: str, tiles: list, V: np.ndarray) -> float:
    """Seconds of the fused tile products alone, on tiles already in memory."""
    from ntkscale.storage import chunks
    from ntkscale.tiling.gemv import band_buffer, tile_products
    from ntkscale.tiling.tasks import open_cached

    store = open_cached(url, build_id, "r")
    T, dtype = store.tile, store.raw_dtype(kind)
    flat, _ = chunks.tile_buffer(T, dtype)
    scratch, k, acc, spent = band_buffer(T), V.shape[1], {}, 0.0
    for i, j in tiles:
        full = store.read_tile_into(kind, i, j, flat)  # untimed
        rows, cols = store.tile_bounds(i, j)
        K = full[: rows.stop - rows.start, : cols.stop - cols.start]
        oi = acc.setdefault(i, np.zeros((K.shape[0], k), order="F"))
        oj = acc.setdefault(j, np.zeros((K.shape[1], k), order="F"))
        t = time.perf_counter()
        if i != j:
            tile_products(K, V[cols], oi, V[rows], oj, scratch)
        else:
            tile_products(K, V[cols], oi, scratch=scratch)
        spent += time.perf_counter() - t
    return spent


def run_groups(op: Any, fn: Any, V: np.ndarray) -> list:
    from ntkscale.tiling.executor import run_tasks

    Vs = op.runner.client.scatter(V, broadcast=True, hash=False)
    groups = op._task_tiles()
    tok = os.urandom(4).hex()
    return run_tasks(op.runner, fn, [(op.url, op.store.meta["build_id"], op.kind, g, Vs) for g in groups],
                     keys=[f"bench-{fn.__name__}-{tok}-{q}" for q in range(len(groups))])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=16384)
    ap.add_argument("--d", type=int, default=784)
    ap.add_argument("--k", type=int, default=10, help="columns of V (PCG: outputs)")
    ap.add_argument("--tile", type=int, default=None)
    ap.add_argument("--store", default=None, help="an existing store (skips the build)")
    ap.add_argument("--kind", default="ntk")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--no-legacy", action="store_true", help="skip the legacy variant (slow on big stores)")
    ap.add_argument("--no-warm", action="store_true", help="skip the page-cache regime (store > RAM)")
    ap.add_argument("--io", nargs="+", default=["mapped", "direct"], choices=["mapped", "direct", "buffered"],
                    help="chunk read modes to compare (StoredGram io=)")
    ap.add_argument("--no-plain", action="store_true", help="only the read-ahead variants")
    ap.add_argument("--dir", default=tempfile.gettempdir())
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "pass.json"))
    args = ap.parse_args()

    from distributed import Client

    from ntkscale.runner import local_cluster
    from ntkscale.operator import StoredGram

    work = None
    res: dict = {"k": args.k, "reps": args.reps}
    with local_cluster(dashboard_address=None) as cl, Client(cl) as client:
        try:
            if args.store is None:
                from ntkscale import stax
                from ntkscale.tiling import build_gram

                work = tempfile.mkdtemp(dir=args.dir, prefix="ntkscale-pass-")
                path = os.path.join(work, "g.zarr")
                X = np.random.default_rng(0).standard_normal((args.n, args.d))
                arch = stax.serial(stax.Dense(1, W_std=2 ** 0.5, b_std=0.1), stax.Relu(),
                                   stax.Dense(1, W_std=2 ** 0.5, b_std=0.1))
                build_gram(arch, X, path, get=args.kind, tile=args.tile, client=client)
            else:
                path = args.store
            files = chunk_files(path, args.kind)
            nbytes = sum(os.path.getsize(f) for f in files)
            ops = {f"{io}+readahead": StoredGram(path, args.kind, client=client, io=io) for io in args.io}
            ops.update({f"{io}": StoredGram(path, args.kind, client=client, io=io, readahead=False)
                        for io in args.io if not args.no_plain})
            op = next(iter(ops.values()))
            n = op.shape[0]
            res.update(n=n, tile=op.store.tile, tiles=len(files), bytes=nbytes, store=path,
                       store_dtype=str(op.dtype), workers=len(client.scheduler_info()["workers"]))
            V = np.random.default_rng(1).standard_normal((n, args.k))
            ref = op.matvec(V)
            if not args.no_legacy:  # the levers must not change the result
                parts = run_groups(op, legacy_task, V)
                old = np.zeros_like(ref)
                T = op.store.tile
                for part in parts:
                    for b, val in part.items():
                        old[b * T: b * T + val.shape[0]] += val
                res["legacy_vs_fused_max_rel_diff"] = float(np.abs(old - ref).max() / np.abs(ref).max())
            variants = list(ops) + ([] if args.no_legacy else ["legacy"])
            times: dict = {f"cold {v}": [] for v in variants}
            times["cold read floor"] = []
            if not args.no_warm:
                times.update({f"warm {v}": [] for v in variants})
                times.update({"warm read floor": [], "gemv floor": []})

            def one(v: str) -> float:
                t = time.perf_counter()
                if v == "legacy":
                    run_groups(op, legacy_task, V)
                else:
                    ops[v].matvec(V)
                return time.perf_counter() - t

            for r in range(args.reps):
                times["cold read floor"].append(read_floor(files, res["workers"]))
                for v in variants:
                    drop_cache(files)
                    times[f"cold {v}"].append(one(v))
                if not args.no_warm:
                    one(variants[0])  # fill the page cache
                    times["warm read floor"].append(read_floor(files, res["workers"], cold=False))
                    for v in variants:
                        times[f"warm {v}"].append(one(v))
                    spent = run_groups(op, gemv_floor_task, V)
                    times["gemv floor"].append(sum(spent) / res["workers"])
                print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()), flush=True)
        finally:
            for o in locals().get("ops", {}).values():
                o.close()
            if work:
                shutil.rmtree(work, ignore_errors=True)

    med = {k: statistics.median(v) for k, v in times.items()}
    res["seconds"] = med
    res["all"] = times
    res["ratios"] = {f"cold {v} / cold read floor": med[f"cold {v}"] / med["cold read floor"] for v in variants}
    if not args.no_warm:
        res["ratios"].update({f"warm {v} / gemv floor": med[f"warm {v}"] / med["gemv floor"]
                              for v in variants})
    print(f"\nn={res['n']} tile={res['tile']} tiles={res['tiles']} {nbytes / 2**30:.2f} GiB "
          f"({res['store_dtype']}), k={args.k}, {res['workers']} workers; medians of {args.reps}")
    for k, v in med.items():
        rate = f"{nbytes / v / 2**30:6.2f} GiB/s" if "gemv" not in k else ""
        print(f"  {k:28s} {v:8.2f} s  {rate}")
    for k, v in res["ratios"].items():
        print(f"  {k:45s} {v:6.2f} x")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(res, fh, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
