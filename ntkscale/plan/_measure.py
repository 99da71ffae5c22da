"""The measurements behind :func:`ntkscale.plan.calibrate` (each a few tenths of a second).

Every function returns plain rates; :mod:`.calibrate` assembles them into a Calibration.
Timings are medians over repetitions that fit a time budget.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from typing import Any, Callable

import numpy as np

from ..kernels import Layer, diag_stats, kernel_tile, spec_json
from ._disk import disk_read_rate, read_files, store_read_rate  # noqa: F401 (re-exported)

__all__ = ["n_activations", "single_thread", "kernel_rates", "dense_rates", "store_rates", "read_files", "disk_read_rate", "store_read_rate", "build_fixed", "client_rates",
           "worker_warmup", "DEFAULT_WORKER_WARMUP_S"]

#: First-tile cost of a fresh worker when it cannot be measured (numba cache load, imports).
DEFAULT_WORKER_WARMUP_S = 1.5


def n_activations(arch: Layer, d: int) -> tuple[int, int]:
    """(activation layers, statistics rows of a Gram store) as the build counts them: the
    fused program's activation slots, or the non-Dense layers of a generic architecture."""
    from ..kernels.fused import compile_program
    from ..storage.gram_store import STAT_ROWS

    prog = compile_program(arch.flat(), d)
    if prog is not None:
        return prog.n_slots, len(STAT_ROWS) + prog.n_slots
    acts = sum(1 for layer in arch.flat() if type(layer).__name__ not in ("Dense", "Identity"))
    return acts, len(STAT_ROWS)


def _timed(fn: Callable[[], Any], budget: float, min_reps: int = 3, max_reps: int = 50) -> float:
    """Median seconds of ``fn`` over as many calls as fit in ``budget`` (at least ``min_reps``)."""
    times: list[float] = []
    t_end = time.perf_counter() + budget
    while len(times) < max_reps and (len(times) < min_reps or time.perf_counter() < t_end):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


class single_thread:
    """BLAS/OpenMP (threadpoolctl) and numba limited to one thread inside the block."""

    def __enter__(self) -> "single_thread":
        from threadpoolctl import threadpool_limits

        self._limits = threadpool_limits(limits=1)
        self._numba = None
        try:
            import numba

            self._numba = numba.get_num_threads()
            numba.set_num_threads(1)
        except Exception:  # pragma: no cover - numba missing or not initialisable
            self._numba = None
        return self

    def __exit__(self, *exc: Any) -> None:
        self._limits.restore_original_limits()
        if self._numba is not None:
            import numba

            numba.set_num_threads(self._numba)


def _sphere_rows(n: int, d: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True) * math.sqrt(d)  # |x|²/d = 1


def kernel_rates(arch: Layer, d: int, T: int, budget: float) -> tuple[float, float]:
    """(seconds per kernel entry, tile-GEMM flop/s) of an off-diagonal T x T tile."""
    x = _sphere_rows(2 * T, d)
    x1, x2 = x[:T], x[T:]
    s1 = diag_stats(arch, x1, dtype=np.float64, validate=False)
    s2 = diag_stats(arch, x2, dtype=np.float64, validate=False)

    def tile() -> Any:
        return kernel_tile(arch, x1, x2, s1, s2, ("nngp", "ntk"), dtype=np.float64, out_dtype=np.float32)

    kernel_tile(arch, x1[:64], x2[:48], diag_stats(arch, x1[:64], dtype=np.float64, validate=False),
                diag_stats(arch, x2[:48], dtype=np.float64, validate=False), ("nngp", "ntk"),
                dtype=np.float64, out_dtype=np.float32)  # numba compile / cache load, untimed
    t_kernel = _timed(tile, 0.75 * budget)
    t_gemm = _timed(lambda: x1 @ x2.T, 0.25 * budget)
    return t_kernel / (T * T), 2.0 * T * T * d / t_gemm


def dense_rates(budget: float) -> tuple[float, float, float]:
    """(GEMM flop/s, Cholesky flop/s, eigh seconds per m³), float64."""
    import scipy.linalg as sla

    rng = np.random.default_rng(1)
    m = 1024
    A, B = rng.standard_normal((m, m)), rng.standard_normal((m, m))
    gemm = 2.0 * m**3 / _timed(lambda: A @ B, 0.3 * budget)
    mc = 1536
    G = rng.standard_normal((mc, mc))
    S = G @ G.T + mc * np.eye(mc)
    chol = mc**3 / 3.0 / _timed(lambda: sla.cholesky(S, lower=False, check_finite=False), 0.35 * budget)
    me = 1024  # smaller blocks run syevd at a lower BLAS-3 fraction: the m³ rate would overshoot
    E = S[:me, :me].copy()
    eig = _timed(lambda: np.linalg.eigh(E), 0.35 * budget, min_reps=2) / me**3
    return gemm, chol, eig


