"""``with`` and ``async with`` for the lock-like primitives (Lock,
MultiLock, Semaphore): acquire on entry, release on exit, on blocking and
asynchronous clients alike."""
from __future__ import annotations

import asyncio

__all__ = ["AcquireReleaseContext"]


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
