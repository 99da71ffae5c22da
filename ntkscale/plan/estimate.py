"""``estimate``: time, disk and memory of a job's stages on a planned cluster."""

from __future__ import annotations

import os
from typing import Any, Optional, Sequence

import numpy as np

from ..kernels import Layer, spec_json
from ..linop import check_ridge
from ..solvers.api import SOLVERS as _SOLVERS  # one list of solver names
from ..tiling.layout import check_tile, choose_tile
from ._measure import n_activations
from .calibrate import Calibration, calibrate
from .costs import GPU_ASSUMPTIONS, Resources, gram_stage, predict_stage
from .report import Plan
from .solve_costs import curve_grid, curve_stage, dynamics_stage, fit_stage
from .spectrum_costs import spectrum_stage

__all__ = ["estimate", "worker_memory_limit"]

_KINDS = ("nngp", "ntk")


def worker_memory_limit(threads_per_worker: int = 1) -> int:
    """What ``LocalCluster(memory_limit='auto')`` gives a worker on this machine:
    system memory x ``min(1, threads / cores)`` (``distributed.worker_memory``)."""
    from distributed.system import MEMORY_LIMIT

    return int(MEMORY_LIMIT * min(1.0, threads_per_worker / (os.cpu_count() or 1)))


def _int(name: str, v: Any, lo: int) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
        raise ValueError(f"{name} must be an int >= {lo}, got {v!r}")
    return int(v)


def _check_kinds(kinds: Any) -> tuple[str, ...]:
    ks = (kinds,) if isinstance(kinds, str) else tuple(kinds)
    if not ks or any(k not in _KINDS for k in ks) or len(set(ks)) != len(ks):
        raise ValueError(f"kinds must be a non-empty subset of {_KINDS}, got {kinds!r}")
    return tuple(k for k in _KINDS if k in ks)  # the store's order


