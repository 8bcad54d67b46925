"""Several cluster-wide locks taken together: the scheduler extension and
the ``MultiLock`` users hold.

A ``MultiLock(["a", "b"])`` holds the locks ``a`` and ``b`` at once, or
(with ``acquire(num_locks=k)``) any ``k`` of them.  Its locks are a
namespace of their own: ``MultiLock(["a"])`` and ``Lock("a")`` do not
exclude each other (as in dask.distributed).

Theory of operation
-------------------
The scheduler (``MultiLockExtension``, ``scheduler.extensions
["multi_locks"]``) keeps one first-come-first-served queue per lock name,
``locks[name] = [request ids]``; the head of a queue holds that lock.  A
request is appended to the queues of *all* its names in one step, so every
queue lists requests in the order they arrived: the oldest waiting request
is never behind a younger waiting one anywhere, hence no circular wait and
no deadlock between MultiLocks.  A request is granted once it heads
``num_locks`` of its queues; it then keeps exactly those, and leaves the
other queues so that it blocks nobody there.

A request that times out, is cancelled, or whose client disconnects leaves
every queue at once; the ``MultiLock`` that asked then holds nothing
(upstream's MultiLock thought it held the locks after a failed acquire).
A holder whose client disconnects (closed, its process or worker died)
releases its locks at once, like ``Lock``: a dead holder never blocks the
others, and a live but slow one is never overbooked.  Upstream's MultiLock
had no such rule and deadlocked when a holder died.

Thread rules: ``MultiLockExtension`` runs on the scheduler's loop.
``MultiLock`` methods may be called from any thread; with an asynchronous
client on its own loop they return awaitables.
"""
from __future__ import annotations

import asyncio
import logging
import uuid
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from distributed import config
from distributed.coordination._context import AcquireReleaseContext

from .lock import LockArgumentError, LockNotHeldError, _normalize_name

__all__ = ["MultiLock", "MultiLockExtension"]

logger = logging.getLogger(__name__)

#: Request ids abandoned before their request arrived, kept at most this many.
_ABANDONED_MEMORY = 10_000


# ----------------------------------------------------------------------
# Scheduler side
# ----------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class _Request:
    id: str
    names: tuple  # the lock names asked for, in the caller's order
    num_locks: int  # how many of them make the request granted
    client: str | None
    held: set = field(default_factory=set)  # names whose queue this request heads
    granted: bool = False
    future: asyncio.Future | None = None
    timer: asyncio.TimerHandle | None = None


