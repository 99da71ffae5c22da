"""Fault injection for the fault tests: worker processes that kill themselves mid-task,
client processes run (and killed) as subprocesses, chunk-file comparisons."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from ntkscale import stax
from ntkscale.runner import pinned_env
from ntkscale.tiling import build_gram

N, TILE = 300, 64  # 5x5 grid of tiles, 15 upper ones; 300 is not a multiple of 64


def make_arch():
    return stax.serial(stax.Dense(64, W_std=2 ** 0.5, b_std=0.1), stax.Relu(),
                       stax.Dense(64, W_std=2 ** 0.5, b_std=0.1), stax.Relu(), stax.Dense(1))


@pytest.fixture
def arch():
    return make_arch()


def data(n=N, d=11, seed=0):
    return np.random.default_rng(seed).standard_normal((n, d))


@pytest.fixture(scope="module")
def gram(tmp_path_factory):
    """A float64 NTK Gram store of ``data(N)`` (built in-process)."""
    path = tmp_path_factory.mktemp("gram") / "g"
    build_gram(make_arch(), data(), path, get="ntk", tile=TILE, dtype=np.float64, client="sync")
    return path


def chunk_bytes(path):
    """Every file of a local store but the zarr.json documents (they hold build ids)."""
    out = {}
    for root, _, files in os.walk(path):
        for f in files:
            if f not in ("zarr.json", ".ntkscale.json"):
                p = os.path.join(root, f)
                with open(p, "rb") as fh:
                    out[os.path.relpath(p, path)] = fh.read()
    return out


def n_chunks(path, array):
    """Chunk files of ``array`` in a local store (temporary ``.partial`` files not counted)."""
    base = os.path.join(path, array, "c")
    return sum(1 for _, _, files in os.walk(base) for f in files if not f.endswith(".partial"))


def dying(fn, trigger, when=None):
    """``fn`` wrapped so that the first call, in any worker process, made while the file
    ``trigger`` exists (and ``when(*args)`` holds) SIGKILLs its own process before it runs.
    The trigger is consumed atomically (renamed to ``trigger + '.fired'``, which then holds
    the killed pid), so exactly one process dies. A nested function: cloudpickle ships it by
    value, while ``fn`` (an ntkscale function) goes by reference."""

    def wrapped(*args, **kwargs):
        if os.path.exists(trigger) and (when is None or when(*args)):
            try:
                os.rename(trigger, trigger + ".fired")
            except FileNotFoundError:
                pass
            else:
                with open(trigger + ".fired", "w") as f:
                    f.write(str(os.getpid()))
                os.kill(os.getpid(), signal.SIGKILL)
        return fn(*args, **kwargs)

    return wrapped


def fired_pid(trigger):
    """The pid a :func:`dying` wrapper killed (None if none fired)."""
    try:
        with open(str(trigger) + ".fired") as f:
            return int(f.read())
    except (FileNotFoundError, ValueError):
        return None


def start_py(code):
    """Run ``code`` in a fresh interpreter (thread pools pinned to 1 thread, so its BLAS
    results are the same as in every other such process), at low priority."""
    env = dict(os.environ, **pinned_env(1))
    return subprocess.Popen(["nice", "-n", "19", sys.executable, "-c", code], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_py(code, timeout=120):
    """Run ``code`` to completion (see :func:`start_py`); its stdout and stderr."""
    p = start_py(code)
    out, err = p.communicate(timeout=timeout)
    assert p.returncode == 0, err[-3000:]
    return out, err


def kill_when(proc, ready, timeout=60.0):
    """SIGKILL the subprocess ``proc`` as soon as ``ready()`` holds; fail if it ends first."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"the subprocess ended before the kill: {proc.communicate()[1][-3000:]}"
        assert time.monotonic() < deadline, "timed out waiting to kill the subprocess"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL


# The same architecture and data as make_arch() / data(), for subprocesses.
PRELUDE = """
import json, sys, time
import numpy as np
from ntkscale import stax
arch = stax.serial(stax.Dense(64, W_std=2 ** 0.5, b_std=0.1), stax.Relu(),
                   stax.Dense(64, W_std=2 ** 0.5, b_std=0.1), stax.Relu(), stax.Dense(1))
def data(n, d=11, seed=0):
    return np.random.default_rng(seed).standard_normal((n, d))
"""
