"""Whole clusters over tls://: gen_tls_cluster (one loop), Nanny, LocalCluster
in real processes, and Security.temporary()."""

from __future__ import annotations

import pytest

from distributed import Client, Nanny, Scheduler, Worker, worker_client
from distributed.security import Security
from distributed.utils_test import (
    gen_cluster,
    gen_test,
    gen_tls_cluster,
    inc,
    tls_only_security,
    tls_security,
)


@gen_tls_cluster(client=True)
async def test_basic(c, s, a, b):
    assert s.address.startswith("tls://")
    assert a.address.startswith("tls://") and b.address.startswith("tls://")
    assert set(s.workers) == {a.address, b.address}
    assert c.scheduler_address == s.address
    assert await c.submit(inc, 1) == 2


@gen_tls_cluster(client=True)
async def test_client_submit_map_gather(c, s, a, b):
    futures = c.map(inc, range(20))
    assert await c.gather(futures) == list(range(1, 21))


@gen_tls_cluster(client=True)
async def test_scatter(c, s, a, b):
    [f] = await c.scatter([10], workers=[a.address])
    assert await c.submit(inc, f, workers=[b.address]) == 11  # a peer transfer over TLS
    assert await c.gather(f) == 10


@gen_tls_cluster(client=True)
async def test_peer_transfer(c, s, a, b):
    x = c.submit(lambda: b"x" * 1_000_000, workers=[a.address])
    y = c.submit(len, x, workers=[b.address])
    assert await y == 1_000_000
    assert "len" in str(b.state.tasks) or y.key in b.data


def _worker_client_sum(n):
    with worker_client() as c:
        futures = c.map(inc, range(n))
        return sum(c.gather(futures))


@gen_tls_cluster(client=True)
async def test_worker_client(c, s, a, b):
    assert await c.submit(_worker_client_sum, 5) == 15


def _worker_security_roles(dask_worker):
    return dask_worker.security.require_encryption


@gen_tls_cluster(client=True)
async def test_workers_have_security(c, s, a, b):
    assert a.security.require_encryption and s.security.require_encryption
    assert set((await c.run(_worker_security_roles)).values()) == {True}


@gen_tls_cluster(client=True, Worker=Nanny)
async def test_nanny(c, s, a, b):
    assert a.address.startswith("tls://")
    assert a.worker_address.startswith("tls://")
    assert await c.submit(inc, 10) == 11


@gen_cluster(scheduler="tls://127.0.0.1", nthreads=[("tls://127.0.0.1", 1)],
             security=tls_security(), client=True)
async def test_gen_cluster_tls_security_dict(c, s, a):
    assert await c.submit(inc, 1) == 2


@gen_test()
async def test_security_dict_input():
    sec = tls_security()
    d = {"tls_ca_file": sec.tls_ca_file, "tls_scheduler_cert": sec.tls_scheduler_cert,
         "tls_scheduler_key": sec.tls_scheduler_key}
    async with Scheduler(host="127.0.0.1", port=0, security=d) as s:
        assert s.address.startswith("tls://")  # certificates mean TLS
        assert s.security.require_encryption  # any TLS kwarg turns it on


@gen_test()
async def test_security_bool_false_and_none_are_plain():
    for security in (None, False, {}):
        async with Scheduler(port=0, security=security) as s:
            assert s.address.startswith("tcp://")


@gen_test()
async def test_require_encryption_refuses_tcp_scheduler():
    with pytest.raises(RuntimeError, match="encryption required"):
        async with Scheduler(host="tcp://127.0.0.1", port=0, security=tls_only_security()):
            pass


@gen_test()
async def test_bad_protocol_raises():
    with pytest.raises(ValueError, match="unsupported protocol"):
        Scheduler(port=0, protocol="udp")


@gen_test()
async def test_plain_client_on_tls_scheduler_fails_fast():
    async with Scheduler(port=0, security=tls_security()) as s:
        plain = s.address.replace("tls://", "tcp://")
        with pytest.raises(OSError, match="only accepts TLS"):
            await Client(plain, asynchronous=True, timeout=5)


@gen_test()
async def test_temporary_security_cluster():
    pytest.importorskip("cryptography")
    sec = Security.temporary()
    async with Scheduler(port=0, security=sec) as s:
        async with Worker(s.address, security=sec, nthreads=1):
            async with Client(s.address, security=sec, asynchronous=True) as c:
                assert await c.submit(inc, 1) == 2
        assert "PRIVATE KEY" not in repr(s.security)


