"""In-memory logs of a server, and log records forwarded to clients.

Every scheduler and worker keeps its recent log records in a bounded deque
(``distributed.admin.log-length`` records, default 10,000): a
``DequeHandler`` attached to the ``"distributed"`` logger when the server
starts and removed when it closes.  ``client.get_scheduler_logs()`` and
``client.get_worker_logs()`` read them: ``[(level, message), ...]``, newest
first, as upstream.

Several servers in one process (a test cluster) each attach their own
handler, so each sees every record of the process: the logger is per
process, not per server.

Forwarding (``client.forward_logging``): a worker plugin
(``ForwardLoggingPlugin``) attaches a handler to the named logger on each
worker that publishes every record as a structured event on the topic
``forwarded-log-record-<name>``; the client subscribes to that topic and
re-emits each record in its own process, with ``record.worker`` set.

Thread rules: ``DequeHandler.emit`` may run on any thread (logging calls
come from task threads); appending to a deque is atomic.  ``get_logs``
copies the deque first.

>>> handler = DequeHandler(maxlen=2)
>>> log = logging.getLogger("distributed.example")
>>> log.addHandler(handler); log.setLevel(logging.INFO)
>>> log.info("one"); log.warning("two"); log.error("three")
>>> [(level, text.split(" - ")[-1]) for level, text in get_logs(handler)]
[('ERROR', 'three'), ('WARNING', 'two')]
>>> log.removeHandler(handler)
"""
from __future__ import annotations

import logging
from collections import deque
from typing import Any

from distributed import config
from distributed.context import current_worker
from distributed.diagnostics.plugin import WorkerPlugin

__all__ = ["DequeHandler", "attach_log_handler", "detach_log_handler", "get_logs",
           "ForwardLoggingPlugin", "forward_topic", "record_to_dict", "dict_to_record",
           "DEFAULT_LOG_LENGTH"]

logger = logging.getLogger(__name__)

DEFAULT_LOG_LENGTH = 10_000

#: The logger whose records servers keep.
SERVER_LOGGER = "distributed"

# logger name -> [servers attached, level to restore after the last one]
_attached: dict[str, list] = {}

_FORMAT = "%(asctime)s - %(name)s - %(levelname)s - %(message)s"


class DequeHandler(logging.Handler):
    """A logging handler that keeps the last ``maxlen`` records.

    >>> DequeHandler(maxlen=5).deque.maxlen
    5
    """

    def __init__(self, maxlen: int = DEFAULT_LOG_LENGTH, level: int = logging.NOTSET):
        super().__init__(level)
        self.deque: deque = deque(maxlen=maxlen)
        self.setFormatter(logging.Formatter(_FORMAT))

    def emit(self, record: logging.LogRecord) -> None:
        self.deque.append(record)


def _log_length() -> int:
    n = config.get("distributed.admin.log-length", DEFAULT_LOG_LENGTH)
    if n is None:
        return DEFAULT_LOG_LENGTH
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise ValueError(f"configuration 'distributed.admin.log-length' must be a non-negative "
                         f"integer, not {n!r}")
    return n


def attach_log_handler(logger_name: str = SERVER_LOGGER) -> DequeHandler:
    """A new ``DequeHandler`` on ``logger_name`` (``distributed.admin.log-length``
    records).  A server calls it on start and ``detach_log_handler`` on close.

    >>> h = attach_log_handler(); detach_log_handler(h)
    """
    handler = DequeHandler(maxlen=_log_length())
    log = logging.getLogger(logger_name)
    log.addHandler(handler)
    # The records must reach the handler: a logger left at NOTSET under a
    # WARNING root would drop INFO before any handler sees it.  Only an
    # unset level is raised, and it is put back when the last server closes.
    attached = _attached.setdefault(logger_name, [0, None])
    if attached[0] == 0 and log.level == logging.NOTSET:
        attached[1] = logging.NOTSET
        log.setLevel(logging.INFO)
    attached[0] += 1
    return handler


def detach_log_handler(handler: DequeHandler | None, logger_name: str = SERVER_LOGGER) -> None:
    """Remove a handler made by ``attach_log_handler`` (None is ignored)."""
    if handler is None:
        return
    log = logging.getLogger(logger_name)
    if handler not in log.handlers:
        return
    log.removeHandler(handler)
    attached = _attached.get(logger_name)
    if attached is not None:
        attached[0] -= 1
        if attached[0] <= 0:
            if attached[1] is not None and log.level == logging.INFO:
                log.setLevel(attached[1])
            del _attached[logger_name]


