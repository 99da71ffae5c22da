"""Ridge 0 through the tiled path (what ``solver='auto'`` gives beyond memory) against the
float64 minimum-norm predictions, on digits with injected duplicates; the solver says when
it had to regularize (benchmarks/bench_ridgeless.py measures the same at n = 4000 and 20 000).

Tolerances (relative test-prediction difference). A jitter ε gives ``α_ε = (K + εI)⁻¹ y``; on
range(K) its predictions differ from the min-norm ones by at most ``ε / λ_min⁺`` (relative to the
mean diagonal: 1e-10 / 0.04 here; measured 0.9 ε_rel). The null directions of exact duplicates
(``e_i − e_j``) get coefficients up to ``|vᵀy| / ε``, seen by a test point only through the
rounding asymmetry of its cross-kernel row, ``|k*ᵀv| ≲ u‖k*‖`` (u ≈ 1e-16): ``u / ε_rel ≈ 1e-6``
when the labels differ (``vᵀy ≠ 0``), ~0 when they agree. A float32 store perturbs K by
``2^-24`` relative, amplified by the conditioning of range(K). Hence TOL64 = 1e-7 (measured
6e-9; a schedule starting at jitter 1e-6 gives 9e-7 and fails), TOL32 = 1e-5 (measured 3.5e-7),
TOL_BAD = 1e-4 (measured 6.5e-6 at n = 800, 2.1e-5 at n = 4000).
"""

import json
import warnings

import numpy as np
import pytest
from sklearn.datasets import load_digits

from ntkscale.errors import JitterWarning
from ntkscale.operator import StoredGram
from ntkscale.pipeline import encode_classes
from ntkscale.pipeline.solve import FitResult
from ntkscale.solvers import solve
from ntkscale.tiling import build_gram

from .conftest import make_arch

N, M, TILE = 800, 300, 200
TOL64, TOL32, TOL_BAD = 1e-7, 1e-5, 1e-4


def _data(dup=0, bad=0, near=0, delta=0.0, seed=0):
    """Digits rows scaled to norm √64, the last ``dup + bad + near`` rows replaced by copies of
    earlier rows: exact with the same label, exact with another label, at relative distance
    ``delta`` with the same label. Returns X, y, Xt, yt and the (copy, source) index pairs."""
    X, y = load_digits(return_X_y=True)
    X = X - X.mean(axis=1, keepdims=True)
    X *= 8.0 / np.linalg.norm(X, axis=1, keepdims=True)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(X))
    tr, te = perm[:N], perm[N:N + M]
    Xtr, ytr = X[tr].copy(), y[tr].copy()
    src = rng.choice(N - dup - bad - near, dup + bad + near, replace=False)
    dst = np.arange(N - dup - bad - near, N)
    Xtr[dst], ytr[dst] = Xtr[src], ytr[src]
    b = slice(dup, dup + bad)
    ytr[dst[b]] = (ytr[src[b]] + 1) % 10
    nr = slice(dup + bad, None)
    g = rng.standard_normal(Xtr[dst[nr]].shape)
    Xtr[dst[nr]] += delta * 8.0 * g / np.linalg.norm(g, axis=1, keepdims=True)
    return Xtr, ytr, X[te], y[te], {"dup": (dst[:dup], src[:dup]), "bad": (dst[b], src[b]),
                                   "near": (dst[nr], src[nr])}


def _fit(tmp_path, X, Y, dtype):
    url = tmp_path / f"g-{np.dtype(dtype).name}"
    build_gram(make_arch(), X, url, get="ntk", tile=TILE, dtype=dtype, client="sync")
    op = StoredGram(url, client="sync")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", JitterWarning)  # what the tests check is in res.info
        res = solve(op, Y, 0.0, solver="auto", n_dense=0)  # beyond memory: the tiled Cholesky
    assert res.method == "tiled-cholesky" and "out-of-core tiled Cholesky" in res.info["auto"]
    return op, res


def _pinv_predictions(K64, Y, Kt, rcond):
    """float64 min-norm predictions: numpy's pinv with ``rcond`` relative to λ_max."""
    return Kt @ (np.linalg.pinv(K64, rcond=rcond, hermitian=True) @ Y)


