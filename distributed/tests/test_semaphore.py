"""The cluster-wide Semaphore: leases, the lease rules, metrics."""
import asyncio
import gc
import logging
import os
import pickle
import signal
import sys
import threading
import time
import uuid

import pytest
from tornado.ioloop import IOLoop

from distributed import Client, get_worker
from distributed.coordination import semaphore as semaphore_module
from distributed.coordination.semaphore import Semaphore, SemaphoreExtension
from distributed.core import rpc
from distributed.utils_test import async_wait_for, captured_logger, cluster, gen_cluster, wait_for

FAST_LEASES = {
    "distributed.scheduler.locks.lease-timeout": "500ms",
    "distributed.scheduler.locks.lease-validation-interval": "50ms",
}

# ----------------------------------------------------------------------
# the behaviour dask.distributed documents
# ----------------------------------------------------------------------


@gen_cluster(client=True)
async def test_semaphore_trivial(c, s, a, b):
    sem = await Semaphore(max_leases=2, name="resource_we_want_to_limit")
    assert await sem.acquire() is True
    assert await sem.acquire() is True
    assert await sem.acquire(timeout=0.025) is False
    assert sem.held() == 2
    assert len(s.extensions["semaphores"].leases["resource_we_want_to_limit"]) == 2


@gen_cluster(client=True)
async def test_serializable_copies_share_the_semaphore(c, s, a, b):
    ext = s.extensions["semaphores"]
    sem = await Semaphore(max_leases=2, name="x")
    assert await sem.acquire()
    copy = pickle.loads(pickle.dumps(sem))
    assert copy.name == sem.name and copy.max_leases == 2 and copy.held() == 0
    assert len(ext.leases["x"]) == 1  # pickling changed nothing
    assert await copy.acquire()
    assert len(ext.leases["x"]) == 2
    assert await sem.acquire(timeout=0.025) is False
    assert await copy.acquire(timeout=0.025) is False


def _in_task(x, semaphore):
    with semaphore:
        assert semaphore.name == "x"
        return x + 1


@gen_cluster(client=True)
async def test_release_simple_in_tasks(c, s, a, b):
    sem = await Semaphore(max_leases=2, name="x")
    assert await c.gather(c.map(_in_task, range(10), semaphore=sem)) == list(range(1, 11))
    assert not s.extensions["semaphores"].leases["x"]


@gen_cluster(client=True)
async def test_acquire_with_timeout(c, s, a, b):
    sem = await Semaphore(1, "x")
    assert await sem.acquire(timeout=0.025)
    assert not await sem.acquire(timeout="25ms")
    assert await sem.release() is True
    assert await sem.acquire(timeout=0.025)
    await sem.release()
    assert "x" not in s.extensions["semaphores"].waiters  # the timed-out request left the queue


@gen_cluster(client=True)
async def test_timeout_zero_and_get_value(c, s, a, b):
    sem = await Semaphore()
    assert await sem.get_value() == 0
    assert await sem.acquire(timeout=0)
    assert await sem.get_value() == 1
    assert not await sem.acquire(timeout=0)
    await sem.release()
    assert await sem.get_value() == 0


@gen_cluster(client=True)
async def test_async_with(c, s, a, b):
    sem = await Semaphore(name="x")
    async with sem:
        assert not await sem.acquire(timeout=0.025)
    assert await sem.acquire()
    with pytest.raises(RuntimeError, match="async with"):
        with sem:
            pass


def test_timeout_sync(client):
    sem = Semaphore(name="x")
    with sem:
        assert sem.acquire(timeout=0.025) is False
    assert sem.get_value() == 0


def _try_by_name(x, release=True):
    sem = Semaphore(name="x")
    if not sem.acquire(timeout=0.1):
        return False
    if release:
        sem.release()
    return True


@gen_cluster(client=True)
async def test_access_semaphore_by_name(c, s, a, b):
    ext = s.extensions["semaphores"]
    sem = await Semaphore(name="x")
    assert all(await c.gather(c.map(_try_by_name, range(10), pure=False)))
    assert not ext.leases["x"]
    assert await sem.acquire()
    assert not any(await c.gather(c.map(_try_by_name, range(10), pure=False)))
    await sem.release()
    results = await c.gather(c.map(_try_by_name, range(10), release=False, pure=False))
    assert results.count(True) == 1  # a lease a task forgot to release stays held


