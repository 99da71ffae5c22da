"""The formulas behind ``gp_inference`` and ``gradient_descent_mse_ensemble`` (NT conventions).

For one kind ``g`` with train kernel ``K_g`` (+ ridge), test-train ``K_g(x, X)`` and
``Phi = (K_g + lambda)^-1`` (infinite time) or ``Phi_t = phi_t(K_g + lambda)`` with
``phi_t(s) = (1 - exp(-s t/N))/s`` (finite time):

* mean ``K_g(x, X) Phi y``;
* NNGP (and NTK-GP) covariance ``k(x, x) - K_g(x, X) Phi' K_g(X, x)`` with ``Phi' = Phi`` at
  infinite time and ``phi_{2t}`` at finite time (Lee et al. 2019, Eq. 14);
* NTK covariance ``K(x,x) + A K(X,X) A^T - (A K(X,x) + K(x,X) A^T)``, ``A = Theta(x,X) Phi``
  (Lee et al. 2019, Eq. 16; K = NNGP).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np

from ._args import Gaussian, Targets
from ._train import Cross, TrainKernel, flow_fns

__all__ = ["posterior", "train_set"]


def posterior(g: str, train: Callable[[str], TrainKernel], y: Targets, cross: Callable[[str], Cross],
              k_tt: Optional[Callable[[str], np.ndarray]], ts: Optional[np.ndarray] = None,
              lead: tuple[int, ...] = ()) -> Any:
    """Test-set mean [and covariance] for ``get`` entry ``g`` ('nngp', 'ntk', 'ntkgp').

    ``ts`` None: infinite time (solves); else times (T,) already x learning rate, with
    ``lead`` the shape of ``t``. ``k_tt(kind)`` gives the test-test kernel (m, m) when a
    covariance is wanted (None: mean only).
    """
    k = "ntk" if g == "ntkgp" else g
    tr = train(k)
    ktd = cross(k)
    T = 1 if ts is None else ts.size
    scale = 1.0 / y.y.size
    g_init = "ntk" if g == "ntkgp" else "nngp"
    if k_tt is not None:
        kx = ktd.dense()  # shape: (m, n)
        kx_init = cross(g_init).dense()  # shape: (m, n)
    solved = None  # infinite time with a covariance: one solve for y and the test columns
    if ts is None and k_tt is not None:  # (one set of passes over a stored Gram, not two)
        solved = tr.solve(np.concatenate([y.y2, (kx_init if g in ("nngp", "ntkgp") else kx).T], axis=1))
        phi_y = solved[None, :, :y.C]  # shape: (1, n, C)
    elif ts is None:
        phi_y = tr.solve(y.y2)[None]  # shape: (1, n, C)
    else:
        phi_y = tr.funcs(y.y2, flow_fns(ts, scale, ("phi",)))  # shape: (T, n, C)
    mean = ktd.apply(phi_y.transpose(1, 0, 2).reshape(tr.n, T * y.C))  # shape: (m, T C)
    m = mean.shape[0]
    mean = mean.reshape(m, T, y.C).transpose(1, 0, 2).reshape(y.shape(lead, m))
    if k_tt is None:
        return mean
    kxx = k_tt(g_init)  # shape: (m, m)
    if g in ("nngp", "ntkgp"):
        if ts is None:
            S = solved[None, :, y.C:]  # K^-1 K(X, x), shape: (1, n, m)
        else:
            S = tr.funcs(kx_init.T, flow_fns(ts, scale, ("phi2",)))
        cov = kxx[None] - np.einsum("mj,tjl->tml", kx, S)
    else:
        if ts is None:
            P = solved[None, :, y.C:]  # Theta^-1 Theta(X, x), shape: (1, n, m)
        else:
            P = tr.funcs(kx.T, flow_fns(ts, scale, ("phi",)))  # shape: (T, n, m)
        nngp = train("nngp")
        KP = nngp.matvec(P.transpose(1, 0, 2).reshape(tr.n, -1)).reshape(tr.n, T, m).transpose(1, 0, 2)
        term2 = np.einsum("tjm,jl->tml", P, kx_init.T)  # A K(X, x), shape: (T, m, m)
        cov = np.einsum("tjm,tjl->tml", P, KP) - term2 - term2.transpose(0, 2, 1) + kxx[None]
    cov = cov.reshape(tuple(lead) + (m, m))
    return Gaussian(mean, cov)


def train_set(g: str, train: Callable[[str], TrainKernel], y: Targets, ts: Optional[np.ndarray],
              lead: tuple[int, ...], compute_cov: bool) -> Any:
    """Train-set mean [and covariance] of the ensemble (``x_test=None``), NT's formulas:
    mean ``(I - exp(-K t/N)) y``; covariance ``(K + lambda) exp(-2 (K + lambda) t/N)`` (NNGP),
    ``exp(-Theta t/N) K exp(-Theta t/N)`` (NTK); at infinite time ``N(y, 0)``."""
    tr = train(g)
    if ts is None:
        mean = y.y.copy()
        if not compute_cov:
            return mean
        return Gaussian(mean, np.zeros_like(tr.dense("the train-set covariance")))
    scale = 1.0 / y.y.size
    mean = -tr.funcs(y.y2, flow_fns(ts, scale, ("expm1",))).reshape(y.shape(lead, tr.n))
    if not compute_cov:
        return mean
    n = tr.n
    if g == "nngp":
        tr.dense("the train-set covariance")
        cov = tr.funcs(np.eye(n), flow_fns(ts, scale, ("sdecay2",)))
    else:
        K = train("nngp").dense("the train-set covariance")
        tr.dense("the train-set covariance")
        DK = tr.funcs(K, flow_fns(ts, scale, ("decay",)))  # shape: (T, n, n)
        cov = np.stack([tr.funcs(DK[i].T, flow_fns(ts[i:i + 1], scale, ("decay",)))[0]
                        for i in range(ts.size)])
    return Gaussian(mean, cov.reshape(tuple(lead) + (n, n)))
