"""Capacity planning: time, disk and memory of a job before booking a cluster.

:func:`calibrate` measures this machine in a few seconds (kernel tile rate for the
architecture and input width, dense GEMM / Cholesky / eigh rates, Gram-store write and
read rates; optionally the cluster's task overhead and parallel efficiency);
:func:`estimate` turns a job's sizes and a calibration into a :class:`Plan` with one row
per stage (``gram``, ``fit``, ``predict``, ``spectrum``, ``curve``), as ``ntkscale run``
executes them; :func:`estimate_from_config` plans a parsed job (:class:`ntkscale.job.JobConfig`).

    >>> from ntkscale.plan import calibrate, estimate
    >>> cal = calibrate(784, arch)                                    # doctest: +SKIP
    >>> print(estimate(60000, 784, arch, workers=16, calibration=cal).table())  # doctest: +SKIP
"""

from .calibrate import Calibration, calibrate
from .config import estimate_from_config
from .costs import GPU_ASSUMPTIONS
from .estimate import estimate, worker_memory_limit
from .report import Plan, StageEstimate
from .solve_costs import pcg_iterations

__all__ = ["Calibration", "calibrate", "estimate", "estimate_from_config", "Plan", "StageEstimate",
           "GPU_ASSUMPTIONS", "pcg_iterations", "worker_memory_limit"]
