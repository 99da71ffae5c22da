"""``ntkscale.predict`` against neural-tangents 0.6.5's ``nt.predict`` (fixture ``nt065_predict.npz``
from ``generate_predict.py``; no NT needed here), and the stored-Gram path against the array path.

Every call of :data:`predict_cases.CALLS` is made with ``ntkscale.stax``/``ntkscale.predict``
exactly as the generator made it with NT's, on the same float64 inputs; results agree to 1e-10
relative (to the largest entry of each array): both sides evaluate the same closed forms in
float64 (eigh / Cholesky), so only summation order differs. ``gradient_descent`` is the
exception: NT integrates an ODE (rtol = atol = 1.4e-8), checked to 1e-6 against it and to 1e-10
against NT's ``gradient_descent_mse`` of the same problem.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from ntkscale import predict, stax
from ntkscale.predict import Gaussian

from . import predict_cases as pc

HERE = os.path.dirname(os.path.abspath(__file__))
RTOL = 1e-10
RTOL_ODE = 1e-6


@pytest.fixture(scope="module")
def nt():
    with np.load(os.path.join(HERE, "nt065_predict.npz")) as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def setup():
    d = pc.data()
    _, _, kernel_fn = pc.arch(stax)
    return d, kernel_fn, pc.kernels(kernel_fn, d)


def _close(got, want, rtol, what):
    assert got.shape == want.shape, (what, got.shape, want.shape)
    scale = max(float(np.abs(want).max()), 1e-300)
    err = float(np.abs(got - want).max()) / scale
    assert err <= rtol, f"{what}: max relative difference {err:.3e} > {rtol:g}"
    return err


def _run(kind, make, call, d, kernel_fn, ks):
    mk, cl = pc.resolve(kind, make, call, d, ks, pc.losses(np))
    if kind == "ensemble":
        fn = predict.gradient_descent_mse_ensemble(kernel_fn, d["x_train"], **mk)
    elif kind == "gp":
        fn = predict.gp_inference(**mk)
    elif kind == "mse":
        fn = predict.gradient_descent_mse(**mk)
    else:
        fn = predict.gradient_descent(**mk)
    return fn(**cl)


def test_fixture_inputs_and_kernels(nt, setup):
    d, _, ks = setup
    for k, v in d.items():
        np.testing.assert_array_equal(nt[f"data/{k}"], v)
    for which, k in ks.items():
        for g in ("nngp", "ntk"):
            _close(np.asarray(getattr(k, g)), nt[f"kernel/{which}/{g}"], 1e-12, f"{which} {g}")


@pytest.mark.parametrize("name", list(pc.CALLS))
def test_predict_equals_neural_tangents(nt, setup, name):
    d, kernel_fn, ks = setup
    kind, make, call = pc.CALLS[name]
    out = _run(kind, make, call, d, kernel_fn, ks)
    got = pc.flatten(out, name)
    want = {k: v for k, v in nt.items() if k == name or k.startswith(name + "/")}
    assert set(got) == set(want), (sorted(got), sorted(want))
    rtol = RTOL_ODE if kind == "gd" else RTOL
    for key in want:
        _close(got[key], want[key], rtol, key)
    # NT's return types: Gaussian namedtuples where a covariance was asked for
    if call.get("compute_cov") or call.get("k_test_test") is not None:
        parts = out if hasattr(out, "_fields") and not isinstance(out, Gaussian) else (out,)
        assert all(isinstance(p, Gaussian) for p in parts)


@pytest.mark.parametrize("name, mse_name", [("gd_mse_half", "mse_from_gd_half")])
def test_gradient_descent_is_the_mse_closed_form(setup, name, mse_name):
    """``gradient_descent`` with an MSE loss is ``gradient_descent_mse`` (to round-off), and a
    loss without NT's 1/2 runs twice as fast."""
    d, kernel_fn, ks = setup
    kind, make, call = pc.CALLS[name]
    got = _run(kind, make, call, d, kernel_fn, ks)
    mse = predict.gradient_descent_mse(ks["train"].ntk, d["y"], learning_rate=make["learning_rate"])
    want = mse(np.asarray(call["t"]), d["f0_train"], d["f0_test"], ks["test_train"].ntk)
    for g, w in zip(got, want):
        _close(g, w, 1e-13, mse_name)
    full = predict.gradient_descent(pc.losses(np)["mse"], ks["train"].ntk, d["y"])(2.0, d["f0_train"])
    half = predict.gradient_descent(pc.losses(np)["mse_half"], ks["train"].ntk, d["y"])(4.0, d["f0_train"])
    _close(full, half, 1e-13, "mse without 1/2")


@pytest.mark.parametrize("name", list(pc.MAX_LR))
def test_max_learning_rate(nt, setup, name):
    _, _, ks = setup
    got = predict.max_learning_rate(ks["train"].ntk, **pc.MAX_LR[name])
    _close(np.asarray(got), nt[name], 1e-12, name)


def test_refusals(setup):
    d, kernel_fn, ks = setup
    K = ks["train"].ntk
    xent = lambda fx, y: -np.mean(y * fx - np.log(np.exp(fx).sum(-1, keepdims=True)))  # noqa: E731
    with pytest.raises(NotImplementedError, match="gradient_descent_mse"):
        predict.gradient_descent(xent, K, d["y"])
    with pytest.raises(NotImplementedError, match="momentum"):
        predict.gradient_descent("mse", K, d["y"], momentum=0.9)
    with pytest.raises(NotImplementedError, match="trace_axes"):
        predict.gradient_descent_mse(K, d["y"], trace_axes=())
    with pytest.raises(NotImplementedError, match='"nngp" or "ntk"'):
        predict.gradient_descent_mse_ensemble(kernel_fn, d["x_train"], d["y"])(x_test=d["x_test"], get="ntkgp")
    with pytest.raises(ValueError, match="k_test_train"):
        predict.gradient_descent_mse(K, d["y"])(1.0, d["f0_train"], d["f0_test"])
    with pytest.raises(ValueError, match="namedtuple"):
        predict.gp_inference(K, d["y"])("ntk", ks["test_train"].ntk, ks["test_test"].nngp)
    # a loss equal to MSE is recognized, under any name
    assert predict.gradient_descent(lambda f, y: ((f - y) ** 2).sum() / (2 * y.size), K, d["y"])
