"""A finished fit read back from a job's run directory: everything a fitted estimator holds.

A run directory (:mod:`ntkscale.job.run`) has ``config.resolved.json`` (every section with its
defaults), ``fit.npz`` (α, the absolute ridge, the store's build id, the classes, the kernel
kind) and the Gram store, which keeps the training inputs (``x1``, float64, as preprocessed)
and the architecture (its spec). :func:`load_fit` reads the three and checks that they belong
together; :meth:`ntkscale.NTKRegressor.from_run` turns the result into a fitted estimator.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from ..errors import StaleFitError
from ..kernels import Layer

__all__ = ["RUN_CONFIG", "FIT_FILE", "SavedFit", "load_fit", "run_store"]

RUN_CONFIG = "config.resolved.json"
FIT_FILE = "fit.npz"


@dataclass
class SavedFit:
    """The fit of a job, as :func:`load_fit` reads it.

    Attributes
    ----------
    run_dir : str
    config : dict
        ``config.resolved.json`` (sections ``job``, ``data``, ``model``, ``kernel``, ``solver``...).
    arch : Layer
        Rebuilt from the store's architecture spec (the one the Gram was built with).
    X_train : ndarray, shape (n, d), float64
        The training inputs as the store holds them (after the job's preprocessing).
    alpha : ndarray, shape (n, C)
        Dual coefficients.
    ridge : float
        Absolute ridge of the solve.
    classes : ndarray, shape (C,), or None
        Class labels (classification), the columns of ``alpha``; None for regression.
    kind : {'ntk', 'nngp'}
    store : str
        The Gram store URL.
    build_id : str
    fit_metrics : dict
        The ``fit`` stage's metrics from ``metrics.json`` (solver, residual...), if recorded.
    """

    run_dir: str
    config: dict
    arch: Layer
    X_train: np.ndarray
    alpha: np.ndarray
    ridge: float
    classes: Optional[np.ndarray]
    kind: str
    store: str
    build_id: str
    fit_metrics: dict = field(default_factory=dict)


def _read_json(path: str) -> Optional[dict]:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def run_store(run_dir: str, config: dict) -> str:
    """The Gram store URL of a run: ``[kernel] store`` as resolved, except that the default
    ``<job.out>/gram.zarr`` is taken inside ``run_dir`` (so a moved run directory, or a
    relative ``job.out`` read from another working directory, still finds its store)."""
    store = str(config["kernel"]["store"])
    default = os.path.join(str(config["job"]["out"]), "gram.zarr")
    if "://" not in store and os.path.normpath(store) == os.path.normpath(default):
        return os.path.join(run_dir, "gram.zarr")
    return store


def load_fit(run_dir: Any) -> SavedFit:
    """Read the fit of a job's run directory.

    Parameters
    ----------
    run_dir : str or path
        A run directory written by ``ntkscale run`` (or the ``gram`` and ``fit`` stages).

    Returns
    -------
    SavedFit

    Raises
    ------
    FileNotFoundError
        No ``config.resolved.json`` (not a run directory), no ``fit.npz`` (the fit stage has
        not run), or no Gram store; each message names the command that makes it.
    RuntimeError
        ``fit.npz`` was solved on another build of the store, or for another kernel kind.
    """
    from ..kernels import from_spec
    from ..storage import GramStore

    run_dir = os.fspath(run_dir)
    config = _read_json(os.path.join(run_dir, RUN_CONFIG))
    if config is None:
        raise FileNotFoundError(f"{run_dir!r} is not a run directory (no {RUN_CONFIG}); run the job "
                                "first: ntkscale run JOB.toml")
    try:
        with np.load(os.path.join(run_dir, FIT_FILE), allow_pickle=False) as z:
            f = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise FileNotFoundError(f"no {FIT_FILE} in {run_dir!r}: the job has no fit yet; run the 'fit' "
                                "stage: ntkscale fit JOB.toml (or ntkscale run JOB.toml)") from None
    store = run_store(run_dir, config)
    try:
        gs = GramStore.open(store)
    except (FileNotFoundError, OSError) as e:
        raise FileNotFoundError(f"the Gram store of run {run_dir!r} is not at {store!r} ({e}); run the "
                                "'gram' and 'fit' stages again") from None
    meta = gs.meta
    kind = str(f["kind"])
    if str(f["build_id"]) != str(meta["build_id"]) or kind != config["kernel"]["kind"]:
        raise StaleFitError(f"{os.path.join(run_dir, FIT_FILE)} was solved on another build of the Gram "
                           f"store {store!r} or for another kernel kind; run the 'fit' stage again")
    n = int(meta["shape"][0])
    X = np.ascontiguousarray(gs.read("x1", slice(0, n)), dtype=np.float64)
    classes = f["classes"] if f["classes"].size else None
    metrics = _read_json(os.path.join(run_dir, "metrics.json")) or {}
    alpha = np.asarray(f["alpha"], np.float64)
    return SavedFit(run_dir=run_dir, config=config, arch=from_spec(json.loads(meta["arch"])),
                    X_train=X, alpha=alpha.reshape(alpha.shape[0], -1), ridge=float(f["ridge"]),
                    classes=classes, kind=kind, store=store, build_id=str(meta["build_id"]),
                    fit_metrics=dict(metrics.get("stages", {}).get("fit", {})))
