"""A bad-input campaign: generated job files and data files, run, and judged (issue 24).

Every case is a small valid job (``source = "file"``, ``[cluster] kind = "sync"``, n <= 40,
d <= 5, stages gram + fit + predict) with one or more faults injected into the job file or
the data file (wrong types and ranges, unknown and missing keys, NaN/inf, huge values, empty
or one-row files, wrong shapes, duplicate rows, strings in numeric columns, non-UTF-8 bytes,
very long names, broken TOML...). :func:`run_case` runs it the way ``ntkscale run`` does
(:func:`~ntkscale.job.load_job` then :func:`~ntkscale.job.run_stages`) and returns an
:class:`Outcome`; :func:`judge` says what is wrong with it, if anything:

- the run ends in a result, or in ONE clear error: a class defined in ntkscale (``ConfigError``,
  ``DataError``, the typed errors of :mod:`ntkscale.errors` and :mod:`ntkscale.storage`), or
  an ``OSError``/``ImportError`` raised by ntkscale code with a message that names the file;
  never an exception escaping from a library (numpy, pandas, zarr, tomllib...);
- a job-file or data-file error names the key (``data.path``), the section or the file;
- nothing outside the run directory changes (the job file, the data files, a bystander file).

The strategies need ``hypothesis`` (a test dependency), imported when they are built.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import traceback
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

__all__ = ["Case", "Outcome", "cases", "run_case", "judge", "error_kind", "to_toml"]

#: (section, key) pairs whose values the campaign replaces with generated ones
KEYS = [("job", "seed"), ("job", "name"), ("job", "stages"), ("data", "n_train"), ("data", "n_test"),
        ("data", "test_fraction"), ("data", "preprocess"), ("data", "task"), ("data", "seed"),
        ("data", "target"), ("data", "x_columns"), ("data", "format"), ("data", "path"),
        ("data", "test_path"), ("data", "source"), ("model", "depth"), ("model", "width"),
        ("model", "activation"), ("model", "W_std"), ("model", "b_std"), ("model", "parameterization"),
        ("model", "architecture"), ("model", "image_shape"), ("kernel", "kind"), ("kernel", "dtype"),
        ("kernel", "tile"), ("kernel", "store_nngp"), ("solver", "method"), ("solver", "ridge"),
        ("solver", "relative_ridge"), ("solver", "tol"), ("solver", "maxiter"), ("solver", "jitter"),
        ("solver", "ridge_grid"), ("cluster", "kind")]
DATA_FAULTS = ("none", "nan", "inf", "huge", "tiny", "empty", "header_only", "one_row", "two_rows",
               "duplicate_rows", "string_in_numeric", "non_utf8", "no_target", "ragged", "long_names",
               "constant_target", "bool_column", "npz_wrong_shape", "npz_bad_key", "npy_mismatch",
               "directory", "missing", "semicolons")
JOB_FAULTS = ("value", "unknown_key", "missing_key", "bad_toml", "non_utf8_toml", "long_path",
              "not_a_table", "empty_job")


@dataclass
class Case:
    """One generated job: the job document (before faults that break TOML), the data fault,
    the job-file fault, and the rows of the data file."""

    doc: dict
    rows: list
    columns: list
    data_fault: str = "none"
    job_faults: list = field(default_factory=list)  # (kind, detail) pairs
    toml_text: Optional[bytes] = None  # set when a fault breaks the TOML itself


@dataclass
class Outcome:
    """What a case did: ``error`` is None for a result."""

    error: Optional[BaseException]
    where: str = ""  # innermost traceback frame: "module:line"
    in_ntkscale: bool = False
    changed: list = field(default_factory=list)  # files outside the run directory that changed
    run_dir_made: bool = False  # the run directory exists after the run (it did not before)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if v != v else ("inf" if v == float("inf") else "-inf" if v == float("-inf") else repr(v))
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {_toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(type(v))


def to_toml(doc: dict) -> str:
    """TOML text of a job document (tables of scalars, arrays and inline tables)."""
    lines = [f"{json.dumps(k)} = {_toml_value(v)}" for k, v in doc.items() if not isinstance(v, dict)]
    for name, table in doc.items():
        if isinstance(table, dict):
            lines.append(f"[{json.dumps(name)}]")
            lines += [f"{json.dumps(str(k))} = {_toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def cases() -> Any:
    """The hypothesis strategy of :class:`Case`."""
    from hypothesis import strategies as st

    text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
    scalars = st.one_of(st.integers(-3, 60), st.sampled_from([2 ** 63 - 1, -(2 ** 63), 10 ** 30]),
                        st.floats(allow_nan=True, allow_infinity=True),
                        st.sampled_from([1e308, -1e308, 5e-324, 0.0, 1.0, 0.5]), st.booleans(), text,
                        st.sampled_from(["relu", "gelu", "cholesky", "pcg", "ntk", "nngp", "auto",
                                         "float64", "gcv", "loo", "fc", "cntk", "sync", "local", "a" * 300]))
    values = st.one_of(scalars, st.lists(scalars, max_size=4), st.just({}), st.just({"x": 1}))

    @st.composite
    def case(draw: Any) -> Case:
        n = draw(st.integers(3, 40))
        d = draw(st.integers(1, 5))
        rng = np.random.default_rng(draw(st.integers(0, 2 ** 16)))
        classification = draw(st.booleans())
        X = rng.standard_normal((n, d)).round(6)
        y = rng.integers(0, 3, n) if classification else rng.standard_normal(n).round(6)
        columns = [f"x{j}" for j in range(d)] + ["t"]
        rows = [list(map(float, X[i])) + [y[i].item()] for i in range(n)]
        doc = {"job": {"name": "campaign", "stages": ["gram", "fit", "predict"], "seed": 0},
               "data": {"source": "file", "path": "train.csv", "target": "t"},
               "model": {"depth": 1}, "cluster": {"kind": "sync"}}
        c = Case(doc=doc, rows=rows, columns=columns, data_fault=draw(st.sampled_from(("none",) * len(DATA_FAULTS) + DATA_FAULTS)))  # half clean
        for _ in range(draw(st.integers(0, 3))):
            kind = draw(st.sampled_from(JOB_FAULTS))
            sec, key = draw(st.sampled_from(KEYS))
            if kind in ("value", "unknown_key") and not isinstance(doc.get(sec, {}), dict):
                continue  # a section already replaced by a scalar
            if kind == "value":
                doc.setdefault(sec, {})[key] = draw(values)
            elif kind == "unknown_key":
                name = draw(st.sampled_from(["job", "data", "model", "kernel", "solver", "cluster", "bogus"]))
                if not isinstance(doc.get(name, {}), dict):
                    continue
                doc.setdefault(name, {})[draw(st.from_regex(r"[a-z_]{1,12}", fullmatch=True))] = draw(scalars)
            elif kind == "missing_key":
                if draw(st.booleans()) and isinstance(doc.get(sec), dict):
                    doc[sec].pop(key, None)
                else:
                    doc.pop(sec, None)
            elif kind == "long_path" and isinstance(doc.get("data"), dict):
                doc["data"]["path"] = "d" * draw(st.sampled_from([250, 300, 5000])) + ".csv"
            elif kind == "not_a_table":
                doc[sec] = draw(scalars)
            elif kind == "empty_job":
                doc.clear()
            else:  # bad_toml / non_utf8_toml: broken after everything else
                c.job_faults.append((kind, draw(st.integers(0, 10 ** 6))))
                continue
            c.job_faults.append((kind, f"{sec}.{key}"))
        return c

    return case()


def _csv_bytes(c: Case) -> bytes:
    cols, rows, f = list(c.columns), [list(r) for r in c.rows], c.data_fault
    if f == "nan":
        rows[len(rows) // 2][0] = float("nan")
    elif f == "inf":
        rows[0][-1] = float("inf")
    elif f == "huge":
        rows[1][0], rows[2][-1] = 1e308, -1e308
    elif f == "tiny":
        rows = [[5e-324 * (i + 1)] * (len(cols) - 1) + [r[-1]] for i, r in enumerate(rows)]
    elif f == "empty":
        return b""
    elif f == "header_only":
        rows = []
    elif f == "one_row":
        rows = rows[:1]
    elif f == "two_rows":
        rows = rows[:2]
    elif f == "duplicate_rows":
        rows = [rows[0]] * len(rows)
    elif f == "string_in_numeric":
        rows[0][0] = "abc"
    elif f == "no_target":
        cols[-1] = "target_renamed"
    elif f == "ragged":
        rows[1] = rows[1] + [1.0, 2.0]
    elif f == "long_names":
        cols = ["c" * 500 + str(j) for j in range(len(cols) - 1)] + ["t"]
    elif f == "constant_target":
        rows = [r[:-1] + [1] for r in rows]
    elif f == "bool_column":
        rows = [[bool(i % 2)] + r[1:] for i, r in enumerate(rows)]
    sep = ";" if f == "semicolons" else ","
    text = "\n".join(sep.join(str(v) for v in r) for r in [cols] + rows) + "\n"
    data = text.encode()
    if f == "non_utf8":
        data = data.replace(b"x0", b"x\xff\xfe0", 1) + b"\x80\x81,\xc3\x28\n"
    return data


def _write_inputs(c: Case, root: str) -> str:
    """Write the data file(s) and the job file under ``root``; the job file's path."""
    f = c.data_fault
    if f in ("npz_wrong_shape", "npz_bad_key"):
        X = np.asarray([r[:-1] for r in c.rows], float)
        y = np.asarray([r[-1] for r in c.rows])
        if f == "npz_wrong_shape":  # 4-D X (flattened: fine) with one target too few
            np.savez(os.path.join(root, "train.npz"), X=X[:, :, None, None], y=y[:-1])
        else:  # X stored under another name than data.x_key
            np.savez(os.path.join(root, "train.npz"), features=X, y=y)
        if isinstance(c.doc.get("data"), dict):
            c.doc["data"]["path"] = "train.npz"
            c.doc["data"].pop("target", None)
    elif f == "npy_mismatch":
        np.save(os.path.join(root, "X.npy"), np.asarray([r[:-1] for r in c.rows], float))
        np.save(os.path.join(root, "y.npy"), np.arange(len(c.rows) + 3, dtype=float))
        if isinstance(c.doc.get("data"), dict):
            c.doc["data"].update(path="X.npy", y_path="y.npy")
            c.doc["data"].pop("target", None)
    elif f == "directory":
        os.makedirs(os.path.join(root, "train.csv"))
    elif f != "missing":
        with open(os.path.join(root, "train.csv"), "wb") as fh:
            fh.write(_csv_bytes(c))
    with open(os.path.join(root, "bystander.txt"), "w") as fh:
        fh.write("not to be touched\n")
    data = (c.toml_text if c.toml_text is not None else to_toml(c.doc).encode())
    for kind, seed in c.job_faults:
        if kind == "bad_toml":
            pos = seed % max(1, len(data))
            data = data[:pos] + b"[=\"\n" + data[pos:]
        elif kind == "non_utf8_toml":
            data = data + b"\nname = \"\xff\xfe\"\n"
    path = os.path.join(root, "job.toml")
    with open(path, "wb") as fh:
        fh.write(data)
    return path


