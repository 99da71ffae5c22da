import numpy as np, time, numba as nb, sys
from ntkscale.kernels import _numba_kernels as nk
from ntkscale.kernels._numba_kernels import _layers

@nb.njit(fastmath=True, inline="always")
def _tr8(src, dst, r0, c0, mi, mj):
    # dst[r0 + jj, c0 + ii] = src[ii, jj] in 8x8 tiles (mi, mj multiples of 8)
    for jb in range(0, mj, 8):
        for ib in range(0, mi, 8):
            for a in range(8):
                for b in range(8):
                    dst[r0 + jb + a, c0 + ib + b] = src[ib + b, jb + a]

@nb.njit(parallel=True, fastmath=True, nogil=True)
def sym5(G, inv_d, kinds, params, slot, f, g, out_q, out_t, bs):
    n = G.shape[0]
    nblk = (n + bs - 1) // bs
    npairs = nblk * (nblk + 1) // 2
    pair_i = np.empty(npairs, np.int64); pair_j = np.empty(npairs, np.int64)
    c = 0
    for a in range(nblk):
        for b in range(a, nblk):
            pair_i[c] = a; pair_j[c] = b; c += 1
    for p in nb.prange(npairs):
        bi = pair_i[p]; bj = pair_j[p]
        i0 = bi * bs; i1 = min(i0 + bs, n)
        j0 = bj * bs; j1 = min(j0 + bs, n)
        mi = i1 - i0; mj = j1 - j0
        bq = np.empty((mi, mj)); bt = np.empty((mi, mj))
        for ii in range(mi):
            q = bq[ii]; t = bt[ii]
            for jj in range(mj):
                q[jj] = G[i0 + ii, j0 + jj] * inv_d
                t[jj] = 0.0
            _layers(q, t, i0 + ii, j0, kinds, params, slot, f, g, f, g)
        if bi == bj:
            for ii in range(mi):
                for jj in range(ii, mj):
                    out_q[i0 + ii, j0 + jj] = bq[ii, jj]; out_t[i0 + ii, j0 + jj] = bt[ii, jj]
                    out_q[j0 + jj, i0 + ii] = bq[ii, jj]; out_t[j0 + jj, i0 + ii] = bt[ii, jj]
        else:
            for ii in range(mi):
                for jj in range(mj):
                    out_q[i0 + ii, j0 + jj] = bq[ii, jj]
                    out_t[i0 + ii, j0 + jj] = bt[ii, jj]
            if mi % 8 == 0 and mj % 8 == 0:
                _tr8(bq, out_q, j0, i0, mi, mj)
                _tr8(bt, out_t, j0, i0, mi, mj)
            else:
                for jj in range(mj):
                    for ii in range(mi):
                        out_q[j0 + jj, i0 + ii] = bq[ii, jj]
                        out_t[j0 + jj, i0 + ii] = bt[ii, jj]

n=8192; rng=np.random.default_rng(0)
x=rng.standard_normal((n,784)); G=(x@x.T)/784
v=np.ones((3,n)); f=np.sqrt(v); g=1/f
relu=(1.0,0.0,0,0); dense=(2.0,0.01,1.0,0.0)
kinds=[];params=[];slot=[]
for l in range(3):
    kinds+= [0,1]; params+=[dense,relu]; slot+=[-1,l]
kinds+=[0]; params+=[dense]; slot+=[-1]
K=(np.array(kinds,np.int64),np.array(params,float).reshape(-1,4),np.array(slot,np.int64))
Gc=G.copy(); ot=np.zeros((n,n))
cands = {"orig256": (nk.chain_kernel_sym, 256), "orig128": (nk.chain_kernel_sym, 128),
         "s5-256": (sym5, 256), "s5-128": (sym5, 128), "s5-192": (sym5, 192)}
ref = None
for k, c in cands.items():
    np.copyto(Gc, G); ot[:] = 0; c[0](Gc,1.0,*K,f,g,Gc,ot,*c[1:])
    if ref is None: ref = (Gc.copy(), ot.copy())
    else: print(k, "max diff", np.abs(Gc-ref[0]).max(), np.abs(ot-ref[1]).max())
del ref
T = {k: [] for k in cands}
for rnd in range(15):
    for k, c in cands.items():
        np.copyto(Gc, G); ot[:] = 0
        t0=time.perf_counter(); c[0](Gc,1.0,*K,f,g,Gc,ot,*c[1:]); T[k].append(time.perf_counter()-t0)
for k, v in T.items():
    print(k, "median %.4f min %.4f max %.4f" % (np.median(v), np.min(v), np.max(v)))
