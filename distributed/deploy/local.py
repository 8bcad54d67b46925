"""LocalCluster: a scheduler and workers on this machine.

The scheduler runs on the cluster's event loop in this process.  Workers run
in child processes (``processes=True``, the default: each is supervised by a
``Nanny`` on the cluster's loop, which restarts it if it dies) or on the same
loop (``processes=False``).  Everything binds to 127.0.0.1 unless ``host`` says
otherwise.

Used blocking (``LocalCluster()`` starts its own loop thread) or
asynchronously (``await LocalCluster(asynchronous=True)``).
"""
from __future__ import annotations

import asyncio
import html
import logging
import os
from typing import Any

import psutil

from distributed import config
from distributed.core import Status
from distributed.nanny import Nanny
from distributed.scheduler.server import Scheduler
from distributed.utils import LoopRunner, in_thread_of, sync
from distributed.worker.server import Worker

__all__ = ["LocalCluster", "nprocesses_nthreads"]

logger = logging.getLogger(__name__)


def nprocesses_nthreads(n: int | None = None) -> tuple[int, int]:
    """How to split ``n`` cores (all by default) into worker processes and
    threads: one thread per process on small machines, about sqrt(n)
    processes on big ones.

    >>> nprocesses_nthreads(4)
    (4, 1)
    >>> nprocesses_nthreads(32)
    (8, 4)
    """
    n = n or os.cpu_count() or 1
    if n <= 4:
        return n, 1
    processes = max(2, int(n**0.5))
    while n % processes:
        processes -= 1
    return processes, n // processes


