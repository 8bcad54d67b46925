"""retire_workers, rebalance and replicate keep every key when a worker is
killed (SIGKILL of a real worker process) in the middle of the operation.

Scattered data is used where it matters: it cannot be recomputed, so a key
dropped by the move would be gone for good.  The kill happens at a fixed
point of the operation (hooked on the scheduler, which runs in the test's
loop) so that each run exercises the same window.
"""
import asyncio
import os
import signal

import pytest

from distributed import Nanny
from distributed.utils_test import async_wait_for, gen_cluster, inc

NANNIES = dict(client=True, Worker=Nanny, nthreads=[("127.0.0.1", 1)] * 3, timeout=90)


def _nanny_of(nannies, address):
    return next(n for n in nannies if n.worker_address == address)


async def _kill(s, nanny):
    """SIGKILL the worker process of ``nanny``; return once the scheduler
    has dropped that worker."""
    address = nanny.worker_address
    os.kill(nanny.pid, signal.SIGKILL)
    await async_wait_for(lambda: address not in s.workers, timeout=20)


def _values(n=20, size=200_000):
    return [bytes([i]) * size for i in range(n)]


@pytest.mark.parametrize("when", ["before-copy", "after-copy"])
@gen_cluster(**NANNIES)
async def test_retire_keeps_every_key_when_the_recipient_dies(c, s, a, b, d, when):
    nannies = [a, b, d]
    leaving = a.worker_address
    data = await c.scatter(_values(), workers=[leaving])
    computed = c.map(inc, range(10), workers=[leaving])
    await c.gather(computed)
    original = s.replicate
    killed = []

    async def replicate_then_kill(keys=(), n=None, workers=None, **kw):
        # The first round's recipient dies before it gets, or just after it
        # got, the data: the retire must send the keys elsewhere.
        if not killed:
            target = sorted(workers, key=lambda w: s.workers[w].nbytes)[0]
            if when == "before-copy":
                # dead, and the scheduler has not noticed yet: the copy to it fails
                killed.append(target)
                os.kill(_nanny_of(nannies, target).pid, signal.SIGKILL)
                return await original(keys=keys, n=n, workers=[target], **kw)
            result = await original(keys=keys, n=n, workers=[target], **kw)
            killed.append(target)
            await _kill(s, _nanny_of(nannies, target))
            return result
        return await original(keys=keys, n=n, workers=workers, **kw)

    s.replicate = replicate_then_kill
    retired = await s.retire_workers(workers=[leaving], close_workers=True)
    assert leaving in retired and leaving not in s.workers
    assert killed and killed[0] not in s.workers
    assert await c.gather(data) == _values()
    assert await c.gather(computed) == list(range(1, 11))
    assert all(s.tasks[f.key].state == "memory" for f in data)


@gen_cluster(**NANNIES)
async def test_retire_keeps_a_worker_whose_data_cannot_move(c, s, a, b, d):
    """With every other worker gone, the retiring worker stays and its keys with it."""
    leaving = a.worker_address
    data = await c.scatter(_values(5), workers=[leaving])
    original = s.replicate

    async def all_recipients_die(keys=(), n=None, workers=None, **kw):
        for w in list(workers):
            await _kill(s, _nanny_of([b, d], w))
        s.replicate = original
        return "OK"

    # The nannies would bring the killed workers back; make them stay away.
    for nanny in (b, d):
        nanny.auto_restart = False
    s.replicate = all_recipients_die
    others = [w for w in s.workers if w != leaving]
    retired = await s.retire_workers(workers=[leaving], close_workers=True, timeout=2)
    assert retired == {} and leaving in s.workers
    assert s.workers[leaving].status == "running"  # takes work again
    assert not set(others) & set(s.workers)
    assert await c.gather(data) == _values(5)


@gen_cluster(**NANNIES)
async def test_rebalance_moves_from_above_mean_and_survives_a_dead_receiver(c, s, a, b, d):
    full = a.worker_address
    data = await c.scatter(_values(30), workers=[full])
    # A receiver dies before the scheduler has noticed: its gather fails and
    # the sender must keep every key it could not hand over.
    victim = b.worker_address
    os.kill(b.pid, signal.SIGKILL)
    result = await s.rebalance()
    assert result["status"] == "OK"
    assert await c.gather(data) == _values(30)
    await async_wait_for(lambda: victim not in s.workers, timeout=20)
    # Now a real rebalance: from above the mean to below it.
    await c.wait_for_workers(3)
    before = {w: ws.nbytes for w, ws in s.workers.items()}
    mean = sum(before.values()) / len(before)
    result = await s.rebalance()
    after = {w: ws.nbytes for w, ws in s.workers.items()}
    assert result["moved"] > 0
    assert after[full] < before[full] and after[full] <= mean * 1.5
    assert all(after[w] > 0 for w in after)
    assert await c.gather(data) == _values(30)
    await asyncio.sleep(0)


@gen_cluster(**NANNIES)
async def test_rebalance_with_a_kill_mid_move_keeps_computed_keys(c, s, a, b, d):
    futures = c.map(lambda i: bytes([i % 256]) * 100_000, range(40), workers=[a.worker_address])
    await c.gather(futures)
    original = s.state.handle_add_keys
    killed = []

    def add_keys_then_kill(worker, keys, nbytes=None):
        out = original(worker, keys, nbytes)
        if not killed and worker != a.worker_address:
            # the receiver dies just after it took the data
            killed.append(worker)
            os.kill(_nanny_of([b, d], worker).pid, signal.SIGKILL)
        return out

    s.state.handle_add_keys = add_keys_then_kill
    try:
        await s.rebalance()
    finally:
        s.state.handle_add_keys = original
    assert killed
    await async_wait_for(lambda: killed[0] not in s.workers, timeout=20)
    assert await c.gather(futures) == [bytes([i % 256]) * 100_000 for i in range(40)]


@gen_cluster(**NANNIES)
async def test_replicate_with_a_dying_recipient_keeps_every_key(c, s, a, b, d):
    data = await c.scatter(_values(10), workers=[a.worker_address])
    victim = b.worker_address
    os.kill(b.pid, signal.SIGKILL)  # dead, not yet noticed by the scheduler
    await c.replicate(data, n=3)
    assert await c.gather(data) == _values(10)
    await async_wait_for(lambda: victim not in s.workers, timeout=20)
    for f in data:
        holders = {ws.address for ws in s.tasks[f.key].who_has}
        assert a.worker_address in holders and d.worker_address in holders
