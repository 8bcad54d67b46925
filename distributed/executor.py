"""``client.get_executor()``: the standard ``concurrent.futures`` interface."""
from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from distributed.futures import as_completed, wait

__all__ = ["ClientExecutor"]


class ClientExecutor(concurrent.futures.Executor):
    """Submit to a Client through the ``Executor`` protocol.

    The Futures it returns are this library's Futures, which offer the same
    methods as ``concurrent.futures.Future``.

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
        self._futures: set = set()
        self._lock = threading.Lock()
        self._shutdown = False

    def submit(self, fn: Callable, /, *args, **kwargs):
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")
        future = self._client.submit(fn, *args, **self._kwargs, **kwargs)
        with self._lock:
            self._futures.add(future)
        future.add_done_callback(self._forget)
        return future

    def _forget(self, future) -> None:
        with self._lock:
            self._futures.discard(future)

    def map(self, fn: Callable, *iterables: Iterable, timeout: float | None = None,
            chunksize: int = 1) -> Iterator:
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")
        futures = self._client.map(fn, *iterables, **self._kwargs)
        with self._lock:
            self._futures.update(futures)
        for f in futures:
            f.add_done_callback(self._forget)

        def results():
            try:
                for f in futures:
                    yield f.result(timeout=timeout)
            finally:
                for f in futures:
                    f.release()

        return results()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._shutdown = True
        with self._lock:
            futures = list(self._futures)
        if cancel_futures:
            self._client.cancel(futures)
        elif wait and futures:
            globals()["wait"](futures)


# Re-exported for people who import them from here.
_ = as_completed
