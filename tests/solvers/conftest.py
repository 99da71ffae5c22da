"""Fixtures of the solver tests: an architecture, stored Grams (the 2-worker `client`
fixture comes from tests/conftest.py)."""

import numpy as np
import pytest

from ntkscale import stax
from ntkscale.tiling import build_gram

TILE = 64


def make_arch():
    return stax.serial(stax.Dense(64, W_std=2 ** 0.5, b_std=0.1), stax.Relu(),
                       stax.Dense(64, W_std=2 ** 0.5, b_std=0.1), stax.Relu(), stax.Dense(1))


@pytest.fixture
def arch():
    return make_arch()


def data(n, d=11, seed=0, duplicate=False):
    """Gaussian inputs; ``duplicate``: the second half repeats the first (a singular Gram)."""
    X = np.random.default_rng(seed).standard_normal((n, d))
    if duplicate:
        X[n // 2: 2 * (n // 2)] = X[: n // 2]
    return X


def stored_gram(path, n, seed=0, duplicate=False, tile=TILE):
    """Build a float64 NTK Gram store at ``path`` (in-process) and return its path."""
    build_gram(make_arch(), data(n, seed=seed, duplicate=duplicate), path, get="ntk", tile=tile,
               dtype=np.float64, client="sync")
    return path


@pytest.fixture(scope="module")
def gram300(tmp_path_factory):
    """A 300x300 NTK Gram (5x5 tiles of 64, last one 44 wide)."""
    return stored_gram(tmp_path_factory.mktemp("g") / "g300", 300)


@pytest.fixture(scope="module")
def gram_singular(tmp_path_factory):
    """A 300x300 NTK Gram of inputs whose rows 150.. repeat rows 0..149 (rank 150)."""
    return stored_gram(tmp_path_factory.mktemp("s") / "dup", 300, duplicate=True)
