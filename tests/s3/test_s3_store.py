"""A Gram store on an S3 endpoint (``s3://`` through s3fs, against moto's server on loopback):
built on a real LocalCluster it equals the same build on local disk chunk for chunk; a killed
client's build resumes computing only the missing tiles; the lock refuses a second build
(atomically: S3 conditional writes); a flipped byte in one chunk object is named when read
and repaired by recomputing exactly that tile; PCG over the S3 store gives the local-disk
result; and an S3 prefix holding a foreign object is refused with nothing written or deleted.
"""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

from ntkscale.operator import StoredGram
from ntkscale.solvers import pcg
from ntkscale.storage import CorruptTileError, GramStore, StoreLock, StoreLockedError, UnsafePathError
from ntkscale.storage.writer import LOCK_KEY
from ntkscale.tiling import build_gram

from faults.conftest import PRELUDE, N, TILE, chunk_bytes, data, kill_when, make_arch, run_py, start_py

pytestmark = pytest.mark.s3

KINDS = ("nngp", "ntk")

BUILD = PRELUDE + """
from ntkscale.tiling import build_gram
rep = build_gram(arch, data({n}, seed=5), {url!r}, get=("nngp", "ntk"), tile={tile}, client="sync",
                 storage_options={opts!r}, _delay={delay})
print(json.dumps(dict(computed=rep.computed, n_tiles=rep.n_tiles)))
"""


def _flip(s3, key, offset=100):
    fs, path = s3.fs, f"{s3.bucket}/{key}"
    raw = bytearray(fs.cat(path))
    raw[offset:offset + 4] = bytes(b ^ 0xFF for b in raw[offset:offset + 4])
    fs.pipe(path, bytes(raw))


@pytest.fixture(scope="module")
def local_ref(tmp_path_factory):
    """The reference build on local disk (in-process, single-threaded BLAS as the subprocesses)."""
    path = tmp_path_factory.mktemp("ref") / "g"
    run_py(BUILD.format(n=N, url=str(path), tile=TILE, opts=None, delay=0.0))
    return path


@pytest.mark.cluster
def test_cluster_build_on_s3_equals_local_disk_and_pcg_agrees(s3, client, tmp_path):
    arch, X = make_arch(), data(seed=5)
    local, url = tmp_path / "g", s3.url("g.zarr")
    ref = build_gram(arch, X, local, get=KINDS, tile=TILE, client=client)
    rep = build_gram(arch, X, url, get=KINDS, tile=TILE, client=client, storage_options=s3.options)
    assert rep.computed == rep.n_tiles == ref.n_tiles == 15 and not rep.resumed
    assert s3.chunk_bytes("g.zarr") == chunk_bytes(local)  # every tile, input and statistic
    assert not s3.fs.exists(f"{s3.bucket}/g.zarr/{LOCK_KEY}")
    again = build_gram(arch, X, url, get=KINDS, tile=TILE, client=client, storage_options=s3.options)
    assert again.computed == 0 and again.resumed  # resume lists the chunk objects

    y = np.sin(X[:, 0])
    with StoredGram(local, "ntk", client=client) as op_local, \
            StoredGram(url, "ntk", client=client, storage_options=s3.options) as op_s3:
        assert op_s3.io == "buffered"  # no mmap / O_DIRECT on an object store
        V = np.random.default_rng(1).standard_normal((N, 3))
        # the same tiles; partial products are summed in completion order (rounding only)
        np.testing.assert_allclose(op_s3.matvec(V), op_local.matvec(V), rtol=1e-12, atol=0)
        lam = 0.1 * float(np.mean(op_local.diag()))
        a, b = pcg(op_local, y, lam, tol=1e-8), pcg(op_s3, y, lam, tol=1e-8)
    # unpreconditioned CG amplifies the rounding of completion-order sums: 58-61 iterations seen
    # (a CI run under load gave 61 vs 59); the solutions' agreement below is the real check
    assert a.converged and b.converged and abs(a.iterations - b.iterations) <= 3
    np.testing.assert_allclose(b.x, a.x, rtol=1e-6, atol=1e-6 * float(np.abs(a.x).max()))
    assert a.iterations < N, a.iterations  # a real Krylov solve (58-61 measured: rounding moves it)


def test_build_resumes_after_the_client_was_killed(s3, local_ref):
    url = s3.url("part.zarr")
    p = start_py(BUILD.format(n=N, url=url, tile=TILE, opts=s3.options, delay=0.3))
    kill_when(p, lambda: s3.n_chunks("part.zarr", "ntk") >= 4)
    gs = GramStore.open(url, storage_options=s3.options)
    done = set.intersection(*(gs.done_chunks(k) for k in KINDS))
    assert 3 <= len(done) < 15 and not gs.meta["complete"]
    assert s3.fs.exists(f"{s3.bucket}/part.zarr/{LOCK_KEY}")  # the dead client's lock
    out, err = run_py(BUILD.format(n=N, url=url, tile=TILE, opts=s3.options, delay=0.0))
    assert "taking over the lock" in err  # same host, its process is gone
    assert json.loads(out)["computed"] == 15 - len(done)
    assert s3.chunk_bytes("part.zarr") == chunk_bytes(local_ref)
    assert GramStore.open(url, storage_options=s3.options).meta["complete"]


