"""Planner cost of the spectrum stage: the randomized eigensolver's passes and client work,
and the tail quadrature's passes (:mod:`ntkscale.job.stages`, ``stage_spectrum``)."""

from __future__ import annotations

from .costs import Resources, dense_read, pass_cost
from .report import StageEstimate
from .solve_costs import QR_NS2, SVD_NS2

__all__ = ["spectrum_stage"]


def spectrum_stage(n: int, T: int, itemsize: int, k: int, res: Resources,
                   power_iters: int = 2, n_probes: int = 10, tail_steps: int = 0,
                   tail_columns: int = 0) -> StageEstimate:
    """``randomized_eigh(op, min(k, n-1), power_iters)`` with the error pass: sketch of
    ``s = k + max(10, k//2)`` columns; ``power_iters + 1`` passes of ``s`` columns and one of
    ``s + n_probes``; client QRs (``1 + power_iters``), SVD and Rayleigh–Ritz
    ``≈ (QR_NS2 (1 + power_iters) + SVD_NS2 + 5) n s² + 4 n s k`` GEMM-equivalent flops
    and an s x s eigh; then ``tail_steps`` passes of ``tail_columns`` (the tail's Lanczos
    quadrature, :func:`ntkscale.spectral.quadrature.tail_quadrature`). ``s >= n``: dense
    LAPACK eigh (exact path)."""
    cal = res.cal
    k = min(int(k), n - 1)
    s = k + max(10, k // 2)
    base = res.client_baseline
    if s >= n:
        read_s, read_b = dense_read(n, T, itemsize, res)
        t = read_s + n**3 * cal.eigh_s_per_n3 / (res.client_threads * res.efficiency
                                                 if res.client_threads > 1 else 1)
        return StageEstimate("spectrum", f"dense eigh (k + oversample >= n = {n})", t, bytes_read=read_b,
                             worker_peak_bytes=res.worker_baseline, client_peak_bytes=int(base + 32.0 * n * n),
                             flops=9.0 * n**3, passes=1)
    sketch = pass_cost(n, T, itemsize, s, res)
    last = pass_cost(n, T, itemsize, s + n_probes, res)
    passes = power_iters + 2
    cflops = (QR_NS2 * (1 + power_iters) + SVD_NS2 + 5.0) * n * s * s + 4.0 * n * s * k
    t = ((power_iters + 1) * sketch["seconds"] + last["seconds"] + cflops / res.client_flops(cal.gemm_flops)
         + s**3 * cal.eigh_s_per_n3)
    how = f"randomized eigh, k={k}, sketch {s} columns, {passes} passes"
    tail = pass_cost(n, T, itemsize, max(int(tail_columns), 1), res) if tail_steps else None
    if tail is not None:  # the Lanczos basis: tail_steps x n x columns floats on the client
        t += tail_steps * tail["seconds"]
        how += f" + tail quadrature, {tail_steps}+ passes of {tail_columns} columns (more until it settles)"
    return StageEstimate(
        "spectrum", how, t,
        bytes_read=int(passes * sketch["bytes_read"] + (tail_steps * tail["bytes_read"] if tail else 0)),
        worker_peak_bytes=int(last["worker_peak"]),
        client_peak_bytes=int(base + max(8.0 * n * (s + n_probes) * 8,
                                         (tail_steps + 3) * n * tail_columns * 8.0 + n * k * 8.0)),
        flops=(power_iters + 1) * sketch["flops"] + last["flops"] + cflops
        + (tail_steps * tail["flops"] if tail else 0),
        passes=passes + int(tail_steps))
