"""A thread pool whose threads can leave it (``secede``) and come back.

A task that waits on other tasks (``worker_client``, ``secede``) must not
hold one of the pool's ``nthreads`` slots, or a pool full of waiting tasks
deadlocks.  ``secede()`` takes the calling thread out of the pool and starts
a replacement; when a seceded thread's task returns, the thread exits
instead of taking more work.  ``rejoin()`` waits until the pool has a free
slot again and takes it back.

Work is handed over through a simple queue; the pool is a
``concurrent.futures.Executor`` so it can also be used as one.
"""
from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future
from contextlib import contextmanager
from typing import Any

__all__ = ["ThreadPool", "secede", "rejoin"]

_local = threading.local()
_SHUTDOWN = object()
_RETIRE = object()  # one thread too many after a rejoin: the taker exits


class ThreadPool(Executor):
    """``nthreads`` worker threads running submitted callables in FIFO order.

    >>> pool = ThreadPool(2)
    >>> pool.submit(sum, [1, 2]).result()
    3
    >>> pool.shutdown()
    """

    _counter = itertools.count()

    def __init__(self, nthreads: int, name: str = "distributed-task"):
        if nthreads < 1:
            raise ValueError(f"a thread pool needs at least one thread, not {nthreads}")
        self.nthreads = nthreads
        self.name = name
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._threads: set[threading.Thread] = set()
        self._lock = threading.Lock()
        self._active = 0  # threads currently counted as pool slots
        # Under ``_lock``, at most one of these is non-zero: free threads no
        # queued item is promised to, and queued items no thread is promised
        # to.  A thread counts as free only when no item claimed it, not while
        # it sits in ``get()``: an item it already took would otherwise be
        # counted as waiting for a free thread that is in fact busy with it.
        self._idle = 0
        self._backlog = 0
        self._shutdown = False

    @property
    def _max_workers(self) -> int:
        return self.nthreads

    def submit(self, fn: Callable, /, *args, **kwargs) -> Future:
        future: Future = Future()
        self._put((future, fn, args, kwargs))
        return future

    def submit_nowait(self, fn: Callable, *args) -> None:
        """Run ``fn(*args)`` with no Future; ``fn`` reports its own result."""
        self._put((None, fn, args, None))

    def _put(self, item) -> None:
        if self._shutdown:
            raise RuntimeError("cannot submit to a thread pool that is shut down")
        with self._lock:
            self._queue.put(item)
            self._claim(may_start=True)

    def _claim(self, may_start: bool) -> None:
        """Promise the item just queued to a thread (holding ``_lock``): a
        free one, else a new one while there are slots, else the first to
        finish its task."""
        if self._idle:
            self._idle -= 1
        elif may_start and self._active < self.nthreads:
            self._start_thread(claimed=True)
        else:
            self._backlog += 1

    def _start_thread(self, claimed: bool) -> None:
        self._active += 1
        t = threading.Thread(target=self._work, args=(claimed,), name=f"{self.name}-{next(self._counter)}",
                             daemon=True)
        self._threads.add(t)
        t.start()

    def _work(self, claimed: bool) -> None:
        _local.pool = self
        _local.seceded = False
        try:
            while True:
                if not claimed:
                    with self._lock:
                        if self._backlog:
                            self._backlog -= 1
                        else:
                            self._idle += 1
                claimed = False
                item = self._queue.get()
                if item is _SHUTDOWN:
                    return
                if item is _RETIRE:
                    with self._lock:
                        if self._active > self.nthreads:
                            return
                    continue
                future, fn, args, kwargs = item
                if future is None:
                    try:
                        fn(*args)
                    except BaseException:  # fn reports its own errors
                        pass
                elif future.set_running_or_notify_cancel():
                    try:
                        future.set_result(fn(*args, **kwargs))
                    except BaseException as e:
                        future.set_exception(e)
                if _local.seceded:
                    return
        finally:
            with self._lock:
                self._threads.discard(threading.current_thread())
                if not _local.seceded:
                    self._active -= 1

    def _secede(self) -> None:
        with self._lock:
            self._active -= 1
            if not self._shutdown:
                self._start_thread(claimed=False)
        _local.seceded = True

    def _rejoin(self) -> None:
        # Take a slot back at once; the pool is over-full until one idle
        # thread takes the retire token and exits.
        with self._lock:
            self._active += 1
            if self._active > self.nthreads:
                self._queue.put(_RETIRE)
                self._claim(may_start=False)
        _local.seceded = False

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False, timeout: float | None = None) -> None:
        with self._lock:
            self._shutdown = True
            threads = list(self._threads)
        if cancel_futures:
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is not _SHUTDOWN and item[0] is not None:
                    item[0].cancel()
        for _ in range(len(threads) + 1):
            self._queue.put(_SHUTDOWN)
        if wait:
            for t in threads:
                if t is not threading.current_thread():
                    t.join(timeout)

    @property
    def _threads_alive(self) -> list:
        return [t for t in self._threads if t.is_alive()]


def secede() -> None:
    """Leave the worker's thread pool from inside a running task.

    Use it before a long wait (on futures, a lock, a queue) so the slot runs
    other tasks meanwhile.

    >>> def task():                      # doctest: +SKIP
    ...     secede()
    ...     return client.gather(futures)
    """
    pool = getattr(_local, "pool", None)
    if pool is None or getattr(_local, "seceded", False):
        return
    pool._secede()
    hook = getattr(_local, "on_secede", None)
    if hook is not None:
        hook()


def rejoin() -> None:
    """Take a thread pool slot back after ``secede``."""
    pool = getattr(_local, "pool", None)
    if pool is None or not getattr(_local, "seceded", False):
        return
    pool._rejoin()
    hook = getattr(_local, "on_rejoin", None)
    if hook is not None:
        hook()


@contextmanager
def seceded() -> Iterator[None]:
    """Out of the worker's thread pool for the block, back in after: for a
    task that blocks on work of the same cluster (``client.get``,
    ``dask.compute`` inside a task), so that work can use its slot.  Outside
    a task, or already seceded, it does nothing.

    >>> with seceded():                 # doctest: +SKIP
    ...     client.gather(futures)
    """
    if getattr(_local, "pool", None) is None or getattr(_local, "seceded", False):
        yield
        return
    secede()
    try:
        yield
    finally:
        rejoin()


def set_task_hooks(on_secede: Callable[[], Any] | None, on_rejoin: Callable[[], Any] | None) -> None:
    """Called by the worker in the task's thread before running it."""
    _local.on_secede = on_secede
    _local.on_rejoin = on_rejoin