@gen_cluster(client=True)
async def test_close(c, s, a, b):
    ext = s.extensions["semaphores"]
    sem = await Semaphore(name="test")
    assert await sem.acquire()
    with pytest.warns(RuntimeWarning, match="Closing semaphore .* but there remain unreleased leases"):
        await sem.close()
    with pytest.raises(RuntimeError, match="not known or already closed"):
        await sem.acquire()
    assert not ext.max_leases and not ext.leases and not ext.waiters
    await sem.close()  # closing again does nothing


def test_close_sync(client):
    sem = Semaphore()
    sem.close()
    with pytest.raises(RuntimeError, match="not known or already closed"):
        sem.acquire()


@gen_cluster(client=True)
async def test_close_fails_waiters(c, s, a, b):
    sem = await Semaphore(name="w")
    await sem.acquire()
    waiter = asyncio.ensure_future(Semaphore(name="w", register=False).acquire())
    await async_wait_for(lambda: s.extensions["semaphores"].metrics["pending"].get("w") == 1, timeout=5)
    with pytest.warns(RuntimeWarning):
        await sem.close()
    with pytest.raises(RuntimeError, match="was closed"):
        await waiter


@gen_cluster(client=True)
async def test_release_once_too_many(c, s, a, b):
    sem = await Semaphore(name="x")
    assert await sem.acquire()
    await sem.release()
    with pytest.raises(RuntimeError, match="Released too often"):
        await sem.release()
    assert await sem.acquire()
    await sem.release()


def _release_twice(x, sem):
    sem.acquire()
    sem.release()
    with pytest.raises(RuntimeError, match="Released too often"):
        sem.release()
    return x


@gen_cluster(client=True)
async def test_release_once_too_many_in_tasks_changes_nothing(c, s, a, b):
    ext = s.extensions["semaphores"]
    sem = await Semaphore(max_leases=3, name="x")
    assert sorted(await c.gather(c.map(_release_twice, range(20), sem=sem))) == list(range(20))
    assert not ext.leases["x"]
    await sem.acquire()
    assert len(ext.leases["x"]) == 1


@gen_cluster(client=True)
async def test_registering_again_with_another_size_raises(c, s, a, b):
    await Semaphore(max_leases=2, name="db")
    await Semaphore(max_leases=2, name="db")  # the same size: fine
    with pytest.raises(ValueError, match="max_leases=2"):
        await Semaphore(max_leases=3, name="db")
    assert s.extensions["semaphores"].max_leases == {"db": 2}
    with pytest.raises(ValueError, match="max_leases=2"):
        await Semaphore(max_leases=1, name="db", register=False).register()
    await Semaphore(max_leases=5, name="later", register=False).register()
    assert s.extensions["semaphores"].max_leases == {"db": 2, "later": 5}
    for bad in (0, -1, 1.5, "2", True):
        with pytest.raises(ValueError, match="positive integer"):
            Semaphore(max_leases=bad)
    with pytest.raises(ValueError, match="negative"):
        Semaphore(name="db2").acquire(timeout=-1)


def test_unpickle_without_client():
    sem = pickle.loads(pickle.dumps(Semaphore(name="x", register=False)))
    with pytest.raises(RuntimeError, match="not properly initialized"):
        sem.acquire()
    # With register=True and no client, registration waits for the first use.
    assert Semaphore(name="y").name == "y"


@gen_cluster(client=True)
async def test_names_of_several_types(c, s, a, b):
    for name in [1, ("a", 1), ["a", 1], b"123"]:
        sem = await Semaphore(name=name)
        assert await sem.acquire()
        assert not await Semaphore(name=name, register=False).acquire(timeout=0)
        await sem.release()


