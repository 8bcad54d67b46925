"""Futures that travel: inside task arguments the client does not walk,
inside delayed objects and graphs, inside results and datasets.  A Future
unpickled on a worker binds to that worker's own client, made on first use
and reused; one unpickled while a client receives data binds to that client.
"""
from __future__ import annotations

import pickle

import pytest

from distributed import Client, get_client, get_worker
from distributed.context import client_for_future, receiving_for
from distributed.futures import Future
from distributed.utils_test import cluster, gen_cluster, inc


class Box:
    """Holds a Future where the client's argument walk does not look."""

    def __init__(self, future):
        self.future = future


def result_of_boxed(box: Box):
    return box.future.result() + 1


def client_id_in_task(x=None):
    return get_client().id


def worker_client_made() -> bool:
    return get_worker()._client is not None


def key_and_client_of(box: Box):
    return box.future.key, box.future.client.id, box.future.client is get_worker()._client


@gen_cluster(client=True)
async def test_future_inside_object_binds_to_worker_client(c, s, a, b):
    x = c.submit(inc, 1, workers=[a.address])
    assert await c.submit(result_of_boxed, Box(x), workers=[b.address]) == 3
    key, client_id, is_worker_client = await c.submit(key_and_client_of, Box(x), workers=[b.address])
    assert key == x.key
    assert is_worker_client
    assert client_id == b._client.id != c.id


@gen_cluster(client=True)
async def test_worker_client_made_lazily_and_reused(c, s, a, b):
    assert a._client is None and b._client is None
    assert not await c.submit(worker_client_made, workers=[a.address], pure=False)
    first = await c.submit(client_id_in_task, 1, workers=[a.address])
    second = await c.submit(client_id_in_task, 2, workers=[a.address])
    assert first == second == a._client.id
    assert b._client is None  # only the worker that needed one made it


@gen_cluster(client=True)
async def test_future_in_arguments_keeps_data_alive_while_task_runs(c, s, a, b):
    x = c.submit(inc, 10)
    await x
    y = c.submit(result_of_boxed, Box(x))
    assert await y == 12
    assert x.key in s.tasks


@gen_cluster(client=True)
async def test_delayed_with_future_computes(c, s, a, b):
    pytest.importorskip("dask", reason="dask collections are an optional extra")
    from operator import add

    from dask import delayed

    x = c.submit(inc, 1)
    total = c.compute(delayed(add)(x, 10))
    assert await total == 12
    nested = c.compute(delayed(sum)([x, delayed(inc)(x)]))
    assert await nested == 5


@gen_cluster(client=True)
async def test_futures_in_published_dataset_bind_to_getting_client(c, s, a, b):
    x = c.submit(inc, 1)
    await c.publish_dataset({"x": x}, name="ds")
    async with Client(s.address, asynchronous=True) as other:
        got = await other.get_dataset("ds")
        assert got["x"].client is other
        assert await got["x"] == 2


def make_boxed_future(key):
    return Box(Future(key))


@gen_cluster(client=True)
async def test_future_in_result_binds_to_receiving_client(c, s, a, b):
    x = c.submit(inc, 1)
    await x
    box = await c.submit(make_boxed_future, x.key)
    assert box.future.client is c
    assert await box.future == 2


@gen_cluster(client=True)
async def test_tokenize_future_is_its_key(c, s, a, b):
    dask_base = pytest.importorskip("dask.base", reason="dask collections are an optional extra")
    x = c.submit(inc, 1)
    y = c.submit(inc, 2)
    assert dask_base.tokenize(x) == dask_base.tokenize(Future(x.key, c))
    assert dask_base.tokenize(x) != dask_base.tokenize(y)
    assert x.__dask_tokenize__()[1] == x.key


@gen_cluster(client=True)
async def test_unpickled_future_binds_to_receiving_client(c, s, a, b):
    x = c.submit(inc, 1)
    with receiving_for(c):
        y = pickle.loads(pickle.dumps(x))
        assert client_for_future() is c
    assert y.client is c and y.key == x.key
    assert await y == 2


def dask_compute_in_task(n):
    import dask
    from dask import delayed

    return dask.compute(delayed(sum)([delayed(inc)(i) for i in range(n)]))[0]


@gen_cluster(client=True)
async def test_dask_compute_inside_task_uses_worker_client(c, s, a, b):
    pytest.importorskip("dask", reason="dask collections are an optional extra")
    assert await c.submit(dask_compute_in_task, 4) == 10


def test_future_inside_object_real_processes(loop):
    with cluster() as (s, [a, b]), Client(s["address"], loop=loop) as c:
        x = c.submit(inc, 1, workers=[a["address"]])
        assert c.submit(result_of_boxed, Box(x), workers=[b["address"]]).result(timeout=30) == 3
        ids = {c.submit(client_id_in_task, i, workers=[b["address"]]).result(timeout=30) for i in range(3)}
        assert len(ids) == 1 and c.id not in ids


def test_delayed_with_future_real_processes(loop):
    pytest.importorskip("dask", reason="dask collections are an optional extra")
    from operator import add

    from dask import delayed

    with cluster() as (s, [a, b]), Client(s["address"], loop=loop) as c:
        x = c.submit(inc, 1)
        assert c.compute(delayed(add)(x, 10)).result(timeout=30) == 12
        assert c.submit(dask_compute_in_task, 3).result(timeout=30) == 6
