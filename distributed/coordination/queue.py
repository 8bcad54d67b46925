"""A cluster-wide FIFO queue: the scheduler extension and the ``Queue`` users hold.

Any client, and any task through its worker's client, can ``put`` items into
the queue of a name and ``get`` them out, first in, first out.  Items are
any picklable objects; the Futures in them keep their data alive while they
are queued and until the client that took them holds them itself.

Theory of operation
-------------------
The scheduler (``QueueExtension``, ``scheduler.extensions["queues"]``)
keeps, per name, the pickled items (never unpickled there), the ``get``s
waiting for items and the ``put``s waiting for room (``maxsize``), each in
arrival order.  The keys of an item's Futures are held by the pseudo-client
``"queue-<name>"`` from ``put`` until the getter confirms, on its client's
stream and after its Futures' own messages, that it holds them (the same
handshake as ``Variable``).  A getter that gives up after the scheduler
answered it (its side timed out, was cancelled, lost the connection)
abandons its token, and its items go back to the front of the queue instead
of being lost; a getter whose client disconnects first loses them with its
client, as its Futures would have been.

``get(batch=n)`` waits until ``n`` items are there and takes them at once
(with ``timeout``, it takes nothing and raises ``TimeoutError`` if they do
not come in time; upstream refused that combination); ``batch=True`` takes
whatever is there now, maybe nothing.  Getters are served strictly in
order, so a large batch waiting at the head is not overtaken.

How a queue is freed (upstream counted every ``Queue`` object ever built,
unpickled copies included, and freed a queue only when as many ``close()``
calls came: in practice never, d/d#1911): here a queue's state exists only
while it holds something.  An unbounded queue that is empty, with nobody
waiting, has no entry at all; a bounded one keeps its ``maxsize`` (a few
bytes) until ``close()``.  ``close()`` drops the queue at once: its items
are discarded (their Futures released) and its waiters fail.

Thread rules: ``QueueExtension`` runs on the scheduler's loop.  ``Queue``
methods may be called from any thread; with an asynchronous client on its
own loop they return awaitables.
"""
from __future__ import annotations

import asyncio
import logging
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from distributed.coordination._shared import (
    ClientBound,
    KeyHolder,
    TokenMemory,
    future_keys,
    key_states,
    normalize_name,
    parse_timeout,
    wait_for_keys,
)
from distributed.exceptions import TimeoutError
from distributed.protocol import Serialize, Serialized

__all__ = ["Queue", "QueueExtension", "QueueClosedError"]

logger = logging.getLogger(__name__)


class QueueClosedError(RuntimeError):
    """The queue was closed while this call waited on it."""


# ----------------------------------------------------------------------
# Scheduler side
# ----------------------------------------------------------------------


@dataclass(slots=True)
class _Item:
    data: Any  # pickled, never unpickled here
    keys: tuple


@dataclass(slots=True, eq=False)
class _Waiter:
    """A ``get`` waiting for items or a ``put`` waiting for room."""

    token: str
    client: str | None
    future: asyncio.Future
    count: int = 1  # a get: how many items it takes at once
    item: _Item | None = None  # a put: what it brings
    timer: asyncio.TimerHandle | None = field(default=None)


class _QueueState:
    __slots__ = ("name", "maxsize", "items", "getters", "putters", "holder")

    def __init__(self, name: Any, maxsize: int, holder: KeyHolder):
        self.name = name
        self.maxsize = maxsize  # 0: unbounded
        self.items: deque[_Item] = deque()
        self.getters: deque[_Waiter] = deque()
        self.putters: deque[_Waiter] = deque()
        self.holder = holder

    def full(self) -> bool:
        return bool(self.maxsize) and len(self.items) >= self.maxsize

    def __repr__(self) -> str:
        return (f"<queue {self.name!r}: {len(self.items)} items, maxsize {self.maxsize}, "
                f"{len(self.getters)} getters, {len(self.putters)} putters>")


