# python potrf_crash.py N {scipy,scipy-lower,numpy}: a dense Cholesky of order N with the
# library BLAS threads; on the AVX-512 VM with numpy 2.4 / scipy 1.17 wheels N >= 16384 segfaults.
import sys, numpy as np, scipy.linalg as sla, time
n = int(sys.argv[1]); lib = sys.argv[2]
rng = np.random.default_rng(0)
X = rng.standard_normal((n, 64)) / 8
A = np.exp(-0.5 * ((X**2).sum(1)[:, None] + (X**2).sum(1)[None] - 2 * X @ X.T)) + 1e-3 * np.eye(n)
A = np.asfortranarray(A)
t = time.perf_counter()
if lib == "scipy":
    c = sla.cho_factor(A, lower=False, overwrite_a=True, check_finite=False)
elif lib == "scipy-lower":
    c = sla.cho_factor(A, lower=True, overwrite_a=True, check_finite=False)
else:
    c = np.linalg.cholesky(np.ascontiguousarray(A))
print(lib, n, "ok", round(time.perf_counter() - t, 1), flush=True)
