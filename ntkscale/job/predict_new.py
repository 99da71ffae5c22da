"""Predictions of a finished job on new, unlabelled rows: ``ntkscale predict JOB --input NEW --out PREDS``.

The new file's features are selected and preprocessed exactly as the job's training rows
(:func:`ntkscale.data.files.read_features`: the training file's feature columns by name;
:func:`ntkscale.data.preprocess_new`: the source scaling and ``[data] preprocess`` with the
training statistics), then streamed through the cross-Gram predict on the job's cluster
(:func:`ntkscale.pipeline.predict`). The run directory is only read: ``predictions.npz``
and every other file of it stay as they are.

Output (by the suffix of ``out``; each marked as written by ntkscale, so a later call may
replace it, and nothing else is ever overwritten)::

    row                     the row's index in the input file (0-based, header excluded)
    prediction_0..C-1       regression outputs, or class scores (centred one-hot targets)
    label                   classification: the predicted class
    target / target_0..     when the input has the job's target: the given values

A target in the input is never needed; when present it only adds ``accuracy`` (classification)
or ``mse`` (regression) to the returned summary.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Any, Optional

import numpy as np

from .._config import ConfigError
from ..storage.ownership import NPZ_MARK, check_target_file, mark_parquet_metadata
from .config import JobConfig
from .model import build_arch

log = logging.getLogger("ntkscale.job")

__all__ = ["predict_new", "OUT_FORMATS"]

OUT_FORMATS = {".parquet": "parquet", ".pq": "parquet", ".npz": "npz", ".csv": "csv"}


def _out_format(out: str) -> str:
    low = str(out).lower()
    for suffix, fmt in OUT_FORMATS.items():
        if low.endswith(suffix):
            return fmt
    raise ConfigError(f"--out {out!r}: name the file .parquet, .npz or .csv (the suffix picks the format)")


def _check_out(out: str) -> None:
    """The safety rule for the output file (before any work): only a new file or one
    ntkscale wrote is written (:func:`ntkscale.storage.ownership.check_target_file`)."""
    check_target_file(out, key="--out")


def _columns(table: dict, prefix: str, a: np.ndarray) -> None:
    a = a.reshape(a.shape[0], -1)
    for j in range(a.shape[1]):
        table[f"{prefix}_{j}"] = np.ascontiguousarray(a[:, j])


def _write(out: str, fmt: str, table: dict) -> None:
    """Write ``table`` (name → 1-D array) to ``out`` atomically, with ntkscale's mark."""
    folder = os.path.dirname(os.path.abspath(out))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(out)}.{os.getpid()}.tmp")
    mark = mark_parquet_metadata("predictions")
    try:
        if fmt == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            t = pa.table(table)
            pq.write_table(t.replace_schema_metadata({**(t.schema.metadata or {}), **mark}), tmp)
        elif fmt == "npz":
            with open(tmp, "wb") as f:
                np.savez(f, **table, **{NPZ_MARK: np.frombuffer(mark[b"ntkscale"], np.uint8)})
        else:
            import pandas as pd

            with open(tmp, "w", newline="") as f:
                f.write(f"# ntkscale {mark[b'ntkscale'].decode()}\n")
                pd.DataFrame(table).to_csv(f, index=False)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def predict_new(cfg: JobConfig, input_url: str, out: str, *, progress: Optional[bool] = None) -> dict:
    """Predict the rows of ``input_url`` with the fitted job ``cfg`` and write ``out``.

    Parameters
    ----------
    cfg : JobConfig
        The job; its run directory ``cfg.out`` must hold the ``gram`` and ``fit`` stages' outputs.
    input_url : str
        New rows: csv, parquet, npz (``x_key``), npy (X only) or zarr (``x_key``); a path or
        fsspec URL. Only the features are needed.
    out : str
        Local file to write: ``.parquet``, ``.npz`` or ``.csv``.
    progress : bool, optional
        Unused (the cross-Gram tasks report through logging).

    Returns
    -------
    dict
        ``input``, ``out``, ``n`` (rows), ``d``, ``columns`` written, ``seconds``; and
        ``accuracy`` / ``mse`` when the input holds the job's target.

    Raises
    ------
    ntkscale.storage.UnsafePathError
        ``out`` exists and was not written by ntkscale (checked before any work).
    FileNotFoundError
        No fit in the run directory, or no Gram store (naming the stage to run).
    ntkscale.data.DataError
        Missing feature columns, another feature count, NaN/Inf/missing values (the rows).
    """
    from ..data import DataError, load_dataset, preprocess_new
    from ..data.files import read_features
    from ..pipeline import check_store, decode_classes, encode_targets, predict
    from .stages import load_fit_file

    t0 = time.perf_counter()
    fmt = _out_format(out)
    _check_out(out)
    if not os.path.exists(os.path.join(cfg.out, "fit.npz")):
        raise FileNotFoundError(f"no fit in {cfg.out}: the job has no fit yet; run it first "
                                "(ntkscale run JOB.toml, or the 'gram' and 'fit' stages)")
    spec = cfg.data
    raw = load_dataset(dataclasses.replace(spec, preprocess="none"), seed=cfg.job["seed"])
    files = raw.info.get("files") or [{}]
    X_new, y_new, meta = read_features(input_url, spec, columns=files[0].get("columns"))
    if X_new.shape[1] != raw.d:
        raise DataError(f"--input {input_url!r} has {X_new.shape[1]} features per row but the job was "
                        f"trained on {raw.d}; give the same features as the training data")
    X_train, Xn = preprocess_new(spec, raw.X_train, X_new)
    arch = build_arch(cfg.model)
    build_id = check_store(cfg.store, X_train, arch, build="run the 'gram' stage")
    f = load_fit_file(cfg, build_id)
    alpha = f["alpha"].reshape(f["alpha"].shape[0], -1)
    classes = f["classes"] if f["classes"].size else None

    from ..clusters import start_cluster
    from ..tiling.device import gpu_workers

    device = cfg.kernel["device"]
    log.info("predicting %d new rows of %s on the job's cluster", len(Xn), input_url)
    with start_cluster(cfg.cluster, gpus=gpu_workers(device)) as handle:
        pred = predict(arch, Xn, alpha, cfg.kernel["kind"], store=cfg.store, build_id=build_id,
                       runner=handle.runner, device=device)

    table: dict = {"row": np.arange(len(Xn), dtype=np.int64)}
    _columns(table, "prediction", pred)
    summary: dict[str, Any] = {"input": input_url, "out": out, "n": int(len(Xn)), "d": int(raw.d)}
    if classes is not None:
        table["label"] = decode_classes(pred, classes)
    if y_new is not None:
        y = np.asarray(y_new)
        if classes is not None:
            from ..data.validate import as_labels

            y = as_labels(y.reshape(len(y), -1)[:, 0] if y.ndim > 1 else y, f"--input {input_url!r}")
            table["target"] = y
            summary["accuracy"] = float(np.mean(table["label"] == y))
        else:
            Y = encode_targets(y.astype(np.float64))
            _columns(table, "target", Y)
            summary["mse"] = float(np.mean(np.sum((pred - Y) ** 2, axis=1)))
    _write(out, fmt, table)
    summary.update(columns=list(table), seconds=round(time.perf_counter() - t0, 3))
    log.info("wrote %s (%d rows)", out, len(Xn))
    return summary
