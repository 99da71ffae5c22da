"""A guard around LAPACK Cholesky calls on large matrices (OpenBLAS's threaded ``potrf`` crash).

The OpenBLAS builds that NumPy 2.4 and SciPy 1.17 ship (0.3.31 and 0.3.30, ``SkylakeX`` kernels on
the AVX-512 CI-class VM) kill the process with a segmentation fault in ``dpotrf`` with 2 threads at
n >= 16 384 (measured: n = 14 000 factors in 6.3 s; 16 384 and 20 000 crash, upper or lower,
``scipy.linalg.cho_factor`` and ``numpy.linalg.cholesky`` alike; the same call with one thread
factors n = 20 000 in 33 s). Known upstream in other versions (OpenBLAS issues 352, 1413, 2821:
``dsyrk_thread`` inside ``dpotrf_*_parallel``). :func:`potrf_threads` runs such a call with one
BLAS thread above :data:`POTRF_THREADED_MAX`: slower, not a crash.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

__all__ = ["POTRF_THREADED_MAX", "SYRK_THREADED_MAX", "potrf_threads"]

POTRF_THREADED_MAX = 12288  # largest order factored with the library's BLAS threads
#: largest ``x x^T`` taken from SciPy's threaded ``dsyrk``/``ssyrk`` (``kernels.fused.gram_upper``):
#: the same ``dsyrk_thread`` kills the process at n = 24 000 (d = 784; 16 384 and 20 000 ran,
#: 12 288 ran with d = 10, 784, 3072); larger orders take NumPy's full GEMM ``x @ x.T``
SYRK_THREADED_MAX = 12288


@contextlib.contextmanager
def potrf_threads(n: int) -> Iterator[None]:
    """Context for a LAPACK Cholesky of order ``n``: one BLAS thread when ``n`` exceeds
    :data:`POTRF_THREADED_MAX`, else the threads as they are."""
    if n <= POTRF_THREADED_MAX:
        yield
        return
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield
