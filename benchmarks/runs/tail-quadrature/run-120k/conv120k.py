import json, sys, numpy as np
sys.path.insert(0, "/work/main")
from ntkscale.job import parse_job
from ntkscale.job.context import JobContext
from ntkscale.spectral import heldout_error, theory_learning_curve, TailQuadrature
import tomllib
cfg = parse_job(tomllib.load(open("/work/s16/run120k/job.toml", "rb")), environ={})
ctx = JobContext(cfg)
Y, _ = ctx.targets()
s = np.load("/work/s16/run120k/out/spectrum.npz")
q = TailQuadrature.from_arrays(s)
n = Y.shape[0]
m = json.load(open("/work/s16/run120k/out/metrics.spectrum-curve.json"))["stages"]["curve"]
p = np.array(m["p"]); lam = m["ridge"]; exp = np.array(m["experiment_mean"])
eig = (s["evals"], s["evecs"])
out = {"p": p.tolist(), "experiment": exp.tolist()}
for st in (5, 10, 20):
    th = theory_learning_curve(eig, Y, p, lam, trace=float(s["trace"]), tail="quadrature", quadrature=q.truncated(st))
    h = heldout_error(th, n, lam); out[f"quad{st}"] = h.tolist()
    print(f"quad {st:2d} steps", " ".join(f"{a:+.4f}" for a in exp / h - 1))
th = theory_learning_curve(eig, Y, p, lam, trace=float(s["trace"]), tail="powerlaw")
h = heldout_error(th, n, lam); out["powerlaw"] = h.tolist()
print("powerlaw     ", " ".join(f"{a:+.4f}" for a in exp / h - 1))
# probe jackknife: leave one probe out
C = q.outputs; P = q.alpha.shape[1] - C
jk = []
for j in range(P):
    keep = [c for c in range(C)] + [C + i for i in range(P) if i != j]
    qj = TailQuadrature(alpha=q.alpha[:, keep], beta=q.beta[:, keep], length=q.length[keep], norm2=q.norm2[keep], outputs=C, modes=q.modes)
    jk.append(heldout_error(theory_learning_curve(eig, Y, p, lam, trace=float(s["trace"]), tail="quadrature", quadrature=qj), n, lam))
jk = np.array(jk)
se = np.sqrt((P - 1) / P * np.sum((jk - jk.mean(0)) ** 2, axis=0))
out["jackknife_se"] = se.tolist()
print("probe jackknife SE / theory", " ".join(f"{a:.4f}" for a in se / np.array(out['quad20'])))
json.dump(out, open("/work/s16/run120k/conv120k.json", "w"), indent=1)
