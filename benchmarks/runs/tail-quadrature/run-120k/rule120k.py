import sys, numpy as np, tomllib
sys.path.insert(0, "/work/main")
from ntkscale.job import parse_job
from ntkscale.job.context import JobContext
from ntkscale.spectral import TailQuadrature, theory_converged, quadrature_spectrum, learning_curve
cfg = parse_job(tomllib.load(open("/work/s16/run120k/job.toml", "rb")), environ={})
Y, _ = JobContext(cfg).targets()
s = np.load("/work/s16/run120k/out/spectrum.npz"); q = TailQuadrature.from_arrays(s)
n = Y.shape[0]; eta = s["evals"] / n; v2 = (s["evecs"].T @ Y) ** 2 / n; lam = 0.3759687132288908
p = n * np.array([1 / 64, 1 / 16, 1 / 4, 1 / 2, 1])
for st in (5, 10, 15, 20):
    e, w, mu = quadrature_spectrum(eta, v2, q, steps=st)
    print(st, learning_curve(e, w, p, lam=lam, multiplicity=mu).Eg)
print("rule at 20:", theory_converged(eta, v2, p, lam)(q))
