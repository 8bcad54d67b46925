"""The Nanny: a small server that supervises one worker process.

A worker that dies (a segfault, ``os._exit``, a task calling ``sys.exit``,
the OOM killer) takes its event loop with it, so something outside it has
to notice and start a new one.  The Nanny runs in the parent process, starts
the worker in a fresh ('spawn') child, and:

- restarts it when it ends with a nonzero code or a signal (a worker that
  closes on purpose exits 0, and the Nanny then closes too);
- kills it when its resident memory passes ``terminate`` (95% by default) of
  ``memory_limit``;
- remembers why each worker process ended, so the scheduler can say why in
  ``KilledWorker`` (``worker_exit_status``);
- restarts it on request (``client.restart()`` goes through here).

The worker process is daemonic unless config ``distributed.worker.daemon``
is false: a daemonic process may not start processes of its own (Python
says "daemonic processes are not allowed to have children"), so tasks that
use ``multiprocessing`` need it false.  Such workers are still stopped when
the Nanny closes, and at interpreter exit if it was never closed.

Old code starts a nanny with where to listen: ``nanny.start(port)``,
``yield nanny._start(port)``; ``await nanny`` and ``async with`` work too.

The worker registers with the scheduler itself, naming its Nanny; the
scheduler talks to the Nanny only to restart workers and ask why one died.
"""
from __future__ import annotations

import asyncio
import atexit
import logging
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import weakref
from collections import OrderedDict
from typing import Any

import psutil
from tornado.ioloop import IOLoop

from distributed import config
from distributed.comm import get_address_host_port, normalize_address
from distributed.core import Server, Status
from distributed.nanny_plugins import NannyPluginsMixin
from distributed.preloading import start_preloads, teardown_preloads
from distributed.utils import host_from_interface, refuse_unknown_keywords
from distributed.worker.server import (
    EXIT_LIFETIME_RESTART,
    Worker,
    _choose_host,
    nthreads_from,
    parse_memory_limit,
    scheduler_address_from,
)

__all__ = ["Nanny", "WorkerProcess"]

logger = logging.getLogger(__name__)

_EXIT_REASONS_KEPT = 32


def describe_exit(exitcode: int | None) -> str:
    """A process's exit code in words.

    >>> describe_exit(-9)
    'killed by signal SIGKILL'
    >>> describe_exit(3)
    'exited with code 3'
    """
    if exitcode is None:
        return "still running"
    if exitcode < 0:
        try:
            return f"killed by signal {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    if exitcode == EXIT_LIFETIME_RESTART:
        return "reached its lifetime (--lifetime-restart)"
    return f"exited with code {exitcode}"


def _worker_process_main(conn, scheduler_address: str, kwargs: dict, silence_logs,
                         environ: dict) -> None:
    """Body of the worker child: run one Worker, tell the Nanny its address
    (or why it could not start), exit with the worker's exit code."""
    os.environ.update({k: str(v) for k, v in environ.items()})
    _setup_child_logging(silence_logs)
    os.register_at_fork(after_in_child=_forget_signal_handlers)
    parent = os.getppid()

    def tell_nanny(msg: dict) -> None:
        try:
            conn.send(msg)
        except OSError:  # the nanny stopped waiting: it ends us next
            pass

    async def watch_parent(worker: Worker) -> None:
        # A Nanny killed with SIGKILL cannot close us; notice it is gone.
        while worker.status not in (Status.closing, Status.closed):
            if os.getppid() != parent:
                logger.warning("Nanny process %d is gone; closing worker %s", parent, worker.address)
                await worker.close(report=True)
                return
            await asyncio.sleep(0.5)

    async def main() -> int:
        loop = asyncio.get_running_loop()
        worker = None
        try:
            worker = Worker(scheduler_address, **kwargs)
            for sig in (signal.SIGTERM, signal.SIGINT):
                # Running tasks are not waited for: their threads are daemons.
                loop.add_signal_handler(
                    sig, lambda: asyncio.ensure_future(worker.close(executor_wait=False)))
            await worker.start()
        except BaseException as e:
            tell_nanny({"status": "error", "message": f"{type(e).__name__}: {e}"})
            return 1
        finally:
            if worker is None or worker.status != Status.running:
                for sig in (signal.SIGTERM, signal.SIGINT):  # default handling while we exit
                    loop.remove_signal_handler(sig)
        tell_nanny({"status": "OK", "address": worker.address, "local_directory": worker.local_directory})
        watcher = asyncio.ensure_future(watch_parent(worker))
        await worker.finished()
        watcher.cancel()
        return worker.exit_code

    code = asyncio.run(main())
    conn.close()
    sys.exit(code)


