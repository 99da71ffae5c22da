"""Lanczos training dynamics (solvers.krylov / solvers.dynamics) against independent oracles.

Oracles: the eigendecomposition formulas of ``spectral.dynamics`` (``np.linalg.eigh``),
a Cholesky solve for the converged (kernel regression) limit, ``scipy``'s
``expm_multiply`` for the decay, and the GD recurrence iterated directly. Grams are
infinite-width ReLU NTKs (``stax`` kernel_fn) of points on the sphere of radius sqrt(d),
d = 8: condition numbers 1e3 (n = 300) to 1e4 (n = 1500).

Tolerance 1e-8 relative (Frobenius, per time) with the Lanczos tol 1e-10: both sides are
float64; ``eigh`` rotations cost ~n eps ~ 1e-13, and the Lanczos result is exact up to its
stopping change (1e-10, relative to ||r|| for the decay and to the result for phi) times
at most ~cond / (number of steps) amplification, which the measured errors (<= 2e-11)
confirm. Measured passes (Lanczos steps, one ``matvec`` of an (n, 3) block each):
75 / 90 / 108 for n = 300 / 800 / 1500 -- growing slowly, far from n.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg as sla
from scipy.sparse.linalg import expm_multiply

from ntkscale import stax
from ntkscale.operator import DenseGram, StoredGram
from ntkscale.solvers.dynamics import gradient_descent_op, gradient_flow_op
from ntkscale.errors import ConvergenceWarning, NotConvergedError
from ntkscale.solvers.krylov import krylov_flow, lanczos_matfuncs
from ntkscale.spectral import gradient_descent, gradient_flow

D, M, C = 8, 40, 3
RTOL = 1e-8


def _ntk(n_total: int, seed: int = 0) -> np.ndarray:
    """Joint NTK of ``n_total`` points on the sphere of radius sqrt(D) (depth-2 ReLU net)."""
    X = np.random.default_rng(seed).standard_normal((n_total, D))
    X *= np.sqrt(D) / np.linalg.norm(X, axis=1, keepdims=True)
    net = stax.serial(stax.Dense(512, W_std=2 ** 0.5, b_std=0.1), stax.Relu(),
                      stax.Dense(512, W_std=2 ** 0.5, b_std=0.1), stax.Relu(),
                      stax.Dense(1, W_std=2 ** 0.5, b_std=0.1))
    return np.asarray(net.kernel_fn(X, None, "ntk"), dtype=np.float64)


def _problem(n: int, seed: int = 0, duplicates: int = 0) -> dict:
    """Train Gram (n + duplicates), test-train block, targets and initial outputs."""
    kk = _ntk(n + M, seed)
    idx = np.concatenate([np.arange(n), np.arange(duplicates)])  # exact duplicate rows/cols
    rng = np.random.default_rng(seed + 1)
    nn = idx.size
    return {"K": kk[np.ix_(idx, idx)], "Kx": kk[n:][:, idx], "y": rng.standard_normal((nn, C)),
            "f0": 0.3 * rng.standard_normal((nn, C)), "f0x": 0.3 * rng.standard_normal((M, C))}


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _assert_close_per_time(got: np.ndarray, want: np.ndarray, rtol: float, what: str) -> None:
    for i, (g, w) in enumerate(zip(got, want)):
        assert _rel(g, w) < rtol, f"{what}[{i}]: relative error {_rel(g, w):.2e} >= {rtol:g}"


@pytest.mark.parametrize("n", [300, 800, 1500])
def test_flow_matches_eigendecomposition(n: int) -> None:
    p = _problem(n)
    s, v = np.linalg.eigh(p["K"])
    N = p["y"].size
    t = np.array([0.0, 1.0, 100.0, 1e4, 40 * N / s[0], np.inf])  # 40 N/s_min: converged
    ref = gradient_flow(s, v, p["y"], t, f0_train=p["f0"], f0_test=p["f0x"], k_test_train=p["Kx"])
    out, info = gradient_flow_op(DenseGram(p["K"]), p["y"], t, p["f0"], p["f0x"], p["Kx"],
                                 tol=1e-10, return_info=True)
    print(f"n={n}: {info.passes} passes, estimate {info.estimate:.1e}, steps {info.steps}")
    assert info.converged and info.estimate <= 1e-10
    assert info.passes <= 0.25 * n  # measured 75 / 90 / 108: far below n
    _assert_close_per_time(out.train, ref.train, RTOL, "train")
    np.testing.assert_array_equal(out.test[0], p["f0x"])  # phi = 0 exactly at t = 0
    _assert_close_per_time(out.test[1:] - p["f0x"], ref.test[1:] - p["f0x"], RTOL, "test move")
    np.testing.assert_allclose(out.train_loss, ref.train_loss, rtol=RTOL)
    np.testing.assert_allclose(out.train[0], p["f0"], rtol=0, atol=1e-13)  # t = 0: f0


def test_infinite_time_is_kernel_regression() -> None:
    """Independent of eigh: t = inf equals f0 + K_xX K^-1 (y - f0) by Cholesky."""
    p = _problem(600, seed=3)
    out = gradient_flow_op(p["K"], p["y"], np.inf, p["f0"], p["f0x"], p["Kx"])
    krr = p["f0x"] + p["Kx"] @ sla.solve(p["K"], p["y"] - p["f0"], assume_a="pos")
    assert _rel(out.test - p["f0x"], krr - p["f0x"]) < RTOL  # cond(K) ~ 5e3: solve ~1e-12
    np.testing.assert_allclose(out.train, p["y"], rtol=0, atol=1e-12)  # interpolation
    assert out.train_loss.shape == (1,) and out.train_loss[0] < 1e-24


def test_decay_matches_expm_multiply() -> None:
    """A second algorithm for exp(-t K / N) R: scipy's truncated Taylor (Al-Mohy & Higham)."""
    p = _problem(300, seed=5)
    R = p["f0"] - p["y"]
    N = R.size
    t = np.array([3.0, 300.0, 3000.0])  # ||t K / N|| up to ~400 (scipy's cost grows with it)
    res = krylov_flow(p["K"], R, t, 1.0 / N, phi=False, tol=1e-12)
    for i, ti in enumerate(t):
        want = expm_multiply(-(ti / N) * p["K"], R)
        assert _rel(res.values[i], want) < 1e-10


