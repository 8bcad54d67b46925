"""LocalCluster: a scheduler and workers on this machine, as a SpecCluster.

The scheduler runs on the cluster's event loop in this process.  Workers run
in child processes (``processes=True``, the default: each is supervised by a
``Nanny`` on the cluster's loop, which restarts it if it dies) or on the same
loop (``processes=False``).  Everything binds to 127.0.0.1 unless ``host`` says
otherwise.  The keywords become a scheduler spec and a worker template
(``spec.py``), so ``scale``, ``adapt`` and ``worker_spec`` work as for any
``SpecCluster``; workers are named 0, 1, 2, ...

Used blocking (``LocalCluster()`` starts its own loop thread) or
asynchronously (``await LocalCluster(asynchronous=True)``).
"""
from __future__ import annotations

import logging
import math
import os
from typing import Any

import psutil

from distributed.deploy.spec import SpecCluster
from distributed.nanny import Nanny
from distributed.scheduler.server import Scheduler
from distributed.utils import host_from_interface
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
    # The smallest divisor of n at least sqrt(n): no more threads than processes.
    processes = next(p for p in range(math.ceil(n**0.5), n + 1) if n % p == 0)
    return processes, n // processes


class LocalCluster(SpecCluster):
    """A scheduler and workers on this machine.

    >>> cluster = LocalCluster(n_workers=2, threads_per_worker=1)  # doctest: +SKIP
    >>> client = Client(cluster)                                   # doctest: +SKIP
    >>> cluster.scale(4)                                           # doctest: +SKIP
    >>> cluster.adapt(minimum=0, maximum=4)                        # doctest: +SKIP
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
        dashboard_address: str | None = ":8787",
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
        scheduler_sync_interval: float | str = 1,
        **worker_kwargs: Any,
    ):
        if protocol not in (None, "tcp", "tls", "tcp://", "tls://"):
            raise ValueError(f"LocalCluster(protocol={protocol!r}): use 'tcp' or 'tls'")
        from distributed.security import coerce_security

        # security=True: fresh self-signed credentials shared by every process here.
        security = coerce_security(security)
        self.protocol = protocol
        _refuse_unbuilt(blocked_handlers=blocked_handlers, services=services, worker_services=worker_services,
                        service_kwargs=service_kwargs)
        if diagnostics_port is not None:  # upstream's old name for dashboard_address
            dashboard_address = diagnostics_port
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
        self.host = host_from_interface(host or ip, interface) or "127.0.0.1"
        self.scheduler_port = scheduler_port
        self.silence_logs = silence_logs
        self.dashboard_address = dashboard_address
        if memory_limit == "auto":
            # Each worker gets its share of the machine (as if n_workers >= 1).
            total = psutil.virtual_memory().total
            share = max(n_workers, 1)
            memory_limit = int(total * min(1.0, threads_per_worker * share / cores) / share)
        self.memory_limit = memory_limit
        self.worker_kwargs = worker_kwargs
        self.scheduler_kwargs = scheduler_kwargs or {}
        self.worker_class = worker_class
        scheduler = {"cls": Scheduler, "options": {
            "host": self.host, "port": scheduler_port, "dashboard_address": dashboard_address,
            "security": security, "protocol": protocol, **self.scheduler_kwargs}}
        options = dict(worker_kwargs)
        options.setdefault("nthreads", threads_per_worker)
        options.setdefault("memory_limit", memory_limit)
        options.setdefault("host", self.host)
        options.setdefault("security", security)
        options.setdefault("protocol", protocol)
        if worker_dashboard_address is not None:
            options.setdefault("dashboard_address", worker_dashboard_address)
        if processes:
            cls = worker_class or Nanny
            options.setdefault("silence_logs", silence_logs)
        else:
            cls = worker_class or Worker
        worker = {"cls": cls, "options": options}
        workers = {i: worker for i in range(n_workers)}
        super().__init__(workers=workers, scheduler=scheduler, worker=worker, loop=loop,
                         asynchronous=asynchronous or start is False, security=security,
                         silence_logs=silence_logs, name=name, scheduler_sync_interval=scheduler_sync_interval)
        self._asynchronous = asynchronous
        self._i = n_workers

    def _total_memory(self) -> int:
        return self._summary()[2]

    def _repr_html_(self) -> str:
        text = super()._repr_html_()
        return text.replace("</table>", f"<tr><th style='text-align:left'>Processes</th>"
                                        f"<td>{self.processes}</td></tr></table>")


def _refuse_unbuilt(**options: Any) -> None:
    """Raise for an option whose feature is not built yet, rather than start
    a cluster that silently lacks it (a ``security=`` dropped would give a
    plain-TCP cluster to someone who asked for TLS)."""
    given = sorted(name for name, value in options.items() if value)
    if given:
        raise NotImplementedError(f"LocalCluster: {', '.join(given)} not supported here yet; leave "
                                  f"{'it' if len(given) == 1 else 'them'} out")