def estimate(n: int, d: int, arch: Layer, *, n_test: int = 0, kinds: Sequence[str] = ("ntk",),
             store_dtype: str = "float32", tile: Optional[int] = None, workers: int = 2,
             threads_per_worker: int = 1, memory_per_worker: Optional[float] = None, gpus: int = 0,
             solver: str = "auto", ridge_relative: float = 1e-3, pcg_rank: int = 1000,
             pcg_iters: Optional[int] = None, spectrum_k: int = 0,
             curve_points: int | Sequence[int] = 0, calibration: Calibration | str | None = None,
             n_outputs: int = 1, fit: bool = True, tol: float = 1e-8, maxiter: int = 1000,
             power_iters: int = 2, curve_trials: int = 5, curve_n_test: Optional[int] = None,
             ridge_selection: bool = False, ridge_subsample: Optional[int] = None,
             client_memory: Optional[float] = None, page_cache: Optional[float] = None,
             client_threads: Optional[int] = None, efficiency: Optional[float] = None,
             fresh_workers: bool = True, dynamics_times: int = 0, preconditioner: str = "auto",
             tail_steps: int = 0, tail_columns: int = 0) -> Plan:
    """Estimate time, disk and memory of a job's stages, scaled by a calibration.

    Stages (as ``ntkscale run`` runs them, :mod:`ntkscale.job.stages`): ``gram`` (train
    Gram build, every kind in ``kinds``), ``fit`` (``solve``), ``predict`` (test
    cross-kernel products, when ``n_test > 0``), ``spectrum`` (``randomized_eigh``, when
    ``spectrum_k > 0``), ``curve`` (learning curve, when ``curve_points``).

    Parameters
    ----------
    n, d : int
        Training rows and input features.
    arch : Layer
        Architecture (``stax.serial(...)``).
    n_test : int
        Test rows (predictions ``K(X*, X) α``).
    kinds : sequence of {'nngp', 'ntk'}
        Stored kinds; the fitted kind is 'ntk' when stored, else 'nngp'.
    store_dtype : {'float32', 'float64'}
    tile : int, optional
        Tile edge; default as ``build_gram`` chooses it (``choose_tile`` with the worker
        memory per slot and the slot count).
    workers, threads_per_worker : int
        Planned Dask workers; ``workers × threads`` parallel slots.
    memory_per_worker : float, optional
        Worker memory limit in bytes (default: ``LocalCluster``'s 'auto' rule on this machine).
    gpus : int
        GPU workers (one task per GPU): kernel rates from :data:`GPU_ASSUMPTIONS`
        (uncalibrated); the solve, matvec passes and store I/O stay on CPUs.
    solver, ridge_relative, pcg_rank, pcg_iters, tol, maxiter
        As ``solve`` (ridge relative to the mean diagonal). ``pcg_iters``: iterations to
        assume (default: :func:`~ntkscale.plan.solve_costs.pcg_iterations`, a heuristic).
    preconditioner : {'auto', 'nystrom', 'rpcholesky'}
        PCG's preconditioner as ``solve`` takes it (the sketch's pass, or RPCholesky's columns);
        'auto' is planned as RPCholesky (a job's store computes its columns from its inputs).
    spectrum_k, power_iters : int
        Eigenpairs and power steps of the spectrum stage (0: no stage).
    tail_steps, tail_columns : int
        The spectrum stage's tail quadrature: passes and their columns (0: none).
    curve_points : int or sequence of int
        Number of log-spaced training sizes, or the sizes (0: no stage).
    curve_trials, curve_n_test : int
        Trials per size, held-out pool points (default ``min(2000, n - max p)``).
    dynamics_times : int
        Times of the gradient-flow stage (0: no stage); Lanczos passes from
        :func:`~ntkscale.plan.solve_costs.lanczos_steps` (a heuristic).
    calibration : Calibration, str or None
        A calibration, a JSON path of one, or None to run :func:`calibrate` now (~5 s).
    n_outputs : int
        Right-hand sides C (classes for one-hot classification).
    fit : bool
        Plan the solve stage (False: only the Gram build and what follows without it).
    ridge_selection : bool
        The ridge is chosen by GCV/LOO first (one dense eigh of the Gram, or of a
        ``ridge_subsample``-point sub-block; default as ``choose_ridge``).
    page_cache : float, optional
        Bytes of a store that stay in the page cache between passes (default: this machine's
        RAM less the workers' and the client's baselines and 2 GiB); a larger store is read
        from disk on every pass, at the calibrated cold rate.
    client_memory, client_threads : optional
        Client RAM available (default: available now) and BLAS threads (default: cores).
    efficiency : float, optional
        Per-slot parallel efficiency; default the calibration's.
    fresh_workers : bool
        The build runs on freshly started workers (as ``ntkscale run`` does): each loads the
        kernels first (``Calibration.worker_warmup_s``). False: workers already warm.

    Returns
    -------
    Plan
        ``.table()``, ``.to_dict()``, ``.stage(name)``, totals.

    Notes
    -----
    The model: build time = list schedule (largest tile first) of per-tile times
    ``area · entry_s + chunk writes + input read`` on the slots, each divided by the per-slot
    efficiency, plus fixed costs measured on this machine; a pass over the Gram = chunk reads
    (CRC, decode) + cast + ``n²`` entry-products; dense client LAPACK at the calibrated
    single-thread rates x client cores x efficiency. See ``costs.py`` / ``solve_costs.py``.
    Flop counts: Cholesky ``n³/3``, symmetric eigendecomposition with vectors ``~9 n³``.
    Not modeled: contention with other jobs on the machine (calibrate right before), the
    ``dynamics`` stage's iteration count (a heuristic).

    References
    ----------
    Graham, "Bounds for certain multiprocessing anomalies", Bell Syst. Tech. J. 45 (1966)
    (list scheduling, the ``sum/slots + max`` bound); Golub & Van Loan, *Matrix
    Computations*, 4th ed. (2013), §4.2 and §8.3 (Cholesky and symmetric QR flop counts);
    Halko, Martinsson & Tropp, SIAM Rev. 53(2) (2011), §4 and §6 (randomized range finder
    passes and costs); Frangella, Tropp & Udell, SIAM J. Matrix Anal. Appl. 44(2) (2023)
    (Nyström-preconditioned CG).
    """
    n, d = _int("n", n, 2), _int("d", d, 1)
    n_test = _int("n_test", n_test, 0)
    workers, threads = _int("workers", workers, 1), _int("threads_per_worker", threads_per_worker, 1)
    gpus = _int("gpus", gpus, 0)
    kinds_t = _check_kinds(kinds)
    if store_dtype not in ("float32", "float64"):
        raise ValueError(f"store_dtype must be 'float32' or 'float64', got {store_dtype!r}")
    if solver not in _SOLVERS:
        raise ValueError(f"solver must be one of {_SOLVERS}, got {solver!r}")
    ridge_relative = check_ridge(ridge_relative, "ridge_relative")
    if not isinstance(arch, Layer):
        raise TypeError(f"arch must be an ntkscale architecture (stax.serial(...)), got {type(arch).__name__}")
    itemsize = 4 if store_dtype == "float32" else 8
    if calibration is None:
        calibration = calibrate(d, arch)
    elif isinstance(calibration, (str, os.PathLike)):
        calibration = Calibration.load(str(calibration))
    if not isinstance(calibration, Calibration):
        raise TypeError(f"calibration must be a Calibration, a JSON path or None, got {type(calibration).__name__}")
    cal = calibration
    notes: list[str] = []
    n_act, stat_rows = n_activations(arch, d)
    if spec_json(arch) != cal.arch:
        notes.append(f"calibrated on another architecture: elementwise kernel work scaled by "
                     f"activations {n_act}/{cal.n_activations}")
    if cal.d != d:
        notes.append(f"calibrated at d={cal.d}: kernel GEMM part rescaled to d={d}")
    slots = gpus if gpus else workers * threads
    if gpus:
        entry_s = 2.0 * d / GPU_ASSUMPTIONS["fp64_gemm_flops"] + max(n_act, 1) / \
            GPU_ASSUMPTIONS["elementwise_entries_per_s_per_activation"]
        notes.append(f"{gpus} GPU worker(s): kernel tiles at assumed (uncalibrated) GPU rates "
                     f"{GPU_ASSUMPTIONS}; passes over the Gram, solves and store I/O on CPUs")
    else:
        entry_s = cal.entry_seconds(d, n_act)
    mem = float(memory_per_worker) if memory_per_worker is not None else float(worker_memory_limit(threads))
    if mem <= 0:
        raise ValueError(f"memory_per_worker must be > 0 bytes, got {memory_per_worker!r}")
    if tile is None:
        T = choose_tile(n, n, d, memory_per_task=mem / threads, n_kinds=len(kinds_t),
                        store_itemsize=itemsize, parallel_tasks=slots, symmetric=True)
    else:
        # the task count and the clip to n as the build checks them; memory over the limit is
        # reported in the plan's notes (a plan may be for a cluster with other workers)
        T = check_tile(_int("tile", tile, 1), n, n, d, n_kinds=len(kinds_t), store_itemsize=itemsize)
    eff = cal.efficiency if efficiency is None else float(efficiency)
    if not 0 < eff <= 1:
        raise ValueError(f"efficiency must be in (0, 1], got {efficiency!r}")
    if client_memory is None:
        import psutil

        client_memory = float(psutil.virtual_memory().available)
    if page_cache is None:
        import psutil

        page_cache = (psutil.virtual_memory().total - workers * (cal.worker_rss_bytes or cal.process_rss_bytes)
                      - cal.process_rss_bytes - 2 * 2**30)
    res = Resources(cal=cal, slots=slots, workers=gpus or workers, threads=1 if gpus else threads,
                    gpus=gpus, efficiency=eff, client_threads=int(client_threads or os.cpu_count() or 1),
                    client_memory=float(client_memory), memory_per_worker=mem, entry_s=entry_s,
                    page_cache=float(page_cache))
    stages = [gram_stage(n, d, T, kinds_t, itemsize, stat_rows, res, fresh_workers=bool(fresh_workers))]
    if fit:
        stages.append(fit_stage(n, T, itemsize, _int("n_outputs", n_outputs, 1), res, solver=solver,
                                ridge_relative=float(ridge_relative), pcg_rank=_int("pcg_rank", pcg_rank, 1),
                                pcg_iters=None if pcg_iters is None else _int("pcg_iters", pcg_iters, 1),
                                tol=float(tol), maxiter=_int("maxiter", maxiter, 1),
                                ridge_selection=bool(ridge_selection),
                                ridge_subsample=None if ridge_subsample is None
                                else _int("ridge_subsample", ridge_subsample, 2), d=d,
                                preconditioner=str(preconditioner)))
        if n_test:
            stages.append(predict_stage(n_test, n, d, T, n_outputs, res))
    if spectrum_k:
        stages.append(spectrum_stage(n, T, itemsize, _int("spectrum_k", spectrum_k, 1), res,
                                     power_iters=_int("power_iters", power_iters, 0),
                                     tail_steps=int(tail_steps), tail_columns=int(tail_columns)))
    if not (isinstance(curve_points, (int, np.integer)) and curve_points == 0):
        p = curve_grid(n, curve_points)
        if p.size == 0 or p.min() < 1:
            raise ValueError(f"curve_points must be a count or a list of sizes >= 1, got {curve_points!r}")
        stages.append(curve_stage(n, T, itemsize, n_outputs, res, p, _int("curve_trials", curve_trials, 1),
                                  curve_n_test, float(ridge_relative), eigs_available=bool(spectrum_k), d=d))
    if dynamics_times:
        stages.append(dynamics_stage(n, n_test, d, T, itemsize, n_outputs, res,
                                     _int("dynamics_times", dynamics_times, 1)))
    worker_peak = max(s.worker_peak_bytes for s in stages)
    if worker_peak > mem:
        notes.append(f"a worker needs {worker_peak / 2**30:.2f} GiB at peak but its limit is "
                     f"{mem / 2**30:.2f} GiB (Dask pauses at 80 % and restarts at 95 %)")
    return Plan(n=n, d=d, n_test=n_test, kinds=kinds_t, tile=int(T), workers=res.workers,
                threads_per_worker=res.threads, gpus=gpus, slots=slots, memory_per_worker=mem,
                efficiency=eff, stages=tuple(stages), calibration=cal, notes=tuple(notes))
