"""Pub/Sub: messages relayed through the scheduler between clients and tasks."""
import asyncio
import pickle
import time
from datetime import timedelta

import pytest

from distributed import Client, TimeoutError
from distributed.coordination.pubsub import Pub, PubSubExtension, Sub
from distributed.utils_test import async_wait_for, captured_logger, cluster, gen_cluster, wait_for


@gen_cluster(client=True, nthreads=[])
async def test_client_to_client(c, s):
    ext = s.extensions["pubsub"]
    sub = Sub("a")
    pub = Pub("a")
    await async_wait_for(lambda: set(ext.get_subscribers(name="a").values()) == {c.id}, timeout=5)
    assert await pub.get_subscribers() == {sub.id: c.id}
    pub.put(123)
    pub.put({"x": [1, 2]})
    assert await sub.__anext__() == 123
    assert await sub.get() == {"x": [1, 2]}
    with pytest.raises(RuntimeError, match="get_subscribers"):
        pub.subscribers  # a round trip: not on the loop


@gen_cluster(client=True)
async def test_messages_to_nobody_are_dropped(c, s, a, b):
    ext = s.extensions["pubsub"]
    Pub("nobody").put(1)
    await async_wait_for(lambda: ext.dropped_unheard == 1, timeout=5)
    sub = Sub("nobody")
    Pub("nobody").put(2)  # same client's stream: after the subscription
    assert await sub.get(timeout=5) == 2


@gen_cluster(client=True)
async def test_timeouts(c, s, a, b):
    sub = Sub("a")
    with pytest.raises(TimeoutError, match="no message"):
        await sub.get(timeout="100ms")
    with pytest.raises(TimeoutError):
        await sub.get(timeout=timedelta(milliseconds=10))
    assert not s.extensions["pubsub"].subscribers["a"][sub.id].getters


@gen_cluster(client=True)
async def test_full_buffer_drops_the_oldest_and_counts(c, s, a, b):
    ext = s.extensions["pubsub"]
    sub = Sub("slow", maxlen=3)
    pub = Pub("slow")
    with captured_logger("distributed.coordination.pubsub") as log:
        for i in range(5):
            pub.put(i)
        await async_wait_for(lambda: sub.id in ext._subs and ext._subs[sub.id].dropped == 2, timeout=5)
    assert "not keeping up" in log.getvalue()
    assert [await sub.get() for _ in range(3)] == [2, 3, 4]
    assert sub.dropped == 2
    with pytest.raises(ValueError, match="maxlen"):
        Sub("x", maxlen=0)


@gen_cluster(client=True)
async def test_close_and_garbage_collection_end_the_subscription(c, s, a, b):
    ext = s.extensions["pubsub"]
    sub = Sub("a")
    await async_wait_for(lambda: "a" in ext.subscribers, timeout=5)
    sub.close()
    await async_wait_for(lambda: "a" not in ext.subscribers, timeout=5)
    with pytest.raises(RuntimeError, match="closed"):
        sub.get()
    sub2 = Sub("b")
    await async_wait_for(lambda: "b" in ext.subscribers, timeout=5)
    del sub2
    await async_wait_for(lambda: "b" not in ext.subscribers, timeout=5)


@gen_cluster(client=True)
async def test_subscriptions_end_with_their_client(c, s, a, b):
    ext = s.extensions["pubsub"]
    other = await Client(s.address, asynchronous=True, set_as_default=False)
    sub = Sub("a", client=other)
    waiting = asyncio.ensure_future(sub.get())
    await async_wait_for(lambda: sub.id in ext._subs and ext._subs[sub.id].getters, timeout=5)
    await other.close()
    with pytest.raises((RuntimeError, OSError, asyncio.CancelledError)):
        await asyncio.wait_for(waiting, 5)
    assert not ext.subscribers and not ext._subs


def _publish(name, n):
    pub = Pub(name)
    deadline = time.monotonic() + 10
    while not pub.subscribers:  # a round trip from the task's thread
        assert time.monotonic() < deadline, "no subscriber came"
    for i in range(n):
        pub.put(i)
    return n


def _collect(name, n):
    sub = Sub(name)
    out = []
    for msg in sub:
        out.append(msg)
        if len(out) == n:
            return out


