"""The Client: submit work to a cluster and get Futures back.

A Client keeps one batched stream to the scheduler: submissions, releases
and cancellations go out on it in order, and the scheduler's reports on
keys (in memory, erred, lost, cancelled) come back on it and update the
``FutureState`` of each key.  Results are fetched straight from the workers
that hold them.

Blocking and asynchronous use
-----------------------------
``Client()`` in a script or notebook runs the event loop in a daemon thread
(``LoopRunner``) and every method blocks.  Inside a running loop (or with
``asynchronous=True``) the same methods return awaitables.  The
underscore coroutines (``_gather``, ``_scatter`` ...) are the asynchronous
implementations and work in both worlds, including ``yield`` inside
``tornado.gen.coroutine``.

Thread rules: public methods may be called from any thread; state changes
happen on the loop (``loop.add_callback``), except the reference counts,
which are kept under a lock so that ``Future.__del__`` works from any thread.
"""
from __future__ import annotations

import asyncio
import atexit
import html
import logging
import sys
import threading
import uuid
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from distributed import config, dask_graphs
from distributed.batched import BatchedSend
from distributed.comm import CommClosedError, connect, normalize_address
from distributed.core import ConnectionPool, rpc
from distributed.exceptions import CancelledError, FutureLost, clean_exception  # noqa: F401 (CancelledError: old imports)
from distributed.futures import Future, FutureState, futures_of
from distributed.protocol import Serialize, serialize
from distributed.spec import (
    CALL,
    WALK,
    TaskRef,
    convert_graph_value,
    make_spec,
    pickled_function,
    spec_frames,
)
from distributed.structure import flatten_keys, graph_order, pack_like, replace_futures, substitute_results
from distributed.utils import LoopRunner, funcname, in_thread_of, sync, thread_state, tokenize

__all__ = ["Client", "default_client", "get_client", "worker_client"]

logger = logging.getLogger(__name__)

_global_clients: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
_global_client_index = [0]
_default_client: list = [None]


def _set_default(client: Client | None) -> None:
    _default_client[0] = client


def default_client(c: Client | None = None) -> Client:
    """The Client used when none is named: the most recent one created with
    ``set_as_default=True``.

    >>> client = default_client()    # doctest: +SKIP
    """
    if c is not None:
        return c
    c = _default_client[0]
    if c is not None and c.status not in ("closed", "closing"):
        return c
    for i in sorted(_global_clients, reverse=True):
        c = _global_clients.get(i)
        if c is not None and c.status not in ("closed", "closing"):
            return c
    raise ValueError(
        "No clients found. Start a client and point it to the scheduler address:\n"
        "    from distributed import Client\n    client = Client('ip-addr-of-scheduler:8786')")


def _get_client_for_future() -> Client:
    worker = getattr(thread_state, "worker", None)
    if worker is not None:
        return get_client()
    return default_client()


def get_client(address=None, timeout=None, resolve_address: bool = True) -> Client:
    """A Client from inside a task (connected to the worker's scheduler), or
    the default client outside of one.

    >>> def task(n):                        # doctest: +SKIP
    ...     client = get_client()
    ...     return client.gather(client.map(inc, range(n)))
    """
    from distributed.worker.server import get_worker

    try:
        worker = get_worker()
    except ValueError:
        worker = None
    if worker is not None:
        address = address or worker.scheduler_address
        client = getattr(worker, "_client", None)
        if client is not None and client.status == "running" and (
                address is None or normalize_address(address) == client.scheduler_address):
            return client
        # ``worker.loop`` is the loop of the *calling* thread (IOLoop.current())
        # when read from a task thread; the loop the worker runs on is the one
        # it recorded when it started.
        loop = worker.loop
        asynchronous = in_thread_of(loop)
        client = Client(worker.scheduler_address, loop=loop, set_as_default=False,
                        asynchronous=asynchronous, timeout=timeout, name="worker")
        worker._client = client
        return client
    try:
        client = default_client()
        if address is None or normalize_address(address) == client.scheduler_address:
            return client
    except ValueError:
        if address is None:
            raise
    return Client(address, timeout=timeout)


@contextmanager
def worker_client(timeout=None, separate_thread: bool = True):
    """Inside a task: a Client for submitting more tasks, with the task's
    thread taken out of the worker's pool meanwhile so waiting on the new
    tasks cannot deadlock the pool.

    >>> def fib(n):                                     # doctest: +SKIP
    ...     if n < 2:
    ...         return n
    ...     with worker_client() as client:
    ...         a, b = client.submit(fib, n - 1), client.submit(fib, n - 2)
    ...         return a.result() + b.result()
    """
    from distributed.threadpool import rejoin, secede

    client = get_client(timeout=timeout)
    if separate_thread:
        secede()
    try:
        yield client
    finally:
        if separate_thread:
            rejoin()