@gen_cluster(client=True)
async def test_waiters_are_served_in_order(c, s, a, b):
    ext = s.extensions["semaphores"]
    first = await Semaphore(max_leases=1, name="q")
    await first.acquire()
    order = []

    async def take(i):
        sem = Semaphore(name="q", register=False)
        await sem.acquire()
        order.append(i)
        await sem.release()

    waiters = []
    for i in range(3):
        waiters.append(asyncio.ensure_future(take(i)))
        await async_wait_for(lambda n=i + 1: len(ext.waiters.get("q", ())) == n, timeout=5)
    await first.release()
    await asyncio.gather(*waiters)
    assert order == [0, 1, 2]


@gen_cluster(client=True)
async def test_cancelled_acquire_is_not_left_holding(c, s, a, b):
    ext = s.extensions["semaphores"]
    holder = await Semaphore(name="x")
    await holder.acquire()
    waiter = Semaphore(name="x", register=False)
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(waiter.acquire(), 0.2)
    await async_wait_for(lambda: "x" not in ext.waiters, timeout=5)
    await holder.release()
    assert not ext.leases["x"] and waiter.held() == 0


@gen_cluster(client=True)
async def test_metrics(c, s, a, b):
    ext = s.extensions["semaphores"]
    sem = await Semaphore(name="m")
    await sem.acquire()
    waiting = asyncio.ensure_future(Semaphore(name="m", register=False).acquire())
    await async_wait_for(lambda: ext.metrics["pending"]["m"] == 1, timeout=5)
    await sem.release()
    assert await waiting is True
    metrics = ext.metrics
    assert metrics["acquire_total"]["m"] == 2
    assert metrics["release_total"]["m"] == 1
    assert metrics["pending"]["m"] == 0
    assert metrics["average_pending_lease_time"]["m"] > 0  # the second one waited


# ----------------------------------------------------------------------
# counting: never more than max_leases holders
# ----------------------------------------------------------------------

_inside = {"now": 0, "max": 0}
_inside_lock = threading.Lock()


def _count_inside(x, sem, delay=0.02):
    with sem:
        with _inside_lock:
            _inside["now"] += 1
            _inside["max"] = max(_inside["max"], _inside["now"])
        time.sleep(delay)
        with _inside_lock:
            _inside["now"] -= 1
    return x


@gen_cluster(client=True, nthreads=[("127.0.0.1", 3)] * 2)
async def test_semaphore_2_never_lets_a_third_task_in(c, s, a, b):
    _inside.update(now=0, max=0)
    sem = await Semaphore(max_leases=2, name="two")
    assert sorted(await c.gather(c.map(_count_inside, range(20), sem=sem, pure=False))) == list(range(20))
    assert _inside["max"] <= 2
    assert not s.extensions["semaphores"].leases["two"]


def _count_by_files(i, directory, sem):
    """Across processes: count the marker files of the tasks inside."""
    with sem:
        mine = os.path.join(directory, uuid.uuid4().hex)
        open(mine, "w").close()
        inside = len(os.listdir(directory))
        time.sleep(0.02)
        os.remove(mine)
    return inside


def test_semaphore_2_never_lets_a_third_task_in_across_processes(loop, tmp_path):
    with cluster(worker_kwargs={"nthreads": 3}) as (s, [a, b]):
        with Client(s["address"], loop=loop) as c:
            sem = Semaphore(max_leases=2, name="files")
            counts = c.gather(c.map(_count_by_files, range(20), directory=str(tmp_path), sem=sem,
                                    pure=False))
            assert 1 <= max(counts) <= 2
            assert sem.get_value() == 0


# ----------------------------------------------------------------------
# the lease rules
# ----------------------------------------------------------------------


def _hold_until_told(home, marker):
    """Take a lease on worker ``home`` and keep it until the test says stop;
    on another worker (after ``home`` died) do nothing."""
    if get_worker().address != home:
        return "moved"
    sem = Semaphore(name="dead-holder", register=False)
    sem.acquire()
    open(marker, "w").close()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not os.path.exists(marker + ".stop"):
        time.sleep(0.01)  # the task's own duration: it holds the lease meanwhile
    return "not killed"


