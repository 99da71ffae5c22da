"""Top-500 eigenpairs of K from the RPCholesky factor (rank 8000) vs the spectrum stage's randomized eigh (120k)."""
import json, time, numpy as np
if __name__ == "__main__":
    from ntkscale.clusters import start_cluster
    from ntkscale.job import load_job
    from ntkscale.operator import StoredGram
    from ntkscale.solvers.api import build_preconditioner
    from ntkscale.solvers.rpcholesky import _gram64
    cfg = load_job("/work/s12/loo.toml")
    s = np.load("runs/s12-loo/spectrum.npz")
    ev_ref, V_ref = s["evals"], s["evecs"]  # eigenvalues of K (descending?), (n, k)
    with start_cluster(cfg.cluster) as h:
        op = StoredGram(cfg.store, client=h.client)
        t = time.perf_counter(); pre = build_preconditioner(op, 8000, "rpcholesky", seed=0, columns=op.columns); tb = time.perf_counter() - t
        t = time.perf_counter(); G = _gram64(pre.F); s2, W = np.linalg.eigh(G); te = time.perf_counter() - t
        k = ev_ref.size
        top = np.argsort(s2)[::-1][:k]
        lam = s2[top]; Wk = W[:, top] / np.sqrt(lam)
        U = np.empty((pre.F.shape[0], k))
        for r in range(0, U.shape[0], 4096):
            U[r:r+4096] = pre.F[r:r+4096].astype(np.float64) @ Wk
        ref = np.sort(ev_ref)[::-1]
        order = np.argsort(ev_ref)[::-1]; Vr = V_ref[:, order]
        rel = lam / ref - 1
        # subspace agreement of the top-j spaces: cosines of principal angles
        out = {"build_s": tb, "setup_s": te, "n": int(U.shape[0]), "k": k}
        for j in (10, 50, 100, 200, 500):
            c = np.linalg.svd(Vr[:, :j].T @ U[:, :j], compute_uv=False)
            out[f"min_cos_top{j}"] = float(c.min())
            out[f"max_rel_eig_err_top{j}"] = float(np.abs(rel[:j]).max())
        out["rel_eig_err_quantiles"] = [float(x) for x in np.quantile(np.abs(rel), [0.5, 0.9, 1.0])]
        out["ritz_of_ref"] = "ref eigenvalues are the randomized eigh's (3 passes, 750-column sketch)"
        print(json.dumps(out, indent=1))
        json.dump(out, open("/work/s12/rpc_eig.json", "w"), indent=1)
