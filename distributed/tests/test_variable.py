"""Variable: a named value in the scheduler, Futures kept alive, the get/set handshake."""
import asyncio
import pickle
from datetime import timedelta

import pytest

from distributed import Client, TimeoutError, wait
from distributed.coordination.lock import Lock
from distributed.coordination.variable import Variable, VariableExtension
from distributed.utils_test import async_wait_for, cluster, div, gen_cluster, inc


@gen_cluster(client=True)
async def test_set_get_delete_with_a_future(c, s, a, b):
    ext = s.extensions["variables"]
    x = Variable("x")
    xx = Variable("x")
    assert x.client is c
    future = c.submit(inc, 1)
    assert await x.is_set() is False
    await x.set(future)
    assert await x.is_set() is True
    future2 = await xx.get()
    assert future2.key == future.key
    assert await future2 == 2
    assert ext.variables["x"].keys == (future.key,)
    key = future.key
    del future, future2
    # the variable keeps the data alive after the client dropped its Futures
    await async_wait_for(lambda: not ext.in_flight, timeout=5)
    await async_wait_for(lambda: {cs.client_key for cs in s.tasks[key].who_wants} == {"variable-x"}, timeout=5)
    assert s.tasks[key].state == "memory"
    x.delete()  # fire-and-forget on an asynchronous client
    assert await x.is_set() is False
    await async_wait_for(lambda: key not in s.tasks, timeout=5)
    assert "variable-x" not in s.clients and not ext.holders


@gen_cluster(client=True)
async def test_plain_values_and_names_of_several_types(c, s, a, b):
    for name, value in [("a", (1, "hello")), (1, {"k": [1, 2]}), (("t", 1), None), (b"b", b"\x00" * 10)]:
        v = Variable(name)
        await v.set(value)
        assert await Variable(name).get() == value
    assert isinstance(Variable().name, str)


@gen_cluster(client=True)
async def test_get_waits_for_the_first_set(c, s, a, b):
    v = Variable("v")
    waiting = asyncio.ensure_future(v.get())
    await async_wait_for(lambda: "v" in s.extensions["variables"].waiting, timeout=5)
    await Variable("v").set(1)
    assert await waiting == 1
    assert not s.extensions["variables"].waiting


@gen_cluster(client=True)
async def test_get_timeout_in_every_form(c, s, a, b):
    v = Variable("v")
    for timeout in ("50ms", timedelta(milliseconds=10), 0.05, 0):
        with pytest.raises(TimeoutError, match="not set within"):
            await v.get(timeout=timeout)
    assert not s.extensions["variables"].waiting
    with pytest.raises(ValueError, match="negative"):
        v.get(timeout=-1)
    with pytest.raises(ValueError, match="not a valid duration"):
        v.get(timeout="soon")


@gen_cluster(client=True)
async def test_future_knows_its_status_at_once(c, s, a, b):
    x = await c.scatter(123)
    v = Variable("x")
    await v.set(x)
    async with Client(s.address, asynchronous=True, set_as_default=False) as c2:
        v2 = Variable("x", client=c2)
        future = await v2.get()
        assert future.client is c2
        assert future.status == "finished"
        assert await future == 123
        bad = c.submit(div, 1, 0)
        await wait(bad)
        await v.set(bad)
        future2 = await v2.get()
        assert future2.status == "error"
        with pytest.raises(ZeroDivisionError):
            await future2
        assert isinstance(await future2.exception(), ZeroDivisionError)


@gen_cluster(client=True)
async def test_set_waits_for_a_future_submitted_just_before(c, s, a, b):
    # The submission travels on the client's stream, the set on an rpc.
    v = Variable("v")
    futures = c.map(inc, range(20))
    await v.set(futures)
    got = await v.get()
    assert [f.key for f in got] == [f.key for f in futures]
    assert await c.gather(got) == list(range(1, 21))


@gen_cluster(client=True)
async def test_hold_futures_after_the_setting_client_closed(c, s, a, b):
    async with Client(s.address, asynchronous=True, set_as_default=False) as c1:
        future = c1.submit(inc, 10)
        await Variable("x", client=c1).set(future)
        key = future.key
    assert s.tasks[key].who_wants  # held for the variable only
    async with Client(s.address, asynchronous=True, set_as_default=False) as c2:
        future2 = await Variable("x", client=c2).get()
        assert await future2 == 11


