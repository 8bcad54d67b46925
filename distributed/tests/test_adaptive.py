"""Adaptive: up from the scheduler's estimate, down through retire_workers
after wait_count proposals in a row, never below minimum or above maximum."""
import asyncio

import pytest

from distributed import Client, LocalCluster, Scheduler, Worker
from distributed.deploy.adaptive import Adaptive
from distributed.deploy.adaptive_core import AdaptiveCore
from distributed.deploy.spec import SpecCluster
from distributed.utils_test import async_wait_for, gen_cluster, gen_test, inc, slowinc


@gen_test()
async def test_scale_from_zero_under_load_and_back_to_zero():
    async with LocalCluster(n_workers=0, threads_per_worker=1, processes=False, asynchronous=True) as cluster:
        s = cluster.scheduler
        adaptive = cluster.adapt(minimum=0, maximum=4, interval="20ms", wait_count=3, target_duration="200ms")
        async with Client(cluster, asynchronous=True) as c:
            futures = c.map(slowinc, range(40), delay=0.1)
            await async_wait_for(lambda: len(s.workers) >= 2, timeout=20)
            assert await c.gather(futures) == list(range(1, 41))
            assert adaptive.state == "running"
            assert max(r["n"] for _, r in adaptive.log if r["status"] == "up") <= 4
            del futures
            await async_wait_for(lambda: not s.workers and not cluster.workers, timeout=20)
            assert cluster.worker_spec == {}
            # and up again when new work comes
            assert await c.submit(inc, 1) == 2


@gen_test()
async def test_scale_down_moves_held_data_no_key_lost():
    async with LocalCluster(n_workers=0, threads_per_worker=1, processes=False, asynchronous=True) as cluster:
        s = cluster.scheduler
        cluster.adapt(minimum=1, maximum=3, interval="20ms", wait_count=2, target_duration="100ms")
        async with Client(cluster, asynchronous=True) as c:
            futures = c.map(slowinc, range(30), delay=0.05)
            await async_wait_for(lambda: len(s.workers) >= 2, timeout=20)
            await c.gather(futures)
            # idle now, results still held: back to the minimum, the data moved first
            await async_wait_for(lambda: len(s.workers) == 1 and len(cluster.workers) == 1, timeout=20)
            assert await c.gather(futures) == list(range(1, 31))
            assert all(s.tasks[f.key].state == "memory" for f in futures)


@gen_test()
async def test_adapt_again_stops_the_previous_and_merges_options():
    async with LocalCluster(n_workers=0, processes=False, asynchronous=True) as cluster:
        first = cluster.adapt(minimum=0, maximum=2, interval="50ms")
        await async_wait_for(lambda: first.state == "running", timeout=5)
        second = cluster.adapt(maximum=3)
        assert first.state == "stopped"
        assert (second.minimum, second.maximum, second.interval) == (0, 3, 0.05)
    await async_wait_for(lambda: second.state in ("stopped", "inactive"), timeout=5)


class _Fixed(AdaptiveCore):
    """The decision loop alone: a target set by the test, workers as names."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.workers = set()
        self.wanted = 0
        self.downs = []

    @property
    def plan(self):
        return set(self.workers)

    requested = plan
    observed = plan

    async def target(self):
        return self.wanted

    async def workers_to_close(self, target):
        return sorted(self.workers)[: len(self.workers) - target]

    async def scale_up(self, n):
        self.workers |= {f"w{i}" for i in range(len(self.workers), n)}

    async def scale_down(self, workers):
        self.downs.append(sorted(workers))
        self.workers -= set(workers)


@gen_test()
async def test_hysteresis_needs_wait_count_proposals_in_a_row():
    core = _Fixed(minimum=1, maximum=5, wait_count=3)
    core.wanted = 10
    await core.adapt()
    assert len(core.workers) == 5  # clamped to maximum
    core.wanted = 0
    await core.adapt()
    await core.adapt()
    assert len(core.workers) == 5 and core.downs == []
    core.wanted = 5  # a burst of work: the count starts over
    await core.adapt()
    core.wanted = 0
    await core.adapt()
    await core.adapt()
    assert core.downs == []
    await core.adapt()
    assert core.downs == [["w0", "w1", "w2", "w3"]] and len(core.workers) == 1  # minimum kept


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="maximum"):
        AdaptiveCore(minimum=3, maximum=1)
    with pytest.raises(ValueError, match="wait_count"):
        AdaptiveCore(wait_count=0)
    with pytest.raises(ValueError, match="interval"):
        AdaptiveCore(interval=0)
    with pytest.raises(TypeError, match="unexpected"):
        Adaptive(None, bogus=1)


@gen_test()
async def test_speccluster_adapt_bounds_in_cores_and_memory():
    template = {"cls": Worker, "options": {"nthreads": 2, "memory_limit": "1GiB"}}
    async with SpecCluster(scheduler={"cls": Scheduler, "options": {"port": 0}}, worker=template,
                           asynchronous=True) as cluster:
        adaptive = cluster.adapt(minimum_cores=3, maximum_memory="5GiB", interval="20ms")
        assert (adaptive.minimum, adaptive.maximum) == (2, 5)
        await async_wait_for(lambda: len(cluster.scheduler.workers) == 2, timeout=10)


@gen_cluster(client=True, nthreads=[("127.0.0.1", 1)] * 2)
async def test_adaptive_target_and_workers_to_close(c, s, a, b):
    assert s.adaptive_target() == 0  # nothing to do
    assert sorted(s.workers_to_close()) == sorted([a.address, b.address])
    assert s.workers_to_close(n=1) in ([a.address], [b.address])
    futures = c.map(slowinc, range(20), delay=0.2)
    await async_wait_for(lambda: sum(len(ws.processing) for ws in s.workers.values()) >= 2, timeout=5)
    assert s.adaptive_target(target_duration=0.1) >= 2
    assert s.workers_to_close() == []  # both busy
    await c.gather(futures)
    x = await c.scatter(list(range(10)), workers=[a.address])
    # one worker must stay while data is held
    assert s.workers_to_close(target=0) == [b.address]
    assert len(x) == 10
    with pytest.raises(ValueError, match="target_duration"):
        s.adaptive_target(target_duration=-1)
    await asyncio.sleep(0)


@gen_test(timeout=120)
async def test_adaptive_with_worker_processes():
    """Nannies and worker processes: up under load, back to the minimum when
    idle, the results held by the retired workers still there."""
    async with LocalCluster(n_workers=0, threads_per_worker=1, processes=True, asynchronous=True) as cluster:
        s = cluster.scheduler
        cluster.adapt(minimum=1, maximum=2, interval="50ms", wait_count=2, target_duration="100ms")
        async with Client(cluster, asynchronous=True) as c:
            futures = c.map(slowinc, range(20), delay=0.1)
            await async_wait_for(lambda: len(s.workers) == 2, timeout=60)
            assert await c.gather(futures) == list(range(1, 21))
            await async_wait_for(lambda: len(s.workers) == 1 and len(cluster.workers) == 1, timeout=60)
            assert await c.gather(futures) == list(range(1, 21))
