"""``client.get_executor()``: the standard ``concurrent.futures`` interface."""
from __future__ import annotations

import concurrent.futures as cf
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from distributed.futures import Future, wait

__all__ = ["ClientExecutor"]


class ClientExecutor(cf.Executor):
    """Submit to a Client through the ``Executor`` protocol.

    ``submit`` returns a ``concurrent.futures.Future`` that follows the
    cluster's Future, so ``concurrent.futures.wait`` and ``as_completed``
    work on it; cancelling it cancels the task.  The result lives in the
    returned future: the key is released on the cluster once it is done.

    >>> with client.get_executor() as ex:        # doctest: +SKIP
    ...     list(ex.map(inc, range(3)))
    [1, 2, 3]
    """

    def __init__(self, client, **kwargs: Any):
        allowed = {"workers", "retries", "resources", "pure", "allow_other_workers", "priority"}
        unknown = set(kwargs) - allowed
        if unknown:
            raise TypeError(f"unsupported executor arguments: {sorted(unknown)}")
        self._client = client
        self._kwargs = {"pure": False, **kwargs}
        self._futures: set[Future] = set()  # cluster futures not finished yet
        self._lock = threading.Lock()
        self._shutdown = False

    def submit(self, fn: Callable, /, *args, **kwargs) -> cf.Future:
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            future = self._client.submit(fn, *args, **{**self._kwargs, **kwargs})
            self._futures.add(future)
        return self._wrap(future)

    def _wrap(self, future: Future) -> cf.Future:
        cf_future: cf.Future = cf.Future()
        client = self._client

        def on_cf_done(f: cf.Future) -> None:
            if f.cancelled() and not future.done():
                client.loop.add_callback(client._cancel, [future])

        cf_future.add_done_callback(on_cf_done)

        async def cascade() -> None:
            try:
                await future._state.wait()
                if cf_future.done():
                    return
                status = future.status
                if status == "finished":
                    try:
                        result = await future._result()
                    except BaseException as e:
                        _set(cf_future.set_exception, e)
                    else:
                        _set(cf_future.set_result, result)
                elif status == "error":
                    exc = future._state.exception
                    _set(cf_future.set_exception, exc.with_traceback(future._state.traceback))
                elif cf_future.cancel():
                    cf_future.set_running_or_notify_cancel()
            finally:
                with self._lock:
                    self._futures.discard(future)
                future.release()

        client.loop.add_callback(cascade)
        return cf_future

    def map(self, fn: Callable, *iterables: Iterable, timeout: float | None = None,
            chunksize: int = 1) -> Iterator:
        """Like ``concurrent.futures.Executor.map``: all tasks are submitted
        now; results come back in order, and ``timeout`` counts from this
        call."""
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            futures = self._client.map(fn, *iterables, **self._kwargs)
            self._futures.update(futures)
        end_time = None if timeout is None else time.monotonic() + timeout

        def results():
            try:
                for f in futures:
                    left = None if end_time is None else max(0.0, end_time - time.monotonic())
                    yield f.result(timeout=left)
            finally:
                with self._lock:
                    self._futures.difference_update(futures)
                for f in futures:
                    f.release()

        return results()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No more submissions; ``cancel_futures`` cancels what has not
        finished, ``wait`` waits for the rest."""
        with self._lock:
            self._shutdown = True
            futures = [f for f in self._futures if not f.done()]
        if not futures:
            return
        if self._client.asynchronous:  # on the event loop: nothing may block
            if cancel_futures:
                self._client.loop.add_callback(self._client._cancel, futures)
            return
        if cancel_futures:
            self._client.cancel(futures)
        elif wait:
            _wait(futures)


_wait = wait


def _set(setter, value) -> None:
    try:
        setter(value)
    except cf.InvalidStateError:  # cancelled by the user meanwhile
        pass