class MultiLockExtension:
    """The scheduler's side of ``MultiLock``.

    ``locks`` maps each lock name with a holder or waiters to its queue of
    request ids (the head holds it); ``requests`` maps each request id to
    its request (``.names``, ``.num_locks``, ``.held``, ``.granted``).

    >>> ext = scheduler.extensions["multi_locks"]    # doctest: +SKIP
    >>> ext.locks                                    # doctest: +SKIP
    {'a': ['5f0c...'], 'b': ['5f0c...', '9a1e...']}
    """

    def __init__(self, scheduler: Any):
        self.scheduler = scheduler
        self.locks: dict[Any, list[str]] = {}
        self.requests: dict[str, _Request] = {}
        self._abandoned: OrderedDict[str, None] = OrderedDict()
        self._closed = False
        scheduler.handlers.update({
            "multi_lock_acquire": self.acquire,
            "multi_lock_release": self.release,
            "multi_lock_abandon": self.abandon,
        })
        scheduler.stream_handlers["multi-lock-abandon"] = self.abandon

    def __repr__(self) -> str:
        held = sum(r.granted for r in self.requests.values())
        return f"<MultiLockExtension: {held} requests holding, {len(self.requests) - held} waiting>"

    async def acquire(self, comm=None, locks=None, id=None, num_locks=None, timeout=None, client=None,
                      **kwargs) -> bool:
        """Queue request ``id`` on every name in ``locks``; True once it
        heads ``num_locks`` queues, False after ``timeout`` seconds
        (``0``: only if free now), having left every queue."""
        if self._closed:
            raise RuntimeError("the scheduler is closing; no lock can be acquired")
        if not isinstance(id, str):
            raise TypeError("multi_lock_acquire needs a string 'id'")
        names = _unique_names(locks or ())
        num_locks = len(names) if num_locks is None else num_locks
        _check_num_locks(num_locks, len(names))
        if id in self._abandoned:
            del self._abandoned[id]
            return False
        if id in self.requests:
            raise ValueError(f"multi-lock request {id} is already known to the scheduler")
        request = _Request(id, names, num_locks, client)
        self.requests[id] = request
        for name in names:
            queue = self.locks.setdefault(name, [])
            queue.append(id)
            if len(queue) == 1:
                request.held.add(name)
        if len(request.held) >= num_locks:
            self._grant(request)
            return True
        if timeout is not None and float(timeout) <= 0:
            self._withdraw(request)
            return False
        loop = asyncio.get_running_loop()
        request.future = loop.create_future()
        if timeout is not None:
            request.timer = loop.call_later(float(timeout), self._answer, request, False)
        return await request.future

    def release(self, comm=None, id=None, **kwargs) -> bool:
        """Let go of every lock request ``id`` holds; False if it holds none."""
        request = self.requests.get(id)
        if request is None or not request.granted:
            return False
        self._withdraw(request)
        return True

    def abandon(self, comm=None, id=None, **kwargs) -> None:
        """The requester of ``id`` gave up: leave every queue (releasing what
        it holds), or refuse the request when it arrives."""
        request = self.requests.get(id)
        if request is None:
            self._abandoned[id] = None
            while len(self._abandoned) > _ABANDONED_MEMORY:
                self._abandoned.popitem(last=False)
        elif request.granted:
            self._withdraw(request)
        else:
            self._answer(request, False)

    def remove_client(self, client: str) -> None:
        """A client's stream ended: fail its waiting requests, then release
        its holds (so nothing it frees goes to another of its requests)."""
        gone = RuntimeError(f"the client {client} was disconnected from the scheduler while waiting for locks")
        mine = [r for r in self.requests.values() if r.client == client]
        for request in mine:
            if not request.granted:
                self._answer(request, gone)
        for request in mine:
            if request.granted:
                logger.info("multi-lock %s released: its holder's client %s disconnected", request.names, client)
                self._withdraw(request)

    def close(self) -> None:
        """Answer every waiting request: the scheduler is closing."""
        self._closed = True
        closing = RuntimeError("the scheduler closed while this request waited for locks")
        for request in list(self.requests.values()):
            if not request.granted:
                self._answer(request, closing)

    # -- internals --------------------------------------------------------

    def _grant(self, request: _Request) -> None:
        """``request`` heads enough queues: keep ``num_locks`` of them (in
        the caller's order), leave the others."""
        request.granted = True
        if request.timer is not None:
            request.timer.cancel()
        keep = [n for n in request.names if n in request.held][: request.num_locks]
        extra = [n for n in request.names if n not in keep]
        request.held = set(keep)
        self._leave(request, extra)

    def _withdraw(self, request: _Request) -> None:
        """Take ``request`` out of every queue and forget it."""
        self.requests.pop(request.id, None)
        if request.timer is not None:
            request.timer.cancel()
        self._leave(request, request.names)
        request.held = set()

    def _leave(self, request: _Request, names: Iterable) -> None:
        """Take ``request`` out of the queues of ``names``; new heads may be
        granted."""
        promoted: list[_Request] = []
        for name in names:
            queue = self.locks.get(name)
            if queue is None or request.id not in queue:
                continue
            was_head = queue[0] == request.id
            queue.remove(request.id)
            request.held.discard(name)
            if not queue:
                del self.locks[name]
            elif was_head:
                head = self.requests[queue[0]]
                head.held.add(name)
                promoted.append(head)
        for head in promoted:
            if not head.granted and head.id in self.requests and len(head.held) >= head.num_locks:
                self._grant(head)
                if head.future is not None and not head.future.done():
                    head.future.set_result(True)

    def _answer(self, request: _Request, answer: bool | BaseException) -> None:
        """A waiting request ends without the locks: leave every queue."""
        self._withdraw(request)
        fut = request.future
        if fut is not None and not fut.done():
            if isinstance(answer, BaseException):
                fut.set_exception(answer)
            else:
                fut.set_result(answer)


def _unique_names(names: Iterable) -> tuple:
    """The normalized names, each once, in order.

    >>> _unique_names(["a", ["b", 1], "a"])
    ('a', ('b', 1))
    """
    if isinstance(names, (str, bytes)):
        raise TypeError(f"MultiLock takes a list of lock names, not the single name {names!r}")
    out: dict = {}
    for name in names:
        out.setdefault(_normalize_name(name), None)
    return tuple(out)


