"""Learning curves of kernel regression on a Gram: measured (subsampling) and predicted (theory).

The M rows of a Gram operator are the pool. :func:`empirical_learning_curve` draws per
trial a random permutation of the pool: the training sets are its first p rows (nested
over the p grid, one noise draw per trial), the test set its last ``n_test`` rows
(disjoint from every training set). It fits kernel ridge regression on ``K[train, train]``
with noisy targets ``y + noise_std·ξ``; the test MSE is against the *noiseless* targets,
summed over outputs. Only the operator's block reads are used.

Conventions
-----------
* ``ridge`` is absolute: the λ of ``(K_pp + λI)`` with ``K_pp`` the unnormalized p×p Gram,
  which is also the theory's λ with η̂ = eig(K_M)/M (Canatar et al.).
  ``relative_ridge=True``: ``λ = ridge · mean(diag K_M)`` (one value for all p).
* ``ridge = 0``: minimum-norm interpolant (eigenvalues below ``max(p·eps·λ_max,
  1e-7·mean diag)`` dropped, as in :mod:`ntkscale.solvers.ridgeless`).
* :func:`theory_learning_curve` predicts ``E_g`` for the pool's measure (all M rows, training
  rows included); off the training set the error is larger by O(p/M) (ridgeless: ×1/(1 − p/M)):
  :func:`heldout_error` maps one to the other, :func:`learning_curves` compares with that.
  ReLU NTK on S², M = 1000, ridgeless: held-out vs ``E_g`` +28 %/+62 % at p = 160/320, vs the
  map +8 %/+10 %. Other finite-pool effects remain (the theory draws the pool with replacement;
  its spectral tail): keep p ≪ M, above all near-ridgeless with noise (p = 320, σ = 0.5,
  λ = 1e-3: experiment 0.20, mapped theory 0.30).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import scipy.linalg as sla

from ..linop import check_ridge
from .._blas import potrf
from .validate import check_nonneg
from .spectrum import empirical_spectrum
from .subsets import gather, pinv_weights, subsample_trials
from .theory import LearningCurve, learning_curve

__all__ = ["EmpiricalCurve", "LearningCurves", "empirical_learning_curve", "theory_learning_curve",
           "heldout_error", "learning_curves", "gather"]


@dataclass(frozen=True)
class EmpiricalCurve:
    """Measured test MSE vs the noiseless targets (summed over outputs).

    Attributes
    ----------
    p, mean, sem : ndarray, shape (P,)
        Sizes, mean over trials and its standard error ``std(ddof=1)/sqrt(n_trials)``.
    errors : ndarray, shape (P, n_trials)
    ridge, noise_std : float
        Absolute ridge and label-noise std used.
    n_test, pool_size : int
        Test rows per trial; M, the rows of the pool.
    misclassified : ndarray, shape (P, n_trials), or None
        With C >= 2 outputs (one-hot-like targets): the fraction of test rows whose largest
        predicted output is not the target's largest (``argmax``), per size and trial.
    """

    p: np.ndarray
    mean: np.ndarray
    sem: np.ndarray
    errors: np.ndarray
    ridge: float
    n_test: int
    noise_std: float
    pool_size: int
    misclassified: Optional[np.ndarray] = None


@dataclass(frozen=True)
class LearningCurves:
    """Experiment and theory on the same p grid, absolute ridge and noise.

    Attributes
    ----------
    p, experiment_mean, experiment_sem : ndarray, shape (P,)
    theory : ndarray, shape (P,)
        Predicted error on held-out rows (:func:`heldout_error`): what the experiment measures.
    theory_pool : ndarray, shape (P,)
        ``theory_curve.Eg``: predicted error averaged over all M pool rows.
    ridge, noise_std : float
    experiment : EmpiricalCurve
    theory_curve : LearningCurve
    """

    p: np.ndarray
    experiment_mean: np.ndarray
    experiment_sem: np.ndarray
    theory: np.ndarray
    theory_pool: np.ndarray
    ridge: float
    noise_std: float
    experiment: EmpiricalCurve
    theory_curve: LearningCurve

    @property
    def relative_deviation(self) -> np.ndarray:
        """``experiment_mean / theory − 1``, shape (P,) (0 where both vanish)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            dev = self.experiment_mean / self.theory - 1.0
        return np.where(self.experiment_mean == self.theory, 0.0, dev)