def _forget_signal_handlers() -> None:
    """In a process forked by a task (``multiprocessing.Pool`` with 'fork'):
    back to Python's signal handling.  The child inherits the loop's wakeup
    socket, so a signal sent to it (``Pool.terminate`` sends SIGTERM) would
    reach the worker's loop, and the worker would close."""
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    except (ValueError, OSError):  # not the main thread: nothing was set here
        pass


def _setup_child_logging(level) -> None:
    """The worker's log lines go to stderr like the parent's (a spawned
    process starts with no logging set up)."""
    log = logging.getLogger("distributed")
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s - %(name)s - %(levelname)s - %(message)s"))
        log.addHandler(handler)
        log.propagate = False
    log.setLevel(level or logging.INFO)


class WorkerProcess:
    """One worker child process as its Nanny sees it: ``.pid``,
    ``.worker_address`` once it started, ``.exitcode`` once it ended."""

    def __init__(self, scheduler_address: str, kwargs: dict, silence_logs, environ: dict,
                 daemon: bool = True):
        ctx = multiprocessing.get_context("spawn")
        self._conn, child_conn = ctx.Pipe(duplex=False)
        self.process = ctx.Process(
            target=_worker_process_main, name=f"dask-worker-{kwargs.get('name')}",
            args=(child_conn, scheduler_address, kwargs, silence_logs, environ), daemon=daemon)
        self._child_conn = child_conn
        self.pid: int | None = None
        self.exitcode: int | None = None
        self.worker_address: str | None = None
        self.local_directory: str | None = None
        self.ended = asyncio.Event()
        self.reason: str | None = None  # set when we kill it on purpose
        self.own_directory: str | None = None  # made by the nanny; removed after the process

    def is_alive(self) -> bool:
        return self.pid is not None and not self.ended.is_set()

    async def start(self, timeout: float) -> None:
        """Start the child and wait until its worker is registered."""
        self.process.start()
        self.pid = self.process.pid
        if not self.process.daemon:
            _non_daemonic.add(self)
        self._child_conn.close()
        loop = asyncio.get_running_loop()
        loop.add_reader(self.process.sentinel, self._on_sentinel)
        ready = loop.create_future()
        fd = self._conn.fileno()

        def on_message():
            loop.remove_reader(fd)
            try:
                msg = self._conn.recv()
            except (EOFError, OSError):
                msg = {"status": "error", "message": "the worker process ended while starting"}
            if not ready.done():
                ready.set_result(msg)

        loop.add_reader(fd, on_message)
        try:
            # The worker gives up on the scheduler after ``timeout``; wait a
            # little longer so that its own, more precise, error arrives.
            msg = await asyncio.wait_for(ready, timeout + 5)
        except asyncio.TimeoutError:
            raise TimeoutError(f"the worker process did not start within {timeout} s") from None
        finally:
            loop.remove_reader(fd)  # a no-op once the message came
            self._conn.close()
        if msg.get("status") != "OK":
            raise RuntimeError(f"the worker process could not start: {msg.get('message')}")
        self.worker_address = msg["address"]
        self.local_directory = msg.get("local_directory")

    def _on_sentinel(self) -> None:
        asyncio.get_running_loop().remove_reader(self.process.sentinel)
        self.process.join(1)  # it ended; this only collects the exit code
        self.exitcode = self.process.exitcode
        self.ended.set()

    async def stop(self, timeout: float, grace: float = 0) -> None:
        """Wait up to ``grace`` seconds for the process to end by itself, then
        SIGTERM (the worker closes and unregisters), SIGKILL after ``timeout``."""
        if self.pid is None:
            return
        if grace and not self.ended.is_set():
            try:
                await asyncio.wait_for(self.ended.wait(), grace)
            except asyncio.TimeoutError:
                pass
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if self.ended.is_set():
                break
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass
            try:
                await asyncio.wait_for(self.ended.wait(), timeout if sig == signal.SIGTERM else 10)
            except asyncio.TimeoutError:
                logger.warning("worker process %d did not stop after %s; killing it", self.pid, sig.name)
        self.release()

    def release(self) -> None:
        """Free the process handle and the directory we made for it, once
        it has ended."""
        if self.ended.is_set():
            try:
                self.process.close()
            except ValueError:
                pass
            if self.own_directory is not None:
                shutil.rmtree(self.own_directory, ignore_errors=True)
                self.own_directory = None

    def __repr__(self) -> str:
        return f"<WorkerProcess pid={self.pid} worker={self.worker_address}>"