@pytest.mark.parametrize("how", ["kill", "terminate"])
def test_worker_killed_while_holding_does_not_block_others(loop, tmp_path, how):
    marker = str(tmp_path / "held")
    with cluster(config=FAST_LEASES) as (s, [a, b]):
        with Client(s["address"], loop=loop) as c:
            Semaphore(name="dead-holder")
            f = c.submit(_hold_until_told, a["address"], marker, workers=[a["address"]],
                         allow_other_workers=True, pure=False)
            wait_for(lambda: os.path.exists(marker), timeout=20)
            assert Semaphore(name="dead-holder", register=False).acquire(timeout=0.1) is False
            getattr(a["proc"], how)()
            open(marker + ".stop", "w").close()  # a worker closing gracefully waits for its task
            sem = Semaphore(name="dead-holder", register=False)
            assert sem.acquire(timeout=20) is True
            sem.release()
            assert f.result(timeout=20) == "moved"


def _kill_own_worker_inside(x, sem, kill_address):
    with sem:
        if get_worker().address == kill_address:
            os.kill(os.getpid(), signal.SIGTERM)
        return x


def test_worker_that_dies_inside_the_semaphore_blocks_nobody(loop):
    """dask.distributed's test_worker_dies: a worker ends (SIGTERM) while a
    task holds the only lease; every task still completes."""
    with cluster(config=FAST_LEASES) as (s, [a, b]):
        with Client(s["address"], loop=loop) as c:
            sem = Semaphore(name="x", max_leases=1)
            futures = c.map(_kill_own_worker_inside, range(10), sem=sem, kill_address=a["address"], pure=False)
            assert sorted(c.gather(futures)) == list(range(10))
            wait_for(lambda: sem.get_value() == 0, timeout=20)


@gen_cluster(client=True, config=FAST_LEASES)
async def test_holder_whose_client_disconnects_lets_go(c, s, a, b):
    ext = s.extensions["semaphores"]
    await Semaphore(name="w")
    async with Client(s.address, asynchronous=True, set_as_default=False) as other:
        held = Semaphore(name="w", client=other, register=False)
        assert await held.acquire()
        waiting = asyncio.ensure_future(Semaphore(name="w", client=other, register=False).acquire())
        await async_wait_for(lambda: ext.metrics["pending"]["w"] == 1, timeout=5)
        mine = asyncio.ensure_future(Semaphore(name="w", register=False).acquire())
        await async_wait_for(lambda: ext.metrics["pending"]["w"] == 2, timeout=5)
    assert await asyncio.wait_for(mine, 5) is True
    with pytest.raises((RuntimeError, OSError)):
        await asyncio.wait_for(waiting, 5)
    assert [lease.client for lease in ext.leases["w"].values()] == [c.id]


@gen_cluster(client=True, config=FAST_LEASES)
async def test_live_holder_that_stops_refreshing_is_not_overbooked(c, s, a, b):
    ext = s.extensions["semaphores"]
    sem = await Semaphore(name="slow")
    assert await sem.acquire()
    (lease,) = ext.leases["slow"].values()
    # As if the holder's loop had been blocked (a task holding the GIL) for long.
    lease.refreshed -= 100
    with captured_logger(semaphore_module.logger, level=logging.WARNING) as log:
        ext.validate_leases()
    assert "still connected, so the lease is kept" in log.getvalue()
    assert list(ext.stale) == [lease.id]
    assert await Semaphore(name="slow", register=False).acquire(timeout=0.1) is False
    # The holder's next refresh (every lease-timeout / 5) brings it back.
    await async_wait_for(lambda: not ext.stale, timeout=5)
    assert await sem.release() is True


def _hog_the_gil_inside(sem, seconds, held_marker, done_marker):
    """Hold a lease while keeping the GIL for ``seconds``: this process's
    event loop (and so its lease refreshes) cannot run meanwhile."""
    with sem:
        open(held_marker, "w").close()
        old = sys.getswitchinterval()
        sys.setswitchinterval(seconds * 10)  # no other thread gets the GIL until we block
        try:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:  # pure Python: never releases the GIL
                pass
        finally:
            sys.setswitchinterval(old)
        open(done_marker, "w").close()
    return "done"


