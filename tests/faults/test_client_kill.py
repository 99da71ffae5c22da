"""The client process SIGKILLed during a Gram build and during a tiled Cholesky: the
re-run takes over the dead process's lock, computes only the missing tiles, and the store /
factor ends bit-identical to an uninterrupted run.

Every run here is a subprocess with thread pools pinned to one thread (``conftest.start_py``),
the builds and factorizations in-process (``client='sync'``): a killed client's own
LocalCluster would leave orphaned workers behind.
"""

import json
import os
import time

import pytest

from ntkscale.storage import GramStore
from ntkscale.storage.factor_store import FactorStore
from ntkscale.storage.writer import LOCK_KEY
from ntkscale.tiling import build_gram

from .conftest import PRELUDE, N, TILE, chunk_bytes, data, kill_when, n_chunks, run_py, start_py

BUILD = PRELUDE + """
from ntkscale.tiling import build_gram
rep = build_gram(arch, data({n}, seed=5), {path!r}, get=("nngp", "ntk"), tile={tile}, client="sync",
                 _delay={delay})
print(json.dumps(dict(computed=rep.computed, n_tiles=rep.n_tiles, seconds=rep.seconds)))
"""

FACTOR = PRELUDE + """
from ntkscale.operator import StoredGram
from ntkscale.tiling.cholesky import factor_tiles
op = StoredGram({gram!r}, "ntk", client="sync")
lam = 1e-3 * float(np.mean(op.diag()))
f = factor_tiles(op, lam, factor_url={path!r}, on_tile=lambda r: time.sleep({delay}))
print(json.dumps(dict(computed=f.computed, n_tiles=f.n_tiles, seconds=f.seconds)))
"""


def test_build_resumes_after_the_client_was_killed(tmp_path):
    clean, part = str(tmp_path / "clean"), str(tmp_path / "part")
    ref = json.loads(run_py(BUILD.format(n=N, path=clean, tile=TILE, delay=0.0))[0])
    p = start_py(BUILD.format(n=N, path=part, tile=TILE, delay=0.3))
    kill_when(p, lambda: n_chunks(part, "ntk") >= 4)
    done = set.intersection(*(GramStore.open(part).done_chunks(k) for k in ("nngp", "ntk")))
    assert 4 <= len(done) < 15 and not GramStore.open(part).meta["complete"]
    out, err = run_py(BUILD.format(n=N, path=part, tile=TILE, delay=0.0))
    rep = json.loads(out)
    assert "taking over the lock" in err  # the dead client's lock
    assert rep["computed"] == 15 - len(done) == ref["n_tiles"] - len(done)
    assert chunk_bytes(part) == chunk_bytes(clean)  # no lock, no temporary files left either
    assert GramStore.open(part).meta["complete"]


def test_cholesky_resumes_after_the_client_was_killed(gram, tmp_path):
    clean, part = str(tmp_path / "clean"), str(tmp_path / "part")
    ref = json.loads(run_py(FACTOR.format(gram=str(gram), path=clean, delay=0.0))[0])
    p = start_py(FACTOR.format(gram=str(gram), path=part, delay=0.3))
    kill_when(p, lambda: n_chunks(part, "U") >= 4)
    done = FactorStore.open(part).done_tiles()
    assert 4 <= len(done) < 15 and not FactorStore.open(part).meta["complete"]
    out, err = run_py(FACTOR.format(gram=str(gram), path=part, delay=0.0))
    assert "taking over the lock" in err
    assert json.loads(out)["computed"] == ref["n_tiles"] - len(done)
    assert chunk_bytes(part) == chunk_bytes(clean)


@pytest.mark.cluster
def test_a_stopped_build_writes_nothing_after_it_returned(arch, client, tmp_path):
    """A client stopping a cluster build (Ctrl-C, an ``on_tile`` that raises) cancels the
    queued tiles and waits for the running ones: once build_gram has raised (and released
    the lock), no task of that build writes any more."""
    path = tmp_path / "g"
    seen = []

    def stop(result):
        seen.append(result)
        if len(seen) == 2:
            raise KeyboardInterrupt("user stopped the client")

    with pytest.raises(KeyboardInterrupt):
        build_gram(arch, data(), path, get="ntk", tile=TILE, client=client, on_tile=stop, _delay=0.5)
    landed = n_chunks(path, "ntk")
    assert not os.path.exists(path / LOCK_KEY)
    time.sleep(1.5)  # a tile still running would land now (0.5 s of delay each)
    assert n_chunks(path, "ntk") == landed and 2 <= landed < 15
    assert build_gram(arch, data(), path, get="ntk", tile=TILE, client=client).computed == 15 - landed
