"""The cluster-wide Lock and the scheduler extension registry that loads it."""
import asyncio
import os
import pickle
import threading
import time
from datetime import timedelta

import pytest
from tornado.ioloop import IOLoop

from distributed import Client, Scheduler, config, get_worker
from distributed.coordination import lock as lock_module
from distributed.coordination.lock import Lock, LockArgumentError, LockExtension, LockNotHeldError
from distributed.core import rpc
from distributed.scheduler import extensions as registry
from distributed.utils_test import async_wait_for, cluster, gen_cluster, gen_test, wait_for

# ----------------------------------------------------------------------
# acquire / release with one client
# ----------------------------------------------------------------------


@gen_cluster(client=True)
async def test_acquire_release_and_timeout(c, s, a, b):
    locks = s.extensions["locks"]
    lock = Lock("x")
    assert await lock.acquire() is True
    assert lock.locked()
    assert locks.ids["x"] == lock.id

    other = Lock("x")
    assert other.id != lock.id
    assert await other.acquire(timeout=0.1) is False
    assert not other.locked()
    assert locks.ids["x"] == lock.id
    assert "x" not in locks.events  # the timed-out request left the queue

    await lock.release()
    assert not lock.locked()
    assert not locks.ids and not locks.events


@gen_cluster(client=True)
async def test_timeouts_in_every_form(c, s, a, b):
    lock = Lock("x")
    for timeout in (0, "1s", timedelta(seconds=1), 1.5):
        assert await lock.acquire(timeout=timeout) is True
        await lock.release()
    assert await lock.acquire(blocking=False) is True
    assert await Lock("x").acquire(blocking=False) is False
    await lock.release()


@gen_cluster(client=True)
async def test_contradicting_arguments_raise_before_anything_is_sent(c, s, a, b):
    lock = Lock("x")
    # Older releases raised TypeError here, current ones ValueError: both catch it.
    with pytest.raises(ValueError, match="takes no timeout"):
        lock.acquire(blocking=False, timeout=1)
    with pytest.raises(TypeError):
        lock.acquire(blocking=False, timeout=1)
    assert issubclass(LockArgumentError, (ValueError, TypeError))
    with pytest.raises(ValueError, match="negative"):
        lock.acquire(timeout=-1)
    with pytest.raises(ValueError, match="not a valid duration"):
        lock.acquire(timeout="soon")
    with pytest.raises(TypeError, match="lock name"):
        Lock({"a": 1})
    assert not s.extensions["locks"].ids and not s.extensions["locks"].events


@gen_cluster(client=True)
async def test_release_without_holding_raises(c, s, a, b):
    lock = Lock("x")
    with pytest.raises(ValueError, match="does not hold"):
        await lock.release()
    await lock.acquire()
    with pytest.raises(LockNotHeldError):  # another object of the same name
        await Lock("x").release()
    await lock.release()
    with pytest.raises(RuntimeError, match="does not hold"):  # released twice
        await lock.release()
    assert issubclass(LockNotHeldError, (ValueError, RuntimeError))


@gen_cluster(client=True)
async def test_waiters_get_the_lock_in_order(c, s, a, b):
    locks = s.extensions["locks"]
    first = Lock("q")
    await first.acquire()
    order = []

    async def take(i):
        lock = Lock("q")
        await lock.acquire()
        order.append(i)
        await lock.release()

    waiters = []
    for i in range(3):
        waiters.append(asyncio.ensure_future(take(i)))
        # each request is queued before the next one is sent
        await async_wait_for(lambda n=i + 1: len(locks.events.get("q", ())) == n, timeout=5)
    await first.release()
    await asyncio.gather(*waiters)
    assert order == [0, 1, 2]
    assert not locks.ids and not locks.events


@gen_cluster(client=True)
async def test_names_of_several_types(c, s, a, b):
    for name in [1, ("a", 1), ["a", 1], b"123", "123", 2.5]:
        lock = Lock(name)
        assert lock.name == name
        assert await lock.acquire() is True
        assert await Lock(name).acquire(timeout=0) is False
        await lock.release()
    assert not s.extensions["locks"].ids and not s.extensions["locks"].events
    assert isinstance(Lock().name, str)  # no name: a fresh unique one


@gen_cluster(client=True)
async def test_async_with(c, s, a, b):
    async with Lock("x") as lock:
        assert lock.locked()
        assert await Lock("x").acquire(timeout=0.05) is False
    assert not lock.locked()
    assert not s.extensions["locks"].ids
    with pytest.raises(RuntimeError, match="async with"):
        with Lock("x"):
            pass