def test_singular_gram_duplicate_rows() -> None:
    """K with 60 exactly repeated rows/columns (rank n): null modes keep their residual, the
    test points ignore them, and t = inf is the pseudo-inverse (minimum norm) solution."""
    p = _problem(500, seed=2, duplicates=60)
    K, Kx = p["K"], p["Kx"]
    s, v = np.linalg.eigh(K)
    assert np.sum(s < 1e-12 * s[-1]) == 60
    N = p["y"].size
    s_min = s[60]  # smallest nonzero eigenvalue
    t = np.array([0.0, 10.0, 1e3, 40 * N / s_min, np.inf])
    ref = gradient_flow(s, v, p["y"], t, f0_train=p["f0"], f0_test=p["f0x"], k_test_train=Kx)
    out, info = gradient_flow_op(K, p["y"], t, p["f0"], p["f0x"], Kx, return_info=True)
    assert info.converged
    _assert_close_per_time(out.train, ref.train, RTOL, "train")
    _assert_close_per_time(out.test[1:] - p["f0x"], ref.test[1:] - p["f0x"], RTOL, "test move")
    # t = inf against lstsq (SVD pseudo-inverse), and the residual left in the null space
    pinv_move = Kx @ np.linalg.lstsq(K, p["y"] - p["f0"], rcond=1e-10)[0]
    assert _rel(out.test[-1] - p["f0x"], pinv_move) < RTOL
    null = v[:, :60]
    want_train = p["y"] + null @ (null.T @ (p["f0"] - p["y"]))
    assert _rel(out.train[-1], want_train) < RTOL


def test_gradient_descent_matches_eigh_and_iteration() -> None:
    p = _problem(500, seed=4)
    K, Kx, y, f0, f0x = p["K"], p["Kx"], p["y"], p["f0"], p["f0x"]
    s, v = np.linalg.eigh(K)
    N = y.size
    lr = 1.7 * N / s[-1]  # top modes overshoot (1 - u < 0) but converge
    steps = np.array([0, 1, 7, 100, 20000])
    ref = gradient_descent(s, v, y, lr, steps, f0_train=f0, f0_test=f0x, k_test_train=Kx)
    out = gradient_descent_op(DenseGram(K), y, lr, steps, f0, f0x, Kx)
    _assert_close_per_time(out.train, ref.train, RTOL, "train")
    _assert_close_per_time(out.test[1:] - f0x, ref.test[1:] - f0x, RTOL, "test move")
    np.testing.assert_allclose(out.t, lr * steps)
    f, fx = f0.copy(), f0x.copy()  # the recurrence itself, 7 steps
    for _ in range(7):
        f, fx = f - (lr / N) * K @ (f - y), fx - (lr / N) * Kx @ (f - y)
    assert _rel(out.train[2], f) < 1e-12 and _rel(out.test[2] - f0x, fx - f0x) < 1e-12
    with pytest.raises(ValueError, match="learning rate too large"):
        gradient_descent_op(K, y, 2.05 * N / s[-1], steps)


