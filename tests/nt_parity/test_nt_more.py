"""neural-tangents 0.6.5 parity of the exports, keywords and idioms added by issue 22, on the
committed fixtures ``nt065_more.npz`` (``generate_more.py``; no NT needed here).

Values: every case of :mod:`cases_more`, NNGP and NTK symmetric and cross, and the ``get=None``
Kernel's ``cov1``/``cov2``/``is_gaussian``, equal NT's to 1e-12 relative; the same through
``jax.jit(kernel_fn, static_argnames='get')`` and ``ntkscale.batch``. Names: every NT stax
export exists in ``ntkscale.stax``; each refused one raises ``UnsupportedArchitectureError``
saying "not supported".
"""

from __future__ import annotations

import inspect
import json
import os
import warnings

import numpy as np
import pytest

import ntkscale
from ntkscale import stax
from ntkscale.kernels import from_spec, spec_json
from ntkscale.kernels.refused import REFUSED

from ._fixtures import assert_kernel_close, load
from .cases_more import CASES, inputs

HERE = os.path.dirname(os.path.abspath(__file__))
#: exports not built yet (none since the attention branch was merged)
IN_PROGRESS: set[str] = set()
#: case -> (tolerance on the symmetric NTK's diagonal, why). ntkscale sets the diagonal of a
#: symmetric kernel from the exact per-sample recursion (c = 1, theta = 0); NT takes arccos of
#: c = q / sqrt(v v) as computed, which rounds below 1 after bias-free ReLU layers: arccos
#: turns an ulp into ~1e-8, and NT's diagonal NTK is off by ~7e-10 relative. Off-diagonal and
#: cross entries still agree to 1e-12.
#: cases where NT returns NaN: its RectifiedMonomial divides by sin(theta), 0 on every variance
#: and on the symmetric diagonal; ntkscale's recursion for J_n is finite there (oracle test)
NT_NAN = {f"act_rectified_monomial_{d}" for d in range(5)}
DIAGONAL_ROUNDING = {"repeat": (1e-8, "NT's arccos(1 - ulp) on the diagonal of a bias-free ReLU chain")}


@pytest.fixture(scope="module")
def nt():
    return load("nt065_more.npz")[0]


def _close(got, want, what, diag_tol=None):
    got = np.asarray(got)
    assert got.shape == want.shape, what
    nan = np.isnan(want)
    if nan.any():  # NT's RectifiedMonomial at theta = 0 (variances); checked by an oracle below
        assert any(n in what for n in NT_NAN) and np.isfinite(got[nan]).all(), what
        got, want = np.where(nan, 0.0, got), np.where(nan, 0.0, want)
    assert_kernel_close(got, want, what, diag_tol)


def _check(nt, name, kernel_fn, fields=("nngp", "ntk", "cov1", "cov2")):
    _, kind = CASES[name]
    x1, x2 = inputs(kind)
    tol = DIAGONAL_ROUNDING.get(name, (None,))[0]
    for which, (a, b) in {"sym": (x1, None), "cross": (x1, x2)}.items():
        k = kernel_fn(a, b)
        assert bool(k.x1_is_x2) == (b is None)
        for f in fields:
            key = f"{name}/{f}/{which}"
            if key not in nt:  # NT's cov2 is None for x2=None
                assert getattr(k, f) is None, key
                continue
            _close(getattr(k, f), nt[key], key, tol if f == "ntk" and which == "sym" else None)
        assert bool(k.is_gaussian) == bool(nt[f"{name}/is_gaussian"]), name


