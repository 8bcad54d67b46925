"""Structured events: the scheduler's topics, publishing from every kind of
process, subscriptions, and the lifecycle events the scheduler publishes."""
from __future__ import annotations

import asyncio
import time

import pytest

from distributed import Client, Nanny, get_worker
from distributed.exceptions import error_message
from distributed.scheduler.events import EventBroker
from distributed.utils_test import async_wait_for, cluster, gen_cluster, inc, throws, wait_for


def test_broker_keeps_a_bounded_log_per_topic():
    broker = EventBroker(maxlen=2)
    for i in range(3):
        broker.publish("t", i, now=float(i))
    assert broker.get_events("t") == ((1.0, 1), (2.0, 2))
    assert broker.counts["t"] == 3
    assert broker.counts["never"] == 0 and "never" not in broker.topics
    assert broker.get_events() == {"t": ((1.0, 1), (2.0, 2))}


def test_broker_sends_to_subscribers_only():
    broker = EventBroker()
    broker.subscribe("t", "c1")
    broker.subscribe("u", "c2")
    out = broker.publish(["t", "u"], "x", now=1.0)
    assert out == {"c1": [{"op": "event", "topic": "t", "event": (1.0, "x")}],
                   "c2": [{"op": "event", "topic": "u", "event": (1.0, "x")}]}
    broker.remove_client("c1")
    assert broker.publish("t", "y", now=2.0) == {}
    assert broker.subscribers["t"] == set()


def test_broker_rejects_bad_log_length():
    with pytest.raises(ValueError, match="log length"):
        EventBroker(maxlen=-1)


@gen_cluster(nthreads=[])
async def test_log_event_on_scheduler(s):
    before = time.time()
    s.log_event("foo", {"action": "test", "value": 1})
    s.log_event(["foo", "bar"], {"action": "test", "value": 2})
    (ts, msg), _ = s.get_events("foo")
    assert before <= ts <= time.time()
    assert msg == {"action": "test", "value": 1}
    assert [m for _, m in s.get_events("bar")] == [{"action": "test", "value": 2}]
    assert s.get_events("nothing") == ()
    assert set(s.get_events()) >= {"foo", "bar"}
    assert s.event_counts["foo"] == 2


@gen_cluster(client=True, nthreads=[], config={"distributed.admin.low-level-log-length": 3})
async def test_log_length_is_configurable(c, s):
    for i in range(4):
        s.log_event("test", f"message {i}")
    assert [m for _, m in s.events["test"]] == ["message 1", "message 2", "message 3"]
    assert s.event_counts["test"] == 4


@gen_cluster(client=True, nthreads=[("127.0.0.1", 1)])
async def test_events_from_task_scheduler_and_client(c, s, a):
    def from_task():
        get_worker().log_event("topic1", {"foo": "bar"})

    assert await c.get_events("topic1") == ()
    await c.submit(from_task)
    await async_wait_for(lambda: s.get_events("topic1"), timeout=5)
    events = await c.get_events("topic1")
    assert events[0][1] == {"foo": "bar", "worker": a.address}

    await c.run_on_scheduler(lambda dask_scheduler: dask_scheduler.log_event("topic2", {"woo": "hoo"}))
    await c.log_event("topic2", ("alice", "bob"))
    assert [m for _, m in await c.get_events("topic2")] == [{"woo": "hoo"}, ("alice", "bob")]
    everything = await c.get_events()
    assert set(everything) >= {"topic1", "topic2", "all"}


@gen_cluster(client=True, nthreads=[])
async def test_log_event_needs_msgpack(c, s):
    class C:
        pass

    await c.log_event("t", "foo")
    with pytest.raises(TypeError, match="msgpack"):
        await c.log_event("t", C())
    await c.log_event("t", error_message(ValueError("boom")))
    msgs = [m for _, m in s.get_events("t")]
    assert msgs[0] == "foo" and len(msgs) == 2  # the bad one changed nothing
    assert msgs[1]["status"] == "error" and "boom" in msgs[1]["exception_text"]


