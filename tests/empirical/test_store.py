"""EmpiricalNTK through the pipeline: stored tile by tile == dense, fingerprints refuse other
parameters, pickling to worker processes, the JAX device path, the estimator."""

import json

import cloudpickle
import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = jax.numpy

from ntkscale import stax  # noqa: E402
from ntkscale.empirical import EmpiricalNTK, empirical_ntk  # noqa: E402
from ntkscale.kernels import UnsupportedArchitectureError, from_spec, spec_json  # noqa: E402
from ntkscale.operator import StoredGram  # noqa: E402
from ntkscale.storage import StoreMismatchError  # noqa: E402
from ntkscale.tiling import build_cross_gram, build_gram  # noqa: E402

from .conftest import tanh_apply, tanh_params, x64  # noqa: E402

N, D, TILE = 45, 3, 16  # 3x3 tiles, 45 is not a multiple of 16
X = np.random.default_rng(0).standard_normal((N, D))
NET = stax.serial(stax.Dense(24, W_std=1.5, b_std=0.1), stax.Relu(), stax.Dense(2, W_std=1.5, b_std=0.1))


def _params(seed=0):
    return NET.init_fn(jax.random.PRNGKey(seed), X.shape)[1]


def _dense(params, x1, x2=None):
    """Reference: the whole kernel in one call, float64; and the outputs."""
    with x64():
        p = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), params)
        f1 = np.asarray(NET.apply_fn(p, jnp.asarray(x1)))
        f2 = f1 if x2 is None else np.asarray(NET.apply_fn(p, jnp.asarray(x2)))
        return np.asarray(empirical_ntk(NET.apply_fn, p, x1, x2)), f1 @ f2.T / f1.shape[1]


@pytest.mark.parametrize("method", ["jacobian", "ntvp"])
def test_stored_gram_equals_dense(tmp_path, method):
    params = _params()
    kern = EmpiricalNTK(NET.apply_fn, params, method=method, name="relu-mlp", batch_size=5)
    rep = build_gram(kern, X, tmp_path / "g", get=("ntk", "nngp"), tile=TILE, dtype=np.float64, client="sync")
    assert rep.n_tiles == 6 and rep.computed == 6
    ntk, nngp = _dense(params, X)
    with StoredGram(tmp_path / "g", "ntk", client="sync") as op:
        A = op.to_numpy()
        np.testing.assert_allclose(A, ntk, rtol=1e-12, atol=1e-12)
        np.testing.assert_array_equal(A, A.T)
        np.testing.assert_allclose(op.diag(), np.diag(ntk), rtol=1e-12)
        v = np.random.default_rng(1).standard_normal(N)
        np.testing.assert_allclose(op.matvec(v), ntk @ v, rtol=1e-10)
    with StoredGram(tmp_path / "g", "nngp", client="sync") as op:
        np.testing.assert_allclose(op.to_numpy(), nngp, rtol=1e-12, atol=1e-12)
    # a cross Gram (test x train) too
    Xt = X[:7] + 0.5
    build_cross_gram(kern, Xt, X, tmp_path / "c", get="ntk", tile=TILE, dtype=np.float64, client="sync")
    with StoredGram(tmp_path / "c", "ntk", client="sync") as op:
        np.testing.assert_allclose(op.to_numpy(), _dense(params, Xt, X)[0], rtol=1e-12, atol=1e-12)


def test_store_refuses_other_parameters(tmp_path):
    params = _params()
    build_gram(EmpiricalNTK(NET.apply_fn, params, name="m"), X, tmp_path / "g", tile=TILE, client="sync")
    # the same parameters in a new object (a new process would do the same): resumed, nothing to do
    again = build_gram(EmpiricalNTK(NET.apply_fn, jax.tree_util.tree_map(np.array, params), name="m"), X,
                       tmp_path / "g", tile=TILE, client="sync")
    assert again.resumed and again.computed == 0
    (W, b), *rest = params
    moved = ((W.at[0, 0].add(1e-6), b), *rest)  # one weight of the first Dense layer
    other = EmpiricalNTK(NET.apply_fn, moved, name="m")
    assert other.params_sha256 != EmpiricalNTK(NET.apply_fn, params, name="m").params_sha256
    with pytest.raises(StoreMismatchError, match="another architecture"):
        build_gram(other, X, tmp_path / "g", tile=TILE, client="sync")
    with pytest.raises(StoreMismatchError, match="another architecture"):  # and so does the name
        build_gram(EmpiricalNTK(NET.apply_fn, params, name="n"), X, tmp_path / "g", tile=TILE, client="sync")


