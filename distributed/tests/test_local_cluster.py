"""LocalCluster: starting, scaling, closing, and Client() without an address."""
import asyncio

import pytest

from distributed import Client, LocalCluster, Worker
from distributed.utils_test import gen_test, inc, wait_for


def test_local_cluster_processes_runs_a_job(loop):
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True) as cluster:
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        with Client(cluster, loop=loop) as c:
            assert c.submit(inc, 1).result() == 2
            info = c.scheduler_info()
            assert len(info["workers"]) == 2
            assert all(w["nthreads"] == 1 for w in info["workers"].values())
            assert all(addr.startswith("tcp://127.0.0.1:") for addr in info["workers"])


def test_local_cluster_in_process_workers(loop):
    with LocalCluster(n_workers=2, threads_per_worker=2, processes=False) as cluster:
        assert all(isinstance(w, Worker) for w in cluster.workers.values())
        with Client(cluster, loop=loop) as c:
            assert sum(c.gather(c.map(inc, range(10)))) == 55
            assert c.nthreads() == {w.address: 2 for w in cluster.workers.values()}


def test_scale_up_and_down_keeps_data(loop):
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False) as cluster:
        with Client(cluster, loop=loop) as c:
            cluster.scale(3)
            wait_for(lambda: len(c.scheduler_info()["workers"]) == 3)
            futures = c.map(inc, range(20))
            assert c.gather(futures) == list(range(1, 21))
            cluster.scale(1)
            wait_for(lambda: len(c.scheduler_info()["workers"]) == 1)
            # Data held by retired workers was moved, not lost
            assert c.gather(futures) == list(range(1, 21))


def test_close_is_idempotent(loop):
    cluster = LocalCluster(n_workers=1, processes=False)
    cluster.close()
    cluster.close()
    assert cluster.status == "closed"


def test_client_without_address_starts_and_closes_a_cluster(loop):
    c = Client(n_workers=1, threads_per_worker=1, processes=False)
    try:
        assert c.cluster is not None
        assert c.scheduler_address.startswith("tcp://127.0.0.1:")
        assert c.submit(inc, 10).result() == 11
    finally:
        c.close()
    assert c.cluster.status == "closed"


def test_repr_and_html(loop):
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False) as cluster:
        text = repr(cluster)
        assert cluster.scheduler_address in text and "threads=2" in text
        html = cluster._repr_html_()
        assert "Workers" in html and "Threads" in html and "Memory" in html


def test_bad_arguments_rejected():
    with pytest.raises(ValueError, match="n_workers"):
        LocalCluster(n_workers=-1, processes=False)
    with pytest.raises(ValueError, match="threads_per_worker"):
        LocalCluster(n_workers=1, threads_per_worker=0, processes=False)


@gen_test()
async def test_asynchronous_local_cluster():
    async with LocalCluster(n_workers=2, processes=False, asynchronous=True) as cluster:
        async with Client(cluster, asynchronous=True) as c:
            assert await c.submit(inc, 1) == 2
            await cluster.scale(3)
            await c.wait_for_workers(3)
            assert len(cluster.workers) == 3
            await asyncio.wait_for(c.gather(c.map(inc, range(5))), 10)


@pytest.mark.parametrize("kwargs", [{"services": {"bokeh": object}}, {"blocked_handlers": ["run_function"]}])
def test_options_not_built_yet_raise_instead_of_being_dropped(kwargs):
    """An option the cluster could not honour must not give a cluster
    without it (security=True silently gave plain TCP before; TLS is built
    now: test_tls_cluster.py)."""
    with pytest.raises(NotImplementedError, match="here"):
        LocalCluster(n_workers=0, processes=False, **kwargs)



def test_interface_and_default_dashboard():
    """``interface=`` picks the address; a dashboard is served by default
    (``:8787``, or a free port when that is taken) on the cluster's host, and
    silencing logs keeps INFO records for ``get_logs``."""
    with LocalCluster(n_workers=1, processes=False, interface="lo") as cluster, \
            Client(cluster) as c:
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        assert c.dashboard_link.startswith("http://127.0.0.1:")
        assert c.dashboard_link == cluster.dashboard_link
        assert c.submit(inc, 1).result() == 2
        assert "Register worker" in cluster.get_logs()["Scheduler"]
