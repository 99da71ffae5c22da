"""Where the tiled Cholesky runs ('host' vs 'worker' placement) and the zero-copy tile path.

The task computes each tile in the memory of the chunk it writes (the transposed
recurrence on the Fortran view of the C-ordered tile). These tests pin the branches of
that path against LAPACK: a Gram chunk read straight into the output buffer, a float32
Gram cast into a float64 factor, factor tiles cut out of bigger Gram chunks, and ragged
edge tiles. Tolerance as in test_cholesky.py: 1e-10 of the largest entry (cond ~ 2e3).
"""

import os

import numpy as np
import pytest
import scipy.linalg as sla

from ntkscale.operator import StoredGram
from ntkscale.tiling import build_gram
from ntkscale.tiling import cholesky as chol
from ntkscale.tiling.cholesky import factor_tiles

from .conftest import data, make_arch, stored_gram
from .test_cholesky import RTOL, _factor_array, _ref


def _assert_equals_lapack(op, url, rel=1e-2, **kw):
    K, lam, U_ref = _ref(op, rel)
    f = factor_tiles(op, lam, factor_url=url, **kw)
    U = _factor_array(url)
    assert U.dtype == f.dtype
    np.testing.assert_allclose(U, U_ref, rtol=0, atol=(RTOL if f.dtype == np.float64 else 1e-4) * np.abs(U_ref).max())
    return f


@pytest.mark.parametrize("tile", [None, 32, 48])
def test_zero_copy_and_sub_tile_paths_sync(gram300, tmp_path, tile):
    """Gram tile 64: factor tile 64 reads chunks into the output buffer; 32 and 48... 32 cuts
    each Gram chunk in four; the 300-point grid leaves ragged edge tiles in every case."""
    op = StoredGram(gram300, "ntk", client="sync")
    if tile == 48:
        with pytest.raises(ValueError, match="exact divisor"):
            factor_tiles(op, 1.0, factor_url=str(tmp_path / "f"), tile=tile)
        return
    _assert_equals_lapack(op, str(tmp_path / "f"), tile=tile)


def test_float32_gram_into_float64_and_float32_factors(tmp_path):
    X = data(257, seed=3)
    build_gram(make_arch(), X, tmp_path / "g", get="ntk", tile=64, dtype=np.float32, client="sync")
    op = StoredGram(tmp_path / "g", "ntk", client="sync")
    assert op.store.array("ntk").dtype == np.float32
    f = _assert_equals_lapack(op, str(tmp_path / "f64"))  # the stored float32 values, factored in float64
    assert f.dtype == np.float64
    assert _assert_equals_lapack(op, str(tmp_path / "f32"), dtype=np.float32).dtype == np.float32


def test_placement_is_validated(gram300, tmp_path):
    op = StoredGram(gram300, "ntk", client="sync")
    with pytest.raises(ValueError, match="placement must be one of"):
        factor_tiles(op, 1.0, factor_url=str(tmp_path / "f"), placement="node")


@pytest.mark.cluster
def test_hosts_group_the_workers(client):
    from ntkscale.runner import get_runner

    (h,) = get_runner(client).hosts()
    workers = client.scheduler_info(n_workers=-1)["workers"]
    assert h.workers == 2 and h.threads == 2 and h.leader == sorted(workers)[0]
    assert h.memory == pytest.approx(sum(w["memory_limit"] for w in workers.values()))


