"""One list of layers (ntkscale/kernels/registry.py): every registered name is usable
everywhere that names layers — spec round trip, job config, finite network."""

import json

import numpy as np
import pytest

from ntkscale import stax
from ntkscale.job.config import ACTIVATIONS, parse_job
from ntkscale.job.model import build_arch
from ntkscale.kernels import UnsupportedArchitectureError, from_spec, registry, spec_json


@pytest.mark.parametrize("name", sorted(registry.ACTIVATIONS))
def test_every_config_activation_round_trips(name):
    act = registry.make_activation(name)
    assert type(act).spec_name in registry.LAYERS
    arch = stax.serial(stax.Dense(4, W_std=1.3, b_std=0.1), act, stax.Dense(1))
    back = from_spec(json.loads(spec_json(arch)))
    assert back == arch
    x = np.random.default_rng(0).standard_normal((6, 3))
    np.testing.assert_array_equal(back.kernel_fn(x, None, "ntk"), arch.kernel_fn(x, None, "ntk"))


def test_job_schema_reads_the_registry(tmp_path):
    assert ACTIVATIONS == tuple(registry.ACTIVATIONS)
    cfg = parse_job({"job": {"out": str(tmp_path / "run")}, "cluster": {"kind": "sync"},
                     "data": {"source": "sphere", "n_train": 50, "n_test": 10, "d": 4},
                     "model": {"activation": "sign"}}, environ={})
    arch = build_arch(cfg.model)
    assert any(type(l).__name__ == "Sign" for l in arch.flat())


def test_unknown_names_list_the_known_ones():
    with pytest.raises(UnsupportedArchitectureError, match="known: .*Sign"):
        from_spec({"layer": "Swish"})
    with pytest.raises(ValueError, match="one of relu, .*sign"):
        registry.make_activation("swish")


def test_double_registration_is_refused():
    with pytest.raises(ValueError, match="registered twice"):
        registry.layer_type("Dense")(type("Other", (), {}))
    with pytest.raises(ValueError, match="registered twice"):
        registry.activation("relu", lambda: None)


def test_finite_sign_network_matches_its_kernel_shape():
    jax = pytest.importorskip("jax")
    arch = stax.serial(stax.Dense(16), stax.Sign(), stax.Dense(1))
    _, params = arch.init_fn(jax.random.PRNGKey(0), (3, 5))
    out = arch.apply_fn(params, np.ones((3, 5)))
    assert out.shape == (3, 1)
    # the finite layer is sign itself (its kernel against wide networks: test_monte_carlo.py)
    x = np.linspace(-2.0, 2.0, 9)
    np.testing.assert_array_equal(np.asarray(stax.Sign().finite(jax, jax.numpy)(x)), np.sign(x))
