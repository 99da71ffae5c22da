"""ReLU random features: the features, their kernel limit, min-norm fits and their theory.

Model (n samples, N features, d inputs)::

    phi(x) = sqrt(2/N) relu(W x),   W_ij ~ N(0, 1/d)   (``W = G / sqrt(d)``, G standard normal)

so ``phi(x).phi(x') -> k(x, x')`` as N -> inf, with ``k`` the NNGP of
``stax.serial(stax.Dense(1, W_std=sqrt(2)), stax.Relu())`` = ``|x||x'|/d * kappa1(u)``, the
degree-1 arc-cosine kernel of Cho & Saul (``kappa1(u) = (sin t + (pi - t) cos t)/pi``,
``u = cos t``). With the project's inputs (``|x| = sqrt(d)``) the diagonal is 1. The
``1/sqrt(d)`` sits in W (NT's NTK parameterization), so no input scaling is assumed.

Conventions
-----------
* ``ridge`` is the absolute λ of ``(Phi^T Phi + λ I) a = Phi^T y``; since ``Phi Phi^T -> K``
  it is the λ of ``(K + λ I)`` in the kernel limit and in :func:`rf_learning_curve`.
* ``ridge = 0``: minimum-norm least squares (``pinv``; singular values below
  ``max(n, N) eps s_max`` dropped, the ``lstsq`` rule).
* Errors are test MSE vs the clean targets, summed over outputs, as in :mod:`.curves`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
from scipy.optimize import brentq

from ..linop import check_ridge
from .validate import as_sizes, as_spectrum, as_targets, check_nonneg
from .theory import solve_kappa

__all__ = ["RFLearningCurve", "random_relu_weights", "relu_random_features",
           "relu_feature_kernel", "rf_learning_curve", "rf_test_errors", "kernel_limit_error"]


def random_relu_weights(n_features: int, d: int, seed: Any = None) -> np.ndarray:
    """``W`` of shape (n_features, d), i.i.d. ``N(0, 1/d)`` entries (``seed``: int or Generator)."""
    if int(n_features) != n_features or n_features < 1 or int(d) != d or d < 1:
        raise ValueError(f"n_features and d must be integers >= 1, got {n_features!r}, {d!r}")
    return np.random.default_rng(seed).standard_normal((int(n_features), int(d))) / np.sqrt(d)


def relu_random_features(X: Any, W: Any) -> np.ndarray:
    """``sqrt(2/N) relu(X W^T)``, shape (n, N), for X (n, d) and W (N, d) (see the module)."""
    X, W = np.asarray(X, dtype=np.float64), np.asarray(W, dtype=np.float64)
    if X.ndim != 2 or W.ndim != 2 or X.shape[1] != W.shape[1]:
        raise ValueError(f"X must be (n, d) and W (N, d) with the same d, got {X.shape}, {W.shape}")
    return np.sqrt(2.0 / W.shape[0]) * np.maximum(X @ W.T, 0.0)


def relu_feature_kernel(X1: Any, X2: Any = None) -> np.ndarray:
    """Large-N limit of ``relu_random_features(X1, W) @ relu_random_features(X2, W).T``.

    Parameters
    ----------
    X1 : array_like, shape (n1, d)
    X2 : array_like, shape (n2, d), optional (default X1)

    Returns
    -------
    ndarray, shape (n1, n2)
        NNGP of ``stax.serial(stax.Dense(1, W_std=sqrt(2)), stax.Relu())``, computed by the
        project's kernel code: ``2 E[relu(u) relu(v)]`` with ``(u, v)`` of covariance
        ``X X^T / d`` (W_std = sqrt(2) supplies the 2 of ``sqrt(2/N)``).

    References
    ----------
    Cho & Saul, "Kernel methods for deep learning", NeurIPS 2009 (arc-cosine kernel, n = 1);
    Rahimi & Recht, "Random features for large-scale kernel machines", NeurIPS 2007.
    """
    from .. import stax  # the kernel layer: pure math, no dask

    kernel_fn = stax.serial(stax.Dense(1, W_std=np.sqrt(2.0)), stax.Relu()).kernel_fn
    x1 = np.asarray(X1, dtype=np.float64)
    x2 = None if X2 is None else np.asarray(X2, dtype=np.float64)
    return np.asarray(kernel_fn(x1, x2, "nngp"), dtype=np.float64)


@dataclass(frozen=True)
class RFLearningCurve:
    """Random-feature ridge regression theory on a grid of feature counts (F points).

    Attributes
    ----------
    n_features, Eg, gamma, overfitting : ndarray, shape (F,)
        Feature counts N, test error vs the clean target (summed over outputs), the
        effective kernel ridge ``gamma`` of the learnabilities ``eta/(eta + gamma)``, and
        the overfitting coefficient ``E0`` (``inf`` at the interpolation threshold).
    n, lam, sigma2 : float
    n_outputs : int
    """

    n_features: np.ndarray
    Eg: np.ndarray
    gamma: np.ndarray
    overfitting: np.ndarray
    n: float
    lam: float
    sigma2: float
    n_outputs: int


def _z(eta: np.ndarray, g: float) -> float:
    return float(np.sum(eta / (eta + g)))


def _gamma_ridge(eta: np.ndarray, n: float, N: float, lam: float) -> float:
    """Root of G(g) = z(g) + lam N / (g (N - z(g))) - n, g > g_N (G decreases from +inf)."""
    r = eta.size
    g_n = solve_kappa(eta, N, 0.0) / N if N < r else 0.0  # z(g_N) = N
    total = float(eta.sum())

    def G(u: float) -> float:
        g = float(np.exp(u))
        if g == 0.0:  # underflow: G -> +inf
            return np.inf
        z = _z(eta, g)
        gap = max(N - z, N * 1e-300)  # > 0 above g_N; round-off must not flip the sign
        return z + lam * N / (g * gap) - n

    # G(g) >= lam/g - n + z > 0 below lam/n; above 2 max((T + 2 lam)/n, 2T/N), z <= N/4
    # so G <= (T + 2 lam)/g - n < 0 (T = sum eta): both ends are proven bounds.
    hi = float(np.log(2.0 * max((total + 2.0 * lam) / n, 2.0 * total / N)))
    lo = float(np.log(lam / (2.0 * n)))
    if g_n > 0:
        lo = max(lo, float(np.log(g_n)) + 1e-12)
        if G(lo) <= 0.0:  # the root is within round-off of g_N (tiny ridge)
            return g_n
    return float(np.exp(brentq(G, lo, hi, xtol=1e-14, rtol=4 * np.finfo(float).eps, maxiter=500)))


def _rf_point(eta: np.ndarray, v: np.ndarray, n: float, N: float, lam: float,
              c_s2: float) -> tuple[float, float, float]:
    """(E_g, gamma, E0) for one feature count; ``eta`` nonzero modes, ``v`` their power."""
    r = eta.size
    if lam == 0.0:
        m = min(n, N)
        if m >= r:  # every nonzero mode is learned: least squares on r directions
            e0 = n / (n - r) if n > r else np.inf
            return ((e0 - 1.0) * c_s2 if np.isfinite(e0) else np.inf), 0.0, e0
        if N == n:
            return np.inf, solve_kappa(eta, m, 0.0) / m, np.inf
        g = solve_kappa(eta, m, 0.0) / m  # z(g) = min(n, N)
    else:
        g = _gamma_ridge(eta, n, N, lam)
    L = eta / (eta + g)
    z, q = float(L.sum()), float(np.sum(L * L))
    if lam == 0.0 and N < n:  # tau -> 0, z = N: x = N/n, b = 1 - L
        x, b = N / n, 1.0 - L
    else:
        x = (q * (N - 2.0 * z) + z * z) / (n * (N - q))
        b = (1.0 - L) * (1.0 - L * (N - z) / (N - q))
    if x >= 1.0:
        return np.inf, g, np.inf
    e0 = 1.0 / (1.0 - x)
    return e0 * (float(b @ v) + c_s2) - c_s2, g, e0


def rf_learning_curve(eta: Any, v2: Any, n: float, n_features: Any, lam: float = 0.0,
                      sigma2: float = 0.0, n_outputs: Optional[int] = None) -> RFLearningCurve:
    """Test error of random-feature ridge regression from the spectrum of its limit kernel.

    With learnabilities ``L_i = eta_i/(eta_i + gamma)``, ``z = sum L``, ``q = sum L^2``,
    ``gamma`` and ``tau`` solve ``n = z + lam/tau`` and ``N = z + N tau/gamma``; then
    ``E0 = 1/(1 - x)``, ``x = (q (N - 2z) + z^2)/(n (N - q))`` and

        ``E_g = E0 (sum_i b_i v_i^2 + C sigma2) - C sigma2``,
        ``b_i = (1 - L_i)(1 - L_i (N - z)/(N - q))``.

    N -> inf gives kernel ridge regression (:func:`~ntkscale.spectral.learning_curve`);
    ridgeless, ``E0 = n/(n - N)`` below and a pole at ``N = n`` (the model-wise peak).

    Parameters
    ----------
    eta : array_like, shape (M,)
        Eigenvalues of the limit kernel (population, e.g. ``eig(K_M)/M``).
    v2 : array_like, shape (M,) or (M, C)
        Squared target weights (as in :func:`~ntkscale.spectral.learning_curve`).
    n : float
        Training samples, > 0.
    n_features : float or array_like, shape (F,)
        Feature counts N > 0 (non-integers allowed).
    lam, sigma2 : float
        Absolute ridge (module conventions) and label-noise variance per output, >= 0.
    n_outputs : int, optional
        C (defaults to ``v2.shape[1]`` or 1).

    Returns
    -------
    RFLearningCurve

    Notes
    -----
    A deterministic equivalent (Gaussian-equivalent features), exact for linear random
    features in the proportional limit; for ReLU features on real inputs an approximation
    whose accuracy the tests measure. Not the Mei & Montanari closed form (which needs
    uniform inputs on the sphere); this one takes any spectrum.

    References
    ----------
    Simon, Karkada, Ghosh & Belkin, "More is better in modern machine learning: when
    infinite overparameterization is optimal and overfitting is obligatory", ICLR 2024
    (random-feature eigenframework); Bach, "High-dimensional analysis of double descent for
    linear regression with random projections", SIMODS 2024; Defilippis, Loureiro &
    Misiakiewicz, "Dimension-free deterministic equivalents for random feature regression",
    NeurIPS 2024; Mei & Montanari, CPAM 75 (2022) (arXiv 2019).
    """
    e = as_spectrum(eta)
    v, c = as_targets(v2, e.size, n_outputs)
    if np.ndim(n) != 0:
        raise ValueError(f"n must be one number of training samples, got {n!r}")
    n_ = float(as_sizes(n)[0][0])
    Ns, _ = as_sizes(n_features)
    lam = check_ridge(lam, "lam")
    sigma2 = check_nonneg(sigma2, "sigma2")
    nz = e > 0
    zero_power = float(v[~nz].sum())
    eta_nz, v_nz = e[nz], v[nz]
    out = np.empty((3, Ns.size))
    for i, N in enumerate(Ns):
        if eta_nz.size == 0:  # a zero kernel: nothing is learned
            out[:, i] = (zero_power, 0.0, 1.0)
            continue
        eg, g, e0 = _rf_point(eta_nz, v_nz, n_, float(N), lam, c * sigma2)
        out[:, i] = (eg + (e0 * zero_power if np.isfinite(e0) else np.inf), g, e0)
    return RFLearningCurve(n_features=Ns, Eg=out[0], gamma=out[1], overfitting=out[2], n=n_,
                           lam=lam, sigma2=sigma2, n_outputs=c)


def _check_data(X_train: Any, y_train: Any, X_test: Any, y_test: Any) -> tuple[np.ndarray, ...]:
    Xtr, Xte = np.asarray(X_train, dtype=np.float64), np.asarray(X_test, dtype=np.float64)
    if Xtr.ndim != 2 or Xte.ndim != 2 or Xtr.shape[1] != Xte.shape[1] or min(Xtr.shape) < 1:
        raise ValueError(f"X_train (n, d) and X_test (t, d) need the same d, got {Xtr.shape}, "
                         f"{Xte.shape}")
    out = [Xtr, Xte]
    for name, y, X in (("y_train", y_train, Xtr), ("y_test", y_test, Xte)):
        Y = np.asarray(y, dtype=np.float64)
        Y = Y[:, None] if Y.ndim == 1 else Y
        if Y.ndim != 2 or Y.shape[0] != X.shape[0]:
            raise ValueError(f"{name} must have shape ({X.shape[0]},) or ({X.shape[0]}, C), "
                             f"got {np.shape(y)}")
        out.append(Y)
    if out[2].shape[1] != out[3].shape[1]:
        raise ValueError(f"y_train and y_test have {out[2].shape[1]} and {out[3].shape[1]} outputs")
    if not all(np.all(np.isfinite(a)) for a in out):
        raise ValueError("X_train, y_train, X_test, y_test must be finite (no nan/inf)")
    return tuple(out)


def rf_test_errors(X_train: Any, y_train: Any, X_test: Any, y_test: Any, widths: Any, *,
                   trials: int = 20, ridge: float = 0.0, noise: float = 0.0, seed: int = 0,
                   chunk: int = 4096) -> np.ndarray:
    """Test MSE of ReLU random-feature regression, shape (len(widths), trials).

    Each trial draws ``W`` for ``max(widths)`` features and one label-noise vector
    (variance ``noise`` per output, training labels only); width N uses the first N rows
    of W (nested models, common random numbers across N). The fit is solved in the dual,
    ``pred = Phi_t Phi^T (Phi Phi^T + λI)^+ y`` (push-through identity; ridgeless: the
    min-norm solution, eigenvalues of the n x n feature Gram below ``max(n, N) eps λ_max``
    dropped), with the Grams accumulated over the nested widths: the cost is
    ``O((n + t) n max(N))`` per trial plus one n x n ``eigh`` per width, and features are
    formed ``chunk`` columns at a time (memory ``O((n + t) chunk)``).

    Parameters
    ----------
    X_train, y_train, X_test, y_test : array_like
        Shapes (n, d), (n,) or (n, C), (t, d), (t,) or (t, C); clean targets.
    widths : array_like of int, shape (G,)
        Strictly increasing feature counts N.
    trials, seed : int
    ridge, noise : float
        Absolute λ (module conventions) and label-noise variance.
    chunk : int
        Feature columns formed at once.

    Returns
    -------
    ndarray, shape (G, trials)

    References
    ----------
    Belkin, Hsu, Ma & Mandal, PNAS 116 (2019) (random-feature double descent).
    """
    Xtr, Xte, Ytr, Yte = _check_data(X_train, y_train, X_test, y_test)
    Ns = np.asarray(widths).reshape(-1)
    if Ns.size == 0 or np.any(Ns != np.round(Ns)) or np.any(Ns < 1) or np.any(np.diff(Ns) <= 0):
        raise ValueError(f"widths must be strictly increasing integers >= 1, got {widths!r}")
    if int(trials) != trials or trials < 1:
        raise ValueError(f"trials must be an integer >= 1, got {trials!r}")
    lam = check_ridge(ridge)
    sd = np.sqrt(check_nonneg(noise, "noise"))
    rng = np.random.default_rng(seed)
    n, d = Xtr.shape
    Ns = Ns.astype(np.int64)
    errors = np.empty((Ns.size, int(trials)))
    for t in range(int(trials)):
        W = random_relu_weights(int(Ns[-1]), d, rng)
        Yn = Ytr + sd * rng.standard_normal(Ytr.shape)
        G, Gt = np.zeros((n, n)), np.zeros((Xte.shape[0], n))  # sum_j relu(w_j.x) relu(w_j.x')
        done = 0
        for i, N in enumerate(Ns):
            for a in range(done, int(N), int(chunk)):
                Wb = W[a:min(int(N), a + int(chunk))]
                Z = np.maximum(Xtr @ Wb.T, 0.0)  # shape: (n, block)
                G += Z @ Z.T
                Gt += np.maximum(Xte @ Wb.T, 0.0) @ Z.T
            done = int(N)
            w, V = np.linalg.eigh((2.0 / N) * G)
            if lam > 0:
                h = 1.0 / (np.maximum(w, 0.0) + lam)
            else:
                keep = w > max(n, int(N)) * np.finfo(np.float64).eps * w[-1]
                h = np.divide(1.0, w, out=np.zeros_like(w), where=keep)
            pred = ((2.0 / N) * Gt) @ (V @ (h[:, None] * (V.T @ Yn)))
            errors[i, t] = float(np.mean(np.sum((pred - Yte) ** 2, axis=1)))
    return errors


def kernel_limit_error(K_train: Any, K_test_train: Any, y_train: Any, y_test: Any,
                       ridge: float = 0.0, noise: float = 0.0) -> float:
    """Expected test MSE (over the label noise) of kernel ridge(less) regression.

    ``pred = K_tX (K + λI)^+ (y + ξ)``, ``E|pred − y_test|²`` averaged over test rows and
    ``ξ ~ N(0, noise)``: ``|K_tX A y − y_t|²/t + C noise |K_tX A|_F²/t`` with
    ``A = (K + λI)^+`` (ridgeless: eigenvalues below ``max(n eps λ_max, 1e-7 mean diag)``
    dropped, as in :mod:`.curves`). With :func:`relu_feature_kernel` this is the N -> inf
    limit of :func:`rf_test_errors` on the same data.

    Parameters
    ----------
    K_train : array_like, shape (n, n)
    K_test_train : array_like, shape (t, n)
    y_train : array_like, shape (n,) or (n, C)
        Clean training targets.
    y_test : array_like, shape (t,) or (t, C)
    ridge, noise : float
        Absolute λ and label-noise variance per output.
    """
    K = np.asarray(K_train, dtype=np.float64)
    Kt = np.asarray(K_test_train, dtype=np.float64)
    Y, Yt = (np.asarray(a, dtype=np.float64) for a in (y_train, y_test))
    Y, Yt = (a[:, None] if a.ndim == 1 else a for a in (Y, Yt))
    n = K.shape[0]
    if K.shape != (n, n) or Kt.shape[1] != n or Y.shape[0] != n or Yt.shape[0] != Kt.shape[0]:
        raise ValueError(f"shapes do not match: K_train {K.shape}, K_test_train {Kt.shape}, "
                         f"y_train {Y.shape}, y_test {Yt.shape}")
    lam, s2 = check_ridge(ridge), check_nonneg(noise, "noise")
    w, V = np.linalg.eigh((K + K.T) / 2 + lam * np.eye(n))
    cut = max(n * np.finfo(np.float64).eps * float(np.abs(w).max()),
              1e-7 * float(np.mean(np.diag(K))) if lam == 0 else 0.0)
    inv = np.divide(1.0, w, out=np.zeros_like(w), where=w > cut)
    B = (Kt @ V) * inv[None, :]  # K_tX V diag(1/w): shape (t, n); K_tX A = B V^T
    bias = float(np.mean(np.sum((B @ (V.T @ Y) - Yt) ** 2, axis=1)))
    return bias + Y.shape[1] * s2 * float(np.sum(B * B)) / Kt.shape[0]
