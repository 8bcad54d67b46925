"""``Cluster``: what every cluster object shares, whatever starts its processes.

A cluster object owns (or reaches) one scheduler and says what it knows of
it: ``scheduler_address``, ``scheduler_info`` (the scheduler's identity, with
its workers), ``dashboard_link``, its own log (``logs``/``get_logs``), and
``adapt()`` (an ``Adaptive`` that grows and shrinks it).  Subclasses say how
workers start and stop (``SpecCluster`` in ``spec.py``; ``scale``).

Loop rules: the object runs on one event loop.  Made with
``asynchronous=False`` (the default) it starts its own loop thread and every
public method blocks; made with ``asynchronous=True`` inside a running loop,
the methods return awaitables (``await cluster``, ``await cluster.close()``).
Not thread-safe beyond that: call it from one thread.
"""
from __future__ import annotations

import asyncio
import html
import logging
import time
import uuid
from collections import deque
from typing import Any

from distributed import config
from distributed.core import Status, rpc
from distributed.utils import Log, Logs, LoopRunner, in_thread_of, sync

__all__ = ["Cluster", "SyncMethodMixin"]

logger = logging.getLogger(__name__)

_LOG_LENGTH = 10_000


class SyncMethodMixin:
    """``sync`` and ``asynchronous`` for an object with a ``loop`` (and an
    ``_asynchronous`` flag): its methods block from other threads and return
    awaitables when called asynchronously on the loop.  Upstream's
    ``distributed.utils.SyncMethodMixin``, which dask-jobqueue's runners use.

    >>> class Thing(SyncMethodMixin):               # doctest: +SKIP
    ...     def ping(self):
    ...         return self.sync(self._ping)
    """

    @property
    def asynchronous(self) -> bool:
        """Whether calls return awaitables (an asynchronous object, called
        from the thread of its loop)."""
        return bool(getattr(self, "_asynchronous", False)) and in_thread_of(self.loop)

    def sync(self, func, *args, asynchronous: bool | None = None, callback_timeout: float | None = None,
             **kwargs):
        """Call coroutine function ``func``: block until done from another
        thread, or return the awaitable in asynchronous mode.

        >>> info = cluster.sync(cluster._get_scheduler_info)  # doctest: +SKIP
        """
        callback_timeout = config.parse_timedelta(callback_timeout)
        if asynchronous or (asynchronous is None and self.asynchronous):
            coro = func(*args, **kwargs)
            return asyncio.wait_for(coro, callback_timeout) if callback_timeout else coro
        return sync(self.loop, func, *args, callback_timeout=callback_timeout, **kwargs)