def _mean_diag(op: Any) -> float:  # of a Gram operator or a dense array
    return float(np.mean(op.diag() if hasattr(op, "diag") else np.diagonal(np.asarray(op))))


def _targets(y: Any, m: int) -> np.ndarray:
    Y = np.asarray(y, dtype=np.float64)
    Y = Y[:, None] if Y.ndim == 1 else Y
    if Y.ndim != 2 or Y.shape[0] != m or not np.all(np.isfinite(Y)):
        raise ValueError(f"y must be finite with shape ({m},) or ({m}, C) (one row per Gram row), "
                         f"got shape {np.shape(y)}")
    return Y


def _sizes(p_grid: Any) -> np.ndarray:
    ps = np.asarray(p_grid).reshape(-1)
    if ps.size == 0 or not np.all(np.isfinite(ps)) or np.any(ps != np.round(ps)) or np.any(ps < 1):
        raise ValueError(f"p_grid must hold integers >= 1, got {p_grid!r}")
    return ps.astype(np.int64)


def _fit_predict(Kpp: np.ndarray, Ktp: np.ndarray, Ytr: np.ndarray, lam: float,
                 L: Optional[np.ndarray]) -> np.ndarray:
    """``K_tp (K_pp + λI)⁻¹ Y``; shapes (p,p), (t,p), (p,C) -> (t,C). ``L``: lower Cholesky
    factor of a matrix that ``K_pp + λI`` leads; None (λ = 0, or not PD): eigh pseudo-inverse."""
    p = Kpp.shape[0]
    if L is not None:
        return Ktp @ sla.cho_solve((L[:p, :p], True), Ytr)
    w, V = np.linalg.eigh((Kpp + Kpp.T) / 2 + lam * np.eye(p))
    inv = pinv_weights(w, lam, float(np.mean(np.diag(Kpp))))
    return Ktp @ (V @ (inv[:, None] * (V.T @ Ytr)))


def _leading_factor(K: np.ndarray, lam: float) -> Optional[np.ndarray]:
    """Lower Cholesky factor (p, p) of ``K + λI`` from the lower triangle of ``K`` (p, p), or
    None when that is not positive definite.

    ``K`` is symmetric up to the float32 rounding of its entries, so one triangle defines the
    matrix; LAPACK factors a single Fortran-ordered copy in place. At p = 8192 this took 3 s
    against 7 s for ``cholesky((K + Kᵀ)/2 + λI)`` and its three p² temporaries (py-spy
    profile of the 120k job's curve stage, benchmarks/RESULTS.md).
    """
    A = np.array(K.T, dtype=np.float64, order="F")  # its upper triangle: K's lower one
    A[np.diag_indices_from(A)] += lam
    U, info = potrf(A)  # (blocked above the order OpenBLAS's threaded potrf survives)
    return U.T if info == 0 else None