@gen_cluster(client=True, nthreads=[("127.0.0.1", 2)] * 2)
async def test_task_to_task_and_task_to_client(c, s, a, b):
    sub = Sub("t2c")
    futures = c.map(_publish, ["t2c"], [10])
    assert [await sub.get(timeout=10) for _ in range(10)] == list(range(10))
    await c.gather(futures)
    collected = c.submit(_collect, "t2t", 5, workers=[a.address])
    published = c.submit(_publish, "t2t", 5, workers=[b.address])
    assert await collected == list(range(5))
    assert await published == 5


def _pingpong(me, other, n, start=False):
    sub = Sub(me)
    pub = Pub(other)
    deadline = time.monotonic() + 10
    while not pub.subscribers:
        assert time.monotonic() < deadline
    if start:
        pub.put(0)
    for _ in range(n):
        msg = next(sub)
        pub.put(msg + 1)
    return msg


@gen_cluster(client=True, nthreads=[("127.0.0.1", 1)] * 2)
async def test_pingpong_between_tasks(c, s, a, b):
    x = c.submit(_pingpong, "a", "b", 20, start=True, workers=[a.address])
    y = c.submit(_pingpong, "b", "a", 20, workers=[b.address])
    assert sorted(await c.gather([x, y])) == [38, 39]


@gen_cluster(client=True, nthreads=[])
async def test_unpickle_without_client(c, s):
    pickled = pickle.dumps(Sub("foo"))
    pickled_pub = pickle.dumps(Pub("foo"))
    await c.close()
    sub = pickle.loads(pickled)
    assert sub.client is None
    with pytest.raises(RuntimeError, match="not properly initialized"):
        sub.get()
    with pytest.raises(RuntimeError, match="not properly initialized"):
        pickle.loads(pickled_pub).put(1)
    async with Client(s.address, asynchronous=True):
        sub = pickle.loads(pickled)
        pub = pickle.loads(pickled_pub)
        pub.put("late")  # the subscription is on the same stream, before this
        assert await sub.get(timeout=5) == "late"


@gen_cluster(client=True)
async def test_repr_and_arguments(c, s, a, b):
    assert "Pub" in repr(Pub("my-topic")) and "my-topic" in repr(Pub("my-topic"))
    assert "Sub" in repr(Sub("my-topic")) and "my-topic" in repr(Sub("my-topic"))
    with pytest.raises(ValueError, match="not both"):
        Pub("x", worker=a, client=c)
    assert Sub("w", worker=a).client is a._get_client()
    with pytest.raises(TypeError, match="async for"):
        next(Sub("x"))


def test_extension_close_answers_getters():
    class FakeScheduler:
        handlers: dict = {}
        stream_handlers: dict = {}

    async def main():
        ext = PubSubExtension(FakeScheduler())
        getter = asyncio.ensure_future(ext.get(name="n", sub="s1", client="c1", token="t"))
        while not ext._subs or not ext._subs["s1"].getters:
            await asyncio.sleep(0)
        ext.publish(name="n", msg="hi")
        assert (await getter)["msg"] == "hi"
        getter = asyncio.ensure_future(ext.get(name="n", sub="s1", client="c1", token="t2"))
        while not ext._subs["s1"].getters:
            await asyncio.sleep(0)
        ext.close()
        with pytest.raises(RuntimeError, match="closed"):
            await getter

    asyncio.run(main())


def test_blocking_api_with_real_processes(loop):
    with cluster() as (s, [a, b]):
        with Client(s["address"], loop=loop) as c:
            sub = Sub("procs")
            pub = Pub("procs")
            wait_for(lambda: pub.subscribers, timeout=10)
            pub.put("hello")
            assert sub.get(timeout=5) == "hello"
            published = c.submit(_publish, "procs", 3, pure=False)
            assert [next(sub) for _ in range(3)] == [0, 1, 2]
            assert published.result() == 3
            collected = c.submit(_collect, "back", 2, pure=False)
            back = Pub("back")
            wait_for(lambda: back.subscribers, timeout=10)
            back.put("x")
            back.put("y")
            assert collected.result() == ["x", "y"]
            sub.close()
