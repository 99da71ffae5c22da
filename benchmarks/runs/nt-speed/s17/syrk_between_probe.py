import sys, time, resource, numpy as np
sys.path.insert(0, "benchmarks")
from ntkscale import stax
from ntkscale.kernels import fused
from nt_cases import CASES
n = 8192
build, make_x = CASES["fc_relu_d784"]
_, _, kfn = build(stax)
x = make_x(n, 0); flat = x.reshape(n, -1)
out = kfn(x, None, ("nngp", "ntk")); del out
def ru():
    r = resource.getrusage(resource.RUSAGE_SELF); return np.array([r.ru_utime, r.ru_stime, r.ru_minflt, r.ru_nvcsw, r.ru_nivcsw])
for i in range(6):
    time.sleep(0.3)
    a = ru(); t0 = time.perf_counter(); out = kfn(x, None, ("nngp", "ntk")); t1 = time.perf_counter(); b = ru()
    del out
    print(f"kfn {t1-t0:.3f}  user {b[0]-a[0]:.3f} sys {b[1]-a[1]:.3f} flt {b[2]-a[2]:.0f} vcsw {b[3]-a[3]:.0f} ivcsw {b[4]-a[4]:.0f}", flush=True)
    if i >= 2:
        time.sleep(0.3); G = fused.gram_upper(flat); del G
