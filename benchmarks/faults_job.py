"""Faults during the ridgeless job's tiled Cholesky, through the CLI a user runs (issue 25).

Runs the ridgeless flip job (`jobs/fashion-mnist-120k-ridgeless.toml`: Fashion-MNIST images and
their mirrors, depth-3 ReLU NTK stored float32, `method = "cholesky-f32"`, ridge 0, 'host'
placement on the local 2-worker cluster) at a smaller n, three times on one Gram store, each
with its own factor store:

  clean        `ntkscale run` undisturbed;
  worker-kill  the worker running the factor tasks gets SIGKILL once --kill-at factor tiles are
               on disk; the nanny restarts it and the factorization resumes by itself;
  client-kill  the `ntkscale run` process itself gets SIGKILL at the same point (its workers and
               scheduler die with it or are orphaned), then the same command is run again: it
               takes over the dead run's lock and resumes from the finished tiles.

Each faulty factor must equal the clean one chunk for chunk (SHA-256 of every stored chunk), and
the jobs' residuals, accuracies and test predictions must agree. Prints a table, writes JSON.

    python benchmarks/faults_job.py [--n-train 15000] [--tile 5000] [--kill-at 8] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
import time

import numpy as np

from _jobs import cli, stage_metrics, write_job, write_json

HERE = os.path.dirname(os.path.abspath(__file__))


def _chunks(factor: str) -> list[str]:
    return sorted(p for p in glob.glob(os.path.join(factor, "U", "c", "*", "*"))
                  if os.path.isfile(p) and not p.endswith(".partial"))  # (a write under way)


def _digest(factor: str) -> dict[str, str]:
    out = {}
    for p in _chunks(factor):
        with open(p, "rb") as fh:
            out[os.path.relpath(p, factor)] = hashlib.sha256(fh.read()).hexdigest()
    return out


def _children(pid: int) -> list[int]:
    """All descendants of ``pid`` (from /proc)."""
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            kids.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out += kids.get(p, [])
        todo += kids.get(p, [])
    return out


def _cpu_s(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            f = fh.read().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return -1.0


def _busiest_child(pid: int, window: float = 1.0) -> int:
    """The descendant using the most CPU over ``window`` s (the leader running the factor tasks)."""
    kids = _children(pid)
    before = {k: _cpu_s(k) for k in kids}
    time.sleep(window)
    return max(kids, key=lambda k: _cpu_s(k) - before[k])


def _run(cmd: list[str], log: str, factor: str, kill: str = "", kill_at: int = 0) -> dict:
    """Run the CLI; optionally SIGKILL (``kill`` = 'worker' or 'client') once ``kill_at``
    factor chunks exist. Returns timings and what was killed."""
    t0 = time.perf_counter()
    with open(log, "ab") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    rec: dict = {"cmd": " ".join(cmd), "log": log}
    family: list[int] = []
    while kill and proc.poll() is None:
        if len(_chunks(factor)) >= kill_at:
            victim = _busiest_child(proc.pid) if kill == "worker" else proc.pid
            family = _children(proc.pid)  # a killed client's workers: orphaned, or gone with it
            rec.update(killed=kill, killed_pid=victim, tiles_at_kill=len(_chunks(factor)),
                       killed_at_s=time.perf_counter() - t0)
            os.kill(victim, signal.SIGKILL)
            break
        time.sleep(0.1)
    rc = proc.wait()
    rec.update(rc=rc, seconds=time.perf_counter() - t0)
    if kill == "client":  # its workers: wait until none is left computing (or say which are)
        deadline = time.monotonic() + 120
        while _alive(family) and time.monotonic() < deadline:
            time.sleep(0.5)
        rec["orphans_left"] = _alive(family)
    return rec


def _alive(pids: list[int]) -> list[int]:
    """Those of ``pids`` still running (zombies count as gone)."""
    out = []
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as fh:
                if fh.read().rsplit(")", 1)[1].split()[0] != "Z":
                    out.append(p)
        except OSError:
            pass
    return out


def _metrics(out: str) -> dict:
    m = stage_metrics(out)
    fit, pred = m.get("fit", {}), m.get("predict", {})
    return {"residual": fit.get("relative_residual"), "jitter": fit.get("jitter"),
            "test_accuracy": pred.get("test_accuracy"), "test_mse": pred.get("test_mse"),
            "fit_seconds": fit.get("solve_seconds")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-train", type=int, default=15000, help="images; with their mirrors n = 2 x this")
    ap.add_argument("--tile", type=int, default=5000)
    ap.add_argument("--kill-at", type=int, default=8, help="factor tiles on disk when the process is killed")
    ap.add_argument("--dir", default=tempfile.gettempdir())
    ap.add_argument("--keep", action="store_true", help="keep the stores and run directories")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "faults_job.json"))
    args = ap.parse_args()
    work = tempfile.mkdtemp(dir=args.dir, prefix="ntkscale-faults-job-")
    store = os.path.join(work, "gram.zarr")
    exe = cli()
    res: dict = {"n": 2 * args.n_train, "tile": args.tile, "kill_at": args.kill_at, "runs": {}}
    try:
        for name in ("clean", "worker-kill", "client-kill"):
            out, factor = os.path.join(work, name), os.path.join(work, f"factor-{name}")
            job = write_job("fashion-mnist-120k-ridgeless.toml", os.path.join(work, f"{name}.toml"), {
                "job": {"name": name, "out": out}, "data": {"n_train": args.n_train},
                "kernel": {"tile": args.tile, "store": store}, "solver": {"factor_store": factor}})
            log = os.path.join(work, f"{name}.log")
            kill = name.split("-")[0] if name != "clean" else ""
            runs = [_run(exe + [job], log, factor, kill, args.kill_at)]
            if kill == "client":  # the user runs the same command again
                runs.append(_run(exe + [job], log, factor))
            with open(log) as fh:
                text = fh.read()
            res["runs"][name] = {"runs": runs, "metrics": _metrics(out), "tiles": len(_chunks(factor)),
                                 "resumed_by_itself": "resuming by itself" in text,
                                 "stale_lock_taken_over": "stale" in text.lower(),
                                 "digest": _digest(factor),
                                 "predictions": os.path.join(out, "predictions.npz")}
            print(f"{name:12s} " + "; ".join(f"rc {r['rc']} in {r['seconds']:.1f} s"
                                             + (f" (SIGKILL {r['killed']} pid {r['killed_pid']} at "
                                                f"{r['killed_at_s']:.1f} s, {r['tiles_at_kill']} tiles on disk)"
                                                if "killed" in r else "") for r in runs), flush=True)
        clean = res["runs"]["clean"]
        for name in ("worker-kill", "client-kill"):
            r = res["runs"][name]
            r["factor_bit_identical"] = r["digest"] == clean["digest"]
            # the factor is bit-identical; the float64 refinement and the predictions sum tile products
            # in the order the workers return them, so they agree to rounding, not bit for bit
            # (the interpolation residual is ~1e-11 either way: rounding, compared with the job's tol 1e-8)
            r["metrics_close"] = all(np.isclose(r["metrics"][k], clean["metrics"][k], rtol=1e-9, atol=0)
                                     for k in ("test_accuracy", "test_mse", "jitter")) and \
                max(r["metrics"]["residual"], clean["metrics"]["residual"]) < 1e-8
            p0, p1 = (np.load(os.path.join(work, n, "predictions.npz"))["prediction"] for n in ("clean", name))
            r["predictions_max_reldiff"] = float(np.abs(p1 - p0).max() / np.abs(p0).max())
            r["same_labels"] = bool(np.array_equal(p0.argmax(1), p1.argmax(1)))
            print(f"{name:12s} factor chunks {r['tiles']} bit-identical to clean: {r['factor_bit_identical']}; "
                  f"accuracy, MSE, jitter within 1e-9 and residuals < 1e-8: {r['metrics_close']}; predictions max rel. diff "
                  f"{r['predictions_max_reldiff']:.1e}, same labels: {r['same_labels']}; resumed by itself: {r['resumed_by_itself']}; "
                  f"stale lock taken over: {r['stale_lock_taken_over']}; metrics {r['metrics']}")
        for r in res["runs"].values():
            r.pop("digest")
        print(f"clean metrics: {clean['metrics']}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {work}")
    write_json(args.out, res)


if __name__ == "__main__":
    main()
