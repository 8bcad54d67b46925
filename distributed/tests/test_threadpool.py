"""The worker's thread pool: every slot is used, secede/rejoin keep the
count of running threads at ``nthreads``, shutdown ends every thread."""
from __future__ import annotations

import queue
import threading
import time

import pytest

from distributed.threadpool import ThreadPool, rejoin, secede, seceded
from distributed.utils_test import poll_for


class _SlowGet(queue.SimpleQueue):
    """A queue whose ``get`` pauses after taking an item: it holds open the
    moment between a thread taking work and starting it."""

    def get(self, *args, **kwargs):
        item = super().get(*args, **kwargs)
        time.sleep(0.05)
        return item


def _all_start(pool: ThreadPool, n: int) -> list:
    """Submit ``n`` tasks that each wait for all ``n`` to be running."""
    barrier = threading.Barrier(n, timeout=5)
    return [pool.submit(barrier.wait) for _ in range(n)]


def test_submit_and_fifo():
    pool = ThreadPool(1)
    try:
        order = []
        futures = [pool.submit(order.append, i) for i in range(20)]
        for f in futures:
            f.result(timeout=5)
        assert order == list(range(20))
        assert pool.submit(sum, [1, 2]).result(timeout=5) == 3
    finally:
        pool.shutdown()


def test_every_slot_is_used_while_a_thread_takes_work():
    """Regression: a thread that had just taken a task still counted as free,
    so the next task waited in the queue with a slot unused (a task waiting
    on an Event that the other would set hung)."""
    pool = ThreadPool(2)
    pool._queue = _SlowGet()
    try:
        barrier = threading.Barrier(2, timeout=5)
        first = pool.submit(barrier.wait)
        poll_for(pool._queue.empty, timeout=5)  # taken, not yet started
        second = pool.submit(barrier.wait)
        assert {first.result(timeout=10), second.result(timeout=10)} == {0, 1}
    finally:
        pool.shutdown()


def test_slots_used_under_submits_from_many_threads():
    pool = ThreadPool(4)
    try:
        for _ in range(50):
            barrier = threading.Barrier(4, timeout=5)
            futures: list = []

            def submit(barrier=barrier, futures=futures):
                futures.append(pool.submit(barrier.wait))

            submitters = [threading.Thread(target=submit) for _ in range(4)]
            for t in submitters:
                t.start()
            for t in submitters:
                t.join(5)
            assert sorted(f.result(timeout=10) for f in futures) == [0, 1, 2, 3]
        assert len(pool._threads_alive) <= 4
    finally:
        pool.shutdown()


def test_secede_frees_the_slot_and_rejoin_gives_it_back():
    pool = ThreadPool(1)
    try:
        release = threading.Event()

        def long_wait():
            secede()
            release.wait(5)
            rejoin()
            return "done"

        waiting = pool.submit(long_wait)
        # The slot it left runs other work meanwhile.
        assert pool.submit(lambda: 42).result(timeout=5) == 42
        release.set()
        assert waiting.result(timeout=5) == "done"
        # Back to one pool thread once the extra one took its retire token.
        poll_for(lambda: len(pool._threads_alive) == 1, timeout=5)
        for _ in range(3):
            assert pool.submit(lambda: 1).result(timeout=5) == 1
        assert pool._active == 1
    finally:
        pool.shutdown()


def test_seceded_block_outside_a_task_does_nothing():
    with seceded():
        pass  # no pool: nothing to leave or rejoin


def test_shutdown_cancels_queued_and_refuses_new_work():
    pool = ThreadPool(1)
    gate = threading.Event()
    running = pool.submit(gate.wait, 5)
    queued = pool.submit(lambda: "never")
    poll_for(running.running, timeout=5)
    pool.shutdown(wait=False, cancel_futures=True)
    assert queued.cancelled()
    gate.set()
    assert running.result(timeout=5) is True
    poll_for(lambda: not pool._threads_alive, timeout=5)
    with pytest.raises(RuntimeError, match="shut down"):
        pool.submit(sum, [])


def test_needs_a_thread():
    with pytest.raises(ValueError, match="at least one thread"):
        ThreadPool(0)
