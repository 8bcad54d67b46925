"""Client.set_metadata / get_metadata: a nested dict in the scheduler."""
import pytest

from distributed import Client
from distributed.utils_test import async_wait_for, cluster, gen_cluster, inc


@gen_cluster(client=True)
async def test_set_get_nested(c, s, a, b):
    ext = s.extensions["metadata"]
    await c.set_metadata("x", 1)
    assert await c.get_metadata("x") == 1
    await c.set_metadata(["a", "b", "c"], {"d": 2})
    assert ext.task_metadata["a"] == {"b": {"c": {"d": 2}}}
    assert await c.get_metadata(["a", "b", "c", "d"]) == 2
    assert await c.get_metadata("a") == {"b": {"c": {"d": 2}}}
    await c.set_metadata(["a", "e"], [1, 2])
    assert await c.get_metadata(["a", "e"]) == (1, 2)  # msgpack gives tuples back
    await c.set_metadata(("t", 0), "tuple key")  # a tuple is one key, a list a path
    assert await c.get_metadata(("t", 0)) == "tuple key"


@gen_cluster(client=True)
async def test_missing_keys(c, s, a, b):
    with pytest.raises(KeyError, match="nope"):
        await c.get_metadata("nope")
    assert await c.get_metadata("nope", default=None) is None
    assert await c.get_metadata(["nope", "deeper"], default=3) == 3
    await c.set_metadata("x", 1)
    assert await c.get_metadata(["x", "below"], default="d") == "d"
    with pytest.raises(TypeError, match="not a dict"):
        await c.set_metadata(["x", "below"], 2)
    assert await c.get_metadata("x") == 1
    with pytest.raises(TypeError, match="msgpack"):
        c.set_metadata("bad", object())
    with pytest.raises(ValueError, match="non-empty"):
        await c.set_metadata([], 1)


@gen_cluster(client=True)
async def test_metadata_of_a_forgotten_task_is_dropped(c, s, a, b):
    ext = s.extensions["metadata"]
    future = c.submit(inc, 1, key="task-x")
    await future
    await c.set_metadata("task-x", {"note": 1})
    await c.set_metadata("other", 2)
    assert await c.get_metadata(["task-x", "note"]) == 1
    del future
    await async_wait_for(lambda: "task-x" not in ext.task_metadata, timeout=5)
    assert ext.task_metadata == {"other": 2}


def _flag_in_task(value):
    from distributed import get_client

    client = get_client()
    client.set_metadata("flag", value)
    return client.get_metadata("flag")


@gen_cluster(client=True)
async def test_from_tasks(c, s, a, b):
    assert await c.submit(_flag_in_task, True) is True
    assert await c.get_metadata("flag") is True


def test_blocking_api_with_real_processes(loop):
    with cluster() as (s, [a, b]):
        with Client(s["address"], loop=loop) as c:
            c.set_metadata(["x", "y"], 1)
            assert c.get_metadata("x") == {"y": 1}
            assert c.submit(_flag_in_task, "on").result() == "on"
            assert c.get_metadata("flag") == "on"
            with pytest.raises(KeyError):
                c.get_metadata("missing")
