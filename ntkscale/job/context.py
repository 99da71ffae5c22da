"""What the stages of a job share: config, data, cluster, run directory, metrics."""

from __future__ import annotations

import json
import logging
import os
import resource
import time
from typing import Any, Optional

import numpy as np

from .config import JobConfig, to_plain as _plain
from .model import build_arch

log = logging.getLogger("ntkscale.job")

__all__ = ["JobContext", "LoggedOperator"]


class LoggedOperator:
    """Wrap a Gram operator and log every pass over it (eigensolver passes, CG iterations).

    Solvers only see ``shape``, ``dtype``, ``diag``, ``matvec``, ``to_numpy`` and slicing;
    everything else is forwarded.
    """

    def __init__(self, op: Any, what: str, every: int = 1):
        self._op, self._what, self._every = op, what, max(1, every)
        self.passes = 0
        self._t0 = time.perf_counter()

    def matvec(self, V: Any, **kwargs: Any) -> Any:
        out = self._op.matvec(V, **kwargs)
        self.passes += 1
        if self.passes % self._every == 0:
            cols = 1 if np.ndim(V) == 1 else np.shape(V)[1]
            log.info("%s: pass %d over the Gram (%d columns), %.1f s", self._what, self.passes, cols,
                     time.perf_counter() - self._t0)
        return out

    def __getitem__(self, key: Any) -> Any:
        return self._op[key]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._op, name)


class JobContext:
    """Lazily loaded data, architecture and cluster of a job, and its run directory.

    Stage functions read what earlier stages wrote (``fit.npz``, ``spectrum.npz``) from the
    run directory, so each stage can also run alone on an existing store.
    """

    def __init__(self, cfg: JobConfig, progress: Optional[bool] = None, repair: bool = False):
        self.cfg = cfg
        self.progress = progress
        self.repair = repair  # the gram stage verifies and repairs the store
        self.arch = build_arch(cfg.model)
        self.metrics: dict = self._load_metrics()
        self._data: Any = None
        self._cluster: Any = None
        self._stage_times: dict[str, list[float]] = {}  # [start, end] s since the cluster started

    # ----------------------------------------------------------- run directory
    def path(self, *parts: str) -> str:
        return os.path.join(self.cfg.out, *parts)

    def _load_metrics(self) -> dict:
        try:
            with open(self.path("metrics.json")) as f:
                return json.load(f)
        except (OSError, ValueError):  # none yet, or not a run directory (the pre-flight says so)
            return {"stages": {}}

    def record(self, stage: str, values: dict) -> None:
        """Store a stage's metrics and write ``metrics.json`` (atomic replace)."""
        self.metrics.setdefault("stages", {})[stage] = _plain(values)
        if self._cluster is not None and self._cluster.ledger is not None:  # which workers ran it
            end = self._cluster.ledger.now()
            self._stage_times[stage] = [max(0.0, end - float(values.get("seconds", 0.0))), end]
            self._record_cluster(end)
        self.save_metrics()

    def save_metrics(self) -> None:
        tmp = self.path("metrics.json.tmp")
        with open(tmp, "w") as f:
            json.dump(_plain(self.metrics), f, indent=2, sort_keys=True)
        os.replace(tmp, self.path("metrics.json"))

    # ------------------------------------------------------------------- data
    @property
    def data(self) -> Any:
        if self._data is None:
            from ..data import load_dataset

            t = time.perf_counter()
            self._data = load_dataset(self.cfg.data, seed=self.cfg.job["seed"])
            d = self._data
            log.info("data %s: %d train, %d test, d=%d (%.1f s)", d.name, d.X_train.shape[0],
                     0 if d.X_test is None else d.X_test.shape[0], d.X_train.shape[1],
                     time.perf_counter() - t)
            self.metrics["data"] = _plain({"name": d.name, "task": d.task, "n_train": d.X_train.shape[0],
                                           "n_test": 0 if d.X_test is None else d.X_test.shape[0],
                                           "d": d.X_train.shape[1],
                                           "task_reason": d.info.get("task_reason"),
                                           "task_doubts": d.info.get("task_doubts", []), "info": d.info})
        return self._data

    def targets(self) -> tuple[np.ndarray, Optional[np.ndarray]]:
        """Regression targets (n, C) for the train split, and the classes for classification
        (centred one-hot, :func:`ntkscale.pipeline.encode_classes`: the estimator's rule)."""
        d = self.data
        classes = np.unique(d.y_train) if d.task == "classification" else None
        return self.encode(d.y_train, classes), classes

    def encode(self, y: np.ndarray, classes: Optional[np.ndarray]) -> np.ndarray:
        """Targets (m, C) of labels or values ``y`` (:func:`ntkscale.pipeline.encode_targets`)."""
        from ..pipeline import encode_targets

        return encode_targets(y, classes)

    # ---------------------------------------------------------------- cluster
    @property
    def cluster(self) -> Any:
        if self._cluster is None:
            from ..clusters import start_cluster
            from ..tiling.device import gpu_workers

            # GPU tiles on a local cluster: one worker per GPU (other kinds place their own)
            t0 = time.time()
            self._cluster = start_cluster(self.cfg.cluster, gpus=gpu_workers(self.cfg.kernel["device"]))
            self._cluster.start_ledger(t0)
            self._record_cluster()
        return self._cluster

    def _record_cluster(self, end: Optional[float] = None) -> None:
        """``metrics["cluster"]``: the requested spec and the workers that joined so far
        (:meth:`ntkscale.clusters.ClusterHandle.record`)."""
        try:
            self.metrics["cluster"] = _plain(self._cluster.record(self._stage_times, end))
        except Exception as e:  # pragma: no cover - the record must not fail a run
            log.warning("could not record the cluster's workers: %s", e)

    @property
    def client(self) -> Any:
        """What the library's ``client=`` arguments take: a Client, or ``"sync"``."""
        return self.cluster.client or "sync"

    @property
    def runner(self) -> Any:
        return self.cluster.runner

    def operator(self, kind: Optional[str] = None, what: str = "", every: int = 1) -> Any:
        """The stored train Gram as an operator; with ``what``, every ``every``-th pass is logged."""
        from ..operator import StoredGram

        op = StoredGram(self.cfg.store, kind or self.cfg.kernel["kind"], client=self.client,
                        device=self.cfg.kernel["device"], factor_url=self.cfg.solver["factor_store"] or None,
                        overwrite_factor=self.cfg.kernel["overwrite"])
        return LoggedOperator(op, what, every) if what else op

    def peak_memory(self) -> dict:
        """Peak RSS (GiB) of this process and of each worker (Linux ``ru_maxrss``)."""
        out = {"client_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}
        cl = self._cluster.client if self._cluster is not None else None
        if cl is not None:
            try:
                rss = cl.run(_worker_peak)
                out["workers_gib"] = {str(k): v for k, v in rss.items()}
                out["worker_max_gib"] = max(rss.values()) if rss else 0.0
            except Exception as e:  # pragma: no cover - reporting must not fail a run
                out["workers_error"] = str(e)
        return out

    def close(self) -> None:
        """Record the workers once more (the run's end, also after a failed stage), then
        close the cluster."""
        if self._cluster is not None:
            try:
                self._record_cluster()
                if os.path.isdir(self.cfg.out):
                    self.save_metrics()
            finally:
                self._cluster.close()
                self._cluster = None


def _worker_peak() -> float:
    import resource as r

    return r.getrusage(r.RUSAGE_SELF).ru_maxrss / 2**20
