"""One benchmark runner (issue 12): every benchmark in a subprocess, one after another, one table.

Modes (sizes are passed to each benchmark's own options):

* ``--quick``  small sizes (kernel n = 2048; Gram build n = 4096; passes n = 8192; Cholesky n = 8192;
  PCG and eigensolver n = 4096, k = 200): every benchmark runs and its ratios can be read, in about
  10-15 minutes on 2 cores. Per-benchmark JSON and this runner's ``run_all.json`` go to
  ``benchmarks/results/quick/`` so that they never overwrite a full run's.
* ``--full``   the sizes the issue names (kernel and Gram build n = 8192; passes n = 16384; tiled
  Cholesky with scipy and scikit-learn peers, PCG and eigensolver n = 20 000, k = 500): 1-2 hours.
  JSON in ``benchmarks/results/<name>.json`` and ``benchmarks/results/run_all.json``.

Benchmarks never run in parallel (they time things); run the runner alone on a quiet machine. Each
row is one measurement with the floor or peer measured in the same run and their ratio
(measured / floor-or-peer, times: < 1 is faster), medians as each benchmark reports them. The
``job`` rows only read ``runs/fashion-mnist-120k/metrics.json`` (the n = 120 000 job), never run it.
A failed benchmark is a FAILED row with the tail of its stderr, the runner goes on and exits 1.

    python benchmarks/run_all.py --quick [--only kernel,pass] [--dry-run] [--timeout 1800]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
JOB_METRICS = ROOT / "runs" / "fashion-mnist-120k" / "metrics.json"
if not JOB_METRICS.exists():  # the committed record of the last measured run
    JOB_METRICS = ROOT / "benchmarks" / "runs" / "fashion-mnist-120k" / "metrics.json"


@dataclass
class Row:
    bench: str
    what: str
    measured: str
    peer: str = "-"
    ratio: float | None = None
    note: str = ""


def _s(x: float) -> str:
    return f"{x:.3g} s" if x < 10 else f"{x:.1f} s"


def _kernel(r: dict[str, Any]) -> list[Row]:
    t, b = r["timings"], f"kernel n={r['config']['n']}"
    note = f"target <= 1.5; per-round {r['ratios_paired']['ntkscale/gemm']:.2f}"
    if "plain" in t:
        note += f"; plain NumPy {r['ratios']['plain/gemm']:.2f}x GEMM"
    rows = [Row(b, "ntkscale NNGP+NTK vs GEMM x·xᵀ", _s(t["ntkscale"]["median_s"]),
                "GEMM " + _s(t["gemm"]["median_s"]), r["ratios"]["ntkscale/gemm"], note)]
    peer = r.get("peer_neural_tangents", {"info": "not in this bench_kernel.py"})
    if "neural_tangents" in t:
        rows.append(Row(b, "ntkscale vs neural-tangents kernel_fn", _s(t["ntkscale"]["median_s"]),
                        "neural-tangents " + _s(t["neural_tangents"]["median_s"]),
                        r["ratios"]["ntkscale/neural_tangents"],
                        f"max rel diff {r['max_rel_diff'].get('neural_tangents_vs_fused', float('nan')):.1e}"))
    else:
        rows.append(Row(b, "ntkscale vs neural-tangents kernel_fn", "-", "not measured",
                        note=str(peer.get("info", ""))[:90]))
    return rows


def _gram(r: dict[str, Any]) -> list[Row]:
    b = f"gram n={r['n']}"
    return [Row(b, "build, 2 workers vs in-memory kernel_fn", _s(r["build_2w_s"]),
                "in-memory " + _s(r["in_memory_kernel_s"]), r["build_2w_s"] / r["in_memory_kernel_s"],
                f"overhead {100 * r['overhead_2w_vs_in_memory']:.0f} % (target <= 25 %), {r['n_tiles']} tiles"),
            Row(b, "build, 2 workers vs 1 worker", _s(r["build_2w_s"]), "1 worker " + _s(r["build_1w_s"]),
                r["build_2w_s"] / r["build_1w_s"],
                f"speed-up {r['speedup_2w_vs_1w']:.2f}x (target >= 1.8; 2-process GEMM {r['parallel_ceiling_2w']:.2f}x)")]


def _pass(r: dict[str, Any]) -> list[Row]:
    """One cold and one warm row per read mode that bench_pass measured (``<mode>+readahead``)."""
    s, b = r["seconds"], f"pass n={r['n']}"
    note = f"{r['bytes'] / 2**30:.2f} GiB {r['store_dtype']}, k={r['k']}, {r['tiles']} tiles"
    modes = [key[len("cold "):-len("+readahead")] for key in s
             if key.startswith("cold ") and key.endswith("+readahead")]
    rows = []
    for mode in modes:
        cold, warm = s[f"cold {mode}+readahead"], s.get(f"warm {mode}+readahead")
        rows.append(Row(b, f"cold pass ({mode}) vs cold read floor", _s(cold),
                        "read " + _s(s["cold read floor"]), cold / s["cold read floor"], note))
        if warm is not None and "gemv floor" in s:
            rows.append(Row(b, f"warm pass ({mode}) vs in-memory GEMV floor", _s(warm),
                            "GEMV " + _s(s["gemv floor"]), warm / s["gemv floor"],
                            "page cache; same tile products, tiles in memory"))
    if not modes:
        raise KeyError(f"bench_pass wrote no '<mode>+readahead' timings (keys: {sorted(s)})")
    return rows


def _cholesky(r: dict[str, Any]) -> list[Row]:
    b = f"cholesky n={r['n']}"
    rows = [Row(b, "tiled Cholesky f64 factor vs scipy cho_factor", _s(r["tiled_f64_factor_s"]),
                "scipy " + _s(r["scipy_cho_factor_s"]), r["tiled_f64_vs_scipy"],
                f"{r['workers']}w x {r['blas_threads']} thr; 2-process GEMM {r['parallel_ceiling_2w']:.2f}x"),
            Row(b, "f32 factor + refinement vs scipy factor+solve", _s(r["tiled_f32_total_s"]),
                "scipy " + _s(r["scipy_factor_solve_s"]), r["tiled_f32_refined_vs_scipy_solution"],
                f"{r['tiled_f32_steps']} steps, residual {r['tiled_f32_residual']:.1e}")]
    if "sklearn_kernel_ridge_fit_s" in r:
        rows.append(Row(b, "f32 + refinement vs sklearn KernelRidge fit", _s(r["tiled_f32_total_s"]),
                        "sklearn " + _s(r["sklearn_kernel_ridge_fit_s"]), r["tiled_f32_total_vs_sklearn"],
                        f"max rel diff dual_coef_ vs f64 {r['sklearn_vs_tiled_f64_x_max_reldiff']:.1e}, "
                        f"vs f32+ref {r['sklearn_vs_tiled_f32_x_max_reldiff']:.1e}"))
    return rows


def _solve(r: dict[str, Any]) -> list[Row]:
    b, direct, rows = f"pcg n={r['n']}", r["direct_median_s"], []
    for ridge in sorted({e["ridge"] for e in r["pcg"]}, reverse=True):
        runs = [e for e in r["pcg"] if e["ridge"] == ridge and "passes" in e]
        ok = [e for e in runs if e["converged"]]
        per_rank = ", ".join(f"{e['rank']}:{e['passes']}{'' if e['converged'] else '!'}" for e in runs)
        if not ok:
            rows.append(Row(b, f"PCG ridge {ridge:.0e}: not converged", "-", "LAPACK " + _s(direct),
                            note=f"passes by rank {per_rank or 'skipped'}"))
            continue
        e = min(ok, key=lambda e: e["total_s"])
        rows.append(Row(b, f"PCG ridge {ridge:.0e}, rank {e['rank']} (fastest)",
                        f"{e['passes']} passes {_s(e['total_s'])}", "LAPACK " + _s(direct), e["vs_direct"],
                        f"passes by rank {per_rank}; {e['peak_bytes'] / 2**30:.2f} GiB"))
    return rows


def _eigen(r: dict[str, Any]) -> list[Row]:
    b, evd, evr = f"eigen n={r['n']} k={r['k']}", r["eigh_full_evd"]["seconds"], r["eigh_subset_evr"]["seconds"]
    return [Row(b, name.replace("randomized_eigh", "randomized"), _s(e["seconds"]), "LAPACK evd " + _s(evd),
                e["seconds"] / evd, f"{e['passes']} passes, max rel err {e['max_rel_err']:.1e}, bounds hold "
                f"{e['bounds_hold']}; {e['seconds'] / evr:.2f}x evr top-k") for name, e in r["runs"].items()]


def _job(m: dict[str, Any]) -> list[Row]:
    st, t, b = m.get("stages", {}), m.get("timings", {}), f"job n={m.get('data', {}).get('n_train', '?')}"
    notes = {"gram": lambda s: f"{s.get('tiles')} tiles, {s.get('bytes_on_disk', 0) / 2**30:.1f} GiB on disk",
             "fit": lambda s: f"{s.get('method')}: {s.get('passes')} passes, converged {s.get('converged')}, "
                              f"relative ridge {s.get('ridge_relative', float('nan')):.1e}",
             "predict": lambda s: f"test accuracy {s['test_accuracy']:.4f}" if "test_accuracy" in s else "",
             "spectrum": lambda s: f"k={s.get('k')}, {s.get('passes')} passes"}
    rows = [Row(b, f"stage {name}", _s(sec), note=notes.get(name, lambda s: "")(st.get(name, {})))
            for name, sec in t.items()]
    mem = m.get("memory", {})
    done = "complete" if "total_seconds" in m else f"in progress or stopped after {', '.join(t) or 'nothing'}"
    if mem:
        done += f"; peak memory client {mem['client_gib']:.2f} GiB, worker max {mem.get('worker_max_gib', 0):.2f} GiB"
    rows.append(Row(b, "total", _s(m["total_seconds"]) if "total_seconds" in m else "-", note=done))
    return rows


@dataclass
class Bench:
    name: str
    script: str
    quick: list[str]
    full: list[str]
    rows: Callable[[dict[str, Any]], list[Row]]


BENCHES = [
    Bench("kernel", "bench_kernel.py", ["--n", "2048", "--reps", "3"], ["--n", "8192", "--reps", "5"], _kernel),
    Bench("gram", "bench_gram.py", ["--n", "4096", "--reps", "2"], ["--n", "8192", "--reps", "3"], _gram),
    Bench("pass", "bench_pass.py", ["--n", "8192", "--reps", "3"], ["--n", "16384", "--reps", "3"], _pass),
    Bench("cholesky", "bench_cholesky.py", ["--n", "8192", "--reps", "3"], ["--n", "20000", "--reps", "3"],
          _cholesky),
    Bench("solve", "bench_solve.py", ["--n", "4096", "--ranks", "500", "1000"], ["--n", "20000"], _solve),
    Bench("eigen", "bench_eigen.py", ["--n", "4096", "--k", "200", "--reps", "2"],
          ["--n", "20000", "--k", "500", "--reps", "3"], _eigen),
]
NAMES = [b.name for b in BENCHES] + ["job"]


def run_one(cmd: list[str], log: Path, timeout: float | None) -> tuple[int, float, str]:
    """Run ``cmd`` in its own process group, stdout to ours (live), stderr to ``log``; returns
    (exit code, seconds, last lines of stderr). On timeout the whole group is killed (rc -9)."""
    t = time.perf_counter()
    with log.open("w") as err:
        proc = subprocess.Popen(cmd, cwd=ROOT, stderr=err, start_new_session=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the benchmark and its Dask workers
            rc = proc.wait()
            err.write(f"\nrun_all: killed after --timeout {timeout:g} s\n")
    tail = log.read_text(errors="replace").splitlines()[-15:]
    return rc, time.perf_counter() - t, "\n".join(tail)


def table(rows: list[Row]) -> str:
    head = ("benchmark", "what", "measured", "floor / peer (same run)", "ratio", "note")
    cells = [head] + [(r.bench, r.what, r.measured, r.peer, "-" if r.ratio is None else f"{r.ratio:.2f}", r.note)
                      for r in rows]
    w = [max(len(c[i]) for c in cells) for i in range(5)]
    lines = ["  ".join(c[i].ljust(w[i]) if i != 4 else c[i].rjust(w[i]) for i in range(5)) + "  " + c[5]
             for c in cells]
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:]])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--quick", action="store_true", help="small sizes, ~10-15 min on 2 cores")
    mode.add_argument("--full", action="store_true", help="the issue's sizes (n up to 20 000), 1-2 hours")
    ap.add_argument("--only", default=None, help=f"comma-separated subset of {','.join(NAMES)}")
    ap.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    ap.add_argument("--timeout", type=float, default=None, help="seconds per benchmark (default: none)")
    ap.add_argument("--job-metrics", type=Path, default=JOB_METRICS, help="metrics.json of the 120k job")
    args = ap.parse_args(argv)
    mode_name = "quick" if args.quick else "full"
    only = NAMES if args.only is None else [s.strip() for s in args.only.split(",") if s.strip()]
    if unknown := [s for s in only if s not in NAMES]:
        ap.error(f"--only: unknown {', '.join(unknown)}; choose from {', '.join(NAMES)}")
    out_dir = HERE / "results" / ("quick" if args.quick else "")
    todo = [b for b in BENCHES if b.name in only]
    rel = out_dir.relative_to(ROOT)  # commands run in the repository root
    cmds = {b.name: [sys.executable, f"benchmarks/{b.script}", *(b.quick if args.quick else b.full),
                     "--out", str(rel / f"{b.name}.json")] for b in todo}
    if args.dry_run:
        for name, cmd in cmds.items():
            print(f"{name}: {shlex.join(cmd)}")
        if "job" in only:
            print(f"job: read {args.job_metrics} (never runs the job)")
        return 0

    (out_dir / "logs").mkdir(parents=True, exist_ok=True)
    rows: list[Row] = []
    report: dict[str, Any] = {"mode": mode_name, "only": only, "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
                              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                          "python": sys.version.split()[0]}, "benchmarks": {}}
    failed: list[str] = []
    for b in todo:
        print(f"\n=== {b.name}: {shlex.join(cmds[b.name])}", flush=True)
        out = out_dir / f"{b.name}.json"
        out.unlink(missing_ok=True)  # a stale file must not pass for this run's result
        rc, sec, tail = run_one(cmds[b.name], out_dir / "logs" / f"{b.name}.stderr", args.timeout)
        entry: dict[str, Any] = {"cmd": cmds[b.name], "rc": rc, "seconds": sec, "json": str(out)}
        try:
            if rc != 0:
                raise RuntimeError(f"exit code {rc}")
            got = b.rows(json.loads(out.read_text()))
        except Exception as e:  # a failed run, a missing JSON or one without the expected keys
            failed.append(b.name)
            entry.update(error=f"{type(e).__name__}: {e}", stderr_tail=tail)
            got = [Row(b.name, f"FAILED ({type(e).__name__}: {e})"[:60], "-", note="stderr tail below")]
        entry["rows"] = [asdict(r) for r in got]
        report["benchmarks"][b.name] = entry
        rows += got
        print(f"=== {b.name}: {'ok' if b.name not in failed else 'FAILED'} in {sec:.0f} s", flush=True)
    if "job" in only:
        p = args.job_metrics
        try:
            got = _job(json.loads(p.read_text()))
        except FileNotFoundError:
            got = [Row("job", "n = 120 000 job", "-", note=f"{p} not present (ntkscale run jobs/fashion-mnist-120k.toml)")]
        except Exception as e:
            failed.append("job")
            got = [Row("job", f"FAILED reading metrics ({type(e).__name__}: {e})"[:60], "-", note=str(p))]
        report["benchmarks"]["job"] = {"metrics": str(p), "rows": [asdict(r) for r in got]}
        rows += got

    print(f"\nrun_all --{mode_name}: ratio = measured / floor-or-peer (times; < 1 is faster), medians\n")
    print(table(rows))
    for name in failed:
        if tail := report["benchmarks"][name].get("stderr_tail"):
            print(f"\n--- {name} stderr (last lines) ---\n{tail}")
    report["failed"] = failed
    path = out_dir / "run_all.json"
    path.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {path}" + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
