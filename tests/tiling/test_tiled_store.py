"""The skeleton the Gram and factor stores share (ntkscale.storage.tiled_store): opening,
refusals named by the kind of store, chunk listing and deletion, checksums, and the on-disk
chunk format (raw little-endian bytes + CRC32C; packed diagonal tiles), pinned byte by byte."""

import os

import google_crc32c
import numpy as np
import pytest

from ntkscale.storage import CorruptTileError, GramStore, StoreAccessError, StoreMismatchError
from ntkscale.storage.factor_store import FactorStore
from ntkscale.storage.packed import pack_upper
from ntkscale.storage.tiled_store import TiledStore

T, N = 4, 10  # 3 x 3 tiles, edge tiles of 2


def _gram(path, layout=None):
    x = np.arange(N * 2, dtype=np.float64).reshape(N, 2)
    meta = {"format": 1, "shape": [N, N], "tile": T, "symmetric": True, "kinds": ["ntk"],
            "store_dtype": "float32", "compute_dtype": "float64", "arch": "a", "fingerprint1": "f"}
    if layout:
        meta["diag_layout"] = layout
    return GramStore.create(str(path), meta, x, None, 3)


def _factor(path):
    return FactorStore.create(str(path), {"n": N, "tile": T, "dtype": "float64", "kind": "ntk"})


MAKE = {"gram": _gram, "factor": _factor}


def _sym(seed=0):
    A = np.random.default_rng(seed).standard_normal((N, N))
    return A + A.T


def _crc(b: bytes) -> bytes:
    return google_crc32c.value(b).to_bytes(4, "little")


@pytest.mark.parametrize("kind", sorted(MAKE))
def test_open_and_refusals_name_the_kind_of_store(kind, tmp_path):
    cls, other = (GramStore, FactorStore) if kind == "gram" else (FactorStore, GramStore)
    s = MAKE[kind](tmp_path / "s")
    assert isinstance(s, TiledStore) and s.tile == T and s.shape == (N, N)
    assert cls.exists(tmp_path / "s") and not other.exists(tmp_path / "s")
    assert other.try_open(tmp_path / "s") is None and cls.try_open(tmp_path / "s").url == str(tmp_path / "s")
    with pytest.raises(StoreAccessError, match=f"no {cls.WHAT} at"):
        cls.open(tmp_path / "missing")
    with pytest.raises(StoreAccessError, match=f"is a zarr group but not an ntkscale {other.WHAT}"):
        other.open(tmp_path / "s")
    assert s.meta["complete"] is False
    s.set_complete()
    assert cls.open(tmp_path / "s").meta["complete"] is True
    s.group.attrs[cls.ATTR] = dict(s.meta, format=99)
    with pytest.raises(StoreMismatchError, match=f"{cls.WHAT} .* has format 99.*pass overwrite=True"):
        s.check_compatible({})


def test_mismatches_name_the_key_and_the_way_out(tmp_path):
    g, f = _gram(tmp_path / "g"), _factor(tmp_path / "f")
    with pytest.raises(StoreMismatchError, match=r"Gram store .* uses another tile size: stored tile=4, "
                                                 r"requested 8\. Use another store URL"):
        g.check_compatible({"tile": 8})
    with pytest.raises(StoreMismatchError, match=r"factor store .* holds another dtype: stored "
                                                 r"dtype='float64', requested 'float32'\. Use another factor_url"):
        f.check_compatible({"dtype": "float32"})
    g.check_compatible({"tile": T, "kinds": ["ntk"]})
    with pytest.raises(StoreMismatchError, match=r"holds kinds \['ntk'\], not \['nngp'\]"):
        g.check_compatible({"kinds": ["ntk", "nngp"]})


@pytest.mark.parametrize("layout", ["packed", "full"])
def test_gram_chunks_are_raw_bytes_and_crc(layout, tmp_path):
    g, S = _gram(tmp_path / "g", layout), _sym().astype(np.float32)
    for i, j in g.iter_tiles():
        r, c = g.tile_bounds(i, j)
        g.write_tile("ntk", i, j, S[r, c])
    assert g.done_chunks("ntk") == set(g.iter_tiles()) and g.bad_chunks("ntk", g.iter_tiles()) == []
    ti = np.arange(N) // T  # tiles below the diagonal are not stored: they read as zeros
    np.testing.assert_array_equal(g.read("ntk", slice(0, N), slice(0, N)), np.where(ti[:, None] <= ti, S, 0))
    tile = np.zeros((T, T), np.float32)
    tile[:2, :2] = S[8:, 8:]  # edge tile (2, 2), padded
    if layout == "packed":
        data, path = pack_upper(tile, T).tobytes(), os.path.join(tmp_path, "g", "ntk_diag", "c", "2", "0")
        assert not os.path.exists(os.path.join(tmp_path, "g", "ntk", "c", "2", "2"))
    else:
        data, path = tile.tobytes(), os.path.join(tmp_path, "g", "ntk", "c", "2", "2")
    with open(path, "rb") as fh:
        assert fh.read() == data + _crc(data)
    with open(os.path.join(tmp_path, "g", "ntk", "c", "0", "1"), "rb") as fh:
        raw = fh.read()
    assert raw == S[0:4, 4:8].tobytes() + _crc(S[0:4, 4:8].tobytes())
    with open(path, "r+b") as fh:  # corrupt the diagonal tile: named, then deleted and gone
        fh.seek(3)
        fh.write(b"\xff")
    assert g.bad_chunks("ntk", g.iter_tiles()) == [(2, 2)]
    with pytest.raises(CorruptTileError, match=r"tile \(2, 2\)"):
        g.read_tile_into("ntk", 2, 2, None)
    g.delete_chunk("ntk", (2, 2))
    assert (2, 2) not in g.done_chunks("ntk") and g.bad_chunks("ntk", [(2, 2)]) == []


