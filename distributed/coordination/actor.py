"""Actors: stateful objects that live on one worker, called from anywhere.

``client.submit(Counter, actor=True)`` runs ``Counter()`` on a worker and
keeps the object there; the Future's result is an ``Actor`` handle.  Calling
a method on the handle sends the call to that worker and returns an
``ActorFuture`` at once; reading any other attribute is a round trip to the
worker.

>>> future = client.submit(Counter, actor=True)    # doctest: +SKIP
>>> counter = future.result()                      # doctest: +SKIP
>>> counter.increment().result()                   # doctest: +SKIP
1
>>> counter.n                                      # doctest: +SKIP
1

Theory of operation
-------------------
* The scheduler marks the task as an actor (``SchedulerState.actor_homes``)
  and places it where the fewest actors live.  The worker runs the
  constructor like any task, then keeps the object in
  ``WorkerState.actors``; its ``data`` holds an ``Actor`` handle, so
  dependents, peers and clients receive handles, never the object, and the
  object is never spilled.
* The handle forwards the names of the class and the attributes the object
  had once constructed (``Actor._attributes``); other names raise
  ``AttributeError`` without a round trip.
* Calls go straight from the caller's client to the worker holding the
  actor (``actor_execute``, ``actor_attribute``).  Plain methods run in
  ``WorkerActors.executor``, a single thread per worker: calls on the actors
  of a worker run one at a time, in arrival order, so a counter incremented
  by many callers at once counts exactly.  ``async def`` methods run on the
  worker's event loop and interleave at their ``await`` points, like any
  asyncio code.  Attribute reads run on the loop too; they never wait
  behind a long method.
* A handle that arrives by pickling (a result, a task argument, a value
  fetched from a peer) binds to the client of that place (the worker's own
  client inside a task) and holds a Future of the actor's key, so the actor
  lives as long as a handle or a Future of it does.  The handle a worker
  keeps in ``data`` holds nothing (it would keep its own key alive forever).
* An actor calling another actor on the same worker, from the actor thread,
  calls it directly and gets an ``EagerActorFuture`` (already done): going
  through the worker would wait for the very thread that waits.
* An actor never moves and is never recomputed.  When its worker leaves,
  the scheduler sends the key to ``erred`` with ``ActorLostError`` ("Worker
  holding Actor was lost ..."): the Future raises it, and so do calls on a
  handle (at once when the client already knows, else when the call finds
  the worker gone).  One still being constructed when its worker dies is
  simply run again elsewhere: no state existed yet.  ``retire_workers``
  refuses a worker where actors live, naming them.

Where upstream dask.distributed differs (COORDINATION.md): attributes set in
``__init__`` need no class-level declaration to be read remotely; calls on a
lost actor raise ``ActorLostError``, a ``RuntimeError`` that is also the
``ValueError`` upstream raised; there is no proxy through the scheduler,
since our clients always reach workers directly.

Thread rules: handles and ActorFutures may be used from any thread;
``WorkerActors`` runs on the worker's loop, plus its one actor thread.
"""
from __future__ import annotations

import abc
import asyncio
import functools
import inspect
import logging
from collections.abc import Generator
from typing import Any

from distributed import config, context
from distributed.comm import CommClosedError
from distributed.core import send_recv
from distributed.exceptions import ActorLostError
from distributed.futures import Future, FutureState
from distributed.protocol import Serialize
from distributed.protocol.serialize import pickle_dumps, pickle_loads
from distributed.threadpool import ThreadPool
from distributed.utils import in_thread_of, sync, thread_state

__all__ = ["Actor", "ActorFuture", "BaseActorFuture", "EagerActorFuture", "ActorLostError", "WorkerActors"]

logger = logging.getLogger(__name__)

# Calls started on a loop, kept alive until they finish.
_running: set = set()

_MISSING = object()


# ----------------------------------------------------------------------
# The handle
# ----------------------------------------------------------------------


