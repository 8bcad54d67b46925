"""MultiLock: several named locks held together."""
import asyncio
import os
import pickle
import threading
import time

import pytest

from distributed import Client, get_worker
from distributed.coordination.lock import Lock, LockNotHeldError
from distributed.coordination.multi_lock import MultiLock, MultiLockExtension
from distributed.utils_test import async_wait_for, cluster, gen_cluster, wait_for


@gen_cluster(client=True)
async def test_acquire_release_and_timeout(c, s, a, b):
    ext = s.extensions["multi_locks"]
    lock = MultiLock(names=["a", "b"])
    assert await lock.acquire() is True
    assert lock.locked()
    assert ext.locks == {"a": [lock.id], "b": [lock.id]}

    other = MultiLock(names=["b", "c"])
    assert await other.acquire(timeout=0.1) is False
    assert not other.locked()  # a failed acquire holds nothing (upstream thought it did)
    with pytest.raises(LockNotHeldError):
        await other.release()
    assert ext.locks == {"a": [lock.id], "b": [lock.id]}  # it left every queue, "c" included
    assert await MultiLock(names=["c"]).acquire(blocking=False) is True

    await lock.release()
    assert not lock.locked()
    assert ext.locks == {"c": [next(iter(ext.requests))]}


@gen_cluster(client=True)
async def test_arguments_checked_before_anything_is_sent(c, s, a, b):
    lock = MultiLock(["a", "b"])
    with pytest.raises(ValueError, match="takes no timeout"):
        lock.acquire(blocking=False, timeout=1)
    with pytest.raises(ValueError, match="negative"):
        lock.acquire(timeout=-1)
    with pytest.raises(ValueError, match="between 0 and"):
        lock.acquire(num_locks=3)
    with pytest.raises(TypeError, match="list of lock names"):
        MultiLock("ab")
    with pytest.raises(LockNotHeldError, match="does not hold"):
        lock.release()
    assert not s.extensions["multi_locks"].requests


@gen_cluster(client=True)
async def test_waiting_request_is_queued_on_all_names_at_once(c, s, a, b):
    ext = s.extensions["multi_locks"]
    holder = MultiLock(["x"])
    await holder.acquire()
    waiter = MultiLock(["x", "y"])
    task = asyncio.ensure_future(waiter.acquire())
    await async_wait_for(lambda: len(ext.locks.get("x", ())) == 2, timeout=5)
    # It heads "y" while it waits: a later request for "y" waits behind it.
    assert ext.locks["y"] == ext.locks["x"][1:]
    assert await MultiLock(["y"]).acquire(timeout=0.05) is False
    await holder.release()
    assert await task is True
    assert ext.locks == {"x": [waiter.id], "y": [waiter.id]}
    await waiter.release()
    assert not ext.locks and not ext.requests


@gen_cluster(client=True)
async def test_no_circular_wait(c, s, a, b):
    """Requests for the same names in opposite orders never deadlock."""
    counts = {"inside": 0, "max": 0}

    async def worker(names):
        for _ in range(5):
            async with MultiLock(names):
                counts["inside"] += 1
                counts["max"] = max(counts["max"], counts["inside"])
                await asyncio.sleep(0)
                counts["inside"] -= 1

    await asyncio.wait_for(asyncio.gather(*(worker(n) for n in (["a", "b"], ["b", "a"]) * 3)), 20)
    assert counts["max"] == 1
    assert not s.extensions["multi_locks"].locks


@gen_cluster(client=True)
async def test_num_locks(c, s, a, b):
    ext = s.extensions["multi_locks"]
    first = MultiLock(["a", "b", "c"])
    assert await first.acquire(num_locks=2) is True
    assert set(ext.locks) == {"a", "b"}  # it keeps exactly two and leaves "c"
    second = MultiLock(["a", "b", "c"])
    assert await second.acquire(num_locks=1) is True
    assert ext.locks["c"] == [second.id]
    third = MultiLock(["a", "c"])
    task = asyncio.ensure_future(third.acquire(num_locks=2))
    await async_wait_for(lambda: len(ext.locks["c"]) == 2, timeout=5)
    await second.release()
    await first.release()
    assert await task is True
    await third.release()
    assert not ext.locks and not ext.requests
    empty = MultiLock([])
    assert await empty.acquire() is True  # nothing to wait for
    await empty.release()


@gen_cluster(client=True)
async def test_cancelled_acquire_leaves_every_queue(c, s, a, b):
    ext = s.extensions["multi_locks"]
    holder = MultiLock(["a"])
    await holder.acquire()
    waiter = MultiLock(["a", "b"])
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(waiter.acquire(), 0.2)
    await async_wait_for(lambda: "b" not in ext.locks and len(ext.requests) == 1, timeout=5)
    await holder.release()
    assert not ext.locks and not waiter.locked()


