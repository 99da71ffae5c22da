import os
import signal

import numpy as np
import pytest

from ntkscale import stax


@pytest.fixture
def arch():
    return stax.serial(stax.Dense(64, W_std=2 ** 0.5, b_std=0.1), stax.Relu(),
                       stax.Dense(64, W_std=2 ** 0.5, b_std=0.1), stax.Relu(), stax.Dense(1))


def data(n, d=11, seed=0):
    return np.random.default_rng(seed).standard_normal((n, d))


def chunk_bytes(path):
    """All chunk files of a local store (zarr.json metadata excluded: it holds the build id)."""
    out = {}
    for root, _, files in os.walk(path):
        for f in files:
            if f in ("zarr.json", ".ntkscale.json"):  # metadata: build id, creation time
                continue
            p = os.path.join(root, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, path)] = fh.read()
    return out


def sigkill(pid):
    os.kill(pid, signal.SIGKILL)
