"""Worker keywords the batch-system launchers pass (dask-jobqueue's job
scripts): ``lifetime`` (retire gracefully, data first), ``interface``, and
the rule that a keyword a server cannot honour raises."""

from __future__ import annotations

import pytest

from distributed import Nanny, Scheduler, Worker
from distributed.utils import host_from_interface
from distributed.utils_test import async_poll_for, cluster, gen_cluster, gen_test, inc, poll_for
from distributed.worker.server import _lifetime


def test_lifetime_and_stagger():
    assert _lifetime(None, None) is None
    assert _lifetime("2s", None) == 2.0
    for _ in range(50):
        assert 1.0 <= _lifetime("2s", "1s") <= 3.0
    with pytest.raises(ValueError, match="needs a lifetime"):
        _lifetime(None, "1s")
    with pytest.raises(ValueError, match="positive"):
        _lifetime("-1s", None)


@gen_cluster(client=True, nthreads=[("127.0.0.1", 1)])
async def test_worker_retires_at_the_end_of_its_lifetime(c, s, a):
    """Its data moves to the other worker before it goes: nothing is lost."""
    async with Worker(s.address, nthreads=1, lifetime="1s") as short:
        futures = c.map(inc, range(20), workers=[short.address])
        assert sum(await c.gather(futures)) == sum(range(1, 21))
        await async_poll_for(lambda: short.address not in s.workers, 30)
        assert set(a.data) >= {f.key for f in futures}  # handed over, not recomputed
        assert sum(await c.gather(futures)) == sum(range(1, 21))


@gen_test()
async def test_unknown_keywords_raise():
    with pytest.raises(TypeError, match="cannot honour.*colour"):
        Scheduler(port=0, colour="red")
    with pytest.raises(TypeError, match="cannot honour.*colour"):
        Worker("tcp://127.0.0.1:1", colour="red")
    with pytest.raises(TypeError, match="cannot honour.*colour"):
        Nanny("tcp://127.0.0.1:1", colour="red")


@gen_test()
async def test_interface_picks_the_address():
    assert host_from_interface(None, "lo") == "127.0.0.1"
    with pytest.raises(ValueError, match="not both"):
        host_from_interface("127.0.0.1", "lo")
    with pytest.raises(ValueError, match="not a valid network interface"):
        host_from_interface(None, "no-such-interface0")
    async with Scheduler(port=0, interface="lo", dashboard_address=None) as s:
        assert s.address.startswith("tcp://127.0.0.1:")
        async with Worker(s.address, interface="lo") as w:
            assert w.address.startswith("tcp://127.0.0.1:")


def test_lifetime_with_real_processes():
    """The blocking API against worker processes: a worker under a nanny
    with a lifetime and restart leaves and comes back as a new process."""
    from distributed import Client

    with cluster(nworkers=1) as (s, _), Client(s["address"], timeout=30) as c:
        pids = set()

        async def start_nanny():
            return await Nanny(s["address"], nthreads=1, lifetime="2s", lifetime_restart=True)

        nanny = c.sync(start_nanny)
        try:
            def pids_seen():
                for info in c.scheduler_info()["workers"].values():
                    if info.get("nanny") == nanny.address:
                        pids.add(info["pid"])
                return len(pids) >= 2

            poll_for(pids_seen, 60)  # the worker restarted after its lifetime
            assert c.submit(inc, 1).result(timeout=30) == 2
        finally:
            c.sync(nanny.close)
