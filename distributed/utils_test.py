"""The public test harness: decorators, fixtures and task helpers.

Three kinds of tests:

* ``@gen_cluster``: scheduler, workers and (optionally) a client in one
  event loop in this thread.  For logic and for inspecting state; the
  scheduler validates its state after every change.
* ``with cluster() as (s, [a, b])``: a scheduler and workers in child
  processes; for the blocking API and hard failures (kill a worker).
* ``with popen([...])``: command-line tools.

Everything started is closed afterwards, and a test that leaves threads,
sockets or child processes behind fails (``clean``).

``from distributed.utils_test import *`` in a ``conftest.py`` brings the
fixtures: ``loop``, ``loop_in_thread``, ``cleanup``, ``cluster_fixture``,
``s``, ``a``, ``b``, ``c``/``client``.
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import io
import logging
import multiprocessing
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator

import psutil
import pytest
from tornado import gen
from tornado.ioloop import IOLoop

from distributed import config
from distributed.client import Client
from distributed.context import live_clients
from distributed.scheduler.server import Scheduler
from distributed.worker.server import Worker

__all__ = [
    "gen_cluster",
    "gen_test",
    "cluster",
    "popen",
    "clean",
    "pristine_loop",
    "loop",
    "loop_in_thread",
    "cleanup",
    "cluster_fixture",
    "s",
    "a",
    "b",
    "c",
    "client",
    "inc",
    "dec",
    "add",
    "mul",
    "div",
    "double",
    "throws",
    "slowinc",
    "slowdec",
    "slowadd",
    "slowsum",
    "slowidentity",
    "randominc",
    "varying",
    "geninc",
    "asyncinc",
    "wait_for_port",
    "captured_logger",
    "wait_for",
    "async_wait_for",
    "start_cluster",
    "end_cluster",
    # more helpers test suites of both eras import (docs/import-map.rst)
    "poll_for",
    "async_poll_for",
    "scheduler_process",
    "client_secondary",
    "deep",
    "lock_inc",
    "wait_for_state",
    "captured_handler",
    "raises",
    "raises_with_cause",
    "terminate_process",
    "slow",
    "nodebug",
    "has_ipv6",
    "requires_ipv6",
    "assert_can_connect",
    "assert_cannot_connect",
    "save_sys_modules",
    "check_thread_leak",
    "check_process_leak",
    "valid_python_script",
    "invalid_python_script",
    "client_contract_script",
    # TLS (certificates generated at first use: distributed/_certs.py)
    "get_cert",
    "tls_config",
    "tls_only_config",
    "tls_security",
    "tls_only_security",
    "get_server_ssl_context",
    "get_client_ssl_context",
    "gen_tls_cluster",
]

logger = logging.getLogger(__name__)

#: Default per-test timeout (seconds) of gen_cluster and gen_test.
DEFAULT_TIMEOUT = 30

# ----------------------------------------------------------------------
# Task helpers
# ----------------------------------------------------------------------


def inc(x):
    return x + 1


def dec(x):
    return x - 1


def add(x, y):
    return x + y


def mul(x, y):
    return x * y


def div(x, y):
    return x / y


def double(x):
    return x * 2


def throws(x):
    raise RuntimeError("hello!")


def spin(seconds: float) -> int:
    """Busy for ``seconds`` in pure Python: a profile needs a running frame,
    which a sleep is not.

    >>> spin(0.001) > 0
    True
    """
    end = time.time() + seconds
    n = 0
    while time.time() < end:
        n += 1
    return n


def slowinc(x, delay=0.02):
    time.sleep(delay)
    return x + 1


def slowdec(x, delay=0.02):
    time.sleep(delay)
    return x - 1


def slowadd(x, y, delay=0.02):
    time.sleep(delay)
    return x + y


def slowsum(seq, delay=0.02):
    time.sleep(delay)
    return sum(seq)


def slowidentity(*args, **kwargs):
    time.sleep(kwargs.get("delay", 0.02))
    return args[0] if len(args) == 1 else args


def randominc(x, scale=1):
    time.sleep(random.random() * scale)
    return x + 1


def deep(n):
    """Recurse ``n`` levels deep (for tasks with deep stacks)."""
    return deep(n - 1) if n > 0 else True


def lock_inc(x, lock):
    """``x + 1`` while holding ``lock``."""
    with lock:
        return x + 1


class _Varying:
    """Callable returning ``items`` one after another (raising exceptions)."""

    def __init__(self, items):
        self.items = list(items)
        self.index = 0

    def __call__(self, *args, **kwargs):
        item = self.items[min(self.index, len(self.items) - 1)]
        self.index += 1
        if isinstance(item, BaseException) or (isinstance(item, type) and issubclass(item, BaseException)):
            raise item
        return item


def varying(items) -> Callable:
    """A function returning each of ``items`` on successive calls (in one
    process); an exception item is raised."""
    return _Varying(items)


@gen.coroutine
def geninc(x, delay=0.02):
    yield asyncio.sleep(delay)
    return x + 1


async def asyncinc(x, delay=0.02):
    await asyncio.sleep(delay)
    return x + 1


# ----------------------------------------------------------------------
# Waiting helpers (no bare sleeps in tests: wait for a condition)
# ----------------------------------------------------------------------


def still_running(pids: Iterable[int]) -> list[int]:
    """Those of ``pids`` whose processes still run (a zombie counts as gone:
    nothing may be left to reap it).

    >>> still_running([])
    []
    """
    alive = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.NoSuchProcess:
            pass
    return alive


def poll_for(predicate: Callable[[], bool], timeout: float = 10, fail_func: Callable | None = None,
             period: float = 0.01) -> None:
    """Block until ``predicate()`` is true; AssertionError after ``timeout``
    (``fail_func()`` is called first, e.g. to print state).  Also ``wait_for``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            if fail_func is not None:
                fail_func()
            raise AssertionError(f"condition {predicate} not met within {timeout} s")
        time.sleep(period)


