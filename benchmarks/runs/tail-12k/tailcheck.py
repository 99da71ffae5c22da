import sys, json, numpy as np
sys.path.insert(0, "benchmarks")
from bench_tail import _kernel_fn, pool_check
M = int(sys.argv[1])
p = np.array([q for q in (50, 100, 200, 400, 1000, 2000, 3000, 5000, 8000, 10000) if q < 0.9 * M], float)
r = pool_check(_kernel_fn(), M, (50, 200, 500), p)
for k in (50, 200, 500):
    print(k, [f"{int(a)}:{b:+.3f}" for a, b in zip(p, r[f"k{k}"]["powerlaw_rel"])])
json.dump(r, open(f"/work/s15/tail_M{M}.json", "w"))
