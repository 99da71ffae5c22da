"""Tiled out-of-core Cholesky == LAPACK; refinement, breakdown, jitter, refusals, resume.

Tolerances: a Cholesky factor is backward stable; two orderings of the same float64
sums differ by ~cond(K + ridge I) * eps relative. At ridge = 1e-2 x mean diagonal the
300-point NTK Gram has cond ~ 2e3 (measured: 1.6e3), so 1e-10 relative leaves a wide margin while a
wrong tile, a missing update or a transposed block shows up at 1e-2 or worse.
"""

import time

import numpy as np
import pytest
import scipy.linalg as sla

from ntkscale.operator import DenseGram, StoredGram
from ntkscale.solvers.cholesky import cholesky_solve
from ntkscale.errors import ConvergenceWarning, JitterWarning, NotPositiveDefiniteError
from ntkscale.storage import CorruptTileError, StoreMismatchError
from ntkscale.storage.factor_store import FactorStore, MissingTileError
from ntkscale.tiling.cholesky import (_dependencies, _priorities, default_factor_url, factor_tile_size,
                                      factor_tiles)

from .conftest import TILE, stored_gram

RTOL = 1e-10


def _ref(op, rel):
    K = op.to_numpy().astype(np.float64)
    lam = rel * K.diagonal().mean()
    return K, lam, sla.cholesky(K + lam * np.eye(len(K)), lower=False)


def _factor_array(url):
    return np.asarray(FactorStore.open(url).array[...])