@pytest.mark.cluster
def test_host_placement_runs_on_the_leader_with_all_threads(client, tmp_path):
    """'host': every tile on the leading worker, which gets both cores' BLAS threads during
    a task and its own single thread back afterwards; 'worker' gives the same factor."""
    from threadpoolctl import threadpool_info

    op = StoredGram(stored_gram(tmp_path / "g", 300, seed=5, tile=32), "ntk", client=client)
    seen: list = []
    f = _assert_equals_lapack(op, str(tmp_path / "host"), tile=32, on_tile=seen.append)
    leader = sorted(client.scheduler_info(n_workers=-1)["workers"])[0]
    assert len(seen) == f.n_tiles == 55 and {r[3] for r in seen} == {client.run(os.getpid)[leader]}
    threads = client.run(lambda: max(p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"))
    assert set(threads.values()) == {1}  # restored after the tasks
    _assert_equals_lapack(op, str(tmp_path / "worker"), tile=32, placement="worker")


@pytest.mark.cluster
def test_host_task_uses_the_hosts_threads(client):
    """Inside a task on the leader, BLAS runs with the host's 2 threads."""
    from ntkscale.tiling.cholesky_tasks import _blas_threads, _Ctx

    leader = sorted(client.scheduler_info(n_workers=-1)["workers"])[0]
    ctx = _Ctx("g", "b", "ntk", "f", "id", 0.0, "float64", "run", threads=((leader, 2),))
    got = {w: client.submit(_blas_threads, ctx, workers=[w], pure=False).result()
           for w in client.scheduler_info(n_workers=-1)["workers"]}
    assert got[leader] == 2 and [v for k, v in got.items() if k != leader] == [None]
    assert _blas_threads(ctx) is None  # not in a worker


@pytest.mark.cluster
def test_a_leader_that_left_stops_the_run_with_an_error(client, tmp_path, monkeypatch):
    """Tasks pinned to a worker that is gone would wait forever: the run raises instead,
    within a few polls, and the finished tiles stay for a re-run."""
    op = StoredGram(stored_gram(tmp_path / "g", 100, seed=2), "ntk", client=client)
    monkeypatch.setattr(chol, "_POLL_S", 0.2)
    gone = chol.HostSlot("10.255.255.1", "tcp://10.255.255.1:1", 2, 2**30, 1)
    monkeypatch.setattr(type(op.runner), "hosts", lambda self: [gone])
    with pytest.raises(RuntimeError, match="left the cluster; run the factorization again"):
        factor_tiles(op, 1.0, factor_url=str(tmp_path / "f"))
    monkeypatch.undo()
    K, lam, U_ref = _ref(op, 1e-2)
    f = factor_tiles(op, lam, factor_url=str(tmp_path / "f"), overwrite=True)  # the cluster is fine
    np.testing.assert_allclose(_factor_array(f.url), U_ref, rtol=0, atol=RTOL * np.abs(U_ref).max())
    assert sla.norm(U_ref) > 0


def test_kept_tiles_serve_repeated_solves(gram300, tmp_path, monkeypatch):
    """Refinement solves again and again: kept tiles are read from the store once."""
    from ntkscale.storage.factor_store import FactorStore

    op = StoredGram(gram300, "ntk", client="sync")
    K, lam, U_ref = _ref(op, 1e-2)
    f = factor_tiles(op, lam, factor_url=str(tmp_path / "f"))
    Y = np.random.default_rng(2).standard_normal((300, 2))
    plain = f.solve(Y)
    reads: list = []
    real = FactorStore.read_tile
    monkeypatch.setattr(FactorStore, "read_tile", lambda self, i, j: reads.append((i, j)) or real(self, i, j))
    assert not f.keep_tiles(f.nbytes - 1) and f.keep_tiles(f.nbytes)
    first = f.solve(Y)
    assert sorted(reads) == sorted({(i, j) for i in range(5) for j in range(i, 5)})  # each tile once
    assert np.array_equal(f.solve(Y), first) and len(reads) == f.n_tiles == 15  # no more reads
    np.testing.assert_array_equal(first, plain)
    f.drop_tiles()
    f.solve(Y)
    assert len(reads) == 45  # forward and backward sweeps stream again
    # a float32 factor solves in float32 and returns float64
    f32 = factor_tiles(op, lam, factor_url=str(tmp_path / "f32"), dtype=np.float32)
    x = f32.solve(Y)
    assert x.dtype == np.float64
    X_ref = sla.cho_solve((U_ref, False), Y)
    err = np.abs(x - X_ref).max() / np.abs(X_ref).max()
    assert 1e-9 < err < 1e-3  # float32 accuracy (cond ~ 2e3 x 2^-24), not float64


def test_a_failing_task_lets_the_queued_writes_land_first(tmp_path, monkeypatch):
    """Write-behind: a task that fails (a POTRF breakdown) waits for the tile writes queued
    before it, so none lands after the error, in a store that a jitter retry has recreated."""
    import threading

    from ntkscale.storage import chunks
    from ntkscale.storage.factor_store import FactorStore, flush_writes
    from ntkscale.tiling import cholesky_tasks as ct

    fs = FactorStore.create(str(tmp_path / "f"), {"n": 8, "tile": 4, "dtype": "float64", "kind": "ntk",
                                                  "factor_id": "fid"})
    real, started = FactorStore.write_buffer, threading.Event()

    def slow(self, i, j, flat):
        started.set()
        threading.Event().wait(0.5)
        real(self, i, j, flat)

    def breakdown(ctx, fs_, i, j):
        raise ct.TileBreakdown(i, 0)

    monkeypatch.setattr(FactorStore, "write_buffer", slow)
    monkeypatch.setattr(ct, "_compute_tile", breakdown)
    fs.write_buffer_behind(0, 0, chunks.tile_buffer(4, np.float64)[0])
    started.wait(5)
    ctx = ct._Ctx("g", "b", "ntk", fs.url, "fid", 0.0, "float64", "run", write_behind=True)
    with pytest.raises(ct.TileBreakdown):
        ct.factor_tile_task(ctx, 1, 1)
    assert fs.has_tile(0, 0)  # written before the error left the task
    flush_writes()
