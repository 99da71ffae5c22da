"""ntkscale against neural-tangents 0.6.5 on GlobalSelfAttention's positional embeddings
(``pos_emb_type`` SUM/CONCAT) and ``linear_scaling=False`` IDENTITY attention (issue 22), on
the committed fixtures of ``generate_attention.py posemb`` (no NT needed here).

Every case of :mod:`cases_posemb` is built with ``ntkscale.stax`` as the generator built it
with ``neural_tangents.stax``; NNGP and NTK, symmetric (``x2=None``) and cross, must equal NT's
to 1e-12 relative to the largest entry (both evaluate the same closed forms in float64). A
case NT refuses must be refused by ntkscale too, naming what to use instead. The finite
network (the layer alone) must give NT's ``apply_fn`` output on NT's own parameters, and
``init_fn`` NT's parameter shapes.
"""

from __future__ import annotations

import numpy as np
import pytest

from ntkscale import stax
from ntkscale.kernels.api import diag_stats
from ntkscale.kernels.layers import UnsupportedArchitectureError

from ._fixtures import RTOL, assert_kernel_close, load
from .cases_posemb import CASES, FINITE, INPUTS, PARAMS, attention, inputs


#: Cases where NT's symmetric NTK diagonal is rounded (as ``RTOL_DIAG`` in
#: ``test_attention_parity.py``): the IDENTITY mechanism makes the attention outputs large, and
#: NT's same-position covariance of an input with itself (its pair einsum) and its variance
#: (the ``cov1`` einsum) differ by an ulp, which the following ReLU's ``arctan2`` turns into
#: ~1e-9 relative. Measured: 6.7e-10 and 5.5e-10, on the diagonal only; without the ReLU the
#: same network matches to 2e-16; NT's own cross kernel of x1 with a copy of x1 has the same
#: diagonal as its symmetric one, ntkscale's too. Off the diagonal, and everywhere else, 1e-12.
RTOL_DIAG = {"sum_identity_decay_p1": 5e-9, "concat_identity_val": 5e-9}


@pytest.fixture(scope="module")
def nt():
    return load("nt065_posemb.npz", "nt065_posemb_meta.json")


def test_fixture_inputs_are_the_cases_inputs(nt):
    arrays, meta = nt
    assert meta["neural_tangents"] == "0.6.5" and meta["x64"]
    assert set(meta["cases"]) == set(CASES) | set(FINITE)
    for kind in INPUTS:
        x1, x2 = inputs(kind)
        np.testing.assert_array_equal(arrays[f"{kind}/x1"], x1)
        np.testing.assert_array_equal(arrays[f"{kind}/x2"], x2)


@pytest.mark.parametrize("name", list(CASES))
def test_kernels_equal_neural_tangents(nt, name):
    arrays, meta = nt
    build, kind = CASES[name]
    _, _, kernel_fn = build(stax)
    x1, x2 = inputs(kind)
    if not meta["cases"][name]["ok"]:  # NT has no closed form: ntkscale must refuse too
        assert "No known closed form" in meta["cases"][name]["error"]
        with pytest.raises(UnsupportedArchitectureError, match="no known closed-form.*use linear_scaling=True"):
            kernel_fn(x1, x2, ("nngp", "ntk"))
        return
    for which, (a, b) in {"sym": (x1, None), "cross": (x1, x2)}.items():
        k = kernel_fn(a, b, ("nngp", "ntk"))
        for get in ("nngp", "ntk"):
            assert_kernel_close(getattr(k, get), arrays[f"{name}/{get}/{which}"], f"{name} {get} {which}",
                                RTOL_DIAG.get(name) if which == "sym" else None)


@pytest.mark.parametrize("name", ["sum_softmax_decay_p1_val", "concat_relu_decay_p1_val",
                                  "sqrt_identity_concat_decay_p2"])
def test_diagonal_equals_neural_tangents(nt, name):
    """ntkscale's diagonal mode (each row's self covariances only, what the tiled Gram's
    diagonal statistics use) gives NT's diagonal of the symmetric kernel; rows are the
    flattened sequences through ``Unflatten(1, T, C)``."""
    arrays, _ = nt
    build, _ = CASES[name]
    x1, _ = inputs("seq")
    n, t, c = x1.shape
    d = diag_stats(stax.serial(stax.Unflatten(1, t, c), build(stax)), x1.reshape(n, -1))
    for get in ("nngp", "ntk"):
        np.testing.assert_allclose(getattr(d, get), np.diagonal(arrays[f"{name}/{get}/sym"]), rtol=RTOL)


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("name", list(FINITE))
def test_finite_network_equals_neural_tangents(nt, name):
    jax = pytest.importorskip("jax")
    arrays, meta = nt
    build, kind = FINITE[name]
    x1, _ = inputs(kind)
    layer = build(stax)
    params = tuple(arrays.get(f"{name}/params/{p}") for p in PARAMS)
    assert [p is not None for p in params] == meta["cases"][name]["params"]
    with jax.enable_x64(True):
        shape, mine = layer.init_fn(jax.random.PRNGKey(0), x1.shape)
        assert [None if p is None else p.shape for p in mine] == [None if p is None else p.shape for p in params]
        out = np.asarray(layer.apply_fn(tuple(None if p is None else jax.numpy.asarray(p) for p in params),
                                        jax.numpy.asarray(x1)))
    assert shape == out.shape
    np.testing.assert_allclose(out, arrays[f"{name}/out"], rtol=RTOL, atol=RTOL * np.abs(out).max())


def test_sum_with_other_embedding_width_is_refused():
    """NT documents ``n_chan_pos_emb`` with SUM as an error unless it equals the input channels
    (its kernel silently ignores it; its finite network cannot add the two)."""
    x1, _ = inputs("seq")
    _, _, kernel_fn = attention(pos_emb_type="SUM", n_chan_pos_emb=7)(stax)
    with pytest.raises(UnsupportedArchitectureError, match="n_chan_pos_emb=None.*CONCAT"):
        kernel_fn(x1, None, "ntk")
    same = attention(pos_emb_type="SUM", n_chan_pos_emb=64)(stax)[2](x1, None, "ntk")
    np.testing.assert_array_equal(same, attention(pos_emb_type="SUM")(stax)[2](x1, None, "ntk"))


@pytest.mark.parametrize("name", ["concat_softmax_val_decay_p1", "sqrt_identity_sum_val_decay_p1"])
def test_jax_namespace_matches_numpy(name):
    """JAX inputs stay JAX (the embedding covariance is made in their namespace and dtype)."""
    jax = pytest.importorskip("jax")
    build, kind = CASES[name]
    x1, x2 = inputs(kind)
    kernel_fn = build(stax)[2]
    with jax.enable_x64(True):
        k = kernel_fn(jax.numpy.asarray(x1), jax.numpy.asarray(x2), "ntk")
        assert isinstance(k, jax.Array)
    np.testing.assert_allclose(np.asarray(k), kernel_fn(x1, x2, "ntk"), rtol=RTOL)
