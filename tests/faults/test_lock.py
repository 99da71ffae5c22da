"""Two builds pointed at the same store at once: the second is refused with a message naming
the holder and the fix; a lock left by a dead process on this host is taken over with a
warning; a lock is always released, also after an error."""

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from ntkscale.operator import StoredGram
from ntkscale.storage import StaleLockWarning, StoreLock, StoreLockedError
from ntkscale.storage.writer import LOCK_KEY
from ntkscale.tiling import build_gram
from ntkscale.tiling.cholesky import factor_tiles

from .conftest import PRELUDE, N, TILE, data, n_chunks, start_py

BUILD = PRELUDE + """
from ntkscale.tiling import build_gram
rep = build_gram(arch, data({n}, seed=8), {path!r}, get="ntk", tile={tile}, client="sync", _delay={delay})
print(json.dumps(dict(computed=rep.computed)))
"""


def _write_lock(store, **holder):
    os.makedirs(store, exist_ok=True)
    with open(os.path.join(store, LOCK_KEY), "w") as f:
        json.dump(dict(dict(what="Gram build", started="2026-01-01T00:00:00"), **holder), f)


def _dead_pid():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_second_build_is_refused_while_the_first_runs(arch, tmp_path):
    path = str(tmp_path / "g")
    first = start_py(BUILD.format(n=N, path=path, tile=TILE, delay=0.3))
    try:
        deadline = time.monotonic() + 60
        while n_chunks(path, "ntk") < 2:
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        for kw in ({}, {"overwrite": True}):
            with pytest.raises(StoreLockedError) as e:
                build_gram(arch, data(N, seed=8), path, get="ntk", tile=TILE, client="sync", **kw)
            msg = str(e.value)
            assert f"process {first.pid} on host {socket.gethostname()!r}" in msg and "Gram build" in msg
            assert "Wait for it to finish" in msg and LOCK_KEY in msg
        out, err = first.communicate(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, err[-2000:]
    assert json.loads(out)["computed"] == 15  # the first build was not disturbed
    assert not os.path.exists(os.path.join(path, LOCK_KEY))
    assert build_gram(arch, data(N, seed=8), path, get="ntk", tile=TILE, client="sync").computed == 0


def test_stale_lock_of_a_dead_process_is_taken_over(arch, tmp_path):
    path = tmp_path / "g"
    _write_lock(path, host=socket.gethostname(), pid=_dead_pid())
    with pytest.warns(StaleLockWarning, match="no longer runs"):
        rep = build_gram(arch, data(100), path, get="ntk", tile=TILE, client="sync")
    assert rep.computed == 3 and not (path / LOCK_KEY).exists()


def test_lock_of_another_host_or_a_crashed_writer(arch, tmp_path):
    path = tmp_path / "g"
    _write_lock(path, host="node-17", pid=4242)
    with pytest.raises(StoreLockedError, match=r"process 4242 on host 'node-17'.*delete"):
        build_gram(arch, data(100), path, get="ntk", tile=TILE, client="sync")
    assert (path / LOCK_KEY).exists()  # never taken over: that build may still run
    (path / LOCK_KEY).write_text("")  # created, never written: its writer crashed
    old = (path / LOCK_KEY).stat().st_mtime - 60
    os.utime(path / LOCK_KEY, (old, old))
    with pytest.warns(StaleLockWarning, match="unreadable"):
        assert build_gram(arch, data(100), path, get="ntk", tile=TILE, client="sync").computed == 3


def test_lock_released_after_an_error(arch, tmp_path):
    path = tmp_path / "g"

    def stop(result):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_gram(arch, data(100), path, get="ntk", tile=TILE, client="sync", on_tile=stop)
    assert not (path / LOCK_KEY).exists()
    assert build_gram(arch, data(100), path, get="ntk", tile=TILE, client="sync").computed == 2


def test_factorization_takes_the_factor_store_lock(gram, tmp_path):
    op = StoredGram(gram, "ntk")
    url = str(tmp_path / "f")
    with StoreLock(url, what="Cholesky factorization"):
        with pytest.raises(StoreLockedError, match="Cholesky factorization by process"):
            factor_tiles(op, 1.0, factor_url=url)
    f = factor_tiles(op, 1.0, factor_url=url)
    assert f.computed == 15 and not os.path.exists(os.path.join(url, LOCK_KEY))
    held = []  # recreating the store (overwrite) spares its lock
    f2 = factor_tiles(op, 1.0, factor_url=url, overwrite=True,
                      on_tile=lambda r: held.append(os.path.exists(os.path.join(url, LOCK_KEY))))
    assert f2.computed == 15 and held == [True] * 15 and not os.path.exists(os.path.join(url, LOCK_KEY))


def test_best_effort_marker_on_other_stores():
    """fsspec stores (here memory://) get a marker key: checked, then written."""
    url = "memory://ntkscale-lock-test/g"
    with StoreLock(url, what="Gram build"):
        with pytest.raises(StoreLockedError, match="memory://ntkscale-lock-test/g"):
            StoreLock(url).acquire()
    with StoreLock(url):  # released
        pass