def _rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def digits_dup():
    return _data(dup=16)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_exact_duplicates_match_minnorm_and_report_jitter(tmp_path, digits_dup, dtype):
    X, y, Xt, yt, groups = digits_dup
    Y = encode_classes(y, np.arange(10))
    op, res = _fit(tmp_path, X, Y, dtype)
    info = res.info
    # singular at ridge 0: Cholesky broke down, the smallest jitter of the schedule was enough
    assert info["regularized"] and info["jitter_retries"] >= 1 and info["jitter"] >= 1e-10
    assert info["jitter_absolute"] == pytest.approx(info["jitter"] * info["mean_diag"])
    assert res.ridge == pytest.approx(info["jitter_absolute"])
    assert info["min_pivot_relative"] < 1e-6 and info["cond_lower_bound"] > 1e6
    assert info["regularization"].startswith(f"regularized: jitter {info['jitter_absolute']:.3g} "
                                             f"({info['jitter']:.2g} x mean diag), because K + 0*I")
    assert info["interpolation_residual"] < 1e-3 and "NOT interpolated" not in info["regularization"]
    # against the float64 min-norm solution on the float64 Gram of the same inputs
    K64 = np.asarray(StoredGram(op.url, client="sync").to_numpy(), np.float64) if dtype == np.float64 else \
        make_arch().kernel_fn(X, X, ("ntk",), dtype=np.float64).ntk
    Kt = np.asarray(make_arch().kernel_fn(Xt, X, ("ntk",), dtype=np.float64).ntk)
    pred = Kt @ res.x
    # the reference cuts eigenvalues below 1e-10 λ_max (~1e-7 x mean diag: the kernel's rounding
    # noise on duplicate rows); lstsq's default n·eps keeps some of that noise and moves the
    # reference itself by ~1e-7, so it is held to TOL32
    tol = TOL64 if dtype == np.float64 else TOL32
    assert _rel(pred, _pinv_predictions(np.asarray(K64), Y, Kt, 1e-10)) < tol
    assert _rel(pred, _pinv_predictions(np.asarray(K64), Y, Kt, N * np.finfo(float).eps)) < TOL32


def test_inconsistent_duplicates_average_at_test_points_and_say_ill_posed(tmp_path):
    X, y, Xt, yt, groups = _data(bad=16)
    Y = encode_classes(y, np.arange(10))
    op, res = _fit(tmp_path, X, Y, np.float64)
    info = res.info
    assert info["regularized"] and info["interpolation_residual"] > 1e-3
    assert "NOT interpolated" in info["regularization"] and "ill-posed" in info["regularization"]
    K64 = np.asarray(op.to_numpy(), np.float64)
    dst, src = groups["bad"]
    alpha_pinv = np.linalg.pinv(K64, rcond=1e-10, hermitian=True) @ Y
    avg = 0.5 * (Y[dst] + Y[src])
    # the oracle: the min-norm fit gives both copies the average of their two labels
    np.testing.assert_allclose((K64 @ alpha_pinv)[dst], avg, atol=1e-6)
    # the jittered Cholesky: at any other input (and at the duplicated inputs themselves,
    # recomputed as test points) the same predictions: the average
    arch = make_arch()
    Kt = np.asarray(arch.kernel_fn(np.vstack([Xt, X[src]]), X, ("ntk",), dtype=np.float64).ntk)
    pred, pred_pinv = Kt @ res.x, Kt @ alpha_pinv
    assert _rel(pred, pred_pinv) < TOL_BAD
    np.testing.assert_allclose(pred[len(Xt):], avg, atol=1e-3)
    # ... but its train-side fitted values K α = Y − εα are not the average: the huge α along
    # e_i − e_j (|α| ~ 1/ε) meets the rounding asymmetry of the stored Gram's duplicate rows
    fitted = FitResult(res.x, 0.0, res).fitted(Y)
    assert np.linalg.norm(res.x) > 1e3 * np.linalg.norm(alpha_pinv)
    assert np.max(np.abs(fitted[dst] - fitted[src])) > 1e-2


@pytest.mark.parametrize("delta, dtype", [(1e-3, np.float64), (1e-5, np.float64), (1e-7, np.float64),
                                          (1e-7, np.float32)])
