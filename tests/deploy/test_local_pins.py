"""Thread pins of ``runner.local_cluster``'s workers, read inside the worker processes."""

from __future__ import annotations

import os

import pytest

from ntkscale.runner import _PRE_SPAWN_PINS, local_cluster


def _pools() -> tuple[int, list[tuple[str, str, int]]]:
    import numba
    import scipy.linalg  # noqa: F401 - loads SciPy's OpenBLAS beside NumPy's
    from threadpoolctl import threadpool_info

    return numba.get_num_threads(), [(d["user_api"], d["filepath"].rsplit("/", 1)[-1], d["num_threads"])
                                     for d in threadpool_info()]


@pytest.mark.parametrize("threads,here", [(1, None), (2, None), (1, "2"), (2, "1")],
                         ids=["1-unset", "2-unset", "1-here-2", "2-here-1"])
def test_every_blas_in_a_worker_runs_the_pinned_threads(threads, here, monkeypatch):
    """NumPy loads its OpenBLAS before Dask applies a Nanny's ``env=``: with 2 threads per worker
    NumPy's BLAS ran on 1 while SciPy's ran on 2 (the pins now go in before the spawn)."""
    from distributed import Client

    for k in _PRE_SPAWN_PINS:  # this process's environment (restored after the test)...
        monkeypatch.delenv(k, raising=False)
    if here is not None:
        monkeypatch.setenv("OPENBLAS_NUM_THREADS", here)
        monkeypatch.setenv("OMP_NUM_THREADS", here)
    before = {k: os.environ.get(k) for k in _PRE_SPAWN_PINS}
    with local_cluster(n_workers=1, threads_per_worker=threads, dashboard_address=None,
                       memory_limit="2GiB") as cluster, Client(cluster) as client:
        (numba_threads, pools), = client.run(_pools).values()
    blas = [(lib, n) for api, lib, n in pools if api == "blas"]
    assert len(blas) >= 2, pools  # NumPy's and SciPy's OpenBLAS
    assert all(n == threads for _, n in blas), blas
    assert numba_threads == threads
    # ... does not decide the workers' pins, and is left as it was (Dask writes its own
    # pre-spawn variables into this process's environment; the pins are put back)
    assert {k: os.environ.get(k) for k in _PRE_SPAWN_PINS} == before