def test_fingerprint_tells_functions_apart_and_is_stable_across_processes():
    import subprocess
    import sys

    params = _params()
    relu = EmpiricalNTK(NET.apply_fn, params)
    erf = stax.serial(stax.Dense(24, W_std=1.5, b_std=0.1), stax.Erf(), stax.Dense(2, W_std=1.5, b_std=0.1))
    other = EmpiricalNTK(erf.apply_fn, params)  # same code, same parameters, another closure
    assert relu.fn == other.fn and relu.params_sha256 == other.params_sha256
    assert relu.fn_sha256 != other.fn_sha256 and relu != other
    # a resume in a new process must see the same spec (a fresh interpreter, fresh addresses)
    code = ("import jax, json; from ntkscale import stax; from ntkscale.empirical import EmpiricalNTK; "
            "net = stax.serial(stax.Dense(24, W_std=1.5, b_std=0.1), stax.Relu(), "
            "stax.Dense(2, W_std=1.5, b_std=0.1)); "
            "p = net.init_fn(jax.random.PRNGKey(0), (45, 3))[1]; "
            "print(json.dumps(EmpiricalNTK(net.apply_fn, p).spec(), sort_keys=True))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == relu.spec()


def test_spec_pickle_and_refusals():
    params = tanh_params()
    kern = EmpiricalNTK(tanh_apply, params, method="ntvp")
    spec = kern.spec()
    assert spec["layer"] == "EmpiricalNTK" and spec["name"] == "tanh_apply" and spec["method"] == "ntvp"
    assert spec["fn"].endswith("conftest.tanh_apply") and len(spec["params_sha256"]) == 64
    with pytest.raises(UnsupportedArchitectureError, match="cannot be rebuilt from JSON"):
        from_spec(spec)
    copy = cloudpickle.loads(cloudpickle.dumps(kern))  # what a Dask task does with its argument
    assert copy == kern and hash(copy) == hash(kern) and spec_json(copy) == spec_json(kern)
    x = X[:6]
    np.testing.assert_allclose(copy.kernel_fn(x, None, "ntk"), kern.kernel_fn(x, None, "ntk"), rtol=1e-14)
    with pytest.raises(UnsupportedArchitectureError, match="cannot be composed"):
        stax.serial(kern, stax.Relu()).kernel_fn(x, None, "ntk")
    with pytest.raises(ValueError, match="trace must be True"):
        EmpiricalNTK(tanh_apply, params, trace=False)
    with pytest.raises(ValueError, match="no floating-point array leaves"):
        EmpiricalNTK(tanh_apply, {"i": np.arange(3)})
    with pytest.raises(ValueError, match="params has NaN"):
        EmpiricalNTK(tanh_apply, {**params, "b": np.full(5, np.nan)})
    with pytest.raises(ValueError, match="input_shape"):
        EmpiricalNTK(tanh_apply, params, input_shape=(0, 3))
    with pytest.raises(ValueError, match="x1 has NaN"):  # the build's own input check
        build_gram(kern, np.where(np.eye(6, 3) > 0, np.nan, X[:6]), "memory://nan", client="sync")
    # a model that cannot take the rows fails before a store is created
    bad_models = [(EmpiricalNTK(tanh_apply, params, input_shape=(2, 2)), "cannot be reshaped"),
                  (EmpiricalNTK(lambda p, x: tanh_apply(p, x)[None], params),
                   r"must return .*got \(1, 1, 2\)")]
    for bad, match in bad_models:
        with pytest.raises(ValueError, match=match):
            build_gram(bad, X[:6], "memory://bad-model", client="sync")
        with pytest.raises(Exception, match="no Gram store"):
            StoredGram("memory://bad-model", "ntk", client="sync")


def test_input_shape_reshapes_rows():
    # a model of (n, 2, 3) inputs; the store holds (n, 6) rows
    params = tanh_params(d=3)
    apply3 = lambda p, x: tanh_apply(p, x.mean(axis=1))  # noqa: E731
    kern = EmpiricalNTK(apply3, params, input_shape=(2, 3))
    x = np.random.default_rng(2).standard_normal((5, 6))
    want = empirical_ntk(apply3, params, x.reshape(5, 2, 3))
    np.testing.assert_allclose(kern.kernel_fn(x, None, "ntk", dtype=np.float32), want, rtol=1e-5, atol=1e-6)


def test_jax_device_path_matches_cpu():
    # the 'jax-cpu' device jits kernel_tile: the tile kernel runs on tracers there
    params = _params(1)
    kern = EmpiricalNTK(NET.apply_fn, params, method="jacobian")
    build_gram(kern, X, "memory://emp-cpu", tile=TILE, dtype=np.float64, client="sync")
    build_gram(kern, X, "memory://emp-jax", tile=TILE, dtype=np.float64, client="sync", device="jax-cpu")
    with StoredGram("memory://emp-cpu", "ntk", client="sync") as a, \
            StoredGram("memory://emp-jax", "ntk", client="sync") as b:
        np.testing.assert_allclose(b.to_numpy(), a.to_numpy(), rtol=1e-12, atol=1e-12)


def test_estimator_takes_an_empirical_ntk():
    from ntkscale.estimators import NTKRegressor

    params = _params(2)
    kern = EmpiricalNTK(NET.apply_fn, params)
    y = np.sin(X[:, 0])
    est = NTKRegressor(arch=kern, ridge=1e-3, client="sync").fit(X[:30], y[:30])
    K = _dense(params, X)[0]
    want = K[30:, :30] @ np.linalg.solve(K[:30, :30] + 1e-3 * np.eye(30), y[:30])
    np.testing.assert_allclose(est.predict(X[30:]), want, rtol=1e-8, atol=1e-10)


@pytest.mark.cluster
def test_cluster_build_matches_dense(client, tmp_path):
    # worker processes unpickle the kernel (cloudpickle), compile it once each, write tiles
    params = _params(3)
    kern = EmpiricalNTK(NET.apply_fn, params, name="on-workers")
    rep = build_gram(kern, X, tmp_path / "g", tile=TILE, dtype=np.float64, client=client)
    assert rep.computed == 6
    with StoredGram(tmp_path / "g", "ntk", client=client) as op:
        np.testing.assert_allclose(op.to_numpy(), _dense(params, X)[0], rtol=1e-12, atol=1e-12)
