"""The embedded default job: a real Gram build on a local cluster, checked against dense."""

from __future__ import annotations

import os
import time
from typing import Any, Optional

import numpy as np

from . import stax
from .operator import StoredGram
from .tiling import build_gram


def load_digits_or_sphere(n: int, seed: int = 0) -> tuple[np.ndarray, str]:
    """Centered, unit-norm-times-sqrt(d) inputs: scikit-learn digits (repeated with small
    noise past 1797 rows) when scikit-learn is installed, else uniform points on S^{d-1}."""
    rng = np.random.default_rng(seed)
    try:
        from sklearn.datasets import load_digits

        base = load_digits().data.astype(np.float64)
        X = base[rng.integers(0, len(base), n)] if n > len(base) else base[:n]
        X = X + (0.05 * rng.standard_normal(X.shape) if n > len(base) else 0.0)
        name = "sklearn digits (1797x64)" + (" resampled with noise" if n > len(base) else "")
    except ImportError:  # pragma: no cover - sklearn is a test/extra dependency
        X = rng.standard_normal((n, 64))
        name = "uniform sphere S^63"
    X = X - X.mean(axis=0)
    X *= np.sqrt(X.shape[1]) / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    return X, name


def run_demo(out: str = "runs/demo", n: int = 4000, depth: int = 3, client: Any = None,
             progress: Optional[bool] = None, seed: int = 0) -> dict:
    """Build ``NTK`` and ``NNGP`` of ``serial((Dense(W_std=sqrt2, b_std=0.1), Relu) x depth, Dense)``
    into ``<out>/gram.zarr`` (``out``: new, empty or a run directory ntkscale wrote)."""
    from .storage.ownership import claim_dir

    claim_dir(out, "run", key="--out")
    X, name = load_digits_or_sphere(n, seed)
    layers = []
    for _ in range(depth):
        layers += [stax.Dense(512, W_std=2 ** 0.5, b_std=0.1), stax.Relu()]
    arch = stax.serial(*layers, stax.Dense(1, W_std=2 ** 0.5, b_std=0.1))
    store = os.path.join(out, "gram.zarr")
    rep = build_gram(arch, X, store, get=("nngp", "ntk"), client=client, progress=progress)
    rng = np.random.default_rng(seed + 1)
    with StoredGram(store, "ntk", client="sync") as op:
        idx = np.sort(rng.choice(n, size=min(n, 300), replace=False))
        dense = arch.kernel_fn(X[idx], X, "ntk")
        got = np.stack([op[int(i):int(i) + 1, 0:n][0] for i in idx])
        err = float(np.max(np.abs(got - dense)) / np.max(np.abs(dense)))
        t0 = time.perf_counter()
        ones = op.matvec(np.ones(n))
        mv = time.perf_counter() - t0
        diag = op.diag()
    report = {
        "data": name, "n": n, "d": X.shape[1], "depth": depth, "store": store,
        "tile": rep.tile, "tiles": rep.n_tiles, "computed": rep.computed, "resumed": rep.resumed,
        "build_seconds": round(rep.seconds, 2), "dashboard": rep.dashboard,
        "max_rel_error_vs_dense_rows": err, "matvec_seconds": round(mv, 3),
        "ntk_diag_mean": float(diag.mean()), "ntk_row_sum_mean": float(ones.mean()),
    }
    if err > 1e-6:  # float32 storage: ~6e-8 relative expected
        raise RuntimeError(f"stored Gram disagrees with the dense kernel: {err:.3g}")
    return report
