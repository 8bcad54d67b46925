"""The resilience guarantees, checked by breaking things on purpose.

Each test injects faults with ``distributed.chaos.Chaos`` (seeded, so a
failure replays) and checks that results stay exact, nothing hangs and the
errors say why.  Leaks (threads, processes, sockets, files, worker
directories) fail every test through the harness.
"""
from __future__ import annotations

import asyncio
import os
import signal
import threading

import psutil
import pytest

from distributed import CancelledError, Client, KilledWorker, LocalCluster, Scheduler, Worker
from distributed.chaos import Chaos
from distributed.core import Status
from distributed.nanny import Nanny
from distributed.utils_test import (
    async_wait_for,
    cluster,
    gen_cluster,
    gen_test,
    inc,
    scheduler_process,
    slowadd,
    slowinc,
    wait_for,
)

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]


def tree_sum(c: Client, layer: list, delay: float = 0.01):
    while len(layer) > 1:
        nxt = [c.submit(slowadd, layer[i], layer[i + 1], delay=delay) for i in range(0, len(layer) - 1, 2)]
        if len(layer) % 2:
            nxt.append(layer[-1])
        layer = nxt
    return layer[0]


def validate_everything(s, workers) -> None:
    s.validate_state()
    for w in workers:
        if w.status in (Status.running, Status.paused):
            w.state.validate_state()


# 1 -------------------------------------------------------------------------


@gen_test(timeout=150)
async def test_tree_reduction_exact_after_two_worker_processes_exit():
    chaos = Chaos(seed=1)
    async with LocalCluster(n_workers=3, threads_per_worker=1, asynchronous=True) as cluster, \
            Client(cluster, asynchronous=True) as c:
        leaves = c.map(slowinc, range(256), delay=0.02)
        total = tree_sum(c, leaves)
        hit = await chaos.exit_random_workers(c, times=2, low=0.2, high=0.8)
        assert len(hit) == 2 and all(pid is not None for _, pid in hit)
        assert not total.done()  # the faults struck mid-computation
        assert await total == sum(range(1, 257))
        await async_wait_for(lambda: sum(n.restarts for n in cluster.workers.values()) == 2, timeout=30)
        assert not {pid for _, pid in hit} & {n.pid for n in cluster.workers.values()}
        assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
                       for _, pid in hit)
        assert not {address for address, _ in hit} & set(cluster.scheduler.workers)
        cluster.scheduler.validate_state()


# 2 -------------------------------------------------------------------------

_enough_faults = threading.Event()


def _after_faults(x):
    """The last task: it finishes only once the faults have happened."""
    if not _enough_faults.wait(60):
        raise TimeoutError("the faults never happened")
    return x


@gen_cluster(client=True, nthreads=[("127.0.0.1", 1)] * 3, timeout=120,
             scheduler_kwargs={"validate": False}, worker_kwargs={"validate": False})
async def test_graph_with_transfers_survives_aborted_connections(c, s, a, b, w3):
    chaos = Chaos(seed=2)
    _enough_faults.clear()
    n = 200
    xs = c.map(slowinc, range(n), delay=0.005)
    ys = [c.submit(slowadd, xs[i], xs[(i + 7) % n], delay=0.005) for i in range(n)]
    total = c.submit(_after_faults, tree_sum(c, ys, delay=0.005))
    workers = [a, b, w3]
    aborts = 0
    try:
        while not total.done():
            await chaos.pause(0.5, 0.5)
            chaos.abort_connections(chaos.choice(workers))
            aborts += 1
            if aborts >= 5:
                _enough_faults.set()
        assert await total == 2 * sum(range(1, n + 1))
    finally:
        _enough_faults.set()
    assert aborts >= 5
    await async_wait_for(lambda: all(w.address in s.workers for w in workers), timeout=20)
    validate_everything(s, workers)


# 3 -------------------------------------------------------------------------