def empirical_learning_curve(op: Any, y: Any, p_grid: Any, *, ridge: float = 0.0,
                             relative_ridge: bool = False, n_trials: int = 10,
                             n_test: Optional[int] = None, noise_std: float = 0.0, seed: int = 0,
                             cache_bytes: float = 2**30, groups: Any = None) -> EmpiricalCurve:
    """Test MSE of kernel regression on random subsets of the pool, mean ± SEM per p.

    Parameters
    ----------
    op : GramOperator, shape (M, M)
        Gram of the pool (block reads ``op[r0:r1, c0:c1]`` only).
    y : array_like, shape (M,) or (M, C)
        Noiseless targets of the pool.
    p_grid : array_like of int, shape (P,)
        Training-set sizes; ``max(p) + n_test <= M``.
    ridge, relative_ridge : float, bool
        λ in ``(K_pp + λI)``, absolute or relative (module conventions).
    n_trials, n_test : int
        Independent permutations (>= 2 for a SEM); test points per trial (default ``M − max p``).
    noise_std : float
        Std of the Gaussian noise added to each training target (each output).
    seed : int
        Seeds permutations and noise: same seed, same subsets for any operator.
    cache_bytes : float
        If the float64 pool Gram (8 M² bytes) fits, it is read once; otherwise each trial
        reads ``K[train ∪ test, train]`` for its largest p by :func:`gather` (for random
        subsets that touches about every tile of the covering range).
    groups : array_like of int, shape (M,), optional
        Group of each pool row (e.g. the source image of an image and its mirror): no test row
        shares a group with a training row (:func:`ntkscale.spectral.subsets.subsample_trials`),
        so the curve measures the error on new samples.

    Returns
    -------
    EmpiricalCurve

    References
    ----------
    Canatar, Bordelon & Pehlevan, Nat. Commun. 12, 2914 (2021), Methods (kernel regression
    experiments averaged over random training sets, compared with Eq. (4)).
    """
    if len(op.shape) != 2 or op.shape[0] != op.shape[1]:
        raise ValueError(f"op must be a square Gram of the pool, got shape {op.shape}")
    m = int(op.shape[0])
    Y = _targets(y, m)
    ps = _sizes(p_grid)
    pmax = int(ps.max())
    nt = m - pmax if n_test is None else int(n_test)
    if n_test is not None and (nt != n_test or nt < 1):
        raise ValueError(f"n_test must be an integer >= 1 (or None for M − max p), got {n_test!r}")
    if pmax >= m or pmax + nt > m:
        raise ValueError(f"max(p_grid)={pmax} plus n_test={nt} exceeds the pool of M={m} rows "
                         "(the test set is disjoint from the training sets): lower p or n_test")
    if int(n_trials) != n_trials or n_trials < 1:
        raise ValueError(f"n_trials must be an integer >= 1, got {n_trials!r}")
    n_trials = int(n_trials)
    sigma = check_nonneg(noise_std, "noise_std")
    lam = check_ridge(ridge) * (_mean_diag(op) if relative_ridge else 1.0)
    errors = np.empty((ps.size, n_trials))
    wrong = np.empty((ps.size, n_trials)) if Y.shape[1] >= 2 else None
    trials = subsample_trials(op, pmax, nt, Y.shape[1], n_trials, noise_std=sigma, seed=seed,
                              cache_bytes=cache_bytes, groups=groups)
    for t, trial in enumerate(trials):
        train, test, block, noise = trial.train, trial.test, trial.block, trial.noise
        # nested training sets: the factor of K_pp + λI leads that of p = pmax
        L = _leading_factor(block[:pmax], lam) if lam > 0 else None
        for i, p in enumerate(ps):
            pred = _fit_predict(block[:p, :p], block[pmax:, :p], Y[train[:p]] + noise[:p], lam, L)
            errors[i, t] = float(np.mean(np.sum((pred - Y[test]) ** 2, axis=1)))
            if wrong is not None:
                wrong[i, t] = float(np.mean(pred.argmax(1) != Y[test].argmax(1)))
    sem = (errors.std(axis=1, ddof=1) / np.sqrt(n_trials) if n_trials > 1
           else np.full(ps.size, np.nan))
    return EmpiricalCurve(p=ps, mean=errors.mean(axis=1), sem=sem, errors=errors, ridge=lam,
                          n_test=nt, noise_std=sigma, pool_size=m, misclassified=wrong)


def _spectrum(src: Any, Y: np.ndarray, trace: Optional[float]) -> tuple[np.ndarray, ...]:
    """eta (k,), v2 per output (k, C), tail trace of K/M, tail power (C,), mean diag of K_M."""
    m = Y.shape[0]
    if hasattr(src, "evals") and hasattr(src, "evecs"):
        s, V = src.evals, src.evecs
    elif isinstance(src, tuple) and len(src) == 2:
        s, V = src
    else:  # a Gram: dense eigendecomposition (divide and conquer, ~10x faster than MRRR)
        K = np.asarray(src.to_numpy() if hasattr(src, "to_numpy") else src, dtype=np.float64)
        s, V = np.linalg.eigh((K + K.T) / 2)
    s, V = np.asarray(s, dtype=np.float64), np.asarray(V, dtype=np.float64)
    if V.ndim != 2 or V.shape[0] != m or s.shape != (V.shape[1],):
        raise ValueError(f"eigenvectors must have shape ({m}, k) with one eigenvalue per column, "
                         f"got evals {s.shape}, evecs {V.shape}")
    if V.shape[1] == m:
        sp = empirical_spectrum(s, V, Y)
        return sp.eta, sp.v2_per_output, 0.0, np.zeros(Y.shape[1]), float(np.sum(sp.eta))
    if trace is None:
        raise ValueError(f"a partial eigendecomposition ({V.shape[1]} of {m} pairs) needs "
                         "trace=trace(K_M) (e.g. op.diag().sum()) for the tail of the spectrum")
    order = np.argsort(-s, kind="stable")
    eta = np.clip(s[order], 0.0, None) / m
    v2 = (V[:, order].T @ Y) ** 2 / m  # shape: (k, C)
    tail_power = np.clip(np.sum(Y * Y, axis=0) / m - v2.sum(axis=0), 0.0, None)
    return eta, v2, max(float(trace) / m - float(eta.sum()), 0.0), tail_power, float(trace) / m


