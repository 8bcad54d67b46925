"""The Nanny: starting, restarting and stopping worker processes, and
``client.restart()``."""
from __future__ import annotations

import os
import signal

import psutil
import pytest

import distributed
from distributed import CancelledError, Client, KilledWorker, LocalCluster, Nanny, Scheduler
from distributed.core import Status, rpc
from distributed.nanny import describe_exit
from distributed.utils_test import async_wait_for, gen_cluster, gen_test, inc, slowinc

pytestmark = pytest.mark.timeout(120)


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def kill_myself_hard():
    os.kill(os.getpid(), signal.SIGKILL)


@gen_test()
async def test_nanny_runs_its_worker_in_another_process():
    async with Scheduler(port=0) as s, Nanny(s.address, nthreads=2, name="alice") as nanny:
        assert nanny.status == Status.running
        assert nanny.worker_address in s.workers
        ws = s.workers[nanny.worker_address]
        assert ws.nanny == nanny.address and ws.name == "alice" and ws.nthreads == 2
        assert nanny.process.pid == ws.pid != os.getpid()
        pid = nanny.pid
    assert gone(pid)


@gen_test()
async def test_killed_worker_is_restarted_with_the_same_name_and_reason():
    async with Scheduler(port=0) as s, Nanny(s.address, name="bob") as nanny:
        old_pid, old_address = nanny.pid, nanny.worker_address
        os.kill(old_pid, signal.SIGKILL)
        await async_wait_for(lambda: nanny.pid != old_pid and nanny.worker_address in s.workers, timeout=30)
        assert s.workers[nanny.worker_address].name == "bob"
        assert old_address not in s.workers
        assert nanny.exit_reasons[old_address] == "killed by signal SIGKILL"
        assert nanny.restarts == 1
        assert gone(old_pid)


@gen_test()
async def test_killed_worker_error_names_the_exit_reason():
    async with Scheduler(port=0, allowed_failures=0) as s, Nanny(s.address) as nanny, \
            Client(s.address, asynchronous=True) as c:
        with pytest.raises(KilledWorker, match="killed by signal SIGKILL") as info:
            await c.submit(kill_myself_hard, key="crasher")
        assert info.value.task == "crasher"
        assert "1 different workers" in str(info.value)
        await async_wait_for(lambda: nanny.worker_address in s.workers, timeout=30)
        assert await c.submit(inc, 1) == 2


@gen_test()
async def test_restart_through_rpc_gives_a_new_process():
    async with Scheduler(port=0) as s, Nanny(s.address) as nanny:
        old_pid = nanny.pid
        async with rpc(nanny.address) as r:
            assert await r.restart(timeout=10) == "OK"
        assert nanny.pid != old_pid and gone(old_pid)
        assert nanny.worker_address in s.workers
        await async_wait_for(lambda: len(s.workers) == 1, timeout=10)


@gen_test()
async def test_nanny_closes_when_its_worker_is_retired():
    async with Scheduler(port=0) as s, Nanny(s.address) as nanny, Nanny(s.address) as other:
        pid = nanny.pid
        await s.retire_workers(workers=[nanny.worker_address])
        await async_wait_for(lambda: nanny.status == Status.closed, timeout=20)
        assert gone(pid) and nanny.restarts == 0
        assert other.worker_address in s.workers


@gen_test()
async def test_without_auto_restart_a_dead_worker_closes_the_nanny():
    async with Scheduler(port=0) as s, Nanny(s.address, auto_restart=False) as nanny:
        os.kill(nanny.pid, signal.SIGKILL)
        await async_wait_for(lambda: nanny.status == Status.closed, timeout=20)
        await async_wait_for(lambda: not s.workers, timeout=20)


@gen_test()
async def test_nanny_with_unreachable_scheduler_fails_clearly():
    nanny = Nanny("tcp://127.0.0.1:1", death_timeout=1)
    with pytest.raises(RuntimeError, match="could not start"):
        await nanny.start()
    assert nanny.status == Status.closed


def test_nanny_rejects_bad_arguments():
    with pytest.raises(ValueError, match="nthreads"):
        Nanny("tcp://127.0.0.1:8786", nthreads=-1)
    with pytest.raises(ValueError, match="scheduler address"):
        Nanny()


def test_describe_exit():
    assert describe_exit(None) == "still running"
    assert describe_exit(0) == "exited with code 0"
    assert describe_exit(-signal.SIGTERM) == "killed by signal SIGTERM"


def test_nanny_is_exported():
    assert distributed.Nanny is Nanny


# client.restart ----------------------------------------------------------------


@gen_test(timeout=90)
async def test_client_restart_gives_fresh_worker_processes_and_cancels_futures():
    async with LocalCluster(n_workers=2, threads_per_worker=1, asynchronous=True) as cluster, \
            Client(cluster, asynchronous=True) as c:
        done = c.submit(inc, 1)
        await done
        running = c.submit(slowinc, 1, delay=60)
        pids = {n.pid for n in cluster.workers.values()}
        await c.restart()
        assert done.status == running.status == "cancelled"
        with pytest.raises(CancelledError, match="restarted"):
            await running.result()
        assert not pids & {n.pid for n in cluster.workers.values()}
        assert all(gone(p) for p in pids)
        assert len(cluster.scheduler.workers) == 2
        assert not cluster.scheduler.tasks
        assert await c.submit(inc, 10) == 11  # the cluster serves on
        cluster.scheduler.validate_state()


def test_client_restart_blocking():
    with LocalCluster(n_workers=1, threads_per_worker=1) as cluster, Client(cluster) as c:
        x = c.submit(inc, 1)
        assert x.result() == 2
        pid = next(iter(c.run(os.getpid).values()))
        assert c.restart() is c
        assert x.status == "cancelled"
        assert next(iter(c.run(os.getpid).values())) != pid
        assert c.submit(inc, 2).result() == 3


@gen_cluster(client=True)
async def test_client_restart_without_nannies_drops_data_and_keeps_workers(c, s, a, b):
    x = c.submit(inc, 1)
    await x
    await c.restart()
    assert x.status == "cancelled"
    assert not s.tasks and not a.data and not b.data
    assert set(s.workers) == {a.address, b.address}
    assert await c.submit(inc, 5) == 6