@gen_cluster(client=True)
async def test_cancelled_acquire_is_not_left_holding(c, s, a, b):
    locks = s.extensions["locks"]
    holder = Lock("x")
    await holder.acquire()
    waiter = Lock("x")
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(waiter.acquire(), 0.2)
    # The abandon message takes the request out of the queue.
    await async_wait_for(lambda: "x" not in locks.events, timeout=5)
    await holder.release()
    assert not locks.ids
    assert not waiter.locked()


# ----------------------------------------------------------------------
# locks in tasks, across workers and clients
# ----------------------------------------------------------------------

_inside = {"now": 0, "max": 0}
_inside_lock = threading.Lock()


def _exclusive(x, lock, delay=0.02):
    """Count how many tasks are inside the lock at once (in-process workers)."""
    with lock:
        with _inside_lock:
            _inside["now"] += 1
            _inside["max"] = max(_inside["max"], _inside["now"])
        time.sleep(delay)
        with _inside_lock:
            _inside["now"] -= 1
    return get_worker().address


@gen_cluster(client=True, nthreads=[("127.0.0.1", 3)] * 2)
async def test_contention_across_tasks_on_different_workers(c, s, a, b):
    _inside.update(now=0, max=0)
    lock = Lock("shared")
    futures = [c.submit(_exclusive, i, lock, workers=[w], pure=False)
               for i in range(12) for w in [(a.address, b.address)[i % 2]]]
    ran_on = await c.gather(futures)
    assert set(ran_on) == {a.address, b.address}
    assert _inside["max"] == 1
    assert not s.extensions["locks"].ids and not s.extensions["locks"].events


def _in_task(x, lock=None):
    with lock:
        assert lock.name == "x"
        assert lock.locked()
        return x + 1


@gen_cluster(client=True)
async def test_lock_passed_into_tasks_pickles_by_name(c, s, a, b):
    lock = Lock("x")
    assert await c.gather(c.map(_in_task, range(10), lock=lock)) == list(range(1, 11))
    copy = pickle.loads(pickle.dumps(lock))
    assert copy.name == lock.name and copy.id != lock.id
    assert copy.client is lock.client is c
    # A held lock pickles by name too: the copy does not hold it.
    await lock.acquire()
    copy = pickle.loads(pickle.dumps(lock))
    assert not copy.locked()
    await lock.release()


def _acquire_in_task(name):
    return Lock(name).acquire(timeout=0)


@gen_cluster(client=True)
async def test_lock_survives_the_client_that_created_it(c, s, a, b):
    locks = s.extensions["locks"]
    async with Client(s.address, asynchronous=True, set_as_default=False) as other:
        mine = Lock("z", client=other)
        assert await mine.acquire() is True
        theirs = Lock("z", client=c)
        assert await theirs.acquire(timeout=0) is False
        assert await c.submit(_acquire_in_task, "z") is False
        await mine.release()
        assert await theirs.acquire() is True
    # The creating client is gone; the lock and its holder are not.
    assert locks.ids["z"] == theirs.id
    assert await c.submit(_acquire_in_task, "z", pure=False) is False
    await theirs.release()
    assert await c.submit(_acquire_in_task, "z", pure=False) is True  # held by that task's Lock now
    assert locks.ids.get("z") is not None


@gen_cluster(client=True)
async def test_holder_whose_client_disconnects_lets_go(c, s, a, b):
    locks = s.extensions["locks"]
    other = await Client(s.address, asynchronous=True, set_as_default=False)
    try:
        held = Lock("w", client=other)
        await held.acquire()
        waiting = asyncio.ensure_future(Lock("w", client=other).acquire())
        await async_wait_for(lambda: len(locks.events.get("w", ())) == 1, timeout=5)
        mine = asyncio.ensure_future(Lock("w", client=c).acquire())
        await async_wait_for(lambda: len(locks.events.get("w", ())) == 2, timeout=5)
    finally:
        await other.close()
    # Its hold is released, its waiter dropped, and the next in line gets it.
    assert await asyncio.wait_for(mine, 5) is True
    with pytest.raises((RuntimeError, OSError)):  # the scheduler's answer, or the closed connection
        await asyncio.wait_for(waiting, 5)
    assert locks.ids["w"] != held.id
    assert "w" not in locks.events


