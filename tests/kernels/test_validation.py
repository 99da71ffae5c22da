"""Bad inputs and malformed architectures fail early, with messages that name the problem."""

import math

import numpy as np
import pytest

from ntkscale import stax
from ntkscale.kernels import (UnsupportedArchitectureError, diag_stats, from_spec, make_kernel_fn,
                              spec_of)

RELU_NET = stax.serial(stax.Dense(8, W_std=1.5, b_std=0.1), stax.Relu(), stax.Dense(1))


def _kf():
    return RELU_NET.kernel_fn


# ----------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_rows_are_named(bad):
    x = np.ones((20, 4))
    x[3, 1] = bad
    x[17, 0] = bad
    with pytest.raises(ValueError, match=r"x1 has NaN or Inf in 2 row\(s\): 3, 17"):
        _kf()(x)
    with pytest.raises(ValueError, match=r"x2 has NaN or Inf in 2 row\(s\): 3, 17"):
        _kf()(np.ones((2, 4)), x)
    with pytest.raises(ValueError, match=r"NaN or Inf in 2 row\(s\): 3, 17"):
        diag_stats(RELU_NET, x)


def test_many_nonfinite_rows_are_summarised():
    x = np.ones((30, 2))
    x[::2, 0] = np.nan
    with pytest.raises(ValueError, match=r"in 15 row\(s\): 0, 2, 4, 6, 8, 10, 12, 14, 16, 18 \.\.\."):
        _kf()(x)


def test_mismatched_feature_counts():
    with pytest.raises(ValueError, match="x1 has 4 features but x2 has 5"):
        _kf()(np.ones((3, 4)), np.ones((2, 5)))


@pytest.mark.parametrize("shape,hint", [((5,), r"x\[None, :\]"), ((2, 3, 4), r"reshape\(len\(x\), -1\)"),
                                        ((), "")])
def test_wrong_number_of_dimensions(shape, hint):
    with pytest.raises(ValueError, match=r"x1 must be a 2-d array .*" + hint):
        _kf()(np.ones(shape))
    with pytest.raises(ValueError, match=r"x2 must be a 2-d array"):
        _kf()(np.ones((2, 5)), np.ones(shape))


def test_no_features():
    with pytest.raises(ValueError, match="no features"):
        _kf()(np.ones((3, 0)))


@pytest.mark.parametrize("x", [np.ones((2, 3), complex), np.ones((2, 3), object),
                               np.array([["a", "b"], ["c", "d"]]), np.array([[b"a"]]),
                               np.ones((2, 3), "datetime64[s]")], ids=["complex", "object", "str", "bytes", "datetime"])
def test_unsupported_dtypes(x):
    with pytest.raises(TypeError, match="unsupported dtype"):
        _kf()(x)


def test_integer_and_bool_inputs_are_cast():
    xi = np.array([[1, 2, 3], [0, -1, 4]])
    np.testing.assert_array_equal(_kf()(xi, None, "ntk"), _kf()(xi.astype(float), None, "ntk"))
    _kf()(np.array([[True, False]]))


def test_non_arrays_are_refused():
    with pytest.raises(TypeError, match="pass a numpy, cupy or jax array"):
        _kf()([[1.0, 2.0]])


@pytest.mark.parametrize("dtype", [np.int32, np.float16, np.complex128, "bogus"])
def test_bad_compute_dtype(dtype):
    with pytest.raises((ValueError, TypeError), match="dtype"):
        _kf()(np.ones((2, 2)), None, dtype=dtype)


@pytest.mark.parametrize("get", ["foo", ("ntk", "ntk"), (), ("nngp", "cov1"), 5])
def test_bad_get(get):
    with pytest.raises(ValueError, match="get must be 'nngp', 'ntk' or a tuple of them"):
        _kf()(np.ones((2, 2)), None, get)


@pytest.mark.parametrize("path", ["bogus", "FUSED", None])
def test_bad_path(path):
    with pytest.raises(ValueError, match="path must be"):
        _kf()(np.ones((2, 2)), None, path=path)


