"""Queue: FIFO through the scheduler, Futures kept alive while queued, bounded puts, batches."""
import asyncio
import pickle

import pytest

from distributed import Client, TimeoutError
from distributed.coordination.queue import Queue, QueueClosedError, QueueExtension
from distributed.utils_test import async_wait_for, cluster, gen_cluster, inc


@gen_cluster(client=True)
async def test_put_get_qsize_in_order(c, s, a, b):
    q = Queue("q")
    assert q.client is c
    for i in range(5):
        await q.put(i)
    assert await q.qsize() == 5
    assert [await Queue("q").get() for _ in range(5)] == list(range(5))
    assert await q.qsize() == 0
    assert "q" not in s.extensions["queues"].queues  # an empty unbounded queue leaves no state


@gen_cluster(client=True)
async def test_futures_stay_alive_while_queued(c, s, a, b):
    ext = s.extensions["queues"]
    q = Queue("q")
    future = c.submit(inc, 1, key="x")
    await q.put(future)
    await q.put([future, 5])  # the same key twice, inside a list
    del future
    await async_wait_for(lambda: {cs.client_key for cs in s.tasks["x"].who_wants} == {"queue-q"}, timeout=5)
    assert ext.queues["q"].holder.counts == {"x": 2}
    assert s.tasks["x"].state in ("processing", "memory")
    f1 = await q.get()
    assert f1.key == "x" and f1.client is c
    assert await f1 == 2
    f2, five = await q.get()
    assert five == 5 and f2.key == "x" and f2.status == "finished"
    await async_wait_for(lambda: not ext.in_flight and "q" not in ext.queues, timeout=5)
    assert "queue-q" not in s.clients
    del f1, f2
    await async_wait_for(lambda: "x" not in s.tasks, timeout=5)


@gen_cluster(client=True)
async def test_get_waits_and_times_out(c, s, a, b):
    q = Queue("q")
    with pytest.raises(TimeoutError, match="no item came"):
        await q.get(timeout=0.05)
    waiting = asyncio.ensure_future(q.get())
    await async_wait_for(lambda: "q" in s.extensions["queues"].queues
                         and s.extensions["queues"].queues["q"].getters, timeout=5)
    await Queue("q").put("hello")
    assert await waiting == "hello"


@gen_cluster(client=True)
async def test_batches(c, s, a, b):
    q = Queue("q")
    assert await q.get(batch=True) == []
    for i in range(4):
        await q.put(i)
    assert await q.get(batch=True) == [0, 1, 2, 3]
    two = asyncio.ensure_future(q.get(batch=2))
    await q.put("a")
    await async_wait_for(lambda: s.extensions["queues"].queues["q"].items, timeout=5)
    assert not two.done()  # one item is not two
    await q.put("b")
    assert await two == ["a", "b"]
    # batch=n with a timeout takes nothing when n do not come (upstream refused the combination)
    await q.put("c")
    with pytest.raises(TimeoutError):
        await q.get(batch=2, timeout=0.05)
    assert await q.qsize() == 1
    assert await q.get() == "c"


@gen_cluster(client=True)
async def test_bounded_queue_blocks_puts(c, s, a, b):
    q = Queue("b", maxsize=2)
    await q.put(1)
    await q.put(2)
    with pytest.raises(TimeoutError, match="stayed full"):
        await q.put(3, timeout=0.05)
    assert await q.qsize() == 2
    blocked = asyncio.ensure_future(q.put(3))
    await async_wait_for(lambda: s.extensions["queues"].queues["b"].putters, timeout=5)
    assert await q.get() == 1
    await blocked
    assert await q.get(batch=True) == [2, 3]
    assert s.extensions["queues"].queues["b"].maxsize == 2  # a bounded queue keeps its bound
    with pytest.raises(ValueError, match="maxsize=2"):
        await Queue("b", maxsize=3).put(1)
    with pytest.raises(ValueError, match="never be served"):
        q.get(batch=3)
    await Queue("b").put("unbounded object, bounded queue")
    await q.close()
    assert "b" not in s.extensions["queues"].queues


@gen_cluster(client=True)
async def test_close_fails_waiters_and_releases_futures(c, s, a, b):
    q = Queue("q")
    await q.put(c.submit(inc, 1, key="y"))
    waiting_get = asyncio.ensure_future(Queue("other").get())
    await async_wait_for(lambda: "other" in s.extensions["queues"].queues, timeout=5)
    await Queue("other").close()
    with pytest.raises(QueueClosedError):
        await waiting_get
    await q.close()
    assert await q.qsize() == 0
    await async_wait_for(lambda: "y" not in s.tasks, timeout=5)
    assert "queue-q" not in s.clients


@gen_cluster(client=True)
async def test_close_starts_at_once_without_await(c, s, a, b):
    queues = s.extensions["queues"].queues
    q = await Queue()
    assert q.name not in queues  # unbounded and empty: no state
    await q.put(1)
    q.close()  # fire-and-forget on an asynchronous client, as upstream
    q.close()
    assert await q.qsize() == 0  # this object's next call waits for the close
    assert q.name not in queues


