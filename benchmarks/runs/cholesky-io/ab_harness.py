"""Profile the tiled Cholesky at n=12288: wall vs task seconds, per-kind task times."""
import os, sys, time, json, statistics
import numpy as np

if __name__ == "__main__":
    sys.path.insert(0, "/work/main/benchmarks")
    from bench_gram import arch_depth3
    from distributed import Client, LocalCluster
    from ntkscale.runner import pinned_env
    from ntkscale.operator import StoredGram
    from ntkscale.tiling import build_gram
    from ntkscale.tiling.cholesky import factor_tiles
    n = int(sys.argv[1]); tile = int(sys.argv[2]); reps = int(sys.argv[3])
    dts = sys.argv[4].split(",") if len(sys.argv) > 4 else ["float64"]
    ftile = int(sys.argv[5]) if len(sys.argv) > 5 else None
    gram = f"/work/s13/gram{n}-{tile}"
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      env=dict(pinned_env(1), NUMPY_MADVISE_HUGEPAGE=os.environ.get("HP", "1"))) as cl, Client(cl) as client:
        if not os.path.exists(gram):
            X = np.random.default_rng(0).standard_normal((n, 784))
            t = time.perf_counter()
            build_gram(arch_depth3(), X, gram, get="ntk", tile=tile, dtype=np.float64, client=client)
            print("build", time.perf_counter() - t)
        op = StoredGram(gram, "ntk", client=client)
        lam = 1e-3 * float(op.diag().mean())
        for dt in dts:
          for r in range(reps):
            rec = []
            t = time.perf_counter()
            f = factor_tiles(op, lam, factor_url=f"/work/s13/chol-{dt}", dtype=dt, overwrite=True, tile=ftile,
                             on_tile=rec.append)
            w = time.perf_counter() - t
            s = sum(x[2] for x in rec)
            diag = sum(x[2] for x in rec if x[0] == x[1]); off = s - diag
            print(f"{dt} wall {w:.2f}  tasks {s:.2f} (diag {diag:.2f}, off {off:.2f}) overhead {w - s:.2f}  "
                  f"GF/s {n**3/3/w/1e9:.1f}", flush=True)