#: Non-daemonic worker processes still running.  multiprocessing would wait
#: for them at exit (and they wait for their nanny): we end them first.
_non_daemonic: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _stop_non_daemonic_workers() -> None:
    # Registered after multiprocessing's own exit handler, so runs before it.
    procs = [p for p in list(_non_daemonic) if p.is_alive()]
    for p in procs:
        try:
            os.kill(p.pid, signal.SIGTERM)
        except (ProcessLookupError, ValueError):
            pass
    for p in procs:
        try:
            p.process.join(5)
            if p.process.exitcode is None:
                os.kill(p.pid, signal.SIGKILL)
                p.process.join(5)
        except (ProcessLookupError, ValueError, AssertionError):  # gone, or closed meanwhile
            pass


def _listen_address(addr_or_port) -> tuple[str | None, int]:
    """(host or None, port) from what old code passed to ``start``: a port,
    ``'host:port'``, ``'tcp://host:port'`` or ``(host, port)``.

    >>> _listen_address(8789), _listen_address("tcp://127.0.0.1:0"), _listen_address(("127.0.0.1", 5))
    ((None, 8789), ('127.0.0.1', 0), ('127.0.0.1', 5))
    """
    if isinstance(addr_or_port, bool) or not isinstance(addr_or_port, (int, str, tuple, list)):
        raise TypeError(f"Nanny.start takes a port or an address to listen on, not {addr_or_port!r}")
    if isinstance(addr_or_port, int):
        port = addr_or_port
        if not 0 <= port < 65536:
            raise ValueError(f"Nanny.start: port {port} is out of range")
        return None, port
    return get_address_host_port(normalize_address(addr_or_port))


def _check_worker_keywords(worker_kwargs: dict) -> None:
    """Refuse, here and now, keywords the worker process would refuse later
    (where the error would only come back through the pipe)."""
    import inspect

    accepted = inspect.signature(Worker.__init__).parameters
    refuse_unknown_keywords("Nanny", {k: v for k, v in worker_kwargs.items() if k not in accepted})


