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


@pytest.mark.parametrize("name", pc.SIGNATURES)
def test_signatures_match_neural_tangents(nt, name):
    """NT's parameters, in NT's order with NT's defaults; extras (solver, tol, ...) keyword-only."""
    import inspect

    params = list(inspect.signature(getattr(predict, name)).parameters.values())
    ours = [f"{p.name}={p.default!r}" if p.default is not inspect.Parameter.empty else
            (f"**{p.name}" if p.kind is p.VAR_KEYWORD else p.name) for p in params]
    theirs = [str(s) for s in nt[f"signature/{name}"]]
    positional = [o for o, p in zip(ours, params) if p.kind is not p.KEYWORD_ONLY]
    assert positional == theirs, (positional, theirs)


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


# ---------------------------------------------------------------------------------------------
# Stored Gram: the same functions on a StoredGram (or a store URL) equal the array path.
# ---------------------------------------------------------------------------------------------
N_STORE = 40


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A float64 store of both kinds, n = 40 (tiles of 16: 3 x 3 tile grid)."""
    from ntkscale.tiling import build_gram

    rng = np.random.default_rng(3)
    x = rng.standard_normal((N_STORE, pc.D))
    xt = rng.standard_normal((6, pc.D))
    y = rng.standard_normal((N_STORE, pc.C))
    arch = pc.arch(stax)
    url = str(tmp_path_factory.mktemp("predict") / "gram")
    build_gram(arch, x, url, get=("nngp", "ntk"), tile=16, dtype=np.float64, client="sync")
    return {"url": url, "x": x, "xt": xt, "y": y, "kernel_fn": arch.kernel_fn,
            "K": arch.kernel_fn(x, None, ("nngp", "ntk")), "Kx": arch.kernel_fn(xt, x, ("nngp", "ntk")),
            "Kxx": arch.kernel_fn(xt, None, ("nngp", "ntk"))}


#: stored vs array: the tiled Cholesky is exact to ~1e-13; Lanczos stops at a relative change of
#: tol = 1e-10 (a-posteriori estimate), which bounds the finite-time results: 1e-8 leaves 100x.
RTOL_STORED = 1e-8


def _stored_kernels(s):
    from collections import namedtuple

    from ntkscale.operator import StoredGram

    Kernel = namedtuple("Kernel", "nngp ntk")
    return Kernel(StoredGram(s["url"], "nngp", client="sync"), StoredGram(s["url"], "ntk", client="sync"))


def _all_close(got, want, what):
    errs = {}
    for (k, g), w in zip(pc.flatten(got, what).items(), pc.flatten(want, what).values()):
        errs[k] = _close(g, w, RTOL_STORED, k)
    return max(errs.values())


@pytest.mark.parametrize("t", [None, np.array([0.5, 5.0, 50.0])])
def test_stored_ensemble_equals_arrays(store, t):
    s = store
    kw = dict(diag_reg=1e-3, learning_rate=0.5)
    dense = predict.gradient_descent_mse_ensemble(s["kernel_fn"], s["x"], s["y"], **kw)
    # n_dense=0: solves out of core (tiled Cholesky) even at this n
    stored = predict.gradient_descent_mse_ensemble(s["kernel_fn"], s["x"], s["y"], k_train_train=s["url"],
                                                   n_dense=0, **kw)
    want = dense(t, s["xt"], None, compute_cov=True)
    got = stored(t, s["xt"], None, compute_cov=True)
    _all_close(got, want, "ensemble")
    methods = {d["method"] for d in stored.info}
    assert methods == ({"tiled-cholesky"} if t is None else {"lanczos"}), stored.info
    # train-set means need no n x n matrix; the train-set covariance does, and is refused
    _all_close(stored(t, None, "ntk"), dense(t, None, "ntk"), "train mean")
    with pytest.raises(ValueError, match="n x n"):
        stored(t, None, "nngp", compute_cov=True)


def test_stored_gp_inference_and_mse_equal_arrays(store):
    s = store
    K, Kx, Kxx = s["K"], s["Kx"], s["Kxx"]
    ks = _stored_kernels(s)
    for solver in ("cholesky", "pcg"):
        gp_s = predict.gp_inference(ks, s["y"], diag_reg=1e-2, solver=solver, n_dense=0)
        gp_d = predict.gp_inference(K, s["y"], diag_reg=1e-2)
        _all_close(gp_s(None, Kx, Kxx), gp_d(None, Kx, Kxx), f"gp {solver}")
        assert {d["solver"] for d in gp_s.info} == {solver}, gp_s.info
    f0, f0x = 0.1 * s["y"], -0.2 * s["y"][:6]
    t = np.array([[1.0, 10.0], [100.0, 1e3]])
    mse_s = predict.gradient_descent_mse(ks.ntk, s["y"], 0.3, 1e-3, n_dense=0)
    mse_d = predict.gradient_descent_mse(K.ntk, s["y"], 0.3, 1e-3)
    for tt in (t, None):
        _all_close(mse_s(tt, f0, f0x, Kx.ntk), mse_d(tt, f0, f0x, Kx.ntk), "mse")
    # k_test_train as an operator (a stored cross Gram has matvec) or a callable
    _all_close(mse_s(t, None, 0., lambda V: Kx.ntk @ V), mse_d(t, None, 0., Kx.ntk), "mse callable")
    lr = predict.max_learning_rate(ks.ntk, s["y"].size)
    assert lr == pytest.approx(predict.max_learning_rate(K.ntk, s["y"].size), rel=1e-9)


def test_store_of_other_inputs_is_refused(store):
    s = store
    fn = predict.gradient_descent_mse_ensemble(s["kernel_fn"], s["x"] + 1.0, s["y"], k_train_train=s["url"])
    with pytest.raises(Exception, match="other training data"):
        fn(None, s["xt"], "ntk")
    other = stax.serial(stax.Dense(8, W_std=2.0), stax.Relu(), stax.Dense(1)).kernel_fn
    fn = predict.gradient_descent_mse_ensemble(other, s["x"], s["y"], k_train_train=s["url"])
    with pytest.raises(ValueError, match="another architecture"):
        fn(None, s["xt"], "ntk")


def test_larger_store_runs_out_of_core(tmp_path):
    """n = 3000 in a float32 store: t=None by the tiled Cholesky, finite t by Lanczos, the test
    kernel streamed over the store. Memory (tracemalloc, this process = the sync "workers"):
    the Lanczos phase stays below 1/16 of one float64 n x n array; the Cholesky phase below one
    such array (what the array path needs at least twice, K and its factor) -- its largest
    item is the solver's cache of the factor's upper tiles (~n^2 4 bytes, kept only when it fits
    in a quarter of the free RAM, ntkscale.solvers.cholesky_solve). The t=None mean equals a
    dense solve on the stored values."""
    import tracemalloc

    import scipy.linalg

    from ntkscale.operator import StoredGram
    from ntkscale.tiling import build_gram

    n, m = 3000, 20
    rng = np.random.default_rng(5)
    x, xt, y = rng.standard_normal((n, 10)), rng.standard_normal((m, 10)), rng.standard_normal((n, 2))
    arch = pc.arch(stax)
    url = str(tmp_path / "big")
    build_gram(arch, x, url, get="ntk", tile=500, client="sync")
    op = StoredGram(url, "ntk", client="sync")
    fn = predict.gradient_descent_mse_ensemble(arch.kernel_fn, x, y, diag_reg=1e-3, k_train_train=op,
                                               n_dense=1000, tol=1e-8)
    peaks = []
    for t in (None, np.array([10.0, 1e3])):
        tracemalloc.start()
        try:
            out = fn(t, xt, "ntk")
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
        if t is None:
            mean_inf = out
    dense = n * n * 8
    assert peaks[0] < dense and peaks[1] < dense / 16, [f"{p / 2**20:.1f} MiB" for p in peaks]
    assert [d["method"] for d in fn.info] == ["tiled-cholesky", "lanczos"], fn.info
    assert fn.info[1]["passes"] < 100 and out.shape == (2, m, 2)
    K = op.to_numpy().astype(np.float64)
    ridge = 1e-3 * float(np.mean(np.diag(K)))
    alpha = scipy.linalg.solve(K + ridge * np.eye(n), y, assume_a="pos")
    want = np.asarray(arch.kernel_fn(xt, x, "ntk")) @ alpha
    _close(mean_inf, want, 1e-6, "n=3000 t=None")  # float32 store vs float64 cross kernel


def test_a_url_runs_its_passes_on_the_running_client(store):
    """dask's convention: with a ``distributed.Client`` running, a store given by URL runs its
    passes on that cluster (not in-process one task at a time); without one, in-process."""
    from distributed import Client, LocalCluster

    from ntkscale.predict._args import url_client

    s = store
    assert url_client() == "sync"
    dense = predict.gp_inference(s["K"], s["y"], diag_reg=1e-3)("ntk", s["Kx"].ntk)
    with LocalCluster(n_workers=1, processes=False, threads_per_worker=1, dashboard_address=":0") as cl, \
            Client(cl) as c:
        assert url_client() is c
        fn = predict.gp_inference(s["url"], s["y"], diag_reg=1e-3, n_dense=0)
        got = fn("ntk", s["Kx"].ntk)
        ran = c.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.transition_log))
    _close(got, dense, RTOL_STORED, "gp_inference ntk mean")
    assert ran > 0  # the solve's tasks went through the client's scheduler
