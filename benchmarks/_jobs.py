"""Helpers for benchmarks that run `ntkscale run` on variants of a job file."""

from __future__ import annotations

import json
import os
import sys
import tomllib
from typing import Any

JOBS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "jobs")


def write_job(base: str, path: str, overrides: dict[str, dict[str, Any]]) -> str:
    """Write ``path``: the TOML job ``base`` (a file in ``jobs/`` or a path) with the keys of
    ``overrides`` (``{section: {key: value}}``) replaced or added. Returns ``path``."""
    src = base if os.path.exists(base) else os.path.join(JOBS, base)
    with open(src, "rb") as fh:
        cfg = tomllib.load(fh)
    for section, table in overrides.items():
        cfg.setdefault(section, {}).update(table)
    lines = []
    for section, table in cfg.items():
        lines += [f"[{section}]"] + [f"{k} = {json.dumps(v)}" for k, v in table.items()]
    with open(path, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    return path


def cli() -> list[str]:
    """The `ntkscale run` command of this interpreter's environment."""
    return [os.path.join(os.path.dirname(sys.executable), "ntkscale"), "run"]


def stage_metrics(out: str) -> dict:
    """``metrics.json``'s per-stage metrics of the run directory ``out``."""
    with open(os.path.join(out, "metrics.json")) as fh:
        return json.load(fh)["stages"]


def write_json(path: str, record: dict) -> None:
    """Write a benchmark's JSON record (its folder made first) and say where."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as fh:
        json.dump(record, fh, indent=2)
    print(f"wrote {path}")