def store_rates(tmp: str, T: int, budget: float) -> tuple[float, float, float, float]:
    """(write bytes/s, read bytes/s, cast s/entry, GEMV s/entry) of float32 T x T tiles."""
    from ..storage import GramStore

    g = 2
    meta = {"shape": [g * T, g * T], "tile": T, "kinds": ["ntk"], "store_dtype": "float32",
            "symmetric": True, "build_id": "calibration", "diag_layout": "full"}  # whole chunks only
    x = np.zeros((g * T, 1))
    store = GramStore.create(os.path.join(tmp, "rates"), meta, x, None, 1)
    tiles = [(i, j) for i in range(g) for j in range(i, g)]
    rng = np.random.default_rng(2)
    values = rng.standard_normal((T, T)).astype(np.float32)  # noise: incompressible anyway
    chunk = T * T * 4
    it = iter(range(10**9))

    def write() -> None:
        i, j = tiles[next(it) % len(tiles)]
        store.write_tile("ntk", i, j, values)

    t_write = _timed(write, 0.4 * budget, min_reps=len(tiles))
    for i, j in tiles:  # every tile exists before reading
        store.write_tile("ntk", i, j, values)
    it2 = iter(range(10**9))

    def read() -> np.ndarray:  # as passes and block reads do: the whole chunk, mapped, CRC
        i, j = tiles[next(it2) % len(tiles)]
        return store.read_tile_into("ntk", i, j, None)

    t_read = _timed(read, 0.3 * budget, min_reps=len(tiles))
    K64 = values.astype(np.float64)
    v = rng.standard_normal(T)
    t_cast = _timed(lambda: values.astype(np.float64), 0.15 * budget)
    t_gemv = _timed(lambda: K64 @ v, 0.15 * budget)
    return chunk / t_write, chunk / t_read, t_cast / (T * T), t_gemv / (T * T)


def build_fixed(tmp: str, arch: Layer, d: int) -> float:
    """Seconds of a one-tile 64-row build on the in-process runner (all fixed costs)."""
    from ..tiling import build_gram

    x = _sphere_rows(64, d, seed=3)
    build_gram(arch, x, os.path.join(tmp, "warm"), tile=64, client="sync", progress=False)
    t0 = time.perf_counter()
    build_gram(arch, x, os.path.join(tmp, "fixed"), tile=64, client="sync", progress=False)
    return time.perf_counter() - t0


def _worker_kernel(arch: Layer, d: int, T: int, seconds: float) -> float:
    """Median seconds per entry of off-diagonal T x T kernel tiles timed for ``seconds`` in
    this process (run as a task: on a worker, with its pinned thread pools)."""
    x = _sphere_rows(2 * T, d, seed=6)
    s1 = diag_stats(arch, x[:T], dtype=np.float64, validate=False)
    s2 = diag_stats(arch, x[T:], dtype=np.float64, validate=False)
    _first_kernels(arch, d)
    return _timed(lambda: kernel_tile(arch, x[:T], x[T:], s1, s2, ("nngp", "ntk"), dtype=np.float64,
                                      out_dtype=np.float32), seconds, min_reps=2) / (T * T)


def _noop(i: int) -> int:
    return i


def _rss() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def client_rates(client: Any, arch: Layer, d: int, T: int,
                 budget: float) -> tuple[float, float, float, float, int]:
    """(worker seconds per kernel entry, efficiency, seconds per task, phase latency, worker
    resident bytes with the kernels loaded) on a distributed Client. The kernel tile is timed
    on one worker alone, then on every slot at once: the ratio is the per-slot efficiency
    of the build's own work."""
    slots = sum(w.get("nthreads", 1) for w in client.scheduler_info()["workers"].values())
    client.gather(client.map(_noop, list(range(2 * slots)), pure=False))  # first tasks: deserialization
    trips = []
    for _ in range(3):
        t0 = time.perf_counter()
        client.submit(_noop, 0, pure=False).result()
        trips.append(time.perf_counter() - t0)
    latency = statistics.median(trips)
    n = 40
    t0 = time.perf_counter()
    client.gather(client.map(_noop, list(range(n)), pure=False))
    per_task = max((time.perf_counter() - t0 - latency) / n, 1e-4)
    dur = max(0.2, budget / 2)
    # every worker loads the kernels first (so neither timing includes numba's cache load)
    client.gather(client.map(_worker_kernel, [arch] * slots, [d] * slots, [64] * slots, [0.0] * slots,
                             pure=False))
    rss = max(client.run(_rss).values())
    alone = client.submit(_worker_kernel, arch, d, T, dur, pure=False).result()
    if slots < 2:
        return alone, 1.0, per_task, latency, rss
    together = client.gather(client.map(_worker_kernel, [arch] * slots, [d] * slots, [T] * slots,
                                        [dur] * slots, pure=False))
    eff = min(1.0, max(0.2, alone / statistics.median(together)))
    return alone, eff, per_task, latency, rss


