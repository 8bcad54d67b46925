"""client.story, call_stack, dump_cluster_state, get_versions(check=True),
processing, on one loop and with real processes."""
from __future__ import annotations

import threading

import pytest

from distributed import Client
from distributed.diagnostics.cluster_dump import load_cluster_dump
from distributed.utils_test import async_poll_for, cluster, gen_cluster, inc, slowinc
from distributed.versions import VersionMismatchWarning, get_versions

_release = threading.Event()


def block(x):
    """Runs until the test lets it go (never longer than 30 s)."""
    _release.wait(30)
    return x


@gen_cluster(client=True)
async def test_story_merges_scheduler_and_worker_rows(c, s, a, b):
    x = c.submit(inc, 1, workers=[a.address])
    await x
    story = await c.story(x)
    assert story[:3] == [("scheduler", x.key, "released", "waiting"),
                         ("scheduler", x.key, "waiting", "processing"),
                         ("scheduler", x.key, "processing", "memory")]
    assert [row[1:] for row in story if row[0] == "scheduler"] == [tuple(t) for t in s.story(x.key)]
    assert all(row[0] in ("scheduler", a.address) for row in story)
    with pytest.raises(ValueError, match="on_error"):
        c.story(x, on_error="explode")


@gen_cluster(client=True)
async def test_call_stack_and_processing_of_running_tasks(c, s, a, b):
    _release.clear()
    try:
        x = c.submit(block, 1, workers=[b.address])
        await async_poll_for(lambda: x.key in b.executing_since, timeout=10)
        stacks = await c.call_stack()
        assert list(stacks) == [b.address] and list(stacks[b.address]) == [x.key]
        assert any("_release.wait(30)" in line for line in stacks[b.address][x.key])
        assert await c.call_stack(keys=["not-running"]) == {}
        assert (await c.call_stack(futures=[x])) == stacks
        assert await c.processing() == {a.address: [], b.address: [x.key]}
    finally:
        _release.set()
    assert await x == 1
    assert await c.call_stack() == {}


@gen_cluster(client=True)
async def test_dump_cluster_state_matches_the_cluster(c, s, a, b, tmp_path=None):
    import tempfile

    futures = c.map(inc, range(5))
    await c.gather(futures)
    with tempfile.TemporaryDirectory() as d:
        path = await c.dump_cluster_state(f"{d}/dump", exclude=["priority"])
        assert path.endswith(".msgpack.gz")
        dump = load_cluster_dump(path)
        tasks = dump["scheduler"]["tasks"]
        assert {k: t["state"] for k, t in tasks.items()} == {k: ts.state for k, ts in s.tasks.items()}
        assert all("priority" not in t for t in tasks.values())
        assert set(dump["workers"]) == {a.address, b.address}
        assert sorted(dump["workers"][a.address]["data"]) == sorted(map(str, a.data))
        path = await c.dump_cluster_state(f"{d}/dump", format="yaml")
        assert load_cluster_dump(path)["scheduler"]["address"] == s.address
        path = await c.dump_cluster_state(f"{d}/from-scheduler", write_from_scheduler=True)
        assert load_cluster_dump(path)["scheduler"]["id"] == s.id
    with pytest.raises(ValueError, match="format"):
        c.dump_cluster_state("x", format="json")
    with pytest.raises(ValueError, match="storage options"):
        c.dump_cluster_state("x", anon=True)


@gen_cluster(client=True)
async def test_get_versions_check_raises_on_a_required_mismatch(c, s, a, b):
    assert set((await c.get_versions(check=True))["workers"]) == {a.address, b.address}
    fake = get_versions()
    fake["packages"]["msgpack"] = "0.0.1"
    a.handlers["versions"] = lambda comm=None, **kwargs: fake
    with pytest.raises(ValueError, match="msgpack"):
        await c.get_versions(check=True)
    fake["packages"]["msgpack"] = get_versions()["packages"]["msgpack"]
    fake["packages"]["numpy"] = "0.0.1"
    with pytest.warns(VersionMismatchWarning, match="numpy"):
        await c.get_versions(check=True)


def test_blocking_api_with_real_processes(tmp_path):
    with cluster() as (s, [a, b]):
        with Client(s["address"]) as client:
            x = client.submit(slowinc, 1, delay=0.01)
            assert x.result() == 2
            story = client.story(x)
            assert story[-1][:2] == ("scheduler", x.key) or any(r[0] == "scheduler" for r in story)
            assert ("scheduler", x.key, "processing", "memory") in story
            path = client.dump_cluster_state(str(tmp_path / "dump"))
            dump = load_cluster_dump(path)
            assert dump["scheduler"]["tasks"][x.key]["state"] == "memory"
            assert set(dump["workers"]) == {a["address"], b["address"]}
            assert client.call_stack() == {}
            assert str(client.why(x)).startswith("Nothing is stalled")


@gen_cluster(client=True)
async def test_export_trace_and_eta(c, s, a, b):
    import json
    import tempfile

    futures = c.map(inc, range(5))
    await c.gather(futures)
    with tempfile.TemporaryDirectory() as d:
        n = await c.export_trace(f"{d}/trace.json")
        with open(f"{d}/trace.json") as f:
            trace = json.load(f)
    assert n == 5
    complete = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    assert sorted(e["name"] for e in complete) == sorted(f.key for f in futures)
    assert all(e["dur"] >= 0 and e["cat"] == "compute" for e in complete)
    assert (await c.eta(*futures))["eta"] == 0.0
    _release.clear()
    try:
        x = c.submit(block, 1)
        y = c.submit(inc, x)
        await async_poll_for(lambda: x.key in s.tasks and s.tasks[x.key].state == "processing", timeout=10)
        out = await c.eta(y)
        assert out["critical_path"] > 0 and out["path"] == [x.key, y.key]
    finally:
        _release.set()


@gen_cluster(client=True, worker_kwargs={"heartbeat_interval": "10ms"})
async def test_memory_sampler(c, s, a, b):
    from distributed.diagnostics import MemorySampler

    ms = MemorySampler()
    async with ms.sample("run", measure="managed", interval=0.01):
        futures = c.map(inc, range(10))
        await c.gather(futures)
        await async_poll_for(lambda: s.extensions["memory_sampler"].samples
                             and len(next(iter(s.extensions["memory_sampler"].samples.values()))) > 3,
                             timeout=10)
    series = ms.samples["run"]
    assert len(series) > 3 and series[-1][1] == sum(ws.nbytes for ws in s.workers.values())
    async with ms.sample(measure="process", interval=0.01):
        await async_poll_for(lambda: all(ws.metrics.get("memory") for ws in s.workers.values()), timeout=10)
    assert ms.samples["Samples 1"][-1][1] > 0
    assert s.extensions["memory_sampler"].tasks == {}
    df = ms.to_pandas(align=True)
    assert list(df.columns) == ["run", "Samples 1"]
    with pytest.raises(ValueError, match="spilled"):
        ms.sample(measure="spilled")