def _check_num_locks(num_locks: Any, available: int) -> None:
    if isinstance(num_locks, bool) or not isinstance(num_locks, int):
        raise TypeError(f"num_locks must be an integer, got {num_locks!r}")
    if not 0 <= num_locks <= available:
        raise ValueError(f"num_locks={num_locks} must be between 0 and the number of names ({available})")


# ----------------------------------------------------------------------
# User side
# ----------------------------------------------------------------------


class MultiLock(AcquireReleaseContext):
    """Hold several named locks at once, cluster-wide.

    ``acquire(blocking=True, timeout=None, num_locks=None)`` returns True
    once this object holds all of ``names`` (or any ``num_locks`` of them),
    False if ``timeout`` seconds pass first or, with ``blocking=False``, if
    they are not free now; after False it holds nothing.  ``release()`` lets
    go of all of them.  Use it as a context manager, pass it into tasks (it
    pickles by its names).

    >>> with MultiLock(["input.csv", "output.csv"]):     # doctest: +SKIP
    ...     convert("input.csv", "output.csv")

    Behaviour that may surprise:

    * A request waits in the queues of all its names at once, first come
      first served, and heads some of them while it waits: two MultiLocks
      never deadlock each other, but a waiting request can make a later
      one wait even for a name it could have had.
    * ``locked()`` says whether *this object* holds its locks (no round
      trip).  A holder whose client disconnects releases its locks; a later
      ``release()`` raises ``LockNotHeldError``.
    * The names are their own namespace: ``Lock("a")`` is another lock.
    """

    def __init__(self, names: Iterable | None = None, client: Any = None):
        self.names = list(_unique_names(names or ()))
        self._client = client
        self.id: str | None = None  # the request this object holds, if any

    @property
    def client(self) -> Any:
        """The client this lock talks through (found on first use)."""
        if self._client is None:
            from distributed.client import get_client

            try:
                self._client = get_client()
            except ValueError as e:
                raise RuntimeError(
                    f"MultiLock {self.names!r} is not properly initialized: no client was given and none was "
                    f"found ({e}). Start a Client first, or pass client=") from None
        return self._client

    def _scheduler(self) -> Any:
        scheduler = self._client.scheduler
        if scheduler is None:
            raise RuntimeError(f"MultiLock {self.names!r}: the client is not connected to a scheduler")
        return scheduler

    def acquire(self, blocking: bool = True, timeout: Any = None, num_locks: int | None = None):
        """Wait until this object holds its locks (all, or ``num_locks`` of
        them); True, or False when ``timeout`` passed first.

        >>> MultiLock(["a", "b"]).acquire(timeout="1s")    # doctest: +SKIP
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
        if num_locks is not None:
            _check_num_locks(num_locks, len(self.names))
        if self.id is not None:
            raise RuntimeError(f"MultiLock {self.names!r} is already held by this object; release it first")
        return self.client.sync(self._acquire, timeout, num_locks)

    async def _acquire(self, timeout: float | None, num_locks: int | None) -> bool:
        request_id = uuid.uuid4().hex
        client = self._client
        try:
            granted = await self._scheduler().multi_lock_acquire(
                locks=self.names, id=request_id, num_locks=num_locks, timeout=timeout, client=client.id)
        except BaseException:
            # Cancelled or broken on our side: the scheduler must not keep a
            # grant or a place in the queues for nobody.
            try:
                client._send_to_scheduler({"op": "multi-lock-abandon", "id": request_id})
            except Exception as e:  # a closed client: its locks go with it
                logger.debug("could not abandon multi-lock request %s: %s", request_id, e)
            raise
        if granted:
            self.id = request_id
        return bool(granted)

    def release(self):
        """Let go of the locks.  Raises ``LockNotHeldError`` if this object
        does not hold them (never acquired, released already, a failed
        acquire, or released by the scheduler when its client disconnected)."""
        request_id = self.id
        if request_id is None:
            raise LockNotHeldError(f"release of MultiLock {self.names!r}, which this object does not hold")
        self.id = None
        return self.client.sync(self._release, request_id)

    async def _release(self, request_id: str) -> None:
        held = await self._scheduler().multi_lock_release(id=request_id)
        if not held:
            raise LockNotHeldError(f"release of MultiLock {self.names!r}: the scheduler had already released "
                                   "it (its holder's client was disconnected)")

    def locked(self) -> bool:
        """Whether this object holds its locks (no round trip)."""
        return self.id is not None

    def __reduce__(self):
        return MultiLock, (self.names,)

    def __repr__(self) -> str:
        return f"<MultiLock: {self.names!r}, {'held' if self.locked() else 'not held'} by this object>"