class QueueExtension:
    """The scheduler's side of ``Queue``.

    ``queues`` maps a name to its state (``.items``, ``.maxsize``,
    ``.getters``, ``.putters``, ``.holder.counts``: the keys held);
    ``in_flight`` maps each token whose items were handed out and not yet
    confirmed to ``(name, items, client)``.

    >>> len(scheduler.extensions["queues"].queues["q"].items)   # doctest: +SKIP
    3
    """

    def __init__(self, scheduler: Any):
        self.scheduler = scheduler
        self.queues: dict[Any, _QueueState] = {}
        self.in_flight: dict[str, tuple] = {}
        self._abandoned = TokenMemory()
        self._closed = False
        scheduler.handlers.update({
            "queue_create": self.create,
            "queue_put": self.put,
            "queue_get": self.get,
            "queue_qsize": self.qsize,
            "queue_close": self.close_queue,
        })
        scheduler.stream_handlers.update({
            "queue-future-release": self.confirm,
            "queue-abandon": self.abandon,
        })

    def __repr__(self) -> str:
        return f"<QueueExtension: {len(self.queues)} queues, {len(self.in_flight)} in flight>"

    def create(self, comm=None, name=None, maxsize=0, **kwargs) -> str:
        """Make sure ``name`` exists with ``maxsize`` (0: whatever it has)."""
        self._check_open()
        self._tidy(self._queue(normalize_name(name), maxsize))
        return "OK"

    async def put(self, comm=None, name=None, data=None, keys=(), maxsize=0, token=None, client=None,
                  timeout=None, **kwargs) -> dict:
        """Append an item, waiting for room while the queue is full:
        ``{"status": "OK"}`` or ``{"status": "timeout"}``."""
        self._check_open()
        name = normalize_name(name)
        timeout = parse_timeout(timeout, "Queue.put")
        keys = tuple(keys or ())
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        q = self._queue(name, maxsize)  # a bad maxsize fails before anything waits
        if keys:
            try:
                await wait_for_keys(self.scheduler, keys, timeout, f"Queue {name!r}.put")
            finally:
                self._tidy(q)
            self._check_open()
        q = self._queue(name, maxsize)
        if self._abandoned.pop(token):
            self._tidy(q)
            return {"status": "abandoned"}
        item = _Item(data, keys)
        if not q.full() and not q.putters:
            self._append(q, item)
            return {"status": "OK"}
        remaining = None if deadline is None else deadline - loop.time()
        if remaining is not None and remaining <= 0:
            self._tidy(q)
            return {"status": "timeout"}
        waiter = _Waiter(token, client, loop.create_future(), item=item)
        q.putters.append(waiter)
        if remaining is not None:
            waiter.timer = loop.call_later(remaining, self._answer, q, q.putters, waiter, {"status": "timeout"})
        return await waiter.future

    async def get(self, comm=None, name=None, token=None, client=None, timeout=None, batch=False,
                  **kwargs) -> dict:
        """Take items: ``{"status": "OK", "items": [data, ...], "keys",
        "token", "states"}`` or ``{"status": "timeout"}``.  ``batch``:
        False (one item), True (all there now) or n (n at once)."""
        self._check_open()
        name = normalize_name(name)
        if not isinstance(token, str):
            raise TypeError("queue_get needs a string 'token'")
        timeout = parse_timeout(timeout, "Queue.get")
        q = self._queue(name, 0)
        if batch is True:
            # All there now, without overtaking the getters already waiting.
            count = 0 if q.getters else len(q.items)
        elif batch is False or batch is None:
            count = 1
        else:
            count = int(batch)
            if count < 0:
                raise ValueError(f"Queue.get(batch=...) must not be negative, got {batch!r}")
            if q.maxsize and count > q.maxsize:
                self._tidy(q)
                raise ValueError(f"Queue {name!r}.get(batch={count}) can never be served: the queue holds "
                                 f"at most {q.maxsize} items")
        if self._abandoned.pop(token):
            self._tidy(q)
            return {"status": "abandoned"}
        if (not q.getters or batch is True) and len(q.items) >= count:
            return self._hand_out(q, token, client, count)
        if timeout is not None and timeout <= 0:
            self._tidy(q)
            return {"status": "timeout"}
        loop = asyncio.get_running_loop()
        waiter = _Waiter(token, client, loop.create_future(), count=count)
        q.getters.append(waiter)
        if timeout is not None:
            waiter.timer = loop.call_later(timeout, self._answer, q, q.getters, waiter, {"status": "timeout"})
        return await waiter.future

    def qsize(self, comm=None, name=None, **kwargs) -> int:
        q = self.queues.get(normalize_name(name))
        return 0 if q is None else len(q.items)

    def close_queue(self, comm=None, name=None, **kwargs) -> str:
        """Drop the queue: discard its items, fail its waiters."""
        name = normalize_name(name)
        q = self.queues.pop(name, None)
        if q is None:
            return "OK"
        error = QueueClosedError(f"Queue {name!r} was closed")
        for waiters in (q.getters, q.putters):
            for waiter in list(waiters):
                self._answer(q, waiters, waiter, error, tidy=False)
        for item in q.items:
            q.holder.release(item.keys)
        q.items.clear()
        if q.holder:
            # Items handed out and not yet confirmed keep their holds until
            # then: an empty, unbounded queue of the name keeps the holder.
            self.queues[name] = _QueueState(name, 0, q.holder)
        return "OK"

    def confirm(self, token=None, name=None, client=None, **kwargs) -> None:
        """The getter of ``token`` holds its own Futures now."""
        entry = self.in_flight.pop(token, None)
        if entry is None:
            return
        name, items, _ = entry
        q = self.queues.get(name)
        if q is not None:
            q.holder.release([k for item in items for k in item.keys])
            self._tidy(q)

    def abandon(self, token=None, name=None, client=None, **kwargs) -> None:
        """The caller of ``token`` gave up: put the items it was handed back
        at the front, or drop its waiting request, or refuse it later."""
        entry = self.in_flight.pop(token, None)
        if entry is not None:
            qname, items, _ = entry
            q = self.queues.get(qname)
            if q is not None:
                for item in reversed(items):
                    q.items.appendleft(item)  # its keys are still held for it
                self._serve(q)
            return
        q = self.queues.get(normalize_name(name))
        if q is not None:
            for waiters in (q.getters, q.putters):
                for waiter in waiters:
                    if waiter.token == token:
                        self._answer(q, waiters, waiter, {"status": "abandoned"})
                        return
        self._abandoned.add(token)

    def remove_client(self, client: str) -> None:
        """A client's stream ended: answer its waiters; the items handed to
        it and not confirmed go with it (as its Futures would have)."""
        gone = RuntimeError(f"the client {client} was disconnected from the scheduler while waiting on a Queue")
        for q in list(self.queues.values()):
            for waiters in (q.getters, q.putters):
                for waiter in [w for w in waiters if w.client == client]:
                    self._answer(q, waiters, waiter, gone)
        for token in [t for t, (_, _, c) in self.in_flight.items() if c == client]:
            self.confirm(token)

    def close(self) -> None:
        """Answer every waiting request: the scheduler is closing."""
        self._closed = True
        closing = RuntimeError("the scheduler closed while this request waited on a Queue")
        for q in list(self.queues.values()):
            for waiters in (q.getters, q.putters):
                for waiter in list(waiters):
                    self._answer(q, waiters, waiter, closing, tidy=False)

    # -- internals -------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the scheduler is closing; Queues cannot be used")

    def _queue(self, name: Any, maxsize: Any) -> _QueueState:
        maxsize = int(maxsize or 0)
        if maxsize < 0:
            raise ValueError(f"Queue maxsize must not be negative, got {maxsize}")
        q = self.queues.get(name)
        if q is None:
            q = self.queues[name] = _QueueState(name, maxsize, KeyHolder(self.scheduler, f"queue-{name}"))
        elif maxsize and maxsize != q.maxsize:
            if q.maxsize:
                raise ValueError(f"Queue {name!r} exists with maxsize={q.maxsize}, not {maxsize}")
            q.maxsize = maxsize  # made by a get or an unbounded put so far: it takes the bound
        return q

    def _tidy(self, q: _QueueState) -> None:
        """Forget a queue that holds nothing worth keeping."""
        if (not q.items and not q.getters and not q.putters and not q.maxsize and not q.holder
                and self.queues.get(q.name) is q):
            del self.queues[q.name]

    def _append(self, q: _QueueState, item: _Item) -> None:
        q.holder.hold(item.keys)
        q.items.append(item)
        self._serve(q)

    def _hand_out(self, q: _QueueState, token: str, client: str | None, count: int) -> dict:
        items = [q.items.popleft() for _ in range(count)]
        keys = tuple(k for item in items for k in item.keys)
        if keys and client is not None:
            self.in_flight[token] = (q.name, items, client)  # their holds stay until confirmed
        elif keys:
            q.holder.release(keys)
        self._admit_putters(q)
        self._tidy(q)
        return {"status": "OK", "items": [item.data for item in items], "keys": keys, "token": token,
                "states": key_states(self.scheduler, keys) if keys else {}}

    def _serve(self, q: _QueueState) -> None:
        """Answer the getters at the head that can be served now."""
        while q.getters and len(q.items) >= q.getters[0].count:
            waiter = q.getters.popleft()
            if waiter.timer is not None:
                waiter.timer.cancel()
            if waiter.future.done():
                continue
            waiter.future.set_result(self._hand_out(q, waiter.token, waiter.client, waiter.count))
        self._admit_putters(q)

    def _admit_putters(self, q: _QueueState) -> None:
        while q.putters and not q.full():
            waiter = q.putters.popleft()
            if waiter.timer is not None:
                waiter.timer.cancel()
            if waiter.future.done():
                continue
            q.holder.hold(waiter.item.keys)
            q.items.append(waiter.item)
            waiter.future.set_result({"status": "OK"})
            if q.getters and len(q.items) >= q.getters[0].count:
                self._serve(q)
                return

    def _answer(self, q: _QueueState, waiters: deque, waiter: _Waiter, answer: dict | BaseException,
                tidy: bool = True) -> None:
        if waiter.timer is not None:
            waiter.timer.cancel()
        try:
            waiters.remove(waiter)
        except ValueError:
            pass
        if not waiter.future.done():
            if isinstance(answer, BaseException):
                waiter.future.set_exception(answer)
            else:
                waiter.future.set_result(answer)
        if tidy:
            # A getter leaving the head may let the next one be served.
            self._serve(q)
            self._tidy(q)


