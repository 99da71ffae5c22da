"""Sample the summed resident memory of a process tree (a job and its Dask workers).

    python benchmarks/watch_rss.py PID --out runs/JOB/rss.csv [--every 2]

Writes one CSV row per sample (seconds, total RSS, per-process RSS) and, when PID exits,
prints and appends the peak of the sum (what "peak RSS of all processes together" means:
the page cache, including memory-mapped store chunks not in use, is not counted; mapped
chunks a process is reading are, as its shared RSS).
"""

from __future__ import annotations

import argparse
import json
import time

import psutil


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("pid", type=int)
    ap.add_argument("--out", required=True)
    ap.add_argument("--every", type=float, default=2.0)
    args = ap.parse_args()
    root = psutil.Process(args.pid)
    t0, peak, peak_at, peak_procs = time.time(), 0, 0.0, {}
    with open(args.out, "w") as fh:
        fh.write("seconds,total_rss_bytes,processes\n")
        while root.is_running() and root.status() != psutil.STATUS_ZOMBIE:
            procs = {}
            for p in [root] + root.children(recursive=True):
                try:
                    procs[f"{p.pid}:{p.name()}"] = p.memory_info().rss
                except psutil.Error:
                    pass
            total = sum(procs.values())
            t = time.time() - t0
            fh.write(f"{t:.1f},{total},{json.dumps(procs).replace(',', ';')}\n")
            fh.flush()
            if total > peak:
                peak, peak_at, peak_procs = total, t, procs
            time.sleep(args.every)
    summary = {"peak_total_rss_bytes": peak, "peak_at_seconds": peak_at, "peak_processes": peak_procs}
    with open(args.out + ".peak.json", "w") as fh:
        json.dump(summary, fh, indent=2)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
