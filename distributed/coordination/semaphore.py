"""A cluster-wide counting semaphore with leases: the scheduler extension
and the ``Semaphore`` users hold.

A semaphore of a name hands out at most ``max_leases`` leases at a time;
every ``acquire`` asks for one, ``release`` gives one back.  The state lives
in the scheduler (``SemaphoreExtension``, ``scheduler.extensions
["semaphores"]``), a ``Semaphore`` pickles by name, and the copy a task
unpickles finds its client lazily (the worker's client inside a task).

The lease guarantee
-------------------
Each ``acquire`` sends a fresh *lease id*: a retried request (after a broken
connection) is recognised and granted once.  The scheduler keeps with each
lease the client that asked, the worker it ran in (if any) and when the
holder last refreshed it; the holder refreshes its leases every
``lease-timeout / 5`` from its client's event loop (not from the task's
thread).  A lease ends when

1. its holder releases it (a ``Semaphore`` object dropped while holding
   leases still refreshes them: they stay held, as in dask.distributed);
2. the holder's client disconnects from the scheduler (a closed client, a
   process that exits or dies: the operating system closes its sockets): at
   once;
3. the worker the holder ran in is removed by the scheduler (killed,
   retired, or silent for ``distributed.scheduler.worker-ttl``): at the next
   validation, every ``distributed.scheduler.locks.lease-validation-interval``;
4. the holder has no client the scheduler can see (``scheduler_rpc=``) and
   did not refresh within ``distributed.scheduler.locks.lease-timeout``.

A holder whose client is still connected keeps its lease even when its
refreshes stop (a task holding the GIL in C code, a blocked event loop, a
stopped process): **a live holder is never overbooked**.  Upstream's
Semaphore frees such a lease after the timeout and lets a second holder in
(d/d#4830); here the scheduler instead logs a warning, once per lease, that
names the semaphore, the holder and how long it has been silent, and lists
the lease in ``SemaphoreExtension.stale``.  The price is that a holder
whose host vanishes without closing its connections (power loss, a network
partition) keeps its lease until the scheduler removes its worker (rule 3)
or the connection breaks.  A lease freed under rule 3 while its old worker
still runs is logged as a possible overbooking.

Thread rules: ``SemaphoreExtension`` runs on the scheduler's loop.
``Semaphore`` methods may be called from any thread; with an asynchronous
client on its own loop they return awaitables (``await sem.acquire()``).
"""
from __future__ import annotations

import asyncio
import inspect
import logging
import math
import time
import uuid
import warnings
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

from distributed import config
from distributed.context import current_worker
from distributed.coordination._context import AcquireReleaseContext, ClientOrRpc

from .lock import _normalize_name

__all__ = ["Semaphore", "SemaphoreExtension"]

logger = logging.getLogger(__name__)

_TIMEOUT_KEY = "distributed.scheduler.locks.lease-timeout"
_INTERVAL_KEY = "distributed.scheduler.locks.lease-validation-interval"
#: Lease ids abandoned before their request arrived, kept at most this many.
_ABANDONED_MEMORY = 10_000
#: Refreshes failing in a row before a holder stops trying.
_REFRESH_ATTEMPTS = 5


def _parse_lease_timeout(value: Any) -> float:
    """Seconds; ``"inf"`` (or ``None`` in the configuration) means never.

    >>> _parse_lease_timeout("500ms"), _parse_lease_timeout("inf")
    (0.5, inf)
    """
    if value is None or (isinstance(value, str) and value.strip().lower() in ("inf", "infinity")):
        return math.inf
    seconds = config.parse_timedelta(value)
    if not seconds > 0:
        raise ValueError(f"a lease timeout must be positive (or 'inf'), got {value!r}")
    return seconds


def _configured_lease_timeout() -> float:
    try:
        return _parse_lease_timeout(config.get(_TIMEOUT_KEY))
    except ValueError as e:
        raise ValueError(f"configuration {_TIMEOUT_KEY!r} ({config.env_var(_TIMEOUT_KEY)}): {e}") from None