class LocalCluster:
    """A scheduler and workers on this machine.

    >>> cluster = LocalCluster(n_workers=2, threads_per_worker=1)  # doctest: +SKIP
    >>> client = Client(cluster)                                   # doctest: +SKIP
    >>> cluster.scale(4)                                           # doctest: +SKIP
    >>> cluster.close()                                            # doctest: +SKIP
    """

    def __init__(
        self,
        n_workers: int | None = None,
        threads_per_worker: int | None = None,
        processes: bool = True,
        loop=None,
        start: bool | None = None,
        host: str | None = None,
        ip: str | None = None,
        scheduler_port: int = 0,
        silence_logs=logging.WARN,
        dashboard_address: str | None = None,
        worker_dashboard_address: str | None = None,
        diagnostics_port=None,
        services=None,
        worker_services=None,
        service_kwargs=None,
        asynchronous: bool = False,
        security=None,
        protocol=None,
        blocked_handlers=None,
        interface=None,
        worker_class=None,
        memory_limit="auto",
        nanny: bool | None = None,
        name=None,
        scheduler_kwargs: dict | None = None,
        **worker_kwargs: Any,
    ):
        if protocol not in (None, "tcp", "tls", "tcp://", "tls://"):
            raise ValueError(f"LocalCluster(protocol={protocol!r}): use 'tcp' or 'tls'")
        from distributed.security import coerce_security

        # security=True: fresh self-signed credentials shared by every process here.
        self.security = coerce_security(security)
        self.protocol = protocol
        _refuse_unbuilt(blocked_handlers=blocked_handlers, interface=interface, services=services, worker_services=worker_services,
                        service_kwargs=service_kwargs)
        if "ncores" in worker_kwargs and threads_per_worker is None:
            threads_per_worker = worker_kwargs.pop("ncores")
        worker_kwargs.pop("nthreads", None)
        if n_workers is not None and n_workers < 0:
            raise ValueError(f"n_workers must be >= 0, not {n_workers}")
        if threads_per_worker is not None and threads_per_worker < 1:
            raise ValueError(f"threads_per_worker must be >= 1, not {threads_per_worker}")
        cores = os.cpu_count() or 1
        if n_workers is None and threads_per_worker is None:
            if processes:
                n_workers, threads_per_worker = nprocesses_nthreads(cores)
            else:
                n_workers, threads_per_worker = 1, cores
        elif n_workers is None:
            n_workers = max(1, cores // threads_per_worker)
        elif threads_per_worker is None:
            threads_per_worker = max(1, cores // max(n_workers, 1))
        self.n_workers = n_workers
        self.threads_per_worker = threads_per_worker
        self.processes = processes
        self.host = host or ip or "127.0.0.1"
        self.scheduler_port = scheduler_port
        self.silence_logs = silence_logs
        self.dashboard_address = dashboard_address
        self.name = name
        if memory_limit == "auto" and n_workers:
            total = psutil.virtual_memory().total
            memory_limit = int(total * min(1.0, threads_per_worker * n_workers / cores) / max(n_workers, 1))
        self.memory_limit = memory_limit
        self.worker_kwargs = worker_kwargs
        self.scheduler_kwargs = scheduler_kwargs or {}
        self.worker_class = worker_class
        self.scheduler: Scheduler | None = None
        self.workers: dict[Any, Any] = {}
        self._next_name = 0
        self.status = Status.init
        self._asynchronous = asynchronous
        self._loop_runner = LoopRunner(loop=loop, asynchronous=asynchronous)
        self.loop = self._loop_runner.loop
        self._started = None
        if silence_logs:
            logging.getLogger("distributed").setLevel(silence_logs)
        if not asynchronous and start is not False:
            self._loop_runner.start()
            try:
                sync(self.loop, self._start)
            except BaseException:
                self.close()
                raise

    # ------------------------------------------------------------------

    @property
    def asynchronous(self) -> bool:
        return self._asynchronous and in_thread_of(self.loop)

    @property
    def scheduler_address(self) -> str:
        return self.scheduler.address if self.scheduler is not None else ""

    @property
    def dashboard_link(self) -> str | None:
        return None

    def __await__(self):
        if self._started is None:
            self._started = asyncio.ensure_future(self._start())
        return self._started.__await__()

    async def _start(self) -> LocalCluster:
        if self.status == Status.running:
            return self
        self.status = Status.starting
        skw = {"security": self.security, "protocol": self.protocol, **self.scheduler_kwargs}
        self.scheduler = Scheduler(host=self.host, port=self.scheduler_port,
                                   dashboard_address=self.dashboard_address, **skw)
        self.scheduler.start()
        await self._add_workers(self.n_workers)
        self.status = Status.running
        return self

    def _worker_options(self, name) -> dict:
        opts = dict(self.worker_kwargs)
        opts.setdefault("nthreads", self.threads_per_worker)
        opts.setdefault("memory_limit", self.memory_limit)
        opts.setdefault("host", self.host)
        opts.setdefault("security", self.security)
        opts.setdefault("protocol", self.protocol)
        opts["name"] = name
        return opts

    async def _add_workers(self, n: int) -> None:
        new = []
        for _ in range(n):
            name = self._next_name
            self._next_name += 1
            opts = self._worker_options(name)
            if self.processes:
                cls = self.worker_class or Nanny
                w = cls(self.scheduler.address, silence_logs=self.silence_logs, **opts)
            else:
                cls = self.worker_class or Worker
                w = cls(self.scheduler.address, **opts)
            self.workers[name] = w
            new.append(w)
        results = await asyncio.gather(*(w.start() for w in new), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]

    async def _remove_workers(self, names: list) -> None:
        addresses = [self._address_of(n) for n in names]
        addresses = [a for a in addresses if a in self.scheduler.workers]
        if addresses and len(addresses) < len(self.scheduler.workers):
            try:
                await self.scheduler.retire_workers(workers=addresses, close_workers=True)
            except Exception as e:
                logger.warning("could not move data off retiring workers: %s", e)
        for n in names:
            w = self.workers.pop(n)
            await w.close()

    def _address_of(self, name) -> str | None:
        """The worker address of ``name`` (a Nanny's is that of its worker)."""
        w = self.workers.get(name)
        return getattr(w, "worker_address", None) or getattr(w, "address", None)

    def scale(self, n: int):
        """Grow or shrink to ``n`` workers (retiring ones move their data first)."""
        if n < 0:
            raise ValueError(f"cannot scale to {n} workers")
        if self.asynchronous:
            return self._scale(n)
        return sync(self.loop, self._scale, n)

    async def _scale(self, n: int) -> None:
        current = len(self.workers)
        if n > current:
            await self._add_workers(n - current)
        elif n < current:
            names = list(self.workers)[n:]
            await self._remove_workers(names)

    def close(self, timeout=None):
        """Close the workers and the scheduler; idempotent."""
        if self.status == Status.closed:
            return None
        if self.asynchronous:
            return self._close()
        if self._loop_runner.is_started():
            try:
                sync(self.loop, self._close, callback_timeout=timeout or 30)
            finally:
                self._loop_runner.stop()
        self.status = Status.closed
        return None

    async def _close(self) -> None:
        if self.status in (Status.closed, Status.closing):
            return
        self.status = Status.closing
        await asyncio.gather(*(w.close() for w in self.workers.values()), return_exceptions=True)
        self.workers.clear()
        if self.scheduler is not None:
            await self.scheduler.close()
        self.status = Status.closed

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    async def __aenter__(self):
        await self
        return self

    async def __aexit__(self, *exc):
        await self._close()

    def __del__(self):
        try:
            if self.status == Status.running and not self._asynchronous:
                self.close(timeout=5)
        except Exception:
            pass

    def __repr__(self) -> str:
        nthreads = sum(getattr(ws, "nthreads", 0) for ws in self.scheduler.workers.values()) \
            if self.scheduler is not None else 0
        return (f"LocalCluster({self.scheduler_address!r}, workers={len(self.workers)}, "
                f"threads={nthreads}, memory={config.format_bytes(self._total_memory())})")

    def _total_memory(self) -> int:
        if self.scheduler is None:
            return 0
        return sum(ws.memory_limit for ws in self.scheduler.workers.values())

    def _repr_html_(self) -> str:
        workers = self.scheduler.workers.values() if self.scheduler is not None else []
        rows = [
            ("Scheduler", html.escape(self.scheduler_address)),
            ("Workers", len(self.workers)),
            ("Threads", sum(ws.nthreads for ws in workers)),
            ("Memory", config.format_bytes(self._total_memory())),
            ("Processes", self.processes),
        ]
        body = "".join(f"<tr><th style='text-align:left'>{k}</th><td>{v}</td></tr>" for k, v in rows)
        return f"<div><h3>LocalCluster</h3><table>{body}</table></div>"


def _refuse_unbuilt(**options: Any) -> None:
    """Raise for an option whose feature is not built yet, rather than start
    a cluster that silently lacks it (a ``security=`` dropped would give a
    plain-TCP cluster to someone who asked for TLS)."""
    given = sorted(name for name, value in options.items() if value)
    if given:
        raise NotImplementedError(f"LocalCluster: {', '.join(given)} not supported here yet; leave "
                                  f"{'it' if len(given) == 1 else 'them'} out")
