"""The fused pass over a stored Gram (tile products without a float64 copy, mapped or
buffered reads, read-ahead): equal to the dense product of the stored values."""

import os

import numpy as np
import pytest

from ntkscale.operator import StoredGram
from ntkscale.storage import CorruptTileError
from ntkscale.tiling import build_cross_gram, build_gram
from ntkscale.tiling.gemv import band_buffer, tile_products

from .conftest import data


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(300, 200), (256, 256), (7, 513), (1, 1)])
def test_tile_products_equal_float64_products(dtype, shape):
    rng = np.random.default_rng(0)
    m, p = shape
    K = rng.standard_normal((m, p)).astype(dtype)
    vc, vr = rng.standard_normal((p, 3)), rng.standard_normal((m, 3))
    out_r, out_c = np.ones((m, 3)), np.asfortranarray(np.ones((p, 3)))
    tile_products(K, vc, out_r, vr, out_c, band_buffer(600, band=64))  # 64-row bands, wider scratch
    K64 = K.astype(np.float64)
    # float64 accumulation of exactly representable float32 values: only summation-order rounding
    np.testing.assert_allclose(out_r, 1 + K64 @ vc, rtol=1e-13, atol=1e-13 * p)
    np.testing.assert_allclose(out_c, 1 + K64.T @ vr, rtol=1e-13, atol=1e-13 * m)
    only = np.zeros((m, 3))
    tile_products(K, vc, only)  # no mirrored product, scratch allocated here
    np.testing.assert_allclose(only, K64 @ vc, rtol=1e-13, atol=1e-13 * p)


def test_tile_products_needs_fortran_accumulator():
    K = np.ones((4, 5), np.float32)
    with pytest.raises(ValueError, match="Fortran"):
        tile_products(K, np.ones((5, 2)), np.zeros((4, 2)), np.ones((4, 2)), np.zeros((5, 2)))