# ----------------------------------------------------------------------
# Scheduler side
# ----------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class _Lease:
    """One lease granted (or asked for, while ``future`` waits)."""

    id: str
    client: str | None  # whose stream it lives with (None: a bare rpc)
    worker: str | None  # the worker the holder runs in, if any
    timeout: float  # seconds without refresh after which rule 4 applies
    asked: float  # monotonic time of the request
    refreshed: float = 0.0  # monotonic time of the grant or last refresh
    stale_logged: bool = False
    future: asyncio.Future | None = None
    timer: asyncio.TimerHandle | None = field(default=None)


@dataclass(slots=True, eq=False)
class _SemaphoreState:
    max_leases: int
    leases: dict = field(default_factory=dict)  # lease id -> _Lease, granted
    waiters: deque = field(default_factory=deque)  # _Lease waiting, first come first served
    acquire_total: int = 0
    release_total: int = 0
    waited_total: float = 0.0  # seconds granted leases spent waiting, summed
    stale_total: int = 0  # leases of connected holders that went without refresh


class SemaphoreExtension:
    """The scheduler's side of ``Semaphore``: leases per name, waiters, metrics.

    ``max_leases`` maps each registered name to its size, ``leases`` each
    name to ``{lease_id: _Lease}`` (granted), ``waiters`` each name with
    waiting requests to their queue, ``stale`` each lease whose connected
    holder stopped refreshing to its semaphore's name.

    >>> ext = scheduler.extensions["semaphores"]       # doctest: +SKIP
    >>> len(ext.leases["db"]), ext.metrics["pending"]["db"]   # doctest: +SKIP
    (2, 1)
    """

    def __init__(self, scheduler: Any):
        self.scheduler = scheduler
        self._states: dict[Any, _SemaphoreState] = {}
        self.stale: dict[str, Any] = {}
        self._abandoned: OrderedDict[str, None] = OrderedDict()
        self._closed_names: OrderedDict[Any, None] = OrderedDict()  # closed, not registered since
        self._check: asyncio.TimerHandle | None = None
        self._closed = False
        scheduler.handlers.update({
            "semaphore_register": self.register,
            "semaphore_create": self.register,  # older clients' name
            "semaphore_acquire": self.acquire,
            "semaphore_release": self.release,
            "semaphore_abandon": self.abandon,
            "semaphore_refresh_leases": self.refresh_leases,
            "semaphore_value": self.get_value,
            "semaphore_close": self.close_semaphore,
        })
        scheduler.stream_handlers["semaphore-abandon"] = self.abandon

    def __repr__(self) -> str:
        held = sum(len(st.leases) for st in self._states.values())
        return f"<SemaphoreExtension: {len(self._states)} semaphores, {held} leases held>"

    # -- inspection -------------------------------------------------------

    @property
    def max_leases(self) -> dict:
        return {name: st.max_leases for name, st in self._states.items()}

    @property
    def leases(self) -> dict:
        return {name: st.leases for name, st in self._states.items()}

    @property
    def waiters(self) -> dict:
        return {name: st.waiters for name, st in self._states.items() if st.waiters}

    @property
    def metrics(self) -> dict[str, dict]:
        """``{metric: {name: value}}``: ``acquire_total``, ``release_total``,
        ``pending`` (requests waiting now), ``average_pending_lease_time``
        (mean seconds a granted lease waited for its grant) and
        ``stale_total`` (leases whose connected holder stopped refreshing,
        kept rather than overbooked)."""
        out: dict[str, dict] = {"acquire_total": {}, "release_total": {}, "pending": {},
                                "average_pending_lease_time": {}, "stale_total": {}}
        for name, st in self._states.items():
            out["acquire_total"][name] = st.acquire_total
            out["release_total"][name] = st.release_total
            out["pending"][name] = len(st.waiters)
            out["stale_total"][name] = st.stale_total
            out["average_pending_lease_time"][name] = (st.waited_total / st.acquire_total
                                                       if st.acquire_total else 0.0)
        return out

    # -- handlers ---------------------------------------------------------

    def register(self, comm=None, name=None, max_leases=None, **kwargs) -> None:
        """Create the semaphore ``name`` with ``max_leases``, or check that
        it exists with that size (``ValueError`` otherwise)."""
        name = _normalize_name(name)
        _check_max_leases(max_leases)
        st = self._states.get(name)
        self._closed_names.pop(name, None)
        if st is None:
            self._states[name] = _SemaphoreState(max_leases)
        elif st.max_leases != max_leases:
            raise ValueError(f"Semaphore {name!r} exists with max_leases={st.max_leases}; "
                             f"it cannot be registered again with max_leases={max_leases}")

    async def acquire(self, comm=None, name=None, lease_id=None, timeout=None, client=None, worker=None,
                      lease_timeout=None, max_leases=None, **kwargs) -> bool:
        """Grant a lease to ``lease_id`` now or when it is its turn; False
        after ``timeout`` seconds (``0``: only if one is free now).  A name
        never registered is registered with ``max_leases`` (a request may
        overtake the registration of its semaphore); a closed one raises."""
        if self._closed:
            raise RuntimeError("the scheduler is closing; no semaphore lease can be acquired")
        if not isinstance(lease_id, str):
            raise TypeError("semaphore_acquire needs a string 'lease_id'")
        name = _normalize_name(name)
        st = self._states.get(name)
        if st is None:
            if max_leases is None or name in self._closed_names:
                raise RuntimeError(f"Semaphore {name!r} not known or already closed.")
            self.register(name=name, max_leases=max_leases)
            st = self._states[name]
        if lease_id in st.leases:
            return True  # a retried request: granted once
        for waiting in list(st.waiters):
            if waiting.id == lease_id:  # a retried request
                if waiting.future is not None and not waiting.future.done():
                    return await asyncio.shield(waiting.future)  # still waiting: the same answer
                st.waiters.remove(waiting)  # its first request's call was cancelled
        if lease_id in self._abandoned:
            del self._abandoned[lease_id]
            return False  # its requester gave up before the request arrived
        if client is not None and not self._client_connected(client):
            raise RuntimeError(f"the client {client} is not connected to the scheduler; "
                               "it cannot hold a lease")
        timeout = None if timeout is None else float(timeout)
        now = time.monotonic()
        lease = _Lease(lease_id, client, worker, _parse_lease_timeout(lease_timeout)
                       if lease_timeout is not None else _configured_lease_timeout(), now)
        if len(st.leases) < st.max_leases and not st.waiters:
            self._grant(name, st, lease, now)
            return True
        if timeout is not None and timeout <= 0:
            return False
        loop = asyncio.get_running_loop()
        lease.future = loop.create_future()
        st.waiters.append(lease)
        if timeout is not None:
            lease.timer = loop.call_later(timeout, self._answer, name, lease, False)
        return await lease.future

    def release(self, comm=None, name=None, lease_id=None, **kwargs) -> bool:
        """Give back ``lease_id``; False (and a warning) if it is not held."""
        name = _normalize_name(name)
        st = self._states.get(name)
        if st is None:
            logger.warning("release of a lease of semaphore %r, which is not known or already closed", name)
            return False
        if lease_id not in st.leases:
            logger.warning("release of lease %s of semaphore %r, which it does not hold (freed already: "
                           "its holder's client disconnected, or its worker was removed)", lease_id, name)
            return False
        self._free(name, st, lease_id)
        return True

    def abandon(self, comm=None, name=None, lease_id=None, **kwargs) -> None:
        """The requester of ``lease_id`` gave up: free it, drop its waiting
        request, or refuse the request when it arrives."""
        name = _normalize_name(name)
        st = self._states.get(name)
        if st is not None:
            if lease_id in st.leases:
                self._free(name, st, lease_id)
                return
            for lease in st.waiters:
                if lease.id == lease_id:
                    self._answer(name, lease, False)
                    return
        self._abandoned[lease_id] = None
        while len(self._abandoned) > _ABANDONED_MEMORY:
            self._abandoned.popitem(last=False)

    def refresh_leases(self, comm=None, name=None, lease_ids=(), **kwargs) -> list[str]:
        """The holder of ``lease_ids`` is alive; returns the ids it no
        longer holds (freed by the scheduler meanwhile)."""
        name = _normalize_name(name)
        st = self._states.get(name)
        now = time.monotonic()
        unknown = []
        for lease_id in lease_ids:
            lease = st.leases.get(lease_id) if st is not None else None
            if lease is None:
                unknown.append(lease_id)
                continue
            lease.refreshed = now
            if self.stale.pop(lease_id, None) is not None:
                logger.warning("lease %s of semaphore %r is refreshed again", lease_id, name)
                lease.stale_logged = False
        if unknown:
            logger.error("refresh of leases %s of semaphore %r, which the scheduler had freed; "
                         "their holder may be running beside a newer holder", unknown, name)
        return unknown

    def get_value(self, comm=None, name=None, **kwargs) -> int:
        """How many leases of ``name`` are held now."""
        st = self._states.get(_normalize_name(name))
        return 0 if st is None else len(st.leases)

    def close_semaphore(self, comm=None, name=None, **kwargs) -> list[str]:
        """Forget the semaphore ``name``: its waiters fail; returns the
        lease ids still held (their holders are not told)."""
        name = _normalize_name(name)
        st = self._states.pop(name, None)
        if st is None:
            return []
        self._closed_names[name] = None
        while len(self._closed_names) > _ABANDONED_MEMORY:
            self._closed_names.popitem(last=False)
        closed = RuntimeError(f"Semaphore {name!r} was closed while this request waited")
        for lease in list(st.waiters):
            self._answer(name, lease, closed, st)
        for lease_id in st.leases:
            self.stale.pop(lease_id, None)
        return sorted(st.leases)

    def remove_client(self, client: str) -> None:
        """A client's stream ended: fail its waiters, then free its leases."""
        gone = RuntimeError(f"the client {client} was disconnected from the scheduler while waiting "
                            "for a semaphore lease")
        for name, st in list(self._states.items()):
            for lease in [w for w in st.waiters if w.client == client]:
                self._answer(name, lease, gone)
            for lease in [lease for lease in st.leases.values() if lease.client == client]:
                logger.info("lease %s of semaphore %r freed: its holder's client %s disconnected",
                            lease.id, name, client)
                self._free(name, st, lease.id)

    def close(self) -> None:
        """Answer every waiting request: the scheduler is closing."""
        self._closed = True
        if self._check is not None:
            self._check.cancel()
            self._check = None
        closing = RuntimeError("the scheduler closed while this request waited for a semaphore lease")
        for name, st in list(self._states.items()):
            for lease in list(st.waiters):
                self._answer(name, lease, closing)

    # -- validation -------------------------------------------------------

    def validate_leases(self, now: float | None = None) -> None:
        """Apply the lease rules 2-4 (module docstring) to every lease."""
        now = time.monotonic() if now is None else now
        workers = getattr(self.scheduler, "workers", None)
        for name, st in list(self._states.items()):
            for lease in list(st.leases.values()):
                if lease.client is not None and not self._client_connected(lease.client):
                    logger.info("lease %s of semaphore %r freed: its client %s is gone", lease.id, name,
                                lease.client)
                    self._free(name, st, lease.id)
                elif lease.worker is not None and workers is not None and lease.worker not in workers:
                    logger.warning("lease %s of semaphore %r freed: its holder's worker %s was removed; "
                                   "if that worker still runs the holder, the semaphore is overbooked until "
                                   "it stops", lease.id, name, lease.worker)
                    self._free(name, st, lease.id)
                elif now - lease.refreshed > lease.timeout:
                    if lease.client is None:
                        logger.warning("lease %s of semaphore %r expired: not refreshed for %.1f s",
                                       lease.id, name, now - lease.refreshed)
                        self._free(name, st, lease.id)
                    elif not lease.stale_logged:
                        lease.stale_logged = True
                        self.stale[lease.id] = name
                        st.stale_total += 1
                        logger.warning(
                            "lease %s of semaphore %r not refreshed for %.1f s; its holder's client %s is "
                            "still connected, so the lease is kept (no overbooking). A task holding the GIL "
                            "or blocking its event loop stops the refreshes.",
                            lease.id, name, now - lease.refreshed, lease.client)

    def _schedule_check(self) -> None:
        if self._check is not None or self._closed:
            return
        try:
            interval = config.get_timedelta(_INTERVAL_KEY)
        except ValueError as e:
            logger.error("configuration %r: %s; validating leases every 10 s", _INTERVAL_KEY, e)
            interval = 10.0
        if interval is None or not interval > 0:
            return
        self._check = asyncio.get_running_loop().call_later(interval, self._run_check)

    def _run_check(self) -> None:
        self._check = None
        try:
            self.validate_leases()
        except Exception:
            logger.exception("validating semaphore leases failed")
        if any(st.leases for st in self._states.values()):
            self._schedule_check()

    # -- internals --------------------------------------------------------

    def _client_connected(self, client: str) -> bool:
        clients = getattr(self.scheduler, "clients", None)
        return clients is None or client in clients

    def _grant(self, name: Any, st: _SemaphoreState, lease: _Lease, now: float) -> None:
        lease.refreshed = now
        st.leases[lease.id] = lease
        st.acquire_total += 1
        st.waited_total += now - lease.asked
        self._schedule_check()

    def _free(self, name: Any, st: _SemaphoreState, lease_id: str) -> None:
        """``lease_id`` is given back: hand free slots to the waiters in order."""
        del st.leases[lease_id]
        self.stale.pop(lease_id, None)
        st.release_total += 1
        now = time.monotonic()
        while st.waiters and len(st.leases) < st.max_leases:
            lease = st.waiters.popleft()
            if lease.future is None or lease.future.done():
                continue
            if lease.timer is not None:
                lease.timer.cancel()
            self._grant(name, st, lease, now)
            lease.future.set_result(True)

    def _answer(self, name: Any, lease: _Lease, answer: bool | BaseException,
                st: _SemaphoreState | None = None) -> None:
        """Take a waiting request out of its queue with ``answer``."""
        if lease.timer is not None:
            lease.timer.cancel()
        st = st if st is not None else self._states.get(name)
        if st is not None:
            try:
                st.waiters.remove(lease)
            except ValueError:
                pass
        fut = lease.future
        if fut is not None and not fut.done():
            if isinstance(answer, BaseException):
                fut.set_exception(answer)
            else:
                fut.set_result(answer)


