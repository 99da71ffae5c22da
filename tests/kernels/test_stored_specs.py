"""Architectures stored before the kernels/ restructure (issue 22) still read the same.

``data/arch_specs.json`` holds ``spec_json`` strings written by the code before the
restructure (the ``arch`` attribute of existing Gram stores); ``data/kernel_values.npz``
holds kernel values that code computed on the stored inputs. A store's spec must parse and
re-serialize byte for byte, the builders must still write it, and the kernels must not move.
"""

import json
import pathlib

import numpy as np
import pytest

from ntkscale import stax
from ntkscale.job.model import build_arch
from ntkscale.kernels import cntk, diag_stats, from_spec, myrtle, spec_json

DATA = pathlib.Path(__file__).parent / "data"
SPECS = json.loads((DATA / "arch_specs.json").read_text())


def _archs():
    """The architectures the fixtures were generated from (same code as then)."""
    fc = build_arch({"architecture": "fc", "depth": 3, "width": 512, "activation": "relu",
                     "W_std": 1.5, "b_std": 0.05, "parameterization": "ntk"})
    fc_std = build_arch({"architecture": "fc", "depth": 2, "width": 64, "activation": "erf",
                         "W_std": 1.3, "b_std": 0.1, "parameterization": "standard"})
    res = stax.serial(stax.Dense(64, W_std=1.4, b_std=0.1),
                      stax.FanOut(2),
                      stax.parallel(stax.serial(stax.Relu(), stax.Dense(64, W_std=1.4)),
                                    stax.Identity()),
                      stax.FanInSum(), stax.Relu(), stax.Dense(1, W_std=1.4, b_std=0.1))
    acts = stax.serial(stax.Dense(32, b_std=0.2), stax.Gelu(), stax.Dense(32), stax.Sin(1.2, 0.8, 0.3),
                       stax.Dense(32), stax.Cos(), stax.Dense(32), stax.Sign(), stax.Dense(8),
                       stax.LeakyRelu(0.1), stax.Dense(8), stax.Abs(), stax.Dense(1))
    return {
        "fc": fc,
        "fc_standard_erf": fc_std,
        "residual": res,
        "activations": acts,
        "cntk": cntk((6, 6, 2), depth=2),
        "cntk_circular": cntk((5, 5, 1), depth=2, padding="CIRCULAR", filter_size=3, b_std=0.1),
        "myrtle5": myrtle((8, 8, 3), depth=5),
        "conv_pool": stax.serial(stax.Unflatten(6, 6, 1), stax.Conv(4, (3, 3), padding="SAME", b_std=0.1),
                                 stax.Relu(), stax.AvgPool((2, 2), (2, 2), padding="VALID"),
                                 stax.Conv(4, (2, 2), strides=(1, 1), parameterization="standard"),
                                 stax.Erf(), stax.Flatten(), stax.Dense(1)),
    }


ARCHS = _archs()


def test_the_fixture_covers_every_architecture():
    assert sorted(SPECS) == sorted(ARCHS)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_a_stored_spec_reads_back_byte_identical(name):
    stored = SPECS[name]
    arch = from_spec(json.loads(stored))
    assert spec_json(arch) == stored
    assert arch == ARCHS[name]


@pytest.mark.parametrize("name", sorted(SPECS))
def test_the_builders_still_write_the_stored_spec(name):
    assert spec_json(ARCHS[name]) == SPECS[name]


@pytest.mark.parametrize("name", sorted(SPECS))
@pytest.mark.parametrize("path", ["auto", "generic"])
def test_kernel_values_did_not_move(name, path):
    # generated on one machine; bit-identical there, a BLAS of another machine may round
    # the input products differently in the last bit
    v = np.load(DATA / "kernel_values.npz")
    arch, x1, x2 = ARCHS[name], v[f"{name}/x1"], v[f"{name}/x2"]
    k = arch.kernel_fn(x1, x2, ("nngp", "ntk"), path=path)
    tol = dict(rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(k.nngp, v[f"{name}/{path}/nngp"], **tol)
    np.testing.assert_allclose(k.ntk, v[f"{name}/{path}/ntk"], **tol)
    np.testing.assert_allclose(arch.kernel_fn(x1, None, "ntk", path=path), v[f"{name}/{path}/sym_ntk"], **tol)
    np.testing.assert_allclose(diag_stats(arch, x1, path=path).nngp, v[f"{name}/{path}/diag_nngp"], **tol)
