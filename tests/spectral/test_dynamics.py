"""Gradient flow / GD on MSE and the NTK-GP ensemble vs direct linear algebra."""

from __future__ import annotations

import numpy as np
import pytest

from ntkscale.spectral import gradient_descent, gradient_flow, mse_loss, ntk_gp

N_TR, N_TE, C = 12, 5, 3


def _kernels(rank: int | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """Joint PSD NTK and NNGP on train + test points from explicit feature maps."""
    rng = np.random.default_rng(seed)
    tot = N_TR + N_TE
    feats = rng.normal(size=(tot, rank or 3 * tot))
    theta = feats @ feats.T / feats.shape[1]
    g = rng.normal(size=(tot, 3 * tot))
    nngp = g @ g.T / g.shape[1]
    s, v = np.linalg.eigh(theta[:N_TR, :N_TR])
    return {"s": s, "v": v, "th": theta[:N_TR, :N_TR], "thx": theta[N_TR:, :N_TR],
            "kk": nngp[:N_TR, :N_TR], "kx": nngp[N_TR:, :N_TR], "kxx": nngp[N_TR:, N_TR:],
            "y": rng.normal(size=(N_TR, C)), "f0": rng.normal(size=(N_TR, C)),
            "f0x": rng.normal(size=(N_TE, C))}


def _flow(d: dict, t, **kw):
    return gradient_flow(d["s"], d["v"], d["y"], t, f0_train=d["f0"], f0_test=d["f0x"],
                         k_test_train=d["thx"], **kw)


def test_t0_and_infinity() -> None:
    d = _kernels()
    out = _flow(d, np.array([0.0, np.inf]))
    # Decay factor is exactly 1; y + V V^T (f0 - y) returns f0 up to rotation round-off.
    np.testing.assert_allclose(out.train[0], d["f0"], atol=1e-13)
    np.testing.assert_array_equal(out.test[0], d["f0x"])  # phi is exactly 0
    krr = d["f0x"] + d["thx"] @ np.linalg.solve(d["th"], d["y"] - d["f0"])
    # Converged = kernel regression; cond(Theta) ~ 1e2 here, so eigh vs solve agree to ~1e-13.
    np.testing.assert_allclose(out.train[1], d["y"], atol=1e-12)
    np.testing.assert_allclose(out.test[1], krr, rtol=1e-10, atol=1e-12)
    # A large finite time reaches the same point (s_min t/N ~ 60 -> e^-60 residual).
    t_big = 60 * d["y"].size / d["s"].min()
    np.testing.assert_allclose(_flow(d, t_big).test, krr, rtol=1e-10, atol=1e-12)
    assert out.train_loss[0] == pytest.approx(mse_loss(d["f0"], d["y"]), rel=1e-15)


def test_per_mode_exponential_decay() -> None:
    d = _kernels()
    t = np.array([0.5, 3.0, 20.0])
    out = _flow(d, t)
    n_total = d["y"].size  # N = n * C (neural-tangents)
    r0 = d["v"].T @ (d["f0"] - d["y"])
    for i, ti in enumerate(t):
        rt = d["v"].T @ (out.train[i] - d["y"])
        np.testing.assert_allclose(rt, np.exp(-d["s"] * ti / n_total)[:, None] * r0,
                                   rtol=1e-10, atol=1e-13)  # round-off of two rotations
        assert out.train_loss[i] == pytest.approx(0.5 * np.mean((out.train[i] - d["y"]) ** 2))


def test_test_predictions_solve_the_ode() -> None:
    """d f_x/dt = -(1/N) Theta_xX (f_X - y): compare with a central difference in t."""
    d = _kernels()
    t, h = 4.0, 1e-4
    out = _flow(d, np.array([t - h, t, t + h]))
    lhs = (out.test[2] - out.test[0]) / (2 * h)
    rhs = -d["thx"] @ (out.train[1] - d["y"]) / d["y"].size
    np.testing.assert_allclose(lhs, rhs, rtol=1e-6, atol=1e-9)  # O(h^2) + O(eps/h)


def test_gd_matches_direct_iteration() -> None:
    d = _kernels()
    n_total = d["y"].size
    lr = 1.7 * n_total / d["s"].max()  # top modes overshoot (1 - u < 0) but converge
    steps = np.array([0, 1, 7, 50])
    out = gradient_descent(d["s"], d["v"], d["y"], lr, steps, f0_train=d["f0"],
                           f0_test=d["f0x"], k_test_train=d["thx"])
    f, fx = d["f0"].copy(), d["f0x"].copy()
    for k in range(steps.max() + 1):
        if k in steps:
            i = int(np.flatnonzero(steps == k)[0])
            # Iterating accumulates ~k eps of round-off; 1e-11 absolute on O(1) outputs.
            np.testing.assert_allclose(out.train[i], f, atol=1e-11)
            np.testing.assert_allclose(out.test[i], fx, atol=1e-11)
        g = (f - d["y"]) / n_total
        f, fx = f - lr * d["th"] @ g, fx - lr * d["thx"] @ g
    np.testing.assert_array_equal(out.t, lr * steps)
    with pytest.raises(ValueError, match="learning_rate"):
        gradient_descent(d["s"], d["v"], d["y"], 2.0 * n_total / d["s"].max(), 3)


def test_gd_small_steps_approach_flow() -> None:
    d = _kernels()
    n_total = d["y"].size
    lr = 1e-5 * n_total / d["s"].max()
    steps = np.array([10**5, 10**6, 10**7])
    gd = gradient_descent(d["s"], d["v"], d["y"], lr, steps, f0_train=d["f0"],
                          f0_test=d["f0x"], k_test_train=d["thx"])
    gf = _flow(d, lr * steps)
    # (1 - u)^k / e^{-uk} = e^{-k u^2/2 + ...}: relative gap <= (s t/N) u/2 <= 1e-5 * s_max t/N.
    np.testing.assert_allclose(gd.train, gf.train, rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(gd.test, gf.test, rtol=1e-3, atol=1e-6)


def test_zero_eigenvalues() -> None:
    d = _kernels(rank=6)  # Theta_XX has rank 6 < 12
    out = _flow(d, np.array([5.0, np.inf]))
    s = d["s"]
    null = d["v"][:, s <= 1e-12 * s.max()]
    # Null-space residual never moves; the converged test prediction is the pinv solution.
    np.testing.assert_allclose(null.T @ (out.train[1] - d["y"]), null.T @ (d["f0"] - d["y"]),
                               atol=1e-12)
    pinv = d["f0x"] + d["thx"] @ np.linalg.pinv(d["th"], rcond=1e-10) @ (d["y"] - d["f0"])
    np.testing.assert_allclose(out.test[1], pinv, rtol=1e-8, atol=1e-10)
    # The (1 - e^{-s t/N})/s factor near s = 0, with a diagonal Theta and rcond=0 so a tiny
    # eigenvalue stays: must equal (t/N)(1 - x/2 + x^2/6) to ~eps (naive 1 - exp loses ~1e-4).
    t, n_total = 7.0, 2
    kx = np.array([[1.0, 1.0]])
    y = np.array([1.0, 2.0])
    for tiny in (0.0, 1e-12):
        o = gradient_flow(np.array([tiny, 1.0]), np.eye(2), y, t, k_test_train=kx, rcond=0.0)
        x = tiny * t / n_total
        expected = (t / n_total) * (1 - x / 2 + x * x / 6) * y[0] - np.expm1(-t / 2) * y[1]
        assert o.test[0] == pytest.approx(expected, rel=1e-14)


def test_ntk_gp_limits() -> None:
    d = _kernels()
    args = (d["s"], d["v"], d["thx"], d["kk"], d["kx"], d["kxx"], d["y"])
    mean, cov = ntk_gp(*args, np.array([0.0, np.inf]))
    np.testing.assert_array_equal(cov[0], d["kxx"])  # A_0 = 0: the NNGP prior, exactly
    np.testing.assert_array_equal(mean[0], 0.0)
    a = d["thx"] @ np.linalg.inv(d["th"])
    closed = d["kxx"] + a @ d["kk"] @ a.T - (a @ d["kx"].T + d["kx"] @ a.T)  # Lee et al. Eq. 16
    # cond(Theta) ~ 1e2: inv vs eigh differ at ~1e-13 relative.
    np.testing.assert_allclose(cov[1], closed, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(mean[1], a @ d["y"], rtol=1e-9, atol=1e-11)


def test_ntk_gp_covariance_matches_linear_map_of_prior() -> None:
    """At finite t, f_x(t) is linear in the initial outputs: propagate the prior through it."""
    d = _kernels(seed=1)
    t = 3.0
    # Columns of the map (f0_X, f0_x) -> f_x(t) with y = 0, one output, by unit impulses.
    cols = []
    for j in range(N_TR + N_TE):
        e = np.zeros(N_TR + N_TE)
        e[j] = 1.0
        o = gradient_flow(d["s"], d["v"], np.zeros(N_TR), t, f0_train=e[:N_TR],
                          f0_test=e[N_TR:], k_test_train=d["thx"])
        cols.append(o.test)
    lin = np.stack(cols, axis=1)  # shape: (m, n + m)
    joint = np.block([[d["kk"], d["kx"].T], [d["kx"], d["kxx"]]])
    # One output everywhere, so N = n in both calls (same time scale). Linear algebra only.
    mean, cov = ntk_gp(d["s"], d["v"], d["thx"], d["kk"], d["kx"], d["kxx"], d["y"][:, 0], t)
    np.testing.assert_allclose(cov, lin @ joint @ lin.T, rtol=1e-10, atol=1e-12)
    flow = gradient_flow(d["s"], d["v"], d["y"][:, 0], t, k_test_train=d["thx"])
    np.testing.assert_allclose(mean, flow.test, rtol=1e-12, atol=1e-14)  # f0 = 0: same mean
