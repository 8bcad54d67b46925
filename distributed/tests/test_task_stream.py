"""The task stream: always recorded on the scheduler, read by
``client.get_task_stream`` and the ``get_task_stream()`` context manager."""
from __future__ import annotations

import pytest

from distributed import Client
from distributed.diagnostics.task_stream import (
    TaskStreamPlugin,
    efficiency,
    get_task_stream,
    rectangles,
    summarize,
)
from distributed.utils_test import cluster, gen_cluster, inc, slowinc, throws


def test_buffer_is_bounded_and_indexed():
    ts = TaskStreamPlugin(maxlen=3)
    for i in range(5):
        ts.record({"key": f"x-{i}", "worker": "w", "startstops": [
            {"action": "compute", "start": float(i), "stop": i + 0.5}]})
    assert ts.index == 5 and [r["key"] for r in ts.collect()] == ["x-2", "x-3", "x-4"]
    assert [r["key"] for r in ts.since(3)] == ["x-3", "x-4"]
    assert ts.since(0) == ts.collect() and ts.since(5) == []
    assert [r["key"] for r in ts.collect(start=3.2, stop=3.6)] == ["x-3"]
    assert [r["key"] for r in ts.collect(count=1)] == ["x-4"]
    with pytest.raises(ValueError, match="count"):
        ts.collect(count=-1)


def test_summaries():
    recs = [{"key": "a-1", "status": "OK", "nbytes": 10, "worker": "w", "thread": 1,
             "startstops": [{"action": "transfer", "start": 0.0, "stop": 1.0, "nbytes": 5},
                            {"action": "compute", "start": 1.0, "stop": 3.0}]},
            {"key": "a-2", "status": "error", "nbytes": -1, "worker": "w", "thread": 2,
             "startstops": [{"action": "compute", "start": 1.0, "stop": 2.0}]}]
    [row] = summarize(recs)
    assert row == {"prefix": "a", "count": 2, "erred": 1, "compute": 3.0, "transfer": 1.0,
                   "nbytes": 10, "transfer_bytes": 5, "mean": 1.5}
    assert len(rectangles(recs)) == 3
    assert efficiency(recs, nthreads=2, start=0.0, stop=3.0) == 0.5
    assert efficiency(recs, nthreads=0, start=0.0, stop=3.0) is None


@gen_cluster(client=True)
async def test_records_every_task_with_its_worker_and_times(c, s, a, b):
    futures = c.map(inc, range(20))
    await c.gather(futures)
    records = await c.get_task_stream()
    assert sorted(r["key"] for r in records) == sorted(f.key for f in futures)
    for r in records:
        assert r["status"] == "OK" and r["typename"] == "int"
        assert r["worker"] in (a.address, b.address)
        [ss] = r["startstops"]
        assert ss["action"] == "compute" and ss["start"] <= ss["stop"]
        assert r["worker"] == s.tasks[r["key"]].who_has.__iter__().__next__().address
    assert len(await c.get_task_stream(count=5)) == 5


@gen_cluster(client=True)
async def test_errors_and_transfers_are_recorded(c, s, a, b):
    x = c.submit(inc, 1, workers=[a.address])
    y = c.submit(inc, x, workers=[b.address])
    bad = c.submit(throws, 1)
    await y
    with pytest.raises(RuntimeError):
        await bad
    records = {r["key"]: r for r in await c.get_task_stream()}
    assert records[bad.key]["status"] == "error"
    actions = [ss["action"] for ss in records[y.key]["startstops"]]
    assert actions == ["transfer", "compute"]
    assert records[y.key]["startstops"][0]["source"] == a.address


@gen_cluster(client=True)
async def test_context_manager_needs_no_priming(c, s, a, b):
    await c.gather(c.map(inc, range(5)))
    async with get_task_stream(c) as ts:
        futures = c.map(slowinc, range(3), delay=0.01)
        await c.gather(futures)
    assert sorted(r["key"] for r in ts.data) == sorted(f.key for f in futures)


@gen_cluster(client=True)
async def test_plot_is_refused_clearly(c, s, a, b):
    with pytest.raises(ValueError, match="dashboard"):
        c.get_task_stream(plot=True)
    with pytest.raises(ValueError, match="performance_report"):
        get_task_stream(c, plot="save")


@gen_cluster(client=True, config={"distributed.scheduler.dashboard.tasks.task-stream-length": 4})
async def test_length_from_configuration(c, s, a, b):
    await c.gather(c.map(inc, range(10)))
    assert len(await c.get_task_stream()) == 4
    assert s.extensions["diagnostics"].task_stream.index == 10


def test_blocking_api_with_real_processes():
    with cluster() as (s, [a, b]):
        with Client(s["address"]) as client:
            with get_task_stream(client) as ts:
                client.gather(client.map(inc, range(10)))
            assert len(ts.data) == 10
            assert {r["worker"] for r in ts.data} <= {a["address"], b["address"]}
            assert len(client.get_task_stream(start="60s")) == 10
