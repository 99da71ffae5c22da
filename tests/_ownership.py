"""Shared by the ownership tests (test_ownership*.py): a small architecture, inputs, a user's
directory fixture, a file-tree snapshot and a job on the user's CSV."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest

from ntkscale import stax
from ntkscale.job import parse_job

ARCH = stax.serial(stax.Dense(32, W_std=1.4, b_std=0.1), stax.Relu(), stax.Dense(1))


def _x(n=24, d=3, seed=0):
    return np.random.default_rng(seed).standard_normal((n, d))


def _snapshot(root):
    """Every file under ``root`` with its bytes' hash (and every directory)."""
    out = {}
    for dp, dirs, files in os.walk(root):
        for d in dirs:
            out[os.path.relpath(os.path.join(dp, d), root) + "/"] = "dir"
        for f in files:
            p = os.path.join(dp, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, root)] = hashlib.sha256(fh.read()).hexdigest()
    return out


@pytest.fixture
def user_dir(tmp_path):
    """A directory of the user's: a CSV data set and a notes file."""
    d = tmp_path / "data"
    d.mkdir()
    rng = np.random.default_rng(1)
    X = rng.standard_normal((30, 3))
    y = X @ [1.0, -2.0, 0.5] + 0.1 * rng.standard_normal(30)
    lines = ["a,b,c,y"] + [",".join(f"{v:.6f}" for v in (*row, t)) for row, t in zip(X, y)]
    (d / "reg.csv").write_text("\n".join(lines) + "\n")
    (d / "notes.txt").write_text("my notes, not ntkscale's\n")
    return d


def _job(tmp_path, data_path, store=None, out=None, **sections):
    doc = {"job": {"out": str(out or tmp_path / "run"), "stages": ["gram", "fit", "predict"]},
           "data": {"source": "file", "path": str(data_path), "target": "y", "test_fraction": 0.2,
                    "task": "regression"},
           "model": {"depth": 1}, "cluster": {"kind": "sync"},
           "kernel": {"store": str(store)} if store else {}, **sections}
    return parse_job(doc, environ={})
