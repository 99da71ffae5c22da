"""Cost model of the stages that read the stored Gram: solve, spectrum, learning curve.

Each function mirrors the library call a job stage makes (:mod:`ntkscale.job.stages`):
``solve`` (:mod:`ntkscale.solvers.api`), ``randomized_eigh`` (:mod:`ntkscale.solvers.eigen`)
and ``learning_curves`` (:mod:`ntkscale.spectral.curves`). Client-side dense algebra runs
with multi-threaded BLAS on ``client_threads`` cores.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np

from .costs import Resources, dense_read, pass_cost, subset_compute
from .report import StageEstimate

__all__ = ["pcg_iterations", "fit_stage", "curve_stage", "curve_grid",
           "PCG_MIN_RELATIVE_RIDGE", "dynamics_stage", "lanczos_steps"]

from ..solvers.api import PCG_MIN_RELATIVE_RIDGE, RPC_FLOAT64_MAX_BYTES, auto_method  # noqa: E402  (one rule for both)
# Householder QR and thin SVD of an n x s block in GEMM-equivalent flops per n s² (measured
# single-threaded with OpenBLAS on this project's machine, n = 2048-8192, s = 300: QR 11-14,
# SVD 14-15; the BLAS-2 panels make them several times dearer than their flop counts).
QR_NS2 = 14.0
SVD_NS2 = 15.0
# Measured Nyström-PCG iterations to tol 1e-8 (rank 1000, Fashion-MNIST n = 20000, depth-3
# ReLU NTK; note of session 2 / benchmarks/bench_solve.py): relative ridge -> iterations.
_PCG_ANCHORS = ((1e-1, 40.0), (1e-2, 75.0), (1e-3, 86.0))
_PCG_ANCHOR_N, _PCG_ANCHOR_RANK = 20000, 1000
# Growth with n and with the preconditioner's rank at a fixed relative ridge, fitted to the
# measured runs at relative ridge 0.046, tol 1e-6 (benchmarks/RESULTS.md): n = 30 000 at rank
# 500 / 1000 / 1500: 64 / 47 / 40 iterations (rank^-0.44); n = 120 000 at rank 500: 126
# (n^0.49). The Nyström-preconditioned condition number is ~ lambda_{r+1}(K) / ridge, and
# lambda_{r+1}(K) ~ n eta_{r+1} grows with n and falls with r; the fitted exponents are below
# the sqrt(kappa) rule's (0.5 and -0.58 for eta_k ~ k^-1.165) as CG adapts to the spectrum.
_PCG_N_EXPONENT, _PCG_RANK_EXPONENT = 0.49, -0.44


def pcg_iterations(ridge_relative: float, tol: float = 1e-8, maxiter: int = 1000, *,
                   n: int = _PCG_ANCHOR_N, rank: int = _PCG_ANCHOR_RANK) -> int:
    """Heuristic Nyström-PCG iteration count (pass ``pcg_iters`` to override it).

    Log-linear interpolation of measured counts at n = 20 000, rank 1000 (40 / 75 / 86 at
    relative ridge 1e-1 / 1e-2 / 1e-3); below 1e-3 x√10 per decade (the condition number grows
    ~10x per decade of ridge on 1/k spectra, ALGORITHMS.md §2, and CG needs ~√κ iterations);
    scaled by ``(n / 20000)^0.49 (rank / 1000)^-0.44`` (fitted to measured runs at n = 30 000
    and 120 000, see the constants) and by ``log(1/tol) / log(1e8)``; capped at ``maxiter``.
    """
    r = max(float(ridge_relative), 1e-300)
    xs = [math.log10(a) for a, _ in _PCG_ANCHORS][::-1]
    ys = [b for _, b in _PCG_ANCHORS][::-1]
    lr = math.log10(r)
    if lr >= xs[-1]:
        it = ys[-1]
    elif lr >= xs[0]:
        it = float(np.interp(lr, xs, ys))
    else:
        it = ys[0] * 10 ** (0.5 * (xs[0] - lr))
    it *= (max(int(n), 1) / _PCG_ANCHOR_N) ** _PCG_N_EXPONENT
    it *= (max(int(rank), 1) / _PCG_ANCHOR_RANK) ** _PCG_RANK_EXPONENT
    it *= math.log(1.0 / tol) / math.log(1e8)
    return int(min(maxiter, max(1, math.ceil(it))))


def _dense_limit(available: float) -> int:
    return int(np.sqrt(0.5 * available / 16))  # solvers.api.dense_limit


def _client_lapack(flops: float, rate: float, res: Resources) -> float:
    return flops / res.client_flops(rate)


def fit_stage(n: int, T: int, itemsize: int, n_outputs: int, res: Resources, *, solver: str,
              ridge_relative: float, pcg_rank: int, pcg_iters: Optional[int], tol: float,
              maxiter: int, ridge_selection: bool = False,
              ridge_subsample: Optional[int] = None, d: int = 0,
              preconditioner: str = "auto") -> StageEstimate:
    """``solve(StoredGram, Y, ridge, solver=...)`` with ``solver='auto'`` resolved as
    :func:`ntkscale.solvers.api._choose` does (dense limit from ``client_memory``).

    ``ridge_selection``: GCV/LOO first (:func:`ntkscale.solvers.ridge.choose_ridge`): the
    Gram of ``m`` points (``ridge_subsample``, or its automatic rule) computed from the
    stored inputs when that is cheaper (``StoredGram.take``, :func:`_computes`), else read
    from the store (a random subset touches every tile: the whole matrix is read, mirrored
    tiles twice), one dense ``eigh`` of size m, and the criterion on the ridge grid
    (22 x ``2 m² C`` flops). The Nyström sketch of a float32 store runs in single precision;
    ``preconditioner='rpcholesky'`` makes no pass: :func:`_rpcholesky_costs`."""
    cal, C = res.cal, n_outputs
    limit = _dense_limit(res.client_memory)
    notes: list[str] = []
    method = solver
    if solver == "auto":
        chosen, why, dense = auto_method(n, ridge_relative, limit)
        method = {("eigh", True): "eigh", ("cholesky", True): "dense-cholesky"}.get((chosen, dense), chosen)
        if preconditioner in ("rpcholesky", "auto"):  # as solve(auto) words it (solvers.api)
            why = why.replace("Nyström-PCG", "RPCholesky-PCG")
        notes.append(f"auto: {why} (client memory {res.client_memory / 2**30:.1f} GiB)")
    read_s, read_b = dense_read(n, T, itemsize, res)
    base, wbase = res.client_baseline, res.worker_baseline
    sel_s = sel_mem = 0.0
    if ridge_selection:  # pipeline.resolve_ridge: dense eigh of (a sub-block of) the Gram
        from ..solvers.ridge import AUTO_SUBSAMPLE, AUTO_SUBSAMPLE_ABOVE

        m = min(n, ridge_subsample or (n if n <= AUTO_SUBSAMPLE_ABOVE else AUTO_SUBSAMPLE))
        if m < n and d > 0 and _computes(m, m, n):
            gather_s = subset_compute(m, m, d, res)
        else:
            gather_s = read_s if m == n else read_s - 2.0 * n * n * cal.cast_entry_s
        sel_s = (gather_s + m**3 * cal.eigh_s_per_n3 / (res.client_threads * res.efficiency
                                                        if res.client_threads > 1 else 1)
                 + 22 * 4.0 * m * m * C / res.client_flops(cal.gemm_flops))
        sel_mem = 32.0 * m * m
        notes.append(f"ridge chosen by GCV/LOO: one dense eigh of {'the Gram' if m == n else f'a {m}-point sub-block'}"
                     " before the solve")

    def rhs(k: int) -> float:  # k products K @ (n, C) on the client (solves, residual)
        return 2.0 * n * n * C * k / res.client_flops(cal.gemm_flops) + k * n * n * cal.gemv_entry_s

    if method in ("dense-cholesky", "eigh"):
        if method == "dense-cholesky":
            flops = n**3 / 3.0
            s = read_s + 3.0 * n * n * cal.cast_entry_s + _client_lapack(flops, cal.cholesky_flops, res) + rhs(3)
            mem = 16.0 * n * n  # K float64 and its Fortran-order copy factored in place (solvers.cholesky._dense)
            desc = "LAPACK Cholesky in memory (n³/3 flops)"
        else:
            flops = 9.0 * n**3
            s = read_s + n**3 * cal.eigh_s_per_n3 / (res.client_threads * res.efficiency
                                                     if res.client_threads > 1 else 1) + rhs(2)
            mem = 32.0 * n * n
            desc = "LAPACK eigh pseudo-inverse in memory (ridge 0)"
        if mem + base > res.client_memory:
            notes.append(f"client peak {(mem + base) / 2**30:.1f} GiB exceeds the available "
                         f"{res.client_memory / 2**30:.1f} GiB")
        return StageEstimate("fit", desc, s + sel_s, bytes_read=read_b, worker_peak_bytes=wbase,
                             client_peak_bytes=int(base + max(mem, sel_mem, itemsize * n * n + 8 * n * n)),
                             flops=flops, notes=tuple(notes))
    if method in ("pcg", "cg"):
        r = min(pcg_rank, n) if method == "pcg" else 0
        it = pcg_iters if pcg_iters is not None else (
            pcg_iterations(ridge_relative, tol, maxiter, n=n, rank=r) if method == "pcg" else maxiter)
        notes.append(f"{it} iterations ({'given' if pcg_iters is not None else 'heuristic'}"
                     f"{', upper bound: maxiter' if method == 'cg' and pcg_iters is None else ''})")
        rpc = bool(r) and preconditioner in ("rpcholesky", "auto")
        s, pre_mem, sketch, step, passes = _pcg_costs(n, T, itemsize, C, res, r, it, rpc, d)
        if rpc:
            notes.append(f"RPCholesky preconditioner from ~{int(RPC_COLUMNS_PER_RANK * r)} kernel columns, no pass")
        if method == "pcg" and pcg_iters is None:
            best, best_s = best_pcg_rank(n, T, itemsize, C, res, ridge_relative, tol, maxiter, rpc, d,
                                         res.client_memory - base)
            if best and best != r and best_s < 0.9 * s:  # (a flat optimum is no advice)
                notes.append(f"rank {best} would minimize this fit ({best_s / 60:.1f} min vs {s / 60:.1f} min, "
                             "heuristic iterations) within the client's memory")
        kind = "RPCholesky" if rpc else "Nyström"
        desc = (f"{kind}-PCG, rank {r}, {it} iterations" if r else f"CG (minimum norm), {it} iterations")
        return StageEstimate(
            "fit", desc, s + sel_s, bytes_read=int(passes * step["bytes_read"] + (sketch["bytes_read"] if sketch else 0)),
            worker_peak_bytes=int(max(step["worker_peak"], sketch["worker_peak"] if sketch else 0)),
            client_peak_bytes=int(base + max(pre_mem, sel_mem)),
            flops=passes * step["flops"] + (sketch["flops"] if sketch else 0.0),
            passes=passes + (1 if sketch else 0), notes=tuple(notes))
    if method in ("cholesky", "cholesky-f32"):
        return _tiled_cholesky(n, T, itemsize, C, res, method, sel_s, sel_mem, notes)
    raise ValueError(f"solver must be one of auto, cholesky, cholesky-f32, pcg, eigh, cg; got {solver!r}")


def _pcg_costs(n: int, T: int, itemsize: int, C: int, res: Resources, r: int, it: int, rpc: bool,
               d: int) -> tuple[float, float, Optional[dict], dict, int]:
    """(seconds, preconditioner client bytes, sketch pass or None, PCG pass, PCG passes) of
    ``it`` PCG iterations with a rank-``r`` preconditioner (0: none)."""
    cal = res.cal
    sketch = pass_cost(n, T, itemsize, r, res, single=itemsize == 4) if r and not rpc else None
    step = pass_cost(n, T, itemsize, C, res)
    passes = it + it // 25 + 1  # iterations, true residual every 25, final residual
    if rpc:
        client, per_it, pre_mem = _rpcholesky_costs(n, r, d, C, res)
        client += it * per_it
    else:
        client = ((QR_NS2 + SVD_NS2 + 3.0) * n * r * r + 25.0 * r**3) / res.client_flops(cal.gemm_flops) \
            if r else 0.0
        client += it * (4.0 * n * r * C + 12.0 * n * C) / res.client_flops(cal.gemm_flops)
        pre_mem = 5.0 * n * max(r, C) * 8
    return passes * step["seconds"] + client + (sketch["seconds"] if sketch else 0.0), pre_mem, sketch, step, passes


PCG_RANK_LADDER = (250, 500, 1000, 2000, 4000, 6000, 8000, 12000, 16000, 24000)


def best_pcg_rank(n: int, T: int, itemsize: int, C: int, res: Resources, ridge_relative: float, tol: float,
                  maxiter: int, rpc: bool, d: int, memory: float) -> tuple[int, float]:
    """The preconditioner rank of :data:`PCG_RANK_LADDER` (<= n) whose planned fit is fastest
    with its preconditioner within ``memory`` bytes of the client, and that fit's seconds
    ((0, inf) when none fits). Iterations from :func:`pcg_iterations` (``rank^-0.44``)."""
    best = (0, math.inf)
    for r in (x for x in PCG_RANK_LADDER if x <= n):
        it = pcg_iterations(ridge_relative, tol, maxiter, n=n, rank=r)
        s, mem, *_ = _pcg_costs(n, T, itemsize, C, res, r, it, rpc, d)
        if mem <= memory and s < best[1]:
            best = (r, s)
    return best


# Candidate columns per accepted pivot of accelerated RPCholesky (measured 1.078 at rank 1000,
# 1.04 at rank 2000, Fashion-MNIST n = 10 000: benchmarks/RESULTS.md §7), and its block size.
RPC_COLUMNS_PER_RANK = 1.08
RPC_BLOCK = 100


def _rpcholesky_costs(n: int, r: int, d: int, C: int, res: Resources) -> tuple[float, float, float]:
    """(build seconds, seconds per PCG iteration, client bytes) of the RPCholesky preconditioner
    (:func:`ntkscale.solvers.rpcholesky.rpcholesky_factor` + ``ColumnFactor.preconditioner``):
    ``1.08 r`` columns computed from the inputs in blocks of 100; the block updates ``n r²``
    flops (float32 GEMMs when F is float32); the set-up ``Fᵀ F`` (``n r²``, float64) and a
    (r, r) eigh; per iteration ``4 n r C`` float64 flops and two float64 conversions of F."""
    cal = res.cal
    f32 = 8.0 * n * r > RPC_FLOAT64_MAX_BYTES
    cols = RPC_COLUMNS_PER_RANK * r
    build = math.ceil(cols / RPC_BLOCK) * subset_compute(n, RPC_BLOCK, max(d, 1), res)
    build += n * r * r / res.client_flops(cal.gemm_flops * (2.0 if f32 else 1.0))
    build += n * r * r / res.client_flops(cal.gemm_flops) + r**3 * cal.eigh_s_per_n3 / (
        res.client_threads * res.efficiency if res.client_threads > 1 else 1)
    per_it = 4.0 * n * r * C / res.client_flops(cal.gemm_flops) + (2.0 * n * r * cal.cast_entry_s if f32 else 0.0)
    mem = n * r * (4.0 if f32 else 8.0) + 3.0 * 8 * r * r + 2.0 * n * RPC_BLOCK * 8
    return build, per_it, mem


def _tiled_cholesky(n: int, T: int, itemsize: int, C: int, res: Resources, method: str,
                    sel_s: float, sel_mem: float, notes: list[str]) -> StageEstimate:
    """``factor_tiles`` (left-looking tile DAG on the workers) + the streamed triangular
    solves on the client + one residual pass (:mod:`ntkscale.solvers.cholesky`)."""
    cal = res.cal
    f32 = method == "cholesky-f32"
    fsize = 4 if f32 else 8
    g = math.ceil(n / T)
    speed = 2.0 if f32 else 1.0  # float32 GEMMs ~2x
    flops = n**3 / 3.0
    # tile (i, j), i <= j, reads 2i factor tiles and one Gram tile: ~g³/3 tile reads in all
    reads = sum((2 * i + 1) * (g - i) for i in range(g))
    chunk = T * T * fsize + 4
    io = reads * chunk / cal.read_bytes_per_s + g * (g + 1) / 2 * chunk / cal.write_bytes_per_s
    work = flops / (cal.gemm_flops * speed) + io
    crit = g * (T**3 / 3.0 / (cal.cholesky_flops * speed) + 3.0 * T**3 / (cal.gemm_flops * speed))
    tasks = g * (g + 1) // 2
    fact = max(res.slot_seconds(work) / res.slots, crit) + tasks * cal.task_overhead_s / res.slots
    fbytes = int(tasks * chunk + 4 * 600)
    solve = 2 * fbytes / cal.read_bytes_per_s + 4.0 * n * n * C / 2 / cal.gemm_flops
    resid = pass_cost(n, T, itemsize, C, res)
    refine = 2 if f32 else 0
    s = fact + (1 + refine) * solve + (1 + refine) * resid["seconds"] + sel_s
    notes.append(f"factor stored in float{8 * fsize} ({fbytes / 2**30:.2f} GiB)")
    return StageEstimate(
        "fit", f"tiled Cholesky{' float32 + refinement' if f32 else ''} on the workers ({tasks} factor tiles)",
        s, tiles=tasks, bytes_on_disk=fbytes,
        bytes_read=int(reads * chunk + (1 + refine) * (2 * fbytes + resid["bytes_read"])),
        worker_peak_bytes=int(res.worker_baseline + res.threads * 4 * T * T * 8),
        client_peak_bytes=int(res.client_baseline + max(4.0 * n * C * 8 + T * T * 8, sel_mem)),
        flops=flops + 2.0 * n * n * C * (1 + refine), passes=1 + refine, notes=tuple(notes))


def _computes(rows: int, cols: int, n: int) -> bool:
    """Whether ``StoredGram.take`` computes a scattered ``rows x cols`` sub-block of an n x n
    store (its rule, :data:`ntkscale.operator.COMPUTE_OVER_READ`, with every tile touched)."""
    from ..operator import COMPUTE_OVER_READ

    return rows * cols * COMPUTE_OVER_READ < float(n) * n


def curve_grid(n: int, points: int | Sequence[int]) -> np.ndarray:
    """Training sizes: an explicit list, or ``points`` log-spaced sizes from
    ``min(32, n//8)`` to ``n//2`` (the job's default grid has 8)."""
    if isinstance(points, (int, np.integer)):
        return np.unique(np.geomspace(max(2, min(32, n // 8)), max(3, n // 2), int(points)).astype(int))
    return np.unique(np.asarray(points, dtype=int))


#: Seconds per entry of putting a trial's gathered block back into the trial's random order
#: (``block[np.ix_(rows, cols)]``, float64): 1.2 s for each 10 192 x 8192 block in a py-spy
#: profile of the 120k job's curve stage (2-core VM) - random access, ~100x a streaming cast.
REORDER_ENTRY_S = 1.4e-8


def curve_stage(n: int, T: int, itemsize: int, n_outputs: int, res: Resources, p: np.ndarray,
                trials: int, n_test: Optional[int], ridge_relative: float,
                eigs_available: bool, d: int = 0) -> StageEstimate:
    """``learning_curves(op, Y, p, ridge, n_trials, n_test, eigs)`` as the job's curve stage
    calls it. Experiment: the pool Gram read once in float64 when ``8 n² <= 1 GiB``, else
    ``gather`` per trial: computed from the stored inputs when cheaper (:func:`_computes`),
    else read (random rows touch about every tile); per trial one Cholesky of
    the largest ``K_pp + λI`` (nested sizes reuse it) or, at ridge 0, an eigh per size.
    Theory: a dense eigh of the pool when ``n <= min(dense limit, 12000)``, else the
    spectrum stage's eigenpairs (the job then requires that stage)."""
    cal, C = res.cal, n_outputs
    pmax = int(p.max())
    nt = int(n_test) if n_test else min(2000, n - pmax)
    notes: list[str] = []
    if pmax + nt > n:
        raise ValueError(f"learning curve: max p = {pmax} plus {nt} test points exceed n = {n}; "
                         "lower curve_points / the curve's n_test")
    read_s, read_b = dense_read(n, T, itemsize, res)
    cached = 8.0 * n * n <= 2**30
    reads = 1 if cached else trials
    if not cached and d > 0 and _computes(pmax + nt, pmax, n):
        read_s, read_b = subset_compute(pmax + nt, pmax, d, res), 0

    def lapack(f: float, rate: float) -> float:
        return f / res.client_flops(rate)

    per_trial = (pmax + nt) * pmax * (cal.cast_entry_s * 2 + REORDER_ENTRY_S)
    if ridge_relative > 0:
        per_trial += lapack(pmax**3 / 3.0, cal.cholesky_flops)
        per_trial += sum(lapack(2.0 * q * q * C + 2.0 * nt * q * C, cal.gemm_flops) for q in p)
        flops = trials * (pmax**3 / 3.0 + sum(2.0 * q * q * C + 2.0 * nt * q * C for q in p))
    else:
        per_trial += sum(q**3 * cal.eigh_s_per_n3 + lapack(4.0 * q * q * C + 2.0 * nt * q * C,
                                                            cal.gemm_flops) for q in p)
        flops = trials * sum(9.0 * q**3 for q in p)
    t = reads * read_s + trials * per_trial
    dense_theory = n <= min(_dense_limit(res.client_memory), 12000)
    if dense_theory:
        t += read_s + n**3 * cal.eigh_s_per_n3 / (res.client_threads * res.efficiency
                                                  if res.client_threads > 1 else 1)
        flops += 9.0 * n**3
        theory_mem = 32.0 * n * n
        notes.append("theory from a dense eigh of the pool")
    else:
        theory_mem = 0.0
        notes.append("theory from the spectrum stage's eigenpairs")
        if not eigs_available:
            notes.append("the job's curve stage needs the spectrum stage at this n: enable [spectrum]")
    exp_mem = (8.0 * n * n if cached else 0.0) + (pmax + nt) * pmax * 8 * 2 + pmax * pmax * 8 * 2
    return StageEstimate(
        "curve", f"{p.size} sizes up to p={pmax}, {trials} trials, {nt} test points", t,
        bytes_read=int((reads + (1 if dense_theory else 0)) * read_b),
        worker_peak_bytes=res.worker_baseline,
        client_peak_bytes=int(res.client_baseline + max(exp_mem, theory_mem)), flops=flops,
        notes=tuple(notes))


def lanczos_steps(n: int) -> int:
    """Heuristic Lanczos steps of ``solvers.krylov`` to 1e-10 on an NTK Gram (one pass each).

    Anchors (measured): 75 / 90 / 108 at n = 300 / 800 / 1500 (sphere data, tests of
    ``solvers.krylov``) and 170 at n = 8192 (Fashion-MNIST job): about 20 more per doubling.
    """
    return int(min(n, max(50, round(20 * math.log2(max(n, 2)) - 89))))


def dynamics_stage(n: int, m: int, d: int, T: int, itemsize: int, n_outputs: int, res: Resources,
                   times: int, steps: Optional[int] = None) -> StageEstimate:
    """``gradient_flow_op``: Lanczos passes of ``C`` columns over the stored Gram, then one
    streamed cross-kernel product with ``times x C`` columns for the ``m`` test points."""
    from .costs import predict_stage

    k = lanczos_steps(n) if steps is None else int(steps)
    one = pass_cost(n, T, itemsize, n_outputs, res)
    t = k * one["seconds"] + k * 4.0 * n * n_outputs * k / res.client_flops(res.cal.gemm_flops)
    worker, client, flops = one["worker_peak"], res.client_baseline + 8.0 * n * n_outputs * (k + times), k * one["flops"]
    if m:
        cross = predict_stage(m, n, d, T, times * n_outputs, res)
        t += cross.seconds
        worker, flops = max(worker, cross.worker_peak_bytes), flops + cross.flops
    return StageEstimate("dynamics", f"Lanczos, ~{k} passes of {n_outputs} columns (heuristic), "
                         f"{times} times", t, bytes_read=int(k * one["bytes_read"]),
                         worker_peak_bytes=int(worker), client_peak_bytes=int(client), flops=float(flops),
                         passes=k)