class Client:
    """Connect to a cluster and submit work.

    >>> client = Client("tcp://127.0.0.1:8786")    # doctest: +SKIP
    >>> client = Client()                          # a local cluster  # doctest: +SKIP
    >>> future = client.submit(sum, [1, 2])        # doctest: +SKIP
    >>> future.result()                            # doctest: +SKIP
    3
    """

    def __init__(
        self,
        address=None,
        loop=None,
        timeout=None,
        set_as_default: bool = True,
        scheduler_file: str | None = None,
        security=None,
        asynchronous: bool = False,
        name: str | None = None,
        heartbeat_interval=None,
        serializers=None,
        deserializers=None,
        extensions=None,
        direct_to_workers: bool | None = None,
        connection_limit: int = 512,
        start: bool = True,
        **cluster_kwargs,
    ):
        if scheduler_file is not None and address is None:
            import json

            with open(scheduler_file) as f:
                address = json.load(f)["address"]
        self.id = f"{type(self).__name__}-{name + '-' if name else ''}{uuid.uuid4()}"
        self.name = name
        self.timeout = config.get_timedelta("distributed.comm.timeouts.connect", timeout)
        self.futures: dict[Any, FutureState] = {}
        self.refcount: dict[Any, int] = {}
        self._ref_lock = threading.RLock()
        self.status = "newly-created"
        self.cluster = None
        self._own_cluster = False
        self._cluster_kwargs = cluster_kwargs
        self.direct_to_workers = direct_to_workers
        self.scheduler = None
        self.scheduler_comm = None
        self._stream: BatchedSend | None = None
        self._pending_msgs: list = []
        self._handle_report_task = None
        self._reconnect_task = None
        self._started_future = None
        self.datasets = _Datasets(self)
        # key -> the FutureState this client cancelled itself; the scheduler's
        # echo of that cancellation must not cancel a later resubmission.
        self._cancelled_states: dict = {}
        self._key_waiters: dict = {}  # key -> asyncio futures set by key-in-memory
        self._restart_waiters: list = []  # answers to restart requests, in order
        self._info_cache: tuple | None = None  # (workers, threads, memory) for repr
        self._set_as_default = set_as_default
        self.connection_pool: ConnectionPool | None = None
        self._connection_limit = connection_limit
        self._gather_semaphore = None

        if address is not None and hasattr(address, "scheduler_address"):
            self.cluster = address
            address = address.scheduler_address
            if loop is None and getattr(self.cluster, "loop", None) is not None and not asynchronous:
                loop = None  # our own loop thread; the cluster runs on its own
        elif address is not None and not isinstance(address, str) and not isinstance(address, tuple):
            raise TypeError(f"Client address must be a string, tuple or cluster, not {type(address).__name__}")
        self._address = normalize_address(address) if address is not None else None

        running_here = _loop_running_in_this_thread()
        self._asynchronous = bool(asynchronous or running_here)
        if self._asynchronous and loop is None:
            from tornado.ioloop import IOLoop

            loop = IOLoop.current()
        self._loop_runner = LoopRunner(loop=loop, asynchronous=self._asynchronous)
        self.loop = self._loop_runner.loop

        _global_client_index[0] += 1
        _global_clients[_global_client_index[0]] = self
        if start:
            self.start()

    # ------------------------------------------------------------------
    # Starting and closing
    # ------------------------------------------------------------------

    @property
    def asynchronous(self) -> bool:
        """True when called from this client's own running loop."""
        return self._asynchronous and in_thread_of(self.loop)

    @property
    def scheduler_address(self) -> str | None:
        return self._address

    def start(self, **kwargs):
        """Connect (blocking clients wait; asynchronous ones get an awaitable)."""
        if self.status == "running":
            return self
        self._loop_runner.start()
        if self._asynchronous:
            if self._started_future is None:
                self._started_future = asyncio.ensure_future(self._start())
            return self._started_future
        sync(self.loop, self._start)
        return self

    def __await__(self):
        if self._started_future is None:
            self._started_future = asyncio.ensure_future(self._start())
        return self._started_future.__await__()

    async def _start(self, timeout=None, **kwargs) -> Client:
        if self.status == "running":
            return self
        self.status = "connecting"
        if self._address is None:
            from distributed.deploy.local import LocalCluster

            kwargs = dict(self._cluster_kwargs)
            kwargs.setdefault("dashboard_address", None)
            self.cluster = await LocalCluster(asynchronous=True, **kwargs)
            self._own_cluster = True
            self._address = self.cluster.scheduler_address
        timeout = timeout or self.timeout
        try:
            await self._connect_and_register(timeout)
        except OSError as e:
            self.status = "closed"
            raise OSError(f"Client could not connect to the scheduler at {self._address}: {e}") from e
        await self._update_scheduler_info()
        if self._set_as_default:
            _set_default(self)
        if "dask" in sys.modules:
            dask_graphs.use_task_based_shuffles()
        return self

    async def _connect_and_register(self, timeout: float) -> None:
        """Open the report stream to the scheduler; flush what was queued."""
        comm = await connect(self._address, timeout=timeout)
        comm.name = "client->scheduler"
        try:
            await comm.write({"op": "register-client", "client": self.id, "reply": False})
            msg = await asyncio.wait_for(comm.read(), timeout)
        except BaseException:
            comm.abort()
            raise
        if not msg or msg[0].get("op") != "stream-start":
            comm.abort()
            raise ValueError(f"unexpected first message from the scheduler: {msg!r}")
        self.scheduler_comm = comm
        if self.scheduler is None:
            self.scheduler = rpc(self._address, timeout=timeout)
        if self.connection_pool is None:
            self.connection_pool = ConnectionPool(limit=self._connection_limit)
        self._stream = BatchedSend(name="client->scheduler")
        self._stream.start(comm)
        self.status = "running"
        pending, self._pending_msgs = self._pending_msgs, []
        if pending:
            self._stream.send(*pending)
        self._handle_report_task = asyncio.ensure_future(self._handle_report(comm))

    async def _reconnect(self) -> None:
        """Connect again to a scheduler that went away (restarted at the
        same address), for up to ``timeout`` seconds; then give up and close."""
        deadline = asyncio.get_running_loop().time() + self.timeout
        old, self.scheduler = self.scheduler, None  # its connections died with the scheduler
        if old is not None:
            await old.close_rpc()
        if self.connection_pool is not None:
            self.connection_pool.remove(self._address)
        while self.status == "connecting":
            try:
                await self._connect_and_register(timeout=max(min(self.timeout, 5), 0.5))
                logger.info("Client reconnected to the scheduler at %s", self._address)
                return
            except Exception as e:
                logger.debug("reconnecting to %s failed: %s", self._address, e)
            if asyncio.get_running_loop().time() > deadline:
                logger.error("Client could not reconnect to the scheduler at %s within %s s; closing",
                             self._address, self.timeout)
                await self._close()
                return
            await asyncio.sleep(0.1)

    async def _handle_report(self, comm) -> None:
        """Apply the scheduler's reports until the stream closes."""
        handlers = {
            "key-in-memory": self._on_key_in_memory,
            "task-erred": self._on_task_erred,
            "lost-data": self._on_lost_data,
            "cancelled-keys": self._on_cancelled_keys,
            "restart": self._on_restart,
            "restart-done": self._on_restart_done,
            "stream-closed": self._on_stream_closed,
        }
        try:
            while True:
                msgs = await comm.read()
                if isinstance(msgs, dict):
                    msgs = (msgs,)
                for msg in msgs:
                    handler = handlers.get(msg.get("op"))
                    if handler is None:
                        logger.debug("client: unknown message %r", msg.get("op"))
                        continue
                    handler(**{k: v for k, v in msg.items() if k != "op"})
        except (CommClosedError, OSError):
            pass
        except Exception:
            logger.exception("client: error while handling scheduler reports")
        if self.status == "running":
            # The scheduler dropped this client and its keys: every future
            # is cancelled.  New work waits for the reconnection.
            logger.warning("Client lost its connection to the scheduler at %s; reconnecting", self._address)
            self.status = "connecting"
            self._stream.abort()
            self._on_restart("the connection to the scheduler was lost")
            self._fail_key_waiters("the connection to the scheduler was lost")
            self._reconnect_task = asyncio.ensure_future(self._reconnect())

    def _fail_key_waiters(self, reason: str) -> None:
        restarts, self._restart_waiters = self._restart_waiters, []
        for answer in restarts:
            if not answer.done():
                answer.set_exception(CommClosedError(reason))
        waiters, self._key_waiters = self._key_waiters, {}
        for futs in waiters.values():
            for fut in futs:
                if not fut.done():
                    fut.set_exception(CommClosedError(reason))

    def _on_key_in_memory(self, key=None, type=None, workers=(), **kwargs) -> None:
        st = self.futures.get(key)
        if st is not None:
            st.finish(type, workers)
        for fut in self._key_waiters.pop(key, ()):
            if not fut.done():
                fut.set_result(None)

    def _on_task_erred(self, key=None, exception=None, traceback=None, traceback_text=None, **kwargs) -> None:
        st = self.futures.get(key)
        if st is None:
            return
        try:
            _, exc, tb = clean_exception(exception, traceback)
        except Exception as e:  # an exception we cannot unpickle here
            exc, tb = e, None
        if traceback_text and exc.__cause__ is None:
            from distributed.exceptions import RemoteTraceback

            exc.__cause__ = RemoteTraceback(traceback_text)
        if isinstance(exc, FutureLost):
            st.set_lost(exc, tb)
        else:
            st.set_error(exc, tb)

    def _on_lost_data(self, key=None, **kwargs) -> None:
        st = self.futures.get(key)
        if st is not None and st.status != "error":
            st.lose()

    def _on_cancelled_keys(self, keys=(), **kwargs) -> None:
        for key in keys:
            st = self.futures.get(key)
            cancelled = self._cancelled_states.pop(key, _NO_STATE)
            if cancelled is not _NO_STATE and cancelled is not st:
                continue  # the echo of our own cancel; ``st`` is a resubmission
            if st is not None:
                st.cancel()

    def _on_restart(self, reason: str = "the cluster was restarted", **kwargs) -> None:
        for st in list(self.futures.values()):
            st.cancel(reason)
        self.futures.clear()
        self._cancelled_states.clear()
        with self._ref_lock:
            self.refcount.clear()

    def _on_restart_done(self, **msg) -> None:
        if self._restart_waiters:
            answer = self._restart_waiters.pop(0)
            if not answer.done():
                answer.set_result(msg)

    def _on_stream_closed(self, **kwargs) -> None:
        logger.info("the scheduler at %s is closing", self._address)

    def close(self, timeout=None):
        """Close the client (and a local cluster it started); idempotent."""
        if self.status == "closed":
            return None if not self.asynchronous else _completed()
        if self.asynchronous:
            return self._close()
        if self._loop_runner.is_started() and self.loop.asyncio_loop.is_running():
            try:
                sync(self.loop, self._close, callback_timeout=timeout or 20)
            except (asyncio.TimeoutError, RuntimeError) as e:
                logger.warning("client close did not finish cleanly: %s", e)
        self._loop_runner.stop()
        self.status = "closed"
        return None

    async def _close(self, fast: bool = False) -> None:
        if self.status == "closed":
            return
        self.status = "closing"
        if self._reconnect_task is not None and self._reconnect_task is not asyncio.current_task():
            self._reconnect_task.cancel()
        if self._stream is not None and not self._stream.closed():
            try:
                self._stream.send({"op": "close-client"})
            except CommClosedError:
                pass
            await self._stream.close(timeout=2)
        if self._handle_report_task is not None:
            self._handle_report_task.cancel()
            try:
                await self._handle_report_task
            except BaseException:
                pass
        for st in self.futures.values():
            if not st.done():
                st.cancel("the client was closed")
        self._fail_key_waiters("the client was closed")
        if self.scheduler is not None:
            await self.scheduler.close_rpc()
        if self.connection_pool is not None:
            await self.connection_pool.close()
        if self._own_cluster and self.cluster is not None:
            await self.cluster._close()
        if _default_client[0] is self:
            _set_default(None)
        self.status = "closed"

    def shutdown(self):
        """Close the client and the cluster object it runs on (one it started,
        or one passed as its address); idempotent.

        A scheduler the client merely connected to by address keeps running:
        seed-era code ends every client with ``yield c._shutdown()`` while
        other clients go on using the scheduler.
        """
        if self.status == "closed":
            return None if not self.asynchronous else _completed()
        if self.asynchronous:
            return self._shutdown()
        cluster = self.cluster if not self._own_cluster else None
        self.close()
        if cluster is not None:
            cluster.close()
        return None

    async def _shutdown(self, fast: bool = False) -> None:
        if self.status == "closed":
            return
        cluster = self.cluster
        await self._close(fast=fast)
        if cluster is not None and not self._own_cluster:
            await cluster._close()

    def __enter__(self):
        if self.status != "running" and not self._asynchronous:
            self.start()
        return self

    def __exit__(self, *exc):
        self.close()

    async def __aenter__(self):
        if self._started_future is not None:
            await self._started_future
        elif self.status != "running":
            await self._start()
        return self

    async def __aexit__(self, *exc):
        await self._close()

    def __del__(self):
        try:
            if self.status == "running" and not self._asynchronous and self._loop_runner.is_started():
                self.close(timeout=2)
        except Exception:
            pass

    # ------------------------------------------------------------------
    # Bridging sync and async
    # ------------------------------------------------------------------

    def sync(self, func: Callable, *args, asynchronous: bool | None = None,
             callback_timeout: float | None = None, **kwargs):
        """Run coroutine function ``func``: return its awaitable when
        asynchronous, else block until it finishes."""
        if asynchronous or (asynchronous is None and self.asynchronous):
            coro = func(*args, **kwargs)
            if callback_timeout is not None:
                coro = asyncio.wait_for(coro, callback_timeout)
            return coro
        if self.status not in ("running", "connecting", "closing") and not self._loop_runner.is_started():
            raise RuntimeError(f"the client is {self.status}; it cannot run {getattr(func, '__name__', func)}")
        return sync(self.loop, func, *args, callback_timeout=callback_timeout, **kwargs)

    def _check_open(self) -> None:
        """New work on a closed client would never run: say so at once."""
        if self.status in ("closing", "closed"):
            raise RuntimeError(f"the client is {self.status}; it cannot take new work")

    def _send_to_scheduler(self, msg: dict) -> None:
        """Queue a stream message (from any thread); order is preserved."""
        if in_thread_of(self.loop):
            self._send_now(msg)
        else:
            self.loop.add_callback(self._send_now, msg)

    def _send_now(self, msg: dict) -> None:
        if self.status in ("running",) and self._stream is not None:
            try:
                self._stream.send(msg)
                return
            except CommClosedError:
                pass
        if self.status in ("newly-created", "connecting"):
            self._pending_msgs.append(msg)

    # ------------------------------------------------------------------
    # Reference counting
    # ------------------------------------------------------------------

    def _inc_ref(self, key, state: FutureState | None = None) -> FutureState:
        with self._ref_lock:
            self.refcount[key] = self.refcount.get(key, 0) + 1
            st = self.futures.get(key)
            if st is None:
                st = state or FutureState(key)
                self.futures[key] = st
            return st

    def _dec_ref(self, key) -> None:
        with self._ref_lock:
            n = self.refcount.get(key, 0) - 1
            if n > 0:
                self.refcount[key] = n
                return
            self.refcount.pop(key, None)
            self.futures.pop(key, None)
        if self.status in ("running", "newly-created", "connecting"):
            try:
                self._send_to_scheduler({"op": "client-releases-keys", "keys": [key]})
            except RuntimeError:  # loop closed
                pass

    # ------------------------------------------------------------------
    # Submitting work
    # ------------------------------------------------------------------

    def submit(self, func: Callable, *args, key=None, workers=None, resources=None, retries=None,
               priority: int = 0, fifo_timeout=None, allow_other_workers: bool = False,
               actor: bool = False, actors: bool = False, pure: bool | None = None, **kwargs) -> Future:
        """Run ``func(*args, **kwargs)`` on the cluster; returns a Future.

        >>> future = client.submit(add, 1, 2)     # doctest: +SKIP
        """
        if not callable(func):
            raise TypeError("First input to submit must be a callable function")
        if actor or actors:
            raise NotImplementedError("actors are not supported")
        if allow_other_workers and workers is None:
            raise ValueError("allow_other_workers=True needs workers=")
        pure = True if pure is None else pure
        spec, deps, token = self._make_spec(func, args, kwargs)
        if key is None:
            key = f"{funcname(func)}-{token if pure else uuid.uuid4().hex}"
        with self._ref_lock:
            if key in self.futures:
                return Future(key, self, inform=False)
            future = Future(key, self, inform=False)
        msg = self._graph_message({key: spec}, {key: deps}, [key], {key: 0}, priority,
                                  workers, allow_other_workers, resources, retries)
        self._check_open()
        self._send_to_scheduler(msg)
        return future

    def _make_spec(self, func, args, kwargs) -> tuple[dict, list, str]:
        fbytes = pickled_function(func)
        deps: dict = {}
        if args:
            args = replace_futures(args, deps, self)
        if kwargs:
            kwargs = replace_futures(kwargs, deps, self)
        spec = make_spec(CALL, fbytes, (args, kwargs))
        return spec, list(deps), tokenize(*spec_frames(spec))

    def _graph_message(self, tasks, dependencies, keys, priority, user_priority, workers,
                       allow_other_workers, resources, retries) -> dict:
        msg = {"op": "update-graph", "tasks": tasks, "dependencies": dependencies,
               "keys": list(keys), "priority": priority, "user_priority": user_priority}
        if workers is not None:
            if isinstance(workers, (str, tuple)) and not (isinstance(workers, tuple) and len(workers) != 2):
                workers = [workers]
            workers = [normalize_address(w) if isinstance(w, tuple) else w for w in workers]
            msg["restrictions"] = {k: list(workers) for k in tasks}
            if allow_other_workers:
                msg["loose_restrictions"] = list(tasks)
        if resources:
            msg["resources"] = {k: resources for k in tasks}
        if retries:
            msg["retries"] = {k: retries for k in tasks}
        return msg

    def map(self, func: Callable, *iterables, key=None, workers=None, retries=None, resources=None,
            priority: int = 0, allow_other_workers: bool = False, fifo_timeout=None,
            actor: bool = False, actors: bool = False, pure: bool | None = None,
            batch_size=None, **kwargs) -> list[Future]:
        """``submit`` over each set of arguments; a list of Futures.

        >>> futures = client.map(inc, range(100))    # doctest: +SKIP
        """
        if not callable(func):
            raise TypeError("First input to map must be a callable function")
        if not iterables:
            raise TypeError("map needs at least one iterable")
        if any(isinstance(it, dict) for it in iterables):
            raise TypeError("Dictionaries are not supported as map arguments")
        iterables = [list(it) for it in iterables]
        n = min(len(it) for it in iterables)
        if isinstance(key, (list, tuple)) and len(key) < n:
            raise ValueError(f"map got {len(key)} keys for {n} tasks")
        pure = True if pure is None else pure
        prefix = key if isinstance(key, str) else funcname(func)
        tasks: dict = {}
        dependencies: dict = {}
        order: dict = {}
        futures: list[Future] = []
        fbytes = pickled_function(func)
        for i, args in enumerate(zip(*iterables)):
            deps: dict = {}
            args = replace_futures(args, deps, self)
            kw = replace_futures(kwargs, deps, self) if kwargs else kwargs
            spec = make_spec(CALL, fbytes, (args, kw))
            if isinstance(key, (list, tuple)):
                k = key[i]
            elif pure:
                k = f"{prefix}-{tokenize(*spec_frames(spec))}"
            else:
                k = f"{prefix}-{uuid.uuid4().hex}"
            with self._ref_lock:
                known = k in self.futures
                futures.append(Future(k, self, inform=False))
            if known or k in tasks:
                continue
            tasks[k] = spec
            dependencies[k] = list(deps)
            order[k] = i
        if tasks:
            self._send_to_scheduler(self._graph_message(
                tasks, dependencies, list(tasks), order, priority, workers,
                allow_other_workers, resources, retries))
        return futures

    def get(self, dsk: dict, keys, workers=None, allow_other_workers=None, resources=None,
            sync: bool = True, asynchronous=None, direct=None, retries=None, priority: int = 0,
            fifo_timeout=None, actors=None, **kwargs):
        """Run a dask-style graph and return the values of ``keys`` (nested
        like ``keys``).

        >>> client.get({"x": 1, "y": (inc, "x")}, "y")    # doctest: +SKIP
        2
        """
        futures = self._graph_to_futures(dsk, keys, workers, allow_other_workers, resources,
                                         retries, priority)
        packed = pack_like(keys, futures)
        if not sync:
            return packed
        try:
            return self.sync(self._gather, packed, asynchronous=asynchronous, direct=direct)
        finally:
            if not (asynchronous or self.asynchronous):
                for f in futures.values():
                    f.release()

    async def _get(self, dsk, keys, **kwargs):
        futures = self._graph_to_futures(dsk, keys, kwargs.get("workers"), kwargs.get("allow_other_workers"),
                                         kwargs.get("resources"), kwargs.get("retries"), kwargs.get("priority", 0))
        try:
            return await self._gather(pack_like(keys, futures))
        finally:
            for f in futures.values():
                f.release()

    def _graph_to_futures(self, dsk: dict, keys, workers=None, allow_other_workers=None,
                          resources=None, retries=None, priority: int = 0) -> dict:
        if dask_graphs.is_dask_graph(dsk):
            return self._dask_graph_to_futures(dask_graphs.materialize(dsk), keys, workers,
                                               allow_other_workers, resources, retries, priority,
                                               annotations=dask_graphs.annotations_of(dsk))
        dsk = dict(dsk)
        flat_keys = list(flatten_keys(keys))
        missing = [k for k in flat_keys if k not in dsk and k not in self.futures]
        if missing:
            raise KeyError(f"keys {missing!r} are not in the graph")
        graph_keys = set(dsk)
        tasks: dict = {}
        dependencies: dict = {}
        for k, value in dsk.items():
            if isinstance(value, Future):
                value = TaskRef(value.key)
                tasks_deps = {value.key}
                spec_value = value
            else:
                tasks_deps: set = set()
                holder: dict = {}
                value = replace_futures(value, holder, self)
                tasks_deps.update(holder)
                spec_value = convert_graph_value(value, graph_keys, tasks_deps)
            tasks_deps.discard(k)
            if type(spec_value).__name__ == "NestedCall":
                spec = make_spec(WALK, pickled_function(spec_value.func), (spec_value.args, {}))
            else:
                spec = make_spec(WALK, None, ((spec_value,), {}))
            tasks[k] = spec
            dependencies[k] = list(tasks_deps)
        order = graph_order(dependencies, flat_keys)
        futures = {}
        with self._ref_lock:
            for k in flat_keys:
                futures[k] = Future(k, self, inform=False)
        self._send_to_scheduler(self._graph_message(
            tasks, dependencies, flat_keys, order, priority, workers,
            bool(allow_other_workers), resources, retries))
        return futures

    def _dask_graph_to_futures(self, graph: dict, keys, workers=None, allow_other_workers=None,
                               resources=None, retries=None, priority: int = 0,
                               annotations: dict | None = None) -> dict:
        """Submit a materialized dask graph (``{key: GraphNode}``)."""
        flat_keys = list(flatten_keys(keys))
        held = {k for k in graph if k in self.futures and self.futures[k].status != "error"}
        missing = [k for k in flat_keys if k not in graph and k not in self.futures]
        if missing:
            raise KeyError(f"keys {missing!r} are not in the graph")
        tasks, dependencies = dask_graphs.node_specs(graph, held)
        order = dask_graphs.graph_priorities(graph)
        futures = {}
        with self._ref_lock:
            for k in flat_keys:
                futures[k] = Future(k, self, inform=k not in tasks)
        msg = self._graph_message(
            tasks, dependencies, [k for k in flat_keys if k in tasks],
            {k: order.get(k, 0) for k in tasks}, priority, workers,
            bool(allow_other_workers), resources, retries)
        if annotations:
            dask_graphs.apply_annotations(msg, annotations)
        self._check_open()
        self._send_to_scheduler(msg)
        return futures

    # ------------------------------------------------------------------
    # Dask collections
    # ------------------------------------------------------------------

    def compute(self, collections, sync: bool = False, optimize_graph: bool = True, workers=None,
                allow_other_workers: bool = False, resources=None, retries=None, priority: int = 0,
                fifo_timeout=None, actors=None, traverse: bool = True, **kwargs):
        """Start computing dask collections; a Future per collection (its
        final value), or the values themselves with ``sync=True``.

        >>> total = client.compute(x.sum())     # doctest: +SKIP
        >>> total.result()                      # doctest: +SKIP
        """
        from dask._expr import FinalizeCompute
        from dask.base import collections_to_expr, is_dask_collection

        dask_graphs.use_task_based_shuffles()
        if isinstance(collections, dict):
            names = list(collections)
            futures = self.compute(list(collections.values()), sync=sync, optimize_graph=optimize_graph,
                                   workers=workers, allow_other_workers=allow_other_workers,
                                   resources=resources, retries=retries, priority=priority)
            return dict(zip(names, futures))
        singleton = not isinstance(collections, (list, tuple, set))
        items = [collections] if singleton else list(collections)
        graph: dict = {}
        final_keys: dict = {}
        annotations: dict = {}
        for i, item in enumerate(items):
            if is_dask_collection(item):
                expr = FinalizeCompute(collections_to_expr([item], optimize_graph)).optimize()
                graph.update(dask_graphs.materialize(expr))
                dask_graphs.merge_annotations(annotations, dask_graphs.annotations_of(expr))
                final_keys[i] = list(flatten_keys(expr.__dask_keys__()))[0]
        futures = self._dask_graph_to_futures(graph, list(final_keys.values()), workers,
                                              allow_other_workers, resources, retries, priority,
                                              annotations) if graph else {}
        out = [futures[final_keys[i]] if i in final_keys else item for i, item in enumerate(items)]
        if sync:
            out = self.gather(out)
        return out[0] if singleton else out

    def persist(self, collections, optimize_graph: bool = True, workers=None,
                allow_other_workers: bool = False, resources=None, retries=None, priority: int = 0,
                fifo_timeout=None, actors=None, **kwargs):
        """Start computing dask collections and keep the results on the
        cluster; returns the same collections backed by futures.

        >>> x = client.persist(x)               # doctest: +SKIP
        """
        import dask
        from dask.base import is_dask_collection

        dask_graphs.use_task_based_shuffles()
        singleton = not isinstance(collections, (list, tuple, set))
        items = [collections] if singleton else list(collections)
        colls = [c for c in items if is_dask_collection(c)]
        if optimize_graph and colls:
            colls = list(dask.optimize(*colls))
        graph: dict = {}
        keys: list = []
        annotations: dict = {}
        for c in colls:
            graph.update(dask_graphs.materialize(c))
            dask_graphs.merge_annotations(annotations, dask_graphs.annotations_of(c))
            keys.extend(flatten_keys(c.__dask_keys__()))
        futures = self._dask_graph_to_futures(graph, keys, workers, allow_other_workers,
                                              resources, retries, priority,
                                              annotations) if colls else {}
        rebuilt = iter([])
        if colls:
            built = []
            for c in colls:
                func, args = c.__dask_postpersist__()
                built.append(func({k: futures[k] for k in flatten_keys(c.__dask_keys__())}, *args))
            rebuilt = iter(built)
        out = [next(rebuilt) if is_dask_collection(item) else item for item in items]
        return out[0] if singleton else out

    # ------------------------------------------------------------------
    # Getting results
    # ------------------------------------------------------------------

    def gather(self, futures, errors: str = "raise", direct=None, asynchronous=None):
        """Values of the futures, in the same structure (list, dict, nested).

        >>> client.gather([f1, {"b": f2}])    # doctest: +SKIP
        [1, {'b': 2}]
        """
        if isinstance(futures, Iterator) and not isinstance(futures, (list, tuple, dict, set)):
            return (self.gather(f, errors=errors, direct=direct) for f in futures)
        return self.sync(self._gather, futures, errors=errors, direct=direct, asynchronous=asynchronous)

    async def _gather_one(self, future: Future):
        return await self._gather(future)

    async def _gather(self, futures, errors: str = "raise", direct=None, local_worker=None):
        if errors not in ("raise", "skip"):
            raise ValueError(f"errors must be 'raise' or 'skip', not {errors!r}")
        found = futures_of(futures)
        for f in found:
            if f.client is not self:
                raise ValueError(f"{f!r} belongs to another client; gather it with that client")
        states = {f.key: f._state for f in found}
        data: dict = {}
        bad: set = set()
        deadline_tries = 0
        while True:
            for key, st in states.items():
                if key in data or key in bad:
                    continue
                await st.wait()
                if st.failed:
                    if errors == "raise":
                        raise st.exception.with_traceback(st.traceback)
                    bad.add(key)
                elif st.status == "cancelled":
                    if errors == "raise":
                        raise st.cancelled_error()
                    bad.add(key)
            wanted = [k for k in states if k not in data and k not in bad]
            if not wanted:
                break
            fetched, failed = await self._fetch(wanted, {k: states[k].workers for k in wanted})
            data.update(fetched)
            if failed:
                deadline_tries += 1
                for key, worker in failed.items():
                    if worker is not None:
                        self._send_to_scheduler(
                            {"op": "report-missing-data", "key": key, "errant_worker": worker})
                    st = states[key]
                    if st.status == "finished":
                        st.workers = ()
                await asyncio.sleep(min(0.01 * deadline_tries, 0.2))
        return substitute_results(futures, data, bad)

    async def _fetch(self, keys: list, known: dict) -> tuple[dict, dict]:
        """Fetch keys from workers; returns (data, {key: failed worker})."""
        unknown = [k for k in keys if not known.get(k)]
        who_has = {k: list(known[k]) for k in keys if known.get(k)}
        if unknown:
            who_has.update(await self.scheduler.who_has(keys=unknown))
        by_worker: dict[str, list] = {}
        failed: dict = {}
        for k in keys:
            holders = who_has.get(k) or ()
            if not holders:
                failed[k] = None
                continue
            by_worker.setdefault(sorted(holders)[0], []).append(k)
        pool = self.connection_pool

        async def from_worker(worker, ks):
            try:
                return worker, ks, await pool(worker).get_data(keys=ks, who=self.id)
            except (OSError, CommClosedError) as e:
                return worker, ks, e

        data: dict = {}
        results = await asyncio.gather(*(from_worker(w, ks) for w, ks in by_worker.items()))
        for worker, ks, response in results:
            if isinstance(response, BaseException):
                logger.info("could not fetch from %s: %s", worker, response)
                pool.remove(worker)
                for k in ks:
                    failed[k] = worker
                continue
            got = response.get("data", {})
            data.update(got)
            for k in ks:
                if k not in got:
                    failed[k] = worker
        return data, failed

    # ------------------------------------------------------------------
    # Scatter
    # ------------------------------------------------------------------

    def scatter(self, data, workers=None, broadcast: bool = False, direct=None, hash: bool = True,
                timeout=None, asynchronous=None):
        """Send local data to workers; Futures of the same shape come back.

        >>> a, b = client.scatter([1, 2])           # doctest: +SKIP
        >>> d = client.scatter({"x": 1})            # doctest: +SKIP
        """
        return self.sync(self._scatter, data, workers=workers, broadcast=broadcast, hash=hash,
                         asynchronous=asynchronous, callback_timeout=timeout)

    async def _scatter(self, data, workers=None, broadcast: bool = False, direct=None,
                       hash: bool = True, timeout=None):
        if isinstance(data, Future) or futures_of(data if isinstance(data, (list, tuple, dict, set)) else []):
            raise TypeError("scatter takes local data, not Futures (they are already on the cluster)")
        if isinstance(data, Iterator):
            data = list(data)
        single = False
        if isinstance(data, dict):
            items = list(data.items())
            keys_given = True
        elif isinstance(data, (list, tuple, set, frozenset)):
            items = [(None, v) for v in data]
            keys_given = False
        else:
            items = [(None, data)]
            keys_given = False
            single = True
        serialized = {}
        nbytes = {}
        types = {}
        keys = []
        for k, v in items:
            s = serialize(v)
            if not keys_given:
                prefix = type(v).__name__
                k = f"{prefix}-{tokenize(*s.frames) if hash else uuid.uuid4().hex}"
            keys.append(k)
            serialized[k] = s
            nbytes[k] = s.nbytes
            types[k] = type(v).__name__
        nthreads = await self.scheduler.ncores(workers=workers) if workers is not None else \
            await self.scheduler.ncores()
        targets = [w for w, n in nthreads.items() if n]
        if not targets:
            raise ValueError("no workers to scatter to" + (f" among {workers!r}" if workers else ""))
        if broadcast:
            assignment = {w: dict(serialized) for w in targets}
        else:
            assignment = {}
            slots = [w for w in sorted(targets) for _ in range(max(1, nthreads[w]))]
            for i, k in enumerate(serialized):
                assignment.setdefault(slots[i % len(slots)], {})[k] = serialized[k]
        pool = self.connection_pool
        await asyncio.gather(*(pool(w).update_data(data=d, report=False) for w, d in assignment.items()))
        who_has: dict = {}
        for w, d in assignment.items():
            for k in d:
                who_has.setdefault(k, []).append(w)
        futures = {}
        with self._ref_lock:
            for k in keys:
                futures[k] = Future(k, self, inform=False)
        # The scheduler answers update-data with key-in-memory for each key:
        # wait for that, so that once scatter returns the scheduler knows the
        # data (who_has, replicate, other clients all see it).
        loop = asyncio.get_running_loop()
        confirmed = [loop.create_future() for _ in keys]
        for k, fut in zip(keys, confirmed):
            self._key_waiters.setdefault(k, []).append(fut)
        try:
            self._send_to_scheduler({"op": "update-data", "who_has": who_has, "nbytes": nbytes,
                                     "types": types})
            await asyncio.gather(*confirmed)
        finally:
            for k, fut in zip(keys, confirmed):
                waiters = self._key_waiters.get(k)
                if waiters is not None and fut in waiters:
                    waiters.remove(fut)
                    if not waiters:
                        del self._key_waiters[k]
        if single:
            return futures[keys[0]]
        if isinstance(data, dict):
            return {k: futures[k] for k in keys}
        out = [futures[k] for k in keys]
        return type(data)(out) if isinstance(data, (tuple, set, frozenset)) else out

    # ------------------------------------------------------------------
    # Control
    # ------------------------------------------------------------------

    def cancel(self, futures, asynchronous=None, force: bool = False):
        """Stop computing these futures and release their results."""
        return self.sync(self._cancel, futures, force=force, asynchronous=asynchronous)

    async def _cancel(self, futures, force: bool = False) -> None:
        keys = [f.key for f in futures_of(futures)]
        if not keys:
            return
        # On the stream, not by RPC: a cancel must not overtake the
        # submission of the same keys still waiting in the stream.
        self._send_to_scheduler({"op": "cancel-keys", "keys": keys, "force": force})
        with self._ref_lock:
            for k in keys:
                # Forget the state: existing Futures keep it (cancelled) while
                # a new submission of the same key starts afresh.
                st = self.futures.pop(k, None)
                if st is not None and st.status != "cancelled":
                    self._cancelled_states[k] = st
                    st.cancel()

    def retry(self, futures, asynchronous=None):
        """Run failed futures again."""
        return self.sync(self._retry, futures, asynchronous=asynchronous)

    async def _retry(self, futures) -> None:
        keys = [f.key for f in futures_of(futures) if f.status == "error"]
        for k in keys:
            st = self.futures.get(k)
            if st is not None:
                st.reset()
        await self.scheduler.retry(keys=keys, client=self.id)

    def restart(self, timeout=None, wait_for_workers: bool = True, asynchronous=None):
        """Restart the cluster: every future is cancelled (``CancelledError``),
        workers with a nanny get a fresh process, the others drop their data.

        >>> client.restart()          # doctest: +SKIP
        <Client: ...>
        """
        return self.sync(self._restart, timeout=timeout, wait_for_workers=wait_for_workers,
                         asynchronous=asynchronous)

    async def _restart(self, timeout=None, wait_for_workers: bool = True, **kwargs) -> Client:
        timeout = config.parse_timedelta(timeout) if timeout is not None else 4 * self.timeout
        # On the stream, after everything sent before: all of it is forgotten.
        answer = asyncio.get_running_loop().create_future()
        self._restart_waiters.append(answer)
        self._send_now({"op": "restart-request", "timeout": timeout, "wait_for_workers": wait_for_workers})
        self._on_restart()
        msg = await asyncio.wait_for(answer, timeout + 10)
        if msg.get("status") != "OK":
            raise TimeoutError(f"restart failed: {msg.get('message')}")
        return self

    def run(self, function: Callable, *args, workers=None, wait: bool = True, nanny: bool = False,
            on_error: str = "raise", **kwargs):
        """Run ``function`` on every worker (not as a task); a dict worker ->
        result.  A ``dask_worker`` parameter receives the Worker.

        >>> client.run(os.getpid)     # doctest: +SKIP
        {'tcp://127.0.0.1:4231': 1234, ...}
        """
        return self.sync(self._run, function, *args, workers=workers, wait=wait,
                         on_error=on_error, **kwargs)

    async def _run(self, function, *args, workers=None, wait: bool = True, nanny: bool = False,
                   on_error: str = "raise", **kwargs) -> dict:
        if on_error not in ("raise", "return", "ignore"):
            raise ValueError(f"on_error must be 'raise', 'return' or 'ignore', not {on_error!r}")
        if workers is not None and not isinstance(workers, (list, tuple, set)):
            workers = [workers]
        responses = await self.scheduler.broadcast(
            msg={"op": "run", "function": Serialize(function), "args": Serialize(args),
                 "kwargs": Serialize(kwargs), "wait": wait},
            workers=list(workers) if workers is not None else None)
        results = {}
        for addr, resp in responses.items():
            if isinstance(resp, dict) and resp.get("status") == "OK":
                results[addr] = resp.get("result")
            elif isinstance(resp, dict) and resp.get("status") == "error":
                _, exc, tb = clean_exception(**resp)
                if on_error == "raise":
                    raise exc.with_traceback(tb)
                if on_error == "return":
                    results[addr] = exc
            else:
                results[addr] = resp
        return results if wait else None

    async def _run_coroutine(self, function, *args, workers=None, wait: bool = True, **kwargs):
        return await self._run(function, *args, workers=workers, wait=wait, **kwargs)

    def run_coroutine(self, function, *args, workers=None, wait: bool = True, **kwargs):
        """Like ``run`` for a coroutine function (run on each worker's loop)."""
        return self.run(function, *args, workers=workers, wait=wait, **kwargs)

    def run_on_scheduler(self, function: Callable, *args, **kwargs):
        """Run ``function`` in the scheduler process; a ``dask_scheduler``
        parameter receives the Scheduler."""
        return self.sync(self._run_on_scheduler, function, *args, **kwargs)

    async def _run_on_scheduler(self, function, *args, wait: bool = True, **kwargs):
        response = await self.scheduler.run_function(
            function=Serialize(function), args=Serialize(args), kwargs=Serialize(kwargs), wait=wait)
        if response.get("status") == "error":
            _, exc, tb = clean_exception(**response)
            raise exc.with_traceback(tb)
        return response.get("result")

    def upload_file(self, filename: str, load: bool = True, **kwargs):
        """Send a local .py/.egg/.zip file to every worker and import it there."""
        return self.sync(self._upload_file, filename, load=load)

    async def _upload_file(self, filename: str, raise_on_error: bool = True, load: bool = True):
        import os

        with open(filename, "rb") as f:
            data = f.read()
        responses = await self.scheduler.broadcast(
            msg={"op": "upload_file", "filename": os.path.basename(filename), "data": data, "load": load})
        for resp in responses.values():
            if isinstance(resp, dict) and resp.get("status") == "error" and raise_on_error:
                _, exc, tb = clean_exception(**resp)
                raise exc.with_traceback(tb)
        return {a: r.get("nbytes") if isinstance(r, dict) else r for a, r in responses.items()}

    def who_has(self, futures=None, asynchronous=None):
        """Which workers hold each key: ``{key: [addresses]}``."""
        return self.sync(self._who_has, futures, asynchronous=asynchronous)

    async def _who_has(self, futures=None):
        keys = None if futures is None else [f.key for f in futures_of(futures)]
        out = await self.scheduler.who_has(keys=keys)
        return {k: list(v) for k, v in out.items()}

    def has_what(self, workers=None, asynchronous=None):
        """Which keys each worker holds: ``{address: [keys]}``."""
        return self.sync(self._has_what, workers, asynchronous=asynchronous)

    async def _has_what(self, workers=None):
        if workers is not None and not isinstance(workers, (list, tuple, set)):
            workers = [workers]
        out = await self.scheduler.has_what(workers=list(workers) if workers is not None else None)
        return {w: list(v) for w, v in out.items()}

    def nthreads(self, workers=None, asynchronous=None):
        """Threads per worker: ``{address: nthreads}``."""
        return self.sync(self._nthreads, workers, asynchronous=asynchronous)

    ncores = nthreads

    async def _nthreads(self, workers=None):
        if workers is not None and not isinstance(workers, (list, tuple, set)):
            workers = [workers]
        return await self.scheduler.ncores(workers=list(workers) if workers is not None else None)

    _ncores = _nthreads

    def scheduler_info(self, asynchronous=None, **kwargs):
        """The scheduler's identity and its workers."""
        return self.sync(self._scheduler_info, asynchronous=asynchronous)

    async def _scheduler_info(self):
        return await self.scheduler.identity()

    def replicate(self, futures, n=None, workers=None, branching_factor=2, asynchronous=None):
        """Copy data to ``n`` workers (all by default)."""
        return self.sync(self._replicate, futures, n=n, workers=workers, asynchronous=asynchronous)

    async def _replicate(self, futures, n=None, workers=None, branching_factor=2):
        futures = futures_of(futures)
        await _wait_all(futures)
        return await self.scheduler.replicate(keys=[f.key for f in futures], n=n, workers=workers)

    def rebalance(self, futures=None, workers=None, asynchronous=None, **kwargs):
        """Even out memory use across workers by moving data."""
        return self.sync(self._rebalance, futures, workers, asynchronous=asynchronous)

    async def _rebalance(self, futures=None, workers=None):
        keys = None
        if futures is not None:
            futures = futures_of(futures)
            await _wait_all(futures)
            keys = [f.key for f in futures]
        return await self.scheduler.rebalance(keys=keys, workers=workers)

    def retire_workers(self, workers=None, close_workers: bool = True, asynchronous=None, **kwargs):
        """Move the data of ``workers`` elsewhere and close them."""
        return self.sync(self._retire_workers, workers, close_workers=close_workers,
                         asynchronous=asynchronous)

    async def _retire_workers(self, workers=None, close_workers: bool = True):
        if workers is not None and not isinstance(workers, (list, tuple, set)):
            workers = [workers]
        return await self.scheduler.retire_workers(
            workers=list(workers) if workers is not None else None, close_workers=close_workers)

    def wait_for_workers(self, n_workers: int = 1, timeout=None):
        """Block until ``n_workers`` workers are connected."""
        if timeout is not None:
            timeout = config.parse_timedelta(timeout)
        return self.sync(self._wait_for_workers, n_workers, timeout=timeout)

    async def _wait_for_workers(self, n_workers: int = 1, timeout=None):
        return await self.scheduler.wait_for_workers(n_workers=n_workers, timeout=timeout)

    def _wait(self, futures, timeout=None, return_when="ALL_COMPLETED"):
        from distributed.futures import _wait

        return _wait(futures_of(futures), timeout=timeout, return_when=return_when)

    # -- datasets ----------------------------------------------------------

    def publish_dataset(self, *args, name=None, override: bool = False, **kwargs):
        """Keep futures (or collections of them) on the cluster under a name
        that other clients can ``get_dataset``."""
        if args:
            if name is None:
                raise ValueError("publish_dataset(value, name=...) needs a name")
            if len(args) != 1:
                raise ValueError("publish_dataset takes one positional value with name=")
            kwargs[name] = args[0]
        return self.sync(self._publish_dataset, override=override, **kwargs)

    async def _publish_dataset(self, override: bool = False, **kwargs):
        for name, value in kwargs.items():
            keys = [f.key for f in futures_of(value)]
            await self.scheduler.publish_put(keys=keys, name=name, data=Serialize(value),
                                             override=override, client=self.id)

    def get_dataset(self, name, default=None, **kwargs):
        """A dataset published under ``name``."""
        return self.sync(self._get_dataset, name, default=default)

    async def _get_dataset(self, name, default=None):
        out = await self.scheduler.publish_get(name=name, client=self.id)
        if out is None:
            if default is not None:
                return default
            raise KeyError(f"Dataset {name!r} not found")
        with _bind_futures(self):
            from distributed.protocol import Serialized

            data = out["data"]
            if isinstance(data, Serialized):
                data = data.deserialize()
        return data

    def list_datasets(self, **kwargs):
        """Names of published datasets."""
        return self.sync(self._list_datasets)

    async def _list_datasets(self):
        return list(await self.scheduler.publish_list())

    def unpublish_dataset(self, name, **kwargs):
        """Remove a published dataset name (its futures may be released)."""
        return self.sync(self.scheduler.publish_delete, name=name)

    # -- misc ------------------------------------------------------------

    def get_executor(self, **kwargs):
        """A ``concurrent.futures.Executor`` that submits to this client.

        >>> ex = client.get_executor()             # doctest: +SKIP
        >>> list(ex.map(inc, range(3)))            # doctest: +SKIP
        [1, 2, 3]
        """
        from distributed.executor import ClientExecutor

        return ClientExecutor(self, **kwargs)

    @property
    def dashboard_link(self) -> str | None:
        """No dashboard is served yet; None."""
        return None

    def __repr__(self) -> str:
        if self.status != "running":
            return f"<Client: {self.status}>"
        # A blocking client refreshes the summary; an asynchronous one cannot
        # wait here and shows what it learned when it connected.
        if not self.asynchronous:
            self._refresh_info()
        info = self._info_cache
        if info is None:
            return f"<Client: {self._address!r}>"
        return (f"<Client: {self._address!r} processes={info[0]} threads={info[1]}, "
                f"memory={config.format_bytes(info[2])}>")

    def _refresh_info(self) -> None:
        """Update the cached worker summary now (blocking clients only)."""
        try:
            sync(self.loop, self._update_scheduler_info, callback_timeout=5)
        except Exception:
            pass

    async def _update_scheduler_info(self) -> None:
        try:
            info = await self.scheduler.identity()
        except (OSError, CommClosedError, asyncio.TimeoutError):
            return
        workers = info.get("workers", {}).values()
        self._info_cache = (len(workers), sum(w.get("nthreads", 0) for w in workers),
                            sum(w.get("memory_limit") or 0 for w in workers))

    def _repr_html_(self) -> str:
        if self.status != "running":
            return f"<b>Client</b>: {html.escape(str(self._address))} ({self.status})"
        if not self.asynchronous:
            self._refresh_info()
        n, threads, memory = self._info_cache or (0, 0, 0)
        rows = [("Scheduler", html.escape(str(self._address))),
                ("Workers", n), ("Threads", threads), ("Memory", config.format_bytes(memory))]
        if self.cluster is not None:
            rows.insert(1, ("Cluster", html.escape(type(self.cluster).__name__)))
        body = "".join(f"<tr><th style='text-align:left'>{k}</th><td>{v}</td></tr>" for k, v in rows)
        return f"<div><h3>Client</h3><table>{body}</table></div>"



