"""The Client: connection, lifecycle, the report stream and reference counts.

The rest of the Client is written by concern beside this module:
``submission`` (submit, map, graphs, dask collections), ``data`` (gather,
scatter, cancel, datasets, replication), ``control`` (restart, run,
upload_file, retire_workers) and ``introspection`` (who_has, has_what,
scheduler_info, reprs).  ``Client`` inherits them all.


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
import logging
import sys
import threading
import uuid
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

from distributed import config, context, dask_graphs
from distributed.batched import BatchedSend
from distributed.client.control import ClusterControl
from distributed.client.data import DataMovement, _Datasets
from distributed.client.diagnostics import DiagnosticsMethods
from distributed.client.events import EventMethods
from distributed.client.introspection import Introspection
from distributed.client.plugins import PluginMethods
from distributed.client.queues import stop_feeders
from distributed.client.submission import Submission
from distributed.comm import CommClosedError, FatalCommClosedError, connect, normalize_address
from distributed.context import default_client
from distributed.core import ConnectionPool, rpc
from distributed.exceptions import FutureLost, clean_exception
from distributed.futures import FutureState
from distributed.utils import LoopRunner, in_thread_of, sync

__all__ = ["Client", "default_client", "get_client", "worker_client"]

logger = logging.getLogger(__name__)


def get_client(address=None, timeout=None, resolve_address: bool = True) -> Client:
    """A Client from inside a task (the worker's own client, connected to its
    scheduler, made on first use and then reused), or the default client
    outside of one.

    >>> def task(n):                        # doctest: +SKIP
    ...     client = get_client()
    ...     return client.gather(client.map(inc, range(n)))
    """
    worker = context.current_worker()
    if worker is not None and (address is None
                               or normalize_address(address) == normalize_address(worker.scheduler_address)):
        return worker._get_client(timeout=timeout)
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


class Client(Submission, DataMovement, ClusterControl, Introspection, PluginMethods, EventMethods,
             DiagnosticsMethods):
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
        # TLS: security= in any accepted form (see distributed.security.coerce_security);
        # None takes a cluster's own (LocalCluster(security=True)) or the configuration.
        self._security_arg = security
        if security is None and isinstance(address, str):
            from distributed.security import security_from_loader

            security = security_from_loader(address)  # distributed.client.security-loader
        if address is None and security is True:
            security = None  # LocalCluster(security=True) makes the credentials we then use
        self._set_security(security if security is not None
                           else getattr(address, "security", None))
        if scheduler_file is not None and address is None:
            import json

            with open(scheduler_file) as f:
                address = json.load(f)["address"]
            from distributed.security import with_scheduler_file_secret

            self._set_security(with_scheduler_file_secret(self.security, scheduler_file))
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
        self._services: dict = {}  # the scheduler's services ({"dashboard": port}) at connect
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

        context.register_client(self)
        if start:
            self.start()

    # ------------------------------------------------------------------
    # Starting and closing
    # ------------------------------------------------------------------

    def _set_security(self, security) -> None:
        from distributed.security import coerce_security

        self.security = coerce_security(security)
        self.connection_args = self.security.get_connection_args("client")

    @classmethod
    def current(cls, allow_global: bool = True) -> Client:
        """The client dask uses here (dask asks before any named scheduler):
        the default client; ``ValueError`` when there is none.

        >>> Client.current()          # doctest: +SKIP
        <Client: 'tcp://127.0.0.1:8786' ...>
        """
        if not allow_global:
            raise ValueError("no client is current in this context (Client.as_current() is not "
                             "supported); call Client.current(allow_global=True) for the default client")
        return default_client()

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
            if self._security_arg not in (None, False):
                kwargs.setdefault("security", self._security_arg)
            kwargs.setdefault("dashboard_address", ":8787")  # as upstream: Client() serves one
            self.cluster = await LocalCluster(asynchronous=True, **kwargs)
            self._own_cluster = True
            self._address = self.cluster.scheduler_address
            if getattr(self.cluster, "security", None) is not None:
                self._set_security(self.cluster.security)  # e.g. made by security=True
        timeout = timeout or self.timeout
        try:
            await self._connect_and_register(timeout)
        except OSError as e:
            self.status = "closed"
            if getattr(e, "status", None) is not None and isinstance(e, FatalCommClosedError):
                raise  # AuthenticationError: its message already names the fix
            raise OSError(f"Client could not connect to the scheduler at {self._address}: {e}") from e
        await self._update_scheduler_info()
        if self._set_as_default:
            context.set_default_client(self)
        if "dask" in sys.modules:
            dask_graphs.use_task_based_shuffles()
        return self

    async def _connect_and_register(self, timeout: float) -> None:
        """Open the report stream to the scheduler; flush what was queued."""
        comm = await connect(self._address, timeout=timeout, **self.connection_args)
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
            self.scheduler = rpc(self._address, timeout=timeout, connection_args=self.connection_args)
        if self.connection_pool is None:
            self.connection_pool = ConnectionPool(limit=self._connection_limit,
                                                  connection_args=self.connection_args)
        self._stream = BatchedSend(name="client->scheduler", on_too_large=self._on_message_too_large)
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
                self._resubscribe_topics()  # a new scheduler knows neither (events.py, plugins.py)
                await self._reregister_plugins()
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
            "event": self._on_event,  # events.py: subscribed topics
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

    def _on_message_too_large(self, msg, exc: BaseException) -> None:
        """A graph over the maximum message size never reached the
        scheduler: its futures fail with the reason instead of waiting."""
        if isinstance(msg, dict) and msg.get("op") == "update-graph":
            for key in msg.get("tasks", ()):
                st = self.futures.get(key)
                if st is not None and st.status == "pending":
                    st.set_error(exc, None)

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
        await stop_feeders(self)  # threads of scatter/map over a queue.Queue
        await self._cancel_event_handlers()
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
        context.clear_default_client(self)
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
        # An asynchronous client on its way up, used from another thread.
        starting = self.status == "newly-created" and self._started_future is not None
        if (self.status not in ("running", "connecting", "closing") and not starting
                and not self._loop_runner.is_started()):
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


@atexit.register
def _close_global_clients() -> None:
    for c in context.live_clients():
        try:
            if c.status == "running" and not c._asynchronous:
                c.close(timeout=2)
        except Exception:
            pass