def test_local_cluster_security_true_processes():
    """LocalCluster(security=True): scheduler, nannies and worker processes on
    tls://127.0.0.1 with fresh credentials, and a blocking Client."""
    pytest.importorskip("cryptography")
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, security=True,
                      dashboard_address=None) as cluster:
        assert cluster.scheduler_address.startswith("tls://127.0.0.1:")
        assert cluster.security.require_encryption
        with Client(cluster) as c:  # takes the cluster's security
            assert c.security is cluster.security
            assert c.submit(inc, 1).result(timeout=30) == 2
            workers = list(c.scheduler_info()["workers"])
            assert len(workers) == 2 and all(w.startswith("tls://") for w in workers)
            x = c.submit(lambda: list(range(1000)), workers=[workers[0]])
            assert c.submit(len, x, workers=[workers[1]]).result(timeout=30) == 1000


@gen_test()
async def test_local_cluster_protocol_tls_in_process():
    from distributed import LocalCluster

    sec = tls_only_security()
    async with LocalCluster(n_workers=1, processes=False, protocol="tls", security=sec,
                            asynchronous=True, dashboard_address=None) as cluster:
        assert cluster.scheduler_address.startswith("tls://")
        async with Client(cluster, asynchronous=True) as c:
            assert await c.submit(inc, 2) == 3


def test_local_cluster_bad_protocol():
    from distributed import LocalCluster

    with pytest.raises(ValueError, match="protocol"):
        LocalCluster(n_workers=0, processes=False, protocol="udp")


def test_client_constructor_with_temporary_security():
    pytest.importorskip("cryptography")
    with Client(security=True, n_workers=1, threads_per_worker=1, processes=False,
                dashboard_address=None) as c:
        assert c.cluster.scheduler_address.startswith("tls://")
        assert c.security is c.cluster.security
        assert c.submit(inc, 5).result(timeout=30) == 6


@gen_tls_cluster(client=True)
async def test_rebalance(c, s, a, b):
    """The scheduler tells workers to move data: scheduler -> worker rpc over TLS."""
    futures = await c.scatter(list(range(10)), workers=[a.address])
    await c.rebalance(futures)
    assert len(b.data) > 0 and len(a.data) > 0


@gen_tls_cluster(client=True)
async def test_retire_workers(c, s, a, b):
    futures = await c.scatter(list(range(5)), workers=[a.address])
    await c.retire_workers([a.address])
    assert a.address not in s.workers
    assert await c.gather(futures) == list(range(5))


@gen_tls_cluster(client=True)
async def test_queue(c, s, a, b):
    from distributed import Queue

    q = await Queue("q", client=c)
    fut = c.submit(inc, 1)
    await q.put(fut)
    got = await q.get()
    assert await got == 2


_loader_calls: list = []


def _security_loader(info):
    _loader_calls.append(info)
    return tls_only_security() if info["address"].startswith("tls://") else None


@gen_test()
async def test_security_loader():
    from distributed import config

    async with Scheduler(port=0, security=tls_only_security()) as s:
        with config.set({"distributed.client.security-loader":
                         "distributed.tests.test_tls_cluster._security_loader"}):
            async with Client(s.address, asynchronous=True) as c:
                assert c.security.require_encryption
                assert await c.scheduler.identity()
            assert _loader_calls[-1] == {"address": s.address}
            # an explicit security= wins: the loader is not asked
            n = len(_loader_calls)
            async with Client(s.address, asynchronous=True, security=tls_only_security()):
                pass
            assert len(_loader_calls) == n


def test_security_loader_import_error():
    from distributed import config

    with config.set({"distributed.client.security-loader": "no_such_module_xyz.load"}):
        with pytest.raises(ImportError, match="security-loader"):
            Client("tls://127.0.0.1:1", start=False)


@gen_test()
async def test_scheduler_sni():
    names = []
    sec = tls_only_security()
    async with Scheduler(port=0, security=sec) as s:
        s.listener.ssl_context.sni_callback = lambda sslobj, name, ctx: names.append(name)
        async with Worker(s.address, security=sec, nthreads=1, scheduler_sni="dask.example"):
            assert "dask.example" in names


def test_local_cluster_tls_restart():
    """Client.restart: the scheduler asks each nanny (over TLS) to restart its
    worker, which registers again over TLS."""
    pytest.importorskip("cryptography")
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, security=True,
                      dashboard_address=None) as cluster:
        with Client(cluster) as c:
            assert c.submit(inc, 1).result(timeout=30) == 2
            c.restart()
            assert c.submit(inc, 2).result(timeout=30) == 3
            assert all(w.startswith("tls://") for w in c.scheduler_info()["workers"])