async def async_poll_for(predicate: Callable[[], bool], timeout: float = 10, fail_func: Callable | None = None,
                         period: float = 0.01) -> None:
    """Like ``poll_for`` without blocking the event loop.  Also ``async_wait_for``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            if fail_func is not None:
                fail_func()
            raise AssertionError(f"condition {predicate} not met within {timeout} s")
        await asyncio.sleep(period)


# The names of both eras for the same two waits.
wait_for = poll_for
async_wait_for = async_poll_for


def wait_for_port(address, timeout: float = 10) -> None:
    """Block until something listens at ``address`` ((host, port) or 'host:port')."""
    if isinstance(address, str):
        host, port = address.split("://")[-1].rsplit(":", 1)
        address = (host, int(port))
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(address, timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


@contextlib.contextmanager
def captured_logger(logger_name: str | logging.Logger, level: int = logging.INFO,
                    propagate: bool | None = None) -> Iterator[io.StringIO]:
    """Capture what a logger writes into a StringIO."""
    log = logging.getLogger(logger_name) if isinstance(logger_name, str) else logger_name
    old_level, old_propagate = log.level, log.propagate
    handler = logging.StreamHandler(io.StringIO())
    log.addHandler(handler)
    log.setLevel(level)
    if propagate is not None:
        log.propagate = propagate
    try:
        yield handler.stream
    finally:
        log.removeHandler(handler)
        log.setLevel(old_level)
        log.propagate = old_propagate


# ----------------------------------------------------------------------
# Leak checks
# ----------------------------------------------------------------------

# distributed-hash: tokenize's pool, made once per process and kept.
_ALLOWED_THREAD_PREFIXES = ("Dask-Callback-Thread", "pydevd", "ThreadPoolExecutor-", "asyncio_",
                            "distributed-hash")


def _children() -> set[int]:
    out = set()
    for p in psutil.Process().children(recursive=True):
        try:
            if "resource_tracker" in " ".join(p.cmdline()):
                continue
            if p.status() == psutil.STATUS_ZOMBIE:
                continue
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        out.add(p.pid)
    return out


def _sockets() -> int:
    try:
        return len(psutil.Process().net_connections(kind="inet"))
    except psutil.AccessDenied:
        return 0


@contextlib.contextmanager
def clean(threads: bool = True, processes: bool = True, sockets: bool = True, files: bool = True,
          timeout: float = 10):
    """Fail if the block leaves new threads, child processes, sockets, open
    files, or worker directories (with their spilled data) behind.

    >>> with clean():                     # doctest: +SKIP
    ...     run_a_test()
    """
    threads_before = set(threading.enumerate())
    children_before = _children()
    sockets_before = _sockets()
    files_before = _open_files()
    dirs_before = _worker_dirs()
    yield
    deadline = time.monotonic() + timeout

    def leaked_threads():
        return [t for t in threading.enumerate()
                if t not in threads_before and t.is_alive()
                and not t.name.startswith(_ALLOWED_THREAD_PREFIXES)]

    def leaked_children():
        return _children() - children_before

    problems = []
    if threads:
        while leaked_threads() and time.monotonic() < deadline:
            time.sleep(0.01)
        if leaked_threads():
            problems.append(f"threads leaked: {[t.name for t in leaked_threads()]}")
    if processes:
        while leaked_children() and time.monotonic() < deadline:
            time.sleep(0.01)
        left = leaked_children()
        if left:
            for pid in left:
                with contextlib.suppress(psutil.NoSuchProcess):
                    psutil.Process(pid).kill()
            problems.append(f"child processes leaked: {sorted(left)}")
    if sockets:
        while _sockets() > sockets_before and time.monotonic() < deadline:
            time.sleep(0.01)
        if _sockets() > sockets_before:
            problems.append(f"sockets leaked: {_sockets() - sockets_before} more open than before")
    if files:
        while (_open_files() - files_before or _worker_dirs() - dirs_before) and time.monotonic() < deadline:
            time.sleep(0.01)
        if _open_files() - files_before:
            problems.append(f"files left open: {sorted(_open_files() - files_before)}")
        if _worker_dirs() - dirs_before:
            problems.append(f"worker directories left behind: {sorted(_worker_dirs() - dirs_before)}")
    if problems:
        raise AssertionError("; ".join(problems))


def _open_files() -> set[str]:
    """Regular files this process has open (pytest's own capture files aside)."""
    try:
        return {f.path for f in psutil.Process().open_files() if not f.path.startswith("/tmp/pytest-of-")
                and "/dev/" not in f.path}
    except psutil.Error:
        return set()


def _worker_dirs() -> set[str]:
    import tempfile

    tmp = tempfile.gettempdir()
    try:
        return {os.path.join(tmp, d) for d in os.listdir(tmp) if d.startswith("dask-worker-space-")}
    except OSError:
        return set()


@contextlib.contextmanager
def pristine_loop() -> Iterator[IOLoop]:
    """A fresh IOLoop, not running, closed afterwards."""
    loop = IOLoop(make_current=False)
    try:
        yield loop
    finally:
        _close_loop(loop)


def _close_loop(loop: IOLoop) -> None:
    aloop = loop.asyncio_loop  # type: ignore[attr-defined]
    if aloop.is_closed():
        return
    if aloop.is_running():
        done = threading.Event()

        def stop():
            loop.stop()
            done.set()

        loop.add_callback(stop)
        done.wait(10)
        # The thread running it exits run_forever; give it a moment.
        deadline = time.monotonic() + 10
        while aloop.is_running() and time.monotonic() < deadline:
            time.sleep(0.005)
    with contextlib.suppress(Exception):
        aloop.run_until_complete(aloop.shutdown_default_executor())
    with contextlib.suppress(Exception):
        loop.close(all_fds=True)


def _close_clients() -> None:
    for c in live_clients():
        with contextlib.suppress(Exception):
            if c.status == "running" and not c._asynchronous:
                c.close(timeout=5)


# ----------------------------------------------------------------------
# gen_cluster and gen_test
# ----------------------------------------------------------------------


async def start_cluster(nthreads, scheduler_addr: str = "127.0.0.1", Worker: type = Worker,
                        scheduler_kwargs: dict | None = None,
                        worker_kwargs: dict | None = None, security=None) -> tuple[Scheduler, list]:
    """Start a validating scheduler and one worker per ``nthreads`` entry
    (``(host, n)`` or ``(host, n, {extra worker kwargs})``) on this loop;
    ``security`` goes to all of them (``tls://`` hosts need it)."""
    if security is not None:
        scheduler_kwargs = {"security": security, **(scheduler_kwargs or {})}
        worker_kwargs = {"security": security, **(worker_kwargs or {})}
    s = Scheduler(host=scheduler_addr, port=0, **{"validate": True, **(scheduler_kwargs or {})})
    s.start()
    workers = []
    for i, spec in enumerate(nthreads):
        host, n = spec[0], spec[1]
        extra = spec[2] if len(spec) > 2 else {}
        kwargs = {"name": i, "validate": True, **(worker_kwargs or {}), **extra}
        workers.append(Worker(s.address, nthreads=n, host=host, **kwargs))
    try:
        await asyncio.gather(*(w.start() for w in workers))
        await async_wait_for(lambda: len(s.workers) >= len(workers), timeout=10)
    except BaseException:
        await end_cluster(s, workers)
        raise
    return s, workers


async def end_cluster(s: Scheduler, workers: list) -> None:
    """Close workers, then validate and close the scheduler."""
    await asyncio.gather(*(w.close(report=False) for w in workers), return_exceptions=True)
    try:
        s.validate_state()
    finally:
        await s.close()


def _strip_signature(func: Callable, n: int) -> inspect.Signature:
    sig = inspect.signature(func)
    params = list(sig.parameters.values())[n:]
    return sig.replace(parameters=params)


def gen_cluster(
    ncores=None,
    scheduler: str = "127.0.0.1",
    timeout: float = DEFAULT_TIMEOUT,
    security=None,
    Worker: type = Worker,
    client: bool = False,
    scheduler_kwargs: dict | None = None,
    worker_kwargs: dict | None = None,
    client_kwargs: dict | None = None,
    active_rpc_timeout: float = 1,
    config: dict | None = None,
    clean_kwargs: dict | None = None,
    allow_unclosed: bool = False,
    nthreads=None,
    cluster_dump_directory=None,
):
    """Run a test in one event loop with a scheduler, workers and maybe a client.

    The test is a generator (run as a Tornado coroutine) or an ``async def``
    taking ``(s, a, b, ...)``, or ``(c, s, a, b, ...)`` with ``client=True``.

    >>> @gen_cluster(client=True)                  # doctest: +SKIP
    ... async def test_submit(c, s, a, b):
    ...     assert await c.submit(inc, 1) == 2
    """
    if ncores is not None and nthreads is not None:
        raise TypeError("give nthreads= or ncores=, not both")
    nthreads = nthreads if nthreads is not None else ncores
    if nthreads is None:
        nthreads = [("127.0.0.1", 1), ("127.0.0.1", 2)]
    config_overrides = config or {}
    clean_kwargs = clean_kwargs or {}

    def decorator(func):
        if not inspect.iscoroutinefunction(func):
            coro_func = gen.coroutine(func)
        else:
            coro_func = func
        n_cluster_args = len(nthreads) + 1 + (1 if client else 0)

        @functools.wraps(func)
        def test_func(*args, **kwargs):
            with clean(**clean_kwargs), pristine_loop() as loop:

                async def run():
                    s, workers = await start_cluster(nthreads, scheduler, Worker,
                                                     scheduler_kwargs, worker_kwargs, security)
                    c = None
                    try:
                        cluster_args = [s, *workers]
                        if client:
                            ckw = dict(client_kwargs or {})
                            if security is not None:
                                ckw.setdefault("security", security)
                            c = await Client(s.address, asynchronous=True, **ckw)
                            cluster_args = [c, *cluster_args]
                        result = coro_func(*cluster_args, *args, **kwargs)
                        return await _with_deadline(result, timeout, func.__name__)
                    finally:
                        if c is not None:
                            await c._close()
                        await end_cluster(s, workers)

                with _config_set(config_overrides):
                    return loop.run_sync(run, timeout=timeout * 2 + 30)

        test_func.__signature__ = _strip_signature(func, n_cluster_args)
        del test_func.__wrapped__
        return test_func

    return decorator


@contextlib.contextmanager
def _config_set(overrides: dict):
    if overrides:
        with config.set(overrides):
            yield
    else:
        yield


async def _as_awaitable(x):
    return await x


async def _with_deadline(awaitable, timeout: float, name: str):
    """Await the test body; a body still running after ``timeout`` is
    cancelled and reported (a TimeoutError the body raises itself is kept)."""
    task = asyncio.ensure_future(_as_awaitable(awaitable))
    done, _ = await asyncio.wait([task], timeout=timeout)
    if not done:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        raise asyncio.TimeoutError(f"test {name} did not finish within {timeout} s")
    return task.result()


def gen_test(timeout: float = DEFAULT_TIMEOUT, clean_kwargs: dict | None = None):
    """Run a coroutine (async def or generator) test on a fresh event loop.

    >>> @gen_test()                            # doctest: +SKIP
    ... async def test_something():
    ...     async with Scheduler(port=0) as s:
    ...         ...
    """
    if callable(timeout) and not isinstance(timeout, (int, float)):
        return gen_test()(timeout)

    def decorator(func):
        coro_func = func if inspect.iscoroutinefunction(func) else gen.coroutine(func)

        @functools.wraps(func)
        def test_func(*args, **kwargs):
            with clean(**(clean_kwargs or {})), pristine_loop() as loop:

                async def run():
                    return await _with_deadline(coro_func(*args, **kwargs), timeout, func.__name__)

                return loop.run_sync(run, timeout=timeout + 30)

        return test_func

    return decorator


# ----------------------------------------------------------------------
# cluster(): real processes
# ----------------------------------------------------------------------


def _run_scheduler(conn, scheduler_kwargs: dict) -> None:
    async def main():
        s = Scheduler(**{"port": 0, "host": "127.0.0.1", **scheduler_kwargs})
        s.start()
        conn.send(s.address)
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await s.close()

    asyncio.run(main())


def _run_worker(scheduler_address: str, worker_kwargs: dict, nanny: bool) -> None:
    """A worker (or a Nanny and its worker) until SIGTERM or it closes."""
    logging.getLogger("distributed").setLevel(logging.WARNING)

    async def main():
        if nanny:
            from distributed.nanny import Nanny

            server = Nanny(scheduler_address, silence_logs=logging.WARNING, **worker_kwargs)
        else:
            server = Worker(scheduler_address, **worker_kwargs)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: asyncio.ensure_future(server.close()))
        await server.start()
        await server.finished()

    asyncio.run(main())


