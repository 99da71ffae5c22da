"""Chunks corrupted on disk: ``build_gram(..., repair=True)`` verifies every chunk (size and
CRC32C), deletes exactly the bad ones, recomputes exactly those tiles / statistics, rewrites
bad input chunks from X, and reports them; the store ends bit-identical to a clean one."""

import json
import os
import shutil

import numpy as np
import pytest

from ntkscale.operator import StoredGram
from ntkscale.storage import CorruptTileError, GramStore
from ntkscale.tiling import build_gram

from .conftest import TILE, chunk_bytes, data


def _flip(path, offset=100):
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(4)
        f.seek(offset)
        f.write(bytes(x ^ 0xFF for x in b))


@pytest.fixture
def clean(arch, tmp_path):
    path = tmp_path / "clean"
    build_gram(arch, data(seed=6), path, get=("nngp", "ntk"), tile=TILE, client="sync")
    return path


def test_repair_recomputes_exactly_the_corrupt_tile(arch, clean, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(clean, bad)
    _flip(bad / "ntk" / "c" / "1" / "3")
    with pytest.raises(CorruptTileError, match=r"tile \(1, 3\)"):
        StoredGram(bad, "ntk").to_numpy()
    plain = build_gram(arch, data(seed=6), bad, get=("nngp", "ntk"), tile=TILE, client="sync")
    assert plain.computed == 0 and plain.repaired == []  # a plain resume trusts existing chunks
    rep = build_gram(arch, data(seed=6), bad, get=("nngp", "ntk"), tile=TILE, client="sync", repair=True)
    assert rep.repaired == [("ntk", (1, 3))] and rep.computed == 1
    assert chunk_bytes(bad) == chunk_bytes(clean) and GramStore.open(bad).meta["complete"]
    again = build_gram(arch, data(seed=6), bad, get=("nngp", "ntk"), tile=TILE, client="sync", repair=True)
    assert again.repaired == [] and again.computed == 0


def test_repair_of_truncated_tiles_statistics_and_inputs(arch, clean, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(clean, bad)
    with open(bad / "nngp" / "c" / "0" / "4", "r+b") as f:
        f.truncate(1000)  # wrong size
    _flip(bad / "stats1" / "c" / "0" / "2", 40)
    _flip(bad / "x1" / "c" / "3" / "0", 8)
    rep = build_gram(arch, data(seed=6), bad, get=("nngp", "ntk"), tile=TILE, client="sync", repair=True)
    assert rep.repaired == [("nngp", (0, 4)), ("stats1", (0, 2)), ("x1", (3, 0))]
    assert rep.computed == 1  # tile (0, 4); statistics are recomputed, inputs rewritten from X
    assert chunk_bytes(bad) == chunk_bytes(clean)


def test_repair_of_corrupt_packed_diagonal_tiles(arch, clean, tmp_path):
    """Diagonal tiles live in packed chunks (``{kind}_diag/c/i/0``): a flipped or truncated one
    is named as its tile when read, found by the verification and recomputed."""
    bad = tmp_path / "bad"
    shutil.copytree(clean, bad)
    assert not (bad / "ntk" / "c" / "2" / "2").exists() and (bad / "ntk_diag" / "c" / "2" / "0").exists()
    _flip(bad / "ntk_diag" / "c" / "2" / "0", 3000)
    with open(bad / "nngp_diag" / "c" / "4" / "0", "r+b") as f:
        f.truncate(500)
    with pytest.raises(CorruptTileError, match=r"tile \(2, 2\)"):
        StoredGram(bad, "ntk")[130:140, 130:140]
    for io in ("mapped", "direct", "buffered"):
        with pytest.raises(CorruptTileError, match=r"nngp.*tile \(4, 4\).*500 bytes"):
            StoredGram(bad, "nngp", io=io).matvec(np.ones(300))
    rep = build_gram(arch, data(seed=6), bad, get=("nngp", "ntk"), tile=TILE, client="sync", repair=True)
    assert rep.repaired == [("nngp", (4, 4)), ("ntk", (2, 2))] and rep.computed == 2
    assert chunk_bytes(bad) == chunk_bytes(clean)


@pytest.mark.cluster
def test_repair_verifies_on_the_cluster(arch, clean, tmp_path, client):
    bad = tmp_path / "bad"
    shutil.copytree(clean, bad)
    _flip(bad / "ntk_diag" / "c" / "0" / "0")  # diagonal tile (0, 0): its packed chunk
    _flip(bad / "ntk" / "c" / "2" / "4", 5000)
    rep = build_gram(arch, data(seed=6), bad, get=("nngp", "ntk"), tile=TILE, client=client, repair=True)
    assert rep.repaired == [("ntk", (0, 0)), ("ntk", (2, 4))] and rep.computed == 2
    assert chunk_bytes(bad) == chunk_bytes(clean)


def test_repair_command(tmp_path):
    """``ntkscale gram JOB.toml --repair`` on a job's store."""
    from click.testing import CliRunner

    from ntkscale.cli.main import cli

    job = tmp_path / "job.toml"
    job.write_text(f"""
[job]
out = "{tmp_path / 'run'}"
[data]
source = "sklearn"
name = "digits"
n_train = 200
n_test = 50
[model]
depth = 1
[kernel]
tile = 64
[cluster]
kind = "sync"
""")
    r = CliRunner().invoke(cli, ["--log-level", "warning", "gram", str(job)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    store = tmp_path / "run" / "gram.zarr"
    kind = sorted(d for d in os.listdir(store) if d in ("ntk", "nngp"))[-1]
    _flip(store / kind / "c" / "1" / "2")
    r = CliRunner().invoke(cli, ["--log-level", "warning", "gram", str(job), "--repair"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    got = json.loads(r.output[r.output.index("{"):])
    assert got["computed"] == 1 and got["repaired"] == [[kind, [1, 2]]]
