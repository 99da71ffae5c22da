"""What the transformer double-descent study measures from its kernels (rank, ridgeless
kernel regression, kernel distance) and its summary: medians over seeds per width and noise
level, the peaks, the thresholds, and how the measured curve agrees with the NTK predictions
(:func:`summarize`; the study itself: :mod:`ntkscale.studies.transformer_dd`)."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from ..spectral.subsets import pinv_weights

__all__ = ["summarize"]


def _rank(K: np.ndarray, rtol: Optional[float] = None) -> int:
    """Eigenvalues above ``rtol * max`` (default ``n eps``, the matrix_rank rule)."""
    w = np.linalg.eigvalsh(K)
    tol = (K.shape[0] * np.finfo(np.float64).eps if rtol is None else rtol) * float(w.max())
    return int(np.sum(w > tol))


def _krr_realized(K: np.ndarray, Kt: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Ridgeless ``K_tX K^+ r`` with the cut of :mod:`ntkscale.spectral.curves`, shape (t,)."""
    w, V = np.linalg.eigh(K)
    inv = pinv_weights(w, 0.0, float(np.mean(np.diag(K))))
    return Kt @ (V @ (inv * (V.T @ r)))


def _kernel_distance(K0: np.ndarray, K1: np.ndarray) -> tuple[float, float]:
    n0, n1 = np.linalg.norm(K0), np.linalg.norm(K1)
    return float(1.0 - np.sum(K0 * K1) / (n0 * n1)), float(np.linalg.norm(K1 - K0) / n0)


def _peak(values: np.ndarray) -> dict:
    """Largest value over the grid, and whether it is interior (a rise, then a fall)."""
    v = np.where(np.isfinite(values), values, np.inf)
    i = int(np.argmax(v))
    interior = 0 < i < v.size - 1
    return {"index": i, "value": float(values[i]), "interior": bool(interior)}


def _log_corr(a: np.ndarray, b: np.ndarray) -> float:
    ok = np.isfinite(a) & np.isfinite(b) & (a > 0) & (b > 0)
    if ok.sum() < 3:
        return float("nan")
    return float(np.corrcoef(np.log(a[ok]), np.log(b[ok]))[0, 1])


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3:
        return float("nan")
    ra = np.argsort(np.argsort(a[ok])).astype(float)
    rb = np.argsort(np.argsort(b[ok])).astype(float)
    return float(np.corrcoef(ra, rb)[0, 1])


def summarize(cfg: Any, rows: list[dict]) -> dict:
    """Medians over seeds per width and noise, peaks, thresholds, agreement statistics."""
    widths = np.array([r["width"] for r in rows])
    params = np.array([r["params"] for r in rows])
    rank = np.array([np.median(r["rank_train"]) for r in rows])
    n = cfg.n_train
    reach = np.flatnonzero(rank >= n)
    kernel_threshold = int(widths[reach[0]]) if reach.size else None
    p_cross = np.flatnonzero(params >= n)
    out: dict = {"widths": widths.tolist(), "params": params.tolist(),
                 "rank_train_median": rank.tolist(),
                 "kernel_threshold_width": kernel_threshold,
                 "params_threshold_width": int(widths[p_cross[0]]) if p_cross.size else None,
                 "noise": {}}
    for z, sg in enumerate(cfg.noise):
        med = {k: np.array([np.median(r[k][z]) for r in rows]) for k in (
            "test_mse", "train_mse", "ntk_krr", "ntk_krr_expected", "spectral",
            "kernel_distance", "kernel_rel_change")}
        peaks = {k: _peak(med[k]) for k in ("test_mse", "ntk_krr_expected", "spectral")}
        for pk in peaks.values():
            pk["width"] = int(widths[pk["index"]])
            pk["params"] = int(params[pk["index"]])
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = med["test_mse"] / med["ntk_krr_expected"]
        n_seeds = len(rows[0]["test_mse"][z])
        per_seed = {k: [int(widths[_peak(np.array([r[k][z][s] for r in rows]))["index"]])
                        for s in range(n_seeds)]
                    for k in ("test_mse", "ntk_krr_expected", "spectral")}
        spread = {k: [[float(np.min(r[k][z])), float(np.max(r[k][z]))] for r in rows]
                  for k in ("test_mse", "ntk_krr_expected")}
        out["noise"][f"{sg:g}"] = {
            "median": {k: v.tolist() for k, v in med.items()},
            "seed_min_max": spread,
            "peaks": peaks,
            "peak_width_per_seed": per_seed,
            "log_corr_measured_vs_ntk": _log_corr(med["test_mse"], med["ntk_krr_expected"]),
            "log_corr_measured_vs_spectral": _log_corr(med["test_mse"], med["spectral"]),
            "spearman_measured_vs_ntk": _spearman(med["test_mse"], med["ntk_krr_expected"]),
            "log_corr_ntk_vs_spectral": _log_corr(med["ntk_krr_expected"], med["spectral"]),
            "ratio_measured_over_ntk": ratio.tolist(),
        }
    return out