def _try_to_get_in(done_marker):
    """Try to take a lease until the hog is done: (times it got in, tries)."""
    sem = Semaphore(name="gil", register=False)
    got_in = tries = 0
    deadline = time.monotonic() + 60
    while not os.path.exists(done_marker) and time.monotonic() < deadline:
        tries += 1
        if sem.acquire(timeout=0):
            # The hog marks "done" before it releases: holding the lease
            # while that mark is still missing means both held it at once.
            # (Getting in after the mark is the normal hand-over.)
            if not os.path.exists(done_marker):
                got_in += 1
            sem.release()
        time.sleep(0.01)  # the task's own pace
    return got_in, tries


def _semaphore_metrics(dask_scheduler):
    return dask_scheduler.extensions["semaphores"].metrics


@pytest.mark.slow
def test_task_holding_the_gil_is_not_overbooked(loop, tmp_path, monkeypatch):
    """Upstream frees the lease of a task that holds the GIL past the lease
    timeout and lets a second holder in (d/d#4830); here it is kept."""
    monkeypatch.setenv("DASK_DISTRIBUTED__SCHEDULER__LOCKS__LEASE_VALIDATION_INTERVAL", "50ms")
    held, done = str(tmp_path / "held"), str(tmp_path / "done")
    with cluster() as (s, [a, b]):
        with Client(s["address"], loop=loop) as c:
            sem = Semaphore(name="gil", lease_timeout="200ms")
            hog = c.submit(_hog_the_gil_inside, sem, 5.0, held, done, workers=[a["address"]], pure=False)
            wait_for(lambda: os.path.exists(held), timeout=20)
            observer = c.submit(_try_to_get_in, done, workers=[b["address"]], pure=False)
            assert hog.result(timeout=60) == "done"
            got_in, tries = observer.result(timeout=60)
            assert tries >= 1 and got_in == 0  # nobody got in while the hog held the lease
            metrics = c.run_on_scheduler(_semaphore_metrics)
            assert metrics["stale_total"]["gil"] >= 1  # its refreshes did stop
            assert metrics["acquire_total"]["gil"] == 1


@gen_cluster(client=True, config=FAST_LEASES)
async def test_lease_of_a_holder_without_client_expires(c, s, a, b):
    ext = s.extensions["semaphores"]
    async with rpc(s.address) as scheduler:
        sem = await Semaphore(name="r", scheduler_rpc=scheduler, loop=IOLoop.current(),
                              lease_timeout="200ms")
        assert sem.client is None
        assert await sem.acquire()
        (lease,) = ext.leases["r"].values()
        assert lease.client is None and lease.timeout == 0.2
        # Its holder refreshes it (every lease-timeout / 5) ...
        granted = lease.refreshed
        await async_wait_for(lambda: lease.refreshed > granted, timeout=5)
        # ... and once silent (as if its process had vanished), it expires.
        lost = sem._held.ids.popleft()
        await async_wait_for(lambda: lost not in ext.leases["r"], timeout=5)
        assert await Semaphore(name="r", register=False).acquire(timeout=5) is True
    with pytest.raises(ValueError, match="needs loop"):
        Semaphore(name="r", scheduler_rpc=scheduler)
    with pytest.raises(ValueError, match="not both"):
        Semaphore(name="r", client=c, scheduler_rpc=scheduler, loop=IOLoop.current())


@gen_cluster(client=True, config=FAST_LEASES)
async def test_dropped_holder_keeps_its_lease_refreshed(c, s, a, b):
    ext = s.extensions["semaphores"]
    sem = await Semaphore(name="g")
    assert await sem.acquire()
    del sem
    gc.collect()
    (lease,) = ext.leases["g"].values()
    granted = lease.refreshed
    await async_wait_for(lambda: lease.refreshed > granted, timeout=5)
    assert not ext.stale
    assert await Semaphore(name="g", register=False).acquire(timeout=0) is False


# ----------------------------------------------------------------------
# the extension itself, fed by hand (no sockets)
# ----------------------------------------------------------------------


class _FakeScheduler:
    def __init__(self):
        self.handlers = {}
        self.stream_handlers = {}
        self.clients = {"c1": None, "c2": None}
        self.workers = {"tcp://w1": None}