class Actor:
    """A handle to an object living on a worker (see the module docstring).

    Methods return an ``ActorFuture`` at once; other attributes are read
    from the worker (an awaitable on an asynchronous client).  Forwarded
    are the names of the class and the attributes the object had when it
    was made (those set in ``__init__``), never names starting with ``_``;
    any other name raises ``AttributeError`` here, so that ``hasattr`` and
    libraries inspecting the handle never call the worker.

    >>> counter = client.submit(Counter, actor=True).result()    # doctest: +SKIP
    >>> counter
    <Actor: Counter, key=Counter-...>
    >>> await counter.increment()        # on an asynchronous client  # doctest: +SKIP
    1
    """

    def __init__(self, cls: type, address: str, key: Any, client: Any = None, attributes=()):
        self._cls = cls
        self._address = address
        self.key = key
        self._client = client
        self._attributes = frozenset(attributes)  # of the object, beyond its class's
        self._future: Future | None = None  # keeps the actor alive; see _rebuild_actor

    # -- binding -----------------------------------------------------------

    @property
    def client(self) -> Any:
        """The client calls go through: the one where this handle arrived,
        else the one found here on first use (the worker's own client
        inside a task)."""
        if self._client is None:
            try:
                self._client = context.client_for_future()
            except ValueError as e:
                raise RuntimeError(f"{self!r} has no client to call through ({e}); start a Client first") \
                    from None
        return self._client

    def _state(self) -> FutureState | None:
        if self._future is not None:
            return self._future._state
        client = self._client
        return client.futures.get(self.key) if client is not None else None

    def _check_alive(self) -> None:
        """Raise ``ActorLostError`` if the scheduler already said the actor is gone."""
        st = self._state()
        if st is None:
            return
        if st.failed:
            exc = st.exception
            if isinstance(exc, ActorLostError):
                raise ActorLostError(*exc.args)
            raise ActorLostError(f"Worker holding Actor was lost: actor {self.key!r} failed ({exc!r})")
        if st.status == "cancelled":
            raise ActorLostError(f"Actor {self.key!r} is gone: its future was cancelled "
                                 "(by cancel(), or because the cluster restarted)")

    def _local_object(self) -> Any:
        """The object itself when this code runs in the actor thread of the
        worker where it lives (an actor calling an actor), else None."""
        if not getattr(thread_state, "actor", False):
            return None
        worker = context.current_worker()
        if worker is None or worker.address != self._address:
            return None
        return worker.state.actors.get(self.key)

    # -- attribute access ----------------------------------------------------

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        self._check_alive()
        local = self._local_object()
        if local is not None:
            return _eager_attribute(local, name, context.current_worker())
        attr = getattr(self._cls, name, _MISSING)
        if attr is _MISSING and name not in self._attributes:
            raise AttributeError(f"{self._cls.__name__} actor {self.key!r} has no attribute {name!r}")
        if callable(attr):
            def call(*args, **kwargs) -> ActorFuture:
                return self._call(name, args, kwargs)

            functools.update_wrapper(call, attr)
            return call
        return self.client.sync(self._ask, "actor_attribute", attribute=name)

    def _call(self, name: str, args: tuple, kwargs: dict) -> ActorFuture:
        client = self.client
        payload = _dumps((args, kwargs))  # here, so that an unpicklable argument raises at the call
        future = ActorFuture(client, f"{self.key}.{name}")
        if in_thread_of(client.loop):
            task = asyncio.ensure_future(self._run_call(future, name, payload))
            _running.add(task)
            task.add_done_callback(_running.discard)
        else:
            client.loop.add_callback(self._run_call, future, name, payload)
        return future

    async def _run_call(self, future: ActorFuture, name: str, payload: list) -> None:
        try:
            result = await self._ask("actor_execute", function=name, args=payload)
        except BaseException as e:
            future._set_error(e)
        else:
            future._set_result(result)

    async def _ask(self, op: str, **msg) -> Any:
        """Send ``op`` to the actor's worker; its result, or its error raised."""
        client = self.client
        if client.connection_pool is None:  # a worker's client still connecting
            await client
        pool = client.connection_pool
        try:
            comm = await pool.connect(self._address)
        except OSError as e:
            raise await self._unreachable(e) from None
        # Only a broken connection means "unreachable": an OSError the method
        # itself raised comes back as a reply and is re-raised as it is.
        try:
            with context.receiving_for(client):  # Futures and handles in the result are this client's
                response = await send_recv(comm, op=op, actor=self.key, **msg)
        except CommClosedError as e:
            comm.abort()
            raise await self._unreachable(e) from None
        except BaseException:
            comm.abort()
            raise
        finally:
            pool.reuse(self._address, comm)
        return response["result"]

    async def _unreachable(self, error: BaseException) -> BaseException:
        """The error for a call that could not reach the worker: wait, up to
        the connect timeout, for the scheduler to tell whether the worker is
        gone (``ActorLostError``); else ``OSError`` (the worker is there but
        cannot be reached from here)."""
        deadline = asyncio.get_running_loop().time() + config.get_timedelta(
            "distributed.comm.timeouts.connect")
        st = self._state()
        while st is not None and not st.failed and st.status != "cancelled":
            if asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.05)
        try:
            self._check_alive()
        except ActorLostError as e:
            return e
        return OSError(f"Unable to contact Actor's worker {self._address} (actor {self.key!r}): {error}")

    # -- the rest ----------------------------------------------------------------

    def __dir__(self) -> list[str]:
        own = set(dir(type(self)))
        own.update(a for a in dir(self._cls) if not a.startswith("_"))
        own.update(self._attributes)
        return sorted(own)

    def __repr__(self) -> str:
        return f"<Actor: {self._cls.__name__}, key={self.key}>"

    def __reduce__(self):
        return _rebuild_actor, (self._cls, self._address, self.key, tuple(sorted(self._attributes)))