@gen_cluster(client=True)
async def test_replacing_the_value_releases_the_old_key(c, s, a, b):
    ext = s.extensions["variables"]
    v = Variable("v")
    await v.set(c.submit(inc, 1, key="one"))
    await async_wait_for(lambda: "one" in s.tasks and s.tasks["one"].state == "memory", timeout=5)
    await v.set(c.submit(inc, 2, key="two"))
    await async_wait_for(lambda: "one" not in s.tasks, timeout=5)
    assert ext.holders["v"].counts == {"two": 1}
    assert await (await v.get()) == 3


@gen_cluster(client=True)
async def test_a_get_racing_a_set_never_loses_the_key(c, s, a, b):
    """The reader's token holds the old key until its client confirms."""
    ext = s.extensions["variables"]
    v = Variable("v")
    x = c.submit(inc, 10, key="x")
    await v.set(x)
    del x
    for i in range(10):
        reading = asyncio.ensure_future(Variable("v")._get())
        setting = asyncio.ensure_future(v.set(c.submit(inc, i, key=f"y-{i}")))
        future = await reading
        await setting
        assert await future in (11, *range(1, i + 2))
        del future
    await async_wait_for(lambda: not ext.in_flight, timeout=5)
    assert ext.holders["v"].counts == {"y-9": 1}


@gen_cluster(client=True)
async def test_abandoned_get_leaves_nothing_behind(c, s, a, b):
    ext = s.extensions["variables"]
    v = Variable("v")
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(v.get(), 0.1)  # cancelled on our side
    await async_wait_for(lambda: not ext.waiting, timeout=5)
    # A token abandoned before its request arrived is refused when it does.
    ext.abandon(token="t1", name="v")
    assert await ext.get(name="v", token="t1", client=c.id) == {"status": "abandoned"}


@gen_cluster(client=True)
async def test_waiting_get_fails_when_its_client_disconnects(c, s, a, b):
    ext = s.extensions["variables"]
    other = await Client(s.address, asynchronous=True, set_as_default=False)
    waiting = asyncio.ensure_future(Variable("w", client=other).get())
    await async_wait_for(lambda: "w" in ext.waiting, timeout=5)
    await other.close()
    with pytest.raises((RuntimeError, OSError, asyncio.CancelledError)):
        await asyncio.wait_for(waiting, 5)
    assert not ext.waiting


@gen_cluster(client=True)
async def test_unconfirmed_hand_out_is_released_with_its_client(c, s, a, b):
    ext = s.extensions["variables"]
    await Variable("v").set(c.submit(inc, 1, key="k"))
    reply = await ext.get(name="v", token="tok", client="ghost-client")
    assert reply["status"] == "OK" and ext.in_flight["tok"][1] == ("k",)
    assert ext.holders["v"].counts == {"k": 2}
    ext.remove_client("ghost-client")
    assert not ext.in_flight and ext.holders["v"].counts == {"k": 1}


def _count_under_lock(i):
    with Lock("counter-lock"):
        v = Variable("counter")
        v.set(v.get() + 1)
    return i


@gen_cluster(client=True, nthreads=[("127.0.0.1", 4)] * 2)
async def test_20_tasks_read_modify_write_under_a_lock_give_an_exact_count(c, s, a, b):
    v = Variable("counter")
    await v.set(0)
    await c.gather(c.map(_count_under_lock, range(20)))
    assert await v.get() == 20


def _read_in_task(name):
    return Variable(name).get(timeout=5)


def _set_in_task(name, value):
    Variable(name).set(value)


@gen_cluster(client=True)
async def test_variable_in_tasks_pickles_by_name(c, s, a, b):
    v = Variable("t")
    await c.submit(_set_in_task, "t", 42)
    assert await v.get() == 42
    assert await c.submit(_read_in_task, "t", pure=False) == 42
    copy = pickle.loads(pickle.dumps(v))
    assert copy.name == "t" and copy.client is c


def _future_through_variable():
    from distributed import get_client

    client = get_client()
    v = Variable("from-task")
    v.set(client.submit(inc, 41, pure=False))
    return "ok"


