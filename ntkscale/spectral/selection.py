"""Ridge selection from one eigendecomposition: GCV, KARE and closed-form LOO.

Inputs are the full eigendecomposition of the n x n train Gram
``K = V diag(s) V^T`` (as from ``np.linalg.eigh``) and targets ``y`` of shape
(n,) or (n, C); the ridge ``lam`` is that of ``(K + lam I)`` (absolute, not
neural-tangents' relative ``diag_reg``). With C outputs every criterion is
*summed* over outputs (squared Frobenius norms). Eigenvalues below
``n * eps * max(s)`` are treated as exact zeros (the ``matrix_rank`` rule).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Literal

import numpy as np

from ..linop import check_ridges
from .validate import check_eigh, clean_gram_evals

__all__ = ["RidgeSelection", "gcv", "kare", "loo_error", "select_ridge"]


@dataclass(frozen=True)
class RidgeSelection:
    """Result of :func:`select_ridge`.

    Attributes
    ----------
    ridge, score : float
        The minimizing ridge and its criterion value.
    grid, scores : ndarray, shape (G,)
        The whole curve.
    method : str
    rule : str
        'min' (the minimizer) or '1se' (the largest ridge within one standard error of the
        minimum).
    standard_error : float or None
        Standard error of the score at the minimum ('1se' rule).
    subsample : int or None
        Training points the criterion was evaluated on (set by
        :func:`ntkscale.solvers.ridge.choose_ridge`; None: all).
    """

    ridge: float
    score: float
    grid: np.ndarray
    scores: np.ndarray
    method: str
    rule: str = "min"
    standard_error: Optional[float] = None
    subsample: Optional[int] = None


def _prepare(evals: Any, evecs: Any, y: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    s, v = check_eigh(evals, evecs)
    yy = np.asarray(y, dtype=np.float64)
    y2 = yy[:, None] if yy.ndim == 1 else yy
    if y2.ndim != 2 or y2.shape[0] != s.size:
        raise ValueError(f"y must have shape ({s.size},) or ({s.size}, C), got {yy.shape}")
    return clean_gram_evals(s), v, v.T @ y2  # shapes: (n,), (n, n), (n, C)


def _shaped(x: np.ndarray, ridge: Any) -> np.ndarray | float:
    return float(x[0]) if np.ndim(ridge) == 0 else x.reshape(np.shape(ridge))


def gcv(evals: Any, evecs: Any, y: Any, ridge: Any) -> np.ndarray | float:
    """Generalized cross-validation ``(1/n)||(I - S) y||^2 / (1 - tr S/n)^2``.

    ``S = K (K + lam I)^-1`` is the smoother (hat) matrix.

    Parameters
    ----------
    evals : array_like, shape (n,)
    evecs : array_like, shape (n, n)
    y : array_like, shape (n,) or (n, C)
    ridge : float or array_like, shape (G,)
        Ridges ``lam >= 0``.

    Returns
    -------
    float or ndarray, shape like ``ridge``

    Notes
    -----
    With ``w_rho = lam/(s_rho + lam)`` (the eigenvalues of ``I - S``) and
    ``z = V^T y``, ``GCV = (1/n) sum w^2 |z|^2 / ((1/n) sum w)^2``, homogeneous of
    degree 0 in ``w``. At ``lam = 0`` the literal formula is 0/0 when K is
    nonsingular; we return the limit ``lam -> 0+`` (``w ~ 1/s``). When K is
    singular with rank r, ``S`` -> the projector on range(K), ``tr S/n -> r/n``
    and ``w`` -> the indicator of the null space; both limits are continuous.

    References
    ----------
    Craven & Wahba, Numer. Math. 31, 377 (1979);
    Golub, Heath & Wahba, Technometrics 21, 215 (1979), definition of V(lambda).
    """
    s, _, z = _prepare(evals, evecs, y)
    lams = check_ridges(ridge, "ridge")
    z2 = np.sum(z * z, axis=1)  # shape: (n,)
    out = np.empty_like(lams)
    for g, lam in enumerate(lams):
        if lam > 0:
            w = lam / (s + lam)
        elif np.any(s == 0):
            w = (s == 0).astype(np.float64)
        else:
            w = s.min() / s
        out[g] = s.size * float(w * w @ z2) / float(w.sum()) ** 2
    return _shaped(out, ridge)


def kare(evals: Any, evecs: Any, y: Any, z: Any) -> np.ndarray | float:
    """Kernel alignment risk estimator of Jacot et al. (2020).

    ``KARE(z) = (1/n) y^T (K/n + z I)^-2 y / ((1/n) tr (K/n + z I)^-1)^2``; it
    equals :func:`gcv` at ``lam = n z``.

    Parameters
    ----------
    evals : array_like, shape (n,)
        Eigenvalues of K (not K/n).
    evecs : array_like, shape (n, n)
    y : array_like, shape (n,) or (n, C)
    z : float or array_like, shape (G,)
        Ridges on ``K/n``, >= 0; ``z = 0`` needs a nonsingular K.

    Returns
    -------
    float or ndarray, shape like ``z``

    References
    ----------
    Jacot, Simsek, Spadaro, Hongler & Gabriel, "Kernel alignment risk estimator:
    risk prediction from training data", NeurIPS 2020 (definition of KARE).
    """
    s, _, proj = _prepare(evals, evecs, y)
    zs = check_ridges(z, "z")
    n = s.size
    if np.any(zs == 0) and np.any(s == 0):
        raise ValueError("KARE at z=0 needs a nonsingular K ((K/n)^-1 does not exist; rank "
                         f"{int(np.count_nonzero(s))} < n={n}); use z > 0, or gcv(), which "
                         "has a lam -> 0 limit")
    t = s / n
    z2 = np.sum(proj * proj, axis=1)
    out = np.empty_like(zs)
    for g, zz in enumerate(zs):
        r = 1.0 / (t + zz)  # eigenvalues of (K/n + z I)^-1
        out[g] = (float(r * r @ z2) / n) / (float(r.sum()) / n) ** 2
    return _shaped(out, z)


def loo_error(evals: Any, evecs: Any, y: Any, ridge: Any) -> np.ndarray | float:
    """Closed-form leave-one-out error ``(1/n) sum_i ([(K+lam I)^-1 y]_i / [(K+lam I)^-1]_ii)^2``.

    Parameters
    ----------
    evals : array_like, shape (n,)
    evecs : array_like, shape (n, n)
    y : array_like, shape (n,) or (n, C)
    ridge : float or array_like, shape (G,)
        ``lam >= 0``; ``lam = 0`` needs a nonsingular K (interpolation: the
        held-out point's prediction from the other n-1 is still defined).

    Returns
    -------
    float or ndarray, shape like ``ridge``
        Mean over held-out points of the squared LOO residual (summed over outputs).

    Notes
    -----
    Cost O(n^2 G C) from one eigendecomposition: ``(K + lam I)^-1 = V diag(1/(s+lam)) V^T``.

    References
    ----------
    Wahba, "Spline Models for Observational Data", SIAM (1990), Ch. 4 (leaving-out-one lemma);
    Rifkin & Lippert, "Notes on regularized least squares", MIT-CSAIL-TR-2007-025.
    """
    s, v, proj = _prepare(evals, evecs, y)
    lams = check_ridges(ridge, "ridge")
    if np.any(lams == 0) and np.any(s == 0):
        raise ValueError("closed-form LOO at ridge=0 needs a nonsingular K (rank "
                         f"{int(np.count_nonzero(s))} < n={s.size}): [K^-1]_ii is undefined. "
                         "Use a small positive ridge")
    v2 = v * v
    out = np.empty_like(lams)
    for g, lam in enumerate(lams):
        inv = 1.0 / (s + lam)  # shape: (n,)
        alpha = v @ (inv[:, None] * proj)  # (K + lam I)^-1 y, shape: (n, C)
        hii = v2 @ inv  # diag of (K + lam I)^-1, shape: (n,)
        res = alpha / hii[:, None]
        out[g] = float(np.sum(res * res)) / s.size
    return _shaped(out, ridge)


def _per_sample(method: str, s: np.ndarray, v: np.ndarray, proj: np.ndarray, lam: float) -> np.ndarray:
    """The n terms whose mean is the criterion at ``lam > 0``: squared LOO residuals (summed
    over outputs), or GCV's squared residuals ``[(I - S) y]_i`` over ``(tr(I - S)/n)²``."""
    inv = 1.0 / (s + lam)
    if method == "loo":
        alpha = v @ (inv[:, None] * proj)  # (K + lam I)^-1 y, shape: (n, C)
        res = alpha / ((v * v) @ inv)[:, None]
        return np.sum(res * res, axis=1)
    w = lam * inv  # eigenvalues of I - S
    res = v @ (w[:, None] * proj)  # (I - S) y, shape: (n, C)
    return np.sum(res * res, axis=1) / float(w.mean()) ** 2


def select_ridge(evals: Any, evecs: Any, y: Any, grid: Any,
                 method: Literal["gcv", "loo"] = "gcv", rule: Literal["min", "1se"] = "min") -> RidgeSelection:
    """Pick the ridge by GCV or the closed-form LOO error over a grid.

    Parameters
    ----------
    evals : array_like, shape (n,)
    evecs : array_like, shape (n, n)
    y : array_like, shape (n,) or (n, C)
    grid : array_like, shape (G,)
        Candidate ridges ``lam >= 0`` (absolute, as in ``K + lam I``).
    method : {'gcv', 'loo'}
    rule : {'min', '1se'}
        'min': the minimizer. '1se': the largest ridge whose score is within one standard
        error of the minimum (the criterion is a mean of n per-sample terms; SE = their
        std / √n at the minimizer): where the curve is flat to within its own noise, the
        most regularized (and best-conditioned) model. Needs the minimizer at ``lam > 0``.

    Returns
    -------
    RidgeSelection
        The first minimizer on ties.

    References
    ----------
    Golub, Heath & Wahba, Technometrics 21, 215 (1979); Jacot et al., NeurIPS 2020;
    Hastie, Tibshirani & Friedman, *The Elements of Statistical Learning* (2009), §7.10.1
    (the one-standard-error rule).
    """
    g = check_ridges(grid, "grid")
    if method == "gcv":
        scores = np.atleast_1d(gcv(evals, evecs, y, g))
    elif method == "loo":
        scores = np.atleast_1d(loo_error(evals, evecs, y, g))
    else:
        raise ValueError(f"method must be 'gcv' or 'loo', got {method!r}")
    if rule not in ("min", "1se"):
        raise ValueError(f"rule must be 'min' or '1se', got {rule!r}")
    i = int(np.argmin(scores))
    se = None
    if rule == "1se":
        if g[i] <= 0:
            raise ValueError("the '1se' rule needs the minimizing ridge > 0; drop 0 from the grid")
        sv, v, proj = _prepare(evals, evecs, y)
        terms = _per_sample(method, sv, v, proj, float(g[i]))
        se = float(terms.std(ddof=1) / np.sqrt(terms.size)) if terms.size > 1 else 0.0
        ok = np.flatnonzero(scores <= scores[i] + se)
        i = int(ok[np.argmax(g[ok])])
    return RidgeSelection(ridge=float(g[i]), score=float(scores[i]), grid=g, scores=scores,
                          method=method, rule=rule, standard_error=se)
