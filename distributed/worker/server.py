"""The Worker server: holds data, runs tasks, serves data to peers.

The bookkeeping lives in ``WorkerState`` (``state.py``); this class feeds it
messages from the scheduler and results from the thread pool, and carries
out what it returns: running tasks, fetching inputs from peers and sending
messages to the scheduler over one batched stream.

Everything here runs on the worker's event loop except user functions,
which run in ``self.executor``; their results come back with
``loop.add_callback``.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
import os
import random
import socket
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import MutableMapping
from typing import Any

import psutil

from distributed import config, context
from distributed.batched import BatchedSend
from distributed.comm import (
    CommClosedError,
    FatalCommClosedError,
    connect,
    get_address_host,
    normalize_address,
)
from distributed.comm.tcp import configured_max_message_size
from distributed.context import get_worker
from distributed.core import Server, Status
from distributed.dask_graphs import run_node
from distributed.diagnostics.worker_diagnostics import WorkerDiagnostics
from distributed.exceptions import Reschedule, error_message
from distributed.preloading import start_preloads, teardown_preloads
from distributed.protocol import MessageTooLargeError, Serialize
from distributed.remote_call import run_user_function
from distributed.spec import NODE, WALK, open_spec, run_spec_call
from distributed.spill import SpillBuffer
from distributed.threadpool import ThreadPool, set_task_hooks
from distributed.utils import (
    host_from_interface,
    in_thread_of,
    refuse_unknown_keywords,
    sizeof,
    sync,
    thread_state,
)
from distributed.versions import get_versions
from distributed.worker.plugins import WorkerPluginsMixin
from distributed.worker.state import Execute, GatherDep, WorkerState

__all__ = ["Worker", "get_worker", "nthreads_from", "parse_memory_limit", "scheduler_address_from"]

logger = logging.getLogger(__name__)


def parse_memory_limit(memory_limit, nthreads: int, total_cores: int | None = None) -> int:
    """Bytes from ``'auto'``, a fraction of system memory, a size string or
    a number; 0 or None means no limit.

    >>> parse_memory_limit("4GB", 1)
    4000000000
    >>> parse_memory_limit(0, 1)
    0
    """
    if memory_limit is None or memory_limit == 0:
        return 0
    total = psutil.virtual_memory().total
    if memory_limit == "auto":
        cores = total_cores or os.cpu_count() or 1
        return int(total * min(1, nthreads / cores))
    if isinstance(memory_limit, str):
        try:
            memory_limit = float(memory_limit)
        except ValueError:
            return min(config.parse_bytes(memory_limit), total)
    if isinstance(memory_limit, float) and memory_limit <= 1:
        return int(total * memory_limit)
    return int(memory_limit)


def scheduler_address_from(scheduler_ip, scheduler_port: int | None, scheduler_file: str | None,
                           who: str) -> str:
    """The scheduler address a Worker or Nanny was given, in any of the
    accepted spellings (full address, host and port, scheduler file).

    >>> scheduler_address_from("127.0.0.1", 8786, None, "Worker")
    'tcp://127.0.0.1:8786'
    """
    if scheduler_file is not None and scheduler_ip is None:
        import json

        with open(scheduler_file) as f:
            scheduler_ip = json.load(f)["address"]
    if scheduler_ip is None:
        raise ValueError(f"{who} needs a scheduler address")
    if scheduler_port is not None:
        scheduler_ip = f"{scheduler_ip}:{scheduler_port}"
    return normalize_address(scheduler_ip)


def nthreads_from(nthreads: int | None, ncores: int | None = None) -> int:
    """Threads per worker: ``nthreads`` (or its old name ``ncores``), else
    one per CPU.

    >>> nthreads_from(None, 3)
    3
    """
    n = int(nthreads or ncores or os.cpu_count() or 1)
    if n < 1:
        raise ValueError(f"nthreads must be at least 1, not {n}")
    return n


def _choose_host(scheduler_address: str) -> str:
    """The local address that reaches the scheduler (never 0.0.0.0)."""
    host = get_address_host(scheduler_address)
    if host in ("127.0.0.1", "localhost", "::1"):
        return "127.0.0.1"
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((host, 1))  # no packet is sent for UDP connect
            return s.getsockname()[0]
    except OSError:
        return "127.0.0.1"


#: The exit code of a worker process that reached its lifetime and is to be
#: restarted (``--lifetime-restart``): nonzero, so its nanny starts a new one.
EXIT_LIFETIME_RESTART = 75


def _lifetime(lifetime: float | str | None, stagger: float | str | None) -> float | None:
    """Seconds until a worker retires: ``lifetime`` (config
    ``distributed.worker.lifetime.duration``) plus or minus a uniformly random
    part of ``stagger``, so that workers started together do not all leave
    at once; None when no lifetime is set.

    >>> _lifetime(None, None) is None
    True
    >>> _lifetime("1 hour", 0)
    3600.0
    """
    if lifetime is None:
        lifetime = config.get("distributed.worker.lifetime.duration")
    if lifetime is None:
        if stagger:
            raise ValueError("lifetime_stagger needs a lifetime")
        return None
    seconds = config.parse_timedelta(lifetime)
    if stagger is None:
        stagger = config.get("distributed.worker.lifetime.stagger")
    spread = config.parse_timedelta(stagger) if stagger else 0.0
    if seconds <= 0 or spread < 0:
        raise ValueError(f"lifetime must be positive and its stagger not negative, not "
                         f"{lifetime!r} and {stagger!r}")
    return max(seconds + random.uniform(-spread, spread), 0.0)


class Worker(Server, WorkerPluginsMixin):
    """A worker: ``Worker(scheduler_address, nthreads=2)``, started with
    ``await worker`` (or ``async with``).

    >>> async def main():                               # doctest: +SKIP
    ...     async with Worker("tcp://127.0.0.1:8786", nthreads=2) as w:
    ...         await w.finished()
    """

    _instances: weakref.WeakSet = weakref.WeakSet()

    def __init__(
        self,
        scheduler_ip=None,
        scheduler_port: int | None = None,
        ncores: int | None = None,
        nthreads: int | None = None,
        name: Any = None,
        memory_limit="auto",
        resources: dict | None = None,
        loop=None,
        ip: str | None = None,
        host: str | None = None,
        port: int = 0,
        local_dir: str | None = None,
        local_directory: str | None = None,
        validate: bool | None = None,
        heartbeat_interval: float | str | None = None,
        death_timeout: float | str | None = None,
        scheduler_file: str | None = None,
        executor=None,
        data: MutableMapping | None = None,
        nanny: str | None = None,
        contact_address: str | None = None,
        memory_target_fraction: float | bool | None = None,
        memory_spill_fraction: float | bool | None = None,
        memory_pause_fraction: float | bool | None = None,
        max_spill: int | str | bool | None = None,
        memory_monitor_interval: float | str | None = None,
        plugins=None,
        preload=None,
        preload_argv=None,
        security=None,
        protocol: str | None = None,
        scheduler_sni: str | None = None,
        dashboard_address: str | None = None,
        dashboard: bool | None = None,
        interface: str | None = None,
        lifetime: float | str | None = None,
        lifetime_stagger: float | str | None = None,
        lifetime_restart: bool | None = None,
        **kwargs,
    ):
        refuse_unknown_keywords("Worker", kwargs)
        config.refresh()
        self.scheduler_address = scheduler_address_from(scheduler_ip, scheduler_port, scheduler_file, "Worker")
        self.nthreads = nthreads_from(nthreads, ncores)
        self.name = name
        self.memory_limit = parse_memory_limit(memory_limit, self.nthreads)
        self.resources = dict(resources or {})
        self._requested_host = host_from_interface(ip or host, interface)
        self.lifetime = _lifetime(lifetime, lifetime_stagger)
        self.lifetime_restart = (config.get("distributed.worker.lifetime.restart")
                                 if lifetime_restart is None else bool(lifetime_restart))
        self._requested_port = port
        self.contact_address = contact_address
        self.validate = validate if validate is not None else config.get("distributed.worker.validate", False)
        self.heartbeat_interval = config.get_timedelta(
            "distributed.worker.heartbeat-interval", heartbeat_interval)
        self.death_timeout = config.parse_timedelta(death_timeout) if death_timeout is not None else None
        self.nanny = nanny
        self.exit_code = 0  # the process exit code when this worker ends its process
        # Memory settings are checked before anything is created on disk.
        self.memory_target_fraction = _fraction("target", memory_target_fraction)
        self.memory_spill_fraction = _fraction("spill", memory_spill_fraction)
        self.memory_pause_fraction = _fraction("pause", memory_pause_fraction)
        self.memory_monitor_interval = config.get_timedelta(
            "distributed.worker.memory.monitor-interval", memory_monitor_interval)
        max_spill = _max_spill(max_spill)
        self._own_local_dir = None
        local_directory = local_directory or local_dir
        if local_directory is None:
            local_directory = tempfile.mkdtemp(prefix="dask-worker-space-")
            self._own_local_dir = local_directory
        else:
            os.makedirs(local_directory, exist_ok=True)
        self.local_directory = local_directory
        if data is None:
            data = self._make_spill_buffer(max_spill)
        self.data: MutableMapping = data
        self.executor = executor or ThreadPool(self.nthreads, name="Dask-Worker-Threads")
        self._own_executor = executor is None
        self.state = WorkerState(self.nthreads, self.data, resources=self.resources,
                                 max_gather_peers=config.get("distributed.worker.connections.outgoing", 50),
                                 validate=self.validate,
                                 max_transfer_bytes=configured_max_message_size() // 2,
                                 make_actor_handle=self._make_actor_handle)
        self.batched_stream: BatchedSend | None = None
        self._scheduler_comm = None
        self._closed_event: asyncio.Event | None = None
        self._client = None  # made on first use by _get_client()
        self._actors = None  # WorkerActors, made on the first call on an actor here
        self._registered = False
        self.outgoing_transfers = 0
        self.incoming_transfers = 0
        # The worker's HTTP server (distributed/http/worker.py) starts only when asked:
        # an address, dashboard=True or distributed.worker.http.enabled.
        self.dashboard_address = dashboard_address
        self._dashboard = dashboard
        self.http_server = None
        self._lifetime_timer: asyncio.TimerHandle | None = None
        self.startstops: dict = {}
        self._fetches_from: dict[str, asyncio.Task] = {}  # peer -> the fetch running from it
        self.bandwidth: float | None = None  # bytes/s of fetches from peers, once measured
        # Diagnostics (diagnostics/worker_diagnostics.py): thread ident -> key
        # of the task it runs, key -> when it started, key -> its inputs' transfers.
        self.active_threads: dict = {}
        self.executing_since: dict = {}
        self._transfers: dict = {}
        handlers = {
            "get_data": self.get_data,
            "update_data": self.update_data,
            "delete_data": self.delete_data,
            "keys": self.keys,
            "run": self.run,
            "run_coroutine": self.run_coroutine,
            "upload_file": self.upload_file,
            "terminate": self.terminate,
            "close": self.terminate,
            "gather": self.gather_from_peers,
            "versions": self.versions,
            "actor_execute": self.actor_execute,
            "actor_attribute": self.actor_attribute,
        }
        stream_handlers = {
            "compute-task": self._handle_compute_task,
            "free-keys": self._handle_free_keys,
            "acquire-replicas": self._handle_acquire_replicas,
            "refresh-who-has": self._handle_refresh_who_has,
            "steal-request": self._handle_steal_request,
            "worker-removed": self._handle_worker_removed,
            "close": self._handle_close_request,
        }
        super().__init__(handlers, stream_handlers)
        self.diagnostics = WorkerDiagnostics(self)  # logs, profile, call stacks, stories
        self._init_plugins(plugins, preload, preload_argv)  # worker/plugins.py: plugins, preloads, events
        # TLS: security= in any accepted form; protocol= 'tcp' or 'tls' (or in host=).
        from distributed.security import with_scheduler_file_secret

        self.set_security(with_scheduler_file_secret(security, scheduler_file), "worker")
        if scheduler_sni:  # the TLS server name to send (a proxy routing on SNI)
            self.connection_args = {**self.connection_args, "server_hostname": scheduler_sni}
            self.rpc.connection_args = self.connection_args
        self._protocol = protocol
        self.listen_scheme(self._requested_host, protocol)  # a bad protocol raises here
        Worker._instances.add(self)

    # ------------------------------------------------------------------
    # Lifecycle
    # ------------------------------------------------------------------

    def __repr__(self) -> str:
        return (f"<Worker {self.address!r}, name: {self.name}, status: {self.status}, "
                f"stored: {len(self.data)}, running: {len(self.state.executing)}/{self.nthreads}, "
                f"ready: {len(self.state.ready)}>")

    @property
    def ncores(self) -> int:
        return self.nthreads

    @property
    def executing_count(self) -> int:
        return len(self.state.executing)

    @property
    def tasks(self) -> dict:
        return self.state.tasks

    async def start(self) -> Worker:
        """Listen, register with the scheduler, start heartbeats."""
        if self.status == Status.running:
            return self
        if self.status != Status.init:
            raise RuntimeError(f"cannot start a worker that is {self.status}")
        self.status = Status.starting
        self._closed_event = asyncio.Event()
        host = self._requested_host or _choose_host(self.scheduler_address)
        port = self._requested_port or 0
        scheme = self.listen_scheme(host, self._protocol)
        await self.listen(f"{scheme}://{host.split('://', 1)[-1]}:{port}")
        self.state.address = self.address
        self._start_http_server(host.split("://", 1)[-1])
        if self.name is None:
            self.name = self.address
        try:
            await start_preloads(self.preloads)  # dask_setup(worker) before registering
            await self._register_with_scheduler()
        except BaseException:
            await self.close(report=False)
            raise
        self.status = Status.running
        self.diagnostics.start()
        await self._setup_pending_plugins()
        self.start_periodic_callback("heartbeat", self.heartbeat, self.heartbeat_interval)
        if self.lifetime is not None:
            self._lifetime_timer = asyncio.get_running_loop().call_later(
                self.lifetime, lambda: self.spawn(self._end_of_lifetime()))
        if self.memory_limit and (self.memory_spill_fraction or self.memory_pause_fraction):
            self.start_periodic_callback("memory", self._check_memory, self.memory_monitor_interval)
        logger.info("Worker %s started (%d threads), scheduler %s",
                    self.address, self.nthreads, self.scheduler_address)
        return self

    def _start_http_server(self, host: str) -> None:
        if self._dashboard is False:
            return
        if self.dashboard_address is None and not self._dashboard and not config.get(
                "distributed.worker.http.enabled", False):
            return
        from distributed.http.worker import WorkerHTTP

        http = WorkerHTTP(self)
        http.start(self.dashboard_address, host)
        self.http_server = http

    @property
    def services(self) -> dict:
        """``{"dashboard": port}`` when this worker serves HTTP (upstream's shape)."""
        return {"dashboard": self.http_server.port} if self.http_server is not None else {}

    def identity(self, comm=None) -> dict:
        return {**super().identity(), "services": self.services, "nthreads": self.nthreads,
                "memory_limit": self.memory_limit}

    async def _register_with_scheduler(self) -> None:
        timeout = self.death_timeout or config.get_timedelta("distributed.comm.timeouts.connect")
        try:
            comm = await connect(self.scheduler_address, timeout=timeout, **self.connection_args)
        except OSError as e:
            if getattr(e, "status", None) is not None and isinstance(e, FatalCommClosedError):
                raise  # AuthenticationError: its message already names the fix
            raise OSError(
                f"Worker could not reach the scheduler at {self.scheduler_address} within "
                f"{timeout} s; is it running, and is the address right? ({e})") from e
        comm.name = "worker->scheduler"
        await comm.write({
            "op": "register-worker",
            "address": self.address,
            "nthreads": self.nthreads,
            "name": self.name,
            "memory_limit": self.memory_limit,
            "resources": self.resources,
            "pid": os.getpid(),
            "server_id": self.id,
            "host": get_address_host(self.address),
            "local_directory": self.local_directory,
            "nanny": self.nanny,
            "services": self.services,
            "keys": list(self.data),
            "nbytes": {k: ts.nbytes for k, ts in self.state.tasks.items() if ts.state == "memory"},
            "reply": True,
        })
        response = await comm.read()
        if not isinstance(response, dict) or response.get("status") != "OK":
            comm.abort()
            message = response.get("message") if isinstance(response, dict) else response
            raise ValueError(f"scheduler refused registration: {message}")
        # Task payloads stay pickled until the task runs, so one that cannot
        # be unpickled here fails as that task's error.
        comm.deserialize = False
        self._scheduler_comm = comm
        self.batched_stream = BatchedSend(name="worker->scheduler")
        self.batched_stream.start(comm)
        if self.status == Status.paused:  # registered again while paused
            self.batched_stream.send({"op": "worker-status-change", "status": "paused"})
        self._registered = True
        # Before any task arrives: the plugins registered so far (errors logged).
        await self._setup_plugins_from_scheduler(response.get("worker-plugins"))
        self.spawn(self._listen_to_scheduler(comm))

    async def _listen_to_scheduler(self, comm) -> None:
        await self.handle_stream(comm)
        if self.status in (Status.running, Status.paused):
            logger.warning("Worker %s lost its connection to the scheduler", self.address)
            self.spawn(self._reconnect())

    async def _reconnect(self) -> None:
        """Register again with a scheduler that went away, or close."""
        deadline = time.monotonic() + (self.death_timeout or 60)
        self._registered = False
        while self.status in (Status.running, Status.paused) and time.monotonic() < deadline:
            try:
                await self._register_with_scheduler()
                logger.info("Worker %s registered again with %s", self.address, self.scheduler_address)
                self._flush_scheduler_msgs()
                return
            except Exception as e:
                logger.debug("reconnect failed: %s", e)
                await asyncio.sleep(0.5)
        if self.status in (Status.running, Status.paused):
            logger.error("Worker %s could not reach the scheduler again; closing", self.address)
            await self.close(report=False)

    async def heartbeat(self) -> None:
        if not self._registered or self.status not in (Status.running, Status.paused):
            return
        try:
            response = await self.rpc(self.scheduler_address).heartbeat_worker(
                address=self.address, metrics=self.metrics())
        except (OSError, CommClosedError):
            return
        except Exception as e:
            logger.debug("heartbeat failed: %s", e)
            return
        if isinstance(response, dict) and response.get("status") == "missing":
            if self._scheduler_comm is not None:
                self._scheduler_comm.abort()  # the stream handler reconnects

    def metrics(self) -> dict:
        proc = psutil.Process()
        out = {
            "executing": len(self.state.executing),
            "in_memory": len(self.data),
            "ready": len(self.state.ready),
            "in_flight": len(self.state.in_flight_workers),
            "memory": proc.memory_info().rss,
            "cpu": 0.0,
        }
        if self.bandwidth is not None:  # once measured (_note_bandwidth)
            out["bandwidth"] = self.bandwidth
        return out

    def _note_bandwidth(self, nbytes: int, seconds: float) -> None:
        """Learn the bytes per second of fetches from peers (reported in
        heartbeats; the scheduler's placement and stealing use it).  Small
        transfers measure latency, not bandwidth, and are left out."""
        if nbytes >= 1_000_000 and seconds > 0:
            rate = nbytes / seconds
            self.bandwidth = rate if self.bandwidth is None else 0.5 * (self.bandwidth + rate)

    async def _end_of_lifetime(self) -> None:
        """``lifetime`` has passed: move this worker's data, then close (to be
        restarted by the nanny with ``lifetime_restart``)."""
        logger.info("Worker %s reached its lifetime; retiring%s", self.address,
                    " to be restarted" if self.lifetime_restart else "")
        await self.close_gracefully(restart=self.lifetime_restart)

    async def close_gracefully(self, restart: bool = False) -> None:
        """Hand this worker's unique data to other workers (through the
        scheduler's ``retire_workers``), then close.  With ``restart`` a
        nanny starts a fresh worker in its place.

        >>> await worker.close_gracefully()  # doctest: +SKIP
        """
        if self.status not in (Status.running, Status.paused):
            return
        if restart and self.nanny is not None:
            # Before retiring: removing us, the scheduler also tells us to
            # close, and that message may beat the rpc's reply.
            self.exit_code = EXIT_LIFETIME_RESTART  # the nanny starts a new worker
        try:
            await self.rpc(self.scheduler_address).retire_workers(
                workers=[self.address], close_workers=False, remove=True)
        except Exception as e:  # the scheduler is gone or refused: close all the same
            logger.warning("Worker %s could not hand its data over before closing: %s",
                           self.address, e)
        await self.close()

    async def close(self, report: bool = True, timeout: float = 10, executor_wait: bool = True,
                    nanny: bool = True, **kwargs) -> None:
        """Stop the worker; idempotent."""
        if self.status in (Status.closing, Status.closed):
            if self._closed_event is not None:
                await self._closed_event.wait()
            return
        self.status = Status.closing
        for pc in self.periodic_callbacks.values():
            pc.stop()
        if self._lifetime_timer is not None:
            self._lifetime_timer.cancel()
        self.diagnostics.close()
        await self._teardown_plugins()
        await teardown_preloads(self.preloads)
        client = self._client
        if client is not None:  # made by _get_client(): a task or its arguments needed it
            self._client = None
            try:
                await client._close()
            except Exception as e:
                logger.debug("closing the worker's client failed: %s", e)
        if report and self.batched_stream is not None and not self.batched_stream.closed():
            try:
                self.batched_stream.send({"op": "unregister"})
            except CommClosedError:
                pass
        if self.batched_stream is not None:
            await self.batched_stream.close(timeout=2)
        if self.http_server is not None:
            await self.http_server.close()
        await self.close_server()
        if self._own_executor:
            # Tasks not started yet are dropped: the scheduler gives them to
            # another worker, and running them here too would run them twice.
            await asyncio.get_running_loop().run_in_executor(
                None, lambda: self.executor.shutdown(wait=executor_wait, cancel_futures=True, timeout=timeout))
        if self._actors is not None:
            await self._actors.close(timeout)
        self.state.actors.clear()
        if isinstance(self.data, SpillBuffer):
            self.data.close()
        if self._own_local_dir is not None:
            import shutil

            shutil.rmtree(self._own_local_dir, ignore_errors=True)
        self.status = Status.closed
        if self._closed_event is not None:
            self._closed_event.set()
        logger.info("Worker %s closed", self.address)

    _close = close

    # ------------------------------------------------------------------
    # Memory: spill to disk, pause
    # ------------------------------------------------------------------

    def _make_spill_buffer(self, max_spill: int | None) -> MutableMapping:
        """A SpillBuffer keeping ``target`` of ``memory_limit`` in memory, or
        a plain dict when there is no limit or spilling is off."""
        fraction = self.memory_target_fraction or self.memory_spill_fraction
        if not self.memory_limit or not fraction:
            return {}
        target = int(self.memory_limit * self.memory_target_fraction) if self.memory_target_fraction else 0
        return SpillBuffer(os.path.join(self.local_directory, "storage"), target=target, max_spill=max_spill)

    def process_memory(self) -> int:
        """Resident memory of this process, in bytes."""
        return self._psutil_process.memory_info().rss

    @property
    def _psutil_process(self) -> psutil.Process:
        proc = getattr(self, "_psutil_proc", None)
        if proc is None:
            proc = self._psutil_proc = psutil.Process()
        return proc

    def _check_memory(self) -> None:
        """Pause above ``pause`` of the memory limit, resume below it; above
        ``spill``, move the coldest results to disk until under ``target``."""
        if self.status not in (Status.running, Status.paused):
            return
        limit = self.memory_limit
        rss = self.process_memory()
        pause = self.memory_pause_fraction
        if pause and rss > pause * limit:
            if self.status == Status.running:
                logger.warning("Worker %s is pausing: memory %s is above %d%% of its %s limit",
                               self.address, config.format_bytes(rss), pause * 100,
                               config.format_bytes(limit))
                self._set_paused(True)
        elif self.status == Status.paused:
            logger.warning("Worker %s resumes: memory %s is below %d%% of its limit",
                           self.address, config.format_bytes(rss), (pause or 1) * 100)
            self._set_paused(False)
        spill = self.memory_spill_fraction
        if spill and rss > spill * limit and isinstance(self.data, SpillBuffer):
            goal = (self.memory_target_fraction or spill) * limit
            deadline = time.monotonic() + 0.5  # stay responsive; the next check goes on
            freed = 0
            while rss - freed > goal and time.monotonic() < deadline:
                n = self.data.evict()
                if n < 0:
                    break
                freed += n

    def _set_paused(self, paused: bool) -> None:
        self.status = Status.paused if paused else Status.running
        if self.batched_stream is not None and not self.batched_stream.closed():
            try:
                self.batched_stream.send({"op": "worker-status-change",
                                          "status": "paused" if paused else "running"})
            except CommClosedError:
                pass
        self._act(self.state.handle_pause(paused))

    async def finished(self) -> None:
        """Wait until the worker has closed."""
        if self._closed_event is not None:
            await self._closed_event.wait()

    def terminate(self, comm=None, report: bool = True, **kwargs) -> str:
        self.spawn(self.close(report=report))
        return "OK"

    def _handle_close_request(self, reason: str = "", **kwargs) -> None:
        logger.info("Worker %s asked to close by the scheduler: %s", self.address, reason)
        self.spawn(self.close(report=False))

    # ------------------------------------------------------------------
    # Stream handlers: the scheduler's instructions
    # ------------------------------------------------------------------

    def _handle_compute_task(self, key, run_spec=None, priority=(), who_has=None, nbytes=None,
                             resource_restrictions=None, duration=0.0, actor=False, **kwargs) -> None:
        self._act(self.state.handle_compute_task(
            key, run_spec, priority, who_has, nbytes, resource_restrictions, duration, actor))

    def _handle_free_keys(self, keys=(), **kwargs) -> None:
        self._act(self.state.handle_free_keys(keys))

    def _handle_acquire_replicas(self, who_has=None, nbytes=None, **kwargs) -> None:
        self._act(self.state.handle_acquire_replicas(who_has or {}, nbytes or {}))

    def _handle_refresh_who_has(self, who_has=None, **kwargs) -> None:
        self._act(self.state.handle_new_holders(who_has or {}))

    def _handle_steal_request(self, key=None, stimulus_id="", **kwargs) -> None:
        self._act(self.state.handle_steal_request(key, stimulus_id))

    def _handle_worker_removed(self, worker=None, **kwargs) -> None:
        """The scheduler removed a peer: a fetch from it still running is
        cancelled (a host cut off never answers) and planned again."""
        fetch = self._fetches_from.pop(worker, None)
        if fetch is not None and not fetch.done():
            logger.info("Worker %s: abandoning the fetch from %s, which the scheduler removed",
                        self.address, worker)
            fetch.cancel()
        self.rpc.remove(worker)
        self._act(self.state.handle_worker_removed(worker))

    # ------------------------------------------------------------------
    # The worker's own client
    # ------------------------------------------------------------------

    def _get_client(self, timeout: float | None = None):
        """This worker's client, connected to its scheduler: made on first
        use and then reused, for ``get_client()`` in tasks and for Futures
        unpickled here.  From a task thread it is returned connected; on the
        event loop it may still be connecting (its messages wait in order).

        >>> def task():                               # doctest: +SKIP
        ...     return get_worker()._get_client().submit(inc, 1).result()
        """
        if not in_thread_of(self.loop):
            return sync(self.loop, self._started_client, timeout)
        client = self._client
        if client is None or client.status in ("closing", "closed"):
            if self.status in (Status.closing, Status.closed):
                # close() has closed the client already: a new one would outlive us.
                raise RuntimeError(f"worker {self.address} is {self.status}; it has no client any more")
            client = self._client = context.new_worker_client(self, timeout)
        return client

    async def _started_client(self, timeout: float | None = None):
        client = self._get_client(timeout)
        await client
        return client

    # ------------------------------------------------------------------
    # Actors (distributed/coordination/actor.py)
    # ------------------------------------------------------------------

    def _make_actor_handle(self, key, obj):
        """What ``data`` holds for an actor living here: its handle."""
        from distributed.coordination.actor import Actor

        attributes = [a for a in getattr(obj, "__dict__", ()) if not a.startswith("_")]
        return Actor(type(obj), self.address, key, attributes=attributes)

    def _actor_service(self):
        if self._actors is None:
            from distributed.coordination.actor import WorkerActors

            self._actors = WorkerActors(self)
        return self._actors

    async def actor_execute(self, comm=None, actor=None, function=None, args=None, **kwargs) -> dict:
        """Call a method of an actor living here (one at a time, see WorkerActors)."""
        return await self._actor_service().execute(actor, function, args)

    def actor_attribute(self, comm=None, actor=None, attribute=None, **kwargs) -> dict:
        """Read an attribute of an actor living here."""
        return self._actor_service().attribute(actor, attribute)

    # ------------------------------------------------------------------
    # Carrying out instructions
    # ------------------------------------------------------------------

    def _act(self, instructions: list) -> None:
        for inst in instructions:
            if type(inst) is Execute:
                self._execute(inst.key)
            elif type(inst) is GatherDep:
                self._fetches_from[inst.worker] = self.spawn(self._gather_dep(inst))
        self._flush_scheduler_msgs()
        if self.validate:
            self.state.validate_state()

    def _flush_scheduler_msgs(self) -> None:
        msgs = self.state.scheduler_msgs
        if not msgs:
            return
        stream = self.batched_stream
        if stream is None or stream.closed():
            return  # kept; sent after reconnecting
        self.state.scheduler_msgs = []
        stream.send(*msgs)

    def _execute(self, key) -> None:
        if self.status in (Status.closing, Status.closed):
            return  # the scheduler gives it to another worker once we are gone
        ts = self.state.tasks[key]
        try:
            with context.working_for(self):  # Futures in the arguments bind to our client
                how, func, obj = open_spec(ts.run_spec)
            deps = {dts.key: self.data[dts.key] for dts in ts.dependencies}
            if how == NODE:  # a dask task-spec node: node(dependency values)
                func, args, kwargs, walk = run_node, (obj, deps), {}, False
                deps = {}
            else:
                args, kwargs = obj
                walk = how == WALK
        except Exception as e:
            self._task_done(key, False, error_message(e), 0.0, 0.0)
            return
        if func is not None and inspect.iscoroutinefunction(func):
            self.spawn(self._run_async_task(key, func, args, kwargs, deps, walk))
            return
        self.executor.submit_nowait(self._run_in_thread, key, func, args, kwargs, deps, walk)

    def _run_in_thread(self, key, func, args, kwargs, deps, walk) -> None:
        thread_state.key = key
        thread_state.worker = self
        thread_state.execution_state = {"scheduler": self.scheduler_address, "worker": self.address}
        set_task_hooks(lambda: self.loop.add_callback(self._seceded, key), None)
        ident = threading.get_ident()
        start = time.time()
        self.executing_since[key] = start
        self.active_threads[ident] = key
        try:
            result = run_spec_call(func, args, kwargs, deps, walk)
            ok = True
        except Reschedule:
            result, ok = None, None
        except SystemExit as e:  # the task wants the process to end: so be it
            self.loop.add_callback(self._exit_from_task, key, e.code)
            return
        except BaseException as e:  # KeyboardInterrupt and the like fail the task
            result = error_message(e)
            ok = False
        finally:
            thread_state.key = None
            set_task_hooks(None, None)
            self.active_threads.pop(ident, None)
            self.executing_since.pop(key, None)
        stop = time.time()
        try:
            self.loop.add_callback(self._task_done, key, ok, result, start, stop, ident)
        except RuntimeError:  # loop closed while the task ran
            pass

    async def _run_async_task(self, key, func, args, kwargs, deps, walk) -> None:
        context.set_task_worker(self)  # this asyncio task runs in its own context
        start = time.time()
        self.executing_since[key] = start
        try:
            result = await run_spec_call(func, args, kwargs, deps, walk)
            ok = True
        except SystemExit as e:
            self._exit_from_task(key, e.code)
            return
        except Exception as e:
            result = error_message(e)
            ok = False
        finally:
            self.executing_since.pop(key, None)
        self._task_done(key, ok, result, start, time.time())

    def _exit_from_task(self, key, code) -> None:
        """A task raised SystemExit: the worker ends (its nanny, if any,
        starts a new one), telling the scheduler why first."""
        reason = f"task {key!r} called sys.exit({code!r})"
        logger.error("Worker %s: %s; the worker exits", self.address, reason)
        self.exit_code = code if isinstance(code, int) and code else 1
        if self.batched_stream is not None and not self.batched_stream.closed():
            try:
                self.batched_stream.send({"op": "worker-exiting", "reason": reason, "keys": [key]})
            except CommClosedError:
                pass
        self.spawn(self.close(report=False))

    def _seceded(self, key) -> None:
        self._act(self.state.handle_secede(key))

    def _task_done(self, key, ok: bool, result, start: float, stop: float, thread: int | None = None) -> None:
        if self.status == Status.closed:
            return
        self.startstops[key] = (start, stop)
        if len(self.startstops) > 10_000:
            self.startstops.pop(next(iter(self.startstops)))
        # For the scheduler's task stream: this compute and its inputs' transfers.
        startstops = [{"action": "compute", "start": start, "stop": stop}]
        if self._transfers:
            ts = self.state.tasks.get(key)
            for dts in ts.dependencies if ts is not None else ():
                t = self._transfers.pop(dts.key, None)
                if t is not None:
                    startstops.insert(0, t)
        if ok is None:
            self._act(self.state.handle_reschedule(key))
        elif ok:
            nbytes = sizeof(result)
            typ = type(result).__name__
            self._act(self.state.handle_execute_success(key, result, nbytes, typ, stop - start,
                                                        startstops, thread))
        else:
            self._act(self.state.handle_execute_failure(key, _task_error_fields(result), startstops, thread))

    def _note_transfer(self, inst: GatherDep, data: dict, start: float, stop: float) -> None:
        """Keep the transfer time of fetched keys until the task that needs
        them finishes (its task-stream record shows them); bounded."""
        for key in data:
            self._transfers[key] = {"action": "transfer", "start": start, "stop": stop,
                                    "source": inst.worker, "nbytes": inst.nbytes}
        while len(self._transfers) > 10_000:
            self._transfers.pop(next(iter(self._transfers)))

    async def _gather_dep(self, inst: GatherDep) -> None:
        context.set_task_worker(self)  # Futures inside received values bind to our client
        self.incoming_transfers += 1
        try:
            start = time.time()
            response = await self.rpc(inst.worker).get_data(keys=inst.keys, who=self.address)
            data = response.get("data", {}) if isinstance(response, dict) else {}
            self._note_bandwidth(inst.nbytes, time.time() - start)
            self._note_transfer(inst, data, start, time.time())
            instructions = self.state.handle_gather_dep_success(inst.worker, inst.keys, data)
        except MessageTooLargeError as e:  # asking again would fail again: the tasks fail
            logger.error("Worker %s: cannot fetch %s from %s: %s", self.address, inst.keys, inst.worker, e)
            instructions = self.state.handle_gather_dep_error(
                inst.worker, inst.keys, _task_error_fields(error_message(e)))
        except (OSError, CommClosedError) as e:
            logger.info("Worker %s: could not fetch %d keys from %s: %s",
                        self.address, len(inst.keys), inst.worker, e)
            self.rpc.remove(inst.worker)
            instructions = self.state.handle_gather_dep_failure(inst.worker, inst.keys)
        except Exception as e:
            logger.exception("Worker %s: error fetching from %s", self.address, inst.worker)
            instructions = self.state.handle_gather_dep_failure(inst.worker, inst.keys)
            del e
        finally:
            self.incoming_transfers -= 1
        if self.status in (Status.running, Status.paused):
            self._act(instructions)

    # ------------------------------------------------------------------
    # RPC handlers
    # ------------------------------------------------------------------

    def get_data(self, comm=None, keys=(), who=None, **kwargs) -> dict:
        """Values of the keys held here (missing keys are left out)."""
        data = self.data
        out = {}
        for k in keys:
            try:
                out[k] = Serialize(data[k])
            except KeyError:
                pass
        self.outgoing_transfers += 1  # a count of transfers served
        return {"status": "OK", "data": out}

    def update_data(self, comm=None, data=None, report: bool = True, **kwargs) -> dict:
        """Store values sent to us directly (scatter)."""
        data = data or {}
        nbytes = {k: sizeof(v) for k, v in data.items()}
        types = {k: type(v).__name__ for k, v in data.items()}
        self.state.handle_update_data(data, nbytes, types)
        if report and self.batched_stream is not None and not self.batched_stream.closed():
            self.batched_stream.send({"op": "add-keys", "keys": list(data), "nbytes": nbytes})
        return {"nbytes": nbytes, "types": types, "status": "OK"}

    def delete_data(self, comm=None, keys=(), **kwargs) -> str:
        self._act(self.state.handle_free_keys(keys))
        return "OK"

    def keys(self, comm=None, **kwargs) -> list:
        return list(self.data)

    async def gather_from_peers(self, comm=None, who_has=None, **kwargs) -> dict:
        """Fetch ``who_has`` keys from peers into our own memory."""
        who_has = who_has or {}
        missing = {}
        for key, holders in who_has.items():
            if key in self.data:
                continue
            for holder in holders:
                try:
                    response = await self.rpc(holder).get_data(keys=[key], who=self.address)
                except (OSError, CommClosedError):
                    continue
                if key in response.get("data", {}):
                    value = response["data"][key]
                    self.update_data(data={key: value}, report=False)
                    break
            else:
                missing[key] = holders
        return {"status": "OK" if not missing else "partial-fail", "keys": missing}

    async def run(self, comm=None, function=None, args=(), kwargs=None, wait: bool = True) -> dict:
        return await run_user_function(self, "dask_worker", function, args, kwargs or {}, wait)

    async def run_coroutine(self, comm=None, function=None, args=(), kwargs=None, wait: bool = True) -> dict:
        return await run_user_function(self, "dask_worker", function, args, kwargs or {}, wait)

    def upload_file(self, comm=None, filename: str = "", data: bytes = b"", load: bool = True) -> dict:
        return _save_and_import(self.local_directory, filename, data, load)

    def versions(self, comm=None, packages=None, **kwargs) -> dict:
        """This process's ``get_versions(packages)``."""
        return get_versions(packages)


#: The worker running the current ``async def`` task (they run on the loop).


def _fraction(name: str, value) -> float:
    """A memory threshold as a fraction of the limit; False/None/0 mean off.

    >>> _fraction("pause", 0.5)
    0.5
    """
    if value is None:
        value = config.get(f"distributed.worker.memory.{name}")
    if value is False or value is None:
        return 0.0
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"memory {name} fraction must be a number or False, not {value!r} "
                         f"({config.env_var(f'distributed.worker.memory.{name}')})") from None
    if not 0 <= value <= 1:
        raise ValueError(f"memory {name} fraction must be between 0 and 1, not {value}")
    return value