@gen_cluster(client=True)
async def test_future_set_in_a_task_outlives_the_task(c, s, a, b):
    assert await c.submit(_future_through_variable) == "ok"
    future = await Variable("from-task").get()
    assert await future == 42


@gen_cluster(client=True, nthreads=[])
async def test_unpickle_without_client(c, s):
    pickled = pickle.dumps(Variable("foo"))
    await c.close()
    obj = pickle.loads(pickled)
    assert obj.client is None
    with pytest.raises(RuntimeError, match="not properly initialized"):
        obj.set(42)
    async with Client(s.address, asynchronous=True):
        obj = pickle.loads(pickled)
        await obj.set(42)
        assert await obj.get() == 42


@gen_cluster(client=True)
async def test_await_constructor_and_repr(c, s, a, b):
    v = await Variable("x")
    assert isinstance(v, Variable) and "x" in repr(v)


def test_extension_close_answers_waiting_readers():
    class FakeScheduler:
        handlers: dict = {}
        stream_handlers: dict = {}

    async def main():
        ext = VariableExtension(FakeScheduler())
        reader = asyncio.ensure_future(ext.get(name="n", token="t", client="c1"))
        while not ext.waiting:
            await asyncio.sleep(0)
        ext.close()
        with pytest.raises(RuntimeError, match="closed"):
            await reader
        with pytest.raises(RuntimeError, match="closing"):
            await ext.get(name="n", token="t2")

    asyncio.run(main())


def test_blocking_api_with_real_processes(loop):
    with cluster() as (s, [a, b]):
        with Client(s["address"], loop=loop) as c:
            v = Variable("x")
            v.set(c.submit(inc, 10))
            assert v.get().result() == 11
            assert c.submit(_read_in_task, "x", pure=False).result().result() == 11
            v.set(123)
            assert c.submit(_read_in_task, "x", pure=False).result() == 123
            with pytest.raises(TimeoutError):
                Variable("unset").get(timeout=0.1)
            counter = Variable("counter")
            counter.set(0)
            c.gather(c.map(_count_under_lock, range(20)))
            assert counter.get() == 20
            v.delete()
            assert not v.is_set()


def _state_of(key, dask_scheduler=None):
    return dask_scheduler.tasks[key].state


def test_future_kept_alive_after_the_client_releases_it(loop):
    with cluster() as (s, [a, b]):
        with Client(s["address"], loop=loop) as c:
            future = c.submit(inc, 1, key="kept")
            Variable("keep").set(future)
            future.result()
            del future
        # the client closed: only the variable holds the key now
        with Client(s["address"], loop=loop) as c2:
            assert c2.run_on_scheduler(_state_of, "kept") == "memory"
            assert Variable("keep").get().result() == 2


def _chain(n):
    from distributed import worker_client

    with worker_client() as client:
        v = Variable("chain", client=client)
        for _ in range(n):
            x = v.get().result()  # a lost key would raise CancelledError here
            v.set(client.submit(inc, x, pure=False))
        return v.get().result()


@gen_cluster(client=True, nthreads=[("127.0.0.1", 2)] * 2, timeout=60)
async def test_concurrent_readers_and_writers_never_lose_the_value(c, s, a, b):
    """Without a lock updates may be lost, but never the key a reader got."""
    v = Variable("chain")
    await v.set(await c.scatter(0))
    results = await c.gather(c.map(_chain, [10] * 4, pure=False))
    # Racing writers may overwrite each other with older values, so a chain
    # may end lower than 10; what must hold is that no reader lost its key
    # (that would have raised CancelledError in _chain) and values grew.
    assert all(r >= 1 for r in results)
    assert await (await v.get()) >= 1
    await async_wait_for(lambda: not s.extensions["variables"].in_flight, timeout=10)
    assert len(s.extensions["variables"].holders["chain"].counts) == 1


def test_scheduler_side_modules_load_neither_futures_nor_dask():
    """The scheduler loads these extensions: they must stay light there."""
    import subprocess
    import sys

    code = ("import sys\n"
            "import distributed.coordination.variable, distributed.coordination.queue\n"
            "import distributed.coordination.event, distributed.coordination.pubsub\n"
            "import distributed.coordination.metadata\n"
            "print(sorted(m for m in ('dask', 'distributed.futures', 'distributed.client.core') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"
