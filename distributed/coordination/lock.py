"""A cluster-wide lock: the scheduler extension and the ``Lock`` users hold.

Any client, and any task through its worker's client, can hold the lock of
a name; one holder at a time, the others wait in the order they asked.
The state lives in the scheduler (``LockExtension``, loaded through the
extension registry as ``scheduler.extensions["locks"]``), so a lock does not
depend on the client that created it, and a ``Lock`` pickles by name: the
copy a task unpickles finds its client lazily (the worker's client inside a
task, the default client elsewhere).

Theory of operation
-------------------
Each ``acquire`` sends the scheduler a fresh *token*; the scheduler grants
the lock to one token at a time and remembers which client asked for it.
``release`` names the token it holds: releasing a lock you do not hold is an
error.  A holder goes away with its client: when a client's stream to the
scheduler ends (the client closed, its process or its worker died), every
lock it holds is released and its waiters are answered with an error.  That
is the lease: it lasts exactly as long as the holder is connected, so a dead
holder never blocks the others forever (the old upstream Lock deadlocked,
d/d#2362) and a live holder that is merely slow (a long task holding the
GIL) is never overbooked by a lease timing out (upstream's Semaphore-based
Lock, d/d#4830).

The guarantee, precisely: a lock held by a task is held by its worker's
client, which dies with the worker, so a worker killed while a task holds
the lock releases it as soon as the operating system closes the worker's
sockets: sooner than any lease timeout (the issue's "released after the
lease timeout" is met).  Not covered: a host that vanishes without closing
its connections (power loss, a partition) keeps the lock until the
scheduler's connection to it breaks; and a lock taken through a bare
``scheduler_rpc`` is never freed automatically.  ``Semaphore``
(``semaphore.py``) adds refreshes and the worker's removal to the same
rule; ``docs/locks.rst`` compares them.

An ``acquire`` that gives up on its side (timeout of the call, cancellation,
a broken connection) tells the scheduler to *abandon* its token over the
client's stream.  The abandon message and the request travel on different
connections and may arrive in either order; a token abandoned before its
request arrived is remembered, so the late request is refused instead of
granting a lock nobody would release.

Thread rules: ``LockExtension`` runs on the scheduler's loop.  ``Lock``
methods may be called from any thread; with an asynchronous client on its
own loop they return awaitables (``await lock.acquire()``).
"""
from __future__ import annotations

import asyncio
import logging
import uuid
from collections import OrderedDict, defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

from distributed import config
from distributed.coordination._context import AcquireReleaseContext, ClientOrRpc

__all__ = ["Lock", "LockExtension", "LockNotHeldError", "LockArgumentError"]

logger = logging.getLogger(__name__)

#: Tokens abandoned before their request arrived, kept at most this many.
_ABANDONED_MEMORY = 10_000


class LockNotHeldError(ValueError, RuntimeError):
    """``release()`` of a lock this ``Lock`` object does not hold.

    A ``ValueError`` (what dask.distributed raised) and a ``RuntimeError``
    (what ``threading.Lock`` raises), so code written for either catches it.
    """


class LockArgumentError(ValueError, TypeError):
    """Arguments to ``acquire`` that contradict each other.

    Both a ``ValueError`` (current dask.distributed) and a ``TypeError``
    (older releases), so either habit catches it.
    """


def _normalize_name(name: Any) -> Any:
    """The hashable form of a lock name: lists become tuples (names travel
    as msgpack, which turns tuples into lists and back).  Anything msgpack
    cannot carry or that cannot be hashed raises ``TypeError``.

    >>> _normalize_name(["a", 1])
    ('a', 1)
    """
    if isinstance(name, (list, tuple)):
        return tuple(_normalize_name(part) for part in name)
    if name is None or isinstance(name, (str, bytes, int, float)):
        return name
    raise TypeError(f"a lock name must be a string, bytes, a number or a tuple/list of those, "
                    f"not {type(name).__name__} ({name!r})")