def test_second_build_is_refused_while_the_first_runs(s3):
    url = s3.url("g.zarr")
    first = start_py(BUILD.format(n=N, url=url, tile=TILE, opts=s3.options, delay=0.3))
    try:
        deadline = time.monotonic() + 60
        while s3.n_chunks("g.zarr", "ntk") < 2:
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        for kw in ({}, {"overwrite": True}):
            with pytest.raises(StoreLockedError, match=f"process {first.pid} .*{LOCK_KEY}"):
                build_gram(make_arch(), data(seed=5), url, get=KINDS, tile=TILE, client="sync",
                           storage_options=s3.options, **kw)
        out, err = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, err[-2000:]
    assert json.loads(out)["computed"] == 15  # not disturbed
    assert not s3.fs.exists(f"{s3.bucket}/g.zarr/{LOCK_KEY}")


def test_the_s3_lock_is_atomic(s3):
    """Eight lockers racing for one S3 store: the conditional PUT (If-None-Match: *) lets
    exactly one through, whatever the interleaving (a check-then-write marker could let
    several through)."""
    url = s3.url("race.zarr")
    assert StoreLock(url, storage_options=s3.options).atomic
    barrier, won, refused = threading.Barrier(8), [], []

    def take():
        lock = StoreLock(url, what="Gram build", storage_options=s3.options)
        barrier.wait()
        try:
            won.append(lock.acquire())
        except StoreLockedError:
            refused.append(lock)

    for _ in range(3):
        threads = [threading.Thread(target=take) for _ in range(8)]
        [t.start() for t in threads]
        [t.join(60) for t in threads]
        assert len(won) == 1 and len(refused) == 7
        won.pop().release()
        refused.clear()
        assert not s3.fs.exists(f"{s3.bucket}/race.zarr/{LOCK_KEY}")


def test_corrupt_chunk_object_is_named_and_repaired(s3, local_ref):
    url = s3.url("g.zarr")
    run_py(BUILD.format(n=N, url=url, tile=TILE, opts=s3.options, delay=0.0))
    _flip(s3, "g.zarr/ntk/c/1/3")
    _flip(s3, "g.zarr/nngp_diag/c/2/0", 3000)
    with pytest.raises(CorruptTileError, match=r"'ntk' tile \(1, 3\)"):
        StoredGram(url, "ntk", storage_options=s3.options).matvec(np.ones(N))
    rep = build_gram(make_arch(), data(seed=5), url, get=KINDS, tile=TILE, client="sync",
                     storage_options=s3.options, repair=True)
    assert rep.repaired == [("nngp", (2, 2)), ("ntk", (1, 3))] and rep.computed == 2
    assert s3.chunk_bytes("g.zarr") == chunk_bytes(local_ref)


def test_foreign_object_in_the_prefix_is_refused_and_kept(s3):
    fs = s3.fs
    fs.pipe(f"{s3.bucket}/g.zarr/notes.txt", b"mine")
    with pytest.raises(UnsafePathError, match="notes.txt"):
        build_gram(make_arch(), data(100), s3.url("g.zarr"), get="ntk", tile=TILE, client="sync",
                   storage_options=s3.options)
    assert fs.find(f"{s3.bucket}/g.zarr") == [f"{s3.bucket}/g.zarr/notes.txt"]  # nothing written
    assert fs.cat(f"{s3.bucket}/g.zarr/notes.txt") == b"mine"


def test_credentials_from_the_environment(s3, monkeypatch):
    """No storage_options: s3fs / botocore read AWS_* from the environment (how workers of a
    cluster started with these variables, and the CLI, reach the bucket)."""
    for k, v in s3.env.items():
        monkeypatch.setenv(k, v)
    url = s3.url("env.zarr")
    rep = build_gram(make_arch(), data(100), url, get="ntk", tile=TILE, client="sync")
    assert rep.computed == 3
    assert StoredGram(url, "ntk").to_numpy().shape == (100, 100)


def test_repair_command_on_an_s3_store(s3, tmp_path, monkeypatch):
    """``ntkscale gram JOB.toml --repair`` with ``[kernel] store = "s3://..."``, credentials from
    the environment (jobs and the CLI take no storage_options)."""
    from click.testing import CliRunner

    from ntkscale.cli.main import cli

    for k, v in s3.env.items():
        monkeypatch.setenv(k, v)
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
store = "{s3.url('job.zarr')}"
[cluster]
kind = "sync"
""")
    r = CliRunner().invoke(cli, ["--log-level", "warning", "gram", str(job)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    kind = sorted(k.rsplit("/", 1)[-1] for k in s3.fs.ls(f"{s3.bucket}/job.zarr") if k.endswith(("/ntk", "/nngp")))[-1]
    _flip(s3, f"job.zarr/{kind}/c/1/2")
    r = CliRunner().invoke(cli, ["--log-level", "warning", "gram", str(job), "--repair"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    got = json.loads(r.output[r.output.index("{"):])
    assert got["computed"] == 1 and got["repaired"] == [[kind, [1, 2]]]
