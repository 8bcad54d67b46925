"""``SSHCluster``: a scheduler and workers started on other machines over SSH.

``hosts[0]`` runs the scheduler, each further host one worker (or
``worker_options={"n_workers": k}`` of them).  On each host the cluster
opens an SSH connection (``asyncssh``, the optional extra ``ssh``) and runs
``<remote_python> -m distributed.cli.dask_spec --spec '<json>'
--close-on-stdin-eof``; the process says where it listens on stderr
("Scheduler at: ..."/"Worker at: ..."), and ends when its standard input
does, so a cluster that closes or dies takes its remote processes with it.

Why asyncssh rather than the ``ssh`` binary: it runs on the cluster's event
loop (no process per connection to supervise), takes the connection
options as data (keys, known_hosts, port, user) and reports a failed login
as an exception naming the cause, where ``ssh`` would need parsing of its
stderr.

Options travel as JSON, so they must be JSON data: a ``Security`` object
cannot be sent yet (``security=`` raises).
"""
from __future__ import annotations

import asyncio
import json
import logging
import shlex
import sys
from typing import Any

from distributed.core import Status
from distributed.deploy.spec import ProcessInterface, SpecCluster

__all__ = ["SSHCluster", "Scheduler", "Worker", "Process"]

logger = logging.getLogger(__name__)

#: Seconds a remote process may take to say where it listens.
START_TIMEOUT = 60.0
#: Seconds a remote process gets to exit once its stdin closed.
CLOSE_TIMEOUT = 10.0


def _import_asyncssh():
    try:
        import asyncssh
    except ImportError:
        raise ImportError("SSHCluster needs asyncssh: pip install 'distributed[ssh]' (or asyncssh)") from None
    return asyncssh


def _local_host(host: str) -> str:
    return "127.0.0.1" if host in ("localhost", "127.0.0.1", "::1") else host


class Process(ProcessInterface):
    """One ``dask_spec`` process on ``address`` (a host name) over SSH: the
    base of ``Scheduler`` and ``Worker`` here, which SpecClusters of one's
    own (and upstream code) use as spec classes."""

    marker = ""

    def __init__(self, address: str, connect_options: dict | None = None, remote_python: str | None = None,
                 name: Any = None):
        super().__init__(name=name)
        self.host = address
        self.connect_options = dict(connect_options or {})
        self.remote_python = remote_python or sys.executable
        self.connection = None
        self.proc = None
        self.output: list[str] = []  # its stderr lines, for errors and logs
        self._drain: asyncio.Task | None = None

    def _command(self) -> list[str]:
        raise NotImplementedError

    async def _launch(self, expected: int = 1) -> list[str]:
        """Run the command; return the addresses of its first ``expected`` marker lines."""
        asyncssh = _import_asyncssh()
        self.connection = await asyncio.wait_for(asyncssh.connect(self.host, **self.connect_options),
                                                 START_TIMEOUT)
        command = " ".join(shlex.quote(part) for part in
                           [self.remote_python, "-m", "distributed.cli.dask_spec", *self._command(),
                            "--close-on-stdin-eof"])
        self.proc = await self.connection.create_process(command)
        addresses: list[str] = []
        try:
            async with asyncio.timeout(START_TIMEOUT):
                while len(addresses) < expected:
                    line = await self.proc.stderr.readline()
                    if not line:
                        raise RuntimeError(f"{type(self).__name__} on {self.host} exited before it started:\n"
                                           + "".join(self.output[-30:]))
                    self.output.append(line)
                    if line.startswith(self.marker):
                        addresses.append(line[len(self.marker):].split()[0])
        except TimeoutError:
            raise TimeoutError(f"{type(self).__name__} on {self.host} did not say where it listens within "
                               f"{START_TIMEOUT:g} s; its output:\n" + "".join(self.output[-30:])) from None
        self._drain = asyncio.ensure_future(self._keep_reading())
        return addresses

    async def _keep_reading(self) -> None:
        # Keep the pipe flowing (a full pipe would block the remote process).
        while True:
            line = await self.proc.stderr.readline()
            if not line:
                return
            self.output.append(line)
            del self.output[:-1000]
            logger.debug("[%s %s] %s", self.host, self.name, line.rstrip())

    async def close(self) -> None:
        if self.status == Status.closed:
            return
        if self.proc is not None:
            # stdin ends: the remote process closes its servers and exits.
            try:
                self.proc.stdin.write_eof()
                await asyncio.wait_for(self.proc.wait(), CLOSE_TIMEOUT)
            except Exception as e:
                logger.warning("%s on %s did not exit within %g s (%s); ending the session", type(self).__name__,
                               self.host, CLOSE_TIMEOUT, e)
                self.proc.kill()
        if self._drain is not None:
            self._drain.cancel()
            await asyncio.gather(self._drain, return_exceptions=True)
        if self.connection is not None:
            self.connection.close()
            await self.connection.wait_closed()
        await super().close()


