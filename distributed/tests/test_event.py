"""Event: a named flag in the scheduler; wait/set/clear/is_set from clients and tasks."""
import asyncio
import pickle
from datetime import timedelta

import pytest

from distributed import Client
from distributed.coordination.event import Event, EventExtension
from distributed.utils_test import async_wait_for, cluster, gen_cluster


@gen_cluster(client=True)
async def test_set_wakes_every_waiter(c, s, a, b):
    ext = s.extensions["events"]
    event = Event("e")
    assert event.client is c
    assert await event.is_set() is False
    waiters = [asyncio.ensure_future(Event("e").wait()) for _ in range(3)]
    await async_wait_for(lambda: len(ext.waiters.get("e", ())) == 3, timeout=5)
    await event.set()
    assert await asyncio.gather(*waiters) == [True, True, True]
    assert await event.is_set() is True
    assert await Event("e").wait(timeout=0) is True  # set: returns at once
    await event.clear()
    assert await event.is_set() is False
    assert not ext.set_names and not ext.waiters  # clear and unwaited: no state


@gen_cluster(client=True)
async def test_wait_timeout_returns_false(c, s, a, b):
    event = Event("e")
    for timeout in (0, 0.05, "50ms", timedelta(milliseconds=20)):
        assert await event.wait(timeout=timeout) is False
    assert not s.extensions["events"].waiters
    with pytest.raises(ValueError, match="negative"):
        event.wait(timeout=-1)


@gen_cluster(client=True)
async def test_cancelled_wait_leaves_no_waiter(c, s, a, b):
    ext = s.extensions["events"]
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(Event("e").wait(), 0.1)
    await async_wait_for(lambda: not ext.waiters, timeout=5)


@gen_cluster(client=True)
async def test_waiter_of_a_disconnected_client_is_answered(c, s, a, b):
    ext = s.extensions["events"]
    other = await Client(s.address, asynchronous=True, set_as_default=False)
    waiting = asyncio.ensure_future(Event("e", client=other).wait())
    await async_wait_for(lambda: "e" in ext.waiters, timeout=5)
    await other.close()
    with pytest.raises((RuntimeError, OSError, asyncio.CancelledError)):
        await asyncio.wait_for(waiting, 5)
    assert not ext.waiters


def _wait_then_report(name):
    return Event(name).wait(timeout=10)


def _set_in_task(name):
    Event(name).set()


@gen_cluster(client=True, nthreads=[("127.0.0.1", 2)] * 2)
async def test_events_between_tasks(c, s, a, b):
    ext = s.extensions["events"]
    waiting = c.map(_wait_then_report, ["go"] * 3, pure=False)
    await async_wait_for(lambda: len(ext.waiters.get("go", ())) == 3, timeout=10)
    await c.submit(_set_in_task, "go")
    assert await c.gather(waiting) == [True, True, True]
    # the flag outlives the task (and the client) that set it
    assert await Event("go").is_set()


@gen_cluster(client=True, nthreads=[])
async def test_unpickle_without_client(c, s):
    pickled = pickle.dumps(Event("foo"))
    await c.close()
    obj = pickle.loads(pickled)
    assert obj.client is None
    with pytest.raises(RuntimeError, match="not properly initialized"):
        obj.set()
    async with Client(s.address, asynchronous=True):
        obj = await pickle.loads(pickled)
        await obj.set()
        assert await obj.is_set()


def test_extension_close_answers_waiters():
    class FakeScheduler:
        handlers: dict = {}
        stream_handlers: dict = {}

    async def main():
        ext = EventExtension(FakeScheduler())
        waiter = asyncio.ensure_future(ext.event_wait(name="n", token="t", client="c1"))
        while not ext.waiters:
            await asyncio.sleep(0)
        ext.close()
        with pytest.raises(RuntimeError, match="closed"):
            await waiter
        ext.abandon(token="t2", name="m")  # given up before it arrives: refused
        ext._closed = False
        assert await ext.event_wait(name="m", token="t2") is False

    asyncio.run(main())


def test_blocking_api_with_real_processes(loop):
    with cluster() as (s, [a, b]):
        with Client(s["address"], loop=loop) as c:
            event = Event("ready")
            assert event.wait(timeout=0.05) is False
            waiting = c.submit(_wait_then_report, "ready", pure=False)
            event.set()
            assert waiting.result() is True
            assert event.is_set()
            event.clear()
            assert not event.is_set()
