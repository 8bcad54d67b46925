"""Futures: handles to remote results, and ways to wait on many of them.

A ``Future`` names a key on the cluster.  All Futures of one key in a client
share one ``FutureState``, which the client updates when the scheduler
reports on the key.  Creating a Future takes a reference on its key; when
the last Future of a key is released or garbage collected the client tells
the scheduler, which forgets the key if nothing else needs it.

Thread rules: ``FutureState`` is written on the client's event loop only;
its status may be read from any thread.  ``Future`` methods may be called
from any thread (blocking clients) or awaited on the loop (asynchronous).
"""
from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Iterable
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED
from typing import Any

from distributed import context
from distributed.exceptions import CancelledError, TimeoutError
from distributed.utils import in_thread_of

try:  # With dask installed, a Future is dask's reference to its key.
    from dask._task_spec import TaskRef as _FutureBase
except ImportError:  # the core works without dask
    _FutureBase = object

__all__ = [
    "Future",
    "FutureState",
    "wait",
    "as_completed",
    "fire_and_forget",
    "futures_of",
    "FIRST_COMPLETED",
    "ALL_COMPLETED",
]


class FutureState:
    """Status of one key as the client knows it."""

    __slots__ = ("key", "status", "type", "workers", "exception", "traceback", "_event", "_loop")

    def __init__(self, key):
        self.key = key
        self.status = "pending"
        self.type: str | None = None
        self.workers: tuple = ()
        self.exception: BaseException | None = None
        self.traceback = None
        self._event: asyncio.Event | None = None

    def _get_event(self) -> asyncio.Event:
        if self._event is None:
            self._event = asyncio.Event()
            if self.status != "pending" and self.status != "lost":
                self._event.set()
        return self._event

    def finish(self, type=None, workers=()) -> None:
        self.status = "finished"
        self.type = type
        self.workers = tuple(workers or ())
        if self._event is not None:
            self._event.set()

    def set_error(self, exception, traceback) -> None:
        self.status = "error"
        self.exception = exception
        self.traceback = traceback
        if self._event is not None:
            self._event.set()

    def cancel(self, reason: str = "") -> None:
        self.status = "cancelled"
        self.exception = CancelledError(f"{self.key!r} was cancelled" + (f": {reason}" if reason else ""))
        if self._event is not None:
            self._event.set()

    def set_lost(self, exception, traceback) -> None:
        """The data is gone for good (it was scattered, not computed)."""
        self.status = "lost"
        self.workers = ()
        self.exception = exception
        self.traceback = traceback
        if self._event is not None:
            self._event.set()

    def cancelled_error(self) -> CancelledError:
        """A fresh CancelledError saying why (each raise gets its own)."""
        exc = self.exception
        return CancelledError(*exc.args) if isinstance(exc, CancelledError) else CancelledError(repr(self.key))

    @property
    def failed(self) -> bool:
        """An error to raise: the task failed, or its data is lost for good."""
        return self.status == "error" or (self.status == "lost" and self.exception is not None)

    def lose(self) -> None:
        """The data is gone but will be computed again."""
        self.status = "lost"
        self.workers = ()
        self.exception = None
        if self._event is not None:
            self._event.clear()

    def reset(self) -> None:
        self.status = "pending"
        self.workers = ()
        self.exception = None
        self.traceback = None
        if self._event is not None:
            self._event.clear()

    def done(self) -> bool:
        return self.status in ("finished", "error", "cancelled") or self.failed

    async def wait(self, timeout: float | None = None) -> None:
        if self.done():
            return
        event = self._get_event()
        if timeout is None:
            await event.wait()
        else:
            await asyncio.wait_for(event.wait(), timeout)

    def __repr__(self) -> str:
        return f"<FutureState {self.key!r}: {self.status}>"