@contextlib.contextmanager
def cluster(nworkers: int = 2, nanny: bool = False, worker_kwargs: dict | None = None,
            active_rpc_timeout: float = 10, disconnect_timeout: float = 20,
            scheduler_kwargs: dict | None = None, config: dict | None = None):
    """A scheduler and ``nworkers`` workers, each in its own process.

    Yields ``(s, [a, b, ...])`` where each is a dict with ``'proc'`` (a
    ``multiprocessing.Process``), ``'port'`` and ``'address'``.

    >>> with cluster() as (s, [a, b]):                              # doctest: +SKIP
    ...     with Client(s["address"], loop=loop) as c:
    ...         a["proc"].terminate()
    """
    ctx = multiprocessing.get_context("spawn")
    worker_kwargs = dict(worker_kwargs or {})
    with clean(threads=False, sockets=False), _config_set(config or {}):
        procs: list = []
        worker_dirs: list = []
        try:
            sproc, saddr = _start_scheduler_process(scheduler_kwargs or {})
            procs.append(sproc)
            wprocs = []
            for i in range(nworkers):
                kw = {"nthreads": 1, "name": i, "memory_limit": "1GB", **worker_kwargs}
                p = ctx.Process(target=_run_worker, args=(saddr, kw, nanny), name=f"dask-worker-{i}",
                                daemon=not nanny)  # daemons may not have children
                p.start()
                procs.append(p)
                wprocs.append(p)
            by_name, worker_dirs = _wait_for_workers(saddr, list(range(nworkers)), timeout=60)
            s = {"proc": sproc, "address": saddr, "port": int(saddr.rsplit(":", 1)[1])}
            workers = [{"proc": p, "address": by_name[i], "port": int(by_name[i].rsplit(":", 1)[1])}
                       for i, p in enumerate(wprocs)]
            try:
                yield s, workers
            finally:
                _close_clients()
        finally:
            for p in reversed(procs):
                if p.is_alive():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(p.pid, signal.SIGTERM)
            for p in procs:
                p.join(10)
                if p.is_alive():
                    p.kill()
                    p.join(5)
            for d in worker_dirs:  # a worker killed by the test could not remove its own
                shutil.rmtree(d, ignore_errors=True)


