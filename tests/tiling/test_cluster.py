"""Builds on a real LocalCluster (2 worker processes): equality, interruption, resume."""

import time

import numpy as np
import pytest

from ntkscale.operator import StoredGram
from ntkscale.tiling import build_gram

from .conftest import chunk_bytes, data, sigkill

pytestmark = pytest.mark.cluster

N, TILE = 700, 128  # 6x6 grid, 21 upper tiles; 700 is not a multiple of 128


def test_cluster_build_matches_dense(client, arch, tmp_path):
    X = data(N, seed=10)
    rep = build_gram(arch, X, tmp_path / "g", get=("nngp", "ntk"), tile=TILE, dtype=np.float64, client=client)
    assert rep.n_tiles == 21 and rep.computed == 21 and not rep.resumed
    K = arch.kernel_fn(X, None)
    with StoredGram(tmp_path / "g", "ntk", client=client) as op:
        # workers run single-threaded BLAS, the dense reference multi-threaded: the GEMM
        # blocking differs, hence 1e-12 rather than bitwise
        np.testing.assert_allclose(op.to_numpy(), K.ntk, rtol=1e-12, atol=1e-12)
        V = np.random.default_rng(0).standard_normal((N, 3))
        np.testing.assert_allclose(op.matvec(V), K.ntk @ V, rtol=1e-10)
        np.testing.assert_allclose(op.matvec(V[:, 0]), K.ntk @ V[:, 0], rtol=1e-10)
        # the same V again and again (as a solver may send): each call scatters its own copy;
        # with content-hashed keys this used to fail with "lost dependencies"
        for _ in range(6):
            np.testing.assert_allclose(op.matvec(V), K.ntk @ V, rtol=1e-10)
        assert op.passes == 8


def test_resume_after_client_stop_is_bit_identical(client, arch, tmp_path):
    X = data(N, seed=11)
    clean = tmp_path / "clean"
    build_gram(arch, X, clean, get=("nngp", "ntk"), tile=TILE, client=client)

    part = tmp_path / "part"
    seen = []

    def stop_after_five(result):
        seen.append(result)
        if len(seen) == 5:
            raise KeyboardInterrupt("user stopped the client")

    with pytest.raises(KeyboardInterrupt):
        build_gram(arch, X, part, get=("nngp", "ntk"), tile=TILE, client=client, on_tile=stop_after_five,
                   _delay=0.05)
    # a task already running when the client stopped still finishes its chunk: let it land
    # before counting the finished tiles (otherwise the count races with it)
    deadline = time.monotonic() + 30
    while any(client.processing().values()) and time.monotonic() < deadline:
        time.sleep(0.05)
    with pytest.raises(ValueError, match="incomplete"):
        StoredGram(part, "ntk")
    from ntkscale.storage import GramStore

    stored = GramStore.open(part)
    done = set.intersection(*(stored.done_chunks(k) for k in ("nngp", "ntk")))
    assert 5 <= len(done) < 21  # tasks already running may have finished too
    rep = build_gram(arch, X, part, get=("nngp", "ntk"), tile=TILE, client=client)
    assert rep.resumed and rep.computed == 21 - len(done)
    assert chunk_bytes(part) == chunk_bytes(clean)
    again = build_gram(arch, X, part, get=("nngp", "ntk"), tile=TILE, client=client)
    assert again.computed == 0


def test_worker_sigkill_midway_recovers_bit_identical(client, arch, tmp_path):
    X = data(N, seed=12)
    clean = tmp_path / "clean"
    build_gram(arch, X, clean, get="ntk", tile=TILE, client=client)
    pids = list(client.run(__import__("os").getpid).values())
    killed = []

    def kill_one(result):
        if not killed and len(pids) == 2:
            victim = pids[0] if result[3] != pids[0] else pids[1]
            sigkill(victim)  # the nanny restarts it; its running tile is rescheduled
            killed.append(victim)

    rep = build_gram(arch, X, tmp_path / "k", get="ntk", tile=TILE, client=client, on_tile=kill_one,
                     _delay=0.2)
    assert killed and rep.computed == 21
    assert chunk_bytes(tmp_path / "k") == chunk_bytes(clean)
    assert build_gram(arch, X, tmp_path / "k", get="ntk", tile=TILE, client=client).computed == 0
    client.wait_for_workers(2, timeout=60)