class Future(_FutureBase):
    """A remote result: the value of ``key`` on the cluster.

    >>> future = client.submit(inc, 1)      # doctest: +SKIP
    >>> future.result()                     # doctest: +SKIP
    2
    >>> await future                        # doctest: +SKIP
    2
    """

    _cb_executor = None
    _cb_lock = threading.Lock()
    #: dask recognises this as a reference to ``key`` inside its graphs.
    __dask_future__ = True

    def __init__(self, key, client=None, inform: bool = True, state: FutureState | None = None):
        self.key = key
        self._released = False
        self.client = client if client is not None else context.client_for_future()
        self._state = self.client._inc_ref(key, state)
        if inform:
            self.client._send_to_scheduler({"op": "client-desires-keys", "keys": [key]})

    # -- status --------------------------------------------------------

    @property
    def status(self) -> str:
        return self._state.status

    def done(self) -> bool:
        """Whether the computation finished (with a result, an error, or cancelled)."""
        return self._state.done()

    def cancelled(self) -> bool:
        return self._state.status == "cancelled"

    @property
    def executor(self):
        return self.client

    @property
    def type(self):
        return self._state.type

    # -- results -------------------------------------------------------

    def result(self, timeout: float | None = None) -> Any:
        """The value, waiting up to ``timeout`` seconds; a failed task
        re-raises its exception with the remote traceback."""
        return self.client.sync(self._result, callback_timeout=timeout)

    async def _result(self, raiseit: bool = True) -> Any:
        await self._state.wait()
        status = self._state.status
        if self._state.failed:
            exc = self._state.exception
            if raiseit:
                raise exc.with_traceback(self._state.traceback)
            return exc
        if status == "cancelled":
            raise self._state.cancelled_error()
        return await self.client._gather_one(self)

    def exception(self, timeout: float | None = None):
        """The exception of a failed task (None if it succeeded)."""
        return self.client.sync(self._exception, callback_timeout=timeout)

    async def _exception(self):
        await self._state.wait()
        if self._state.failed:
            return self._state.exception
        if self._state.status == "cancelled":
            raise self._state.cancelled_error()
        return None

    def traceback(self, timeout: float | None = None):
        """The remote traceback object of a failed task (None otherwise).

        >>> import traceback                            # doctest: +SKIP
        >>> traceback.format_tb(future.traceback())     # doctest: +SKIP
        """
        return self.client.sync(self._traceback, callback_timeout=timeout)

    async def _traceback(self):
        await self._state.wait()
        if self._state.failed:
            return self._state.traceback
        return None

    def __await__(self):
        return self._result().__await__()

    # -- control -------------------------------------------------------

    def cancel(self, force: bool = False):
        """Cancel the computation.

        Blocking clients wait for the scheduler and return True.  On the
        event loop the cancel starts at once and an awaitable is returned
        (awaiting it is optional).
        """
        if self.client.asynchronous:
            return asyncio.ensure_future(self.client._cancel([self], force=force))
        self.client.cancel([self], force=force)
        return True

    def retry(self):
        """Run a failed task (and its failed dependencies) again."""
        return self.client.retry([self])

    def add_done_callback(self, fn) -> None:
        """Call ``fn(future)`` once the future is done, in a separate thread
        (so ``fn`` may block or call ``future.result()``)."""
        client = self.client

        async def wait_then_call():
            try:
                await self._state.wait()
            except Exception:
                return
            executor = Future._callback_executor()
            executor.submit(_run_callback, fn, self)

        client.loop.add_callback(wait_then_call)

    @classmethod
    def _callback_executor(cls):
        with cls._cb_lock:
            if cls._cb_executor is None:
                from concurrent.futures import ThreadPoolExecutor

                cls._cb_executor = ThreadPoolExecutor(1, thread_name_prefix="Dask-Callback-Thread")
            return cls._cb_executor

    def release(self) -> None:
        """Drop this Future's reference to its key (idempotent)."""
        if not self._released:
            self._released = True
            try:
                self.client._dec_ref(self.key)
            except Exception:  # the client may be gone at interpreter exit
                pass

    def __del__(self):
        try:
            self.release()
        except Exception:
            pass

    def __reduce__(self):
        return Future, (self.key,)

    def __dask_tokenize__(self):
        return ("Future", self.key)

    def __repr__(self) -> str:
        if self.type and self.status == "finished":
            return f"<Future: {self.status}, type: {self.type}, key: {self.key}>"
        return f"<Future: {self.status}, key: {self.key}>"

    def _repr_html_(self) -> str:
        color = {"finished": "green", "error": "red", "cancelled": "gray", "lost": "orange"}.get(
            self.status, "black")
        typ = f", <b>type:</b> {_escape(self.type)}" if self.type and self.status == "finished" else ""
        return (f"<b>Future: {_escape(self.key)}</b> <font color='gray'><b>status:</b></font> "
                f"<font color='{color}'>{self.status}</font>{typ}")

    def __hash__(self) -> int:
        return id(self)

    def __eq__(self, other) -> bool:  # identity, like any Python object
        return self is other