def test_get_forms():
    x = np.random.default_rng(0).standard_normal((4, 3))
    k = _kf()(x)  # get=None: neural-tangents' Kernel fields
    assert k._fields[:4] == ("nngp", "ntk", "cov1", "cov2") and k.x1_is_x2 and k.cov2 is None
    np.testing.assert_array_equal(k.cov1, np.diagonal(k.nngp))
    assert _kf()(x, None, ("nngp", "ntk"))._fields == ("nngp", "ntk")
    assert _kf()(x, None, ("ntk",))._fields == ("ntk",)
    np.testing.assert_array_equal(_kf()(x, None, "nngp"), k.nngp)
    np.testing.assert_array_equal(_kf()(x, None, ["ntk", "nngp"]).ntk, k.ntk)


ACTS = [stax.Relu(), stax.LeakyRelu(0.1), stax.Abs(), stax.Erf(), stax.Erf(2.0, 0.5, 0.3), stax.Gelu(),
        stax.Sin(), stax.Cos(), stax.Identity()]


@pytest.mark.parametrize("path", ["auto", "generic"])
@pytest.mark.parametrize("b_std", [None, 0.1])
@pytest.mark.parametrize("act", ACTS, ids=lambda a: repr(a))
def test_zero_rows_give_finite_kernels(act, b_std, path):
    # A zero input row has variance 0: the ReLU angle is undefined (0/0) and the GELU/erf
    # normalisers touch 0; outputs must stay finite (and RuntimeWarnings from ntkscale are
    # errors under this suite's filterwarnings).
    layer = stax.serial(stax.Dense(4, W_std=1.3, b_std=b_std), act, stax.Dense(4, b_std=b_std), act,
                        stax.Dense(1))
    x = np.random.default_rng(0).standard_normal((6, 3))
    x[[1, 4]] = 0.0
    for k in (layer.kernel_fn(x, None, path=path), layer.kernel_fn(x, x[:3], path=path),
              layer.kernel_fn(np.zeros((2, 3)), None, path=path)):
        assert np.isfinite(k.nngp).all() and np.isfinite(k.ntk).all()
    if b_std is None and isinstance(act, type(stax.Relu())) and act.a == 0:
        k = layer.kernel_fn(x, None, path=path)
        # ReLU, no bias: a zero input gives a zero representation and a zero gradient
        assert np.all(k.nngp[1] == 0) and np.all(k.ntk[1] == 0)


def test_zero_samples():
    k = _kf()(np.zeros((0, 3)))
    assert k.nngp.shape == (0, 0) and k.ntk.shape == (0, 0)
    k = _kf()(np.ones((4, 3)), np.zeros((0, 3)))
    assert k.ntk.shape == (4, 0)
    for path in ("fused", "generic"):
        assert _kf()(np.zeros((0, 3)), np.ones((5, 3)), "ntk", path=path).shape == (0, 5)