@gen_cluster(client=True, nthreads=[("127.0.0.1", 1)], timeout=120)
async def test_workers_joining_and_leaving_while_results_are_held(c, s, a):
    chaos = Chaos(seed=3)
    futures = c.map(inc, range(200))
    total = c.submit(sum, futures)
    await total
    joined: list[Worker] = []
    for _ in range(10):  # 10 workers join, over about 5 s, and most leave again
        w = Worker(s.address, nthreads=1)
        await w.start()
        joined.append(w)
        await chaos.pause(0.1, 0.4)
        live = [x for x in joined if x.status == Status.running]
        if len(live) > 1:
            leaving = chaos.choice(live)
            how = chaos.choice(["retire", "close", "crash"])
            if how == "retire":
                await c.retire_workers([leaving.address])
            elif how == "close":
                await leaving.close()
            else:  # gone without a word, as a crashed process would be
                chaos.abort_connections(leaving)
                await leaving.close(report=False)
        await chaos.pause(0.05, 0.2)
    assert await c.gather(futures) == list(range(1, 201))
    assert await total == sum(range(1, 201))
    live = [w for w in [a, *joined] if w.status == Status.running]
    await async_wait_for(lambda: len(s.workers) == len(live), timeout=20)
    validate_everything(s, live)
    for w in joined:
        await w.close()


# 4 -------------------------------------------------------------------------


def exit_the_process(x):
    import sys

    sys.exit(x)


@gen_test(timeout=150)
async def test_sys_exit_in_a_task_kills_at_most_allowed_failures_plus_one_workers():
    async with LocalCluster(n_workers=2, threads_per_worker=1, asynchronous=True,
                            scheduler_kwargs={"allowed_failures": 2}) as cluster, \
            Client(cluster, asynchronous=True) as c:
        others = c.map(slowinc, range(20), delay=0.05)
        bad = c.submit(exit_the_process, 3, key="exiter")
        with pytest.raises(KilledWorker) as info:
            await bad
        assert "'exiter' called sys.exit(3)" in str(info.value)
        assert "3 different workers" in str(info.value)
        assert await c.gather(others) == list(range(1, 21))
        assert sum(n.restarts for n in cluster.workers.values()) <= 3
        assert await c.submit(inc, 1) == 2
        await async_wait_for(lambda: len(cluster.scheduler.workers) == 2, timeout=30)


# 5 -------------------------------------------------------------------------


def leak_memory():
    hoard = []
    while True:  # until the nanny kills us (each append writes 20 MB: no busy loop)
        hoard.append(bytearray(20_000_000))


@gen_test(timeout=120)
async def test_nanny_restarts_a_worker_that_leaks_past_its_memory_limit():
    async with Scheduler(port=0, allowed_failures=0) as s, \
            Nanny(s.address, nthreads=1, memory_limit="400 MB", memory_pause_fraction=False,
                  memory_spill_fraction=False) as nanny, \
            Client(s.address, asynchronous=True) as c:
        old_pid, old_address = nanny.pid, nanny.worker_address
        future = c.submit(leak_memory)
        with pytest.raises(KilledWorker, match="memory"):
            await future
        await async_wait_for(lambda: nanny.pid != old_pid and nanny.worker_address in s.workers, timeout=30)
        assert not psutil.pid_exists(old_pid)
        assert "memory" in nanny.exit_reasons[old_address]
        assert await c.submit(inc, 1) == 2


# 6 -------------------------------------------------------------------------

_release_silent = threading.Event()


def block_on_worker(address, x):
    from distributed import get_worker

    if get_worker().address == address:
        _release_silent.wait(60)
    return x + 1


@gen_cluster(client=True, nthreads=[("127.0.0.1", 1)] * 2,
             scheduler_kwargs={"worker_ttl": "1s"}, worker_kwargs={"heartbeat_interval": "100ms"})
async def test_silent_worker_is_removed_within_ttl_and_its_tasks_finish_elsewhere(c, s, a, b):
    _release_silent.clear()
    try:
        futures = [c.submit(block_on_worker, a.address, i, workers=[a.address], allow_other_workers=True)
                   for i in range(4)]
        await async_wait_for(lambda: a.state.executing, timeout=10)
        Chaos(seed=6).silence_heartbeats(a)
        await async_wait_for(lambda: a.address not in s.workers, timeout=1 + 2)
        assert await c.gather(futures) == [1, 2, 3, 4]
    finally:
        _release_silent.set()


# 7 -------------------------------------------------------------------------


