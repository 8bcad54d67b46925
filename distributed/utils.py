"""Small helpers shared across the package: keys, tokens, sizes and the
bridge between blocking code and the event loop (``sync``, ``LoopRunner``),
plus the helpers user code of both eras imports from here (``All``,
``tmpfile``, ``get_ip``, ``log_errors``, ... see docs/import-map.rst).
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import html
import importlib
import inspect
import logging
import os
import re
import shutil
import socket
import sys
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator
from typing import Any

from tornado.ioloop import IOLoop

__all__ = [
    "key_split",
    "funcname",
    "tokenize",
    "sizeof",
    "sync",
    "LoopRunner",
    "thread_state",
    "in_thread_of",
    # helpers of both eras' public surface (docs/import-map.rst)
    "All",
    "Log",
    "Logs",
    "LINUX",
    "MACOS",
    "PYPY",
    "WINDOWS",
    "ensure_ip",
    "get_ip",
    "get_ip_interface",
    "get_ipv6",
    "has_arg",
    "import_term",
    "is_kernel",
    "iscoroutinefunction",
    "log_errors",
    "mp_context",
    "nbytes",
    "offload",
    "open_port",
    "safe_sizeof",
    "silence_logging",
    "tmpfile",
    "typename",
]

logger = logging.getLogger(__name__)

#: Per-thread context: workers set ``key`` and ``worker`` while running a task.
thread_state = threading.local()

_hex_pattern = re.compile("^[0-9a-fA-F]{8,}$")


# Small on purpose: names repeat across the keys of one collection (tuple
# keys share their first element), while a cache entry per unique string key
# would cost the scheduler about 90 bytes per task.
@functools.lru_cache(maxsize=4096)
def _key_split_str(s: str) -> str:
    words = s.split("-")
    if not words[0][:1].isalpha():
        result = words[0].split(",")[0].strip("_'()\"")
    else:
        result = words[0]
    for word in words[1:]:
        if word.isalpha() and not (len(word) == 8 and _hex_pattern.match(word) is not None):
            result += "-" + word
        else:
            break
    if len(result) == 32 and _hex_pattern.match(result):
        return "data"
    if result and result[0] == "<":
        result = result.strip("<>").split()[0].split(".")[-1]
    return result


def key_split(key: Any) -> str:
    """The name prefix of a task key, used to group similar tasks.

    >>> key_split("inc-a8f3e6c1d2b44f5a9e0b")
    'inc'
    >>> key_split(("x-1b2c3d4e", 0, 1))
    'x'
    >>> key_split("finalize-sum-aggregate")
    'finalize-sum-aggregate'
    """
    if type(key) is tuple and key:
        key = key[0]
    if isinstance(key, bytes):
        key = key.decode(errors="replace")
    if isinstance(key, str):
        try:
            return _key_split_str(key)
        except Exception:
            return "Other"
    return "Other"


def funcname(func: Callable) -> str:
    """A readable name for a callable.

    >>> funcname(len)
    'len'
    >>> funcname(functools.partial(max, 1))
    'max'
    """
    while isinstance(func, functools.partial):
        func = func.func
    name = getattr(func, "__name__", None)
    if name is None:
        name = type(func).__name__
    if name == "<lambda>":
        return "lambda"
    return name


#: Inputs from this many bytes on are hashed in parallel chunks (see tokenize).
_PARALLEL_HASH_MIN = 32 << 20
_HASH_CHUNK = 8 << 20
_hash_pool = None  # a thread pool, made on first use


def tokenize(*parts: bytes | bytearray | memoryview | str) -> str:
    """A deterministic hex token of some bytes.

    Large inputs (``scatter`` names a 100 MB value by its contents) are cut
    into 8 MiB chunks whose digests are computed on all cores (hashlib lets
    go of the GIL) and then hashed together; the chunking does not depend on
    the number of cores, so the token is the same everywhere.

    >>> tokenize(b"abc") == tokenize(b"abc")
    True
    """
    parts = tuple(p.encode() if isinstance(p, str) else p for p in parts)
    if sum(p.nbytes if isinstance(p, memoryview) else len(p) for p in parts) < _PARALLEL_HASH_MIN:
        h = hashlib.sha1()  # the common case, once per task in map/submit: no views
        for part in parts:
            h.update(part)
        return h.hexdigest()
    views = [memoryview(p).cast("B") for p in parts]
    chunks = [v[i : i + _HASH_CHUNK] for v in views for i in range(0, len(v), _HASH_CHUNK)]
    digests = _parallel_hash_pool().map(lambda chunk: hashlib.sha1(chunk).digest(), chunks)
    h = hashlib.sha1(b"sha1 of 8 MiB chunks of parts of %r bytes:" % [len(v) for v in views])
    for digest in digests:
        h.update(digest)
    return h.hexdigest()


def _parallel_hash_pool():
    global _hash_pool
    if _hash_pool is None:
        from concurrent.futures import ThreadPoolExecutor

        _hash_pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 1,
                                        thread_name_prefix="distributed-hash")
    return _hash_pool


def sizeof(obj: Any) -> int:
    """Approximate bytes held by ``obj`` (dask's sizeof when it is loaded).

    >>> sizeof(b"x" * 1000)
    1033
    """
    if isinstance(obj, (bytes, bytearray)):
        return sys.getsizeof(obj)
    if isinstance(obj, memoryview):
        return obj.nbytes
    nbytes = getattr(obj, "nbytes", None)
    if isinstance(nbytes, int) and type(obj).__module__.startswith("numpy"):
        return nbytes + 100
    if "dask" in sys.modules:
        try:
            from dask.sizeof import sizeof as dask_sizeof

            return int(dask_sizeof(obj))
        except Exception:
            pass
    if isinstance(obj, (list, tuple, set, frozenset)):
        n = len(obj)
        if n == 0:
            return sys.getsizeof(obj)
        sample = list(obj)[:10] if not isinstance(obj, (list, tuple)) else obj[:10]
        return sys.getsizeof(obj) + int(sum(sizeof(x) for x in sample) * n / len(sample))
    if isinstance(obj, dict):
        return sys.getsizeof(obj) + sum(sizeof(k) + sizeof(v) for k, v in list(obj.items())[:10]) * max(
            1, len(obj) // 10
        )
    try:
        return sys.getsizeof(obj)
    except Exception:
        return 64


def in_thread_of(loop: IOLoop) -> bool:
    """Whether the calling thread is running ``loop``."""
    try:
        return asyncio.get_running_loop() is loop.asyncio_loop  # type: ignore[attr-defined]
    except RuntimeError:
        return False


def sync(loop: IOLoop, func: Callable, *args, callback_timeout: float | None = None, **kwargs) -> Any:
    """Run coroutine function ``func`` on ``loop`` (running in another thread)
    and block until it finishes; its exception is re-raised here.

    >>> sync(loop, client._gather, futures)  # doctest: +SKIP
    """
    if in_thread_of(loop):
        raise RuntimeError(
            "sync() called from the event loop's own thread; use the asynchronous API (await) here"
        )
    if getattr(loop, "asyncio_loop", None) is None or loop.asyncio_loop.is_closed():
        raise RuntimeError("the event loop is closed")
    done = threading.Event()
    result: list = [None, None]

    async def run():
        try:
            coro = func(*args, **kwargs)
            if callback_timeout is not None:
                coro = asyncio.wait_for(coro, callback_timeout)
            result[0] = await coro
        except BaseException as e:
            result[1] = e
        finally:
            done.set()

    loop.add_callback(run)
    done.wait()
    if result[1] is not None:
        exc = result[1]
        raise exc.with_traceback(exc.__traceback__)
    return result[0]


class LoopRunner:
    """An IOLoop running in a daemon thread, shared by whoever asks for the
    same loop; stopped when the last user releases it.

    ``asynchronous=True`` means the caller's own loop is already running in
    this thread and nothing is started.
    """

    _lock = threading.Lock()
    _running: dict[IOLoop, list] = {}  # loop -> [user count, thread]

    def __init__(self, loop: IOLoop | None = None, asynchronous: bool = False):
        self.asynchronous = asynchronous
        self._started = False
        self._owns_loop = loop is None and not asynchronous
        if asynchronous:
            self.loop = loop or IOLoop.current()
        else:
            self.loop = loop or IOLoop(make_current=False)

    def start(self) -> None:
        if self.asynchronous or self._started:
            return
        with self._lock:
            entry = self._running.get(self.loop)
            if entry is not None:
                entry[0] += 1
            elif self._loop_is_running_elsewhere():
                self._running[self.loop] = [1, None]
            else:
                started = threading.Event()
                thread = threading.Thread(target=self._run, args=(started,),
                                          name="distributed-loop", daemon=True)
                thread.start()
                started.wait()
                self._running[self.loop] = [1, thread]
        self._started = True

    def _loop_is_running_elsewhere(self) -> bool:
        aloop = getattr(self.loop, "asyncio_loop", None)
        return aloop is not None and aloop.is_running()

    def _run(self, started: threading.Event) -> None:
        self.loop.add_callback(started.set)
        try:
            self.loop.start()
        except Exception:
            logger.exception("event loop thread failed")

    def stop(self, timeout: float = 10) -> None:
        if self.asynchronous or not self._started:
            return
        self._started = False
        with self._lock:
            entry = self._running.get(self.loop)
            if entry is None:
                return
            entry[0] -= 1
            if entry[0] > 0:
                return
            del self._running[self.loop]
        thread = entry[1]
        if thread is None:
            return
        self.loop.add_callback(self.loop.stop)
        thread.join(timeout)
        if self._owns_loop:  # a loop we were given is closed by its owner
            aloop = self.loop.asyncio_loop
            try:
                aloop.run_until_complete(aloop.shutdown_default_executor())
                self.loop.close(all_fds=True)
            except Exception:
                pass

    def is_started(self) -> bool:
        return self._started


# ----------------------------------------------------------------------
# Helpers user code and test suites import from ``distributed.utils``
# (see docs/import-map.rst).  Written once here; the import map points the
# old paths (``distributed.sizeof``, ``distributed.compatibility``) at them.
# ----------------------------------------------------------------------

#: The platform, as ``distributed.compatibility`` spelled it.
WINDOWS = sys.platform.startswith("win")
LINUX = sys.platform.startswith("linux")
MACOS = sys.platform == "darwin"
PYPY = sys.implementation.name == "pypy"


def safe_sizeof(obj: Any, default_size: float = 1e6) -> int:
    """``sizeof(obj)``, or ``default_size`` (with a warning) if measuring fails.

    >>> safe_sizeof(b"x" * 1000)
    1033
    """
    try:
        return sizeof(obj)
    except Exception:
        logger.warning("sizeof of a %s object failed; assuming %d bytes", type(obj).__name__,
                       int(default_size), exc_info=True)
        return int(default_size)


def nbytes(frame: Any) -> int:
    """Bytes in a bytes-like ``frame`` (``len`` for bytes, ``.nbytes`` for views).

    >>> nbytes(b"abc"), nbytes(memoryview(bytearray(8)).cast("d"))
    (3, 8)
    """
    if isinstance(frame, (bytes, bytearray)):
        return len(frame)
    try:
        return memoryview(frame).nbytes
    except TypeError:
        return len(frame)


async def All(args, quiet_exceptions: Any = ()) -> list:
    """Await every awaitable in ``args``; their results in order.

    The first exception raised is raised here; exceptions of the others
    (which keep running) are logged unless their type is in
    ``quiet_exceptions``.

    >>> async def double(x):
    ...     return 2 * x
    >>> asyncio.run(All([double(1), double(2)]))
    [2, 4]
    """
    futures = [asyncio.ensure_future(a) for a in args]
    try:
        return list(await asyncio.gather(*futures))
    except BaseException:
        def report(fut: asyncio.Future) -> None:
            if not fut.cancelled() and fut.exception() is not None \
                    and not isinstance(fut.exception(), quiet_exceptions):
                logger.error("an awaitable in All() failed after another one did",
                             exc_info=fut.exception())

        for fut in futures:
            if fut.done():
                if not fut.cancelled():
                    fut.exception()  # retrieved: no "never retrieved" warning
            else:
                fut.add_done_callback(report)
        raise


@contextlib.contextmanager
def tmpfile(extension: str = "", dir: str | None = None) -> Iterator[str]:
    """A path for a temporary file (or directory) that is removed afterwards.

    Nothing is created at the path; whatever the block puts there is deleted.

    >>> with tmpfile("csv") as fn:
    ...     fn.endswith(".csv"), os.path.exists(fn)
    (True, False)
    """
    extension = "." + extension.lstrip(".") if extension else ""
    fd, path = tempfile.mkstemp(suffix=extension, dir=dir)
    os.close(fd)
    os.remove(path)
    try:
        yield path
    finally:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)


def __getattr__(name: str) -> Any:
    # mp_context is made on first use: importing multiprocessing costs more
    # than this whole module's own code, and most importers never need it.
    if name == "mp_context":
        import multiprocessing

        from distributed import config

        global mp_context
        mp_context = multiprocessing.get_context(config.get("distributed.worker.multiprocessing-method"))
        return mp_context
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def get_ip(host: str = "8.8.8.8", port: int = 80) -> str:
    """This machine's IP address on the route towards ``host``.

    Nothing is sent: a UDP socket is connected only to ask the kernel which
    local address it would use.  Falls back on ``127.0.0.1`` (with a
    warning) when there is no such route.

    >>> get_ip("127.0.0.1")
    '127.0.0.1'
    """
    return _route_address(socket.AF_INET, host, port, "127.0.0.1")


def get_ipv6(host: str = "2001:4860:4860::8888", port: int = 80) -> str:
    """Like ``get_ip`` for IPv6 (falls back on ``::1``)."""
    return _route_address(socket.AF_INET6, host, port, "::1")


def _route_address(family: int, host: str, port: int, fallback: str) -> str:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.connect((host, port))
        return sock.getsockname()[0]
    except OSError:
        warnings.warn(f"Couldn't detect a suitable IP address for reaching {host!r}, "
                      f"falling back to {fallback!r}", RuntimeWarning, stacklevel=3)
        return fallback
    finally:
        sock.close()


def get_ip_interface(ifname: str) -> str:
    """The IPv4 address of network interface ``ifname`` (e.g. ``'lo'``).

    Raises ValueError naming the interfaces there are, when ``ifname`` is not
    one of them or has no IPv4 address.

    >>> get_ip_interface("lo")  # doctest: +SKIP
    '127.0.0.1'
    """
    import psutil

    addresses = psutil.net_if_addrs()
    if ifname not in addresses:
        raise ValueError(f"{ifname!r} is not a valid network interface; valid interfaces are "
                         f"{sorted(addresses)}")
    for info in addresses[ifname]:
        if info.family == socket.AF_INET:
            return info.address
    raise ValueError(f"network interface {ifname!r} has no IPv4 address")


def host_from_interface(host: str | None, interface: str | None) -> str | None:
    """The host to listen on: ``host``, or the IPv4 address of network
    interface ``interface`` (``--interface eth0``); both at once is an error.

    >>> host_from_interface(None, "lo")
    '127.0.0.1'
    >>> host_from_interface("10.0.0.1", None)
    '10.0.0.1'
    """
    if interface is None:
        return host
    if host:
        raise ValueError(f"give a host ({host!r}) or a network interface ({interface!r}), "
                         "not both")
    return get_ip_interface(interface)


def refuse_unknown_keywords(owner: str, kwargs: dict) -> None:
    """Raise ``TypeError`` naming keywords ``owner`` cannot honour (they are
    never accepted and ignored).

    >>> refuse_unknown_keywords("Worker", {})
    >>> refuse_unknown_keywords("Worker", {"colour": "red"})
    Traceback (most recent call last):
    TypeError: Worker() got keyword arguments it cannot honour: ['colour']
    """
    if kwargs:
        raise TypeError(f"{owner}() got keyword arguments it cannot honour: {sorted(kwargs)}")


def ensure_ip(hostname: str) -> str:
    """The IP address of ``hostname`` (an IP address is returned unchanged).

    >>> ensure_ip("127.0.0.1")
    '127.0.0.1'
    """
    family = socket.AF_INET6 if ":" in hostname else socket.AF_INET
    return socket.getaddrinfo(hostname, 1234, family, socket.SOCK_STREAM)[0][4][0]


def open_port(host: str = "") -> int:
    """A port that was free a moment ago on ``host``.

    Another process may take it before you bind it; prefer port 0 where the
    API allows it.

    >>> 0 < open_port("127.0.0.1") < 65536
    True
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class log_errors:
    """Log an exception (with its traceback) on its way out, then let it go on.

    Works as a context manager and as a decorator of plain and ``async``
    functions.  ``CancelledError`` is not an error and is not logged.

    >>> with log_errors():
    ...     pass
    >>> @log_errors
    ... def f():
    ...     return 1
    >>> f()
    1
    """

    def __init__(self, func: Callable | None = None, *, pdb: bool = False):
        self.func = func
        self.pdb = pdb
        if func is not None:
            functools.update_wrapper(self, func)

    def __call__(self, *args, **kwargs):
        if self.func is None:  # @log_errors(pdb=True) then decorating
            return log_errors(args[0], pdb=self.pdb)
        if iscoroutinefunction(self.func):
            async def run():
                with log_errors(pdb=self.pdb):
                    return await self.func(*args, **kwargs)
            return run()
        with log_errors(pdb=self.pdb):
            return self.func(*args, **kwargs)

    def __enter__(self) -> None:
        pass

    def __exit__(self, typ, exc, tb) -> bool:
        if exc is not None and not isinstance(exc, asyncio.CancelledError):
            logger.exception(exc)
            if self.pdb:
                import pdb

                pdb.post_mortem(tb)
        return False


def iscoroutinefunction(func: Any) -> bool:
    """Whether calling ``func`` gives a coroutine (``async def`` or a
    ``tornado.gen.coroutine``), partials unwrapped.

    >>> async def f(): pass
    >>> iscoroutinefunction(f), iscoroutinefunction(functools.partial(f)), iscoroutinefunction(len)
    (True, True, False)
    """
    while isinstance(func, functools.partial):
        func = func.func
    if inspect.iscoroutinefunction(func):
        return True
    from tornado import gen

    return gen.is_coroutine_function(func)


def import_term(name: str) -> Any:
    """The object a dotted name refers to: ``'package.module.attribute'``.

    >>> import_term("os.path.join") is os.path.join
    True
    """
    module_name, _, attr = name.rpartition(".")
    if not module_name:
        raise ValueError(f"{name!r} is not a dotted name like 'module.attribute'")
    module = importlib.import_module(module_name)
    try:
        return getattr(module, attr)
    except AttributeError as e:
        raise AttributeError(f"{name!r}: module {module_name!r} has no attribute {attr!r}") from e


def has_arg(func: Callable, argname: str) -> bool:
    """Whether ``func`` takes an argument called ``argname``.

    >>> has_arg(lambda x, y=1: 0, "y"), has_arg(len, "y")
    (True, False)
    """
    try:
        return argname in inspect.signature(func).parameters
    except (TypeError, ValueError):
        return False


def typename(typ: Any, short: bool = False) -> str:
    """The dotted name of a type (or of an object's type if given an instance).

    >>> typename(int), typename(IOLoop), typename(IOLoop, short=True)
    ('int', 'tornado.ioloop.IOLoop', 'tornado.IOLoop')
    """
    if not isinstance(typ, type):
        typ = type(typ)
    module = typ.__module__
    if module == "builtins":
        return typ.__qualname__
    if short:
        module = module.split(".")[0]
    return f"{module}.{typ.__qualname__}"


class _QuietBelow(logging.Filter):
    """Drops records of ``root``'s loggers below ``level`` from the console
    handler it is attached to (other handlers, such as the servers' log
    deques, still get them)."""

    def __init__(self, root: str, level: int):
        super().__init__()
        self.root, self.level = root, level

    def filter(self, record: logging.LogRecord) -> bool:
        name = record.name
        ours = name == self.root or name.startswith(self.root + ".")
        return not ours or record.levelno >= self.level


def silence_logging(level: int | str, root: str = "distributed") -> int:
    """Show only records of ``level`` or above from ``root``'s loggers on the
    console (the handlers of ``root`` and of the root logger that write to
    stdout or stderr, and Python's last-resort handler); returns the previous level (NOTSET the
    first time).  Unlike setting the logger's level, records still reach the
    other handlers: ``client.get_scheduler_logs()`` keeps its INFO lines.

    >>> old = silence_logging("ERROR")
    >>> _ = silence_logging(old)
    """
    level = logging.getLevelName(level) if isinstance(level, str) else level
    previous = logging.NOTSET
    handlers = [*logging.getLogger(root).handlers, *logging.getLogger().handlers]
    if logging.lastResort is not None:
        handlers.append(logging.lastResort)
    consoles = {id(sys.stderr), id(sys.stdout), id(sys.__stderr__), id(sys.__stdout__)}
    for handler in handlers:
        # Only handlers that print to the terminal: files, log collectors
        # (pytest's caplog) and the servers' deques keep every record.
        if not isinstance(handler, logging.StreamHandler) or id(handler.stream) not in consoles:
            continue
        for f in list(handler.filters):
            if isinstance(f, _QuietBelow) and f.root == root:
                previous = f.level
                handler.removeFilter(f)
        if level > logging.NOTSET:
            handler.addFilter(_QuietBelow(root, level))
    return previous


def is_kernel() -> bool:
    """Whether this code runs in a Jupyter/IPython kernel.

    >>> is_kernel()
    False
    """
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    shell = ipython.get_ipython()
    return getattr(shell, "kernel", None) is not None


async def offload(func: Callable, *args, **kwargs) -> Any:
    """Run a blocking ``func(*args, **kwargs)`` in a thread; await its result.

    >>> asyncio.run(offload(sum, [1, 2]))
    3
    """
    return await asyncio.to_thread(func, *args, **kwargs)


class Log(str):
    """A log as text that notebooks show preformatted."""

    def _repr_html_(self) -> str:
        return f"<pre><code>{html.escape(self)}</code></pre>"


class Logs(dict):
    """Logs of several processes (name -> Log) that notebooks show one by one."""

    def _repr_html_(self) -> str:
        parts = [f"<details><summary>{html.escape(str(name))}</summary>"
                 f"{Log(log)._repr_html_()}</details>" for name, log in sorted(self.items())]
        return "\n".join(parts)