_WARMUP_CODE = """
import json, resource, sys, time
import distributed  # a worker has it loaded before its first task (memory, not warm-up)
t0 = time.perf_counter()
import numpy as np
import ntkscale.tiling.tasks
from ntkscale.kernels import diag_stats, from_spec, kernel_tile
arch = from_spec(json.loads(sys.argv[1]))
x = np.ones((48, int(sys.argv[2]))) + np.arange(48)[:, None] * 1e-3
s = diag_stats(arch, x, dtype=np.float64, validate=False)
s1 = diag_stats(arch, x[:32], dtype=np.float64, validate=False)
s2 = diag_stats(arch, x[32:], dtype=np.float64, validate=False)
kernel_tile(arch, x[:32], x[32:], s1, s2, ("nngp", "ntk"), dtype=np.float64, out_dtype=np.float32)
kernel_tile(arch, x, None, s, None, ("nngp", "ntk"), dtype=np.float64, out_dtype=np.float32)
print(time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


def _first_kernels(arch: Layer, d: int) -> None:
    x = _sphere_rows(48, d, seed=5)
    s = diag_stats(arch, x, dtype=np.float64, validate=False)
    # an off-diagonal tile takes the statistics of its own rows: x[:32] and x[32:]
    s1 = diag_stats(arch, x[:32], dtype=np.float64, validate=False)
    s2 = diag_stats(arch, x[32:], dtype=np.float64, validate=False)
    kernel_tile(arch, x[:32], x[32:], s1, s2, ("nngp", "ntk"), dtype=np.float64, out_dtype=np.float32)
    kernel_tile(arch, x, None, s, None, ("nngp", "ntk"), dtype=np.float64, out_dtype=np.float32)


def worker_warmup(arch: Layer, d: int) -> tuple[float, int, str]:
    """(seconds, peak RSS bytes, how) of a fresh worker-like process up to its first tiles:
    importing the task module (kernels, storage, zarr) and numba loading (or compiling) the
    fused kernels, in a subprocess with the workers' pinned environment."""
    import subprocess
    import sys

    from ..runner import pinned_env

    try:
        out = subprocess.run([sys.executable, "-c", _WARMUP_CODE, spec_json(arch), str(d)],
                             capture_output=True, text=True, timeout=300,
                             env=dict(os.environ, **pinned_env(1)), check=True)
        secs, rss = out.stdout.strip().splitlines()[-1].split()
        return float(secs), int(rss), "fresh subprocess"
    except subprocess.CalledProcessError as e:  # say why, so a plan never hides a broken kernel
        why = (e.stderr or "").strip().splitlines()[-1:] or [f"exit status {e.returncode}"]
        return DEFAULT_WORKER_WARMUP_S, 0, f"default (subprocess measurement failed: {why[0][:200]})"
    except (subprocess.SubprocessError, ValueError, IndexError, OSError):
        return DEFAULT_WORKER_WARMUP_S, 0, "default (subprocess measurement failed)"



def stored_pass_rates(tmp: str, client: Any, cols: int = 10, wide: int = 256,
                      reps: int = 3) -> tuple[float, float, float, int]:
    """A real ``StoredGram.matvec`` on this cluster: ``(fixed seconds per pass, seconds per
    Gram entry at ``cols`` columns, seconds per entry and extra column, workers)``.

    Passes over float32 stores of n = 2048 and 5120 (tile 1024) of a small kernel (the stored
    values do not matter), fitted as ``t(n, c) = fixed + n² (entry + (c - cols) per_col)``;
    ``per_col`` from a ``wide``-column pass at n = 5120. This catches what the sum of
    in-process rates misses on workers (chunk reads through zarr's event loop, fresh
    buffers, skinny GEMMs, result transfer, the client's partial sums).
    """
    import os as _os

    from .. import stax
    from ..operator import StoredGram
    from ..tiling.build import build_gram

    arch = stax.serial(stax.Dense(1), stax.Relu(), stax.Dense(1))
    rng = np.random.default_rng(0)

    def timed_pass(op: Any, c: int) -> float:
        V = rng.standard_normal((op.shape[0], c))
        op.matvec(V)  # workers open the store and warm their caches
        ts = []
        for _ in range(reps):
            t0 = time.perf_counter()
            op.matvec(V)
            ts.append(time.perf_counter() - t0)
        return statistics.median(ts)

    times = {}
    for n in (2048, 5120):
        url = _os.path.join(tmp, f"pass{n}")
        build_gram(arch, rng.standard_normal((n, 8)), url, tile=1024, client=client)
        with StoredGram(url, "ntk", client=client) as op:
            times[n] = timed_pass(op, cols)
            if n == 5120:
                t_wide = timed_pass(op, wide)
    entry = max((times[5120] - times[2048]) / (5120**2 - 2048**2), 1e-12)
    fixed = max(times[2048] - entry * 2048**2, 0.0)
    per_col = max((t_wide - times[5120]) / (5120**2 * (wide - cols)), 0.0)
    return fixed, entry, per_col, len(client.scheduler_info()["workers"])