def _escape(x) -> str:
    import html

    return html.escape(str(x))


def _run_callback(fn, future) -> None:
    try:
        fn(future)
    except BaseException:
        import logging

        logging.getLogger(__name__).exception("Error in done callback of %r", future)


# ----------------------------------------------------------------------
# wait / as_completed / fire_and_forget / futures_of
# ----------------------------------------------------------------------


def futures_of(obj) -> list[Future]:
    """The Futures inside ``obj`` (nested lists, tuples, sets, dicts, or a
    dask collection backed by futures), in order, without duplicates.

    >>> futures_of([f1, {"a": f2}])    # doctest: +SKIP
    [f1, f2]
    """
    out: list[Future] = []
    seen: set[int] = set()
    stack = [obj]
    while stack:
        x = stack.pop()
        if isinstance(x, Future):
            if id(x) not in seen:
                seen.add(id(x))
                out.append(x)
        elif isinstance(x, (list, tuple, set, frozenset)):
            stack.extend(reversed(list(x)))
        elif isinstance(x, dict):
            stack.extend(reversed(list(x.values())))
        elif hasattr(x, "__dask_graph__"):
            try:
                graph = x.__dask_graph__()
            except Exception:
                graph = None
            if graph:
                stack.extend(reversed([v for v in graph.values() if isinstance(v, (Future, list, tuple, dict))]))
    return out


def wait(fs, timeout: float | None = None, return_when: str = ALL_COMPLETED):
    """Wait until the futures are done; returns ``(done, not_done)`` sets.

    >>> done, not_done = wait([f1, f2], timeout=10)     # doctest: +SKIP
    """
    if isinstance(fs, Future):
        fs = [fs]
    futures = futures_of(fs)
    if not futures:
        return _DoneAndNotDone(set(), set())
    client = futures[0].client
    return client.sync(_wait, futures, timeout=timeout, return_when=return_when)


class _DoneAndNotDone(tuple):
    def __new__(cls, done, not_done):
        obj = super().__new__(cls, (done, not_done))
        return obj

    @property
    def done(self):
        return self[0]

    @property
    def not_done(self):
        return self[1]


async def _wait(futures, timeout: float | None = None, return_when: str = ALL_COMPLETED):
    if return_when not in (ALL_COMPLETED, FIRST_COMPLETED):
        raise ValueError(f"return_when must be {ALL_COMPLETED!r} or {FIRST_COMPLETED!r}, not {return_when!r}")
    waits = [asyncio.ensure_future(f._state.wait()) for f in futures if not f.done()]
    try:
        if waits:
            when = asyncio.ALL_COMPLETED if return_when == ALL_COMPLETED else asyncio.FIRST_COMPLETED
            done, pending = await asyncio.wait(waits, timeout=timeout, return_when=when)
            if pending and return_when == ALL_COMPLETED and timeout is not None:
                raise TimeoutError(f"{len(pending)} of {len(futures)} futures not done after {timeout} s")
    finally:
        for w in waits:
            w.cancel()
    done = {f for f in futures if f.done()}
    return _DoneAndNotDone(done, {f for f in futures if f not in done})