@gen_cluster(client=True)
async def test_lock_through_a_bare_scheduler_rpc(c, s, a, b):
    async with rpc(s.address) as scheduler:
        lock = Lock("r", scheduler_rpc=scheduler, loop=IOLoop.current())
        assert lock.client is None
        assert await lock.acquire() is True
        assert s.extensions["locks"].ids["r"] == lock.id
        assert await Lock("r").acquire(timeout=0) is False  # through the client: same lock
        await lock.release()
        assert not s.extensions["locks"].ids
        # a cancelled acquire abandons its request through the same rpc
        holder = Lock("r")
        await holder.acquire()
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(lock.acquire(), 0.2)
        await async_wait_for(lambda: "r" not in s.extensions["locks"].events and not lock_module._in_flight,
                             timeout=5)
        await holder.release()
        assert not s.extensions["locks"].ids
    with pytest.raises(ValueError, match="not both"):
        Lock("r", client=c, scheduler_rpc=scheduler, loop=IOLoop.current())
    with pytest.raises(ValueError, match="needs loop"):
        Lock("r", scheduler_rpc=scheduler)
    with pytest.raises(ValueError, match="only meaningful"):
        Lock("r", client=c, loop=IOLoop.current())


def test_lock_needs_a_client():
    lock = Lock("x")
    with pytest.raises(RuntimeError, match="not properly initialized"):
        lock.acquire()


def _exclusive_by_file(i, path, lock):
    """Mutual exclusion across processes: the marker file must not exist."""
    with lock:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)  # fails if another holder is inside
        os.close(fd)
        time.sleep(0.02)
        os.remove(path)
    return get_worker().address


def test_contention_across_worker_processes(loop, tmp_path):
    path = str(tmp_path / "inside")
    with cluster() as (s, [a, b]):
        with Client(s["address"], loop=loop) as c:
            lock = Lock("files")
            futures = [c.submit(_exclusive_by_file, i, path, lock, workers=[w["address"]], pure=False)
                       for i in range(10) for w in [(a, b)[i % 2]]]
            assert set(c.gather(futures)) == {a["address"], b["address"]}
            with Lock("files") as held:
                assert held.locked()
                assert Lock("files").acquire(timeout=0.1) is False
                assert c.submit(_acquire_in_task, "files", pure=False).result() is False
            assert c.submit(_acquire_in_task, "other-name").result() is True


def _hold_until_killed(home, marker):
    """Take the lock on worker ``home`` and keep it until the test says
    stop; on any other worker (after ``home`` died, the scheduler runs it
    again) do nothing."""
    if get_worker().address != home:
        return "moved"
    lock = Lock("dead-holder")
    lock.acquire()
    open(marker, "w").close()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not os.path.exists(marker + ".stop"):
        time.sleep(0.01)  # the task's own duration: it holds the lock meanwhile
    return "not killed"


def test_holder_on_a_dead_worker_releases_the_lock(loop, tmp_path):
    marker = str(tmp_path / "held")
    with cluster() as (s, [a, b]):
        with Client(s["address"], loop=loop) as c:
            f = c.submit(_hold_until_killed, a["address"], marker, workers=[a["address"]],
                         allow_other_workers=True, pure=False)
            wait_for(lambda: os.path.exists(marker), timeout=20)
            assert Lock("dead-holder").acquire(timeout=0.1) is False
            a["proc"].terminate()
            open(marker + ".stop", "w").close()  # a worker closing gracefully waits for its task
            lock = Lock("dead-holder")
            assert lock.acquire(timeout=20) is True
            lock.release()
            assert f.result(timeout=20) == "moved"


# ----------------------------------------------------------------------
# the extension itself, fed by hand (no sockets)
# ----------------------------------------------------------------------


class _FakeScheduler:
    def __init__(self):
        self.handlers = {}
        self.stream_handlers = {}


def test_extension_abandon_before_request_refuses_it():
    async def main():
        ext = LockExtension(_FakeScheduler())
        assert await ext.acquire(name="n", id="A", token="t1", client="c1") is True
        # "t2" gives up before its request arrives: the late request is refused
        ext.abandon(name="n", token="t2", client="c2")
        assert await ext.acquire(name="n", id="B", token="t2", client="c2", timeout=None) is False
        assert "n" not in ext.events
        # abandoning the holding token releases it
        ext.abandon(name="n", token="t1", client="c1")
        assert not ext.ids and not ext._abandoned

    asyncio.run(main())