def test_extension_lease_rules():
    async def main():
        sched = _FakeScheduler()
        ext = SemaphoreExtension(sched)
        ext.register(name="n", max_leases=3)
        assert await ext.acquire(name="n", lease_id="by-client", client="c1", lease_timeout=1)
        assert await ext.acquire(name="n", lease_id="by-worker", client="c2", worker="tcp://w1", lease_timeout=1)
        assert await ext.acquire(name="n", lease_id="by-rpc", lease_timeout=1)
        now = time.monotonic()
        ext.validate_leases(now + 0.5)  # fresh: nothing happens
        assert set(ext.leases["n"]) == {"by-client", "by-worker", "by-rpc"}
        ext.validate_leases(now + 5)  # stale: the rpc holder's lease expires, the others are kept
        assert set(ext.leases["n"]) == {"by-client", "by-worker"}
        assert set(ext.stale) == {"by-client", "by-worker"}
        del sched.workers["tcp://w1"]  # the scheduler removed that worker
        ext.validate_leases(now + 5)
        assert set(ext.leases["n"]) == {"by-client"}
        del sched.clients["c1"]  # a disconnect that remove_client did not see
        ext.validate_leases(now + 5)
        assert not ext.leases["n"] and not ext.stale
        assert ext.refresh_leases(name="n", lease_ids=["by-client"]) == ["by-client"]
        assert ext.release(name="n", lease_id="by-client") is False
        with pytest.raises(RuntimeError, match="not connected"):
            await ext.acquire(name="n", lease_id="late", client="c1")

    asyncio.run(main())


def test_extension_retried_and_abandoned_requests():
    async def main():
        ext = SemaphoreExtension(_FakeScheduler())
        ext.register(name="n", max_leases=1)
        assert await ext.acquire(name="n", lease_id="L1", client="c1")
        assert await ext.acquire(name="n", lease_id="L1", client="c1")  # a retry: granted once
        assert len(ext.leases["n"]) == 1 and ext.metrics["acquire_total"]["n"] == 1
        ext.abandon(name="n", lease_id="L2")  # gave up before its request arrived
        assert await ext.acquire(name="n", lease_id="L2", client="c2") is False
        waiting = asyncio.ensure_future(ext.acquire(name="n", lease_id="L3", client="c2"))
        retry = asyncio.ensure_future(ext.acquire(name="n", lease_id="L3", client="c2"))
        while not ext.waiters.get("n"):
            await asyncio.sleep(0)
        for _ in range(3):  # let the retry reach its wait too
            await asyncio.sleep(0)
        ext.remove_client("c1")
        assert await waiting is True and await retry is True
        assert list(ext.leases["n"]) == ["L3"]
        # A request may overtake its semaphore's registration; a closed name stays closed.
        assert await ext.acquire(name="fresh", lease_id="F1", max_leases=2) is True
        assert ext.max_leases["fresh"] == 2
        assert ext.close_semaphore(name="fresh") == ["F1"]
        with pytest.raises(RuntimeError, match="already closed"):
            await ext.acquire(name="fresh", lease_id="F2", max_leases=2)
        ext.register(name="fresh", max_leases=1)  # registered again: open again
        assert await ext.acquire(name="fresh", lease_id="F3", max_leases=1) is True
        ext.close()
        with pytest.raises(RuntimeError, match="closing"):
            await ext.acquire(name="n", lease_id="L4")
        with pytest.raises(RuntimeError, match="not known"):
            ext._closed = False
            await ext.acquire(name="unknown", lease_id="L5")

    asyncio.run(main())


# ----------------------------------------------------------------------
# the coroutine-era style
# ----------------------------------------------------------------------


@gen_cluster(client=True)
def test_generator_style(c, s, a, b):
    sem = yield Semaphore(max_leases=1, name="gen")
    assert (yield sem.acquire()) is True
    assert (yield sem.acquire(timeout=0)) is False
    assert (yield sem.get_value()) == 1
    assert (yield sem.release()) is True
    other = yield Semaphore(name="x", max_leases=2)  # registered before a task uses it
    assert (yield c.submit(_in_task, 1, other)) == 2
