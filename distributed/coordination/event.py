"""A cluster-wide event flag: the scheduler extension and the ``Event`` users hold.

Like ``threading.Event`` across a cluster: ``set()`` wakes everyone waiting
in ``wait()``, ``clear()`` resets the flag, ``is_set()`` reads it.  Any client,
and any task through its worker's client, can use the event of a name.

Theory of operation
-------------------
The scheduler (``EventExtension``, ``scheduler.extensions["events"]``) keeps
the names that are set and the ``wait`` requests of each name.  A ``wait``
is one request held open by the scheduler until the event is set (True),
its timeout passes (False), its client disconnects or the scheduler closes
(an error).  A name that is clear and waited on by nobody has no entry; a
set name is one entry until cleared (the flag *is* the state; upstream kept
an ``asyncio.Event`` and a counter for it).

Thread rules: ``EventExtension`` runs on the scheduler's loop.  ``Event``
methods may be called from any thread; with an asynchronous client on its
own loop they return awaitables.
"""
from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

from distributed.coordination._shared import ClientBound, TokenMemory, normalize_name, parse_timeout

__all__ = ["Event", "EventExtension"]

logger = logging.getLogger(__name__)


@dataclass(slots=True, eq=False)
class _Waiter:
    token: str
    client: str | None
    future: asyncio.Future
    timer: asyncio.TimerHandle | None = field(default=None)


class EventExtension:
    """The scheduler's side of ``Event``.

    ``set_names`` holds the names that are set; ``waiters`` maps a name to
    its waiting requests.

    >>> "x" in scheduler.extensions["events"].set_names     # doctest: +SKIP
    True
    """

    def __init__(self, scheduler: Any):
        self.scheduler = scheduler
        self.set_names: set = set()
        self.waiters: dict[Any, list[_Waiter]] = {}
        self._abandoned = TokenMemory()
        self._closed = False
        scheduler.handlers.update({
            "event_wait": self.event_wait,
            "event_set": self.event_set,
            "event_clear": self.event_clear,
            "event_is_set": self.event_is_set,
        })
        scheduler.stream_handlers["event-abandon"] = self.abandon

    def __repr__(self) -> str:
        return f"<EventExtension: {len(self.set_names)} set, {sum(map(len, self.waiters.values()))} waiting>"

    async def event_wait(self, comm=None, name=None, token=None, client=None, timeout=None, **kwargs) -> bool:
        """True once ``name`` is set; False after ``timeout`` seconds."""
        if self._closed:
            raise RuntimeError("the scheduler is closing; Events cannot be waited on")
        name = normalize_name(name)
        if name in self.set_names:
            return True
        if token is not None and self._abandoned.pop(token):
            return False
        timeout = parse_timeout(timeout, "Event.wait")
        if timeout is not None and timeout <= 0:
            return False
        loop = asyncio.get_running_loop()
        waiter = _Waiter(token, client, loop.create_future())
        self.waiters.setdefault(name, []).append(waiter)
        if timeout is not None:
            waiter.timer = loop.call_later(timeout, self._answer, name, waiter, False)
        return await waiter.future

    def event_set(self, comm=None, name=None, **kwargs) -> str:
        """Set ``name``: every waiter gets True, later waits return at once."""
        name = normalize_name(name)
        self.set_names.add(name)
        for waiter in list(self.waiters.get(name, ())):
            self._answer(name, waiter, True)
        return "OK"

    def event_clear(self, comm=None, name=None, **kwargs) -> str:
        self.set_names.discard(normalize_name(name))
        return "OK"

    def event_is_set(self, comm=None, name=None, **kwargs) -> bool:
        return normalize_name(name) in self.set_names

    def abandon(self, token=None, name=None, client=None, **kwargs) -> None:
        """The waiter of ``token`` gave up: drop it, or refuse it later."""
        name = normalize_name(name)
        for waiter in self.waiters.get(name, ()):
            if waiter.token == token:
                self._answer(name, waiter, False)
                return
        if token is not None:
            self._abandoned.add(token)

    def remove_client(self, client: str) -> None:
        gone = RuntimeError(f"the client {client} was disconnected from the scheduler while waiting for an Event")
        for name, waiters in list(self.waiters.items()):
            for waiter in [w for w in waiters if w.client == client]:
                self._answer(name, waiter, gone)

    def close(self) -> None:
        self._closed = True
        closing = RuntimeError("the scheduler closed while this request waited for an Event")
        for name, waiters in list(self.waiters.items()):
            for waiter in list(waiters):
                self._answer(name, waiter, closing)

    def _answer(self, name: Any, waiter: _Waiter, answer: bool | BaseException) -> None:
        if waiter.timer is not None:
            waiter.timer.cancel()
        waiters = self.waiters.get(name)
        if waiters is not None:
            if waiter in waiters:
                waiters.remove(waiter)
            if not waiters:
                del self.waiters[name]
        if not waiter.future.done():
            if isinstance(answer, BaseException):
                waiter.future.set_exception(answer)
            else:
                waiter.future.set_result(answer)


class Event(ClientBound):
    """An event flag shared by every client and task of a cluster, by name.

    >>> ready = Event("ready")                  # doctest: +SKIP
    >>> def worker_task():                      # doctest: +SKIP
    ...     Event("ready").wait(timeout=30)     # True once someone set it
    >>> ready.set()                             # doctest: +SKIP

    ``wait(timeout=None) -> bool`` returns True once the event is set, False
    when ``timeout`` passes first (``threading.Event`` semantics, no
    exception); ``set()``, ``clear()`` and ``is_set()`` act on the flag in
    the scheduler, so it survives the client that set it.  A wait without a
    timeout ends with an error if its client disconnects or the scheduler
    closes.
    """

    _kind = "Event"

    def wait(self, timeout: Any = None):
        """True once the event is set; False if ``timeout`` passed first."""
        timeout = parse_timeout(timeout, "Event.wait")
        return self._run(self._wait, timeout)

    async def _wait(self, timeout: float | None = None) -> bool:
        client = self._require_client()
        token = uuid.uuid4().hex
        try:
            return bool(await self._scheduler().event_wait(name=self._key, token=token, client=client.id,
                                                           timeout=timeout))
        except BaseException:
            self._send({"op": "event-abandon", "name": self._key, "token": token})
            raise

    def set(self):
        """Set the event: wake every waiter."""
        return self._run(self._set)

    async def _set(self) -> None:
        await self._scheduler().event_set(name=self._key)

    def clear(self):
        """Clear the event: later waits wait again."""
        return self._run(self._clear)

    async def _clear(self) -> None:
        await self._scheduler().event_clear(name=self._key)

    def is_set(self):
        """Whether the event is set now."""
        return self._run(self._is_set)

    async def _is_set(self) -> bool:
        return bool(await self._scheduler().event_is_set(name=self._key))

    def __repr__(self) -> str:
        return f"<Event: {self.name!r}>"
