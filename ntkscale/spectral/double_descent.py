"""Double descent in one call: sample-, ridge- and model-wise, experiment next to theory.

* sample-wise: kernel regression on sub-blocks of a Gram vs p (no kernel recomputed), theory
  from the Gram's spectrum (:mod:`.curves`); the peak sits where p reaches the number of
  dominant modes (white spectrum of N modes: p = N);
* ridge-wise: vs ridge at fixed p; with label noise the optimal ridge is > 0;
* model-wise: ReLU random features (:mod:`.random_features`) vs their number N, peak at N = n,
  theory from the spectrum of the limit (arc-cosine) kernel, and the exact N -> inf limit.

Conventions (as in :mod:`.curves`): absolute ridge λ of ``(K_pp + λI)``; ``noise`` is the
label-noise *variance* σ² per output, training labels only; errors are held-out test MSE vs
the clean targets, summed over outputs. At an interpolation peak the mean over trials is
ruled by rare huge values (it diverges in theory): read ``.median`` and the quartiles.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from ..linop import as_operator, check_ridge, check_ridges
from .validate import check_nonneg
from .curves import _sizes, _targets, heldout_error, learning_curves, theory_learning_curve
from .random_features import (_check_data, kernel_limit_error, relu_feature_kernel,
                              rf_learning_curve, rf_test_errors)
from .spectrum import EmpiricalSpectrum, empirical_spectrum
from .subsets import pinv_weights, subsample_trials

__all__ = ["DoubleDescent", "samplewise_double_descent", "ridgewise_double_descent",
           "modelwise_double_descent", "double_descent"]

QUANTILES = (0.25, 0.75)  # the spread reported as .lower / .upper


@dataclass(frozen=True)
class DoubleDescent:
    """Experiment (over trials) and theory on one grid (G points, T trials, F fine points).

    Attributes
    ----------
    kind : {'samplewise', 'ridgewise', 'modelwise'}
    grid : ndarray, shape (G,)
        Training-set sizes p, ridges λ, or feature counts N.
    errors : ndarray, shape (G, T)
        Test MSE vs the clean targets (summed over outputs), one column per trial.
    mean, median, lower, upper : ndarray, shape (G,)
        Over trials; ``lower``/``upper`` are the 25 % / 75 % quantiles.
    theory : ndarray, shape (G,)
        Predicted test error on the grid (``inf`` at a pole).
    grid_fine, theory_fine : ndarray, shape (F,)
        The theory on a fine grid spanning ``grid`` (for plots and its extremum).
    threshold : float
        Where the vertical line goes: the theory's peak p (sample-wise; nan without an
        interior peak), N = n (model-wise), the theory-optimal ridge (ridge-wise).
    ridge, noise : float
        Absolute ridge (nan for ridge-wise: it is the grid) and label-noise variance σ².
    n_train : int or None
        p (ridge-wise) or n (model-wise).
    kernel_limit : float or None
        Model-wise: exact expected test error of the N -> inf (kernel) regression.
    source : object
        The underlying results (``LearningCurves``; theory ``LearningCurve`` per ridge;
        ``RFLearningCurve``).
    """

    kind: str
    grid: np.ndarray
    errors: np.ndarray
    mean: np.ndarray
    median: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    theory: np.ndarray
    grid_fine: np.ndarray
    theory_fine: np.ndarray
    threshold: float
    ridge: float
    noise: float
    n_train: Optional[int]
    kernel_limit: Optional[float]
    source: Any

    @property
    def peak_experiment(self) -> float:
        """Grid value of the largest median error."""
        return float(self.grid[int(np.argmax(self.median))])

    @property
    def peak_theory(self) -> float:
        """Fine-grid value of the largest theory error (the first one if it is inf)."""
        return float(self.grid_fine[int(np.argmax(self.theory_fine))])

    @property
    def optimum_experiment(self) -> float:
        """Grid value of the smallest mean error."""
        return float(self.grid[int(np.argmin(self.mean))])

    @property
    def optimum_theory(self) -> float:
        """Grid value of the smallest theory error (compare with :attr:`optimum_experiment`)."""
        return float(self.grid[int(np.argmin(self.theory))])


def _make(kind: str, grid: np.ndarray, errors: np.ndarray, theory: np.ndarray,
          grid_fine: np.ndarray, theory_fine: np.ndarray, threshold: float, ridge: float,
          noise: float, n_train: Optional[int], kernel_limit: Optional[float],
          source: Any) -> DoubleDescent:
    lo, hi = np.quantile(errors, QUANTILES, axis=1)
    order = np.argsort(grid_fine, kind="stable")
    return DoubleDescent(kind=kind, grid=grid, errors=errors, mean=errors.mean(axis=1),
                         median=np.median(errors, axis=1), lower=lo, upper=hi,
                         theory=np.asarray(theory, dtype=np.float64),
                         grid_fine=grid_fine[order], theory_fine=np.asarray(theory_fine)[order],
                         threshold=float(threshold), ridge=float(ridge), noise=float(noise),
                         n_train=n_train, kernel_limit=kernel_limit, source=source)


def _operator(op_or_gram: Any) -> Any:
    op = as_operator(op_or_gram)
    if len(op.shape) != 2 or op.shape[0] != op.shape[1] or op.shape[0] < 2:
        raise ValueError(f"op_or_gram must be a square Gram of the pool (an operator or an "
                         f"(M, M) array), got shape {tuple(op.shape)}")
    return op


def _noise(noise: Any) -> float:
    return check_nonneg(noise, "noise (the label-noise variance σ²)")


def _count(value: Any, name: str) -> int:
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def _split(m: int, p_max: int, test_size: Optional[int], what: str) -> int:
    """Test-set size; the training sets (up to p_max rows) and the test set are disjoint."""
    nt = m - p_max if test_size is None else _count(test_size, "test_size")
    if p_max + nt > m or nt < 1:
        raise ValueError(f"{what}={p_max} plus test_size={nt} needs more than the M={m} samples "
                         "of the Gram (training and test rows are disjoint): lower "
                         f"{what} or test_size, or use a larger Gram")
    return nt


def _eigs(op: Any, eigs: Any) -> Any:
    if eigs is not None:
        return eigs
    K = np.asarray(op[0:op.shape[0], 0:op.shape[1]], dtype=np.float64)
    return tuple(np.linalg.eigh((K + K.T) / 2))


def samplewise_double_descent(op_or_gram: Any, y: Any, p_grid: Any, *, ridge: float = 0.0,
                              noise: float = 0.0, trials: int = 20,
                              test_size: Optional[int] = None, seed: int = 0, eigs: Any = None,
                              fine: int = 200) -> DoubleDescent:
    """Test error vs training-set size: the sample-wise double descent of kernel regression.

    Parameters
    ----------
    op_or_gram : GramOperator or ndarray, shape (M, M)
        Gram of the pool; training and test sets are drawn from its rows (block reads).
    y : array_like, shape (M,) or (M, C)
        Clean targets of the pool.
    p_grid : array_like of int, shape (G,)
        Training-set sizes; ``max(p_grid) + test_size <= M``.
    ridge : float
        Absolute λ of ``(K_pp + λI)``; 0 is the min-norm interpolant.
    noise : float
        Label-noise variance σ² (per output), training labels only.
    trials, test_size, seed : int
        Random subsets (nested over p) per trial, held-out rows per trial (default
        ``M − max p``), and the seed of subsets and noise.
    eigs : ``(evals, evecs)`` or an object with ``.evals``/``.evecs``, optional
        Eigenpairs of the unnormalized Gram (partial allowed: the tail enters as a ridge);
        default: dense ``eigh`` of the Gram (M x M in memory).
    fine : int
        Points of the fine theory grid (integers, log-spaced).

    Returns
    -------
    DoubleDescent
        ``theory`` is the held-out prediction of :func:`~ntkscale.spectral.curves.heldout_error`;
        ``threshold`` the p of its peak; ``source`` the ``LearningCurves``.

    References
    ----------
    Canatar, Bordelon & Pehlevan, Nat. Commun. 12, 2914 (2021) (white spectrum: peak at
    p = N); Belkin et al., PNAS 116 (2019); Nakkiran et al., ICLR 2020.
    """
    op = _operator(op_or_gram)
    m = int(op.shape[0])
    ps = np.unique(_sizes(p_grid))
    s2 = _noise(noise)
    nt = _split(m, int(ps.max()), test_size, "max(p_grid)")
    trials = _count(trials, "trials")
    lam = check_ridge(ridge)
    src = _eigs(op, eigs)
    lc = learning_curves(op, y, ps, ridge=lam, noise_std=np.sqrt(s2), n_trials=trials,
                         n_test=nt, seed=seed, eigs=src)
    pf = np.unique(np.concatenate([np.round(np.geomspace(ps.min(), ps.max(), _count(fine, "fine"))),
                                   ps]).astype(np.int64))
    th = theory_learning_curve(src, y, pf, lam, np.sqrt(s2), trace=float(np.sum(op.diag())))
    tf = heldout_error(th, m, lam)
    k = int(np.argmax(tf))
    interior = 0 < k < pf.size - 1 or (np.isinf(tf[k]) and pf.size > 1)
    return _make("samplewise", ps, lc.experiment.errors, lc.theory, pf.astype(np.float64), tf,
                 float(pf[k]) if interior else np.nan, lam, s2, None, None, lc)


def ridgewise_double_descent(op_or_gram: Any, y: Any, ridges: Any, p: int, *, noise: float = 0.0,
                             trials: int = 20, test_size: Optional[int] = None, seed: int = 0,
                             eigs: Any = None, fine: int = 100,
                             cache_bytes: float = 2**30) -> DoubleDescent:
    """Test error vs ridge at a fixed training-set size p (same subsets for every ridge).

    Parameters
    ----------
    op_or_gram, y, noise, trials, test_size, seed, eigs
        As in :func:`samplewise_double_descent`.
    ridges : array_like, shape (G,)
        Absolute ridges λ >= 0 (0: min-norm interpolant), sorted on output.
    p : int
        Training-set size; ``p + test_size <= M``.
    fine : int
        Log-spaced theory points between the smallest positive and the largest ridge.
    cache_bytes : float
        Read the whole Gram once if 8 M² bytes fit, else per trial by
        :func:`~ntkscale.spectral.subsets.gather`.

    Returns
    -------
    DoubleDescent
        ``threshold`` = the theory-optimal ridge on the fine grid; compare
        :attr:`~DoubleDescent.optimum_theory` with :attr:`~DoubleDescent.optimum_experiment`.
        With noise the optimum is > 0 (a white spectrum and isotropic target of power P:
        ``λ* = σ²/P``, the Bayes posterior mean).

    References
    ----------
    Canatar, Bordelon & Pehlevan, Nat. Commun. 12, 2914 (2021); Nakkiran, Venkat, Kakade &
    Ma, "Optimal regularization can mitigate double descent", ICLR 2021.
    """
    op = _operator(op_or_gram)
    m = int(op.shape[0])
    lams = np.unique(check_ridges(ridges, "ridges"))
    p = _count(p, "p")
    s2 = _noise(noise)
    nt = _split(m, p, test_size, "p")
    trials = _count(trials, "trials")
    Y = _targets(y, m)
    errors = np.empty((lams.size, trials))
    for t, tr in enumerate(subsample_trials(op, p, nt, Y.shape[1], trials, noise_std=np.sqrt(s2),
                                            seed=seed, cache_bytes=cache_bytes)):
        w, V = np.linalg.eigh((tr.block[:p] + tr.block[:p].T) / 2)
        B, c = tr.block[p:] @ V, V.T @ (Y[tr.train] + tr.noise)  # shapes (nt, p), (p, C)
        mean_diag = float(np.mean(np.diag(tr.block[:p])))
        for i, lam in enumerate(lams):
            pred = B @ (pinv_weights(w + lam, lam, mean_diag)[:, None] * c)
            errors[i, t] = float(np.mean(np.sum((pred - Y[tr.test]) ** 2, axis=1)))
    src = _eigs(op, eigs)
    trace = float(np.sum(op.diag()))
    pos = lams[lams > 0]
    lf = (np.unique(np.concatenate([np.geomspace(pos.min(), pos.max(), _count(fine, "fine")), pos]))
          if pos.size else lams)
    allr = np.unique(np.concatenate([lams, lf]))
    ths = [theory_learning_curve(src, Y, [p], float(v), np.sqrt(s2), trace=trace) for v in allr]
    val = np.array([float(heldout_error(th, m, float(v))[0]) for th, v in zip(ths, allr)])
    at, atf = np.searchsorted(allr, lams), np.searchsorted(allr, lf)
    best = float(lf[int(np.argmin(val[atf]))])
    return _make("ridgewise", lams, errors, val[at], lf, val[atf], best, np.nan, s2, p, None,
                 [ths[i] for i in at])


def modelwise_double_descent(X_train: Any, y_train: Any, X_test: Any, y_test: Any, widths: Any, *,
                             trials: int = 20, ridge: float = 0.0, noise: float = 0.0,
                             seed: int = 0, pool: Optional[tuple] = None,
                             spectrum: Any = None, fine: int = 200) -> DoubleDescent:
    """Test error vs number of ReLU random features N: the model-wise double descent.

    Features ``sqrt(2/N) relu(W x)`` with ``W_ij ~ N(0, 1/d)`` (:mod:`.random_features`),
    min-norm (``ridge = 0``) or ridge fit on the n training samples; the error peaks at
    N = n (the median; the mean diverges there) and falls after, towards ``kernel_limit``.

    Parameters
    ----------
    X_train : array_like, shape (n, d)
        Training inputs (the project normalizes rows to norm sqrt(d); any scale works).
    y_train : array_like, shape (n,) or (n, C)
        Clean training targets (noise of variance ``noise`` is added per trial).
    X_test, y_test : array_like, shapes (t, d) and (t,) or (t, C)
    widths : array_like of int, shape (G,)
        Feature counts N (nested within a trial: the first N rows of one W).
    trials, seed : int
        Independent draws of W and the label noise.
    ridge, noise : float
        Absolute λ of ``(Phi^T Phi + λI)`` (= the kernel ridge) and noise variance σ².
    pool : (X_pool, y_pool), optional
        Sample of the input distribution for the theory's spectrum; default train ∪ test
        (then the theory is biased by O(n/M) as the training rows are part of the measure).
    spectrum : EmpiricalSpectrum or (eta, v2), optional
        The limit kernel's spectrum, instead of computing it from ``pool``.
    fine : int
        Log-spaced theory points.

    Returns
    -------
    DoubleDescent
        ``theory`` from :func:`~ntkscale.spectral.random_features.rf_learning_curve` (an
        average over training sets drawn from the pool; one fixed training set deviates
        from it by its own sampling fluctuation); ``kernel_limit`` exact for this training set.

    References
    ----------
    Belkin, Hsu, Ma & Mandal, PNAS 116 (2019); Mei & Montanari, CPAM 75 (2022);
    Simon, Karkada, Ghosh & Belkin, ICLR 2024 (random-feature eigenframework).
    """
    s2 = _noise(noise)
    lam = check_ridge(ridge)
    errors = rf_test_errors(X_train, y_train, X_test, y_test, widths,
                            trials=_count(trials, "trials"), ridge=lam, noise=s2, seed=seed)
    grid = np.asarray(widths, dtype=np.float64).reshape(-1)
    Xtr, Xte, Ytr, Yte = _check_data(X_train, y_train, X_test, y_test)
    n = Xtr.shape[0]
    klim = kernel_limit_error(relu_feature_kernel(Xtr), relu_feature_kernel(Xte, Xtr), Ytr, Yte,
                              lam, s2)
    if spectrum is None:
        Xp, Yp = (np.vstack([Xtr, Xte]), np.vstack([Ytr, Yte])) if pool is None else pool
        w, V = np.linalg.eigh(relu_feature_kernel(Xp))  # Xp validated by the kernel code
        spectrum = empirical_spectrum(w, V, Yp)
    eta, v2 = ((spectrum.eta, spectrum.v2_per_output) if isinstance(spectrum, EmpiricalSpectrum)
               else spectrum)
    nf = np.unique(np.concatenate([np.geomspace(grid.min(), grid.max(), _count(fine, "fine")), grid,
                                   [float(n)] if grid.min() < n < grid.max() else []]))
    rf = rf_learning_curve(eta, v2, n, grid, lam, s2, n_outputs=Ytr.shape[1])
    rf_f = rf_learning_curve(eta, v2, n, nf, lam, s2, n_outputs=Ytr.shape[1])
    return _make("modelwise", grid, errors, rf.Eg, nf, rf_f.Eg, float(n), lam, s2, n, klim, rf)


_KINDS = {"samplewise": samplewise_double_descent, "ridgewise": ridgewise_double_descent,
          "modelwise": modelwise_double_descent}


def double_descent(kind: str, *args: Any, **kwargs: Any) -> DoubleDescent:
    """One entry point: ``double_descent("samplewise" | "ridgewise" | "modelwise", ...)``.

    ``"sample"``, ``"ridge"``, ``"model"`` and hyphenated spellings are accepted; the
    remaining arguments go to :func:`samplewise_double_descent`,
    :func:`ridgewise_double_descent` or :func:`modelwise_double_descent`.
    """
    key = str(kind).lower().replace("-", "").replace("_", "").replace(" ", "")
    key = key if key.endswith("wise") else key + "wise"
    if key not in _KINDS:
        raise ValueError(f"kind must be one of {sorted(_KINDS)}, got {kind!r}")
    return _KINDS[key](*args, **kwargs)
