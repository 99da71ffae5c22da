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