class Nanny(Server, NannyPluginsMixin):
    """Supervise a worker process: ``Nanny(scheduler_address, nthreads=2)``,
    started with ``await nanny`` (or ``async with``); the same arguments as
    ``Worker``.

    >>> async def main():                                  # doctest: +SKIP
    ...     async with Nanny("tcp://127.0.0.1:8786", nthreads=2) as n:
    ...         print(n.worker_address, n.process.pid)
    """

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
        worker_port: int = 0,
        local_dir: str | None = None,
        local_directory: str | None = None,
        death_timeout: float | str | None = None,
        scheduler_file: str | None = None,
        auto_restart: bool = True,
        silence_logs=None,
        env: dict | None = None,
        memory_terminate_fraction: float | None = None,
        preload_nanny=None,
        preload_nanny_argv=None,
        interface: str | None = None,
        **worker_kwargs,
    ):
        _check_worker_keywords(worker_kwargs)
        config.refresh()
        self.scheduler_address = scheduler_address_from(scheduler_ip, scheduler_port, scheduler_file, "Nanny")
        self.nthreads = nthreads_from(nthreads, ncores)
        self.name = name
        self.memory_limit = parse_memory_limit(memory_limit, self.nthreads)
        fraction = memory_terminate_fraction
        if fraction is None:
            fraction = config.get("distributed.worker.memory.terminate")
        self.memory_terminate_fraction = float(fraction) if fraction else 0.0
        self.memory_monitor_interval = config.get_timedelta("distributed.worker.memory.monitor-interval")
        self._requested_host = host_from_interface(ip or host, interface)
        self._requested_port = port
        self.auto_restart = auto_restart
        self.silence_logs = silence_logs
        self.death_timeout = config.parse_timedelta(death_timeout) if death_timeout is not None else None
        daemon = config.get("distributed.worker.daemon", True)
        if not isinstance(daemon, bool):
            raise ValueError(f"config distributed.worker.daemon ({config.env_var('distributed.worker.daemon')})"
                             f" must be true or false, not {daemon!r}")
        self.daemon = daemon
        self._loop_given = loop
        self._start_task: asyncio.Future | None = None
        self.environ = {**config.get("distributed.nanny.pre-spawn-environ", {}),
                        **config.get("distributed.nanny.environ", {}), **(env or {})}
        self.worker_kwargs = dict(
            worker_kwargs, nthreads=self.nthreads, name=name, memory_limit=self.memory_limit,
            resources=resources, port=worker_port, local_directory=local_directory or local_dir,
            death_timeout=death_timeout)
        self.process: WorkerProcess | None = None
        self.exit_reasons: OrderedDict[str, str] = OrderedDict()  # worker address -> why it ended
        self.restarts = 0
        self._lock = asyncio.Lock()
        self._closed_event: asyncio.Event | None = None
        self._watcher: asyncio.Task | None = None
        handlers = {
            "instantiate": self.instantiate,
            "restart": self.restart,
            "kill": self.kill,
            "terminate": self._terminate_handler,
            "close": self._terminate_handler,
            "worker_exit_status": self.worker_exit_status,
        }
        super().__init__(handlers)
        # TLS: the nanny listens as a worker; its worker process gets the same
        # Security object (security=True makes one set of credentials for both).
        from distributed.security import with_scheduler_file_secret

        self.set_security(with_scheduler_file_secret(worker_kwargs.get("security"),
                                                     scheduler_file), "worker")
        self.worker_kwargs["security"] = self.security
        self._protocol = worker_kwargs.get("protocol")
        self.listen_scheme(self._requested_host, self._protocol)  # a bad protocol raises here
        # nanny_plugins.py: plugins, log_event.  preload= goes to the worker;
        # preload_nanny= is the nanny's own, as in dask.distributed.
        self._init_plugins(preload_nanny, preload_nanny_argv)

    # ------------------------------------------------------------------

    @property
    def worker_address(self) -> str | None:
        return self.process.worker_address if self.process is not None else None

    @property
    def worker_dir(self) -> str | None:
        return self.process.local_directory if self.process is not None else None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def __repr__(self) -> str:
        return f"<Nanny {self.address!r}, worker: {self.worker_address!r}, status: {self.status}>"

    def start(self, addr_or_port: int | str | tuple | None = None) -> asyncio.Future | None:
        """Listen, then start the worker process and wait for it to register:
        ``await nanny.start()``; the result is the nanny.

        Old code says where to listen: ``nanny.start(8789)`` (a port,
        ``'host:port'``, ``'tcp://host:port'`` or ``(host, port)``), and may
        not wait for the result: the start goes on by itself.  Called where
        no event loop is running (``nanny.start(0)`` then ``loop.start()``),
        it is scheduled on the nanny's loop and returns None; a failure is
        then logged.  Starting again returns the first start's result.

        >>> async def main(scheduler_address):               # doctest: +SKIP
        ...     nanny = Nanny(scheduler_address, nthreads=2)
        ...     await nanny.start(0)              # or: yield nanny._start(0)
        """
        if self.status in (Status.closing, Status.closed):
            raise RuntimeError(f"cannot start a nanny that is {self.status}")
        if addr_or_port is not None:
            host, port = _listen_address(addr_or_port)  # bad input: an error, no change
            if self._start_task is None:
                self._requested_port = port
                if host is not None:
                    self._requested_host = host
            elif (port and port != (self.port or self._requested_port)) or (
                    host and host not in (self.ip, self._requested_host)):
                raise ValueError(f"nanny {self.address or ''} is already {self.status}; "
                                 f"cannot start it again at {addr_or_port!r}")
        if self._start_task is not None:
            return self._start_task
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            loop = self._loop_given if self._loop_given is not None else IOLoop.current()
            loop.add_callback(self._start_in_background)
            return None
        self._start_task = asyncio.ensure_future(self._start_once())
        return self._start_task

    def _start_in_background(self) -> None:
        if self._start_task is None:
            self._start_task = asyncio.ensure_future(self._start_once())
            self._start_task.add_done_callback(self._log_start_failure)

    def _log_start_failure(self, task: asyncio.Future) -> None:
        if not task.cancelled() and task.exception() is not None:
            logger.error("Nanny could not start: %s", task.exception())

    async def _start(self, addr_or_port: int | str | tuple | None = None, **kwargs) -> Nanny:
        """The seed-era spelling: ``yield nanny._start(port)``."""
        task = self.start(addr_or_port)
        if task is None:  # no loop here: only in a coroutine, so never
            raise RuntimeError("Nanny._start must be awaited in a running event loop")
        return await task

    async def _start_once(self) -> Nanny:
        if self.status != Status.init:
            raise RuntimeError(f"cannot start a nanny that is {self.status}")
        self.status = Status.starting
        self._closed_event = asyncio.Event()
        host = self._requested_host or _choose_host(self.scheduler_address)
        scheme = self.listen_scheme(host, self._protocol)
        await self.listen(f"{scheme}://{host.split('://', 1)[-1]}:{self._requested_port or 0}")
        if self.worker_kwargs.get("host") is None:
            self.worker_kwargs["host"] = host
        self.worker_kwargs["nanny"] = self.address
        try:
            await start_preloads(self.preloads)
            await self._fetch_plugins()  # before the worker process: e.g. its environment
            await self.instantiate()
        except BaseException:
            await self.close()
            raise
        self.status = Status.running
        if self.memory_limit and self.memory_terminate_fraction:
            self.start_periodic_callback("memory", self._check_memory, self.memory_monitor_interval)
        return self

    async def instantiate(self, comm=None, **kwargs) -> str:
        """Start a worker process unless one is running; returns "OK"."""
        async with self._lock:
            if self.process is not None and self.process.is_alive():
                return "OK"
            await self._start_process()
        return "OK"

    async def _start_process(self) -> None:
        timeout = self.death_timeout or config.get_timedelta("distributed.comm.timeouts.connect") * 2
        kwargs = self.worker_kwargs
        own_dir = None
        if not kwargs.get("local_directory"):
            # Ours, not the worker's: a killed worker cannot remove it.
            own_dir = tempfile.mkdtemp(prefix="dask-worker-space-")
            kwargs = {**kwargs, "local_directory": own_dir}
        proc = WorkerProcess(self.scheduler_address, kwargs, self.silence_logs, self.environ, self.daemon)
        proc.own_directory = own_dir
        self.process = proc
        try:
            await proc.start(timeout)
        except BaseException:
            await proc.stop(timeout=1, grace=2)  # a worker that failed to start exits by itself
            raise
        self._watcher = asyncio.ensure_future(self._watch(proc))
        logger.info("Nanny %s started worker %s (pid %d)", self.address, proc.worker_address, proc.pid)

    async def _watch(self, proc: WorkerProcess) -> None:
        """Wait for ``proc`` to end; restart it unless that was expected."""
        await proc.ended.wait()
        reason = proc.reason or describe_exit(proc.exitcode)
        self._remember_exit(proc.worker_address, reason)
        proc.release()
        if self.status != Status.running or proc is not self.process or proc.reason == "restart":
            return
        if proc.exitcode == 0:
            logger.info("Worker %s closed; nanny %s closes too", proc.worker_address, self.address)
            self.spawn(self.close())
            return
        logger.warning("Worker %s (pid %s) %s", proc.worker_address, proc.pid, reason)
        if not self.auto_restart:
            self.spawn(self.close())
            return
        async with self._lock:
            if self.status != Status.running or proc is not self.process:
                return
            self.restarts += 1
            try:
                await self._start_process()
            except Exception as e:
                logger.error("Nanny %s could not restart its worker: %s; closing", self.address, e)
                self.spawn(self.close())

    def _remember_exit(self, address: str | None, reason: str) -> None:
        if address is None:
            return
        self.exit_reasons[address] = reason
        while len(self.exit_reasons) > _EXIT_REASONS_KEPT:
            self.exit_reasons.popitem(last=False)

    def _check_memory(self) -> None:
        proc = self.process
        if proc is None or not proc.is_alive() or proc.reason is not None:
            return
        try:
            rss = psutil.Process(proc.pid).memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return
        limit = self.memory_limit * self.memory_terminate_fraction
        if rss <= limit:
            return
        proc.reason = (f"killed by its nanny: memory use {config.format_bytes(rss)} passed "
                       f"{self.memory_terminate_fraction:.0%} of its {config.format_bytes(self.memory_limit)}"
                       " limit")
        logger.warning("Worker %s (pid %d) %s; restarting it", proc.worker_address, proc.pid, proc.reason)
        try:
            os.kill(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    async def worker_exit_status(self, comm=None, address: str | None = None, timeout: float = 0.5) -> str | None:
        """Why the worker at ``address`` ended (waiting up to ``timeout`` for
        a process that is still going), or None if it is still running."""
        if address in self.exit_reasons:
            return self.exit_reasons[address]
        proc = self.process
        if proc is None or proc.worker_address != address:
            return None
        try:
            await asyncio.wait_for(proc.ended.wait(), timeout)
        except asyncio.TimeoutError:
            return None
        return proc.reason or describe_exit(proc.exitcode)

    async def restart(self, comm=None, timeout: float = 30, **kwargs) -> str:
        """Stop the worker process (killing it if it has not closed within
        a few seconds) and start a new one; returns "OK" once it registered."""
        async with self._lock:
            proc = self.process
            if proc is not None:
                if proc.reason is None:
                    proc.reason = "restart"
                await proc.stop(timeout=min(timeout, 3))
            self.restarts += 1
            await self._start_process()
        return "OK"

    async def kill(self, comm=None, timeout: float = 5, **kwargs) -> str:
        """Stop the worker process without starting another."""
        async with self._lock:
            proc = self.process
            if proc is not None:
                if proc.reason is None:
                    proc.reason = "restart"  # expected: the watcher must not restart it
                await proc.stop(timeout=timeout)
        return "OK"

    def _terminate_handler(self, comm=None, **kwargs) -> str:
        self.spawn(self.close())
        return "OK"

    async def close(self, timeout: float = 5, **kwargs) -> None:
        """Stop the worker process and this server; idempotent."""
        if self.status in (Status.closing, Status.closed):
            if self._closed_event is not None:
                await self._closed_event.wait()
            return
        self.status = Status.closing
        for pc in self.periodic_callbacks.values():
            pc.stop()
        await self._teardown_plugins()
        await teardown_preloads(self.preloads)
        proc = self.process
        if proc is not None:
            if proc.reason is None:
                proc.reason = "closed by its nanny"
            await proc.stop(timeout=timeout)
        if self._watcher is not None:
            await asyncio.gather(self._watcher, return_exceptions=True)
        await self.close_server()
        self.status = Status.closed
        if self._closed_event is not None:
            self._closed_event.set()
        logger.info("Nanny %s closed", self.address)

    _close = close

    async def finished(self) -> None:
        """Wait until the nanny has closed."""
        if self._closed_event is not None:
            await self._closed_event.wait()
