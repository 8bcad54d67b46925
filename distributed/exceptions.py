"""Public exceptions and the transport of remote errors.

A task or handler that raises on another machine reaches the caller as the
same exception type.  Its traceback travels as a list of
``(filename, lineno, name, line)`` entries and is rebuilt into a real
traceback object on arrival, so ``traceback.format_tb(future.traceback())``
and debuggers work as they would locally.

What travels is kept readable and bounded (``error_message``):

- the frames of the machinery that ran the task (the worker, the run-spec
  and graph helpers, ``concurrent.futures``, dask's task spec) are cut from
  the start of the traceback, so it begins at the user's function; the
  user's frames, and anything they call, stay whole and in order;
- an exception whose text is longer than ``distributed.admin.max-error-length``
  (10000 characters) is replaced by one of the same type holding
  ``("Long error message", <the first 10000 characters>)``, as dask.distributed
  always did; a traceback longer than that keeps its innermost frames.

Nothing here may fail the error path itself: an exception whose ``str``
raises, that cannot be pickled or rebuilt, still produces a message.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import traceback as _traceback
from types import TracebackType
from typing import Any

from distributed import config
from distributed.protocol import Serialize
from distributed.protocol.serialize import pickle_dumps, pickle_loads

__all__ = [
    "CancelledError",
    "TimeoutError",
    "KilledWorker",
    "FutureLost",
    "ActorLostError",
    "Reschedule",
    "RemoteTraceback",
    "error_message",
    "clean_exception",
    "truncate_exception",
    "user_traceback",
]

logger = logging.getLogger(__name__)

CancelledError = asyncio.CancelledError
TimeoutError = asyncio.TimeoutError
assert TimeoutError is concurrent.futures.TimeoutError


class KilledWorker(Exception):
    """A task was running on workers that died too many times.

    The task is probably what kills its workers (it uses too much memory,
    segfaults, or calls ``sys.exit``).
    """

    def __init__(
        self,
        task: Any,
        last_worker: str | None = None,
        allowed_failures: int | None = None,
        reason: str | None = None,
        deaths: int | None = None,
    ):
        self.task = task
        self.last_worker = last_worker
        self.allowed_failures = allowed_failures
        self.reason = reason
        self.deaths = deaths if deaths is not None else (allowed_failures or 0) + 1
        super().__init__(task, last_worker, allowed_failures, reason, deaths)

    def __str__(self) -> str:
        why = f" ({self.reason})" if self.reason else ""
        return (
            f"Attempted to run task {self.task!r} on {self.deaths} different workers, "
            f"but all those workers died while running it. The last worker that "
            f"attempted to run the task was {self.last_worker}{why}. Inspect worker logs "
            f"for details; the task may be using too much memory or crashing its process."
        )


class Reschedule(Exception):
    """Raise inside a task to have the scheduler run it again, perhaps on
    another worker."""


class FutureLost(Exception):
    """The data of a future was lost and cannot be recomputed (scattered data
    held only by a worker that died)."""


class ActorLostError(RuntimeError, ValueError):
    """The worker holding an actor is gone, and the actor's state with it:
    an actor is never recomputed elsewhere.  A ``RuntimeError``, and a
    ``ValueError`` as dask.distributed's proxy raised, so either habit
    catches it."""


class RemoteTraceback(Exception):
    """Attached as ``__cause__`` to remote errors: the remote traceback text."""

    def __init__(self, text: str):
        self.text = text

    def __str__(self) -> str:
        return self.text


def error_message(e: BaseException) -> dict:
    """The reply for a handler or task that raised ``e``: the exception
    (truncated past ``distributed.admin.max-error-length``), its traceback
    from the user's first frame on, and both as text.

    >>> msg = error_message(ValueError("bad"))
    >>> msg["status"], msg["text"]
    ('error', 'bad')
    >>> with config.set({"distributed.admin.max-error-length": 5}):
    ...     error_message(ValueError("abcdefgh"))["text"]
    "('Long error message', 'abcde')"
    """
    limit = max_error_length()
    exc = _picklable_exception(truncate_exception(e, limit))
    tb, omitted = _limit_traceback(user_traceback(e.__traceback__), limit)
    frames = [tuple(f) for f in _traceback.extract_tb(tb)] if tb is not None else []
    return {
        "status": "error",
        "exception": Serialize(exc),
        "traceback": frames,
        "text": _safe_str(exc),
        "exception_text": _safe_repr(exc),
        "traceback_text": _traceback_text(exc, tb, omitted, limit),
    }


_DEFAULT_MAX_ERROR_LENGTH = 10_000


def max_error_length() -> int | None:
    """``distributed.admin.max-error-length`` as an int (None: no limit).

    A malformed value is logged and the default used: this is read while
    reporting another error, which must not fail in turn.

    >>> max_error_length()
    10000
    """
    value = config.get("distributed.admin.max-error-length", _DEFAULT_MAX_ERROR_LENGTH)
    if value is None:
        return None
    try:
        n = int(value)
        if n < 0 or n != float(value):
            raise ValueError
        return n
    except (TypeError, ValueError):
        logger.warning("distributed.admin.max-error-length=%r (%s) is not a whole number of characters; "
                       "using %d", value, config.env_var("distributed.admin.max-error-length"),
                       _DEFAULT_MAX_ERROR_LENGTH)
        return _DEFAULT_MAX_ERROR_LENGTH


def truncate_exception(e: BaseException, n: int | None = _DEFAULT_MAX_ERROR_LENGTH) -> BaseException:
    """``e`` itself if its text has at most ``n`` characters, else an exception
    of the same type holding ``("Long error message", <first n characters>)``
    (a plain ``Exception`` naming the type, if the type cannot be made so).

    >>> truncate_exception(ValueError("short"), 10)
    ValueError('short')
    >>> truncate_exception(ValueError("x" * 20), 3)
    ValueError('Long error message', 'xxx')
    """
    if n is None:
        return e
    text = _safe_str(e)
    if len(text) <= n:
        return e
    try:
        short = type(e)("Long error message", text[:n])
        str(short)  # a type whose __str__ expects other arguments is no use
        return short
    except Exception:
        return Exception("Long error message", type(e).__qualname__, text[:n])


def _safe_str(e: BaseException) -> str:
    try:
        return str(e)
    except Exception:
        return f"<{type(e).__qualname__}: str() failed>"


def _safe_repr(e: BaseException) -> str:
    try:
        return repr(e)
    except Exception:
        return f"{type(e).__qualname__}(<repr() failed>)"


def _picklable_exception(e: BaseException) -> BaseException:
    try:
        frames = pickle_dumps(e)
        pickle_loads(frames[0], frames[1:])
        return e
    except Exception:
        return Exception(f"{type(e).__name__}: {_safe_str(e)}")


# -- which frames the user sees ---------------------------------------------

_HERE = os.path.dirname(os.path.abspath(__file__))
# Our modules that run a task or a remote call around the user's function.
_RUNNER_PATHS = tuple(os.path.join(_HERE, p) for p in (
    "worker" + os.sep, "scheduler" + os.sep, "spec.py", "dask_graphs.py", "threadpool.py",
    "remote_call.py"))
# The same for the libraries underneath (matched by the end of the path, as
# they live wherever they are installed).
_RUNNER_SUFFIXES = (
    os.path.join("concurrent", "futures") + os.sep,
    os.path.join("tornado", "gen.py"),
    os.path.join("dask", "_task_spec.py"),
    os.path.join("dask", "core.py"),
)


def _is_runner_frame(filename: str) -> bool:
    path = os.path.abspath(filename)
    return path.startswith(_RUNNER_PATHS) or any(
        s in path for s in _RUNNER_SUFFIXES)


def user_traceback(tb: TracebackType | None) -> TracebackType | None:
    """``tb`` without its leading frames from the code that ran the task
    (the worker, our run-spec and graph helpers, thread pools, dask's task
    spec): it starts at the user's function.  The frames after that, ours
    included, are kept in order.  A traceback with no other frame is kept
    whole: then the error is ours and every frame helps.

    >>> user_traceback(None) is None
    True
    """
    start = tb
    while start is not None and _is_runner_frame(start.tb_frame.f_code.co_filename):
        start = start.tb_next
    return start if start is not None else tb


def _limit_traceback(tb: TracebackType | None, limit: int | None) -> tuple[TracebackType | None, int]:
    """Keep the innermost frames of ``tb`` whose text fits in ``limit``
    characters (at least the innermost one); returns (tb, frames omitted)."""
    if tb is None or limit is None:
        return tb, 0
    nodes = []
    node = tb
    while node is not None:
        nodes.append(node)
        node = node.tb_next
    sizes = [len(line) for line in _traceback.format_tb(tb)]
    total, keep = 0, 0
    for size in reversed(sizes):
        if keep and total + size > limit:
            break
        total += size
        keep += 1
    return nodes[-keep], len(nodes) - keep


def _traceback_text(exc: BaseException, tb: TracebackType | None, omitted: int, limit: int | None) -> str:
    try:
        lines = _traceback.format_exception(type(exc), exc, tb)
    except Exception:  # a broken __str__ in a chained exception, say
        lines = ["Traceback (most recent call last):\n", *_traceback.format_tb(tb),
                 f"{type(exc).__name__}: {_safe_str(exc)}\n"]
    if omitted:
        # The chain's last "Traceback (most recent call last):" header is
        # the main exception's; the note goes right after it.
        heads = [i for i, line in enumerate(lines) if line.startswith("Traceback (most recent call last)")]
        lines.insert(heads[-1] + 1 if heads else 0,
                     f"  [... {omitted} outer frames omitted: the traceback was longer than "
                     "distributed.admin.max-error-length]\n")
    text = "".join(lines)
    if limit is not None and len(text) > 2 * limit + 1000:
        # Chained exceptions have tracebacks of their own: keep the head and
        # the end, where the exception the user gets is described.
        cut = len(text) - 2 * limit
        text = f"{text[:limit // 2]}\n[... {cut} characters omitted ...]\n{text[-(3 * limit) // 2:]}"
    return text


def clean_exception(exception: Any, traceback: Any = None, **kwargs) -> tuple:
    """``(type, exception, traceback)`` from the fields of an error message."""
    from distributed.protocol import Serialized

    if isinstance(exception, Serialized):
        exception = exception.deserialize()
    if isinstance(exception, bytes):
        exception = pickle_loads(exception)
    if isinstance(exception, type):
        exception = exception()
    if not isinstance(exception, BaseException):
        exception = Exception(str(exception))
    tb = rebuild_traceback(traceback) if traceback else None
    return type(exception), exception, tb


def rebuild_traceback(frames) -> TracebackType | None:
    """A real traceback object made from ``(filename, lineno, name, ...)``."""
    tb_head = None
    tb_prev = None
    for entry in frames:
        filename, lineno, name = entry[0], int(entry[1] or 1), entry[2]
        try:
            # A statement spanning two lines from column 0: Python then
            # underlines nothing, where ``raise _exc`` on one line would put
            # carets under the first ten characters of the user's line.
            code = compile("\n" * (lineno - 1) + "raise (\n_exc)", filename, "exec")
            code = code.replace(co_name=name)
            exec(code, {"_exc": _TracebackMarker()})
        except _TracebackMarker as marker:
            tb = marker.__traceback__.tb_next
        except Exception:  # pragma: no cover - exotic file names
            continue
        if tb is None:
            continue
        tb.tb_next = None
        if tb_prev is None:
            tb_head = tb
        else:
            tb_prev.tb_next = tb
        tb_prev = tb
    return tb_head


class _TracebackMarker(Exception):
    pass


def raise_remote(msg: dict):
    """Raise the exception described by an error message, remote traceback
    attached."""
    _, exc, tb = clean_exception(**msg)
    text = msg.get("traceback_text")
    if text and exc.__cause__ is None:
        exc.__cause__ = RemoteTraceback(text)
    raise exc.with_traceback(tb)
