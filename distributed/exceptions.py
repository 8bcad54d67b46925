"""Public exceptions and the transport of remote errors.

A task or handler that raises on another machine reaches the caller as the
same exception type.  Its traceback travels as a list of
``(filename, lineno, name, line)`` entries and is rebuilt into a real
traceback object on arrival, so ``traceback.format_tb(future.traceback())``
and debuggers work as they would locally.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import traceback as _traceback
from types import TracebackType
from typing import Any

from distributed.protocol import Serialize
from distributed.protocol.serialize import pickle_dumps, pickle_loads

__all__ = [
    "CancelledError",
    "TimeoutError",
    "KilledWorker",
    "FutureLost",
    "Reschedule",
    "RemoteTraceback",
    "error_message",
    "clean_exception",
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


class RemoteTraceback(Exception):
    """Attached as ``__cause__`` to remote errors: the remote traceback text."""

    def __init__(self, text: str):
        self.text = text

    def __str__(self) -> str:
        return self.text


def error_message(e: BaseException) -> dict:
    """The reply for a handler or task that raised ``e``.

    >>> msg = error_message(ValueError("bad"))
    >>> msg["status"], msg["text"]
    ('error', 'bad')
    """
    tb = e.__traceback__
    frames = [tuple(f) for f in _traceback.extract_tb(tb)] if tb is not None else []
    exc = _picklable_exception(e)
    return {
        "status": "error",
        "exception": Serialize(exc),
        "traceback": frames,
        "text": str(e),
        "exception_text": repr(e),
        "traceback_text": "".join(_traceback.format_exception(type(e), e, tb)),
    }


def _picklable_exception(e: BaseException) -> BaseException:
    try:
        frames = pickle_dumps(e)
        pickle_loads(frames[0], frames[1:])
        return e
    except Exception:
        return Exception(f"{type(e).__name__}: {e}")


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
            code = compile("\n" * (lineno - 1) + "raise _exc", filename, "exec")
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
