"""The ``export`` stage: a run's predictions and eigenpairs as Parquet or Zarr for downstream tools.

Section (defaults shown)::

    [export]
    enabled = false               # true: add "export" to job.stages (or list it there)
    format = "auto"               # parquet | zarr | auto (parquet when pyarrow is installed)
    what = ["predictions", "eigenpairs"]
    path = "export"               # folder, relative to the run directory (or absolute)

Files (``path``/...)::

    parquet  predictions.parquet   row, prediction_0..C-1, target_0..C-1   (from predictions.npz;
                                   row: the test row's index in its source: the pool for
                                   test_fraction / n_test hold-outs, else the test split)
             eigenvalues.parquet   rank, eigenvalue          (descending; from spectrum.npz)
             eigenvectors.parquet  row, eigenvector_0..k-1   (train rows; column j pairs rank j)
    zarr     predictions.zarr      arrays prediction (m, C), target (m, C), row (m,)
             eigenpairs.zarr       arrays evals (k,), evecs (n, k); attribute trace

Values are written as stored in the ``.npz`` files (float64: read back bit for bit). What an
earlier stage did not produce is skipped with a message naming the stage to run.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Mapping

import numpy as np

from .._config import ConfigError, check_keys, get
from ..storage.ownership import check_dir, claim_dir, mark_parquet_metadata
from .context import JobContext
from .registry import Stage, register

log = logging.getLogger("ntkscale.job")

__all__ = ["stage_export", "EXPORTS", "FORMATS"]

#: What can be exported: name → (run-directory file, the stage that writes it).
EXPORTS = {"predictions": ("predictions.npz", "predict"), "eigenpairs": ("spectrum.npz", "spectrum")}
FORMATS = ("auto", "parquet", "zarr")


def _section(t: Mapping[str, Any]) -> dict:
    check_keys(t, ("enabled", "format", "what", "path"), "export")
    what = get(t, "what", list, list(EXPORTS), path="export")
    bad = [w for w in what if w not in EXPORTS]
    if bad or not what or len(set(what)) != len(what):
        raise ConfigError(f"'export.what' = {what!r}: list some of {', '.join(map(repr, EXPORTS))} "
                          "(each once)")
    path = get(t, "path", str, "export", path="export")
    if not path:
        raise ConfigError("'export.path' is empty: give a folder (relative to the run directory)")
    return {"enabled": get(t, "enabled", bool, False, path="export"),
            "format": get(t, "format", str, "auto", path="export", choices=FORMATS),
            "what": list(what), "path": path}


def _format(requested: str) -> str:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        if requested == "parquet":
            raise ImportError("export.format = 'parquet' needs pyarrow: pip install 'ntkscale[data]', "
                              "or set export.format = 'zarr'") from None
        return "zarr"
    return "parquet" if requested == "auto" else requested


def _columns(prefix: str, a: np.ndarray) -> dict[str, np.ndarray]:
    a = a.reshape(a.shape[0], -1)
    return {f"{prefix}_{j}": np.ascontiguousarray(a[:, j]) for j in range(a.shape[1])}


def _rows(z: Mapping[str, np.ndarray]) -> np.ndarray:
    """Source row of each prediction (``row`` of predictions.npz; 0..m-1 for runs before it)."""
    return np.asarray(z["row"], np.int64) if "row" in z else np.arange(z["prediction"].shape[0])


def _write_parquet(folder: str, item: str, z: Mapping[str, np.ndarray]) -> list[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    def table(cols: dict[str, np.ndarray], meta: dict | None = None) -> Any:
        t = pa.table(cols)
        return t.replace_schema_metadata({k: repr(v) for k, v in (meta or {}).items()}) if meta else t

    if item == "predictions":
        files = {"predictions.parquet": table({"row": _rows(z), **_columns("prediction", z["prediction"]),
                                               **_columns("target", z["target"])})}
    else:
        evals, evecs = z["evals"], z["evecs"]
        files = {"eigenvalues.parquet": table({"rank": np.arange(evals.size), "eigenvalue": evals},
                                              {"trace": float(z["trace"])}),
                 "eigenvectors.parquet": table({"row": np.arange(evecs.shape[0]),
                                                **_columns("eigenvector", evecs)})}
    for name, t in files.items():
        pq.write_table(t.replace_schema_metadata({**(t.schema.metadata or {}), **mark_parquet_metadata(item)}),
                       os.path.join(folder, name))
    return [os.path.join(folder, name) for name in files]


def _write_zarr(folder: str, item: str, z: Mapping[str, np.ndarray]) -> list[str]:
    from ..storage.arrays import write_arrays

    if item == "predictions":
        url = write_arrays(os.path.join(folder, "predictions.zarr"),
                           {"prediction": z["prediction"], "target": z["target"], "row": _rows(z)})
    else:
        url = write_arrays(os.path.join(folder, "eigenpairs.zarr"),
                           {"evals": z["evals"], "evecs": z["evecs"]}, {"trace": float(z["trace"])})
    return [url]


def stage_export(ctx: JobContext) -> dict:
    """Write ``export.what`` from the run directory as ``export.format`` under ``export.path``."""
    ex = ctx.cfg.sections["export"]
    fmt = _format(ex["format"])
    folder = ex["path"] if os.path.isabs(ex["path"]) else ctx.path(ex["path"])
    check_dir(folder, "export", key="[export] path")  # before anything is written
    written: dict[str, list[str]] = {}
    missing: dict[str, str] = {}
    for item in ex["what"]:
        fname, producer = EXPORTS[item]
        try:
            with np.load(ctx.path(fname), allow_pickle=False) as f:
                z = {k: f[k] for k in f.files}
        except FileNotFoundError:
            missing[item] = (f"no {fname} in {ctx.cfg.out}; run the '{producer}' stage first "
                             f"(or drop {item!r} from export.what)")
            log.warning("export: %s skipped: %s", item, missing[item])
            continue
        claim_dir(folder, "export", key="[export] path")
        written[item] = (_write_parquet if fmt == "parquet" else _write_zarr)(folder, item, z)
        log.info("export: %s → %s", item, ", ".join(written[item]))
    if not written:
        return {"skipped": "; ".join(missing.values()), "format": fmt}
    return {"format": fmt, "path": folder, "files": written, "missing": missing}


def _summary(v: dict) -> str:
    s = f"{v['format']}: {', '.join(v['files'])} in {v['path']}"
    return s + (f"; skipped {', '.join(v['missing'])} (not produced)" if v.get("missing") else "")


register(Stage("export", stage_export, _summary, section="export", parse=_section,
               description="Write predictions and eigenpairs as Parquet or Zarr for downstream tools."))