def _snapshot(root: str, skip: str) -> dict:
    out = {}
    for dirpath, dirnames, files in os.walk(root):
        if os.path.abspath(dirpath).startswith(skip):
            dirnames[:] = []
            continue
        for name in files:
            p = os.path.join(dirpath, name)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, root)] = hashlib.blake2b(fh.read(), digest_size=8).hexdigest()
    return out


def run_case(c: Case, root: str) -> Outcome:
    """Write the case under ``root`` (an empty folder), run it as ``ntkscale run`` does, and
    compare every file outside the run directory (``root/run``) before and after."""
    import warnings

    from ntkscale.job import load_job, run_stages, registry

    out = os.path.join(root, "run")
    job = _write_inputs(c, root)
    before = _snapshot(root, out)
    err: Optional[BaseException] = None
    where, mine = "", False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # warnings are allowed; errors are judged
            cfg = load_job(job, out=out)
            run_stages(cfg, registry.active_stages(cfg), progress=False, report=True)
    except Exception as e:  # judged below
        err = e
        tb = traceback.extract_tb(e.__traceback__)
        if tb:
            where = f"{tb[-1].filename}:{tb[-1].lineno}"
            mine = os.sep + "ntkscale" + os.sep in tb[-1].filename
    after = _snapshot(root, out)
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    return Outcome(error=err, where=where, in_ntkscale=mine, changed=changed, run_dir_made=os.path.exists(out))