def _start_scheduler_process(scheduler_kwargs: dict):
    """A Scheduler in a 'spawn' child process; returns (process, address)."""
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_run_scheduler, args=(child, scheduler_kwargs), name="dask-scheduler",
                       daemon=True)
    try:
        proc.start()
        if not parent.poll(60):
            proc.kill()
            raise TimeoutError("the scheduler process did not start within 60 s")
        return proc, parent.recv()
    finally:
        parent.close()
        child.close()


@contextlib.contextmanager
def scheduler_process(port: int = 0, **scheduler_kwargs):
    """A scheduler in its own process (e.g. to restart one at the same
    port); yields a dict with ``'proc'``, ``'address'`` and ``'port'``.

    >>> with scheduler_process(port=8786) as s:        # doctest: +SKIP
    ...     print(s["address"])
    """
    proc, address = _start_scheduler_process({"port": port, **scheduler_kwargs})
    try:
        yield {"proc": proc, "address": address, "port": int(address.rsplit(":", 1)[1])}
    finally:
        if proc.is_alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
        proc.join(10)
        if proc.is_alive():
            proc.kill()
            proc.join(5)


def _wait_for_workers(saddr: str, names: list, timeout: float) -> dict:
    """Worker name -> address once every worker in ``names`` registered."""
    from distributed.core import rpc

    async def poll():
        from distributed.security import Security

        # Security(): the configured auth secret, if any, as every process has it.
        async with rpc(saddr, connection_args=Security().get_connection_args("client")) as r:
            deadline = time.monotonic() + timeout
            while True:
                info = await r.identity()
                by_name = {w["name"]: addr for addr, w in info["workers"].items()}
                if all(name in by_name for name in names):
                    return by_name, [w["local_directory"] for w in info["workers"].values()]
                if time.monotonic() > deadline:
                    raise TimeoutError(f"only {len(by_name)} of {len(names)} workers registered in {timeout} s")
                await asyncio.sleep(0.01)

    return asyncio.run(poll())