@gen_cluster(client=True)
async def test_holder_whose_client_disconnects_lets_go(c, s, a, b):
    ext = s.extensions["multi_locks"]
    async with Client(s.address, asynchronous=True, set_as_default=False) as other:
        held = MultiLock(["a", "b"], client=other)
        await held.acquire()
        waiting = asyncio.ensure_future(MultiLock(["b"], client=other).acquire())
        mine = asyncio.ensure_future(MultiLock(["a", "b"], client=c).acquire())
        await async_wait_for(lambda: len(ext.locks.get("b", ())) == 3, timeout=5)
    assert await asyncio.wait_for(mine, 5) is True
    with pytest.raises((RuntimeError, OSError)):
        await asyncio.wait_for(waiting, 5)
    assert [r.client for r in ext.requests.values()] == [c.id]


_inside = {"now": 0, "max": 0}
_inside_lock = threading.Lock()


def _exclusive(x, lock):
    with lock:
        with _inside_lock:
            _inside["now"] += 1
            _inside["max"] = max(_inside["max"], _inside["now"])
        time.sleep(0.01)
        with _inside_lock:
            _inside["now"] -= 1
    return x


@gen_cluster(client=True, nthreads=[("127.0.0.1", 2)] * 2)
async def test_multi_lock_in_tasks(c, s, a, b):
    _inside.update(now=0, max=0)
    lock = MultiLock(["p", "q"])
    copy = pickle.loads(pickle.dumps(lock))
    assert copy.names == ["p", "q"] and not copy.locked()
    futures = c.map(_exclusive, range(10), lock=lock, pure=False)
    futures += c.map(_exclusive, range(10, 20), lock=MultiLock(["q", "p"]), pure=False)
    assert sorted(await c.gather(futures)) == list(range(20))
    assert _inside["max"] == 1
    assert not s.extensions["multi_locks"].locks


def test_multi_lock_needs_a_client():
    with pytest.raises(RuntimeError, match="not properly initialized"):
        MultiLock(["a"]).acquire()


def _hold_until_told(home, marker, make):
    if get_worker().address != home:
        return "moved"
    lock = make()
    lock.acquire()
    open(marker, "w").close()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not os.path.exists(marker + ".stop"):
        time.sleep(0.01)  # the task's own duration: it holds the locks meanwhile
    return "not killed"


def _multi_lock():
    return MultiLock(["m1", "m2"])


def _lock():
    return Lock("m1")


@pytest.mark.parametrize("make", [_multi_lock, _lock])
def test_holder_on_a_killed_worker_releases(loop, tmp_path, make):
    """SIGKILL: the worker's sockets close with it, its client's holds go."""
    marker = str(tmp_path / "held")
    with cluster() as (s, [a, b]):
        with Client(s["address"], loop=loop) as c:
            f = c.submit(_hold_until_told, a["address"], marker, make, workers=[a["address"]],
                         allow_other_workers=True, pure=False)
            wait_for(lambda: os.path.exists(marker), timeout=20)
            assert make().acquire(timeout=0.1) is False
            a["proc"].kill()
            lock = make()
            assert lock.acquire(timeout=20) is True
            lock.release()
            open(marker + ".stop", "w").close()
            assert f.result(timeout=20) == "moved"


class _FakeScheduler:
    def __init__(self):
        self.handlers = {}
        self.stream_handlers = {}


def test_extension_by_hand():
    async def main():
        ext = MultiLockExtension(_FakeScheduler())
        assert await ext.acquire(locks=["a"], id="A", client="c1") is True
        ext.abandon(id="B")  # gave up before its request arrived
        assert await ext.acquire(locks=["a"], id="B", client="c2") is False
        assert await ext.acquire(locks=["a", ["t", 1]], id="C", client="c2", timeout=0) is False
        assert ext.locks == {"a": ["A"]}
        waiting = asyncio.ensure_future(ext.acquire(locks=["a", "b"], id="D", client="c2"))
        while "b" not in ext.locks:
            await asyncio.sleep(0)
        assert ext.release(id="D") is False  # not granted yet
        ext.remove_client("c1")
        assert await waiting is True
        assert ext.locks == {"a": ["D"], "b": ["D"]}
        ext.abandon(id="D")  # an abandoned holder releases
        assert not ext.locks and not ext.requests
        late = asyncio.ensure_future(ext.acquire(locks=["a"], id="E", client="c3"))
        await asyncio.sleep(0)
        assert await late is True
        blocked = asyncio.ensure_future(ext.acquire(locks=["a"], id="F", client="c3"))
        while len(ext.locks["a"]) < 2:
            await asyncio.sleep(0)
        ext.close()
        with pytest.raises(RuntimeError, match="closed"):
            await blocked
        with pytest.raises(RuntimeError, match="closing"):
            await ext.acquire(locks=["z"], id="G")

    asyncio.run(main())


@gen_cluster(client=True)
def test_generator_style(c, s, a, b):
    lock = MultiLock(["g1", "g2"])
    assert (yield lock.acquire()) is True
    assert (yield MultiLock(["g2"]).acquire(blocking=False)) is False
    yield lock.release()
    assert not s.extensions["multi_locks"].locks
