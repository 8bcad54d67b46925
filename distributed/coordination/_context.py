"""What the lock-like primitives (Lock, MultiLock, Semaphore) share:
``with`` and ``async with`` (acquire on entry, release on exit, on blocking
and asynchronous clients alike), and for those that may also run on a bare
scheduler rpc without a client, how a call is run and where it goes."""
from __future__ import annotations

import asyncio

__all__ = ["AcquireReleaseContext", "ClientOrRpc"]


def _awaitable(result) -> bool:
    return asyncio.iscoroutine(result) or isinstance(result, asyncio.Future)


class AcquireReleaseContext:
    """Mixin for a class whose ``acquire()``/``release()`` block on a
    blocking client and return awaitables on an asynchronous one.

    >>> class Toy(AcquireReleaseContext):
    ...     name = "toy"
    ...     def acquire(self): print("acquire")
    ...     def release(self): print("release")
    >>> with Toy():
    ...     pass
    acquire
    release
    """

    def __enter__(self):
        result = self.acquire()
        if asyncio.iscoroutine(result):
            result.close()
            what = getattr(self, "name", None) or getattr(self, "names", None)
            raise RuntimeError(f"{type(self).__name__} {what!r} uses an asynchronous client here: "
                               "use 'async with'")
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    async def __aenter__(self):
        result = self.acquire()
        if _awaitable(result):
            await result
        return self

    async def __aexit__(self, *exc) -> None:
        result = self.release()
        if _awaitable(result):
            await result


class ClientOrRpc:
    """Mixin for a primitive that talks to the scheduler through its client,
    or through a bare ``scheduler_rpc`` on ``loop`` when it has none.  The
    class provides ``client``, ``name``, ``_client``, ``_scheduler_rpc`` and
    ``_loop``."""

    def _run(self, func, *args):
        """Run coroutine function ``func``: an awaitable on an asynchronous
        client's own loop, else block until it finishes."""
        client = self.client
        if client is not None:
            return client.sync(func, *args)
        from distributed.utils import in_thread_of, sync

        if in_thread_of(self._loop):
            return func(*args)
        return sync(self._loop, func, *args)

    def _scheduler(self):
        if self._scheduler_rpc is not None:
            return self._scheduler_rpc
        scheduler = self._client.scheduler
        if scheduler is None:
            raise RuntimeError(f"{type(self).__name__} {self.name!r}: the client is not connected to a scheduler")
        return scheduler