@pytest.mark.parametrize("name", sorted(CASES))
def test_values_equal_neural_tangents(nt, name):
    assert f"{name}/error" not in nt, str(nt.get(f"{name}/error"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        _check(nt, name, CASES[name][0](stax)[2])


JIT_CASES = ["act_exp", "act_polynomial", "act_rectified_monomial_3", "fan_in_concat", "fan_in_prod",
             "nt_keywords", "sum_pool", "global_sum_pool", "flatten_images"]


@pytest.mark.parametrize("name", JIT_CASES)
def test_jit_with_static_get(nt, name):
    jax = pytest.importorskip("jax")
    with jax.enable_x64(True):
        kernel_fn = jax.jit(CASES[name][0](stax)[2], static_argnames="get")
        _, kind = CASES[name]
        x1, x2 = (jax.numpy.asarray(x) for x in inputs(kind))
        for which, (a, b) in {"sym": (x1, None), "cross": (x1, x2)}.items():
            for get in ("nngp", "ntk"):
                # XLA fuses the ReLU's sqrt(v1 v2 - q^2) on the symmetric diagonal (c = 1, where
                # arctan2 turns an ulp into ~1e-10); off-diagonal and cross entries: 1e-12
                _close(kernel_fn(a, b, get), nt[f"{name}/{get}/{which}"], f"jit {name} {get} {which}",
                       1e-8 if which == "sym" else None)
        k = kernel_fn(x1, x2, get=None)  # the Kernel namedtuple comes back through jit
        _close(k.cov1, nt[f"{name}/cov1/cross"], f"jit {name} cov1")


@pytest.mark.parametrize("name", ["act_gabor", "fan_in_concat", "repeat", "sum_pool"])
@pytest.mark.parametrize("batch_size", [1, 2, 3])
def test_batch_equals_unbatched(nt, name, batch_size):
    kernel_fn = CASES[name][0](stax)[2]
    batched = ntkscale.batch(kernel_fn, batch_size)
    _check(nt, name, batched)
    x1, x2 = inputs(CASES[name][1])
    for get in ("ntk", ("nngp",)):
        np.testing.assert_allclose(np.asarray(batched(x1, x2, get) if isinstance(get, str)
                                              else batched(x1, x2, get).nngp),
                                   np.asarray(kernel_fn(x1, x2, get) if isinstance(get, str)
                                              else kernel_fn(x1, x2, get).nngp), rtol=1e-13, atol=1e-15)
    assert list(inspect.signature(ntkscale.batch).parameters) == \
        ["kernel_fn", "batch_size", "device_count", "store_on_device"]
    host = ntkscale.batch(kernel_fn, batch_size, device_count=1, store_on_device=False)(x1, None)
    assert isinstance(host.nngp, np.ndarray) and host.cov2 is None


def test_layer_is_a_triple():
    net = stax.serial(stax.Dense(8, b_std=0.1), stax.Relu(), stax.Dense(1))
    assert len(net) == 3 and len(stax.Relu()) == 3
    init_fn, apply_fn, kernel_fn = net
    x = np.random.default_rng(0).standard_normal((3, 4))
    np.testing.assert_array_equal(net[2](x, None, "ntk"), kernel_fn(x, None, "ntk"))
    assert [f.__name__ for f in net[:2]] == ["init_fn", "apply_fn"]
    # NT style: the triples unpacked from layers, passed back into serial
    dense, relu = tuple(stax.Dense(8, b_std=0.1)), tuple(stax.Relu())
    again = stax.serial(dense, relu, stax.Dense(1))
    assert spec_json(again) == spec_json(net)
    np.testing.assert_array_equal(again[2](x, None, "ntk"), kernel_fn(x, None, "ntk"))
    with pytest.raises(TypeError, match="not an ntkscale layer"):
        stax.serial((lambda: 0, lambda: 0, lambda: 0))


def test_every_neural_tangents_export_exists():
    with open(os.path.join(HERE, "nt065_signatures.json")) as f:
        exports = set(json.load(f))
    missing = sorted(n for n in exports - IN_PROGRESS if not hasattr(stax, n))
    assert not missing, missing
    assert {"Padding", "Bool", "AggregateImplementation"} <= set(stax.__all__)
    assert [m.name for m in stax.Padding] == ["CIRCULAR", "SAME", "VALID"]
    assert [m.name for m in stax.AggregateImplementation] == ["DENSE", "SPARSE"]
    assert [(m.name, m.value) for m in stax.Bool] == [("NO", 0), ("MAYBE", 1), ("YES", 2)]


_REFUSE_CALLS = {
    "Aggregate": lambda: stax.Aggregate(), "DotGeneral": lambda: stax.DotGeneral(),
    "Dropout": lambda: stax.Dropout(0.1), "ElementwiseNumerical": lambda: stax.ElementwiseNumerical(abs, 10),
    "ImageResize": lambda: stax.ImageResize((4, 4), "linear"), "Index": lambda: stax.Index(0),
    "Slice": lambda: stax.Slice[1:], "Diagonal": lambda: stax.Diagonal(),
    "MaskedArray": lambda: stax.MaskedArray(0, None), "layer": lambda: stax.layer(abs),
    "requires": lambda: stax.requires(diagonal_batch=True), "supports_masking": lambda: stax.supports_masking(True),
    "unmask_fn": lambda: stax.unmask_fn(abs),
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_refused_exports_say_not_supported(name):
    with pytest.raises(stax.UnsupportedArchitectureError if hasattr(stax, "UnsupportedArchitectureError")
                       else ntkscale.kernels.UnsupportedArchitectureError,
                       match=rf"stax\.{name} \(neural-tangents\) is not supported by ntkscale yet; .*README"):
        _REFUSE_CALLS[name]()
    assert set(_REFUSE_CALLS) == set(REFUSED)


@pytest.mark.parametrize("build, match", [
    (lambda: stax.Dense(4, batch_axis=1), "batch_axis=1"),
    (lambda: stax.Dense(4, channel_axis=1), "channel_axis=1"),
    (lambda: stax.Conv(4, (3, 3), dimension_numbers=("NCHW", "OIHW", "NCHW")), "transpose your inputs to NHWC"),
    (lambda: stax.Conv(4, (3, 3), s=(2, 1)), "s=\\(2, 1\\)"),
    (lambda: stax.AvgPool((2, 2), padding="SAME", normalize_edges=True), "normalize_edges=True"),
    (lambda: stax.GlobalAvgPool(channel_axis=1), "channel_axis=1"),
    (lambda: stax.Flatten(batch_axis_out=1), "batch_axis_out=1"),
    (lambda: stax.FanInConcat(axis=0), "axis=-1"),
    (lambda: stax.Monomial(6), "degree"),
])
def test_unsupported_keyword_values_refuse(build, match):
    from ntkscale.kernels import UnsupportedArchitectureError

    with pytest.raises(UnsupportedArchitectureError, match=match):
        build()


def test_nt_keywords_stay_out_of_specs():
    plain = stax.serial(stax.Dense(8, W_std=1.5), stax.Relu(), stax.Conv(4, (3, 3)), stax.AvgPool((2, 2)),
                        stax.GlobalAvgPool(), stax.Flatten())
    keyed = stax.serial(stax.Dense(8, W_std=1.5, batch_axis=0, channel_axis=-1), stax.Relu(do_stabilize=True),
                        stax.Conv(4, (3, 3), dimension_numbers=("NHWC", "HWIO", "NHWC"), s=(1, 1)),
                        stax.AvgPool((2, 2), normalize_edges=True, batch_axis=0, channel_axis=-1),
                        stax.GlobalAvgPool(batch_axis=0, channel_axis=-1), stax.Flatten(batch_axis=0))
    assert spec_json(keyed) == spec_json(plain)
    assert '"layer":"Relu"' not in spec_json(plain) and "do_stabilize" not in spec_json(plain)


@pytest.mark.parametrize("name", sorted(CASES))
def test_new_layers_round_trip_their_spec(name):
    if name == "elementwise_autodiff":
        pytest.skip("a user Elementwise cannot be rebuilt from JSON (by design)")
    arch = CASES[name][0](stax)
    assert spec_json(from_spec(json.loads(spec_json(arch)))) == spec_json(arch)


def test_elementwise_needs_a_function():
    with pytest.raises(ValueError, match="no finite"):
        stax.Elementwise()
    x = np.random.default_rng(0).standard_normal((3, 4))
    layer = stax.Elementwise(np.tanh)  # finite only: the kernel is refused with a hint
    from ntkscale.kernels import UnsupportedArchitectureError

    with pytest.raises(UnsupportedArchitectureError, match="pass nngp_fn"):
        stax.serial(stax.Dense(4), layer, stax.Dense(1))[2](x)


def test_flatten_on_features_is_a_no_op():
    x = np.random.default_rng(1).standard_normal((4, 6))
    a = stax.serial(stax.Dense(8, b_std=0.1), stax.Relu(), stax.Dense(1))[2](x, None, "ntk")
    b = stax.serial(stax.Flatten(), stax.Dense(8, b_std=0.1), stax.Relu(), stax.Flatten(), stax.Dense(1))[2](
        x, None, "ntk")
    np.testing.assert_allclose(a, b, rtol=1e-13)  # the fused chain path vs the generic one


@pytest.mark.parametrize("degree", range(5))
def test_rectified_monomial_where_nt_is_nan(nt, degree):
    """Where NT returns NaN (theta = 0), the closed form E[relu(u)^(2d)] = (2d-1)!! v^d / 2
    (NT's own diagonal formula) through the readout Dense; degree 1 is ReLU's kernel."""
    name = f"act_rectified_monomial_{degree}"
    x1, x2 = inputs("fc")
    k = CASES[name][0](stax)[2](x1, x2)
    v = 1.2 ** 2 * np.sum(x1 * x1, axis=1) / x1.shape[1] + 0.1 ** 2
    dfact = np.prod(np.arange(2 * degree - 1, 0, -2)) if degree else 1
    np.testing.assert_allclose(k.cov1, 0.9 ** 2 * dfact * v ** degree / 2 + 0.05 ** 2, rtol=1e-13)
    np.testing.assert_allclose(np.diagonal(CASES[name][0](stax)[2](x1, None, "nngp")), k.cov1, rtol=1e-13)
    if degree == 1:
        relu = stax.serial(stax.Dense(512, W_std=1.2, b_std=0.1), stax.Relu(), stax.Dense(1, W_std=0.9, b_std=0.05))
        for get in ("nngp", "ntk"):
            np.testing.assert_allclose(CASES[name][0](stax)[2](x1, None, get), relu[2](x1, None, get), rtol=1e-13)