def error_kind(o: Outcome) -> str:
    """``ok``, or the error class and its message with numbers, paths and quoted values masked
    (one line per distinct message, for counting)."""
    if o.error is None:
        return "ok"
    msg = str(o.error).splitlines()[0] if str(o.error) else ""
    msg = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", msg)
    msg = re.sub(r"/[^\s;,)]+", "<path>", msg)
    msg = re.sub(r"-?\d+(\.\d+)?(e[-+]?\d+)?", "#", msg)
    return f"{type(o.error).__name__}: {msg[:110]}"


def judge(o: Outcome, c: Case) -> list[str]:
    """What is wrong with an outcome (empty: a result, or one clear ntkscale error)."""
    problems = []
    if o.changed:
        problems.append(f"files outside the run directory changed: {o.changed}")
    e = o.error
    if e is None:
        return problems
    ours = type(e).__module__.split(".")[0] == "ntkscale"
    if not ours and not (isinstance(e, (OSError, ImportError)) and o.in_ntkscale):
        problems.append(f"a library error escaped: {type(e).__name__}: {str(e)[:300]} (at {o.where})")
        return problems
    msg = str(e)
    if not msg.strip():
        problems.append(f"{type(e).__name__} without a message (at {o.where})")
    from ntkscale.data import DataError
    from ntkscale.storage import UnsafePathError

    if isinstance(e, (DataError, UnsafePathError)) and o.run_dir_made:  # found by the pre-flight
        problems.append(f"a run refused for its data or paths created the run directory: {msg[:200]}")
    from ntkscale.errors import NotPositiveDefiniteError

    from ntkscale.storage import StoreMismatchError

    numeric = isinstance(e, (NotPositiveDefiniteError, StoreMismatchError))
    names = re.search(r"'?[a-z_]+\.[A-Za-z_]+'?|\[[a-z ]+\]|unknown key|job file|\.csv|\.npz|\.npy|\.toml|TOML", msg)
    if not numeric and not names:
        problems.append(f"the message names no key, section or file: {type(e).__name__}: {msg[:300]}")
    return problems
