"""The Client and Future API in one event loop (``gen_cluster``).

Scheduler, workers and client share the test's loop, so tasks run in worker
threads of this process: module-level state (events, lists, ``varying``) is
visible to tasks, and the scheduler's and workers' state can be inspected
directly.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import os
import sys
import threading
import traceback
import uuid

import pytest
from tornado import gen

import distributed
from distributed import (
    CancelledError,
    Client,
    Future,
    TimeoutError,
    Worker,
    as_completed,
    default_client,
    fire_and_forget,
    futures_of,
    get_client,
    get_worker,
    rejoin,
    secede,
    wait,
    worker_client,
)
from distributed.utils_test import (
    add,
    async_wait_for,
    double,
    gen_cluster,
    gen_test,
    inc,
    throws,
    varying,
)

# ----------------------------------------------------------------------
# Helpers run as tasks (workers are in this process)
# ----------------------------------------------------------------------

_events: dict[str, threading.Event] = {}
_log: dict[str, list] = {}


def new_event() -> str:
    name = uuid.uuid4().hex
    _events[name] = threading.Event()
    return name


def block_on(name, x=None):
    """Wait (bounded) until the test sets event ``name``; returns ``x``."""
    _events[name].wait(10)
    return x


def record(name, x):
    _log.setdefault(name, []).append(x)
    return x


def identity(x):
    return x


def sum_dict(d):
    return sum(d.values())


def write_file(path, text="done"):
    with open(path, "w") as f:
        f.write(text)
    return path


def import_and_call(modname):
    import importlib

    return importlib.import_module(modname).value()


def fib(n):
    if n < 2:
        return n
    with worker_client() as client:
        a = client.submit(fib, n - 1)
        b = client.submit(fib, n - 2)
        return a.result() + b.result()


def submit_and_gather(n):
    client = get_client()
    futures = client.map(inc, range(n))
    secede()
    results = client.gather(futures)
    rejoin()
    return sum(results)


def worker_address_of_task(x):
    return get_worker().address


def nested_reduction_graph(n):
    """A tree reduction over ``n`` leaves: ``2n - 1`` tasks."""
    dsk = {f"leaf-{i}": (inc, i) for i in range(n)}
    layer = [f"leaf-{i}" for i in range(n)]
    depth = 0
    while len(layer) > 1:
        depth += 1
        nxt = []
        for j in range(0, len(layer) - 1, 2):
            k = f"sum-{depth}-{j}"
            dsk[k] = (add, layer[j], layer[j + 1])
            nxt.append(k)
        if len(layer) % 2:
            nxt.append(layer[-1])
        layer = nxt
    return dsk, layer[0]


# ----------------------------------------------------------------------
# submit
# ----------------------------------------------------------------------


@gen_cluster(client=True)
async def test_submit_returns_future_with_result(c, s, a, b):
    future = c.submit(inc, 10)
    assert isinstance(future, Future)
    assert future.client is c
    assert await future == 11
    assert future.status == "finished"
    assert future.done()


@gen_cluster(client=True)
async def test_submit_pure_key_is_deterministic(c, s, a, b):
    x = c.submit(inc, 1)
    y = c.submit(inc, 1)
    z = c.submit(inc, 2)
    assert x.key == y.key
    assert x.key != z.key
    assert x.key.startswith("inc-")
    assert await x == 2 and await z == 3


@gen_cluster(client=True)
async def test_submit_same_key_shares_one_task(c, s, a, b):
    log = uuid.uuid4().hex
    x = c.submit(record, log, 1)
    y = c.submit(record, log, 1)
    assert x.key == y.key
    assert x._state is y._state
    assert c.refcount[x.key] == 2
    assert await x == 1
    assert await y == 1
    assert _log[log] == [1]  # the task ran once


@gen_cluster(client=True)
async def test_submit_impure_gets_unique_keys(c, s, a, b):
    x = c.submit(inc, 1, pure=False)
    y = c.submit(inc, 1, pure=False)
    assert x.key != y.key
    assert x.key.startswith("inc-")
    assert await c.gather([x, y]) == [2, 2]


@gen_cluster(client=True)
async def test_submit_explicit_key(c, s, a, b):
    x = c.submit(inc, 1, key="my-key")
    assert x.key == "my-key"
    assert await x == 2
    assert "my-key" in s.tasks
    assert "my-key" in a.data or "my-key" in b.data


@gen_cluster(client=True)
async def test_submit_kwargs(c, s, a, b):
    x = c.submit(add, 1, y=10)
    assert await x == 11
    assert c.submit(add, 1, y=20).key != x.key


@gen_cluster(client=True)
async def test_submit_future_arguments_become_dependencies(c, s, a, b):
    x = c.submit(inc, 1)
    y = c.submit(add, x, 10)
    assert await y == 12
    assert {d.key for d in s.tasks[y.key].dependencies} == {x.key}


@gen_cluster(client=True)
async def test_submit_futures_nested_in_containers(c, s, a, b):
    x = c.submit(inc, 1)
    y = c.submit(inc, 2)
    in_list = c.submit(sum, [x, y, 10])
    in_tuple = c.submit(sum, (x, (y,)[0]))
    in_dict = c.submit(sum_dict, {"a": x, "b": y})
    in_nested = c.submit(identity, {"a": [x, (y, 1)], "b": {"c": x}})
    in_kwargs = c.submit(add, x=x, y=[y][0])
    assert await in_list == 15
    assert await in_tuple == 5
    assert await in_dict == 5
    assert await in_nested == {"a": [2, (3, 1)], "b": {"c": 2}}
    assert await in_kwargs == 5
    assert {d.key for d in s.tasks[in_nested.key].dependencies} == {x.key, y.key}


@gen_cluster(client=True)
async def test_submit_workers_by_address(c, s, a, b):
    futures = [c.submit(inc, i, workers=[b.address], pure=False) for i in range(5)]
    await wait(futures)
    assert all(f.key in b.data for f in futures)
    assert not any(f.key in a.data for f in futures)
    single = c.submit(inc, 100, workers=a.address)
    await single
    assert single.key in a.data


@gen_cluster(client=True, nthreads=[("127.0.0.1", 1, {"name": "alice"}), ("127.0.0.1", 1, {"name": "bob"})])
async def test_submit_workers_by_name(c, s, a, b):
    futures = c.map(inc, range(5), workers=["bob"])
    await wait(futures)
    assert all(f.key in b.data for f in futures)
    assert not a.data


@gen_cluster(client=True, nthreads=[("127.0.0.1", 1), ("127.0.0.2", 1)])
async def test_submit_workers_by_host(c, s, a, b):
    futures = c.map(inc, range(5), workers="127.0.0.2")
    await wait(futures)
    assert all(f.key in b.data for f in futures)
    assert not a.data


@gen_cluster(client=True)
async def test_submit_allow_other_workers_runs_elsewhere(c, s, a, b):
    missing = "tcp://127.0.0.1:1"
    loose = c.submit(inc, 1, workers=[missing], allow_other_workers=True)
    strict = c.submit(inc, 2, workers=[missing])
    assert await loose == 2
    assert strict.status == "pending"
    assert s.tasks[strict.key].state == "no-worker"


@gen_cluster(client=True)
async def test_submit_allow_other_workers_needs_workers(c, s, a, b):
    with pytest.raises(ValueError):
        c.submit(inc, 1, allow_other_workers=True)


@gen_cluster(client=True, nthreads=[("127.0.0.1", 1, {"resources": {"GPU": 1}}), ("127.0.0.1", 2)])
async def test_submit_resources(c, s, a, b):
    futures = c.map(inc, range(6), resources={"GPU": 1})
    await wait(futures)
    assert all(f.key in a.data for f in futures)
    assert not b.data


@gen_cluster(client=True)
async def test_submit_priority_reaches_scheduler(c, s, a, b):
    low = c.submit(inc, 1, priority=-10)
    high = c.submit(inc, 2, priority=10)
    default = c.submit(inc, 3)
    await async_wait_for(lambda: all(f.key in s.tasks for f in [low, high, default]))
    # The scheduler runs lower priority tuples first.
    assert s.tasks[high.key].priority < s.tasks[default.key].priority < s.tasks[low.key].priority
    assert await c.gather([low, high, default]) == [2, 3, 4]


@gen_cluster(client=True)
async def test_submit_retries_until_success(c, s, a, b):
    func = varying([ZeroDivisionError("retry-one"), ZeroDivisionError("retry-two"), "retried-ok"])
    future = c.submit(func, retries=2, pure=False)
    assert await future == "retried-ok"


@gen_cluster(client=True)
async def test_submit_retries_exhausted_raises(c, s, a, b):
    func = varying([ValueError("exhaust-one"), ValueError("exhaust-two"), "never"])
    future = c.submit(func, retries=1, pure=False)
    with pytest.raises(ValueError, match="exhaust-two"):
        await future


@gen_cluster(client=True)
async def test_submit_error_reraised_with_remote_traceback(c, s, a, b):
    future = c.submit(throws, 1)
    with pytest.raises(RuntimeError, match="hello!"):
        await future
    assert future.status == "error"
    exc = await future.exception()
    assert isinstance(exc, RuntimeError)
    tb = await future.traceback()
    assert any("throws" in line for line in traceback.format_tb(tb))


@gen_cluster(client=True)
async def test_submit_error_propagates_to_dependents(c, s, a, b):
    x = c.submit(throws, 1)
    y = c.submit(inc, x)
    with pytest.raises(RuntimeError, match="hello!"):
        await y


@gen_cluster(client=True)
async def test_submit_unpicklable_argument_raises_typeerror(c, s, a, b):
    with pytest.raises(TypeError, match="_thread.lock"):
        c.submit(identity, threading.Lock())
    assert await c.submit(inc, 1) == 2  # the client still works


@gen_cluster(client=True)
async def test_submit_not_callable_raises_typeerror(c, s, a, b):
    with pytest.raises(TypeError):
        c.submit(1, 2)


@gen_cluster(client=True)
async def test_submit_lambda_and_closure(c, s, a, b):
    offset = 5
    assert await c.submit(lambda x: x + offset, 1) == 6


@gen_cluster(client=True)
async def test_submit_async_function_runs(c, s, a, b):
    from distributed.utils_test import asyncinc

    assert await c.submit(asyncinc, 1) == 2


# ----------------------------------------------------------------------
# map
# ----------------------------------------------------------------------


@gen_cluster(client=True)
async def test_map_list(c, s, a, b):
    futures = c.map(inc, range(10))
    assert len(futures) == 10
    assert await c.gather(futures) == list(range(1, 11))


@gen_cluster(client=True)
async def test_map_iterator_and_generator(c, s, a, b):
    from_iter = c.map(inc, iter(range(5)))
    from_gen = c.map(double, (i for i in range(5)))
    assert await c.gather(from_iter) == [1, 2, 3, 4, 5]
    assert await c.gather(from_gen) == [0, 2, 4, 6, 8]


@gen_cluster(client=True)
async def test_map_multiple_iterables_stop_at_shortest(c, s, a, b):
    futures = c.map(add, [1, 2, 3], [10, 20, 30, 40])
    assert await c.gather(futures) == [11, 22, 33]


@gen_cluster(client=True)
async def test_map_pure_keys_shared_and_impure_unique(c, s, a, b):
    pure = c.map(inc, [1, 1, 2])
    assert pure[0].key == pure[1].key != pure[2].key
    assert pure[0].key == c.submit(inc, 1).key
    impure = c.map(inc, [1, 1], pure=False)
    assert impure[0].key != impure[1].key
    assert await c.gather(pure + impure) == [2, 2, 3, 2, 2]


@gen_cluster(client=True)
async def test_map_key_prefix(c, s, a, b):
    futures = c.map(inc, range(3), key="prefix")
    assert all(f.key.startswith("prefix-") for f in futures)
    assert len({f.key for f in futures}) == 3
    assert await c.gather(futures) == [1, 2, 3]


@gen_cluster(client=True)
async def test_map_key_list(c, s, a, b):
    futures = c.map(inc, range(3), key=["k0", "k1", "k2"])
    assert [f.key for f in futures] == ["k0", "k1", "k2"]
    assert await c.gather(futures) == [1, 2, 3]


@gen_cluster(client=True)
async def test_map_over_futures_and_kwargs(c, s, a, b):
    xs = c.map(inc, range(3))
    ys = c.map(add, xs, y=100)
    assert await c.gather(ys) == [101, 102, 103]


@gen_cluster(client=True)
async def test_map_empty_and_errors(c, s, a, b):
    assert c.map(inc, []) == []
    with pytest.raises(TypeError):
        c.map(inc, {"a": 1})
    with pytest.raises(TypeError):
        c.map(1, [1])


# ----------------------------------------------------------------------
# gather
# ----------------------------------------------------------------------


@gen_cluster(client=True)
async def test_gather_single_future(c, s, a, b):
    x = c.submit(inc, 1)
    assert await c.gather(x) == 2


@gen_cluster(client=True)
async def test_gather_nested_structures(c, s, a, b):
    x = c.submit(inc, 1)
    y = c.submit(inc, 2)
    out = await c.gather([x, {"a": y, "b": [x, 3]}, (x, y), "literal"])
    assert out == [2, {"a": 3, "b": [2, 3]}, (2, 3), "literal"]


@gen_cluster(client=True)
async def test_gather_dict(c, s, a, b):
    futures = {"x": c.submit(inc, 1), "y": c.submit(inc, 2)}
    assert await c.gather(futures) == {"x": 2, "y": 3}


@gen_cluster(client=True)
async def test_gather_errors_raise(c, s, a, b):
    good = c.submit(inc, 1)
    bad = c.submit(throws, 1)
    with pytest.raises(RuntimeError, match="hello!"):
        await c.gather([good, bad])


@gen_cluster(client=True)
async def test_gather_errors_skip(c, s, a, b):
    good = c.submit(inc, 1)
    bad = c.submit(throws, 1)
    assert await c.gather([good, bad, good], errors="skip") == [2, 2]
    assert await c.gather({"g": good, "b": bad}, errors="skip") == {"g": 2}


@gen_cluster(client=True)
async def test_gather_bad_errors_argument(c, s, a, b):
    with pytest.raises(ValueError):
        await c.gather([c.submit(inc, 1)], errors="ignore-please")


# ----------------------------------------------------------------------
# scatter
# ----------------------------------------------------------------------


@gen_cluster(client=True)
async def test_scatter_single_value(c, s, a, b):
    x = await c.scatter(123)
    assert isinstance(x, Future)
    assert x.status == "finished"
    assert await x == 123
    assert x.key in a.data or x.key in b.data
    assert s.tasks[x.key].state == "memory"


@gen_cluster(client=True)
async def test_scatter_list_and_tuple(c, s, a, b):
    futures = await c.scatter([1, 2, 3])
    assert isinstance(futures, list) and len(futures) == 3
    assert await c.gather(futures) == [1, 2, 3]
    tup = await c.scatter((4, 5))
    assert isinstance(tup, tuple)
    assert await c.gather(list(tup)) == [4, 5]


@gen_cluster(client=True)
async def test_scatter_dict_keeps_keys(c, s, a, b):
    futures = await c.scatter({"x": 1, "y": 2})
    assert set(futures) == {"x", "y"}
    assert futures["x"].key == "x"
    assert await c.gather(futures) == {"x": 1, "y": 2}


@gen_cluster(client=True)
async def test_scatter_broadcast(c, s, a, b):
    x = await c.scatter(42, broadcast=True)
    assert x.key in a.data and x.key in b.data
    who_has = await c.who_has([x])
    assert set(who_has[x.key]) == {a.address, b.address}


@gen_cluster(client=True)
async def test_scatter_to_workers(c, s, a, b):
    futures = await c.scatter(list(range(5)), workers=[b.address])
    assert all(f.key in b.data for f in futures)
    assert not a.data


@gen_cluster(client=True)
async def test_scatter_hash(c, s, a, b):
    x = await c.scatter(1)
    y = await c.scatter(1)
    z = await c.scatter(1, hash=False)
    w = await c.scatter(1, hash=False)
    assert x.key == y.key
    assert len({x.key, z.key, w.key}) == 3
    assert await c.gather([x, z, w]) == [1, 1, 1]


@gen_cluster(client=True)
async def test_scatter_then_submit(c, s, a, b):
    x, y = await c.scatter([10, 20])
    total = c.submit(add, x, y)
    assert await total == 30
    d = await c.scatter({"d": 5})
    assert await c.submit(inc, d["d"]) == 6


@gen_cluster(client=True)
async def test_scatter_futures_is_an_error(c, s, a, b):
    x = c.submit(inc, 1)
    with pytest.raises(TypeError):
        await c.scatter([x])


# ----------------------------------------------------------------------
# get (dask graphs)
# ----------------------------------------------------------------------


@gen_cluster(client=True)
async def test_get_simple_graph(c, s, a, b):
    assert await c.get({"x": 1, "y": (inc, "x")}, "y") == 2


@gen_cluster(client=True)
async def test_get_literal_values(c, s, a, b):
    dsk = {"x": "hello", "y": [1, 2, 3], "z": {"a": 1}}
    assert await c.get(dsk, ["x", "y", "z"]) == ["hello", [1, 2, 3], {"a": 1}]


@gen_cluster(client=True)
async def test_get_key_references_in_lists_tuples_dicts(c, s, a, b):
    dsk = {
        "x": 1,
        "y": 2,
        "in-list": (sum, ["x", "y", 10]),
        "in-dict": (sum_dict, {"a": "x", "b": "y"}),
        "in-tuple": (identity, ("x", ("y", "z-not-a-key"))),
        "list-value": ["x", "y"],
    }
    out = await c.get(dsk, ["in-list", "in-dict", "in-tuple", "list-value"])
    assert out == [13, 3, (1, (2, "z-not-a-key")), [1, 2]]


@gen_cluster(client=True)
async def test_get_tuple_keys(c, s, a, b):
    dsk = {("a", 0): 1, ("a", 1): (inc, ("a", 0)), ("b", 0): (add, ("a", 0), ("a", 1))}
    assert await c.get(dsk, [("b", 0), ("a", 1)]) == [3, 2]


@gen_cluster(client=True)
async def test_get_alias(c, s, a, b):
    dsk = {"x": (inc, 1), "y": "x", "z": "y"}
    assert await c.get(dsk, "z") == 2


@gen_cluster(client=True)
async def test_get_nested_tasks(c, s, a, b):
    dsk = {"x": 1, "y": (inc, (inc, (add, "x", (inc, 0))))}
    assert await c.get(dsk, "y") == 4
    dsk = {"x": 1, "y": (sum, [(inc, "x"), (double, "x")])}
    assert await c.get(dsk, "y") == 4


@gen_cluster(client=True)
async def test_get_nested_keys_list(c, s, a, b):
    dsk = {"x": 1, "y": (inc, "x"), "z": (double, "y")}
    assert await c.get(dsk, [["x", "y"], ["z"]]) == [[1, 2], [4]]


@gen_cluster(client=True)
async def test_get_tree_reduction_of_about_100_tasks(c, s, a, b):
    dsk, root = nested_reduction_graph(50)
    assert len(dsk) == 99
    assert await c.get(dsk, root) == sum(range(1, 51))


@gen_cluster(client=True)
async def test_get_error_raises(c, s, a, b):
    dsk = {"x": (throws, 1), "y": (inc, "x")}
    with pytest.raises(RuntimeError, match="hello!"):
        await c.get(dsk, "y")


@gen_cluster(client=True)
async def test_get_with_future_in_graph(c, s, a, b):
    x = c.submit(inc, 1)
    assert await c.get({"y": (inc, x)}, "y") == 3


@gen_cluster(client=True)
async def test_get_missing_key_raises(c, s, a, b):
    with pytest.raises(KeyError):
        await c.get({"x": 1}, "not-there")


@gen_cluster(client=True)
async def test_get_releases_keys_afterwards(c, s, a, b):
    await c.get({"x": 1, "y": (inc, "x")}, "y")
    await async_wait_for(lambda: "x" not in s.tasks and "y" not in s.tasks)


# ----------------------------------------------------------------------
# cancel
# ----------------------------------------------------------------------


@gen_cluster(client=True)
async def test_cancel_running_future(c, s, a, b):
    ev = new_event()
    try:
        x = c.submit(block_on, ev, 1)
        await async_wait_for(lambda: x.key in s.tasks and s.tasks[x.key].state == "processing")
        await c.cancel([x])
        assert x.cancelled()
        assert x.status == "cancelled"
        assert x.done()
        with pytest.raises(CancelledError):
            await x
        await async_wait_for(lambda: x.key not in s.tasks)
    finally:
        _events[ev].set()


@gen_cluster(client=True)
async def test_future_cancel_method(c, s, a, b):
    ev = new_event()
    try:
        x = c.submit(block_on, ev, 1)
        x.cancel()
        await async_wait_for(lambda: x.cancelled())
        with pytest.raises(CancelledError):
            await x.result()
        with pytest.raises(CancelledError):
            await c.gather(x)
        await async_wait_for(lambda: x.key not in s.tasks)
        y = c.submit(block_on, ev, 2)
        await y.cancel()  # awaiting the cancel is optional but allowed
        assert y.cancelled()
    finally:
        _events[ev].set()


@gen_cluster(client=True)
async def test_cancel_cascades_to_dependents(c, s, a, b):
    ev = new_event()
    try:
        x = c.submit(block_on, ev, 1)
        y = c.submit(inc, x)
        await c.cancel([x])
    finally:
        _events[ev].set()
    await wait(y)
    assert y.cancelled()


@gen_cluster(client=True)
async def test_cancel_then_resubmit(c, s, a, b):
    ev = new_event()
    _events[ev].set()
    x = c.submit(block_on, ev, 5)
    key = x.key
    await c.cancel(x)
    await async_wait_for(lambda: key not in s.tasks)
    y = c.submit(block_on, ev, 5)
    assert y.key == key
    assert await y == 5
    assert x.cancelled()


@gen_cluster(client=True)
async def test_cancel_delete_and_resubmit_at_once(c, s, a, b):
    # The scheduler's report of the first cancellation may arrive after the
    # resubmission: it must not cancel the new task.
    ev = new_event()
    _events[ev].set()
    for _ in range(5):
        x = c.submit(block_on, ev, 6)
        await c.cancel(x)
        del x
        y = c.submit(block_on, ev, 6)
        assert await y == 6
        del y


# ----------------------------------------------------------------------
# run / run_on_scheduler / run_coroutine / upload_file
# ----------------------------------------------------------------------


@gen_cluster(client=True)
async def test_run_returns_dict_per_worker(c, s, a, b):
    out = await c.run(os.getpid)
    assert out == {a.address: os.getpid(), b.address: os.getpid()}


@gen_cluster(client=True)
async def test_run_args_and_kwargs(c, s, a, b):
    out = await c.run(add, 1, y=2)
    assert out == {a.address: 3, b.address: 3}


@gen_cluster(client=True)
async def test_run_dask_worker_parameter(c, s, a, b):
    def f(dask_worker):
        return dask_worker.address

    assert await c.run(f) == {a.address: a.address, b.address: b.address}


@gen_cluster(client=True)
async def test_run_selected_workers(c, s, a, b):
    assert await c.run(inc, 1, workers=[a.address]) == {a.address: 2}
    assert await c.run(inc, 1, workers=b.address) == {b.address: 2}


@gen_cluster(client=True)
async def test_run_error_raises(c, s, a, b):
    with pytest.raises(RuntimeError, match="hello!"):
        await c.run(throws, 1)


@gen_cluster(client=True)
async def test_run_coroutine(c, s, a, b):
    async def f(x, dask_worker=None):
        await asyncio.sleep(0)
        return (x, dask_worker.address)

    out = await c.run_coroutine(f, 1)
    assert out == {a.address: (1, a.address), b.address: (1, b.address)}


@gen_cluster(client=True)
async def test_run_on_scheduler(c, s, a, b):
    def f(dask_scheduler):
        return dask_scheduler.address

    assert await c.run_on_scheduler(f) == s.address
    assert await c.run_on_scheduler(add, 1, 2) == 3


@gen_cluster(client=True)
async def test_upload_file(c, s, a, b, tmp_path):
    modname = f"uploaded_{uuid.uuid4().hex[:8]}"
    path = tmp_path / f"{modname}.py"
    path.write_text("def value():\n    return 123\n")
    try:
        await c.upload_file(str(path))
        assert await c.submit(import_and_call, modname) == 123
        assert await c.run(import_and_call, modname) == {a.address: 123, b.address: 123}
    finally:
        sys.modules.pop(modname, None)


# ----------------------------------------------------------------------
# cluster state: who_has, has_what, ncores/nthreads, scheduler_info
# ----------------------------------------------------------------------


@gen_cluster(client=True)
async def test_who_has(c, s, a, b):
    x = c.submit(inc, 1, workers=a.address)
    y = c.submit(inc, 2, workers=b.address)
    await wait([x, y])
    assert await c.who_has([x]) == {x.key: [a.address]}
    everything = await c.who_has()
    assert set(everything[x.key]) == {a.address}
    assert set(everything[y.key]) == {b.address}


@gen_cluster(client=True)
async def test_has_what(c, s, a, b):
    x = c.submit(inc, 1, workers=a.address)
    await x
    out = await c.has_what()
    assert set(out) == {a.address, b.address}
    assert list(out[a.address]) == [x.key]
    assert list(out[b.address]) == []
    assert await c.has_what(workers=[a.address]) == {a.address: [x.key]}


@gen_cluster(client=True)
async def test_ncores_and_nthreads(c, s, a, b):
    expected = {a.address: 1, b.address: 2}
    assert await c.ncores() == expected
    assert await c.nthreads() == expected
    assert await c.nthreads(workers=[b.address]) == {b.address: 2}


@gen_cluster(client=True)
async def test_scheduler_info(c, s, a, b):
    info = await c.scheduler_info()
    assert info["address"] == s.address
    assert set(info["workers"]) == {a.address, b.address}
    assert info["workers"][b.address]["nthreads"] == 2
    assert "memory_limit" in info["workers"][a.address]


# ----------------------------------------------------------------------
# replicate / rebalance / retire_workers / wait_for_workers
# ----------------------------------------------------------------------


@gen_cluster(client=True)
async def test_replicate(c, s, a, b):
    x = c.submit(inc, 1, workers=a.address)
    await x
    await c.replicate([x])
    assert x.key in a.data and x.key in b.data
    assert len(s.tasks[x.key].who_has) == 2


@gen_cluster(client=True, nthreads=[("127.0.0.1", 1)] * 3)
async def test_replicate_n(c, s, a, b, d):
    x = await c.scatter(1, workers=[a.address])
    await c.replicate(x, n=2)
    assert len(s.tasks[x.key].who_has) == 2


@gen_cluster(client=True)
async def test_rebalance(c, s, a, b):
    futures = await c.scatter([b"x" * 10_000 for _ in range(10)], hash=False, workers=[a.address])
    assert len(a.data) == 10 and not b.data
    await c.rebalance(futures)
    who_has = await c.who_has(futures)
    assert all(len(holders) == 1 for holders in who_has.values())
    on_b = [k for k, holders in who_has.items() if holders == [b.address]]
    assert 3 <= len(on_b) <= 7
    await async_wait_for(lambda: len(a.data) + len(b.data) == 10)
    assert set(b.data) == set(on_b)
    assert await c.gather(futures) == [b"x" * 10_000] * 10


@gen_cluster(client=True)
async def test_rebalance_returns_after_data_moved(c, s, a, b):
    futures = await c.scatter([b"x" * 10_000 for _ in range(10)], hash=False, workers=[a.address])
    await c.rebalance(futures)
    assert len(a.data) + len(b.data) == 10


@gen_cluster(client=True)
async def test_retire_workers_moves_data(c, s, a, b):
    x = c.submit(inc, 1, workers=a.address)
    await x
    await c.retire_workers([a.address])
    assert a.address not in s.workers
    assert x.key in b.data
    assert await x == 2
    assert await c.submit(inc, x) == 3


@gen_cluster(client=True)
async def test_wait_for_workers(c, s, a, b):
    await c.wait_for_workers(2)
    async with Worker(s.address, nthreads=1, host="127.0.0.1"):
        await c.wait_for_workers(3)
        assert len(s.workers) == 3


@gen_cluster(client=True)
async def test_wait_for_workers_timeout(c, s, a, b):
    with pytest.raises((TimeoutError, asyncio.TimeoutError)):
        await c.wait_for_workers(5, timeout=0.1)


# ----------------------------------------------------------------------
# executor
# ----------------------------------------------------------------------


@gen_cluster(client=True)
async def test_get_executor_submit_returns_concurrent_future(c, s, a, b):
    ex = c.get_executor()
    future = ex.submit(inc, 1)
    assert isinstance(future, concurrent.futures.Future)
    assert await asyncio.wrap_future(future) == 2
    bad = ex.submit(throws, 1)
    with pytest.raises(RuntimeError, match="hello!"):
        await asyncio.wrap_future(bad)
    with pytest.raises(TypeError):
        c.get_executor(nonsense=1)


@gen_cluster(client=True)
async def test_get_executor_passes_submit_options(c, s, a, b):
    ex = c.get_executor(workers=[b.address])
    futures = [ex.submit(worker_address_of_task, i) for i in range(3)]
    assert [await asyncio.wrap_future(f) for f in futures] == [b.address] * 3


@gen_cluster(client=True)
async def test_get_executor_releases_keys_once_done(c, s, a, b):
    ex = c.get_executor()
    await asyncio.wrap_future(ex.submit(inc, 1))
    await async_wait_for(lambda: not s.tasks)
    ex.shutdown()
    with pytest.raises(RuntimeError):
        ex.submit(inc, 2)


# ----------------------------------------------------------------------
# datasets
# ----------------------------------------------------------------------


@gen_cluster(client=True)
async def test_publish_and_get_dataset_from_another_client(c, s, a, b):
    x = c.submit(inc, 1)
    await c.publish_dataset(x=x)
    assert await c.list_datasets() == ["x"]
    async with Client(s.address, asynchronous=True) as c2:
        y = await c2.get_dataset("x")
        assert y.key == x.key
        assert y.client is c2
        assert await y == 2


@gen_cluster(client=True)
async def test_published_dataset_survives_release(c, s, a, b):
    x = c.submit(inc, 10)
    await x
    key = x.key
    await c.publish_dataset(data=[x, {"k": x}])
    x.release()
    del x
    assert await c.submit(inc, 0) == 1  # a round trip: the release has arrived
    assert key in s.tasks
    data = await c.get_dataset("data")
    assert await c.gather(data) == [11, {"k": 11}]


@gen_cluster(client=True)
async def test_publish_dataset_positional_with_name(c, s, a, b):
    x = c.submit(inc, 1)
    await c.publish_dataset(x, name="named")
    assert "named" in await c.list_datasets()
    assert await (await c.get_dataset("named")) == 2


@gen_cluster(client=True)
async def test_unpublish_dataset_forgets_data(c, s, a, b):
    x = c.submit(inc, 2)
    key = x.key
    await c.publish_dataset(x=x)
    del x
    await c.unpublish_dataset("x")
    assert await c.list_datasets() == []
    await async_wait_for(lambda: key not in s.tasks)
    with pytest.raises(KeyError):
        await c.get_dataset("x")


@gen_cluster(client=True)
async def test_publish_existing_name_needs_override(c, s, a, b):
    x = c.submit(inc, 1)
    y = c.submit(inc, 2)
    await c.publish_dataset(d=x)
    with pytest.raises(KeyError):
        await c.publish_dataset(d=y)
    await c.publish_dataset(d=y, override=True)
    assert await (await c.get_dataset("d")) == 3


# ----------------------------------------------------------------------
# starting and closing clients
# ----------------------------------------------------------------------


@gen_cluster()
async def test_asynchronous_client_await(s, a, b):
    c = await Client(s.address, asynchronous=True)
    try:
        assert c.status == "running"
        assert c.id in s.clients
        assert await c.submit(inc, 1) == 2
    finally:
        await c.close()
    assert c.status == "closed"
    await async_wait_for(lambda: c.id not in s.clients)


@gen_cluster()
async def test_async_with_client(s, a, b):
    async with Client(s.address, asynchronous=True) as c:
        assert await c.submit(inc, 1) == 2
    assert c.status == "closed"


@gen_cluster()
async def test_client_address_forms(s, a, b):
    host, port = s.address.split("://")[1].rsplit(":", 1)
    for address in [s.address, f"{host}:{port}", (host, int(port))]:
        async with Client(address, asynchronous=True) as c:
            assert c.scheduler_address == s.address
            assert await c.submit(inc, 1) == 2


@gen_cluster()
async def test_close_is_idempotent(s, a, b):
    c = await Client(s.address, asynchronous=True)
    await c.close()
    await c.close()
    assert c.status == "closed"


@gen_cluster()
async def test_shutdown_closes_client_but_not_external_scheduler(s, a, b):
    c = await Client(s.address, asynchronous=True)
    await c.shutdown()
    assert c.status == "closed"
    await c.shutdown()
    async with Client(s.address, asynchronous=True) as c2:
        assert await c2.submit(inc, 1) == 2


@gen_cluster()
async def test_closing_client_cancels_pending_futures(s, a, b):
    ev = new_event()
    try:
        c = await Client(s.address, asynchronous=True)
        x = c.submit(block_on, ev, 1)
        await c.close()
        assert x.cancelled()
        await async_wait_for(lambda: x.key not in s.tasks)
    finally:
        _events[ev].set()


@gen_cluster()
async def test_two_clients_share_keys(s, a, b):
    async with Client(s.address, asynchronous=True) as c1, \
            Client(s.address, asynchronous=True) as c2:
        x = c1.submit(inc, 1)
        y = c2.submit(inc, 1)
        assert x.key == y.key
        assert await x == 2 and await y == 2
        del x
        assert await c1.submit(inc, 0) == 1
        assert y.key in s.tasks
        assert await y == 2


@gen_cluster()
async def test_client_attributes(s, a, b):
    async with Client(s.address, asynchronous=True) as c:
        assert isinstance(c.id, str)
        assert c.status == "running"
        assert c.loop is not None
        assert c.futures == {} and c.refcount == {}
        x = c.submit(inc, 1)
        assert x.key in c.futures
        assert c.refcount[x.key] == 1
        identity_ = await c.scheduler.identity()
        assert identity_["address"] == s.address
        assert c.dashboard_link is None or isinstance(c.dashboard_link, str)


@gen_test()
async def test_client_without_address_starts_local_cluster():
    async with Client(processes=False, n_workers=2, threads_per_worker=1, asynchronous=True) as c:
        cluster = c.cluster
        assert cluster is not None
        assert c.scheduler_address == cluster.scheduler_address
        assert c.scheduler_address.startswith("tcp://127.0.0.1:")
        assert len(await c.nthreads()) == 2
        assert await c.submit(inc, 1) == 2
    assert str(cluster.status).endswith("closed")


@gen_test()
async def test_client_of_a_cluster_object():
    from distributed import LocalCluster

    async with LocalCluster(processes=False, n_workers=1, asynchronous=True) as cluster:
        async with Client(cluster, asynchronous=True) as c:
            assert c.scheduler_address == cluster.scheduler_address
            assert await c.submit(inc, 1) == 2
        assert not str(cluster.status).endswith("closed")


# ----------------------------------------------------------------------
# Future
# ----------------------------------------------------------------------


@gen_cluster(client=True)
async def test_future_status_pending_then_finished(c, s, a, b):
    ev = new_event()
    x = c.submit(block_on, ev, 1)
    assert x.status == "pending"
    assert not x.done()
    _events[ev].set()
    await x
    assert x.status == "finished"
    assert x.done()
    assert not x.cancelled()


@gen_cluster(client=True)
async def test_future_status_error_and_cancelled(c, s, a, b):
    bad = c.submit(throws, 1)
    await wait(bad)
    assert bad.status == "error" and bad.done() and not bad.cancelled()
    x = c.submit(inc, 1)
    await c.cancel(x)
    assert x.status == "cancelled" and x.done()


@gen_cluster(client=True)
async def test_scattered_data_lost_with_its_only_holder(c, s, a, b):
    x = await c.scatter(1, workers=[a.address])
    await a.close()
    # Scattered data cannot be recomputed: the future is "lost" for good and
    # raises FutureLost, saying why; it does not wait.
    await async_wait_for(lambda: x.done())
    assert x.status == "lost"
    with pytest.raises(distributed.FutureLost, match="scattered"):
        await x
    assert isinstance(await x.exception(), distributed.FutureLost)
    y = c.submit(inc, x)  # work on lost data fails the same way
    with pytest.raises(distributed.FutureLost):
        await y


@gen_cluster(client=True)
async def test_computed_result_recomputed_when_its_worker_leaves(c, s, a, b):
    x = c.submit(inc, 1, workers=[a.address], allow_other_workers=True)
    await x
    await a.close()
    await async_wait_for(lambda: x.key in b.data)
    assert await x == 2


@gen_cluster(client=True)
async def test_future_result_timeout(c, s, a, b):
    ev = new_event()
    try:
        x = c.submit(block_on, ev, 1)
        with pytest.raises(TimeoutError):
            await x.result(timeout=0.05)
        assert x.status == "pending"
    finally:
        _events[ev].set()
    assert await x.result(timeout=10) == 1


@gen_cluster(client=True)
async def test_future_exception_and_traceback_of_success(c, s, a, b):
    x = c.submit(inc, 1)
    assert await x.exception() is None
    assert await x.traceback() is None


@gen_cluster(client=True)
async def test_future_add_done_callback_runs_once_in_other_thread(c, s, a, b):
    calls = []
    main = threading.get_ident()

    def callback(future):
        calls.append((future.key, threading.get_ident(), future.status))

    x = c.submit(inc, 1)
    x.add_done_callback(callback)
    await x
    await async_wait_for(lambda: calls)
    y = c.submit(inc, 2)
    y.add_done_callback(callback)  # a second future; x's callback must not run again
    await async_wait_for(lambda: len(calls) == 2)
    assert calls[0][0] == x.key and calls[1][0] == y.key
    assert calls[0][1] != main
    assert calls[0][2] == "finished"


@gen_cluster(client=True)
async def test_future_add_done_callback_after_done(c, s, a, b):
    x = c.submit(inc, 1)
    await x
    calls = []
    x.add_done_callback(calls.append)
    await async_wait_for(lambda: calls == [x])


@gen_cluster(client=True)
async def test_future_add_done_callback_on_error(c, s, a, b):
    x = c.submit(throws, 1)
    statuses = []
    x.add_done_callback(lambda f: statuses.append(f.status))
    await async_wait_for(lambda: statuses == ["error"])


@gen_cluster(client=True)
async def test_future_release_forgets_key(c, s, a, b):
    x = c.submit(inc, 1)
    await x
    key = x.key
    x.release()
    x.release()  # idempotent
    await async_wait_for(lambda: key not in s.tasks)
    assert key not in c.futures
    assert key not in a.data and key not in b.data


@gen_cluster(client=True)
async def test_future_del_forgets_key(c, s, a, b):
    x = c.submit(inc, 1)
    await x
    key = x.key
    del x
    await async_wait_for(lambda: key not in s.tasks)
    assert key not in c.refcount


@gen_cluster(client=True)
async def test_two_futures_same_key_forgotten_after_both_gone(c, s, a, b):
    x = c.submit(inc, 1)
    y = c.submit(inc, 1)
    await x
    key = x.key
    del x
    assert await c.submit(inc, 100) == 101  # a round trip after the release
    assert key in s.tasks
    assert c.refcount[key] == 1
    assert await y == 2
    del y
    await async_wait_for(lambda: key not in s.tasks)


@gen_cluster(client=True)
async def test_dependency_kept_while_dependent_needs_it(c, s, a, b):
    x = c.submit(inc, 1)
    y = c.submit(inc, x)
    key = x.key
    del x
    assert await y == 3
    del y
    await async_wait_for(lambda: key not in s.tasks)


@gen_cluster(client=True)
async def test_future_repr(c, s, a, b):
    x = c.submit(inc, 1)
    assert x.key in repr(x)
    await x
    r = repr(x)
    assert "finished" in r and "int" in r and x.key in r
    html = x._repr_html_()
    assert x.key in html and "finished" in html and "int" in html
    e = c.submit(throws, 1)
    await wait(e)
    assert "error" in repr(e) and "error" in e._repr_html_()


@gen_cluster(client=True)
async def test_future_pickles_to_key(c, s, a, b):
    import pickle

    x = c.submit(inc, 1)
    await x
    y = pickle.loads(pickle.dumps(x))
    assert y.key == x.key
    assert y.client is c
    assert await y == 2


@gen_cluster(client=True)
def test_yield_future_in_generator_test(c, s, a, b):
    x = c.submit(inc, 1)
    result = yield x
    assert result == 2


@gen_cluster(client=True)
def test_futures_of(c, s, a, b):
    x = c.submit(inc, 1)
    y = c.submit(inc, 2)
    assert futures_of([x, {"a": y, "b": [x]}, 1]) == [x, y]
    assert futures_of(3) == []
    yield wait([x, y])


# ----------------------------------------------------------------------
# wait / as_completed / fire_and_forget
# ----------------------------------------------------------------------


@gen_cluster(client=True)
async def test_wait_all_completed(c, s, a, b):
    futures = c.map(inc, range(5))
    done, not_done = await wait(futures)
    assert done == set(futures)
    assert not_done == set()


@gen_cluster(client=True)
async def test_wait_first_completed(c, s, a, b):
    ev = new_event()
    try:
        slow = c.submit(block_on, ev, 1)
        fast = c.submit(inc, 1)
        done, not_done = await wait([slow, fast], return_when="FIRST_COMPLETED")
        assert fast in done
        assert not_done == {slow}
    finally:
        _events[ev].set()


@gen_cluster(client=True)
async def test_wait_timeout(c, s, a, b):
    ev = new_event()
    try:
        slow = c.submit(block_on, ev, 1)
        with pytest.raises(TimeoutError):
            await wait([slow], timeout=0.05)
    finally:
        _events[ev].set()


@gen_cluster(client=True)
async def test_wait_counts_errors_as_done(c, s, a, b):
    bad = c.submit(throws, 1)
    good = c.submit(inc, 1)
    done, not_done = await wait([bad, good])
    assert done == {bad, good}


@gen_cluster(client=True)
async def test_as_completed_async_for(c, s, a, b):
    futures = c.map(inc, range(5))
    seen = []
    async for future in as_completed(futures):
        seen.append(await future)
    assert sorted(seen) == [1, 2, 3, 4, 5]


@gen_cluster(client=True)
async def test_as_completed_add_update_count_is_empty(c, s, a, b):
    ac = as_completed()
    assert ac.is_empty() and ac.count() == 0
    x = c.submit(inc, 1)
    ac.add(x)
    ac.update(c.map(inc, range(10, 12)))
    assert ac.count() == 3
    seen = []
    async for future in ac:
        seen.append(future)
        if len(seen) == 1:
            ac.add(c.submit(inc, 100))
    assert len(seen) == 4
    assert ac.is_empty() and ac.count() == 0


@gen_cluster(client=True)
async def test_as_completed_with_results(c, s, a, b):
    futures = c.map(inc, range(3))
    out = []
    async for future, result in as_completed(futures, with_results=True):
        out.append((future.key, result))
    assert sorted(r for _, r in out) == [1, 2, 3]
    assert {k for k, _ in out} == {f.key for f in futures}


@gen_cluster(client=True)
async def test_as_completed_with_results_raises_errors(c, s, a, b):
    ac = as_completed([c.submit(throws, 1)], with_results=True)
    with pytest.raises(RuntimeError, match="hello!"):
        async for _ in ac:
            pass


@gen_cluster(client=True)
async def test_as_completed_same_future_twice(c, s, a, b):
    x = c.submit(inc, 1)
    ac = as_completed([x, x])
    out = [f async for f in ac]
    assert out == [x, x]


@gen_cluster(client=True)
async def test_fire_and_forget_runs_after_future_deleted(c, s, a, b, tmp_path):
    path = str(tmp_path / "fired")
    ev = new_event()
    try:
        x = c.submit(block_on, ev, path)
        y = c.submit(write_file, x)
        fire_and_forget(y)
        keys = {x.key, y.key}
        del x, y
        assert await c.submit(inc, 0) == 1  # the releases have arrived
        assert keys <= set(s.tasks)
        _events[ev].set()
        await async_wait_for(lambda: os.path.exists(path))
        await async_wait_for(lambda: not keys & set(s.tasks))
    finally:
        _events[ev].set()


# ----------------------------------------------------------------------
# tasks that use the client
# ----------------------------------------------------------------------


@gen_cluster(client=True)
async def test_get_client_in_task_submits_and_gathers(c, s, a, b):
    assert await c.submit(submit_and_gather, 5) == 15


@gen_cluster(client=True, nthreads=[("127.0.0.1", 1)])
async def test_worker_client_recursive_fib_one_thread(c, s, a):
    assert await c.submit(fib, 6) == 8


def id_of_worker_loop():
    return id(get_worker().loop)


@gen_cluster(client=True)
async def test_worker_loop_seen_from_a_task_is_the_workers_loop(c, s, a, b):
    from tornado.ioloop import IOLoop

    assert await c.submit(id_of_worker_loop, pure=False) == id(IOLoop.current())


@gen_cluster(client=True)
async def test_worker_close_closes_the_client_of_its_tasks(c, s, a, b):
    assert await c.submit(submit_and_gather, 3, workers=[a.address]) == 6
    task_client = a._client
    await a.close()
    assert task_client.status == "closed"


_ran: list = []


def _note_ran(name):
    _ran.append(name)


def _block_on(event_name):
    from distributed import Event

    return Event(event_name).wait(timeout=30)


@gen_cluster(client=True, nthreads=[("127.0.0.1", 1)])
async def test_closing_worker_drops_queued_tasks_and_makes_no_new_client(c, s, a):
    """A task still queued when its worker closes does not run there (the
    scheduler gives it to another worker), and a task that asks for a client
    on a closing worker gets an error instead of a client outliving it."""
    from distributed import Event

    _ran.clear()
    running = c.submit(_block_on, "release", pure=False)
    queued = c.submit(_note_ran, "queued", pure=False)
    await async_wait_for(lambda: "release" in s.extensions["events"].waiters, timeout=10)
    closing = asyncio.ensure_future(a.close())
    await async_wait_for(lambda: a._client is None, timeout=10)
    with pytest.raises(RuntimeError, match="is clos(ing|ed); it has no client"):
        a._get_client()
    await Event("release").set()
    await asyncio.wait_for(closing, 20)
    assert a._client is None
    assert _ran == []
    assert running.key in s.tasks and queued.status == "pending"
    assert not [cl for cl in distributed.context.live_clients()
                if cl is not c and cl.status not in ("closing", "closed")]


@gen_cluster(client=True)
async def test_worker_client_is_never_the_default_client(c, s, a, b):
    assert await c.submit(submit_and_gather, 3, workers=[a.address]) == 6
    await c.close()
    with pytest.raises(ValueError, match="No clients found"):
        default_client()


@gen_cluster(client=True)
async def test_get_worker_in_task(c, s, a, b):
    x = c.submit(worker_address_of_task, 1, workers=b.address)
    assert await x == b.address


@gen_cluster(client=True)
async def test_default_client_and_get_client_outside_task(c, s, a, b):
    assert default_client() is c
    assert get_client() is c
    async with Client(s.address, asynchronous=True, set_as_default=False) as c2:
        assert default_client() is c
        assert default_client(c2) is c2


# ----------------------------------------------------------------------
# repr
# ----------------------------------------------------------------------


@gen_cluster(client=True, worker_kwargs={"memory_limit": "2GB"})
async def test_client_repr_and_html(c, s, a, b):
    text = repr(c)
    assert s.address in text
    assert "processes=2" in text and "threads=3" in text and "memory=" in text
    html = c._repr_html_()
    assert s.address in html
    for part in ["Workers", "Threads", "Memory", "<td>2</td>", "<td>3</td>"]:
        assert part in html, part


@gen_cluster()
async def test_client_repr_when_closed(s, a, b):
    c = await Client(s.address, asynchronous=True)
    await c.close()
    assert "closed" in repr(c)
    assert "closed" in c._repr_html_()


# ----------------------------------------------------------------------
# seed era: generator tests, underscore coroutines, start=False
# ----------------------------------------------------------------------


@gen_cluster()
def test_seed_era_start_false_then_start(s, a, b):
    c = Client(s.address, start=False)
    assert c.status != "running"
    yield c._start()
    assert c.status == "running"
    x = c.submit(inc, 1)
    result = yield x._result()
    assert result == 2
    yield c._shutdown()
    assert c.status == "closed"


@gen_cluster(client=True)
def test_seed_era_underscore_coroutines(c, s, a, b):
    x, y = yield c._scatter([1, 2])
    z = c.submit(add, x, y)
    results = yield c._gather([x, y, z])
    assert results == [1, 2, 3]
    got = yield c._get({"a": 1, "b": (inc, "a")}, "b")
    assert got == 2
    ran = yield c._run(inc, 1)
    assert ran == {a.address: 2, b.address: 2}
    nthreads = yield c._ncores()
    assert nthreads == {a.address: 1, b.address: 2}
    who = yield c._who_has([z])
    assert set(who) == {z.key}
    what = yield c._has_what()
    assert set(what) == {a.address, b.address}
    yield c._replicate([z])
    assert len(s.tasks[z.key].who_has) == 2
    yield c._rebalance()
    done = yield c._wait([z])
    assert z in done[0]


@gen_cluster(client=True)
def test_seed_era_future_coroutines(c, s, a, b):
    x = c.submit(throws, 1)
    exc = yield x._exception()
    assert isinstance(exc, RuntimeError)
    tb = yield x._traceback()
    assert any("throws" in line for line in traceback.format_tb(tb))
    try:
        yield x._result()
    except RuntimeError as e:
        assert "hello!" in str(e)
    else:
        raise AssertionError("x._result() did not raise")
    y = c.submit(inc, 1)
    assert (yield y._result()) == 2
    assert (yield y._exception()) is None


@gen_cluster(client=True)
def test_seed_era_cancel(c, s, a, b):
    ev = new_event()
    try:
        x = c.submit(block_on, ev, 1)
        yield c._cancel([x])
        assert x.cancelled()
        yield gen.moment
    finally:
        _events[ev].set()


@gen_cluster(client=True)
def test_seed_era_run_coroutine_and_upload_file(c, s, a, b, tmp_path):
    @gen.coroutine
    def f(x):
        yield gen.moment
        return x + 1

    out = yield c._run_coroutine(f, 1)
    assert out == {a.address: 2, b.address: 2}
    modname = f"uploaded_seed_{uuid.uuid4().hex[:8]}"
    path = tmp_path / f"{modname}.py"
    path.write_text("def value():\n    return 7\n")
    try:
        yield c._upload_file(str(path))
        result = yield c.submit(import_and_call, modname)
        assert result == 7
    finally:
        sys.modules.pop(modname, None)


@gen_cluster(client=True)
def test_seed_era_restart(c, s, a, b):
    x = c.submit(inc, 1)
    yield x
    yield c._restart()
    assert x.cancelled()
    yield gen.moment
    y = c.submit(inc, 2)
    assert (yield y) == 3


def test_top_level_exports():
    for name in ["Client", "Future", "LocalCluster", "Scheduler", "Worker", "wait", "as_completed",
                 "fire_and_forget", "default_client", "get_client", "get_worker", "worker_client",
                 "secede", "rejoin", "futures_of", "CancelledError", "TimeoutError", "KilledWorker",
                 "__version__"]:
        assert hasattr(distributed, name), name