def theory_learning_curve(op_or_eigs: Any, y: Any, p_grid: Any, ridge: float = 0.0,
                          noise_std: float = 0.0, *, relative_ridge: bool = False,
                          trace: Optional[float] = None, tail: str = "ridge",
                          n_modes: Optional[int] = None, tail_alpha: Optional[float] = None) -> LearningCurve:
    """Canatar et al. ``E_g`` from the spectrum of ``K_M / M`` of the pool.

    Parameters
    ----------
    op_or_eigs : GramOperator, ndarray (M, M), ``(evals, evecs)`` or an object with
        ``.evals`` / ``.evecs`` (e.g. :class:`ntkscale.solvers.eigen.EigResult`)
        A Gram is eigendecomposed densely (M×M in memory). Eigenpairs are of the
        unnormalized ``K_M``; with k < M pairs the theory is truncated: the tail acts
        as an extra ridge ``Σ_{ρ>k} η̂_ρ = trace/M − Σ_{ρ<=k} η̂_ρ`` (valid while
        ``p η̂_{k+1} << κ``) and its target power as one never-learned mode.
    y : array_like, shape (M,) or (M, C)
        Noiseless targets of the pool.
    p_grid : array_like, shape (P,)
    ridge, relative_ridge : float, bool
        Absolute λ of ``(K_pp + λI)`` as in the experiment, or ``λ = ridge · trace(K_M)/M``.
    noise_std : float
        Label-noise std per output (``sigma2 = noise_std²``; C outputs count it C times).
    trace : float, optional
        ``trace(K_M)``; needed for a partial eigendecomposition.
    tail : {'ridge', 'powerlaw'}
        How a partial decomposition's tail enters: ``'ridge'``, the tail's eigenvalue mass as
        an extra ridge and its target power as one never-learned mode (valid while
        ``p η_{k+1} << κ``); ``'powerlaw'``, the spectrum continued by
        :mod:`ntkscale.spectral.tail` (power laws that carry exactly the known tail mass and
        target power) to ``n_modes`` ranks (default M), so modes past k are learned as p grows.
    n_modes : int, optional
        ``tail='powerlaw'``: last modelled rank (default M; more extrapolates past the pool).
    tail_alpha : float, optional
        ``tail='powerlaw'``: another tail exponent (the band: ``TailModel.alpha_fit``).

    Returns
    -------
    LearningCurve
        ``.Eg`` (P,) predicts the test MSE vs the noiseless target. Truncated with
        ``tail='ridge'``: one extra zero mode (the tail power) in ``mode_errors``; ``lam``
        includes the tail ridge.

    References
    ----------
    Canatar, Bordelon & Pehlevan, Nat. Commun. 12, 2914 (2021), Eq. (4) and Methods;
    Bordelon, Canatar & Pehlevan, ICML 2020.
    """
    src = op_or_eigs
    V = src.evecs if hasattr(src, "evecs") else (src[1] if isinstance(src, tuple) else src)
    Y = _targets(y, int(V.shape[0] if hasattr(V, "shape") else np.shape(V)[0]))
    eta, v2, tail_trace, tail_power, mean_diag = _spectrum(src, Y, trace)
    lam = check_ridge(ridge) * (mean_diag if relative_ridge else 1.0)
    sigma2 = check_nonneg(noise_std, "noise_std") ** 2
    if tail not in ("ridge", "powerlaw"):
        raise ValueError(f"tail must be 'ridge' or 'powerlaw', got {tail!r}")
    if tail == "powerlaw" and eta.size < Y.shape[0]:
        from .tail import complete_spectrum, fit_tail

        model = fit_tail(eta, v2, tail_trace, tail_power, Y.shape[0])
        eta, v2 = complete_spectrum(eta, v2, model, n_modes, tail_alpha)
        return learning_curve(eta, v2, _sizes(p_grid).astype(np.float64), lam=lam, sigma2=sigma2,
                              n_outputs=Y.shape[1])
    if tail_trace > 0 or np.any(tail_power > 0):
        eta, v2 = np.append(eta, 0.0), np.vstack([v2, tail_power[None, :]])
    return learning_curve(eta, v2, _sizes(p_grid).astype(np.float64), lam=lam + tail_trace,
                          sigma2=sigma2, n_outputs=Y.shape[1])


