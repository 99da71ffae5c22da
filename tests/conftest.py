"""Fixtures shared by every test directory."""

import pytest


@pytest.fixture(scope="module")
def client():
    """A real LocalCluster: 2 single-threaded worker processes with pinned BLAS."""
    from distributed import Client

    from ntkscale.runner import local_cluster

    with local_cluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster:
        with Client(cluster) as c:
            yield c