def _max_spill(value) -> int | None:
    """Bytes allowed on disk (None: no cap) from a number, a size or False.

    >>> _max_spill("1 kB"), _max_spill(False)
    (1000, None)
    """
    if value is None:
        value = config.get("distributed.worker.memory.max-spill")
    if value is False or value is None:
        return None
    if isinstance(value, str):
        return config.parse_bytes(value)
    if isinstance(value, (int, float)) and value >= 0:
        return int(value)
    raise ValueError(f"max_spill must be a size, a number of bytes or False, not {value!r}")


def _task_error_fields(msg: dict) -> dict:
    return {
        "exception": msg["exception"],
        "traceback": msg["traceback"],
        "exception_text": msg.get("exception_text", ""),
        "traceback_text": msg.get("traceback_text", ""),
    }


def _save_and_import(directory: str, filename: str, data: bytes, load: bool) -> dict:
    import importlib

    out = os.path.join(directory, os.path.basename(filename))
    with open(out, "wb") as f:
        f.write(bytes(data))
    if directory not in sys.path:
        sys.path.insert(0, directory)
    if load:
        try:
            name, ext = os.path.splitext(os.path.basename(filename))
            if ext in (".py", ".pyc"):
                importlib.invalidate_caches()
                if name in sys.modules:
                    importlib.reload(sys.modules[name])
                else:
                    importlib.import_module(name)
            elif ext in (".egg", ".zip"):
                sys.path.insert(0, out)
                importlib.invalidate_caches()
        except Exception as e:
            return error_message(e)
    return {"status": "OK", "nbytes": len(data)}
