"""ntkscale against neural-tangents 0.6.5 on the same inputs, in the same run (issue 22).

For each case of ``nt_cases.py`` (fully connected ReLU, the new elementwise layers, LayerNorm,
a transformer block on sequences), times NNGP + NTK of an n×n symmetric Gram:

* ``ntkscale``: ``kernel_fn(x, None, ('nngp', 'ntk'))`` in this process (float64);
* ``neural_tangents``: the same architecture's jitted ``kernel_fn`` in NT's own venv, a timing
  server (``nt_peer.py``) kept running, compiled first, asked for one call per round;
* ``gemm``: ``x @ x.T`` (flattened inputs), the floor of one inner product per entry
  (NumPy runs it as a full GEMM);
* ``syrk``: BLAS ``syrk`` of the same inputs, the floor of one inner product per entry of the
  upper triangle (what ntkscale's symmetric fused kernels compute, ``fused.gram_upper``).

Rounds interleave the four (medians over ``--reps``; the paired ratio is the median of
per-round ratios), so a shared machine's drifts hit them alike; both run on the same cores,
one at a time. Each timed call starts after ``--gap`` seconds idle (default 0.3): OpenBLAS's
idle threads spin ~0.1 s after a threaded call and would otherwise take the cores from
whatever is timed next (measured: it slowed ntkscale's numba chain after the floors' BLAS). The NTK's first row is compared between the two libraries (relative max diff).
Cost per Gram entry = median seconds / n².

``--memory`` sets the state of free memory before every timed call, the same for all four
(``_prepare``). This matters on a VM with virtio-balloon free page reporting (the 2-core CI-class
VM): about 1-2 s after a process frees memory the guest hands those pages to the host, and the
next process to touch them pays the host's page faults, ~1 s of CPU per GB written (measured:
ntkscale's 1 GB of outputs cost 0.75 s after 0.3 s idle and 1.24 s after 2.5-4 s idle, with
~1 s more system time). With ``gap`` the calls leave the state to each other, so a contestant
that follows a long call finds cold pages and one that follows a short call warm ones; ``warm``
writes and frees 3x the outputs' bytes just before each call; ``cold`` waits
:data:`COLD_S` seconds (a fresh process's first call, or a call after a pause).

OpenBLAS: the machine image may set ``OPENBLAS_CORETYPE`` (and ``OPENBLAS_L2_SIZE``) to keep
older builds off kernels they crash on; then NumPy and SciPy run the kernels it names (``Haswell``
on the Zen 5 VM, 1.6x slower ``syrk`` than the ``SkylakeX`` ones OpenBLAS picks by itself there).
The JSON records which kernels ran (``openblas``); to time the CPU's own, unset both for the
one command: ``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_nt.py ...``.

    bash tests/nt_parity/make_venv.sh /tmp/nt-venv
    python benchmarks/bench_nt.py --nt-python /tmp/nt-venv/bin/python [--cases fc_relu_d784,...]

Writes ``benchmarks/results/nt.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

from ntkscale import stax
from ntkscale.kernels.fused import gram_upper

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from nt_cases import CASES  # noqa: E402

DEFAULT_N = {"fc_relu_d784": 4096, "exp_d64": 2048, "gaussian_d64": 2048, "rbf_d64": 2048,
             "layernorm_mlp_d64": 2048, "transformer_T8_C16": 256}


class Peer:
    """``nt_peer.py`` in NT's venv: one timed call per :meth:`run`."""

    def __init__(self, python: str, case: str, n: int, seed: int):
        self.p = subprocess.Popen([python, os.path.join(HERE, "nt_peer.py"), case, str(n), str(seed)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.p.stdout.readline().strip()
        if line != "ready":
            raise RuntimeError(f"neural-tangents peer did not start: {line!r}")

    def ask(self, cmd: str) -> str:
        self.p.stdin.write(cmd + "\n")
        self.p.stdin.flush()
        return self.p.stdout.readline().strip()

    def close(self) -> None:
        try:
            self.ask("quit")
        except (BrokenPipeError, OSError):
            pass
        self.p.wait(timeout=30)


#: seconds idle after which this VM has handed every freed page back to its host (virtio-balloon
#: free page reporting, ~2 s delay; measured: a 1 GB output costs the same at 2.5 and 4 s idle)
COLD_S = 3.0


def _prepare(memory: str, gap: float, touch_bytes: int) -> None:
    """The state of the machine's free memory before a timed call, the same for every contestant.

    ``"gap"``: ``gap`` seconds idle only (what the previous call freed decides the state).
    ``"warm"``: ``gap`` seconds idle, then ``touch_bytes`` written and freed: the next
    allocations (in any process) reuse pages the guest has just touched.
    ``"cold"``: :data:`COLD_S` seconds idle: every free page has been reported to the host, and
    the call pays the host's first-touch faults for all it allocates (as a fresh process does).
    """
    time.sleep(COLD_S if memory == "cold" else gap)
    if memory == "warm":
        buf = np.empty(touch_bytes // 8)
        buf.fill(1.0)
        del buf


def bench_case(name: str, n: int, reps: int, nt_python: str, gap: float = 0.3, memory: str = "gap") -> dict:
    build, make_x = CASES[name]
    _, _, kernel_fn = build(stax)
    x = make_x(n, 0)
    flat = x.reshape(n, -1)
    kernel_fn(x, None, ("nngp", "ntk"))  # warm (numba compile / caches)
    peer = Peer(nt_python, name, n, 0)
    try:
        theirs = np.frombuffer(bytes.fromhex(peer.ask("check")), np.float64)
        ours = np.asarray(kernel_fn(x, None, "ntk"))[0]
        diff = float(np.max(np.abs(ours - theirs)) / np.max(np.abs(theirs)))
        times: dict[str, list[float]] = {"ntkscale": [], "neural_tangents": [], "gemm": [], "syrk": []}
        touch = 3 * 2 * n * n * 8  # three times the two float64 outputs
        for _ in range(reps):
            _prepare(memory, gap, touch)
            t0 = time.perf_counter()
            kernel_fn(x, None, ("nngp", "ntk"))
            times["ntkscale"].append(time.perf_counter() - t0)
            _prepare(memory, gap, touch)
            times["neural_tangents"].append(float(peer.ask("run")))
            _prepare(memory, gap, touch)
            t0 = time.perf_counter()
            flat @ flat.T
            times["gemm"].append(time.perf_counter() - t0)
            _prepare(memory, gap, touch)
            t0 = time.perf_counter()
            gram_upper(flat)
            times["syrk"].append(time.perf_counter() - t0)
    finally:
        peer.close()
    med = {k: statistics.median(v) for k, v in times.items()}
    paired = statistics.median(b / a for a, b in zip(times["ntkscale"], times["neural_tangents"]))
    out = {"n": n, "d": int(flat.shape[1]), "gap_s": gap, "memory": memory, "openblas": _openblas(), "median_s": med, "range_s": {k: [min(v), max(v)] for k, v in times.items()},
           "us_per_entry": {k: 1e6 * v / n / n for k, v in med.items()},
           "speedup_vs_nt": med["neural_tangents"] / med["ntkscale"], "speedup_vs_nt_paired": paired,
           "ntkscale_over_gemm": med["ntkscale"] / med["gemm"], "ntkscale_over_syrk": med["ntkscale"] / med["syrk"],
           "ntk_row_rel_diff": diff}
    print(f"{name:22s} n={n:5d} {memory:4s} ntkscale {1e6 * med['ntkscale'] / n / n:9.4f} us/entry  "
          f"NT {1e6 * med['neural_tangents'] / n / n:9.4f}  speed-up {out['speedup_vs_nt']:6.2f}x "
          f"(paired {paired:5.2f})  /GEMM {out['ntkscale_over_gemm']:6.2f}  /SYRK {out['ntkscale_over_syrk']:5.2f}  "
          f"|diff| {diff:.1e}", flush=True)
    return out


def _openblas() -> list[str]:
    """Which OpenBLAS kernels this process runs (NumPy's and SciPy's): ``OPENBLAS_CORETYPE``
    decides it when set before they load."""
    from threadpoolctl import threadpool_info

    return [f"{d.get('filepath', '').rsplit('/', 1)[-1]}: {d.get('architecture')}" for d in threadpool_info()
            if d.get("internal_api") == "openblas"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nt-python", default="/tmp/nt-venv/bin/python")
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--n", type=int, default=0, help="one n for every case (default: per case)")
    ap.add_argument("--gap", type=float, default=0.3, help="idle seconds before each timed call")
    ap.add_argument("--memory", default="gap", choices=["gap", "warm", "cold"],
                    help="free-memory state before each timed call (see _prepare); gap: as the calls leave it")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "nt.json"))
    args = ap.parse_args()
    if not os.path.exists(args.nt_python):
        sys.exit(f"no neural-tangents python at {args.nt_python}: bash tests/nt_parity/make_venv.sh first")
    res = {name: bench_case(name, args.n or DEFAULT_N[name], args.reps, args.nt_python, args.gap, args.memory)
           for name in args.cases.split(",")}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
