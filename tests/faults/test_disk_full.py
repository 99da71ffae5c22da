"""Disk full: a pre-flight check refuses a build whose missing chunks do not fit, before any
tile is computed; a write that finds the disk full anyway (ENOSPC) ends the build with an
error naming the store and the space needed, leaves only whole chunks and an incomplete
store, and a re-run after space is freed resumes and ends bit-identical to a clean build."""

import errno
import os
import shutil
import subprocess

import numpy as np
import pytest

from ntkscale.storage import DiskFullError, GramStore
from ntkscale.tiling import build_gram, space

from .conftest import TILE, chunk_bytes, data, n_chunks

KINDS = ("nngp", "ntk")
FULL = TILE * TILE * 8 + 4  # one float64 off-diagonal tile chunk (data + CRC32C)
PACKED = (TILE + 1) // 2 * (TILE + 1) * 8 + 4  # one packed diagonal tile chunk
TILES = 10 * FULL + 5 * PACKED  # a kind of the 5x5 grid: 10 off-diagonal and 5 diagonal tiles


def _build(arch, path, **kw):
    return build_gram(arch, data(seed=7), path, get=KINDS, tile=TILE, dtype=np.float64, client="sync", **kw)


def _sound(path):
    """No temporary files, and every chunk there is whole (size and CRC32C)."""
    partials = [f for _, _, fs in os.walk(path) for f in fs if f.endswith(".partial")]
    gs = GramStore.open(path)
    bad = [(k, gs.bad_chunks(k, gs.done_chunks(k))) for k in ("x1", "stats1", *KINDS)]
    return not partials and all(not b for _, b in bad)


def test_remaining_bytes_are_what_the_build_writes(arch, tmp_path):
    """The pre-flight arithmetic is exact: the bytes of the tile and statistic chunk files."""
    rep = _build(arch, tmp_path / "g")
    gs = GramStore.open(tmp_path / "g", mode="r+")
    assert space.remaining(gs) == (0, 0)
    written = sum(os.path.getsize(os.path.join(r, f)) for a in ("stats1", *KINDS, *(f"{k}_diag" for k in KINDS))
                  for r, _, fs in os.walk(tmp_path / "g" / a) for f in fs if f != "zarr.json")
    assert gs.diag_layout == "packed" and gs.tile_nbytes("ntk", 1, 1) == PACKED < gs.tile_nbytes("ntk", 1, 2)
    for k in KINDS:
        for t in sorted(gs.done_chunks(k))[:4]:  # (0, 0) ... (0, 3): one diagonal tile, three others
            gs.delete_chunk(k, t)
    gs.delete_chunk("stats1", (0, 1))
    n_missing, need = space.remaining(gs)
    assert n_missing == 4 and rep.n_tiles == 15
    assert need == 2 * (3 * FULL + PACKED) + (gs.chunk_nbytes("stats1"))
    assert written == 2 * TILES + 5 * gs.chunk_nbytes("stats1")


def test_preflight_refuses_before_any_tile(arch, tmp_path, monkeypatch):
    path = tmp_path / "g"
    monkeypatch.setattr(space, "free_bytes", lambda url: 100_000)
    with pytest.raises(DiskFullError) as e:
        _build(arch, path)
    msg = str(e.value)
    assert str(path) in msg and "for its 15 tiles" in msg and "100000 bytes" in msg and "nothing was written" in msg
    assert "free space" in msg.lower() and "check_space=False" in msg and space.SKIP_ENV in msg
    assert not os.path.exists(path)  # nothing is created before the checks pass (issue 24)
    monkeypatch.setenv(space.SKIP_ENV, "1")
    assert _build(arch, path).computed == 15
    monkeypatch.delenv(space.SKIP_ENV)
    assert _build(arch, path, check_space=True).computed == 0  # nothing missing: nothing needed


def _check_resume(arch, path, clean, missing_before):
    rep = _build(arch, path)
    assert rep.resumed and rep.computed == missing_before
    assert chunk_bytes(path) == chunk_bytes(clean) and GramStore.open(path).meta["complete"]


def test_enospc_while_writing_a_chunk(arch, tmp_path, monkeypatch):
    """Simulated: the 6th tile write fails with ENOSPC (any platform, no root needed)."""
    clean, path = tmp_path / "clean", tmp_path / "g"
    _build(arch, clean)
    real, calls = GramStore.write_tile, []

    def write_tile(self, name, i, j, values):
        calls.append((name, i, j))
        if len(calls) == 11:  # the 6th tile's first kind
            raise OSError(errno.ENOSPC, "No space left on device", str(self.url))
        return real(self, name, i, j, values)

    monkeypatch.setattr(GramStore, "write_tile", write_tile)
    with pytest.raises(DiskFullError, match="ran out of disk space") as e:
        _build(arch, path)
    assert str(path) in str(e.value) and "missing tiles" in str(e.value) and "run the same build again" \
        in str(e.value)
    monkeypatch.undo()
    gs = GramStore.open(path)
    assert not gs.meta["complete"] and _sound(path)
    done = set.intersection(*(gs.done_chunks(k) for k in KINDS))
    assert len(done) == 5
    _check_resume(arch, path, clean, 10)


@pytest.fixture
def small_disk(tmp_path):
    """A 400 KiB tmpfs (root and mount(8) needed; skipped otherwise), unmounted afterwards."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_real_disk_full_then_space_freed(arch, tmp_path, small_disk):
    """A real ENOSPC on a 400 KiB file system: whole chunks only, the store incomplete; the
    file system is then grown (space freed) and the build resumes."""
    clean, path = tmp_path / "clean", small_disk / "g"
    _build(arch, clean)
    with pytest.raises(DiskFullError, match="would need"):  # the pre-flight check: ~980 KiB > 400 KiB
        _build(arch, path)
    assert not path.exists()  # refused before anything was written
    with pytest.raises(DiskFullError, match="ran out of disk space") as e:
        _build(arch, path, check_space=False)  # as if another process filled the disk meanwhile
    assert str(path) in str(e.value) and "free now" in str(e.value)
    assert not GramStore.open(path).meta["complete"] and _sound(path)
    done = set.intersection(*(GramStore.open(path).done_chunks(k) for k in KINDS))
    assert 0 < len(done) < 15
    subprocess.run(["mount", "-o", "remount,size=4m", str(small_disk)], check=True)
    _check_resume(arch, path, clean, 15 - len(done))
