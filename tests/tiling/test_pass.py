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