def test_near_duplicates(tmp_path, delta, dtype):
    """Near-duplicates at relative distance δ: the ReLU NTK has a kink on its diagonal
    (arc-cosine terms, K(x, x') ≈ K(x, x)(1 − c θ)), so the pair's eigenvalue and Cholesky pivot
    are ~ c δ · mean diag (measured 0.6 δ), not δ². float64 resolves them down to δ = 1e-7 (no
    jitter; below 1e-7 x mean diag the pivot is flagged near-singular); a float32 store's
    rounding (~1e-7 x mean diag) does not: at δ = 1e-7 its Cholesky breaks down and the jitter
    is reported. Either way the predictions are the min-norm ones."""
    X, y, Xt, yt, groups = _data(near=16, delta=delta)
    Y = encode_classes(y, np.arange(10))
    op, res = _fit(tmp_path, X, Y, dtype)
    info = res.info
    if dtype == np.float64:
        assert info["jitter"] == 0 and info["jitter_retries"] == 0 and not info["regularized"]
        assert 0.1 * delta < info["min_pivot_relative"] < 10 * delta
        assert info["near_singular"] == (delta < 1e-6)
        if delta < 1e-6:
            assert info["regularization"].startswith("not regularized, but near-singular")
    else:
        assert info["regularized"] and info["jitter"] > 0 and "jitter" in info["regularization"]
    K64 = np.asarray(make_arch().kernel_fn(X, X, ("ntk",), dtype=np.float64).ntk)
    Kt = np.asarray(make_arch().kernel_fn(Xt, X, ("ntk",), dtype=np.float64).ntk)
    tol = TOL64 if dtype == np.float64 else TOL32
    assert _rel(Kt @ res.x, _pinv_predictions(K64, Y, Kt, N * np.finfo(float).eps)) < tol


def test_eigh_path_reports_the_eigenvalues_it_cut(tmp_path, digits_dup):
    X, y, Xt, yt, groups = digits_dup
    Y = encode_classes(y, np.arange(10))
    url = tmp_path / "g"
    build_gram(make_arch(), X, url, get="ntk", tile=TILE, dtype=np.float64, client="sync")
    res = solve(StoredGram(url, client="sync"), Y, 0.0, solver="auto", n_dense=10_000)
    info = res.info
    assert res.method == "eigh-pinv" and info["regularized"]
    assert info["eigenvalues_cut"] >= 16 and info["rank"] + info["eigenvalues_cut"] == N
    assert info["regularization"].startswith(f"regularized: the pseudo-inverse dropped {info['eigenvalues_cut']} "
                                             f"of {N} eigenvalues")
    np.testing.assert_allclose(FitResult(res.x, 0.0, res).fitted(Y), info["fitted"])
    json.dumps({k: v for k, v in info.items() if k != "fitted"})  # metrics-ready


@pytest.mark.parametrize("method, says", [("cholesky", "regularized: jitter "),
                                          ("auto", "regularized: the pseudo-inverse dropped ")])
def test_job_at_ridge_0_on_a_singular_gram_says_it_regularized(tmp_path, method, says):
    """``ntkscale run`` at ridge 0 on inputs with duplicate rows: metrics.json and report.md
    carry what the solver added (tiled Cholesky: jitter) or cut (in-memory eigh)."""
    from ntkscale.job import parse_job, run_stages

    X, y, Xt, yt, _ = _data(dup=16)
    X, y = X[:400], y[:400]
    X[-8:], y[-8:] = X[:8], y[:8]  # duplicates inside the first 400 rows
    np.savez(tmp_path / "d.npz", X=X, y=y)
    doc = {"job": {"out": str(tmp_path / "run"), "stages": ["gram", "fit"]},
           "data": {"source": "file", "path": str(tmp_path / "d.npz"), "n_test": 0, "preprocess": "none",
                    "task": "classification"},
           "model": {"depth": 2}, "kernel": {"tile": 200, "dtype": "float64"},
           "solver": {"method": method, "ridge": 0.0, "jitter": method == "cholesky"},
           "cluster": {"kind": "sync"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", JitterWarning)
        m = run_stages(parse_job(doc, environ={}), ["gram", "fit"])["stages"]["fit"]
    assert m["regularized"] is True and m["regularization"].startswith(says)
    if method == "cholesky":
        assert m["method"] == "tiled-cholesky" and m["jitter_retries"] >= 1
        assert m["jitter_absolute"] == pytest.approx(m["jitter"] * m["mean_diag"])
        assert m["min_pivot_relative"] < 1e-6
    else:
        assert m["method"] == "eigh-pinv" and m["eigenvalues_cut"] >= 8
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())["stages"]["fit"]
    assert saved["regularization"] == m["regularization"]
    report = (tmp_path / "run" / "report.md").read_text()
    assert f"**{m['regularization']}**" in report