class Scheduler(Process):
    marker = "Scheduler at: "

    def __init__(self, address: str, connect_options: dict | None = None, kwargs: dict | None = None,
                 remote_python: str | None = None, name: Any = None, loop=None):
        super().__init__(address, connect_options, remote_python, name)
        self.kwargs = {"host": _local_host(address), **(kwargs or {})}

    def _command(self) -> list[str]:
        return ["--spec", json.dumps({"cls": "distributed.Scheduler", "opts": self.kwargs})]

    async def start(self) -> None:
        (self.address,) = await self._launch()
        await super().start()


class Worker(Process):
    marker = "Worker at: "

    def __init__(self, scheduler: str, address: str, connect_options: dict | None = None,
                 kwargs: dict | None = None, worker_class: str = "distributed.Nanny",
                 remote_python: str | None = None, name: Any = None, loop=None,
                 worker_module: str = "deprecated"):
        if worker_module != "deprecated":
            raise ValueError("ssh Worker(worker_module=) is gone (as upstream): use worker_class=")
        super().__init__(address, connect_options, remote_python, name)
        self.scheduler = scheduler
        self.worker_class = worker_class
        kwargs = dict(kwargs or {})
        self.n_workers = int(kwargs.pop("n_workers", 1))
        if self.n_workers < 1:
            raise ValueError(f"worker_options n_workers must be >= 1, not {self.n_workers}")
        self.kwargs = {"host": _local_host(address), **kwargs}

    def _command(self) -> list[str]:
        if self.n_workers == 1:
            spec: dict = {"cls": self.worker_class, "opts": {**self.kwargs, "name": self.name}}
        else:
            spec = {i: {"cls": self.worker_class, "opts": {**self.kwargs, "name": f"{self.name}-{i}"}}
                    for i in range(self.n_workers)}
        return [self.scheduler, "--spec", json.dumps(spec)]

    async def start(self) -> None:
        addresses = await self._launch(self.n_workers)
        self.address = addresses[0]
        self.addresses = addresses
        await super().start()


class _SSHSpecCluster(SpecCluster):
    """The SpecCluster SSHCluster returns: a fixed set of hosts, no scaling."""

    _supports_scaling = False

    def scale(self, n=0, memory=None, cores=None):
        raise ValueError("SSHCluster cannot scale: it runs one worker spec per host given")


def SSHCluster(hosts: list[str], connect_options: dict | list[dict] | None = None,
               worker_options: dict | None = None, scheduler_options: dict | None = None,
               worker_class: str = "distributed.Nanny", remote_python: str | list[str] | None = None,
               **kwargs: Any) -> SpecCluster:
    """A cluster over SSH: the scheduler on ``hosts[0]``, a worker on each
    further host (a host may repeat).

    ``connect_options`` go to ``asyncssh.connect`` (``port``, ``username``,
    ``client_keys``, ``known_hosts``, ...), one dict for all hosts or a list
    with one per host; ``remote_python`` likewise (default: this Python's
    path).  ``worker_options`` and ``scheduler_options`` go to the worker
    class and the Scheduler on the remote hosts (JSON data only;
    ``{"n_workers": k}`` runs k workers per host).  Other keywords go to
    ``SpecCluster`` (``asynchronous``, ``name``, ...).

    >>> cluster = SSHCluster(["node0", "node1", "node2"],                    # doctest: +SKIP
    ...                      connect_options={"known_hosts": None},
    ...                      worker_options={"nthreads": 2})
    >>> client = Client(cluster)                                             # doctest: +SKIP
    """
    _import_asyncssh()
    if isinstance(hosts, str) or len(hosts) < 2:
        raise ValueError("SSHCluster needs a list of at least two hosts: the scheduler's, then the workers'")
    if kwargs.get("security") is not None:
        raise NotImplementedError("SSHCluster(security=) is not supported yet: options travel as JSON and "
                                  "a Security object cannot; leave it out")
    for what, value in (("connect_options", connect_options), ("remote_python", remote_python)):
        if isinstance(value, list) and len(value) != len(hosts):
            raise ValueError(f"{what} has {len(value)} entries for {len(hosts)} hosts: give one per host, or "
                             "a single value for all")
    for what, value in (("worker_options", worker_options), ("scheduler_options", scheduler_options)):
        try:
            json.dumps(value or {})
        except TypeError as e:
            raise TypeError(f"SSHCluster {what} must be JSON data (they are sent to the remote host): {e}") from None

    def per_host(value, i):
        return value[i] if isinstance(value, list) else value

    scheduler = {"cls": Scheduler, "options": {
        "address": hosts[0], "connect_options": per_host(connect_options, 0) or {},
        "kwargs": scheduler_options or {}, "remote_python": per_host(remote_python, 0)}}
    workers = {i: {"cls": Worker, "options": {
        "address": host, "connect_options": per_host(connect_options, i + 1) or {},
        "kwargs": worker_options or {}, "worker_class": worker_class,
        "remote_python": per_host(remote_python, i + 1)}}
        for i, host in enumerate(hosts[1:])}
    kwargs.setdefault("name", "SSHCluster")
    return _SSHSpecCluster(workers=workers, scheduler=scheduler, **kwargs)