def test_shapes_single_output_and_cross_operators() -> None:
    p = _problem(300, seed=6)
    y, f0, f0x = p["y"][:, 0], p["f0"][:, 0], p["f0x"][:, 0]
    calls = []

    def cross(V: np.ndarray) -> np.ndarray:
        calls.append(V.shape)
        return p["Kx"] @ V

    t = np.array([0.5, 50.0, np.inf])
    out = gradient_flow_op(p["K"], y, t, f0, f0x, cross)
    assert calls == [(300, 3)]  # one product with K(x, X) for all times
    assert out.train.shape == (3, 300) and out.test.shape == (3, M)
    ref = gradient_flow_op(p["K"], y, t, f0, f0x, DenseGram(p["Kx"]))  # operator with matvec
    np.testing.assert_allclose(out.test, ref.test, rtol=1e-14)
    one = gradient_flow_op(p["K"], y, 50.0, f0, f0x, p["Kx"])  # scalar t: no time axis
    assert one.train.shape == (300,) and one.test.shape == (M,)
    np.testing.assert_allclose(one.test, out.test[1], rtol=1e-9)
    with pytest.raises(ValueError, match="without k_test_train"):
        gradient_flow_op(p["K"], y, 1.0, f0, f0x)
    with pytest.raises(ValueError, match=r"shape \(m, 300\)"):
        gradient_flow_op(p["K"], y, 1.0, k_test_train=p["Kx"][:, :-1])
    with pytest.raises(ValueError, match="t must be"):
        gradient_flow_op(p["K"], y, -1.0)


class _Counting:
    """A dense operator that records the block width of every matvec."""

    def __init__(self, K: np.ndarray):
        self.K, self.shape, self.widths = K, K.shape, []

    def matvec(self, V: np.ndarray) -> np.ndarray:
        self.widths.append(V.shape[1])
        return self.K @ V


def test_one_pass_per_step_and_zero_columns() -> None:
    p = _problem(300, seed=7)
    R = np.column_stack([p["y"][:, 0], np.zeros(300), p["y"][:, 1]])
    op = _Counting(p["K"])
    res = krylov_flow(op, R, [1.0, np.inf], 1.0 / R.size)
    assert res.passes == len(op.widths) == res.steps.max()
    assert max(op.widths) <= 2  # the zero column never enters a matvec
    assert res.steps[1] == 0 and np.all(res.values[:, :, 1] == 0)


def test_estimate_tracks_error_and_maxiter() -> None:
    p = _problem(800, seed=8)
    R = p["y"] - p["f0"]
    t = np.array([10.0, np.inf])
    exact = krylov_flow(p["K"], R, t, 1.0 / R.size, tol=1e-12).values
    loose = krylov_flow(p["K"], R, t, 1.0 / R.size, tol=1e-5)
    err = max(_rel(loose.values[i], exact[i]) for i in (0, 2, 3))  # [1] = 0: K is nonsingular
    assert loose.estimate <= 1e-5 and err < 1e-4  # the a-posteriori change is a fair estimate
    assert loose.passes < krylov_flow(p["K"], R, t, 1.0 / R.size, tol=1e-10).passes
    with pytest.warns(ConvergenceWarning, match="maxiter"):
        short = krylov_flow(p["K"], R, t, 1.0 / R.size, maxiter=10)
    assert not short.converged and short.passes == 10
    with pytest.raises(NotConvergedError):
        krylov_flow(p["K"], R, t, 1.0 / R.size, maxiter=10, raise_on_fail=True)


def test_small_n_exact_and_errors() -> None:
    """n steps span the whole space: the result is exact even for an exotic function."""
    rng = np.random.default_rng(9)
    A = rng.standard_normal((30, 30))
    K = A @ A.T
    R = rng.standard_normal((30, 2))
    s, v = np.linalg.eigh(K)
    res = lanczos_matfuncs(K, R, lambda th: np.sqrt(th)[None, :], tol=1e-300)
    np.testing.assert_allclose(res.values[0], v @ (np.sqrt(s)[:, None] * (v.T @ R)), atol=1e-9)
    assert res.estimate == 0.0 and res.converged  # an invariant Krylov space is exact
    with pytest.raises(ValueError, match="not positive semidefinite"):
        krylov_flow(-K, R, 1.0)
    with pytest.raises(ValueError, match="rows but the Gram"):
        krylov_flow(K, R[:-1], 1.0)
    with pytest.raises(TypeError, match="Gram operator"):
        krylov_flow([[1.0]], [1.0], 1.0)


def test_stored_gram_one_pass_per_step(gram300) -> None:
    """The same dynamics through a Zarr-stored Gram (tiles of 64, in-process): identical to
    the in-memory operator, and every Lanczos step is one streaming pass for all outputs."""
    with StoredGram(gram300, client="sync") as op:
        K = op.to_numpy()
        rng = np.random.default_rng(10)
        y, f0 = rng.standard_normal((300, 2)), rng.standard_normal((300, 2))
        t = np.array([1.0, 1e3, np.inf])
        out, info = gradient_flow_op(op, y, t, f0, return_info=True)
        assert op.passes == info.passes == info.steps.max()
    ref = gradient_flow_op(DenseGram(K), y, t, f0)
    np.testing.assert_allclose(out.train, ref.train, rtol=1e-12, atol=1e-12)