# ----------------------------------------------------------------------
# User side
# ----------------------------------------------------------------------


class Queue(ClientBound):
    """A first-in, first-out queue shared by every client and task, by name.

    >>> q = Queue("jobs")                            # doctest: +SKIP
    >>> q.put(client.submit(inc, 1))                 # doctest: +SKIP
    >>> q.get().result()                             # doctest: +SKIP
    2
    >>> def consumer(q):                             # doctest: +SKIP
    ...     return q.get(timeout=10)

    ``put(value, timeout=None)`` appends any picklable value, waiting while
    the queue holds ``maxsize`` items (0: unbounded); ``get(timeout=None,
    batch=False)`` takes the oldest item, waiting for one; ``batch=True``
    takes all items there now (a list, maybe empty), ``batch=n`` waits
    until ``n`` are there and takes them at once.  Timeouts raise
    ``TimeoutError`` and leave the queue as it was.  ``qsize()`` counts the
    items; ``close()`` drops the queue and everything in it.

    Futures pass through: each Future taken out belongs to the taking client
    and already knows its status; its data stays alive while it is queued.

    The ``maxsize`` of a queue is set by the first object that names one; a
    different nonzero ``maxsize`` for the same name raises ``ValueError``.
    A Queue pickles by name and maxsize, so it can be passed into tasks.
    """

    _kind = "Queue"

    def __init__(self, name: Any = None, client: Any = None, maxsize: int = 0):
        if not isinstance(maxsize, int) or isinstance(maxsize, bool) or maxsize < 0:
            raise ValueError(f"Queue maxsize must be an integer >= 0, got {maxsize!r}")
        super().__init__(name, client)
        self.maxsize = maxsize

    def put(self, value: Any, timeout: Any = None, **kwargs):
        """Append ``value``; waits while the queue is full (``TimeoutError``
        after ``timeout``)."""
        _no_extra(kwargs, "put")
        timeout = parse_timeout(timeout, "Queue.put")
        return self._run(self._put, value, timeout)

    async def _put(self, value: Any, timeout: float | None = None) -> None:
        await self._after_pending()
        client = self._require_client()
        token = uuid.uuid4().hex
        keys = future_keys(value, client, f"Queue {self.name!r}.put")
        try:
            reply = await self._scheduler().queue_put(name=self._key, data=Serialize(value), keys=keys,
                                                      maxsize=self.maxsize, token=token, client=client.id,
                                                      timeout=timeout)
        except BaseException:
            self._send({"op": "queue-abandon", "name": self._key, "token": token})
            raise
        if reply.get("status") == "timeout":
            raise TimeoutError(f"Queue {self.name!r} stayed full for {timeout} s")
        if reply.get("status") != "OK":
            raise RuntimeError(f"Queue {self.name!r}.put: unexpected answer {reply.get('status')!r}")

    def get(self, timeout: Any = None, batch: bool | int = False, **kwargs):
        """The oldest item (``batch=False``), or a list of items
        (``batch=True``: all there now; ``batch=n``: n at once)."""
        _no_extra(kwargs, "get")
        timeout = parse_timeout(timeout, "Queue.get")
        if not isinstance(batch, bool) and (not isinstance(batch, int) or batch < 0):
            raise ValueError(f"Queue.get(batch=...) must be True, False or an integer >= 0, got {batch!r}")
        if self.maxsize and not isinstance(batch, bool) and batch > self.maxsize:
            raise ValueError(f"Queue {self.name!r}.get(batch={batch}) can never be served: maxsize is "
                             f"{self.maxsize}")
        return self._run(self._get, timeout, batch)

    async def _get(self, timeout: float | None = None, batch: bool | int = False) -> Any:
        await self._after_pending()
        items = await self._receive(
            lambda token, client_id: self._scheduler().queue_get(
                name=self._key, token=token, client=client_id, timeout=timeout, batch=batch),
            lambda reply: [item.deserialize() if isinstance(item, Serialized) else item
                           for item in reply.get("items", ())],
            "queue-abandon", "queue-future-release",
            f"Queue {self.name!r}: no item came within {timeout} s")
        return items if batch is not False else items[0]

    def qsize(self):
        """How many items are queued now."""
        return self._run(self._qsize)

    async def _qsize(self) -> int:
        await self._after_pending()
        return int(await self._scheduler().queue_qsize(name=self._key))

    def close(self):
        """Drop the queue: its items are discarded, its waiters fail with
        ``QueueClosedError``.  On an asynchronous client it starts at once
        and awaiting it is optional (upstream's ``close`` was
        fire-and-forget)."""
        return self._run_now(self._close)

    async def _close(self) -> None:
        await self._scheduler().queue_close(name=self._key)

    def __await__(self):
        """``await Queue(...)``: registers the queue (and its maxsize)."""
        async def start():
            client = self._require_client()
            if client.status != "running":
                await client
            await self._scheduler().queue_create(name=self._key, maxsize=self.maxsize)
            return self

        return start().__await__()

    def __reduce__(self):
        return Queue, (self.name, None, self.maxsize)

    def __repr__(self) -> str:
        return f"<Queue: {self.name!r}, maxsize={self.maxsize}>"


def _no_extra(kwargs: dict, method: str) -> None:
    if kwargs:
        raise TypeError(f"Queue.{method}() got unexpected keyword arguments {sorted(kwargs)}")