def _check_max_leases(max_leases: Any) -> None:
    if isinstance(max_leases, bool) or not isinstance(max_leases, int) or max_leases < 1:
        raise ValueError(f"max_leases must be a positive integer, got {max_leases!r}")


# ----------------------------------------------------------------------
# User side
# ----------------------------------------------------------------------


class _Held:
    """The leases one ``Semaphore`` object holds, shared with its refresher:
    leases held by an object that was dropped are still refreshed (they
    stay held, as a lease does in dask.distributed, until the holder's
    client disconnects)."""

    __slots__ = ("ids", "name", "scheduler", "client", "refreshing")

    def __init__(self, name: Any) -> None:
        self.ids: deque[str] = deque()
        self.name = name
        self.scheduler: Any = None  # the rpc the leases were acquired through
        self.client: Any = None
        self.refreshing = False  # a refresh is scheduled on the loop


class Semaphore(AcquireReleaseContext, ClientOrRpc):
    """A semaphore shared by every client and task of a cluster, by name.

    ``acquire(timeout=None)`` returns True once this object holds one more
    lease (False if ``timeout`` seconds pass first); ``release()`` gives the
    oldest back.  At most ``max_leases`` leases of a name are held at once,
    across all clients and tasks.  Use it as a context manager (``with``, or
    ``async with`` on an asynchronous client), and pass it into tasks: it
    pickles by name.

    >>> sem = Semaphore(max_leases=2, name="database")      # doctest: +SKIP
    >>> def query(i, sem):                                  # doctest: +SKIP
    ...     with sem:                  # at most two tasks in here at once
    ...         return run_query(i)
    >>> client.gather(client.map(query, range(10), sem=sem))   # doctest: +SKIP
    >>> sem.close()                    # forget it on the scheduler  # doctest: +SKIP

    Behaviour that may surprise:

    * The lease guarantee is in the module docstring: a holder whose client
      is connected is never overbooked, a holder that dies lets go at once
      (or when the scheduler removes its worker), and ``lease_timeout=``
      (default ``distributed.scheduler.locks.lease-timeout``) applies to
      holders the scheduler cannot see (``scheduler_rpc=``).
    * ``release()`` more often than ``acquire()`` raises ``RuntimeError``;
      ``release()`` of a lease the scheduler freed meanwhile returns False.
    * ``register=True`` creates the semaphore on the scheduler at once (on
      an asynchronous client: ``await Semaphore(...)``), and a name that
      exists with another ``max_leases`` raises ``ValueError``.  A copy
      unpickled in a task does not register again; its first ``acquire``
      registers a name the scheduler never saw, and raises
      ``RuntimeError`` for a name that was closed.
    * Tasks that acquire have side effects: submit them with ``pure=False``
      if they may run with the same arguments twice.
    """

    def __init__(self, max_leases: int = 1, name: Any = None, scheduler_rpc: Any = None, loop: Any = None,
                 register: bool = True, client: Any = None, lease_timeout: Any = None):
        _check_max_leases(max_leases)
        if scheduler_rpc is not None and client is not None:
            raise ValueError("Semaphore takes client= or scheduler_rpc=, not both")
        if scheduler_rpc is not None and loop is None:
            raise ValueError("Semaphore(scheduler_rpc=...) needs loop=, the event loop that rpc runs on")
        if loop is not None and scheduler_rpc is None:
            raise ValueError("Semaphore(loop=...) is only meaningful with scheduler_rpc= "
                             "(a client brings its own loop)")
        self.max_leases = max_leases
        self.name = "semaphore-" + uuid.uuid4().hex if name is None else name
        self._key = _normalize_name(self.name)
        self._lease_timeout_arg = lease_timeout
        self.lease_timeout = (_parse_lease_timeout(lease_timeout) if lease_timeout is not None
                              else _configured_lease_timeout())
        self.id = uuid.uuid4().hex
        self._client = client
        self._scheduler_rpc = scheduler_rpc
        self._loop = loop
        self._held = _Held(self._key)
        self._registered = False
        self._registering: Any = None  # an awaitable registration on an asynchronous client
        if register:
            self._register_now()
        else:
            self._registered = True  # a copy of an existing semaphore: the scheduler knows it

    # -- finding the scheduler ----------------------------------------------

    @property
    def client(self) -> Any:
        """The client this semaphore talks through (found on first use);
        None with ``scheduler_rpc=``."""
        if self._client is None and self._scheduler_rpc is None:
            from distributed.client import get_client

            try:
                self._client = get_client()
            except ValueError as e:
                raise RuntimeError(
                    f"Semaphore {self.name!r} is not properly initialized: no client was given and none "
                    f"was found ({e}). Start a Client first, or pass client=") from None
        return self._client

    # -- registration ----------------------------------------------------------

    def _register_now(self) -> None:
        """Register at construction when a client is at hand; otherwise on
        first use."""
        try:
            result = self._run(self._register)
        except RuntimeError as e:
            if "not properly initialized" not in str(e):
                raise
            return  # no client yet: acquire registers
        if asyncio.iscoroutine(result):
            self._registering = asyncio.ensure_future(result)
            self._registering.add_done_callback(_log_failed_registration)

    def register(self):
        """Create this semaphore on the scheduler, or check that it exists
        with this ``max_leases`` (``ValueError`` otherwise).  The
        constructor does it unless ``register=False``.

        >>> Semaphore(2, "db", register=False).register()    # doctest: +SKIP
        """
        return self._run(self._register)

    async def _register(self) -> None:
        await self._scheduler().semaphore_register(name=self._key, max_leases=self.max_leases)
        self._registered = True

    async def _ensure_registered(self) -> None:
        if self._registering is not None:
            await self._registering
        elif not self._registered:
            await self._register()

    def __await__(self):
        async def registered():
            await self._ensure_registered()
            return self

        return registered().__await__()

    # -- the semaphore ---------------------------------------------------------

    def acquire(self, timeout: Any = None):
        """Wait for a lease; True, or False when ``timeout`` (seconds,
        ``"1s"``, a timedelta; ``0`` tries once) passed first.

        >>> sem.acquire(timeout="100ms")      # doctest: +SKIP
        True
        """
        if timeout is not None:
            timeout = config.parse_timedelta(timeout)
            if timeout < 0:
                raise ValueError(f"acquire(timeout=...) must not be negative, got {timeout!r}")
        worker = current_worker()  # looked up in the caller's thread: a task thread knows its worker
        return self._run(self._acquire, timeout, worker.address if worker is not None else None)

    async def _acquire(self, timeout: float | None, worker: str | None) -> bool:
        await self._ensure_registered()
        lease_id = uuid.uuid4().hex
        client = self._client
        retries = _retry_count()
        while True:
            try:
                granted = await self._scheduler().semaphore_acquire(
                    name=self._key, lease_id=lease_id, timeout=timeout, worker=worker,
                    max_leases=self.max_leases,
                    lease_timeout=self.lease_timeout,  # the rhythm this holder refreshes by
                    client=client.id if client is not None else None)
                break
            except OSError as e:
                # The lease id makes a repeated request safe: granted once.
                if retries <= 0:
                    self._abandon(lease_id)
                    raise
                retries -= 1
                logger.info("acquiring semaphore %r failed (%s); trying again", self.name, e)
                await asyncio.sleep(0.1)
            except BaseException:
                # Cancelled or failed on our side: a grant must not stay held by nobody.
                self._abandon(lease_id)
                raise
        if granted:
            self._held.ids.append(lease_id)
            self._held.scheduler, self._held.client = self._scheduler(), client
            self._start_refreshing()
        return bool(granted)

    def _abandon(self, lease_id: str) -> None:
        msg = {"name": self._key, "lease_id": lease_id}
        client = self._client
        if client is not None:
            try:
                client._send_to_scheduler({"op": "semaphore-abandon", **msg})
            except Exception as e:  # a closed client: its leases go with it
                logger.debug("could not abandon a lease of semaphore %r: %s", self.name, e)
            return
        task = asyncio.ensure_future(self._scheduler_rpc.semaphore_abandon(**msg))
        _in_flight.add(task)
        task.add_done_callback(_in_flight_done)

    def release(self):
        """Give back the oldest lease this object holds.  True, or False if
        the scheduler had freed it meanwhile (see the lease guarantee).
        Raises ``RuntimeError`` if this object holds no lease."""
        if not self._held.ids:
            raise RuntimeError(f"Released too often: Semaphore {self.name!r} holds no lease here")
        lease_id = self._held.ids.popleft()
        return self._run(self._release, lease_id)

    async def _release(self, lease_id: str) -> bool:
        released = await self._scheduler().semaphore_release(name=self._key, lease_id=lease_id)
        if not released:
            logger.warning("released lease %s of semaphore %r, which the scheduler had freed already",
                           lease_id, self.name)
        return bool(released)

    def get_value(self):
        """How many leases of this semaphore are held now, by anyone."""
        return self._run(self._get_value)

    async def _get_value(self) -> int:
        return await self._scheduler().semaphore_value(name=self._key)

    def close(self):
        """Forget this semaphore on the scheduler.  Leases still held are
        dropped with a ``RuntimeWarning``; acquiring afterwards raises."""
        result = self._run(self._close)
        if inspect.isawaitable(result):
            return self._warn_after(result)
        self._warn_remaining(result)

    async def _close(self) -> list:
        remaining = await self._scheduler().semaphore_close(name=self._key)
        self._held.ids.clear()
        return remaining

    async def _warn_after(self, closing) -> None:
        self._warn_remaining(await closing)

    def _warn_remaining(self, remaining: list) -> None:
        # Warned in the caller's thread (not the loop's), where it can be seen and caught.
        if remaining:
            warnings.warn(f"Closing semaphore {self.name!r} but there remain unreleased leases {remaining}",
                          RuntimeWarning, stacklevel=3)

    # -- refreshing ------------------------------------------------------------

    def _start_refreshing(self) -> None:
        """Runs on the loop of the client (or rpc): refresh while holding."""
        if not self._held.refreshing and math.isfinite(self.lease_timeout):
            self._held.refreshing = True
            _schedule_refresh(self._held, self.lease_timeout / 5)

    def held(self) -> int:
        """How many leases this object holds (no round trip)."""
        return len(self._held.ids)

    # -- context managers, pickling --------------------------------------------

    def __reduce__(self):
        return _rebuild, (self.max_leases, self.name, self._lease_timeout_arg)

    def __repr__(self) -> str:
        return f"<Semaphore: {self.name!r}, max_leases={self.max_leases}, {self.held()} held by this object>"