def _rebuild_actor(cls: type, address: str, key: Any, attributes: tuple = ()) -> Actor:
    """An unpickled handle: bound to the client of this place, holding a
    Future so that the actor lives while the handle does."""
    handle = Actor(cls, address, key, attributes=attributes)
    try:
        client = context.client_for_future()
    except ValueError:
        return handle  # no client here yet: bound on first use, holding nothing
    handle._client = client
    handle._future = Future(key, client)
    return handle


def _eager_attribute(obj: Any, name: str, worker: Any) -> Any:
    """``name`` of an actor object living in this very worker, for another
    actor's method running in the actor thread: called directly."""
    attr = getattr(obj, name)
    if not callable(attr):
        return attr

    def call(*args, **kwargs) -> EagerActorFuture:
        try:
            if inspect.iscoroutinefunction(attr):
                # Its place is the loop, which is free: this thread waits.
                value = sync(worker.loop, attr, *args, **kwargs)
            else:
                value = attr(*args, **kwargs)
        except Exception as e:
            return EagerActorFuture(error=e)
        return EagerActorFuture(value)

    functools.update_wrapper(call, attr)
    return call


def _dumps(obj: Any) -> list:
    """Arguments as bytes frames: the worker unpickles them itself, so
    that Futures and handles inside bind to its own client."""
    return [bytes(frame) for frame in pickle_dumps(obj)]


def _loads(frames: list) -> Any:
    return pickle_loads(frames[0], frames[1:])


# ----------------------------------------------------------------------
# Futures of calls
# ----------------------------------------------------------------------


class BaseActorFuture(abc.ABC):
    """The result of a method call on an actor: ``result(timeout)``,
    ``done()``, ``await``."""

    @abc.abstractmethod
    def result(self, timeout: float | None = None) -> Any:
        """The method's return value (its exception is raised)."""

    @abc.abstractmethod
    def done(self) -> bool:
        """Whether the call has finished."""

    @abc.abstractmethod
    def __await__(self) -> Generator[Any, None, Any]:
        ...