@gen_cluster(client=True, nthreads=[("127.0.0.1", 1)])
async def test_subscribe_and_unsubscribe(c, s, a):
    log = []
    c.subscribe_topic("test-topic", log.append)
    await async_wait_for(lambda: s.event_subscriber["test-topic"], timeout=5)
    a.log_event("test-topic", {"important": "event"})
    await async_wait_for(lambda: len(log) == 1, timeout=5)
    stamp, msg = log[0]
    assert isinstance(stamp, float)
    assert msg == {"important": "event", "worker": a.address}

    c.unsubscribe_topic("test-topic")
    await async_wait_for(lambda: not s.event_subscriber["test-topic"], timeout=5)
    a.log_event("test-topic", {"forget": "me"})
    await async_wait_for(lambda: s.event_counts["test-topic"] == 2, timeout=5)

    async def async_handler(event):
        await asyncio.sleep(0)
        log.append(event)

    c.subscribe_topic("test-topic", async_handler)
    await async_wait_for(lambda: s.event_subscriber["test-topic"], timeout=5)
    a.log_event("test-topic", {"async": "event"})
    await async_wait_for(lambda: len(log) == 2, timeout=5)
    assert log[1][1] == {"async": "event", "worker": a.address}
    assert len(await c.get_events("test-topic")) == 3  # the scheduler kept the unheard one


@gen_cluster(client=True, nthreads=[])
async def test_unsubscribe_unknown_topic_raises(c, s):
    with pytest.raises(ValueError, match="No event handler known for topic unknown"):
        c.unsubscribe_topic("unknown")


@gen_cluster(client=True, nthreads=[])
async def test_events_reach_every_subscribed_client(c, s):
    got = []
    async with Client(s.address, asynchronous=True) as c2:
        c.subscribe_topic("t", lambda e: got.append(1))
        c2.subscribe_topic("t", lambda e: got.append(2))
        await async_wait_for(lambda: len(s.event_subscriber["t"]) == 2, timeout=5)
        await c.log_event("t", {})
        await async_wait_for(lambda: sorted(got) == [1, 2], timeout=5)
    # c2 is gone: its subscription too
    await async_wait_for(lambda: len(s.event_subscriber["t"]) == 1, timeout=5)


@gen_cluster(client=True, nthreads=[("127.0.0.1", 1)])
async def test_all_servers_use_one_channel(c, s, a):
    log = []
    c.subscribe_topic("test-topic", log.append)
    await async_wait_for(lambda: s.event_subscriber["test-topic"], timeout=5)
    async with Nanny(s.address, nthreads=1) as n:
        a.log_event("test-topic", "worker")
        n.log_event("test-topic", "nanny")
        s.log_event("test-topic", "scheduler")
        await c.log_event("test-topic", "client")
        await async_wait_for(lambda: len(log) == 4, timeout=10)
    assert sorted(m for _, m in log) == ["client", "nanny", "scheduler", "worker"]


@gen_cluster(client=True, nthreads=[("127.0.0.1", 1)])
async def test_lifecycle_events(c, s, a):
    actions = [m["action"] for _, m in s.get_events("all")]
    assert "add-worker" in actions and "add-client" in actions
    async with Client(s.address, asynchronous=True) as c2:
        c2_id = c2.id
    await async_wait_for(lambda: any(m.get("client") == c2_id and m["action"] == "remove-client"
                                     for _, m in s.get_events("all")), timeout=5)
    future = c.submit(throws, 1, key="bad")
    with pytest.raises(RuntimeError):
        await future
    dependent = c.submit(inc, future, key="dependent")
    with pytest.raises(RuntimeError):
        await dependent
    erred = [m for _, m in s.get_events("task-erred")]
    assert [m["key"] for m in erred] == ["bad"]  # not the dependent: it never ran
    assert erred[0]["worker"] == a.address and "hello" in erred[0]["exception_text"]
    await a.close()
    await async_wait_for(lambda: any(m["action"] == "remove-worker" and m["worker"] == a.address
                                     for _, m in s.get_events("all")), timeout=5)


def test_events_with_a_blocking_client(loop):
    with cluster(nworkers=1) as (s, [a]):
        with Client(s["address"], loop=loop) as c:
            got = []
            c.subscribe_topic("jobs", got.append)

            def task():
                get_worker().log_event("jobs", {"done": 1})

            wait_for(lambda: c.run_on_scheduler(
                lambda dask_scheduler: len(dask_scheduler.event_subscriber["jobs"])) == 1, timeout=10)
            c.submit(task).result()
            c.log_event(["jobs", "other"], "from the client")
            wait_for(lambda: len(got) == 2, timeout=10)
            assert got[0][1] == {"done": 1, "worker": a["address"]}
            assert [m for _, m in c.get_events("other")] == ["from the client"]