class Cluster(SyncMethodMixin):
    """The base of cluster objects (``SpecCluster``, ``LocalCluster``, ...).

    >>> cluster = LocalCluster(n_workers=1, processes=False)  # doctest: +SKIP
    >>> cluster.scheduler_info["workers"]                       # doctest: +SKIP
    {'tcp://127.0.0.1:41235': {'name': 0, 'nthreads': 4, ...}}
    >>> cluster.adapt(minimum=0, maximum=4)                     # doctest: +SKIP
    >>> cluster.close()                                         # doctest: +SKIP
    """

    #: Whether ``scale`` can change the number of workers (SSHCluster cannot).
    _supports_scaling = True

    def __init__(self, asynchronous: bool = False, loop=None, quiet: bool = False, name: str | None = None,
                 scheduler_sync_interval: float | str = 1):
        self._asynchronous = asynchronous
        self._loop_runner = LoopRunner(loop=loop, asynchronous=asynchronous)
        self.loop = self._loop_runner.loop
        self._name = name if name is not None else uuid.uuid4().hex[:8]
        self.quiet = quiet
        self.status = Status.created
        self.scheduler_comm: rpc | None = None
        self._adaptive = None
        self._cluster_manager_logs: deque = deque(maxlen=_LOG_LENGTH)
        self._sync_interval = config.parse_timedelta(scheduler_sync_interval)
        self._scheduler_info: dict = {"workers": {}}
        self._sync_task: asyncio.Task | None = None
        if not hasattr(self, "security"):
            self.security = None

    # -- naming, loop and sync ------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @name.setter
    def name(self, name: str) -> None:
        self._name = name

    # -- the scheduler ----------------------------------------------------

    @property
    def scheduler_address(self) -> str:
        """The scheduler's address ("" before it started)."""
        scheduler = getattr(self, "scheduler", None)
        return getattr(scheduler, "address", None) or ""

    def _local_scheduler(self):
        """The Scheduler object when it runs in this process on our loop, else None."""
        scheduler = getattr(self, "scheduler", None)
        return scheduler if hasattr(scheduler, "state") and hasattr(scheduler, "handlers") else None

    async def _scheduler_call(self, op: str, **kwargs) -> Any:
        """Call handler ``op`` of the scheduler: directly when it runs here,
        else over the network (``scheduler_comm``)."""
        local = self._local_scheduler()
        if local is not None:
            handler = local.handlers.get(op)
            if handler is None:
                raise RuntimeError(f"the scheduler has no {op!r} handler")
            result = handler(**kwargs)
            if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
                result = await result
            return result
        if self.scheduler_comm is None:
            raise RuntimeError(f"{type(self).__name__} has no scheduler to call {op!r} on yet")
        return await getattr(self.scheduler_comm, op)(**kwargs)

    def _open_scheduler_comm(self) -> None:
        if self.scheduler_comm is None and self.scheduler_address and self._local_scheduler() is None:
            args = self.security.get_connection_args("client") if self.security is not None else {}
            self.scheduler_comm = rpc(self.scheduler_address, connection_args=args)

    @property
    def scheduler_info(self) -> dict:
        """The scheduler's identity (``{"workers": {address: {...}}, ...}``):
        live for a scheduler in this process, else refreshed every
        ``scheduler_sync_interval`` seconds."""
        local = self._local_scheduler()
        if local is not None and local.status not in (Status.closed,):
            return local.identity()
        return self._scheduler_info

    async def _get_scheduler_info(self) -> dict:
        info = await self._scheduler_call("identity")
        self._scheduler_info = info
        return info

    async def _sync_scheduler_info(self) -> None:
        """Keep ``scheduler_info`` fresh for a remote scheduler."""
        while self.status == Status.running:
            try:
                await self._get_scheduler_info()
            except Exception as e:  # the scheduler may be going away; the next round tells
                logger.debug("%s: could not refresh scheduler_info: %s", self._name, e)
            await asyncio.sleep(self._sync_interval)

    async def _start(self) -> None:
        """Connect to the scheduler (``self.scheduler`` is started by subclasses)."""
        self._open_scheduler_comm()
        if self.scheduler_comm is not None:
            await self._get_scheduler_info()
            self.status = Status.running
            self._sync_task = asyncio.ensure_future(self._sync_scheduler_info())
        self.status = Status.running

    async def _stop_adaptive(self) -> None:
        """Stop ``adapt`` and wait for a round in progress to finish."""
        adaptive = self._adaptive
        if adaptive is None:
            return
        task = adaptive._task
        adaptive.stop()
        if task is not None and not task.done() and task.get_loop() is asyncio.get_running_loop():
            await asyncio.gather(task, return_exceptions=True)

    async def _close(self) -> None:
        await self._stop_adaptive()
        if self._sync_task is not None:
            self._sync_task.cancel()
            await asyncio.gather(self._sync_task, return_exceptions=True)
            self._sync_task = None
        if self.scheduler_comm is not None:
            await self.scheduler_comm.close_rpc()
            self.scheduler_comm = None
        self.status = Status.closed

    def close(self, timeout: float | None = None):
        """Close the cluster (workers and, if ours, the scheduler); idempotent.
        Returns an awaitable in asynchronous mode."""
        if self.status == Status.closed:
            if self.asynchronous:
                return _done()
            return None
        if self.asynchronous:
            return self._close()
        if self._loop_runner.is_started():
            try:
                sync(self.loop, self._close, callback_timeout=timeout or 60)
            finally:
                self._loop_runner.stop()
        self.status = Status.closed
        return None

    # -- scaling ----------------------------------------------------------

    def scale(self, n: int):
        """Grow or shrink to ``n`` workers (subclasses)."""
        raise NotImplementedError(f"{type(self).__name__} cannot scale")

    def adapt(self, Adaptive: type | None = None, **kwargs: Any):
        """Grow and shrink with the load: ``cluster.adapt(minimum=0, maximum=10)``.

        Keywords go to ``Adaptive`` (``minimum``, ``maximum``, ``interval``,
        ``wait_count``, ``target_duration``).  Calling ``adapt`` again stops
        the previous one (its ``state`` becomes "stopped") and starts one with
        the earlier keywords updated by the new ones.

        >>> adaptive = cluster.adapt(minimum=1, maximum=4, interval="500ms")  # doctest: +SKIP
        """
        if not self._supports_scaling:
            raise ValueError(f"{type(self).__name__} cannot scale, so it cannot adapt")
        if Adaptive is None:
            from distributed.deploy.adaptive import Adaptive
        previous = self._adaptive
        if previous is not None:
            kwargs = {**previous._adapt_kwargs, **kwargs}
            previous.stop()
        self._adaptive = Adaptive(self, **kwargs)
        self._adaptive._adapt_kwargs = dict(kwargs)
        return self._adaptive

    # -- what users look at -------------------------------------------------

    @property
    def dashboard_link(self) -> str | None:
        """The scheduler's dashboard address, or None when it serves none."""
        local = self._local_scheduler()
        if local is not None:
            return getattr(local, "dashboard_link", None)
        port = (self.scheduler_info.get("services") or {}).get("dashboard")
        if not port or not self.scheduler_address:
            return None
        from distributed.deploy.utils import format_dashboard_link

        host = self.scheduler_address.partition("://")[2].rsplit(":", 1)[0].strip("[]")
        return format_dashboard_link(host, port)

    def _log(self, message: str) -> None:
        """Record what the cluster manager did (``get_logs()["Cluster"]``) and log it."""
        self._cluster_manager_logs.append((time.time(), message))
        logger.info("%s: %s", self._name, message)

    def logs(self, *args, **kwargs) -> Logs:
        """The older name of ``get_logs``."""
        return self.get_logs(*args, **kwargs)

    def get_logs(self, cluster: bool = True, scheduler: bool = True, workers: bool | list = True) -> Logs:
        """Logs by process: ``"Cluster"`` (what this object did),
        ``"Scheduler"``, and each worker's address (``workers=`` True for
        all, or a list of addresses), newest line first for the servers.
        An awaitable in asynchronous mode.

        >>> print(cluster.get_logs()["Scheduler"])  # doctest: +SKIP
        """
        return self.sync(self._get_logs, cluster=cluster, scheduler=scheduler, workers=workers)

    async def _get_logs(self, cluster: bool = True, scheduler: bool = True, workers: bool | list = True) -> Logs:
        out = Logs()
        if cluster:
            out["Cluster"] = Log("\n".join(
                f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(t))} {msg}"
                for t, msg in self._cluster_manager_logs))
        if scheduler:
            records = await self._scheduler_call("get_logs")
            out["Scheduler"] = Log("\n".join(msg for _, msg in records))
        if workers:
            which = None if workers is True else list(workers)
            replies = await self._scheduler_call("worker_logs", workers=which)
            for address, records in replies.items():
                if isinstance(records, dict):  # that worker answered with an error
                    out[address] = Log(f"(no logs: {records.get('exception_text') or records})")
                else:
                    out[address] = Log("\n".join(msg for _, msg in records))
        return out

    def _summary(self) -> tuple[int, int, int]:
        workers = self.scheduler_info.get("workers", {}).values()
        return (len(workers), sum(w.get("nthreads", 0) for w in workers),
                sum(w.get("memory_limit", 0) or 0 for w in workers))

    def __repr__(self) -> str:
        n, threads, memory = self._summary()
        return (f"{type(self).__name__}({self._name!r}, {self.scheduler_address!r}, workers={n}, "
                f"threads={threads}, memory={config.format_bytes(memory)})")

    def _repr_html_(self) -> str:
        n, threads, memory = self._summary()
        rows = [("Name", html.escape(str(self._name))), ("Scheduler", html.escape(self.scheduler_address)),
                ("Dashboard", html.escape(self.dashboard_link or "not served")),
                ("Workers", n), ("Threads", threads), ("Memory", config.format_bytes(memory))]
        body = "".join(f"<tr><th style='text-align:left'>{k}</th><td>{v}</td></tr>" for k, v in rows)
        return f"<div><h3>{type(self).__name__}</h3><table>{body}</table></div>"

    # -- context managers ---------------------------------------------------

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    async def __aenter__(self):
        await self
        return self

    async def __aexit__(self, *exc):
        await self._close()

    def __await__(self):
        async def _():
            if self.status == Status.created:
                await self._start()
            return self
        return _().__await__()


async def _done() -> None:
    return None