# ----------------------------------------------------------------------
# Scheduler side
# ----------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class _Request:
    """One ``acquire`` waiting for, or holding, a lock."""

    id: str  # the Lock object that asked
    token: str  # this acquire
    client: str | None  # whose stream it lives with (None: a bare rpc)
    future: asyncio.Future | None = None  # answered True, False or an error
    timer: asyncio.TimerHandle | None = field(default=None)


class LockExtension:
    """The scheduler's side of ``Lock``: who holds each name and who waits.

    ``ids`` maps each held name to the id of the ``Lock`` object holding it;
    ``events`` maps a name to its waiting requests, first come first served
    (both keep no entry for a free, unwaited name).

    >>> scheduler.extensions["locks"].ids            # doctest: +SKIP
    {'x': '5f0c...'}
    """

    def __init__(self, scheduler: Any):
        self.scheduler = scheduler
        self.ids: dict[Any, str] = {}
        self.events: defaultdict[Any, deque[_Request]] = defaultdict(deque)
        self._holders: dict[Any, _Request] = {}
        self._abandoned: OrderedDict[str, None] = OrderedDict()
        self._closed = False
        scheduler.handlers.update({
            "lock_acquire": self.acquire,
            "lock_release": self.release,
            "lock_abandon": self.abandon,
        })
        scheduler.stream_handlers["lock-abandon"] = self.abandon

    def __repr__(self) -> str:
        waiting = sum(len(q) for q in self.events.values())
        return f"<LockExtension: {len(self.ids)} held, {waiting} waiting>"

    async def acquire(self, comm=None, name=None, id=None, token=None, client=None, timeout=None) -> bool:
        """Grant ``name`` to ``token`` now, or when it is its turn; False
        after ``timeout`` seconds (``0``: only if free now, ``None``: wait)."""
        if self._closed:
            raise RuntimeError("the scheduler is closing; no lock can be acquired")
        if not isinstance(token, str) or not isinstance(id, str):
            raise TypeError("lock_acquire needs string 'id' and 'token' fields")
        name = _normalize_name(name)
        if timeout is not None:
            timeout = float(timeout)
        if token in self._abandoned:
            del self._abandoned[token]
            return False  # its requester gave up before the request arrived
        request = _Request(id, token, client)
        if name not in self._holders:
            self._grant(name, request)
            return True
        if timeout is not None and timeout <= 0:
            return False
        loop = asyncio.get_running_loop()
        request.future = loop.create_future()
        self.events[name].append(request)
        if timeout is not None:
            request.timer = loop.call_later(timeout, self._give_up, name, request)
        return await request.future

    def release(self, comm=None, name=None, id=None, token=None, **kwargs) -> bool:
        """Let go of ``name`` if ``token`` holds it; False (and no change) if
        it does not."""
        name = _normalize_name(name)
        holder = self._holders.get(name)
        if holder is None or holder.token != token:
            return False
        self._free(name)
        return True

    def abandon(self, comm=None, name=None, token=None, client=None, **kwargs) -> None:
        """The requester of ``token`` gave up: release what it holds, drop
        its waiting request, or refuse the request when it arrives."""
        name = _normalize_name(name)
        holder = self._holders.get(name)
        if holder is not None and holder.token == token:
            self._free(name)
            return
        for request in self.events.get(name, ()):
            if request.token == token:
                self._answer(name, request, False)
                return
        self._abandoned[token] = None
        while len(self._abandoned) > _ABANDONED_MEMORY:
            self._abandoned.popitem(last=False)

    def remove_client(self, client: str) -> None:
        """A client's stream ended: fail its waiters, free its locks (in that
        order, so a lock it frees never goes to another of its requests)."""
        gone = RuntimeError(f"the client {client} was disconnected from the scheduler while waiting for a lock")
        for name, queue in list(self.events.items()):
            for request in [r for r in queue if r.client == client]:
                self._answer(name, request, gone)
        for name, holder in list(self._holders.items()):
            if holder.client == client:
                logger.info("lock %r released: its holder's client %s disconnected", name, client)
                self._free(name)

    def close(self) -> None:
        """Answer every waiting request: the scheduler is closing."""
        self._closed = True
        closing = RuntimeError("the scheduler closed while this request waited for a lock")
        for name, queue in list(self.events.items()):
            for request in list(queue):
                self._answer(name, request, closing)

    # -- internals -------------------------------------------------------

    def _grant(self, name: Any, request: _Request) -> None:
        self._holders[name] = request
        self.ids[name] = request.id

    def _free(self, name: Any) -> None:
        """``name`` is free: hand it to the first request still waiting."""
        del self._holders[name]
        del self.ids[name]
        queue = self.events.get(name)
        while queue:
            request = queue.popleft()
            if request.future is None or request.future.done():
                continue
            if request.timer is not None:
                request.timer.cancel()
            self._grant(name, request)
            request.future.set_result(True)
            break
        if queue is not None and not queue:
            del self.events[name]

    def _give_up(self, name: Any, request: _Request) -> None:
        self._answer(name, request, False)

    def _answer(self, name: Any, request: _Request, answer: bool | BaseException) -> None:
        """Take a waiting request out of the queue with ``answer``."""
        if request.timer is not None:
            request.timer.cancel()
        queue = self.events.get(name)
        if queue is not None:
            try:
                queue.remove(request)
            except ValueError:
                pass
            if not queue:
                del self.events[name]
        fut = request.future
        if fut is not None and not fut.done():
            if isinstance(answer, BaseException):
                fut.set_exception(answer)
            else:
                fut.set_result(answer)