def test_factor_chunks_are_raw_bytes_and_crc(tmp_path):
    f, U = _factor(tmp_path / "f"), np.triu(_sym(1))
    for i in range(3):
        for j in range(i, 3):
            r, c = f.tile_bounds(i, j)
            f.write_tile(i, j, U[r, c])
    assert f.done_tiles() == {(i, j) for i in range(3) for j in range(i, 3)} and f.has_tile(1, 2)
    np.testing.assert_array_equal(f.read_tile(1, 2), U[4:8, 8:])
    tile = np.zeros((T, T))
    tile[:, :2] = U[4:8, 8:]
    with open(os.path.join(tmp_path, "f", "U", "c", "1", "2"), "r+b") as fh:
        assert fh.read() == tile.tobytes() + _crc(tile.tobytes())
        fh.seek(0)
        fh.write(b"\x01")
    with pytest.raises(CorruptTileError, match=r"factor tile \(1, 2\)"):
        f.read_tile(1, 2)
    f.delete_tile(1, 2)
    assert not f.has_tile(1, 2) and (1, 2) not in f.done_tiles()


def test_write_behind_is_read_back_in_order_and_raises_a_failed_write(tmp_path, monkeypatch):
    """A tile queued by write_buffer_behind is read back (the read waits for the write), the
    queue holds one write at a time, and a write that failed is raised by the next queued
    write and by flush_writes, never lost."""
    import threading

    from ntkscale.storage import chunks
    from ntkscale.storage.factor_store import flush_writes

    f, U = _factor(tmp_path / "f"), np.triu(_sym(2))
    gate, real = threading.Event(), FactorStore.write_buffer

    def slow(self, i, j, flat):  # the first write waits until the test lets it go
        gate.wait(5)
        real(self, i, j, flat)

    monkeypatch.setattr(FactorStore, "write_buffer", slow)
    flat, full = chunks.tile_buffer(T, np.float64)
    full[:] = U[:T, :T]
    f.write_buffer_behind(0, 0, flat)
    assert not f.has_tile(0, 0)  # still queued
    threading.Timer(0.2, gate.set).start()
    np.testing.assert_array_equal(f.read_tile(0, 0), U[:T, :T])  # waited for the write
    flush_writes()

    def full_disk(self, i, j, flat):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(FactorStore, "write_buffer", full_disk)
    f.write_buffer_behind(0, 1, chunks.tile_buffer(T, np.float64)[0])
    with pytest.raises(OSError, match="No space left"):
        f.write_buffer_behind(1, 1, chunks.tile_buffer(T, np.float64)[0])  # the earlier error
    assert not f.has_tile(1, 1)
    f.write_buffer_behind(1, 1, chunks.tile_buffer(T, np.float64)[0])
    with pytest.raises(OSError, match="No space left"):
        flush_writes()
    flush_writes()  # nothing left queued
    assert f.done_tiles() == {(0, 0)}


def test_direct_chunk_write_is_exact_atomic_and_cleans_up(tmp_path, monkeypatch):
    """write_path_direct: the file holds exactly the buffer (whole blocks direct, the tail plain);
    an unaligned buffer is declined (nothing written); a failed write leaves no partial file and
    the old chunk untouched."""
    from ntkscale.storage import chunks

    flat, full = chunks.tile_buffer(33, np.float64)  # 8716 bytes: 2 whole blocks and a tail
    assert flat.ctypes.data % 4096 == 0
    full[:] = np.arange(33 * 33).reshape(33, 33)
    flat[-4:] = 7
    target = tmp_path / "U" / "c" / "0" / "1"
    if not chunks.write_path_direct(target, flat):
        pytest.skip("this filesystem does not do O_DIRECT")
    assert target.read_bytes() == flat.tobytes()
    assert not chunks.write_path_direct(tmp_path / "x", np.ones(10, np.uint8)[1:])  # unaligned
    assert not (tmp_path / "x").exists()

    def einval(*a):
        raise OSError(22, "Invalid argument")

    monkeypatch.setattr(chunks.os, "pwrite", einval)  # a filesystem that refuses direct writes
    assert not chunks.write_path_direct(tmp_path / "y", chunks.tile_buffer(33, np.float64)[0])
    assert not (tmp_path / "y").exists() and not list(tmp_path.rglob("*.partial"))

    def enospc(*a):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(chunks.os, "pwrite", enospc)
    with pytest.raises(OSError, match="No space left"):
        chunks.write_path_direct(target, chunks.tile_buffer(33, np.float64)[0])
    assert target.read_bytes() == flat.tobytes()
    assert not list(tmp_path.rglob("*.partial"))