def get_logs(handler: DequeHandler | None, n: int | None = None) -> list[tuple[str, str]]:
    """The last ``n`` records (all when None) as ``(level name, formatted
    message)``, newest first.

    >>> get_logs(None)
    []
    """
    if handler is None:
        return []
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 0):
        raise ValueError(f"n must be a non-negative integer or None, not {n!r}")
    records = list(handler.deque)
    if n is not None:
        records = records[len(records) - n:] if n else []
    out = []
    for record in reversed(records):
        try:
            text = handler.format(record)
        except Exception:  # a bad %-format in someone's log call
            text = str(record.msg)
        out.append((record.levelname, text))
    return out


def forward_topic(logger_name: str | None) -> str:
    """The event topic carrying records of ``logger_name`` (upstream's name).

    >>> forward_topic(None)
    'forwarded-log-record-forward-logging-<root>'
    >>> forward_topic("app")
    'forwarded-log-record-forward-logging-app'
    """
    return f"forwarded-log-record-forward-logging-{logger_name or '<root>'}"


_RECORD_FIELDS = ("name", "levelno", "levelname", "pathname", "filename", "module", "lineno",
                  "funcName", "created", "msecs", "relativeCreated", "thread", "threadName",
                  "processName", "process")


def record_to_dict(record: logging.LogRecord) -> dict:
    """What of a record crosses the wire: plain fields, the message already
    formatted (its args may not be serializable), the exception as text.

    >>> r = logging.makeLogRecord({"msg": "x=%d", "args": (1,), "levelno": 20, "levelname": "INFO"})
    >>> record_to_dict(r)["msg"]
    'x=1'
    """
    out: dict[str, Any] = {f: getattr(record, f, None) for f in _RECORD_FIELDS}
    try:
        out["msg"] = record.getMessage()
    except Exception:
        out["msg"] = str(record.msg)
    if record.exc_info:
        out["exc_text"] = logging.Formatter().formatException(record.exc_info)
    elif record.exc_text:
        out["exc_text"] = record.exc_text
    return out


def dict_to_record(fields: dict, worker: str | None = None) -> logging.LogRecord:
    """A LogRecord from ``record_to_dict``'s output, with ``record.worker``.

    >>> dict_to_record({"name": "app", "msg": "hi", "levelno": 20}, worker="w").worker
    'w'
    """
    record = logging.makeLogRecord({**fields, "args": ()})
    record.worker = worker
    # A worker in this same process must not forward it again (a loop).
    record.dask_forwarded = True
    return record


class _ForwardHandler(logging.Handler):
    def __init__(self, worker: Any, topic: str, level: int):
        super().__init__(level)
        self.worker = worker
        self.topic = topic

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "dask_forwarded", False):
            return
        # Several workers in one process share the logger: each forwards
        # only what its own tasks log (and what no task logs).
        running_for = current_worker()
        if running_for is not None and running_for is not self.worker:
            return
        try:
            fields = record_to_dict(record)
            fields["worker"] = self.worker.address
            # From a task thread: hand over to the worker's loop.
            self.worker.loop.add_callback(self.worker.log_event, self.topic, fields)
        except Exception:
            self.handleError(record)


class ForwardLoggingPlugin(WorkerPlugin):
    """Worker plugin: publish the records of ``logger_name`` at ``level`` or
    above on the topic ``forward_topic(logger_name)``.  Installed by
    ``client.forward_logging``; removing the plugin detaches the handler.

    >>> ForwardLoggingPlugin("app", logging.INFO).topic
    'forwarded-log-record-forward-logging-app'
    """

    idempotent = False

    def __init__(self, logger_name: str | None, level: int | str = logging.NOTSET):
        self.logger_name = logger_name
        self.level = logging._checkLevel(level)
        self.topic = forward_topic(logger_name)
        self._handler: logging.Handler | None = None

    def setup(self, worker: Any) -> None:
        self._handler = _ForwardHandler(worker, self.topic, self.level)
        logging.getLogger(self.logger_name).addHandler(self._handler)

    def teardown(self, worker: Any) -> None:
        if self._handler is not None:
            logging.getLogger(self.logger_name).removeHandler(self._handler)
            self._handler = None

    def __getstate__(self) -> dict:
        return {"logger_name": self.logger_name, "level": self.level, "topic": self.topic}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._handler = None
