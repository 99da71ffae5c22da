"""Packed diagonal tiles of symmetric stores (``diag_layout='packed'``): the folding and its
in-place unfolding, products and block reads from upper triangles only, and stores with
packed diagonals == the dense kernel for passes, block reads and the tiled Cholesky, at
sizes not divisible by the tile (odd and even tiles); stores of the earlier "full" layout
are still read and resumed as they are; resume after a partial build."""

import os
import shutil

import numpy as np
import pytest
import scipy.linalg as sla

import ntkscale.storage.gram_store as gram_store
import ntkscale.storage.packed as packed
from ntkscale import stax
from ntkscale.operator import StoredGram
from ntkscale.storage import GramStore, StoreMismatchError
from ntkscale.storage.packed import copy_symmetric, pack_upper, packed_rows, unpack_in_place
from ntkscale.tiling import build_gram
from ntkscale.tiling.cholesky import factor_tiles
from ntkscale.tiling.gemv import band_buffer, diag_tile_products

from .conftest import chunk_bytes, data

SNAN = {np.float32: (np.uint32, 0x7F800001), np.float64: (np.uint64, 0x7FF0000000000001)}


def _garbage_below(S: np.ndarray) -> np.ndarray:
    """``S`` with its strict lower triangle set to signalling NaNs (what a reader must not use)."""
    U = np.array(S)
    ints, bits = SNAN[U.dtype.type]
    U.view(ints)[np.tril_indices(len(U), -1)] = bits
    return U


def _sym(m: int, seed: int = 0) -> np.ndarray:
    A = np.random.default_rng(seed).standard_normal((m, m))
    return A + A.T


