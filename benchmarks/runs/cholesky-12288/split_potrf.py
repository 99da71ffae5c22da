# A measurement script (not a test): python split_potrf.py N [H]. One 2x2 block split of an
# n x n Cholesky, each LAPACK/BLAS call threaded; compare with potrf_crash.py N scipy (1 thread).
import sys, time, numpy as np, scipy.linalg as sla
from scipy.linalg.blas import dsyrk, dtrsm
from scipy.linalg.lapack import dpotrf
n = int(sys.argv[1]); h = int(sys.argv[2]) if len(sys.argv) > 2 else n // 2
rng = np.random.default_rng(0)
X = rng.standard_normal((n, 64)) / 8
sq = (X**2).sum(1)
A = np.exp(-0.5 * (sq[:, None] + sq[None] - 2 * X @ X.T)) + 1e-3 * np.eye(n)
ref_rhs = rng.standard_normal(n)
t = time.perf_counter()
A11 = np.asfortranarray(A[:h, :h]); A12 = np.asfortranarray(A[:h, h:]); A22 = np.asfortranarray(A[h:, h:])
U11, info = dpotrf(A11, lower=0, clean=1, overwrite_a=1); assert info == 0
A12 = dtrsm(1.0, U11, A12, side=0, lower=0, trans_a=1, overwrite_b=1)  # U11^-T A12
A22 = dsyrk(-1.0, A12, beta=1.0, c=A22, trans=1, lower=0, overwrite_c=1)  # A22 - A12^T A12 (upper)
U22, info = dpotrf(A22, lower=0, clean=1, overwrite_a=1); assert info == 0
dt = time.perf_counter() - t
U = np.zeros((n, n), order="F"); U[:h, :h] = U11; U[:h, h:] = A12; U[h:, h:] = U22
x = sla.cho_solve((U, False), ref_rhs)
print("split", n, h, round(dt, 1), "s; residual", np.linalg.norm(A @ x - ref_rhs) / np.linalg.norm(ref_rhs), flush=True)