def fire_and_forget(obj) -> None:
    """Run these futures to completion even if no Future refers to them.

    >>> fire_and_forget(client.submit(write_to_database, data))  # doctest: +SKIP
    """
    futures = futures_of(obj)
    for f in futures:
        f.client._send_to_scheduler({"op": "fire-and-forget", "keys": [f.key]})


class as_completed:
    """Iterate over futures in the order they finish.

    >>> for future in as_completed(futures):          # doctest: +SKIP
    ...     print(future.result())
    >>> async for future in as_completed(futures):    # doctest: +SKIP
    ...     ...
    >>> for future, result in as_completed(futures, with_results=True):  # doctest: +SKIP
    ...     ...

    More futures may be added while iterating (``add``, ``update``).
    """

    def __init__(self, futures: Iterable[Future] | None = None, loop=None,
                 with_results: bool = False, raise_errors: bool = True):
        self.with_results = with_results
        self.raise_errors = raise_errors
        self.futures: dict[Future, int] = {}
        self.queue: deque = deque()
        self.lock = threading.Lock()
        self.condition = threading.Condition(self.lock)
        self._async_event: asyncio.Event | None = None
        self._client = None
        if futures:
            self.update(futures)

    def __len__(self) -> int:
        return self.count()

    def count(self) -> int:
        """Futures still to be returned, waiting or finished."""
        with self.lock:
            return len(self.futures) + len(self.queue)

    def is_empty(self) -> bool:
        return self.count() == 0

    def update(self, futures: Iterable[Future]) -> None:
        """Add many futures."""
        for f in futures:
            self.add(f)

    def add(self, future: Future) -> None:
        """Add one future to watch (a Future, or an ActorFuture: it has the
        same ``client`` and ``_state``)."""
        if not isinstance(future, Future) and not (hasattr(future, "_state") and hasattr(future, "client")):
            raise TypeError(f"as_completed takes Futures, not {type(future).__name__}")
        with self.lock:
            n = self.futures.get(future, 0)
            self.futures[future] = n + 1
        self._client = future.client
        if n:  # already tracked: the tracker yields it once per add
            return
        loop = future.client.loop
        if in_thread_of(loop):
            asyncio.ensure_future(self._track(future))
        else:
            loop.add_callback(self._track, future)

    async def _track(self, future: Future) -> None:
        await future._state.wait()
        result = None
        if self.with_results:
            try:
                result = await future._result(raiseit=False)
            except BaseException as e:
                result = e
        with self.condition:
            n = self.futures.pop(future, 1)
            for _ in range(n):
                self.queue.append((future, result))
            self.condition.notify_all()
        if self._async_event is not None:
            self._async_event.set()

    def _get_and_raise(self):
        future, result = self.queue.popleft()
        if self.with_results:
            if self.raise_errors and future._state.failed:
                raise future._state.exception
            return future, result
        return future

    def __iter__(self):
        return self

    def __next__(self):
        with self.condition:
            while not self.queue:
                if not self.futures:
                    raise StopIteration
                self.condition.wait(0.1)
            return self._get_and_raise()

    def __aiter__(self):
        return self

    async def __anext__(self):
        while True:
            with self.lock:
                if self.queue:
                    return self._get_and_raise()
                if not self.futures:
                    raise StopAsyncIteration
            if self._async_event is None:
                self._async_event = asyncio.Event()
            self._async_event.clear()
            with self.lock:
                if self.queue:
                    continue
            await self._async_event.wait()

    def next_batch(self, block: bool = True) -> list:
        """All futures finished so far (waiting for at least one if ``block``)."""
        with self.condition:
            if block:
                while not self.queue and self.futures:
                    self.condition.wait(0.1)
            out = []
            while self.queue:
                out.append(self._get_and_raise())
            return out

    def batches(self):
        """Iterate over lists of futures finished at about the same time."""
        while True:
            try:
                batch = self.next_batch(block=True)
            except StopIteration:
                return
            if not batch:
                if self.is_empty():
                    return
                continue
            yield batch

    def clear(self) -> None:
        with self.lock:
            self.futures.clear()
            self.queue.clear()