def heldout_error(curve: LearningCurve, pool_size: int,
                  ridge: Optional[float] = None) -> np.ndarray:
    """Theory of the test error on the pool rows *outside* the training set.

    :func:`theory_learning_curve` predicts ``E_pool``, the error averaged over all M rows.
    For a uniformly random training subset of p rows, ``E_pool = f·E_tr + (1 − f)·E_out``
    with ``f = p/M`` and the training error vs the *noiseless* targets, in the same theory,
    ``E_tr = E_train + Cσ² − 2Cσ²·λ/κ`` (cross term ``−σ² λ tr((K + λI)⁻¹)`` per output, and
    ``λ tr((K + λI)⁻¹)/p → λ/κ``). Hence ``E_out = (E_pool − f·E_tr)/(1 − f)``.

    Parameters
    ----------
    curve : LearningCurve
        From :func:`theory_learning_curve` of the pool (M rows).
    pool_size : int
        M; every ``curve.p`` must be below it.
    ridge : float, optional
        The true absolute λ (default ``curve.lam``). Give it for a truncated theory: its
        ``curve.lam`` includes the tail trace, which is no ridge at the training rows.

    Returns
    -------
    ndarray, shape (P,)
        ``inf`` where ``curve.Eg`` is.

    References
    ----------
    Canatar, Bordelon & Pehlevan, Nat. Commun. 12, 2914 (2021), Methods (training error);
    Simon et al., "The eigenlearning framework", TMLR 2023 (``tr(λ(K + λI)⁻¹)/p = λ/κ``).
    """
    m = int(pool_size)
    if m != pool_size or np.any(curve.p >= m):
        raise ValueError(f"pool_size must be an integer above every p (max p = {curve.p.max():g}), "
                         f"got {pool_size!r}")
    lam = curve.lam if ridge is None else check_ridge(ridge)
    scale = lam / curve.lam if curve.lam > 0 else 1.0  # true λ/κ from the theory's λ/κ
    c_s2, eg = curve.n_outputs * curve.sigma2, curve.Eg
    with np.errstate(divide="ignore", invalid="ignore"):  # inf Eg: handled by the last line
        lok = scale * np.sqrt(np.where(eg + c_s2 > 0, curve.Etrain / (eg + c_s2), 0.0))  # λ/κ
        train_clean = lok * lok * (eg + c_s2) + c_s2 * (1.0 - 2.0 * lok)
        f = curve.p / m
        out = (eg - f * train_clean) / (1.0 - f)
    return np.where(np.isfinite(eg), out, np.inf)


def learning_curves(op: Any, y: Any, p_grid: Any, *, ridge: float = 0.0,
                    relative_ridge: bool = False, noise_std: float = 0.0, n_trials: int = 10,
                    n_test: Optional[int] = None, seed: int = 0, eigs: Any = None,
                    cache_bytes: float = 2**30, tail: str = "ridge") -> LearningCurves:
    """Experiment (:func:`empirical_learning_curve`) and theory (:func:`theory_learning_curve`).

    Both use the same absolute ridge (``relative_ridge``: ``ridge · mean(diag K_M)``) and
    noise; ``eigs`` (e.g. ``randomized_eigh(op, k)``) replaces the dense eigendecomposition
    of ``op`` (then ``trace = op.diag().sum()`` is used for the tail). The experiment is
    compared with the theory of the held-out error (:func:`heldout_error`). ``tail``: how
    the theory treats the spectrum past partial ``eigs`` (:func:`theory_learning_curve`).

    Returns
    -------
    LearningCurves
    """
    lam = check_ridge(ridge) * (_mean_diag(op) if relative_ridge else 1.0)
    exp = empirical_learning_curve(op, y, p_grid, ridge=lam, n_trials=n_trials, n_test=n_test,
                                   noise_std=noise_std, seed=seed, cache_bytes=cache_bytes)
    src = op if eigs is None else eigs
    trace = None if eigs is None else _mean_diag(op) * exp.pool_size
    th = theory_learning_curve(src, y, exp.p, lam, noise_std, trace=trace, tail=tail)
    return LearningCurves(p=exp.p, experiment_mean=exp.mean, experiment_sem=exp.sem,
                          theory=heldout_error(th, exp.pool_size, lam), theory_pool=th.Eg,
                          ridge=lam, noise_std=exp.noise_std, experiment=exp, theory_curve=th)