class ActorFuture(BaseActorFuture):
    """A call on an actor in progress.  Works with ``as_completed``.

    >>> future = counter.increment()      # doctest: +SKIP
    >>> future.result(timeout=5)           # doctest: +SKIP
    1
    """

    def __init__(self, client: Any, name: str):
        self.client = client
        self._state = FutureState(name)  # the same bookkeeping as a Future's
        self._value: Any = None

    def done(self) -> bool:
        return self._state.done()

    def result(self, timeout: float | None = None) -> Any:
        """The return value, waiting up to ``timeout`` seconds
        (``TimeoutError`` then); an awaitable on an asynchronous client."""
        if timeout is not None:
            timeout = config.parse_timedelta(timeout)
        return self.client.sync(self._result, callback_timeout=timeout)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """The exception the call raised, or None."""
        return self.client.sync(self._exception, callback_timeout=timeout)

    async def _exception(self) -> BaseException | None:
        await self._state.wait()
        return self._state.exception if self._state.failed else None

    async def _result(self, raiseit: bool = True) -> Any:
        """The value; the exception is raised (returned with ``raiseit=False``,
        as ``as_completed(with_results=True)`` asks)."""
        await self._state.wait()
        if self._state.failed:
            if raiseit:
                raise self._state.exception
            return self._state.exception
        return self._value

    def __await__(self):
        return self._result().__await__()

    # Set on the client's loop only (FutureState's rule).
    def _set_result(self, value: Any) -> None:
        self._value = value
        self._state.finish(type(value).__name__)

    def _set_error(self, exc: BaseException) -> None:
        self._state.set_error(exc, exc.__traceback__)

    def __repr__(self) -> str:
        return f"<ActorFuture: {self._state.status}, {self._state.key}>"


class EagerActorFuture(BaseActorFuture):
    """A call made directly by an actor on another actor of the same worker:
    done from the start."""

    def __init__(self, value: Any = None, error: BaseException | None = None):
        self._value = value
        self._error = error

    def done(self) -> bool:
        return True

    def result(self, timeout: float | None = None) -> Any:
        if self._error is not None:
            raise self._error
        return self._value

    def exception(self, timeout: float | None = None) -> BaseException | None:
        return self._error

    def __await__(self):
        return self.result()
        yield  # pragma: no cover - makes this a generator

    def __repr__(self) -> str:
        return f"<ActorFuture: {'error' if self._error is not None else 'finished'} (eager)>"


# ----------------------------------------------------------------------
# Worker side
# ----------------------------------------------------------------------


class WorkerActors:
    """A worker's side of actors: runs methods of the actors living there.

    Made by the worker on the first call; the objects themselves are in
    ``worker.state.actors``.

    >>> worker.actor_service().executor          # doctest: +SKIP
    <distributed.threadpool.ThreadPool ...>
    """

    def __init__(self, worker: Any):
        self.worker = worker
        # One thread: calls on this worker's actors run one at a time.
        self.executor = ThreadPool(1, name="Dask-Actor-Threads")

    def _object(self, key: Any) -> Any:
        try:
            return self.worker.state.actors[key]
        except KeyError:
            raise ActorLostError(f"Actor {key!r} is not on worker {self.worker.address} (any more): "
                                 "it was released, or the worker was replaced") from None

    async def execute(self, key: Any, function: str, payload: list) -> dict:
        """Call method ``function`` of actor ``key`` with the pickled
        ``(args, kwargs)``; the reply carries its result."""
        obj = self._object(key)
        with context.working_for(self.worker):  # Futures and handles in the arguments bind here
            args, kwargs = _loads(payload)
            method = getattr(obj, function)
            if inspect.iscoroutinefunction(method):
                result = await method(*args, **kwargs)
            else:
                result = await asyncio.wrap_future(
                    self.executor.submit(self._run, key, method, args, kwargs))
        return {"status": "OK", "result": Serialize(result)}

    def _run(self, key: Any, method, args: tuple, kwargs: dict) -> Any:
        """In the actor thread: ``get_worker()`` works, and a call on another
        actor living here is made directly (see ``Actor._local_object``)."""
        thread_state.worker = self.worker
        thread_state.actor = True
        thread_state.key = key
        try:
            return method(*args, **kwargs)
        finally:
            thread_state.actor = False
            thread_state.key = None

    def attribute(self, key: Any, attribute: str) -> dict:
        """The value of ``attribute`` of actor ``key``."""
        return {"status": "OK", "result": Serialize(getattr(self._object(key), attribute))}

    async def close(self, timeout: float = 10) -> None:
        """Stop the actor thread (waiting up to ``timeout`` for a running call)."""
        await asyncio.get_running_loop().run_in_executor(
            None, lambda: self.executor.shutdown(wait=True, timeout=timeout))