@pytest.mark.parametrize("where", ["mapped", "direct", "buffered", "memory"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_stored_pass_equals_dense_of_stored_values(arch, tmp_path, where, dtype):
    """n = 203 with tile 64: ragged edge tiles; a local directory read mapped, with O_DIRECT
    and with plain reads, and an fsspec memory store (chunks read into reused buffers);
    read-ahead on and off."""
    n = 203
    url = f"memory://pass-{np.dtype(dtype).name}" if where == "memory" else str(tmp_path / "g.zarr")
    io = "auto" if where == "memory" else where
    build_gram(arch, data(n), url, get="ntk", tile=64, dtype=dtype, client="sync")
    V = np.random.default_rng(1).standard_normal((n, 4))
    with StoredGram(url, "ntk", io=io) as op, StoredGram(url, "ntk", readahead=False, io=io) as op2:
        assert op.io == ("buffered" if where == "memory" else where)
        K = op.to_numpy().astype(np.float64)  # the stored values, mirrored
        want = K @ V
        for o in (op, op2):
            np.testing.assert_allclose(o.matvec(V), want, rtol=1e-12, atol=1e-12 * np.abs(want).max())
            np.testing.assert_allclose(o.matvec(V[:, 0]), want[:, 0], rtol=1e-12,
                                       atol=1e-12 * np.abs(want).max())


def test_stored_cross_pass(arch, tmp_path):
    X1, X2 = data(150, seed=1), data(97, seed=2)
    url = str(tmp_path / "c.zarr")
    build_cross_gram(arch, X1, X2, url, get="ntk", tile=64, client="sync")
    with StoredGram(url, "ntk") as op:
        K = op.to_numpy().astype(np.float64)
        V = np.random.default_rng(3).standard_normal((97, 2))
        np.testing.assert_allclose(op.matvec(V), K @ V, rtol=1e-12)


def test_direct_reads_bypass_alignment_and_fall_back(tmp_path):
    """direct_buffer is block-aligned and padded; read_chunk_direct reads the exact chunk and
    says None (fall back) for buffers it cannot use and stores that are not local."""
    from ntkscale.storage import chunks
    from zarr.storage import LocalStore, MemoryStore

    buf = chunks.direct_buffer(33, np.float32)
    n = 33 * 33 * 4 + 4
    assert buf.ctypes.data % 4096 == 0 and buf.nbytes % 4096 == 0 and buf.nbytes >= n
    payload = np.random.default_rng(0).integers(0, 255, n, dtype=np.uint8)
    (tmp_path / "c").write_bytes(payload.tobytes())
    store = LocalStore(str(tmp_path))
    got = chunks.read_chunk_direct(store, "c", buf, n)
    if got is None:
        pytest.skip("this filesystem refuses O_DIRECT")
    assert got and np.array_equal(buf[:n], payload)
    assert chunks.read_chunk_direct(store, "missing", buf, n) is False
    with pytest.raises(ValueError, match="bytes"):
        chunks.read_chunk_direct(store, "c", buf, n - 4)
    assert chunks.read_chunk_direct(store, "c", np.empty(8192, np.uint8)[1:4097], n) is None
    assert chunks.read_chunk_direct(MemoryStore(), "c", buf, n) is None


def test_auto_io_by_store_size(arch, tmp_path, monkeypatch):
    import ntkscale.operator as operator

    url = str(tmp_path / "g.zarr")
    build_gram(arch, data(70), url, get="ntk", tile=64, client="sync")
    assert StoredGram(url, "ntk").io == "mapped"
    monkeypatch.setattr(operator, "DIRECT_IO_FRACTION", 1e-12)  # as if the store dwarfed the RAM
    assert StoredGram(url, "ntk").io == "direct"
    with pytest.raises(ValueError, match="io must be"):
        StoredGram(url, "ntk", io="fast")


def test_corrupt_chunk_named_on_mapped_pass(arch, tmp_path):
    url = str(tmp_path / "g.zarr")
    build_gram(arch, data(130), url, get="ntk", tile=64, client="sync")
    chunk = os.path.join(url, "ntk", "c", "0", "1")
    with open(chunk, "r+b") as fh:  # flip one byte in the middle of the tile
        fh.seek(1000)
        b = fh.read(1)
        fh.seek(1000)
        fh.write(bytes([b[0] ^ 0xFF]))
    for io in ("mapped", "direct", "buffered"):
        with StoredGram(url, "ntk", io=io) as op:
            with pytest.raises(CorruptTileError, match=r"tile \(0, 1\)"):
                op.matvec(np.ones(130))
    os.truncate(chunk, 100)  # a truncated chunk: named with its size
    with StoredGram(url, "ntk") as op:
        with pytest.raises(CorruptTileError, match=r"tile \(0, 1\).*100 bytes"):
            op.matvec(np.ones(130))


# ------------------------------------------------------------------ page-cache share of direct passes
def test_spread_is_even_and_exact():
    from ntkscale.operator import spread

    items = list(range(100))
    for count in (0, 1, 7, 33, 100, 250):
        got = spread(items, count)
        assert len(got) == min(count, 100) and len(set(got)) == len(got)
        if 1 < len(got) < 100:  # evenly spaced: gaps differ by at most one
            gaps = np.diff(got)
            assert gaps.max() - gaps.min() <= 1


@pytest.mark.parametrize("cache", [0, 3, "all"])
def test_direct_pass_with_cached_share_equals_dense(arch, tmp_path, cache):
    """io='direct' with some tiles read through the page cache (memory-mapped): the same
    product, and exactly the requested number of tiles is mapped."""
    n, T = 203, 64
    url = str(tmp_path / "g.zarr")
    build_gram(arch, data(n), url, get="ntk", tile=T, dtype=np.float32, client="sync")
    V = np.random.default_rng(1).standard_normal((n, 3))
    with StoredGram(url, "ntk", io="mapped") as ref:
        want = ref.to_numpy().astype(np.float64) @ V
    n_tiles = 10  # 4 x 4 grid, upper triangle
    with StoredGram(url, "ntk", io="direct", cache=0) as probe:
        chunk = probe.store.chunk_nbytes("ntk")
    budget = {0: 0, 3: 3 * chunk + chunk // 2, "all": 100 * chunk}[cache]
    with StoredGram(url, "ntk", io="direct", cache=budget) as op:
        assert len(op.mapped_tiles) == {0: 0, 3: 3, "all": n_tiles}[cache]
        np.testing.assert_allclose(op.matvec(V), want, rtol=1e-12, atol=1e-12 * np.abs(want).max())


def test_cache_option_is_checked(arch, tmp_path):
    url = str(tmp_path / "g.zarr")
    build_gram(arch, data(40), url, get="ntk", tile=16, client="sync")
    with pytest.raises(ValueError, match="cache must be"):
        StoredGram(url, "ntk", io="direct", cache=-1)
    with StoredGram(url, "ntk", io="mapped", cache=10**9) as op:
        assert op.mapped_tiles == frozenset()  # only direct passes keep a cached share


# ------------------------------------------------------------------ single-precision sketches
def test_single_precision_pass_is_close_and_float32_only(arch, tmp_path):
    n = 203
    url32, url64 = str(tmp_path / "g32.zarr"), str(tmp_path / "g64.zarr")
    build_gram(arch, data(n), url32, get="ntk", tile=64, dtype=np.float32, client="sync")
    build_gram(arch, data(n), url64, get="ntk", tile=64, dtype=np.float64, client="sync")
    V = np.random.default_rng(2).standard_normal((n, 70))  # wide: the sketch's regime
    with StoredGram(url32, "ntk") as op:
        assert op.precisions == ("double", "single")
        want = op.matvec(V)
        got = op.matvec(V, precision="single")
        err = np.linalg.norm(got - want) / np.linalg.norm(want)
        assert 0 < err < 1e-5  # float32 GEMM rounding: not exact, but ~sqrt(n) eps32
    with StoredGram(url64, "ntk") as op64:
        with pytest.raises(ValueError, match="precision"):
            op64.matvec(V, precision="single")


def test_single_precision_nystrom_preconditions_as_well(arch, tmp_path):
    """A float32 sketch gives a preconditioner as good as the float64 one: PCG reaches the
    same tolerance in about the same number of iterations, to the same solution."""
    from ntkscale.solvers import pcg
    from ntkscale.solvers.nystrom import nystrom

    n = 300
    url = str(tmp_path / "g.zarr")
    build_gram(arch, data(n), url, get="ntk", tile=64, dtype=np.float32, client="sync")
    Y = np.random.default_rng(3).standard_normal((n, 2))
    with StoredGram(url, "ntk") as op:
        ridge = 1e-3 * float(np.mean(op.diag()))
        runs = {}
        for prec in ("double", "single"):
            pre = nystrom(op, 40, seed=0, precision=prec)
            runs[prec] = pcg(op, Y, ridge, precond=pre, tol=1e-8, maxiter=500)
        d, s = runs["double"], runs["single"]
        assert d.converged and s.converged
        assert s.iterations <= d.iterations + 3
        np.testing.assert_allclose(s.x, d.x, rtol=1e-6, atol=1e-6 * np.abs(d.x).max())
        with pytest.raises(ValueError, match="precision"):
            nystrom(op, 10, precision="half")


# ------------------------------------------------------------------ sub-blocks computed from the inputs
@pytest.mark.parametrize("sync", [True, False])
def test_take_computed_equals_stored_values(arch, tmp_path, sync, request):
    """Sub-blocks over scattered indices computed from the stored inputs equal the stored
    tiles (float32: to the last bit but for rounding-boundary cases; diagonal exact)."""
    from ntkscale.spectral.curves import gather

    n = 203
    url = str(tmp_path / "g.zarr")
    build_gram(arch, data(n), url, get="ntk", tile=64, dtype=np.float32, client="sync")
    client = "sync" if sync else request.getfixturevalue("client")
    rng = np.random.default_rng(4)
    rows = np.sort(rng.choice(n, 90, replace=False))
    cols = np.sort(rng.choice(n, 40, replace=False))
    with StoredGram(url, "ntk", client=client, subsets="compute") as op, \
            StoredGram(url, "ntk", subsets="read") as ref:
        K = ref.to_numpy().astype(np.float64)
        want = K[np.ix_(rows, cols)]
        got = op.take(rows, cols)
        np.testing.assert_allclose(got, want, rtol=2.5e-7, atol=0)  # one float32 ulp at most
        assert np.mean(got == want) > 0.99
        same = np.intersect1d(rows, cols)
        np.testing.assert_array_equal(got[np.searchsorted(rows, same), np.searchsorted(cols, same)],
                                      np.diagonal(K)[same])
        np.testing.assert_array_equal(gather(ref, rows, cols), want)  # the read path
        np.testing.assert_allclose(gather(op, rows, cols), want, rtol=2.5e-7, atol=0)


def test_take_auto_computes_only_when_cheaper(arch, tmp_path):
    n = 203
    url = str(tmp_path / "g.zarr")
    build_gram(arch, data(n), url, get="ntk", tile=64, client="sync")
    with StoredGram(url, "ntk") as op:
        spread_idx = np.arange(0, n, 20)  # 11 indices over every tile: compute
        assert op._compute(spread_idx, spread_idx)
        dense = np.arange(0, 64)  # a whole tile: read it
        assert not op._compute(dense, dense)
    with pytest.raises(ValueError, match="subsets"):
        StoredGram(url, "ntk", subsets="maybe")


def _unaligned(a: np.ndarray) -> np.ndarray:
    """``a``'s values in a read-only view 3 bytes past an aligned address (as a received frame can be)."""
    raw = np.zeros(a.nbytes + 128, dtype=np.uint8)
    off = (-raw.ctypes.data) % 64 + 3
    view = np.frombuffer(raw.data, dtype=a.dtype, count=a.size, offset=off).reshape(a.shape)
    raw[off:off + a.nbytes] = np.frombuffer(a.tobytes(), dtype=np.uint8)
    view.flags.writeable = False
    return view


def test_aligned_copies_only_what_matmul_would_copy():
    from ntkscale.tiling.tasks import aligned

    a = np.random.default_rng(0).standard_normal((50, 3))
    assert aligned(a) is a  # C-ordered, aligned, writeable: used as is
    u = _unaligned(a)
    assert not u.flags.aligned and not u.flags.writeable
    b = aligned(u)
    assert b.flags.aligned and b.flags.c_contiguous and b.flags.writeable and b.dtype == a.dtype
    np.testing.assert_array_equal(b, a)


def test_matvec_task_with_an_unaligned_block_equals_dense(arch, tmp_path):
    """What a worker receives: V unaligned and read-only. Same products as the aligned V."""
    from ntkscale.storage import GramStore
    from ntkscale.tiling import tasks

    n, url = 150, str(tmp_path / "g.zarr")
    build_gram(arch, data(n), url, get="ntk", tile=64, dtype=np.float32, client="sync")
    V = np.random.default_rng(2).standard_normal((n, 5))
    build_id = GramStore.open(url).meta["build_id"]
    with StoredGram(url, "ntk") as op:
        tiles = [t for group in op._task_tiles() for t in group]
        want = op.to_numpy().astype(np.float64) @ V
    parts = tasks.matvec_task(url, build_id, "ntk", tiles, _unaligned(V), io="direct")
    got = np.zeros_like(want)
    for block, part in parts.items():
        got[block * 64: block * 64 + part.shape[0]] += part
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12 * np.abs(want).max())
