"""Small helpers shared across the package: keys, tokens, sizes and the
bridge between blocking code and the event loop (``sync``, ``LoopRunner``).
"""
from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import os
import re
import sys
import threading
from collections.abc import Callable
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
