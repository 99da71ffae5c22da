import sys, time, resource, numpy as np
sys.path.insert(0, "benchmarks")
from ntkscale import stax
from nt_cases import CASES
n = 8192
build, make_x = CASES["fc_relu_d784"]
_, _, kfn = build(stax)
x = make_x(n, 0)
out = kfn(x, None, ("nngp", "ntk")); del out
def ru():
    r = resource.getrusage(resource.RUSAGE_SELF); return np.array([r.ru_utime, r.ru_stime])
for gap in [0.3, 1.0, 1.5, 2.5, 4.0, 0.3, 3.0, 0.3]:
    time.sleep(gap)
    a = ru(); t0 = time.perf_counter(); out = kfn(x, None, ("nngp", "ntk")); t1 = time.perf_counter(); b = ru()
    del out
    print(f"gap {gap}: kfn {t1-t0:.3f}  user {b[0]-a[0]:.3f} sys {b[1]-a[1]:.3f}", flush=True)
