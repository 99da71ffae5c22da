"""A worker SIGKILLed in the middle of a PCG solve, a randomized eigensolver run and a tiled
Cholesky on a real LocalCluster (2 single-threaded worker processes; the nanny restarts the
dead one): each completes with the result of an uninterrupted run.

The kill is deterministic: a task wrapper (``conftest.dying``) makes the first task that
starts after the test arms a trigger file SIGKILL its own worker, so the worker dies while a
task of the computation runs on it and holds the pass's scattered right-hand sides. (The
build's case is tests/tiling/test_cluster.py::test_worker_sigkill_midway_recovers_bit_identical.)
"""

import os

import numpy as np
import pytest

from ntkscale.operator import StoredGram
from ntkscale.solvers import cholesky_solve, randomized_eigh, solve
from ntkscale.tiling import cholesky as chol
from ntkscale.tiling import tasks
from ntkscale.tiling.cholesky import factor_tiles
from ntkscale.tiling.executor import await_workers

from .conftest import N, chunk_bytes, dying, fired_pid

pytestmark = pytest.mark.cluster


def _rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _arm_on_pass(op, trigger, k):
    """Arm ``trigger`` right before the ``k``-th matvec over ``op`` (1-based)."""
    real, calls = op.matvec, []

    def matvec(V):
        calls.append(1)
        if len(calls) == k:
            open(trigger, "w").close()
        return real(V)

    op.matvec = matvec
    return calls


@pytest.fixture
def op(gram, client):
    # the nannies restart the workers killed by an earlier test; wait for them (each test
    # also works with one worker, should a restart be slow on a loaded machine)
    await_workers(client, 2, 120)
    with StoredGram(gram, "ntk", client=client) as g:
        yield g


def test_pcg_survives_a_worker_killed_mid_pass(op, client, tmp_path, monkeypatch):
    Y = np.random.default_rng(1).standard_normal((N, 2))
    lam = 1e-3 * float(np.mean(op.diag()))
    kw = dict(solver="pcg", tol=1e-10, pcg_rank=40, seed=0)
    ref = solve(op, Y, lam, **kw)
    pids = set(client.run(os.getpid).values())
    trigger = str(tmp_path / "kill")
    monkeypatch.setattr(tasks, "matvec_task", dying(tasks.matvec_task, trigger))
    calls = _arm_on_pass(op, trigger, 4)  # RPCholesky (preconditioner "auto") makes no pass: kill in PCG's 4th iteration
    got = solve(op, Y, lam, **kw)
    assert fired_pid(trigger) in pids and len(calls) > 4
    assert got.converged and got.iterations == ref.iterations and got.passes == ref.passes
    assert _rel(got.x, ref.x) < 1e-10


def test_randomized_eigh_survives_a_worker_killed_mid_pass(op, client, tmp_path, monkeypatch):
    ref = randomized_eigh(op, 20, power_iters=2, seed=3)
    pids = set(client.run(os.getpid).values())
    trigger = str(tmp_path / "kill")
    monkeypatch.setattr(tasks, "matvec_task", dying(tasks.matvec_task, trigger))
    _arm_on_pass(op, trigger, 2)  # the first power step
    got = randomized_eigh(op, 20, power_iters=2, seed=3)
    assert fired_pid(trigger) in pids
    assert got.passes == ref.passes == 4
    np.testing.assert_allclose(got.evals, ref.evals, rtol=1e-10)
    np.testing.assert_allclose(got.error_bounds, ref.error_bounds, rtol=1e-6, atol=1e-12 * ref.evals[0])


def test_cholesky_resumes_by_itself_when_its_leader_is_killed(op, client, tmp_path, monkeypatch):
    """'host' placement pins the tasks to one leader: when it dies, factor_tiles waits for the
    restarted worker, plans again and resumes; the factor is bit-identical to a clean one."""
    Y = np.random.default_rng(2).standard_normal((N, 3))
    lam = 1e-3 * float(np.mean(op.diag()))
    clean = factor_tiles(op, lam, factor_url=str(tmp_path / "clean"))
    ref = cholesky_solve(op, Y, lam, factor_url=str(tmp_path / "clean"))
    assert ref.info["factor_computed"] == 0  # reused
    pids = set(client.run(os.getpid).values())
    trigger = str(tmp_path / "kill")
    open(trigger, "w").close()
    monkeypatch.setattr(chol, "factor_tile_task", dying(chol.factor_tile_task, trigger,
                                                        when=lambda ctx, i, j, *a: (i, j) == (2, 3)))
    got = cholesky_solve(op, Y, lam, factor_url=str(tmp_path / "killed"))
    assert fired_pid(trigger) in pids
    assert got.info["factor_restarts"] == 1 and got.info["factor_computed"] == clean.n_tiles == 15
    assert chunk_bytes(tmp_path / "killed") == chunk_bytes(tmp_path / "clean")
    assert _rel(got.x, ref.x) < 1e-10


def test_cholesky_worker_placement_survives_a_killed_worker(op, client, tmp_path, monkeypatch):
    """'worker' placement: the scheduler reruns the dead worker's task elsewhere."""
    lam = 1e-3 * float(np.mean(op.diag()))
    clean = factor_tiles(op, lam, factor_url=str(tmp_path / "clean"), placement="worker")
    trigger = str(tmp_path / "kill")
    open(trigger, "w").close()
    monkeypatch.setattr(chol, "factor_tile_task", dying(chol.factor_tile_task, trigger,
                                                        when=lambda ctx, i, j, *a: (i, j) == (1, 2)))
    got = factor_tiles(op, lam, factor_url=str(tmp_path / "killed"), placement="worker")
    assert fired_pid(trigger) is not None and got.restarts == 0 and got.computed == clean.n_tiles
    assert chunk_bytes(tmp_path / "killed") == chunk_bytes(tmp_path / "clean")


def test_pass_runs_again_when_every_holder_of_its_input_died(op, client, tmp_path, monkeypatch):
    """Both workers die in one pass: the scattered V is gone with them (dask cannot recompute
    scattered data); the pass is run again, scattered anew, with the restarted workers."""
    V = np.random.default_rng(4).standard_normal((N, 3))
    ref = op.matvec(V)
    t1, t2 = str(tmp_path / "kill1"), str(tmp_path / "kill2")
    monkeypatch.setattr(tasks, "matvec_task", dying(dying(tasks.matvec_task, t1), t2))
    open(t1, "w").close()
    open(t2, "w").close()
    got = op.matvec(V)
    assert fired_pid(t1) is not None and fired_pid(t2) is not None and fired_pid(t1) != fired_pid(t2)
    assert _rel(got, ref) < 1e-12 and op.passes == 2