def test_extension_remove_client_frees_holds_and_fails_waiters():
    async def main():
        ext = LockExtension(_FakeScheduler())
        assert await ext.acquire(name="n", id="A", token="t1", client="c1") is True
        theirs = asyncio.ensure_future(ext.acquire(name="n", id="B", token="t2", client="c1"))
        mine = asyncio.ensure_future(ext.acquire(name="n", id="C", token="t3", client="c2"))
        while len(ext.events.get("n", ())) < 2:
            await asyncio.sleep(0)
        ext.remove_client("c1")
        assert await mine is True
        with pytest.raises(RuntimeError, match="disconnected"):
            await theirs
        assert ext.ids == {"n": "C"}
        assert ext.release(name="n", id="C", token="wrong") is False
        assert ext.release(name="n", id="C", token="t3") is True
        assert not ext.ids and not ext.events

    asyncio.run(main())


def test_extension_close_answers_waiters():
    async def main():
        ext = LockExtension(_FakeScheduler())
        await ext.acquire(name="n", id="A", token="t1", client="c1")
        waiter = asyncio.ensure_future(ext.acquire(name="n", id="B", token="t2", client="c2"))
        while not ext.events.get("n"):
            await asyncio.sleep(0)
        ext.close()
        with pytest.raises(RuntimeError, match="closed"):
            await waiter
        with pytest.raises(RuntimeError, match="closing"):
            await ext.acquire(name="m", id="C", token="t3")

    asyncio.run(main())


# ----------------------------------------------------------------------
# the registry
# ----------------------------------------------------------------------


class RecordingExtension:
    """Loaded by name in the registry tests below."""

    def __init__(self, scheduler):
        self.scheduler = scheduler
        self.removed_clients = []
        self.closed = False
        scheduler.handlers["recording_ping"] = lambda comm=None: "pong"

    def remove_client(self, client):
        self.removed_clients.append(client)

    async def close(self):
        self.closed = True


class BrokenExtension:
    def __init__(self, scheduler):
        raise ValueError("no way")


def test_registry_defaults_and_config():
    assert registry.extension_targets()["locks"] == "distributed.coordination.lock:LockExtension"
    target = f"{__name__}:RecordingExtension"
    with config.set({"distributed.scheduler.extensions": {"recording": target, "locks": None}}):
        targets = registry.extension_targets()
    assert targets["recording"] == target and "locks" not in targets
    assert registry.extension_targets({"only": RecordingExtension}) == {"only": RecordingExtension}
    assert registry.import_extension(target) is RecordingExtension
    assert registry.import_extension(f"{__name__}.RecordingExtension") is RecordingExtension
    with pytest.raises(ImportError, match="NoSuchClass"):
        registry.import_extension(f"{__name__}:NoSuchClass")
    with pytest.raises(TypeError, match="mapping"):
        registry.extension_targets(["locks"])
    with pytest.raises(TypeError, match="class or a 'module:Class'"):
        registry.extension_targets({"bad": 3})


@pytest.mark.parametrize("target, error, match", [
    ("no_such_module_here:Ext", ImportError, "'bad' could not be imported"),
    (f"{__name__}:BrokenExtension", RuntimeError, "'bad'.*failed to start.*no way"),
])
def test_scheduler_with_a_bad_extension_fails_clearly(target, error, match):
    with pytest.raises(error, match=match):
        Scheduler(extensions={"bad": target})


@gen_cluster(client=True, config={"distributed.scheduler.extensions": {"recording": f"{__name__}:RecordingExtension"}})
async def test_configured_extension_is_loaded_and_told_of_clients(c, s, a, b):
    ext = s.extensions["recording"]
    assert isinstance(s.extensions["locks"], LockExtension)
    assert await c.scheduler.recording_ping() == "pong"
    other = await Client(s.address, asynchronous=True, set_as_default=False)
    await other.close()
    await async_wait_for(lambda: other.id in ext.removed_clients, timeout=5)


@gen_test()
async def test_extensions_are_closed_with_the_scheduler():
    async with Scheduler(port=0, extensions={"recording": RecordingExtension}) as s:
        ext = s.extensions["recording"]
        assert not ext.closed
    assert ext.closed


@gen_cluster(scheduler_kwargs={"extensions": {"recording": RecordingExtension}})
async def test_scheduler_extensions_keyword_replaces_the_defaults(s, a, b):
    # "stealing" is the scheduler's own balancer (distributed.scheduler.work-stealing),
    # listed among the extensions only because upstream's code looks for it there.
    assert set(s.extensions) - {"stealing"} == {"recording"}
    assert "lock_acquire" not in s.handlers