@gen_cluster(client=True)
async def test_abandoned_get_puts_its_items_back(c, s, a, b):
    ext = s.extensions["queues"]
    q = Queue("q")
    await q.put(c.submit(inc, 1, key="z"))
    reply = await ext.get(name="q", token="tok", client=c.id)
    assert reply["status"] == "OK" and "tok" in ext.in_flight
    ext.abandon(token="tok", name="q")
    assert not ext.in_flight and len(ext.queues["q"].items) == 1
    f = await q.get()
    assert await f == 2
    # cancelled on the client's side while waiting: the request leaves the queue
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(q.get(), 0.1)
    await async_wait_for(lambda: "q" not in ext.queues, timeout=5)


@gen_cluster(client=True)
async def test_waiters_of_a_disconnected_client_are_dropped(c, s, a, b):
    ext = s.extensions["queues"]
    other = await Client(s.address, asynchronous=True, set_as_default=False)
    waiting = asyncio.ensure_future(Queue("q", client=other).get())
    await async_wait_for(lambda: "q" in ext.queues and ext.queues["q"].getters, timeout=5)
    await other.close()
    with pytest.raises((RuntimeError, OSError, asyncio.CancelledError)):
        await asyncio.wait_for(waiting, 5)
    await async_wait_for(lambda: "q" not in ext.queues, timeout=5)
    # an item put now is not lost to the departed getter
    await Queue("q").put(1)
    assert await Queue("q").get() == 1


def _produce(q, n):
    for i in range(n):
        q.put(i)
    return n


def _consume(q, n):
    return [q.get(timeout=10) for _ in range(n)]


@gen_cluster(client=True, nthreads=[("127.0.0.1", 2)] * 2)
async def test_producer_and_consumer_tasks(c, s, a, b):
    q = Queue("pc", maxsize=3)
    produced = c.submit(_produce, q, 20, workers=[a.address])
    consumed = c.submit(_consume, q, 20, workers=[b.address])
    assert await produced == 20
    assert await consumed == list(range(20))


def _queue_futures(q):
    from distributed import get_client

    client = get_client()
    q.put(client.submit(inc, 1, pure=False))
    return "ok"


@gen_cluster(client=True)
async def test_future_put_by_a_task_is_alive_for_the_client(c, s, a, b):
    q = Queue("fq")
    assert await c.submit(_queue_futures, q) == "ok"
    future = await q.get(timeout=5)
    assert await future == 2


@gen_cluster(client=True, nthreads=[])
async def test_unpickle_without_client(c, s):
    pickled = pickle.dumps(Queue("foo", maxsize=4))
    await c.close()
    obj = pickle.loads(pickled)
    assert obj.client is None and obj.maxsize == 4
    with pytest.raises(RuntimeError, match="not properly initialized"):
        obj.put(1)
    async with Client(s.address, asynchronous=True):
        obj = await pickle.loads(pickled)
        assert s.extensions["queues"].queues["foo"].maxsize == 4
        await obj.put(42)
        assert await obj.get() == 42


def test_bad_arguments_raise_before_anything_is_sent():
    with pytest.raises(ValueError, match="maxsize"):
        Queue("x", maxsize=-1)
    q = Queue("x")
    with pytest.raises(ValueError, match="batch"):
        q.get(batch=-2)
    with pytest.raises(TypeError, match="unexpected keyword"):
        q.get(block=True)


def test_extension_close_answers_waiters():
    class FakeScheduler:
        handlers: dict = {}
        stream_handlers: dict = {}

    async def main():
        ext = QueueExtension(FakeScheduler())
        getter = asyncio.ensure_future(ext.get(name="n", token="t", client="c1"))
        while "n" not in ext.queues or not ext.queues["n"].getters:
            await asyncio.sleep(0)
        ext.close()
        with pytest.raises(RuntimeError, match="closed"):
            await getter
        with pytest.raises(RuntimeError, match="closing"):
            await ext.get(name="n", token="t2")

    asyncio.run(main())


def test_blocking_api_with_real_processes(loop):
    with cluster() as (s, [a, b]):
        with Client(s["address"], loop=loop) as c:
            q = Queue("q", maxsize=5)
            futures = c.map(inc, range(3))
            for f in futures:
                q.put(f)
            keys = [f.key for f in futures]
            del futures, f
            got = [q.get(timeout=5) for _ in range(3)]
            assert [f.key for f in got] == keys
            assert c.gather(got) == [1, 2, 3]
            producer = c.submit(_produce, q, 10, pure=False)
            assert c.submit(_consume, q, 10, pure=False).result() == list(range(10))
            assert producer.result() == 10
            with pytest.raises(TimeoutError):
                q.get(timeout=0.1)
            assert q.qsize() == 0
            q.close()


def _queue_chain(n):
    from distributed import worker_client

    with worker_client() as client:
        q = Queue("chain", client=client)
        for _ in range(n):
            x = q.get(timeout=30).result()
            q.put(client.submit(inc, x, pure=False))
        return n


@gen_cluster(client=True, nthreads=[("127.0.0.1", 2)] * 2, timeout=60)
async def test_futures_circulating_between_tasks_are_never_lost(c, s, a, b):
    q = Queue("chain")
    for future in await c.scatter(list(range(5))):
        await q.put(future)
    assert await c.gather(c.map(_queue_chain, [10] * 5, pure=False)) == [10] * 5
    left = await q.get(batch=True)
    assert sum(await c.gather(left)) == sum(range(5)) + 50  # every increment arrived
    await async_wait_for(lambda: not s.extensions["queues"].in_flight, timeout=10)