# ------------------------------------------------------------------ folding
@pytest.mark.parametrize("T", [3, 4, 5, 8, 63, 64])
def test_pack_then_unpack_in_place_gives_the_upper_triangle(T):
    for m in sorted({1, T // 2 or 1, T - 1, T}):
        S = _sym(m, seed=T + m)
        P = pack_upper(S, T)
        assert P.shape == (packed_rows(T), T + 1) == ((T + 1) // 2, T + 1)
        buf = np.full(T * T + 3, np.nan)  # a tile buffer, the packed chunk read into its start
        buf[: P.size] = P.reshape(-1)
        U = unpack_in_place(buf, T)
        assert U.shape == (T, T) and np.shares_memory(U, buf)
        padded = np.zeros((T, T))
        padded[:m, :m] = S
        iu = np.triu_indices(T)
        np.testing.assert_array_equal(U[iu], padded[iu])  # edge tiles: zeros past m
        out = np.empty((T, T))
        copy_symmetric(U, slice(0, T), slice(0, T), out, band=2)
        np.testing.assert_array_equal(out, padded)


def test_copy_symmetric_of_any_region_reads_the_upper_triangle_only():
    T = 37
    S = _sym(T).astype(np.float32)
    U = _garbage_below(S)
    with np.errstate(invalid="raise"):
        for r0, r1, c0, c1 in [(0, T, 0, T), (0, 1, 0, T), (5, 30, 0, 3), (20, 37, 2, 36), (10, 11, 10, 11)]:
            for band in (1, 4, 256):
                out = np.empty((r1 - r0, c1 - c0), np.float32)
                copy_symmetric(U, slice(r0, r1), slice(c0, c1), out, band=band)
                np.testing.assert_array_equal(out, S[r0:r1, c0:c1])


# ------------------------------------------------------------------ products
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m", [1, 2, 7, 64, 301])
@pytest.mark.parametrize("k", [1, 5, 80])
def test_diag_tile_products_equal_dense(dtype, m, k):
    """``out += S v`` from the upper triangle (the lower one signalling NaNs, never cast),
    float64-exact: the cast band idea of tile_products, cache-sized and wide bands."""
    S = _sym(m, seed=m).astype(dtype)
    U = _garbage_below(S)
    v = np.random.default_rng(k).standard_normal((m, k))
    out = np.asfortranarray(np.ones((m, k)))
    with np.errstate(invalid="raise"):
        diag_tile_products(U, v, out, band_buffer(m) if m > 64 else None)
    ref = 1.0 + S.astype(np.float64) @ v
    np.testing.assert_allclose(out, ref, rtol=1e-13, atol=1e-13 * np.abs(ref).max())


# ------------------------------------------------------------------ stores
def _full_layout(monkeypatch):
    """New stores as earlier versions wrote them: no ``diag_layout`` key, whole diagonal tiles."""
    monkeypatch.setattr(packed, "with_diag_layout", lambda meta: dict(meta))


@pytest.fixture(scope="module")
def dense():
    """The dense oracle of the stores below: inputs and their NTK/NNGP (float64)."""
    arch = stax.serial(stax.Dense(64, W_std=2 ** 0.5, b_std=0.1), stax.Relu(),
                       stax.Dense(64, W_std=2 ** 0.5, b_std=0.1), stax.Relu(), stax.Dense(1))
    X = data(203)
    K = arch.kernel_fn(X, None)
    return arch, X, {"ntk": np.asarray(K.ntk), "nngp": np.asarray(K.nngp)}


def _check_store(url, dense_K, dtype, tile):
    """Passes (every io, 1 and many columns), block reads across diagonal tiles, zarr-path
    region reads and the tiled Cholesky of a store against the dense kernel."""
    tol = 1e-12 if dtype == np.float64 else 2e-7
    gs = GramStore.open(url)
    n = len(dense_K["ntk"])
    for kind, ref in dense_K.items():
        stored = ref.astype(dtype).astype(np.float64)  # what the store holds (rounded once)
        np.testing.assert_allclose(stored, ref, rtol=tol, atol=tol * np.abs(ref).max())
        for io in ("mapped", "direct", "buffered"):
            with StoredGram(url, kind, io=io) as op:
                for k in (1, 70):
                    V = np.random.default_rng(k).standard_normal((n, k))
                    got = op.matvec(V)
                    want = ref @ V
                    np.testing.assert_allclose(got, want, rtol=0, atol=3 * tol * np.abs(ref).max() * np.abs(V).sum(0).max())
                K = op.to_numpy()
                np.testing.assert_array_equal(K, K.T)
                np.testing.assert_allclose(K, ref, rtol=tol, atol=tol * np.abs(ref).max())
                for r0, r1, c0, c1 in [(3, tile + 5, 1, 2 * tile + 1), (tile - 2, n, tile - 3, tile + 4),
                                       (n - 1, n, 0, n), (5, 6, 5, 6)]:
                    np.testing.assert_array_equal(op[r0:r1, c0:c1], K[r0:r1, c0:c1])
        # zarr's indexing (stores from other writers go there): diagonal tiles from their
        # packed chunks, mirrored; tiles below the diagonal are not stored (zeros)
        region = gs.read(kind, slice(0, n), slice(0, n))
        np.testing.assert_array_equal(np.triu(region), np.triu(K))
        for d in range(-(-n // tile)):
            s = slice(d * tile, min(n, (d + 1) * tile))
            np.testing.assert_array_equal(region[s, s], K[s, s])
    with StoredGram(url, "ntk") as op:
        ref = dense_K["ntk"]
        lam = 1e-2 * ref.diagonal().mean()
        Kq = op.to_numpy().astype(np.float64)  # the stored (rounded) Gram
        U_ref = sla.cholesky(Kq + lam * np.eye(n), lower=False)
        Y = np.random.default_rng(3).standard_normal((n, 2))
        X_ref = sla.cho_solve((U_ref, False), Y)
        divisors = [t for t in (tile, tile // 2 if tile % 2 == 0 else tile // 5) if tile % t == 0]
        for ft in divisors:  # the Gram's tile, and factor tiles inside its tiles
            f = factor_tiles(op, lam, factor_url=f"{url}-f{ft}", tile=ft, overwrite=True)
            np.testing.assert_allclose(f.solve(Y), X_ref, rtol=0, atol=1e-10 * np.abs(X_ref).max())
            shutil.rmtree(f"{url}-f{ft}", ignore_errors=True)


@pytest.mark.parametrize("dtype,tile", [(np.float32, 64), (np.float64, 65), (np.float32, 45)])
def test_packed_store_equals_dense(dense, tmp_path, dtype, tile):
    arch, X, K = dense
    url = str(tmp_path / "g")
    build_gram(arch, X, url, get=("nngp", "ntk"), tile=tile, dtype=dtype, client="sync")
    gs = GramStore.open(url)
    g = -(-len(X) // tile)
    assert gs.diag_layout == "packed" and gs.meta["format"] == gram_store.FORMAT
    for kind in ("nngp", "ntk"):  # diagonal tiles only in the packed arrays, each about half a tile
        assert gs.done_chunks(kind) == {(i, j) for i in range(g) for j in range(i, g)}
        assert sorted(os.listdir(os.path.join(url, f"{kind}_diag", "c"))) == sorted(str(i) for i in range(g))
        assert not any(os.path.exists(os.path.join(url, kind, "c", str(i), str(i))) for i in range(g))
        size = os.path.getsize(os.path.join(url, f"{kind}_diag", "c", "0", "0"))
        assert size == gs.tile_nbytes(kind, 0, 0) == (tile + 1) // 2 * (tile + 1) * np.dtype(dtype).itemsize + 4
        assert size < 0.53 * gs.tile_nbytes(kind, 0, 1)  # (T+1)² / 2T² of a tile
    _check_store(url, K, dtype, tile)


def test_full_layout_store_is_read_and_resumed_as_it_is(dense, tmp_path, monkeypatch):
    """A store without ``diag_layout`` (earlier versions): whole diagonal tiles in the main
    arrays, read as before; a resume keeps its layout (and is bit-identical)."""
    arch, X, K = dense
    url = str(tmp_path / "old")
    with monkeypatch.context() as m:
        _full_layout(m)
        build_gram(arch, X, url, get=("nngp", "ntk"), tile=64, dtype=np.float32, client="sync")
    gs = GramStore.open(url)
    assert "diag_layout" not in gs.meta and gs.diag_layout == "full" and not gs.diag_packed("ntk")
    assert not os.path.exists(os.path.join(url, "ntk_diag"))
    assert os.path.getsize(os.path.join(url, "ntk", "c", "1", "1")) == 64 * 64 * 4 + 4
    _check_store(url, K, np.float32, 64)
    before = chunk_bytes(url)
    gs = GramStore.open(url, mode="r+")
    gs.delete_chunk("ntk", (1, 1))
    gs.delete_chunk("nngp", (0, 2))
    rep = build_gram(arch, X, url, get=("nngp", "ntk"), tile=64, dtype=np.float32, client="sync")
    assert rep.resumed and rep.computed == 2 and chunk_bytes(url) == before
    assert "diag_layout" not in GramStore.open(url).meta


def test_tiny_tiles_keep_the_full_layout(arch, tmp_path):
    """Tiles below 3 are not packed (the fold would not be smaller than the tile)."""
    X = data(5)
    url = str(tmp_path / "g")
    build_gram(arch, X, url, tile=2, dtype=np.float64, client="sync")
    gs = GramStore.open(url)
    assert "diag_layout" not in gs.meta and not os.path.exists(os.path.join(url, "ntk_diag"))
    np.testing.assert_allclose(StoredGram(url).to_numpy(), arch.kernel_fn(X, None, "ntk"), rtol=1e-12)
    with pytest.raises(ValueError, match="diag_layout"):
        GramStore.create(str(tmp_path / "h"), dict(gs.meta, diag_layout="packed"), X, None, 3)


def test_unknown_layout_is_refused_not_read_as_zeros(arch, tmp_path):
    url = str(tmp_path / "g")
    build_gram(arch, data(70), url, tile=64, client="sync")
    gs = GramStore.open(url, mode="r+")
    gs.group.attrs["ntkscale"] = dict(gs.meta, diag_layout="folded-v9")
    with pytest.raises(StoreMismatchError, match="folded-v9"):
        StoredGram(url).matvec(np.ones(70))


def test_resume_after_a_partial_build_with_packed_diagonals(arch, tmp_path):
    """A build stopped part-way keeps its finished tiles (packed diagonal ones included); the
    re-run computes exactly the rest and the store ends bit-identical to a clean build."""
    X = data(300)
    clean, part = str(tmp_path / "clean"), str(tmp_path / "part")
    build_gram(arch, X, clean, get=("nngp", "ntk"), tile=64, client="sync")
    seen = []

    def stop_after_six(result):
        seen.append(result[:2])
        if len(seen) == 6:
            raise RuntimeError("stopped")

    with pytest.raises(RuntimeError, match="stopped"):
        build_gram(arch, X, part, get=("nngp", "ntk"), tile=64, client="sync", on_tile=stop_after_six)
    gs = GramStore.open(part)
    done = set.intersection(*(gs.done_chunks(k) for k in ("nngp", "ntk")))
    assert done == set(seen) and not gs.meta["complete"]
    # off-diagonal tiles go first: make some diagonal tiles among the finished ones too
    for kind in ("nngp", "ntk"):
        src = GramStore.open(clean)
        dst = GramStore.open(part, mode="r+")
        for d in (0, 3):
            dst.write_tile(kind, d, d, src.read(kind, *src.tile_bounds(d, d)))
    done = set.intersection(*(GramStore.open(part).done_chunks(k) for k in ("nngp", "ntk")))
    assert {(0, 0), (3, 3)} <= done
    rep = build_gram(arch, X, part, get=("nngp", "ntk"), tile=64, client="sync")
    assert rep.resumed and rep.computed == 15 - len(done)
    assert chunk_bytes(part) == chunk_bytes(clean) and GramStore.open(part).meta["complete"]