# ----------------------------------------------------------------------
# popen: command-line tools
# ----------------------------------------------------------------------

_COMMANDS = {
    "dask-scheduler": [sys.executable, "-m", "distributed.cli.dask_scheduler"],
    "dask-worker": [sys.executable, "-m", "distributed.cli.dask_worker"],
}


@contextlib.contextmanager
def popen(args: list[str], flush_output: bool = True, terminate_timeout: float = 10,
          capture_output: bool = True, **kwargs) -> Iterator[subprocess.Popen]:
    """Run a command line; interrupt it (SIGINT, then kill) when the block ends.

    ``dask-scheduler``/``dask-worker`` run with this interpreter, installed or not.

    >>> with popen(["dask-scheduler", "--port", "0"]) as proc:   # doctest: +SKIP
    ...     ...
    """
    args = list(args)
    if args and args[0] in _COMMANDS:
        args = _COMMANDS[args[0]] + args[1:]
    env = dict(os.environ, **kwargs.pop("env", {}))
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    if capture_output:
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.STDOUT)
    proc = subprocess.Popen(args, env=env, **kwargs)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(terminate_timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if capture_output and flush_output and proc.stdout is not None and not proc.stdout.closed:
            out = proc.stdout.read()
            if out:
                print(out.decode(errors="replace"))
            proc.stdout.close()


# ----------------------------------------------------------------------
# Fixtures
# ----------------------------------------------------------------------


@pytest.fixture
def loop():
    """A fresh IOLoop, not running; a blocking Client started on it runs it
    in a thread.  Clients and the loop are closed afterwards."""
    with clean(sockets=False), pristine_loop() as loop:
        yield loop
        _close_clients()


@pytest.fixture
def loop_in_thread():
    """A fresh IOLoop already running in a background thread."""
    with clean(sockets=False), pristine_loop() as loop:
        started = threading.Event()
        loop.add_callback(started.set)
        thread = threading.Thread(target=loop.start, name="test-loop", daemon=True)
        thread.start()
        started.wait(10)
        yield loop
        _close_clients()
        loop.add_callback(loop.stop)
        thread.join(10)


@pytest.fixture
def cleanup():
    """Fail the test if it leaks threads, sockets or processes."""
    with clean():
        yield


@pytest.fixture
def cluster_fixture(loop):
    with cluster() as (scheduler, workers):
        yield scheduler, workers


@pytest.fixture
def s(cluster_fixture):
    scheduler, workers = cluster_fixture
    return scheduler


@pytest.fixture
def a(cluster_fixture):
    scheduler, workers = cluster_fixture
    return workers[0]


@pytest.fixture
def b(cluster_fixture):
    scheduler, workers = cluster_fixture
    return workers[1]


@pytest.fixture
def client(loop, cluster_fixture):
    scheduler, workers = cluster_fixture
    with Client(scheduler["address"], loop=loop) as c:
        yield c


@pytest.fixture
def c(client):
    return client



@pytest.fixture
def client_secondary(loop, cluster_fixture):
    """A second blocking client of the ``cluster_fixture`` cluster."""
    scheduler, workers = cluster_fixture
    with Client(scheduler["address"], loop=loop, set_as_default=False) as c:
        yield c


@pytest.fixture(scope="session")
def valid_python_script(tmp_path_factory):
    """A script that runs and prints ``hello world!``."""
    path = tmp_path_factory.mktemp("data") / "file.py"
    path.write_text("print('hello world!')\n")
    return path


@pytest.fixture(scope="session")
def client_contract_script(tmp_path_factory):
    """A script that connects a Client to 127.0.0.1:8989 and prints it."""
    path = tmp_path_factory.mktemp("data") / "distributed_script.py"
    path.write_text("from distributed import Client\nc = Client('127.0.0.1:8989')\nprint(c)\n")
    return path


@pytest.fixture(scope="session")
def invalid_python_script(tmp_path_factory):
    """A script that fails with a NameError."""
    path = tmp_path_factory.mktemp("data") / "file.py"
    path.write_text("a+1\n")
    return path


# ----------------------------------------------------------------------
# More helpers that test suites of both eras import
# ----------------------------------------------------------------------

#: Marks a long test (``pytest -m "not slow"`` skips them locally).
slow = pytest.mark.slow


async def wait_for_state(key, state: str | set | tuple | list, dask_worker, *, interval: float = 0.01,
                         timeout: float = 10) -> None:
    """Wait until task ``key`` is in ``state`` (or one of several) on a
    Worker or Scheduler; AssertionError naming the last state after ``timeout``.

    >>> await wait_for_state("x", "memory", a)           # doctest: +SKIP
    """
    states = {state} if isinstance(state, str) else set(state)
    tasks = dask_worker.tasks if isinstance(dask_worker, Scheduler) else dask_worker.state.tasks

    def current():
        ts = tasks.get(key)
        return None if ts is None else ts.state

    deadline = time.monotonic() + timeout
    while current() not in states:
        if time.monotonic() > deadline:
            raise AssertionError(f"task {key!r} on {dask_worker!r} is {current()!r}, "
                                 f"not in {sorted(states)}, after {timeout} s")
        await asyncio.sleep(interval)


@contextlib.contextmanager
def captured_handler(handler: logging.StreamHandler) -> Iterator[io.StringIO]:
    """Capture what a ``StreamHandler`` writes into a StringIO."""
    if not isinstance(handler, logging.StreamHandler):
        raise TypeError(f"captured_handler needs a logging.StreamHandler, not {type(handler).__name__}")
    old = handler.stream
    handler.stream = io.StringIO()
    try:
        yield handler.stream
    finally:
        handler.stream = old


def raises(func: Callable[[], object], exc: type[BaseException] | tuple = Exception) -> bool:
    """Whether ``func()`` raises ``exc``."""
    try:
        func()
    except exc:
        return True
    return False


@contextlib.contextmanager
def raises_with_cause(expected_exception, match: str | None, expected_cause, match_cause: str | None,
                      *more_causes):
    """``pytest.raises`` that also checks the chain of ``__cause__``:
    ``expected_cause`` (text matching ``match_cause``), then any further
    ``(exception type, match)`` pairs in ``more_causes``."""
    if len(more_causes) % 2:
        raise TypeError("more_causes are (exception type, match) pairs")
    with pytest.raises(expected_exception, match=match) as info:
        yield info
    exc: BaseException | None = info.value
    for cause_type, cause_match in [(expected_cause, match_cause), *zip(more_causes[::2], more_causes[1::2])]:
        exc = exc.__cause__ if exc is not None else None
        assert isinstance(exc, cause_type), f"cause {exc!r} is not a {cause_type}"
        if cause_match is not None:
            assert re.search(cause_match, str(exc)), f"cause {exc!r} does not match {cause_match!r}"


def terminate_process(proc: subprocess.Popen, timeout: float = 10) -> None:
    """Interrupt ``proc`` (SIGINT), then kill it if it is still alive after ``timeout``."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def nodebug(func: Callable) -> Callable:
    """Run a test without asyncio debug mode (``PYTHONASYNCIODEBUG``), which
    makes some timing-bound tests too slow."""

    @functools.wraps(func)
    def wrapped(*args, **kwargs):
        old = os.environ.pop("PYTHONASYNCIODEBUG", None)
        try:
            return func(*args, **kwargs)
        finally:
            if old is not None:
                os.environ["PYTHONASYNCIODEBUG"] = old

    return wrapped


@functools.cache
def has_ipv6() -> bool:
    """Whether IPv6 works on the loopback interface."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as server:
            server.bind(("::1", 0))
            server.listen(1)
            with socket.create_connection(server.getsockname()[:2], timeout=5):
                return True
    except OSError:
        return False


def requires_ipv6(test_func: Callable) -> Callable:
    """Skip the test where the loopback interface has no IPv6."""
    return pytest.mark.skipif(not has_ipv6(), reason="needs IPv6 on the loopback interface")(test_func)


async def assert_can_connect(addr: str, timeout: float = 0.5) -> None:
    """Check that a connection to ``addr`` opens within ``timeout``."""
    from distributed.comm import connect

    comm = await connect(addr, timeout=timeout, retry_refused=False)
    await comm.close()


async def assert_cannot_connect(addr: str, timeout: float = 0.5,
                                exception_class: type[BaseException] = OSError) -> None:
    """Check that connecting to ``addr`` fails with ``exception_class``."""
    from distributed.comm import connect

    with pytest.raises(exception_class):
        comm = await connect(addr, timeout=timeout, retry_refused=False)
        await comm.close()


@contextlib.contextmanager
def save_sys_modules() -> Iterator[None]:
    """Forget modules imported and ``sys.path`` entries added by the block."""
    modules = set(sys.modules)
    path = list(sys.path)
    try:
        yield
    finally:
        sys.path[:] = path
        for name in set(sys.modules) - modules:
            del sys.modules[name]


@contextlib.contextmanager
def check_thread_leak() -> Iterator[None]:
    """Fail if the block leaves threads behind (see ``clean``)."""
    with clean(threads=True, processes=False, sockets=False, files=False):
        yield


@contextlib.contextmanager
def check_process_leak(check: bool = True) -> Iterator[None]:
    """Fail if the block leaves child processes behind (see ``clean``)."""
    with clean(threads=False, processes=check, sockets=False, files=False):
        yield


# ----------------------------------------------------------------------
# TLS: generated certificates and a TLS gen_cluster
# ----------------------------------------------------------------------


def get_cert(filename: str) -> str:
    """Path of a test certificate or key, generated for this test session
    (``tls-ca-cert.pem``, ``tls-cert.pem``, ``tls-key.pem``, ``tls-key-cert.pem``,
    ``tls-cert-chain.pem``, ``tls-ca-key.pem``, ``tls-self-signed-cert.pem``,
    ``tls-self-signed-key.pem``; see ``distributed._certs``).

    >>> get_cert("tls-ca-cert.pem").endswith("tls-ca-cert.pem")
    True
    """
    from distributed._certs import cert_path

    return cert_path(filename)


def tls_config() -> dict:
    """Configuration (``config.set`` form) for a TLS cluster whose every role
    uses the generated leaf certificate."""
    ca, keycert = get_cert("tls-ca-cert.pem"), get_cert("tls-key-cert.pem")
    role = {"cert": keycert, "key": keycert}
    return {"distributed": {"comm": {"tls": {
        "ca-file": ca, "client": dict(role), "scheduler": dict(role), "worker": dict(role),
    }}}}


def tls_only_config() -> dict:
    """``tls_config()`` plus ``require-encryption: True`` (plain tcp:// refused)."""
    c = tls_config()
    c["distributed"]["comm"]["require-encryption"] = True
    return c


def tls_security():
    """A ``Security`` for every role with the generated certificates
    (``require_encryption=False``, as upstream's harness)."""
    from distributed.security import Security

    with config.set(tls_config()):
        return Security(require_encryption=False)


def tls_only_security():
    """``tls_security()`` that also refuses plain tcp://."""
    from distributed.security import Security

    with config.set(tls_only_config()):
        sec = Security()
    assert sec.require_encryption
    return sec


def _test_ssl_context(purpose):
    import ssl

    ctx = ssl.create_default_context(purpose, cafile=get_cert("tls-ca-cert.pem"))
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.check_hostname = False
    ctx.load_cert_chain(get_cert("tls-cert.pem"), get_cert("tls-key.pem"))
    return ctx


def get_server_ssl_context():
    """An ``ssl.SSLContext`` for a server: the generated leaf, client certificates required."""
    import ssl

    return _test_ssl_context(ssl.Purpose.CLIENT_AUTH)


def get_client_ssl_context():
    """An ``ssl.SSLContext`` for a client: the generated leaf, server certificate required."""
    import ssl

    return _test_ssl_context(ssl.Purpose.SERVER_AUTH)


def gen_tls_cluster(**kwargs):
    """``gen_cluster`` on ``tls://127.0.0.1`` with ``tls_only_security()``
    (scheduler, two workers, and the client when ``client=True``).

    >>> @gen_tls_cluster(client=True)                # doctest: +SKIP
    ... async def test_submit(c, s, a, b):
    ...     assert s.address.startswith("tls://")
    """
    kwargs.setdefault("nthreads", [("tls://127.0.0.1", 1), ("tls://127.0.0.1", 2)])
    return gen_cluster(scheduler="tls://127.0.0.1", security=tls_only_security(), **kwargs)