def _rebuild(max_leases: int, name: Any, lease_timeout: Any) -> Semaphore:
    return Semaphore(max_leases, name, register=False, lease_timeout=lease_timeout)


def _schedule_refresh(held: _Held, interval: float) -> None:
    """In ``interval`` seconds, tell the scheduler the leases in ``held``
    are alive, and so on while there are any (timers, not a task: nothing
    stays pending when the loop closes)."""
    asyncio.get_running_loop().call_later(interval, _refresh_tick, held, interval, 0)


def _refresh_tick(held: _Held, interval: float, failures: int) -> None:
    client = held.client
    if not held.ids or (client is not None and client.status in ("closing", "closed")):
        held.refreshing = False
        return
    try:
        task = asyncio.ensure_future(held.scheduler.semaphore_refresh_leases(name=held.name,
                                                                             lease_ids=list(held.ids)))
    except Exception as e:  # a closed rpc
        logger.debug("cannot refresh leases of semaphore %r: %r", held.name, e)
        held.refreshing = False
        return
    _in_flight.add(task)

    def done(task: asyncio.Future) -> None:
        _in_flight.discard(task)
        if task.cancelled():
            held.refreshing = False
            return
        failed = 0
        if task.exception() is not None:
            failed = failures + 1
            if failed > _REFRESH_ATTEMPTS:  # the scheduler is gone: so are our leases
                logger.warning("refreshing leases of semaphore %r failed %d times (%r); stopped",
                               held.name, failed, task.exception())
                held.refreshing = False
                return
            logger.debug("refreshing leases of semaphore %r failed: %r", held.name, task.exception())
        elif task.result():
            logger.error("leases %s of semaphore %r were freed by the scheduler while held here",
                         task.result(), held.name)
        try:
            asyncio.get_running_loop().call_later(interval, _refresh_tick, held, interval, failed)
        except RuntimeError:  # the loop is closing
            held.refreshing = False

    task.add_done_callback(done)


def _retry_count() -> int:
    try:
        return max(int(config.get("distributed.comm.retry.count", default=0) or 0), 0)
    except (TypeError, ValueError):
        return 0


def _log_failed_registration(task: asyncio.Future) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.debug("registering a semaphore failed: %r", task.exception())


# Refreshers and abandon calls, kept alive until they finish.
_in_flight: set = set()


def _in_flight_done(task: asyncio.Future) -> None:
    _in_flight.discard(task)
    if not task.cancelled() and task.exception() is not None:
        logger.debug("a semaphore background call failed: %r", task.exception())
