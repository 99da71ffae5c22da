"""A guard around LAPACK Cholesky calls on large matrices (OpenBLAS's threaded ``potrf`` crash).

The OpenBLAS builds that NumPy 2.4 and SciPy 1.17 ship (0.3.31 and 0.3.30, ``SkylakeX`` kernels on
the AVX-512 CI-class VM) kill the process with a segmentation fault in ``dpotrf`` with 2 threads at
n >= 16 384 (measured: n = 14 000 factors in 6.3 s; 16 384 and 20 000 crash, upper or lower,
``scipy.linalg.cho_factor`` and ``numpy.linalg.cholesky`` alike; the same call with one thread
factors n = 20 000 in 33 s). Known upstream in other versions (OpenBLAS issues 352, 1413, 2821:
``dsyrk_thread`` inside ``dpotrf_*_parallel``). :func:`potrf_threads` runs such a call with one
BLAS thread above :data:`POTRF_THREADED_MAX`: slower, not a crash. :func:`potrf` factors such a
matrix blocked instead, every LAPACK/BLAS call on blocks of at most that order and threaded
(measured at n = 20 000: 27.9 s against 43.2 s for the one-thread ``potrf``,
``benchmarks/bench_potrf.py``).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import numpy as np
from scipy.linalg.blas import get_blas_funcs
from scipy.linalg.lapack import get_lapack_funcs

__all__ = ["POTRF_THREADED_MAX", "SYRK_THREADED_MAX", "potrf_threads", "potrf"]

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


def potrf(A: np.ndarray, lower: bool = False) -> tuple[np.ndarray, int]:
    """Cholesky factor of the symmetric positive definite ``A`` (n, n), overwriting it.

    ``A`` should be Fortran-ordered float32/float64 (otherwise LAPACK works on a copy). Up to
    :data:`POTRF_THREADED_MAX` this is LAPACK's ``potrf`` with the BLAS threads as they are.
    Above, a right-looking blocked factorization ``A = UᵀU`` with nb = ⌈n / POTRF_THREADED_MAX⌉
    equal blocks, each step ``U_kk = potrf(A_kk)``, ``U_k,>k = U_kk⁻ᵀ A_k,>k`` (``trsm``) and the
    trailing update ``A_>k,>k −= U_k,>kᵀ U_k,>k`` (per block column: GEMM above its diagonal
    block, SYRK on it),
    every call threaded on blocks no larger than the order OpenBLAS factors safely (Golub & Van
    Loan, *Matrix Computations*, 4th ed., Alg. 4.2.4, blocked by columns).

    Parameters
    ----------
    A : ndarray, shape (n, n)
        Read from its upper triangle (the lower one only for ``n <= POTRF_THREADED_MAX`` with
        ``lower=True``, as LAPACK).
    lower : bool
        Return ``L`` (``A = LLᵀ``) instead of ``U``.

    Returns
    -------
    c : ndarray, shape (n, n)
        The factor, its other triangle zeroed (``clean``); ``A`` itself (or its transpose) when
        it was Fortran-ordered.
    info : int
        0, or ``j + 1`` where the leading minor of order ``j + 1`` is not positive definite
        (LAPACK's convention; the factor is then incomplete).
    """
    n = A.shape[0]
    lapack = get_lapack_funcs("potrf", (A,))
    if n <= POTRF_THREADED_MAX:
        c, info = lapack(A, lower=lower, clean=1, overwrite_a=1)
        if info < 0:  # pragma: no cover
            raise RuntimeError(f"potrf: illegal argument {-info}")
        return c, int(info)
    A = np.asfortranarray(A)
    trsm, syrk = get_blas_funcs(("trsm", "syrk"), (A,))
    nb = -(-n // POTRF_THREADED_MAX)
    b = -(-n // nb)
    for k0 in range(0, n, b):
        k1 = min(k0 + b, n)
        ukk, info = lapack(np.asfortranarray(A[k0:k1, k0:k1]), lower=0, clean=1, overwrite_a=1)
        if info != 0:
            if info < 0:  # pragma: no cover
                raise RuntimeError(f"potrf: illegal argument {-info}")
            return A, k0 + int(info)
        A[k0:k1, k0:k1] = ukk
        if k1 == n:
            break
        panel = trsm(1.0, ukk, np.asfortranarray(A[k0:k1, k1:]), side=0, lower=0, trans_a=1, overwrite_b=1)
        A[k0:k1, k1:] = panel
        A[k1:, k0:k1] = 0.0  # (clean: below the diagonal block)
        for j0 in range(k1, n, b):  # block column j of the trailing matrix: GEMM above its
            j1 = min(j0 + b, n)       # diagonal block, SYRK (upper) on it
            pj = panel[:, j0 - k1:j1 - k1]
            if j0 > k1:
                A[k1:j0, j0:j1] -= panel[:, :j0 - k1].T @ pj
            A[j0:j1, j0:j1] = syrk(-1.0, pj, beta=1.0, c=np.asfortranarray(A[j0:j1, j0:j1]), trans=1,
                                   lower=0, overwrite_c=1)
    return (A.T if lower else A), 0