# ----------------------------------------------------------------------------------------
# Layer parameters
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("make,match", [
    (lambda: stax.Dense(8, W_std=-1.0), "W_std must be >= 0"),
    (lambda: stax.Dense(8, W_std=float("nan")), "W_std must be finite"),
    (lambda: stax.Dense(8, W_std="big"), "W_std must be a real number"),
    (lambda: stax.Dense(8, b_std=float("nan")), "b_std must be finite"),
    (lambda: stax.Dense(8, b_std=-0.1), "b_std must be >= 0"),
    (lambda: stax.Dense(8, b_std=math.inf), "b_std must be finite"),
    (lambda: stax.Dense(8, parameterization="mup"), "parameterization must be 'ntk' or 'standard'"),
    (lambda: stax.Dense(0), "out_dim must be a positive int"),
    (lambda: stax.Dense(-3), "out_dim must be a positive int"),
    (lambda: stax.Dense(2.0), "out_dim must be a positive int"),
    (lambda: stax.Dense(True), "out_dim must be a positive int"),
    (lambda: stax.Dense(4, s=(0, 1)), "s must be two positive ints"),
    (lambda: stax.Dense(4, s=(1, 2, 3)), "s must be two positive ints"),
    (lambda: stax.Erf(b=math.inf), "b must be finite"),
    (lambda: stax.Sin(a=float("nan")), "a must be finite"),
    (lambda: stax.ABRelu("x", 1.0), "a must be a real number"),
    (lambda: stax.LeakyRelu(float("nan")), "a must be finite"),
    (lambda: stax.FanOut(0), "num must be a positive int"),
    (lambda: stax.serial(), "needs at least one layer"),
    (lambda: stax.parallel(), "needs at least one layer"),
])
def test_bad_layer_parameters(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_non_layers_are_refused():
    with pytest.raises(TypeError, match="argument 1 is str"):
        stax.serial(stax.Dense(1), "relu")
    with pytest.raises(TypeError, match="expected an ntkscale layer"):
        make_kernel_fn(object())(np.ones((2, 2)))


# ----------------------------------------------------------------------------------------
# Architectures
# ----------------------------------------------------------------------------------------
D = stax.Dense(4)
UNBALANCED = {
    "parallel_without_fanout": stax.serial(D, stax.parallel(D, D), stax.FanInSum()),
    "fanin_without_fanout": stax.serial(D, stax.FanInSum()),
    "unmerged_branches": stax.serial(stax.FanOut(2), stax.parallel(D, D)),
    "branch_count_mismatch": stax.serial(stax.FanOut(3), stax.parallel(D, D), stax.FanInSum()),
    "layer_on_branches": stax.serial(stax.FanOut(2), stax.Relu(), stax.FanInSum()),
    "nested_fanout": stax.serial(stax.FanOut(2), stax.FanOut(2), stax.FanInSum()),
    "bare_fanout": stax.FanOut(2),
    "bare_parallel": stax.parallel(D, D),
    "bare_fanin": stax.FanInSum(),
    "fanout_inside_parallel": stax.serial(stax.FanOut(2), stax.parallel(stax.FanOut(2), D), stax.FanInSum()),
}


@pytest.mark.parametrize("name", sorted(UNBALANCED))
def test_unbalanced_branches(name):
    layer = UNBALANCED[name]
    x = np.ones((3, 2))
    with pytest.raises(UnsupportedArchitectureError):
        layer.kernel_fn(x)
    with pytest.raises(UnsupportedArchitectureError):
        diag_stats(layer, x)


def test_balanced_branches_work():
    # after a Dense(W_std=1) the branches see Gaussian pre-activations of covariance q
    res = stax.serial(stax.Dense(4), stax.FanOut(3), stax.parallel(stax.Dense(4), stax.Relu(), stax.Identity()),
                      stax.FanInSum())
    x = np.random.default_rng(0).standard_normal((5, 2))
    k = res.kernel_fn(x)
    # kernels of independent branches add: Dense(W=1) -> q, Relu -> relu(q), Identity -> q
    q = x @ x.T / 2
    parts = [stax.serial(stax.Dense(4), stax.Dense(4)), stax.serial(stax.Dense(4), stax.Relu()),
             stax.serial(stax.Dense(4), stax.Identity())]
    want = sum(p.kernel_fn(x, None, "nngp") for p in parts)
    np.testing.assert_allclose(k.nngp, want, rtol=1e-14)
    # NTKs add too; the Dense -> Dense branch is q (first layer) + q (its own weights)
    np.testing.assert_allclose(k.ntk, sum(p.kernel_fn(x, None, "ntk") for p in parts), rtol=1e-14)
    np.testing.assert_allclose(parts[0].kernel_fn(x, None, "ntk"), 2 * q, rtol=1e-14)


def test_elementwise_without_kernel():
    import_jax = pytest.importorskip("jax")
    layer = stax.serial(stax.Dense(4), stax.Elementwise(fn=lambda x: x ** 3, name="cube"), stax.Dense(1))
    with pytest.raises(UnsupportedArchitectureError, match="'cube' has no closed-form"):
        layer.kernel_fn(np.ones((2, 3)))
    with pytest.raises(UnsupportedArchitectureError, match="'cube' has no closed-form"):
        diag_stats(layer, np.ones((2, 3)))
    # the finite network still exists
    init_fn, apply_fn, _ = layer
    _, params = init_fn(import_jax.random.PRNGKey(0), (2, 3))
    assert apply_fn(params, np.ones((2, 3), np.float32)).shape == (2, 1)
    # a spec names it but cannot rebuild it
    with pytest.raises(UnsupportedArchitectureError, match="cannot be rebuilt"):
        from_spec(spec_of(layer))


def test_elementwise_with_kernel_matches_builtin():
    # A user Elementwise carrying ReLU's closed forms reproduces the built-in Relu (generic path).
    def nngp_fn(q, v1, v2):
        root = np.sqrt(np.maximum(v1 * v2 - q * q, 0.0))
        theta = np.arctan2(root, q)
        return (root + (np.pi - theta) * q) / (2 * np.pi)

    def d_nngp_fn(q, v1, v2):
        root = np.sqrt(np.maximum(v1 * v2 - q * q, 0.0))
        return (np.pi - np.arctan2(root, q)) / (2 * np.pi)

    user = stax.Elementwise(fn=lambda x: np.maximum(x, 0), nngp_fn=nngp_fn, d_nngp_fn=d_nngp_fn, name="myrelu")
    x = np.random.default_rng(1).standard_normal((9, 4))
    a = stax.serial(stax.Dense(4, W_std=1.4, b_std=0.1), user, stax.Dense(1)).kernel_fn(x)
    b = stax.serial(stax.Dense(4, W_std=1.4, b_std=0.1), stax.Relu(), stax.Dense(1)).kernel_fn(x)
    np.testing.assert_allclose(a.nngp, b.nngp, rtol=1e-13)
    np.testing.assert_allclose(a.ntk, b.ntk, rtol=1e-13)


def test_unknown_spec():
    with pytest.raises(UnsupportedArchitectureError, match="unknown layer in spec"):
        from_spec({"layer": "Attention", "n_heads": 3})


@pytest.mark.parametrize("arch", [
    stax.serial(stax.Relu(), stax.Dense(1)),                                    # raw inputs
    stax.serial(stax.Dense(4), stax.Relu(), stax.Erf(), stax.Dense(1)),         # an activation's output
    stax.serial(stax.Dense(4), stax.Relu(), stax.FanOut(2),                     # a residual sum that
                stax.parallel(stax.Dense(4), stax.Identity()), stax.FanInSum(),  # carries one
                stax.Relu(), stax.Dense(1)),
])
def test_nonlinearity_needs_gaussian_inputs(arch):
    """Closed forms assume Gaussian pre-activations; elsewhere they are not the wide net's
    kernel (the residual case is 71 % off a Monte Carlo estimate), so it is refused, before
    any work, as neural-tangents does."""
    from ntkscale.tiling import build_gram

    x = np.random.default_rng(0).standard_normal((4, 3))
    with pytest.raises(UnsupportedArchitectureError, match="non-Gaussian inputs.*Dense or Conv"):
        arch.kernel_fn(x)
    with pytest.raises(UnsupportedArchitectureError, match="non-Gaussian"):
        build_gram(arch, x, "memory://gauss", client="sync")
    # linear layers on anything are fine, and so is the same block after a Dense
    ok = stax.serial(stax.Dense(4), stax.Relu(), stax.Dense(4), stax.FanOut(2),
                     stax.parallel(stax.serial(stax.Relu(), stax.Dense(4)), stax.Identity()),
                     stax.FanInSum(), stax.Relu(), stax.Dense(1))
    assert np.all(np.isfinite(ok.kernel_fn(x, None, "ntk")))