def test_scheduler_killed_and_restarted(loop):
    with cluster(nworkers=2, worker_kwargs={"death_timeout": 60}) as (s, workers):
        with Client(s["address"], loop=loop) as c:
            assert c.submit(inc, 1).result(timeout=30) == 2
            pending = c.submit(slowinc, 1, delay=60)
            os.kill(s["proc"].pid, signal.SIGKILL)
            s["proc"].join(10)
            # The outstanding future is cancelled, with a reason, not left hanging.
            wait_for(lambda: pending.status == "cancelled", timeout=10)
            with pytest.raises(CancelledError):
                pending.result(timeout=10)
            with scheduler_process(port=s["port"]):
                wait_for(lambda: c.status == "running", timeout=30)
                c.wait_for_workers(2, timeout=60)
                assert c.submit(inc, 10).result(timeout=30) == 11
                assert c.gather(c.map(inc, range(10))) == list(range(1, 11))


def test_client_gives_up_and_closes_when_the_scheduler_stays_away(loop):
    with cluster(nworkers=1) as (s, workers):
        with Client(s["address"], loop=loop, timeout=2) as c:
            pending = c.submit(slowinc, 1, delay=60)
            os.kill(s["proc"].pid, signal.SIGKILL)
            wait_for(lambda: c.status == "closed", timeout=20)
            assert pending.status == "cancelled"
            with pytest.raises(RuntimeError, match="closed"):
                c.submit(inc, 1)


# retire ----------------------------------------------------------------------


@gen_test(timeout=120)
async def test_scale_down_moves_unique_data_before_closing_workers():
    async with LocalCluster(n_workers=3, threads_per_worker=1, asynchronous=True) as cluster, \
            Client(cluster, asynchronous=True) as c:
        futures = c.map(inc, range(30))
        await c.gather(futures)
        scattered = await c.scatter(list(range(10)))
        await cluster.scale(1)
        await async_wait_for(lambda: len(cluster.scheduler.workers) == 1, timeout=30)
        assert await c.gather(futures) == list(range(1, 31))
        assert await c.gather(scattered) == list(range(10))  # scattered data cannot be recomputed
        assert all(f.status == "finished" for f in scattered)


@gen_cluster(client=True, nthreads=[("127.0.0.1", 1)] * 3)
async def test_retire_workers_moves_unique_data(c, s, a, b, w3):
    data = await c.scatter(list(range(20)), workers=[a.address])
    await c.retire_workers([a.address])
    await async_wait_for(lambda: a.status == Status.closed, timeout=10)
    assert await c.gather(data) == list(range(20))
    assert a.address not in s.workers


# chaos toolkit ---------------------------------------------------------------


def test_chaos_is_reproducible():
    one, two = Chaos(seed=7), Chaos(seed=7)
    assert [one.uniform(0, 1) for _ in range(5)] == [two.uniform(0, 1) for _ in range(5)]
    assert one.choice("abcdef") == two.choice("abcdef")


@gen_cluster(client=True)
async def test_delayed_stream_still_delivers_in_order(c, s, a, b):
    chaos = Chaos(seed=8)
    with chaos.delay_stream(a.batched_stream, 0.2):
        futures = c.map(inc, range(20), workers=[a.address])
        assert await c.gather(futures) == list(range(1, 21))
    assert ("delay-stream", a.batched_stream.name, 0.2) in chaos.log


@gen_cluster(client=True)
async def test_dropped_stream_worker_reconnects(c, s, a, b):
    chaos = Chaos(seed=9)
    x = c.submit(inc, 1, workers=[a.address])
    await x
    chaos.drop_stream(a.batched_stream)
    await async_wait_for(lambda: a.address in s.workers and a._registered, timeout=10)
    y = c.submit(inc, x, workers=[a.address])
    assert await y == 3
    validate_everything(s, [a, b])


@gen_test(timeout=60)
async def test_block_worker_loop_makes_it_silent_then_it_recovers():
    async with LocalCluster(n_workers=1, threads_per_worker=1, asynchronous=True) as cluster, \
            Client(cluster, asynchronous=True) as c:
        address = next(iter(cluster.scheduler.workers))
        chaos = Chaos(seed=10)
        await chaos.block_worker_loop(c, address, 1.0)
        assert await asyncio.wait_for(c.submit(inc, 1), 30) == 2
