"""The empirical NTK against a hand-written Jacobian, its methods against each other, its
output conventions, pytree parameters, and input checks before any work."""

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = jax.numpy

from ntkscale import empirical as E  # noqa: E402
from ntkscale.empirical import ntk as ntk_mod  # noqa: E402

from .conftest import tanh_apply, tanh_jacobian, tanh_params  # noqa: E402

METHODS = ("jacobian", "ntvp")
RNG = np.random.default_rng(1)
X1, X2 = RNG.standard_normal((7, 3)), RNG.standard_normal((5, 3))


def _hand(p, x1, x2):
    """Theta[i, j, o, q] = <J(x1)_io, J(x2)_jq> from the hand Jacobian."""
    return np.einsum("iop,jqp->ijoq", tanh_jacobian(p, x1), tanh_jacobian(p, x2))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("batch", [None, 3])
def test_methods_match_hand_jacobian(f64, method, batch):
    p = tanh_params()
    full = _hand(p, X1, X2)  # (7, 5, 2, 2)
    got = {t: np.asarray(E.empirical_ntk(tanh_apply, p, X1, X2, method=method, trace=t, batch_size=batch))
           for t in (True, "diagonal", False)}
    assert got[False].shape == (7, 5, 2, 2) and got["diagonal"].shape == (7, 5, 2)
    np.testing.assert_allclose(got[False], full, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(got["diagonal"], np.einsum("ijoo->ijo", full), rtol=1e-12, atol=1e-13)
    # neural-tangents' convention: the mean over outputs, not the sum
    np.testing.assert_allclose(got[True], np.einsum("ijoo->ij", full) / 2, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("method", METHODS)
def test_symmetric_blocks_and_diagonal(f64, method):
    p = tanh_params(seed=2)
    full = _hand(p, X1, X1)
    for batch in (None, 3):  # 7 rows in blocks of 3: mirrored lower blocks, a padded edge block
        sym = np.asarray(E.empirical_ntk(tanh_apply, p, X1, method=method, trace=False, batch_size=batch))
        np.testing.assert_allclose(sym, full, rtol=1e-12, atol=1e-13)
    d = np.asarray(E.empirical_ntk_diag(tanh_apply, p, X1, method=method, trace="diagonal", batch_size=3))
    np.testing.assert_allclose(d, np.einsum("iioo->io", full), rtol=1e-12)
    np.testing.assert_allclose(E.empirical_ntk_diag(tanh_apply, p, X1, method=method),
                               np.einsum("iioo->i", full) / 2, rtol=1e-12)


def test_ntk_vector_product(f64):
    p = tanh_params(seed=3)
    v = RNG.standard_normal((5, 2))
    want = np.einsum("ijoq,jq->io", _hand(p, X1, X2), v)
    np.testing.assert_allclose(E.ntk_vector_product(tanh_apply, p, X1, X2, v), want, rtol=1e-12)
    with pytest.raises(ValueError, match=r"v must have shape \(5, 2\)"):
        E.ntk_vector_product(tanh_apply, p, X1, X2, v[:, 0])


def test_vector_outputs_have_one_output(f64):
    p = tanh_params(k=1, seed=4)
    apply1 = lambda q, x: tanh_apply(q, x)[:, 0]  # noqa: E731  outputs of shape (n,)
    full = _hand(p, X1, X2)[:, :, 0, 0]
    for method in METHODS:
        np.testing.assert_allclose(E.empirical_ntk(apply1, p, X1, X2, method=method), full, rtol=1e-12)
        assert E.empirical_ntk(apply1, p, X1, X2, method=method, trace=False).shape == (7, 5, 1, 1)


def test_float32_methods_agree():
    # default JAX precision (float32): both methods and the old network.empirical_ntk agree
    from ntkscale import stax
    from ntkscale.kernels.network import empirical_ntk as reference

    init_fn, apply_fn, _ = stax.serial(stax.Dense(32, W_std=1.5, b_std=0.1), stax.Erf(),
                                       stax.Dense(3, W_std=1.5, b_std=0.1))
    _, params = init_fn(jax.random.PRNGKey(0), X1.shape)
    ref = np.asarray(jax.jit(lambda q: reference(apply_fn, q, X1, X2))(params))
    for method in METHODS:
        np.testing.assert_allclose(E.empirical_ntk(apply_fn, params, X1, X2, method=method), ref,
                                   rtol=2e-5, atol=1e-6)


# --------------------------------------------------------------------- pytree params
def _flax_like_apply(variables, x):
    """The tanh model with Flax's nested {'params': {'Dense_0': {'kernel', 'bias'}, ...}}."""
    p = variables["params"]
    d, h = p["Dense_0"]["kernel"].shape
    hidden = jnp.tanh(x @ p["Dense_0"]["kernel"] / np.sqrt(d) + p["Dense_0"]["bias"])
    return hidden @ p["Dense_1"]["kernel"] / np.sqrt(h)


@jax.tree_util.register_pytree_node_class
class _Module:
    """Equinox-style callable pytree: arrays, a function leaf and an integer counter leaf."""

    def __init__(self, W, b, V, act, count):
        self.W, self.b, self.V, self.act, self.count = W, b, V, act, count

    def tree_flatten(self):
        return (self.W, self.b, self.V, self.act, self.count), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(*children)

    def __call__(self, x):
        d, h = self.W.shape
        return self.act(x @ self.W / np.sqrt(d) + self.b) @ self.V / np.sqrt(h) + 0 * self.count


def test_pytree_params(f64):
    p = tanh_params(seed=5)
    want = np.einsum("ijoo->ij", _hand(p, X1, X2)) / 2
    flax = {"params": {"Dense_0": {"kernel": p["W"], "bias": p["b"]}, "Dense_1": {"kernel": p["V"]}}}
    module = _Module(jnp.asarray(p["W"]), jnp.asarray(p["b"]), jnp.asarray(p["V"]), jnp.tanh,
                     jnp.asarray(3, dtype=jnp.int32))
    for method in METHODS:
        np.testing.assert_allclose(E.empirical_ntk(_flax_like_apply, flax, X1, X2, method=method), want,
                                   rtol=1e-12)
        # the function leaf is static, the integer leaf is passed through undifferentiated
        np.testing.assert_allclose(E.empirical_ntk(lambda m, x: m(x), module, X1, X2, method=method), want,
                                   rtol=1e-12)
    tuple_params = ((p["W"], p["b"]), (p["V"],))  # tuples and lists work the same
    tuple_apply = lambda q, x: tanh_apply({"W": q[0][0], "b": q[0][1], "V": q[1][0]}, x)  # noqa: E731
    np.testing.assert_allclose(E.empirical_ntk(tuple_apply, tuple_params, X1, X2), want, rtol=1e-12)


# ---------------------------------------------------------------- errors before work
@pytest.fixture
def no_work(monkeypatch):
    def fail(*a, **k):
        raise AssertionError("computation started before the inputs were checked")

    monkeypatch.setattr(ntk_mod, "gram", fail)
    monkeypatch.setattr(ntk_mod, "diagonal", fail)


def test_bad_inputs_fail_before_work(no_work):
    p = tanh_params()
    bad = X1.copy()
    bad[4, 1] = np.nan
    cases = [
        (dict(x1=bad), ValueError, r"x1 has NaN or Inf in 1 row\(s\): 4"),
        (dict(x2=np.full((2, 3), np.inf)), ValueError, r"x2 has NaN or Inf in 2 row\(s\): 0, 1"),
        (dict(x2=RNG.standard_normal((5, 4))), ValueError, r"x1 rows have shape \(3,\) but x2 rows \(4,\)"),
        (dict(x1=np.float64(1.0)), ValueError, "array of input rows"),
        (dict(x1=X1.astype(complex)), TypeError, "unsupported dtype complex"),
        (dict(apply_fn=lambda q, x: tanh_apply(q, x)[:, :, None]), ValueError,
         r"must return an array of shape \(7,\) or \(7, k\).*got \(7, 2, 1\)"),
        (dict(apply_fn=lambda q, x: tanh_apply(q, x).sum(0)), ValueError, r"got \(2,\)"),
        (dict(apply_fn=lambda q, x: (tanh_apply(q, x), 0)), ValueError, "got a tuple"),
        (dict(apply_fn=lambda q, x: (tanh_apply(q, x) > 0)), ValueError, "floating-point outputs"),
        (dict(apply_fn=lambda q, x: x @ q["nope"]), ValueError, "apply_fn.*failed.*KeyError"),
        (dict(params={**p, "V": np.full((5, 2), np.nan)}), ValueError, "params has NaN or Inf"),
        (dict(params={"steps": np.arange(3)}), ValueError, "no floating-point array leaves"),
        (dict(method="svd"), ValueError, "method must be one of"),
        (dict(trace="sum"), ValueError, "trace must be True"),
        (dict(batch_size=0), ValueError, "batch_size must be a positive int"),
        (dict(memory=-1), ValueError, "memory must be a positive number"),
        (dict(apply_fn="model"), TypeError, "apply_fn must be a function"),
    ]
    for over, exc, match in cases:
        kw = dict(apply_fn=tanh_apply, params=p, x1=X1, x2=X2)
        kw.update(over)
        args = (kw.pop("apply_fn"), kw.pop("params"), kw.pop("x1"), kw.pop("x2"))
        with pytest.raises(exc, match=match):
            E.empirical_ntk(*args, **kw)
    with pytest.raises(ValueError, match="x1 has NaN"):
        E.empirical_ntk_diag(tanh_apply, p, bad)


# ------------------------------------------------------------------------ memory rules
def test_memory_rules(f64, monkeypatch):
    from ntkscale.empirical import memory as mem

    # tanh model: P = 3*5 + 5 + 5*2 = 30 parameters, k = 2 outputs, float64: 480 B per row
    assert E.jacobian_bytes_per_row(30, 2, 8) == 480
    assert E.choose_method("auto", 30, 2, 8, memory=16 * 480) == "jacobian"  # 8 rows per side fit
    assert E.choose_method("auto", 30, 2, 8, memory=16 * 480 - 1) == "ntvp"
    assert E.choose_method("ntvp", 30, 2, 8, memory=1 << 40) == "ntvp"
    assert E.choose_batch("jacobian", 30, 2, 8, n_rows=100, memory=10 * 480) == 5
    assert E.choose_batch("ntvp", 30, 2, 8, n_rows=100, memory=10 * 480) == 10  # k x more rows
    assert E.choose_batch("jacobian", 30, 2, 8, n_rows=3, memory=1 << 30) == 3
    assert E.choose_batch("jacobian", 30, 2, 8, n_rows=100, batch_size=7) == 7
    with pytest.warns(ResourceWarning, match="over the memory budget"):
        assert E.choose_batch("jacobian", 30, 2, 8, n_rows=100, memory=100) == 1
    # auto under a tight budget takes ntvp in small blocks, and gives the same kernel
    p = tanh_params(seed=6)
    want = np.einsum("ijoo->ij", _hand(p, X1, X2)) / 2
    seen = []
    real = ntk_mod.gram

    def spy(model, x1, x2, mode, method, batch, memory=mem.DEFAULT_MEMORY):
        seen.append((method, batch))
        return real(model, x1, x2, mode, method, batch, memory)

    monkeypatch.setattr(ntk_mod, "gram", spy)
    got = E.empirical_ntk(tanh_apply, p, X1, X2, memory=3 * 2 * 30 * 8)  # 3 tangents per side
    assert seen == [("ntvp", 3)]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    E.empirical_ntk(tanh_apply, p, X1, X2)
    assert seen[-1] == ("jacobian", 7)
