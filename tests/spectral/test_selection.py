"""GCV / KARE / closed-form LOO vs direct numpy solves and brute-force refits."""

from __future__ import annotations

import numpy as np
import pytest

from ntkscale.spectral import gcv, kare, loo_error, select_ridge


def _problem(n: int = 30, rank: int | None = None, c: int = 2, seed: int = 0):
    rng = np.random.default_rng(seed)
    f = rng.normal(size=(n, rank or 2 * n))
    k = f @ f.T / f.shape[1]
    y = rng.normal(size=(n, c)) + (k @ rng.normal(size=(n, c)))
    s, v = np.linalg.eigh(k)
    return k, y, s, v


def _gcv_direct(k: np.ndarray, y: np.ndarray, lam: float) -> float:
    n = k.shape[0]
    smat = k @ np.linalg.solve(k + lam * np.eye(n), np.eye(n))
    r = y - smat @ y
    return float(np.sum(r * r)) / n / (1 - np.trace(smat) / n) ** 2


def _loo_brute(k: np.ndarray, y: np.ndarray, lam: float) -> float:
    n = k.shape[0]
    err = 0.0
    for i in range(n):
        keep = np.arange(n) != i
        alpha = np.linalg.solve(k[np.ix_(keep, keep)] + lam * np.eye(n - 1), y[keep])
        err += float(np.sum((y[i] - k[i, keep] @ alpha) ** 2))
    return err / n


GRID = np.array([1e-3, 1e-2, 0.1, 1.0, 10.0])


def test_gcv_eigh_matches_direct_solves() -> None:
    k, y, s, v = _problem()
    ours = gcv(s, v, y, GRID)
    # cond(K + lam I) <= ~1e4 on this grid: direct solves lose ~1e-12, so 1e-9 is safe.
    np.testing.assert_allclose(ours, [_gcv_direct(k, y, lam) for lam in GRID], rtol=1e-9)
    assert gcv(s, v, y[:, 0], 0.1) == pytest.approx(_gcv_direct(k, y[:, :1], 0.1), rel=1e-9)


def test_gcv_equals_kare_at_z_lam_over_n() -> None:
    _, y, s, v = _problem()
    n = s.size
    # Same quantity, different algebra ((K/n + zI)^-1 = n (K + n z I)^-1): round-off only.
    np.testing.assert_allclose(kare(s, v, y, GRID / n), gcv(s, v, y, GRID), rtol=1e-12)
    np.testing.assert_allclose(kare(s, v, y, 0.0), gcv(s, v, y, 0.0), rtol=1e-10)  # nonsingular


@pytest.mark.parametrize("lam", [0.0, 1e-3, 0.1, 2.0])
def test_loo_closed_form_matches_refits(lam: float) -> None:
    k, y, s, v = _problem(n=20)  # K nonsingular (40 features for 20 points)
    # n refits vs one eigh; at lam = 0 the refits solve with cond(K_-i) ~1e3: 1e-8 is safe.
    assert loo_error(s, v, y, lam) == pytest.approx(_loo_brute(k, y, lam), rel=1e-8)


def test_singular_gram_at_zero_ridge() -> None:
    k, y, s, v = _problem(n=25, rank=10)
    n, r = 25, 10
    # GCV(0) with rank r: S -> projector on range(K), tr S/n -> r/n.
    proj = v[:, s > 1e-10] @ v[:, s > 1e-10].T
    res = y - proj @ y
    expected = float(np.sum(res * res)) / n / (1 - r / n) ** 2
    assert gcv(s, v, y, 0.0) == pytest.approx(expected, rel=1e-10)
    # ... and that is the lam -> 0+ limit (error O(lam / s_min,nonzero)).
    assert gcv(s, v, y, 1e-9) == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="nonsingular"):
        loo_error(s, v, y, np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="nonsingular"):
        kare(s, v, y, 0.0)
    # Positive ridges are fine for a singular K.
    assert loo_error(s, v, y, 1e-2) == pytest.approx(_loo_brute(k, y, 1e-2), rel=1e-8)


def test_gcv_zero_ridge_nonsingular_is_the_limit() -> None:
    _, y, s, v = _problem()
    # Literal formula is 0/0 at lam = 0; we return lim lam -> 0+, O(lam/s_min) away.
    assert gcv(s, v, y, 0.0) == pytest.approx(gcv(s, v, y, 1e-10), rel=1e-6)


def test_select_ridge() -> None:
    _, y, s, v = _problem(seed=4)
    grid = np.logspace(-4, 2, 13)
    for method, fn in (("gcv", gcv), ("loo", loo_error)):
        sel = select_ridge(s, v, y, grid, method=method)
        curve = fn(s, v, y, grid)
        assert sel.ridge == grid[np.argmin(curve)] and sel.score == curve.min()
        np.testing.assert_array_equal(sel.scores, curve)
    with pytest.raises(ValueError, match="method"):
        select_ridge(s, v, y, grid, method="aic")
    with pytest.raises(ValueError, match="grid"):
        select_ridge(s, v, y, np.array([-1.0, 1.0]))


def test_one_standard_error_rule() -> None:
    """The per-sample terms average to the criterion, and '1se' picks the largest ridge
    within one SE of the minimum (checked against a brute-force LOO by refitting)."""
    from ntkscale.spectral.selection import _per_sample, _prepare

    rng = np.random.default_rng(4)
    X = rng.standard_normal((60, 3))
    K = np.exp(-0.5 * np.sum((X[:, None] - X[None]) ** 2, -1))
    y = np.sin(X[:, 0]) + 0.3 * rng.standard_normal(60)
    s, v = np.linalg.eigh(K)
    grid = np.logspace(-4, 1, 11)
    sv, vv, proj = _prepare(s, v, y)
    for method, fn in (("loo", loo_error), ("gcv", gcv)):
        for lam in grid[[0, 5, 10]]:
            assert np.isclose(_per_sample(method, sv, vv, proj, lam).mean(), fn(s, v, y, lam), rtol=1e-10)
    lam = grid[4]  # brute-force LOO residuals at one ridge
    brute = []
    for i in range(60):
        m = np.arange(60) != i
        a = np.linalg.solve(K[np.ix_(m, m)] + lam * np.eye(59), y[m])
        brute.append((y[i] - K[i, m] @ a) ** 2)
    np.testing.assert_allclose(_per_sample("loo", sv, vv, proj, lam), brute, rtol=1e-8)
    best = select_ridge(s, v, y, grid, method="loo")
    one = select_ridge(s, v, y, grid, method="loo", rule="1se")
    scores = loo_error(s, v, y, grid)
    terms = _per_sample("loo", sv, vv, proj, best.ridge)
    se = terms.std(ddof=1) / np.sqrt(60)
    assert one.standard_error == pytest.approx(se)
    assert one.ridge >= best.ridge and one.score <= best.score + se
    assert one.ridge == grid[scores <= best.score + se].max()
    with pytest.raises(ValueError, match="rule"):
        select_ridge(s, v, y, grid, rule="2se")