def _check_factor(op, rel, url, tile=None):
    K, lam, U_ref = _ref(op, rel)
    f = factor_tiles(op, lam, factor_url=url, tile=tile)
    n = len(K)
    # a Gram tile above n is stored as one n x n tile (no padded chunk)
    assert (f.n, f.tile, f.ridge, f.jitter, f.dtype) == (n, tile or min(TILE, n), lam, 0.0, np.float64)
    g = -(-n // f.tile)
    assert f.computed == f.n_tiles == g * (g + 1) // 2
    U = _factor_array(url)
    np.testing.assert_allclose(U, U_ref, rtol=0, atol=RTOL * np.abs(U_ref).max())
    Y = np.random.default_rng(1).standard_normal((n, 3))
    X_ref = sla.cho_solve((U_ref, False), Y)
    np.testing.assert_allclose(f.solve(Y), X_ref, rtol=0, atol=RTOL * np.abs(X_ref).max())
    x = f.solve(Y[:, 0])
    assert x.shape == (n,) and x.dtype == np.float64
    np.testing.assert_allclose(x, X_ref[:, 0], rtol=0, atol=RTOL * np.abs(X_ref).max())
    np.testing.assert_allclose(f.logdet(), np.linalg.slogdet(K + lam * np.eye(n))[1], rtol=1e-12, atol=1e-10)
    return f


@pytest.mark.parametrize("n", [300, 50, 1])
def test_tiled_factor_equals_scipy_sync(tmp_path, n):
    op = StoredGram(stored_gram(tmp_path / "g", n, seed=n), "ntk", client="sync")
    _check_factor(op, 1e-2, str(tmp_path / "f"))


@pytest.mark.cluster
def test_tiled_factor_equals_scipy_cluster(client, gram300, tmp_path):
    with StoredGram(gram300, "ntk", client=client) as op:
        f = _check_factor(op, 1e-2, str(tmp_path / "f"))
        again = factor_tiles(op, f.ridge, factor_url=f.url)  # a complete matching factor is reused
        assert again.computed == 0 and again.factor_id == f.factor_id
        # factor tiles that sub-divide the Gram's tiles (10x10 grid of 32 over 5x5 Gram tiles)
        sub = _check_factor(op, 1e-2, str(tmp_path / "f32"), tile=32)
        assert sub.n_tiles == 55
        assert factor_tiles(op, sub.ridge, factor_url=sub.url).computed == 0  # keeps the store's tile


@pytest.mark.cluster
def test_small_n_on_cluster(client, tmp_path):
    for n in (50, 1):  # one tile smaller than the tile edge; a 1x1 Gram
        with StoredGram(stored_gram(tmp_path / f"g{n}", n, seed=n), "ntk", client=client) as op:
            _check_factor(op, 1e-2, str(tmp_path / f"f{n}"))


def test_factor_tile_size():
    assert factor_tile_size(64, 300, 2) == 64  # never below min(512, Gram tile)
    assert factor_tile_size(1536, 8192, 2) == 768  # 6x6 Gram grid -> 11x11 factor grid
    assert factor_tile_size(1536, 8192, 1) == 1536
    assert factor_tile_size(1536, 2000, 0) == 1536  # one task at a time: no grid needed
    assert factor_tile_size(2048, 40000, 2) == 2048
    assert factor_tile_size(1024, 4096, 2) == 512  # smallest allowed even if the grid stays coarse


def test_cholesky_solve_stored_float64(gram300, tmp_path):
    op = StoredGram(gram300, "ntk", client="sync")
    K, lam, U = _ref(op, 1e-3)
    y = np.random.default_rng(3).standard_normal((300, 3))
    r = cholesky_solve(op, y, lam, factor_url=str(tmp_path / "f"))
    assert r.method == "tiled-cholesky" and r.converged and r.iterations == 0 and r.passes == 1
    np.testing.assert_allclose(r.x, sla.cho_solve((U, False), y), rtol=1e-9, atol=0)
    assert r.residual < 1e-13 and r.ridge == lam


def test_float32_factor_refines_to_1e_10(gram300, tmp_path):
    op = StoredGram(gram300, "ntk", client="sync")
    K, lam, U = _ref(op, 1e-3)  # cond(K + lam I) = 1.9e3: contraction ~ 1.9e3 * 2^-24 per step
    y = np.random.default_rng(4).standard_normal((300, 3))
    r = cholesky_solve(op, y, lam, dtype=np.float32, factor_url=str(tmp_path / "f32"))
    assert r.method == "tiled-cholesky-f32+refine" and r.converged
    assert FactorStore.open(tmp_path / "f32").array.dtype == np.float32
    assert r.history[0] > 1e-8  # the float32 factor alone is not enough ...
    assert r.residual < 1e-10 and 1 <= r.iterations <= 4  # ... a few refinement steps are
    assert len(r.history) == r.iterations + 1 and r.passes == r.iterations + 1
    assert r.history[-1] == r.residual
    true = np.linalg.norm(K @ r.x + lam * r.x - y, axis=0) / np.linalg.norm(y, axis=0)
    assert true.max() < 1e-10
    # refinement off: one matvec for the residual, float32 accuracy
    r0 = cholesky_solve(op, y[:, 0], lam, dtype=np.float32, refine=False, factor_url=str(tmp_path / "f32"))
    assert r0.x.shape == (300,) and r0.iterations == 0 and 1e-8 < r0.residual < 1e-4


def test_float32_refinement_stall_warns(gram_singular, tmp_path):
    op = StoredGram(gram_singular, "ntk", client="sync")
    # rank-150 Gram: cond(K + lam I) ~ 8e7, so cond * 2^-24 ~ 5 sits at the edge of what a
    # float32 factor can refine (whether it stalls above 1e-10 depended on the BLAS build's
    # rounding); a tolerance below the float64 floor of this system makes it stall for sure.
    lam = 1e-6 * float(op.diag().mean())
    with pytest.warns(ConvergenceWarning, match="float64"):
        r = cholesky_solve(op, np.ones(300), lam, dtype=np.float32, factor_url=str(tmp_path / "f"),
                           tol=1e-15)
    assert not r.converged and r.residual > 1e-15 and r.iterations < 20
    assert r.residual == min(r.history)  # the best iterate is returned


def _assert_breakdown(op, url):
    with pytest.raises(NotPositiveDefiniteError, match="diagonal tile") as e:
        factor_tiles(op, 0.0, factor_url=url)
    err = e.value
    assert 150 <= err.pivot < 300 and err.tile == err.pivot // TILE and err.ridge == 0.0
    assert f"pivot {err.pivot}" in str(err)
    fs = FactorStore.open(url)
    done = fs.done_tiles()
    assert not fs.meta["complete"] and (err.tile, err.tile) not in done
    assert all(i < err.tile for i, _ in done) and (0, 0) in done
    time.sleep(0.3)
    assert fs.done_tiles() == done  # no task of the failed run writes after it returned
    return err


def test_breakdown_names_tile_and_pivot_then_rerun_with_ridge(gram_singular, tmp_path):
    op = StoredGram(gram_singular, "ntk", client="sync")
    url = str(tmp_path / "f")
    err = _assert_breakdown(op, url)
    K = op.to_numpy()
    with pytest.raises(NotPositiveDefiniteError) as dense:
        cholesky_solve(K, np.ones(300), 0.0)
    assert dense.value.pivot == err.pivot  # LAPACK's info on the dense matrix, same row
    with pytest.raises(StoreMismatchError, match="another ridge"):
        factor_tiles(op, 1e-2, factor_url=url)
    f = factor_tiles(op, 1e-2, factor_url=url, overwrite=True)
    U_ref = sla.cholesky(K + 1e-2 * np.eye(300))
    np.testing.assert_allclose(_factor_array(url), U_ref, rtol=0, atol=1e-8 * np.abs(U_ref).max())
    assert f.computed == 15


@pytest.mark.cluster
def test_breakdown_on_cluster(client, gram_singular, tmp_path):
    with StoredGram(gram_singular, "ntk", client=client) as op:
        _assert_breakdown(op, str(tmp_path / "f"))
        f = factor_tiles(op, 1e-2, factor_url=str(tmp_path / "fresh"))
        assert f.computed == 15 and FactorStore.open(f.url).meta["complete"]


def test_jitter_warns_and_succeeds(gram_singular, tmp_path):
    op = StoredGram(gram_singular, "ntk", client="sync")
    url = str(tmp_path / "f")
    with pytest.warns(JitterWarning, match=r"jitter 1e-\d+ x mean diagonal"):
        r = cholesky_solve(op, np.ones(300), 0.0, jitter=True, factor_url=url)
    mean_diag = float(op.diag().mean())
    j = r.info["jitter"]
    assert 1e-10 <= j <= 1e-4 and r.ridge == pytest.approx(j * mean_diag, rel=1e-12)
    assert r.residual < 1e-6 and FactorStore.open(url).meta["jitter"] == j
    with pytest.warns(JitterWarning):  # reused (nothing computed), still jittered
        assert factor_tiles(op, 0.0, factor_url=url, jitter=True).computed == 0
    with pytest.raises(StoreMismatchError, match="jitter"):
        factor_tiles(op, 0.0, factor_url=url)
    with pytest.warns(JitterWarning):
        d = cholesky_solve(op.to_numpy(), np.ones(300), 0.0, jitter=True)
    assert d.method == "lapack-cholesky" and d.info["jitter"] > 0


def test_refuses_factor_of_another_gram_ridge_or_dtype(gram300, tmp_path):
    op = StoredGram(gram300, "ntk", client="sync")
    other = StoredGram(stored_gram(tmp_path / "other", 300, seed=7), "ntk", client="sync")
    url = str(tmp_path / "f")
    factor_tiles(op, 0.5, factor_url=url)
    with pytest.raises(StoreMismatchError, match="another Gram"):
        factor_tiles(other, 0.5, factor_url=url)
    with pytest.raises(StoreMismatchError, match="another ridge"):
        factor_tiles(op, 0.25, factor_url=url)
    with pytest.raises(StoreMismatchError, match="another dtype"):
        factor_tiles(op, 0.5, factor_url=url, dtype=np.float32)
    with pytest.raises(StoreMismatchError, match="another tile"):
        factor_tiles(op, 0.5, factor_url=url, tile=32)
    with pytest.raises(ValueError, match="divisor"):
        factor_tiles(op, 0.5, factor_url=str(tmp_path / "g"), tile=48)
    assert factor_tiles(other, 0.5, factor_url=url, overwrite=True).computed == 15


def test_default_factor_store_keyed_by_what_it_factors(gram300):
    """Issue 24, defect 10: two fits with other ridges (or dtypes) on one Gram store each keep
    their own default factor store instead of refusing each other's."""
    op = StoredGram(gram300, "ntk", client="sync")
    urls = {default_factor_url(str(gram300), "ntk", dt, r) for dt in (np.float32, np.float64) for r in (0.0, 0.5, 0.25)}
    assert len(urls) == 6 and all(u.startswith(str(gram300) + "-chol-ntk-") for u in urls)
    assert default_factor_url(str(gram300), "ntk", np.float64, 0.5).startswith(str(gram300) + "-chol-ntk-float64-ridge0.5-")
    assert default_factor_url(str(gram300), "nngp", np.float64, 0.5) not in urls
    f0, f1 = factor_tiles(op, 0.0 + 1.0, dtype=np.float64), factor_tiles(op, 2.0, dtype=np.float64)
    f2 = factor_tiles(op, 1.0, dtype=np.float32)
    assert len({f0.url, f1.url, f2.url}) == 3 and f0.computed == f1.computed == f2.computed == 15
    again = factor_tiles(op, 1.0, dtype=np.float64)  # the first factor is still there: reused
    assert again.url == f0.url and again.computed == 0


def _interrupt_after(k):
    seen = []

    def hook(result):
        seen.append(result)
        if len(seen) == k:
            raise KeyboardInterrupt("user stopped the factorization")
    return hook


def test_resume_sync_is_bit_identical(gram300, tmp_path):
    op = StoredGram(gram300, "ntk", client="sync")
    clean = factor_tiles(op, 0.1, factor_url=str(tmp_path / "clean"))
    part = str(tmp_path / "part")
    with pytest.raises(KeyboardInterrupt):
        factor_tiles(op, 0.1, factor_url=part, on_tile=_interrupt_after(4))
    fs = FactorStore.open(part)
    assert len(fs.done_tiles()) == 4 and not fs.meta["complete"]
    f = factor_tiles(op, 0.1, factor_url=part)
    assert f.resumed and f.computed == 11
    np.testing.assert_array_equal(_factor_array(part), _factor_array(clean.url))
    # deleted chunks of a complete factor: only those are recomputed
    fs = FactorStore.open(part, mode="r+")
    for t in [(0, 2), (2, 3), (4, 4)]:
        fs.delete_tile(*t)
    fs.set_complete(False)
    assert factor_tiles(op, 0.1, factor_url=part).computed == 3
    np.testing.assert_array_equal(_factor_array(part), _factor_array(clean.url))
    np.testing.assert_array_equal(f.solve(np.ones(300)), clean.solve(np.ones(300)))


@pytest.mark.cluster
def test_resume_on_cluster_is_bit_identical(client, gram300, tmp_path):
    with StoredGram(gram300, "ntk", client=client) as op:
        clean = factor_tiles(op, 0.1, factor_url=str(tmp_path / "clean"))
        part = str(tmp_path / "part")
        with pytest.raises(KeyboardInterrupt):
            factor_tiles(op, 0.1, factor_url=part, on_tile=_interrupt_after(5))
        done = len(FactorStore.open(part).done_tiles())
        assert 5 <= done < 15
        assert factor_tiles(op, 0.1, factor_url=part).computed == 15 - done
        np.testing.assert_array_equal(_factor_array(part), _factor_array(clean.url))
        # (2, 3) reads U_02 through the done tile (2, 2): its dependency must be found anyway
        fs = FactorStore.open(part, mode="r+")
        fs.delete_tile(0, 2)
        fs.delete_tile(2, 3)
        fs.set_complete(False)
        assert factor_tiles(op, 0.1, factor_url=part).computed == 2
        np.testing.assert_array_equal(_factor_array(part), _factor_array(clean.url))


def test_corrupt_or_missing_factor_tile_is_named(gram300, tmp_path):
    op = StoredGram(gram300, "ntk", client="sync")
    f = factor_tiles(op, 0.1, factor_url=str(tmp_path / "f"))
    chunk = tmp_path / "f" / "U" / "c" / "1" / "3"
    raw = bytearray(chunk.read_bytes())
    raw[100] ^= 0xFF
    chunk.write_bytes(bytes(raw))
    with pytest.raises(CorruptTileError, match=r"tile \(1, 3\).*checksum"):
        f.solve(np.ones(300))
    chunk.unlink()
    with pytest.raises(MissingTileError, match=r"tile \(1, 3\) is missing"):
        f.solve(np.ones(300))
    assert factor_tiles(op, 0.1, factor_url=f.url).computed == 1  # the missing tile is recomputed
    assert np.isfinite(f.solve(np.ones(300))).all()


def test_dense_paths_equal_cho_solve():
    rng = np.random.default_rng(5)
    A = rng.standard_normal((40, 60))
    K = A @ A.T / 60
    y = rng.standard_normal((40, 2))
    ref = sla.cho_solve(sla.cho_factor(K + 0.1 * np.eye(40)), y)
    for op in (K, DenseGram(K), DenseGram(K.astype(np.float32).astype(np.float64))):
        r = cholesky_solve(op, y, 0.1)
        assert r.method == "lapack-cholesky" and r.passes == 0 and r.residual < 1e-14
    np.testing.assert_allclose(cholesky_solve(K, y, 0.1).x, ref, rtol=1e-12)
    np.testing.assert_allclose(cholesky_solve(K, y[:, 1], 0.1).x, ref[:, 1], rtol=1e-12)
    low = A[:5].T @ A[:5]  # 60 x 60, rank 5
    with pytest.raises(NotPositiveDefiniteError, match="pivot") as e:
        cholesky_solve(low, np.ones(60), 0.0)
    assert e.value.pivot >= 5 and e.value.tile is None


BAD_Y = [(np.full(300, np.nan), "NaN"), (np.ones(299), "299 rows"), (np.ones((300, 2, 2)), "1-d"),
         (np.array(["a"] * 300), "numeric")]
BAD_RIDGE = [-1.0, float("nan"), float("inf"), "0.1", None, True]


@pytest.mark.parametrize("y,msg", BAD_Y)
def test_bad_y_is_refused_before_work(gram300, tmp_path, y, msg):
    op = StoredGram(gram300, "ntk", client="sync")
    with pytest.raises(ValueError, match=msg):
        cholesky_solve(op, y, 0.1, factor_url=str(tmp_path / "f"))
    assert FactorStore.try_open(tmp_path / "f") is None
    with pytest.raises(ValueError, match=msg):
        cholesky_solve(np.eye(300), y, 0.1)


@pytest.mark.parametrize("ridge", BAD_RIDGE)
def test_bad_ridge_is_refused_before_work(gram300, tmp_path, ridge):
    op = StoredGram(gram300, "ntk", client="sync")
    # one check (ntkscale.linop.check_ridge): InvalidRidgeError, a TypeError and a ValueError
    with pytest.raises((TypeError, ValueError), match="ridge must be a finite"):
        cholesky_solve(op, np.ones(300), ridge, factor_url=str(tmp_path / "f"))
    with pytest.raises((TypeError, ValueError), match="ridge must be a finite"):
        factor_tiles(op, ridge, factor_url=str(tmp_path / "f"))
    assert FactorStore.try_open(tmp_path / "f") is None


@pytest.mark.parametrize("kw,msg", [({"tol": 0.0}, "tol"), ({"max_refine": -1}, "max_refine"),
                                    ({"dtype": np.int32}, "dtype"), ({"jitter": -1e-3}, "jitter")])
def test_bad_options(kw, msg):
    with pytest.raises(ValueError, match=msg):
        cholesky_solve(np.eye(3), np.ones(3), 0.1, **kw)


def test_priorities_follow_the_critical_path():
    p = _priorities(6)
    assert max(p, key=p.get) == (0, 0)
    # along the diagonal chain (i,i) -> (i,i+1) -> (i+1,i+1) priorities strictly decrease
    chain = [t for i in range(5) for t in ((i, i), (i, i + 1))] + [(5, 5)]
    assert all(p[a] > p[b] for a, b in zip(chain, chain[1:]))
    # tiles nearer the diagonal (lower column index) first, and lower rows first
    assert all(p[i, j] > p[i, j + 1] for i in range(6) for j in range(i, 5))
    assert all(p[i, j] > p[i + 1, j] for j in range(6) for i in range(j))


def test_dependencies_look_through_done_tiles():
    full = [(i, j) for i in range(4) for j in range(i, 4)]
    deps = _dependencies(full)
    assert deps[0, 0] == [] and deps[1, 1] == [(0, 1)] and deps[1, 3] == [(0, 3), (1, 1)]
    # resume: (2, 3) reads U_02, rewritten in this run, through the done tiles (2, 2) and (1, 2)
    assert _dependencies([(0, 2), (2, 3)]) == {(0, 2): [], (2, 3): [(0, 2)]}
    # conservative: (3, 3) does not read U_01 but waits for it (through the done (1, 3), (1, 1))
    assert _dependencies([(0, 1), (3, 3)]) == {(0, 1): [], (3, 3): [(0, 1)]}