# ----------------------------------------------------------------------
# User side
# ----------------------------------------------------------------------


class Lock(AcquireReleaseContext, ClientOrRpc):
    """A lock shared by every client and task of a cluster, by name.

    ``acquire(blocking=True, timeout=None)`` returns True once this object
    holds the lock (False if ``timeout`` seconds pass first, or at once with
    ``blocking=False`` when someone else holds it); ``release()`` lets go.
    It is not reentrant: a second ``acquire`` waits like any other.  Use it
    as a context manager (``with``, or ``async with`` on an asynchronous
    client), and pass it into tasks: it pickles by name.

    >>> lock = Lock("x")                        # doctest: +SKIP
    >>> with lock:                              # doctest: +SKIP
    ...     ...                                 # one holder at a time
    >>> def write(part, lock):                  # doctest: +SKIP
    ...     with lock:
    ...         append_to_file(part)
    >>> client.map(write, parts, lock=lock)     # doctest: +SKIP

    Behaviour that may surprise:

    * ``locked()`` says whether *this object* holds the lock, without asking
      the scheduler (another ``Lock`` of the same name may hold it).
    * A lock is released when its holder's client disconnects from the
      scheduler (a closed client, a dead worker); ``release()`` afterwards
      raises ``LockNotHeldError``.
    * ``client=`` picks the client; by default it is found on first use
      (``get_client()``: the worker's client inside a task).  With
      ``scheduler_rpc=`` (and ``loop=``, the loop that rpc runs on) the lock
      talks to the scheduler without a client, and is then not released
      automatically if its holder dies.
    """

    def __init__(self, name: Any = None, client: Any = None, scheduler_rpc: Any = None, loop: Any = None):
        if scheduler_rpc is not None and client is not None:
            raise ValueError("Lock takes client= or scheduler_rpc=, not both")
        if scheduler_rpc is not None and loop is None:
            raise ValueError("Lock(scheduler_rpc=...) needs loop=, the event loop that rpc runs on")
        if loop is not None and scheduler_rpc is None:
            raise ValueError("Lock(loop=...) is only meaningful with scheduler_rpc= (a client brings its own loop)")
        self.name = uuid.uuid4().hex if name is None else name
        self._key = _normalize_name(self.name)
        self.id = uuid.uuid4().hex
        self._client = client
        self._scheduler_rpc = scheduler_rpc
        self._loop = loop
        self._token: str | None = None  # the grant this object holds

    # -- finding the scheduler ----------------------------------------------

    @property
    def client(self) -> Any:
        """The client this lock talks through (found on first use); None
        with ``scheduler_rpc=``."""
        if self._client is None and self._scheduler_rpc is None:
            from distributed.client import get_client

            try:
                self._client = get_client()
            except ValueError as e:
                raise RuntimeError(
                    f"Lock {self.name!r} is not properly initialized: no client was given and none was found "
                    f"({e}). Start a Client first, or pass client=") from None
        return self._client

    # -- the lock ------------------------------------------------------------

    def acquire(self, blocking: bool = True, timeout: Any = None):
        """Wait until this object holds the lock; True, or False when
        ``timeout`` (seconds, ``"1s"``, a timedelta) passed first.
        ``blocking=False`` tries once and cannot take a timeout.

        >>> lock.acquire(timeout="100ms")      # doctest: +SKIP
        True
        """
        if not blocking:
            if timeout is not None:
                raise LockArgumentError("acquire(blocking=False) tries once and takes no timeout; "
                                        f"got timeout={timeout!r}")
            timeout = 0
        elif timeout is not None:
            timeout = config.parse_timedelta(timeout)
            if timeout < 0:
                raise ValueError(f"acquire(timeout=...) must not be negative, got {timeout!r}")
        return self._run(self._acquire, timeout)

    async def _acquire(self, timeout: float | None) -> bool:
        token = uuid.uuid4().hex
        client = self._client
        try:
            granted = await self._scheduler().lock_acquire(
                name=self._key, id=self.id, token=token, timeout=timeout,
                client=client.id if client is not None else None)
        except BaseException:
            # Cancelled or broken on our side: the scheduler may still grant
            # this token (or has already); it must not stay held by nobody.
            self._abandon(token)
            raise
        if granted:
            self._token = token
        return bool(granted)

    def _abandon(self, token: str) -> None:
        msg = {"name": self._key, "token": token}
        client = self._client
        if client is not None:
            try:
                client._send_to_scheduler({"op": "lock-abandon", **msg})
            except Exception as e:  # a closed client: its locks go with it
                logger.debug("could not abandon lock %r: %s", self.name, e)
            return
        task = asyncio.ensure_future(self._scheduler_rpc.lock_abandon(**msg))
        _in_flight.add(task)
        task.add_done_callback(_abandon_done)

    def release(self):
        """Let go of the lock.  Raises ``LockNotHeldError`` if this object
        does not hold it (never acquired, released already, or released by
        the scheduler because this holder's client disconnected)."""
        token = self._token
        if token is None:
            raise LockNotHeldError(f"release of lock {self.name!r}, which this Lock object does not hold")
        self._token = None
        return self._run(self._release, token)

    async def _release(self, token: str) -> None:
        held = await self._scheduler().lock_release(name=self._key, id=self.id, token=token)
        if not held:
            raise LockNotHeldError(
                f"release of lock {self.name!r}: the scheduler had already released it "
                "(its holder's client was disconnected)")

    def locked(self) -> bool:
        """Whether this object holds the lock (no round trip)."""
        return self._token is not None

    # -- context managers, pickling --------------------------------------------

    def __reduce__(self):
        return Lock, (self.name,)

    def __repr__(self) -> str:
        return f"<Lock: {self.name!r}, {'held' if self.locked() else 'not held'} by this object>"


# Abandon calls sent without a client, kept alive until they finish.
_in_flight: set = set()


def _abandon_done(task: asyncio.Future) -> None:
    _in_flight.discard(task)
    if not task.cancelled() and task.exception() is not None:
        logger.debug("abandoning a lock request failed: %r", task.exception())