# ----------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------


_NO_STATE = object()


def _completed():
    f = asyncio.get_running_loop().create_future()
    f.set_result(None)
    return f


def _loop_running_in_this_thread() -> bool:
    try:
        asyncio.get_running_loop()
        return True
    except RuntimeError:
        return False


async def _wait_all(futures) -> None:
    for f in futures:
        await f._state.wait()


@contextmanager
def _bind_futures(client: Client):
    """Futures unpickled inside this block belong to ``client``."""
    previous = _default_client[0]
    _default_client[0] = client
    try:
        yield
    finally:
        _default_client[0] = previous


class _Datasets:
    """``client.datasets['name']``: dict-like access to published datasets."""

    def __init__(self, client: Client):
        self._client = weakref.ref(client)

    def __getitem__(self, name):
        return self._client().get_dataset(name)

    def __setitem__(self, name, value):
        self._client().publish_dataset(value, name=name)

    def __delitem__(self, name):
        self._client().unpublish_dataset(name)

    def __contains__(self, name) -> bool:
        return name in self._client().list_datasets()

    def __iter__(self):
        return iter(self._client().list_datasets())

    def __len__(self) -> int:
        return len(self._client().list_datasets())


@atexit.register
def _close_global_clients() -> None:
    for c in list(_global_clients.values()):
        try:
            if c.status == "running" and not c._asynchronous:
                c.close(timeout=2)
        except Exception:
            pass

