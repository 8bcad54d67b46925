"""The task stream: a record of every task that finished, always on.

The scheduler keeps the last ``distributed.scheduler.dashboard.tasks.task-stream-length``
(100,000) records in a ring buffer (``TaskStreamPlugin``), filled from the
workers' ``task-finished`` and ``task-erred`` messages: no priming, and per
task the cost of building one small dict and appending it to a deque.  A
record has upstream's shape::

    {"key", "status": "OK" | "error", "nbytes", "type", "typename",
     "metadata", "thread", "worker",
     "startstops": [{"action": "compute" | "transfer", "start", "stop",
                     "source"?}]}

``index`` counts every record ever added, so a reader that remembers it can
ask for exactly the records that came after (``since``): that is how the
``get_task_stream()`` context manager works without priming.

``rectangles`` and ``summarize`` turn records into what the charts and the
performance report draw.  ``get_task_stream`` (the context manager) runs in
the user's process.

Thread rules: the plugin runs on the scheduler's event loop.

>>> ts = TaskStreamPlugin(maxlen=2)
>>> for i in range(3):
...     ts.record({"key": f"inc-{i}", "worker": "w", "startstops": [
...         {"action": "compute", "start": i, "stop": i + 0.5}]})
>>> ts.index, [r["key"] for r in ts.collect()]
(3, ['inc-1', 'inc-2'])
>>> [r["key"] for r in ts.since(2)]
['inc-2']
"""
from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterable
from typing import Any

from distributed import config
from distributed.utils import key_split

__all__ = ["TaskStreamPlugin", "get_task_stream", "rectangles", "summarize", "efficiency",
           "trace_events", "task_stream_length", "PLOT_ERROR"]

logger = logging.getLogger(__name__)

_LENGTH_KEY = "distributed.scheduler.dashboard.tasks.task-stream-length"
_DEFAULT_LENGTH = 100_000

#: Why ``plot=`` is refused: the charts are drawn by the dashboard and the report.
PLOT_ERROR = ("get_task_stream(plot=...) would need bokeh, which this distributed does not use: "
              "the task stream chart is on the dashboard (/status, /tasks) and in "
              "performance_report(filename=...); call with plot=False for the records")


def task_stream_length() -> int:
    """The configured buffer length (``distributed.scheduler.dashboard.tasks.task-stream-length``).

    >>> task_stream_length() > 0
    True
    """
    n = config.get(_LENGTH_KEY, _DEFAULT_LENGTH)
    if not isinstance(n, int) or isinstance(n, bool) or n <= 0:
        raise ValueError(f"configuration {_LENGTH_KEY!r} must be a positive integer, not {n!r}")
    return n


def _first_start(rec: dict) -> float:
    ss = rec.get("startstops") or ()
    return min((s["start"] for s in ss), default=0.0)


def _last_stop(rec: dict) -> float:
    ss = rec.get("startstops") or ()
    return max((s["stop"] for s in ss), default=0.0)


class TaskStreamPlugin:
    """The scheduler's record of finished tasks (see the module docstring).

    ``TaskStreamPlugin(scheduler=None, maxlen=None)`` as upstream; the
    scheduler's own instance lives in its ``"diagnostics"`` extension, fed
    directly from worker messages (it is not a transition observer, so it
    costs nothing per transition).

    >>> TaskStreamPlugin(maxlen=5).buffer.maxlen
    5
    """

    name = "task-stream"

    def __init__(self, scheduler: Any = None, maxlen: int | None = None):
        self.scheduler = scheduler
        self.buffer: deque = deque(maxlen=maxlen if maxlen is not None else task_stream_length())
        self.index = 0

    def record(self, msg: dict, status: str = "OK") -> None:
        """Add the record of one finished task, from a worker's message."""
        get = msg.get
        typename = get("type")
        # The startstops dicts are fresh from the wire: kept, not copied.
        startstops = get("startstops")
        self.buffer.append({
            "key": get("key"),
            "status": status,
            "nbytes": get("nbytes", -1),
            "type": typename,
            "typename": typename,
            "metadata": {},
            "thread": get("thread"),
            "worker": get("worker"),
            "startstops": list(startstops) if startstops else [],
        })
        self.index += 1

    def since(self, index: int) -> list[dict]:
        """The records added after ``index`` (those still in the buffer)."""
        n = self.index - index
        if n <= 0:
            return []
        buf = self.buffer
        if n >= len(buf):
            return list(buf)
        return [buf[i] for i in range(len(buf) - n, len(buf))]

    def collect(self, start: float | None = None, stop: float | None = None,
                count: int | None = None) -> list[dict]:
        """Records, oldest first: those that ran in ``[start, stop]`` (times
        since the epoch), or the last ``count``, or all.

        >>> TaskStreamPlugin(maxlen=3).collect(count=2)
        []
        """
        if count is not None:
            if not isinstance(count, int) or count < 0:
                raise ValueError(f"count must be a non-negative integer, not {count!r}")
            return list(self.buffer)[len(self.buffer) - count:] if count else []
        if start is None and stop is None:
            return list(self.buffer)
        out = []
        for rec in self.buffer:
            if start is not None and _last_stop(rec) < start:
                continue
            if stop is not None and _first_start(rec) > stop:
                continue
            out.append(rec)
        return out

    def rectangles(self, istart: int | None = None, istop: int | None = None,
                   workers: dict | None = None, start_boundary: float = 0) -> list[dict]:
        """The chart rectangles of the records ``buffer[istart:istop]``."""
        recs = list(self.buffer)[istart:istop]
        return rectangles(recs, start_boundary=start_boundary)


def _lane(rec: dict) -> str:
    return f"{rec.get('worker')}-{rec.get('thread')}"


def rectangles(records: Iterable[dict], start_boundary: float = 0) -> list[dict]:
    """One rectangle per startstop: ``{"key", "prefix", "action", "start",
    "duration", "lane", "worker", "status"}`` (start in seconds since the
    epoch; ``lane`` is ``worker-thread``).

    >>> rectangles([{"key": "x-1", "worker": "w", "thread": 1, "status": "OK",
    ...   "startstops": [{"action": "compute", "start": 2.0, "stop": 2.5}]}])[0]["duration"]
    0.5
    """
    out = []
    for rec in records:
        for ss in rec.get("startstops") or ():
            if ss["stop"] < start_boundary:
                continue
            out.append({"key": rec.get("key"), "prefix": key_split(rec.get("key")),
                        "action": ss.get("action", "compute"), "start": ss["start"],
                        "duration": max(ss["stop"] - ss["start"], 0.0), "lane": _lane(rec),
                        "worker": rec.get("worker"), "status": rec.get("status", "OK"),
                        "source": ss.get("source")})
    return out


def summarize(records: Iterable[dict]) -> list[dict]:
    """Per task prefix: ``{"prefix", "count", "erred", "compute", "mean",
    "transfer", "nbytes"}`` (seconds of compute in all and per task, seconds
    of transfer, bytes of output), largest compute first.

    >>> summarize([{"key": "a-1", "status": "OK", "nbytes": 8,
    ...   "startstops": [{"action": "compute", "start": 0, "stop": 2}]}])[0]["mean"]
    2.0
    """
    rows: dict[str, dict] = {}
    for rec in records:
        prefix = key_split(rec.get("key"))
        row = rows.get(prefix)
        if row is None:
            row = rows[prefix] = {"prefix": prefix, "count": 0, "erred": 0, "compute": 0.0,
                                  "transfer": 0.0, "nbytes": 0, "transfer_bytes": 0}
        row["count"] += 1
        if rec.get("status") == "error":
            row["erred"] += 1
        nbytes = rec.get("nbytes")
        if isinstance(nbytes, int) and nbytes > 0:
            row["nbytes"] += nbytes
        for ss in rec.get("startstops") or ():
            d = max(ss["stop"] - ss["start"], 0.0)
            if ss.get("action") == "transfer":
                row["transfer"] += d
                row["transfer_bytes"] += ss.get("nbytes", 0) or 0
            elif ss.get("action", "compute") == "compute":
                row["compute"] += d
    for row in rows.values():
        row["mean"] = row["compute"] / row["count"] if row["count"] else 0.0
    return sorted(rows.values(), key=lambda r: (-r["compute"], r["prefix"]))


def efficiency(records: Iterable[dict], nthreads: int, start: float, stop: float) -> float | None:
    """compute seconds / (threads x wall seconds), clipped to the window;
    None when it cannot be known (no threads or no time).

    >>> efficiency([{"startstops": [{"action": "compute", "start": 0, "stop": 1}]}], 2, 0, 1)
    0.5
    """
    wall = stop - start
    if nthreads <= 0 or wall <= 0:
        return None
    busy = 0.0
    for rec in records:
        for ss in rec.get("startstops") or ():
            if ss.get("action", "compute") == "compute":
                busy += max(min(ss["stop"], stop) - max(ss["start"], start), 0.0)
    return min(busy / (nthreads * wall), 1.0)


def trace_events(records: Iterable[dict]) -> dict:
    """The records as Chrome/Perfetto trace events (``chrome://tracing``,
    ui.perfetto.dev): one complete event (``"ph": "X"``) per startstop, a
    process per worker and a thread per worker thread, times in
    microseconds.

    >>> ev = trace_events([{"key": "x-1", "worker": "w", "thread": 7, "status": "OK",
    ...   "startstops": [{"action": "compute", "start": 1.0, "stop": 1.5}]}])["traceEvents"]
    >>> [(e["ph"], e["name"], e["dur"]) for e in ev if e["ph"] == "X"]
    [('X', 'x-1', 500000.0)]
    """
    events: list[dict] = []
    pids: dict[Any, int] = {}
    for rec in records:
        worker = rec.get("worker")
        pid = pids.get(worker)
        if pid is None:
            pid = pids[worker] = len(pids) + 1
            events.append({"ph": "M", "name": "process_name", "pid": pid, "tid": 0,
                           "args": {"name": str(worker)}})
        tid = rec.get("thread") or 0
        for ss in rec.get("startstops") or ():
            events.append({"ph": "X", "name": str(rec.get("key")), "cat": ss.get("action", "compute"),
                           "pid": pid, "tid": tid, "ts": ss["start"] * 1e6,
                           "dur": max(ss["stop"] - ss["start"], 0.0) * 1e6,
                           "args": {"status": rec.get("status"), "prefix": key_split(rec.get("key")),
                                    "nbytes": rec.get("nbytes"), "source": ss.get("source")}})
    return {"traceEvents": events, "displayTimeUnit": "ms"}


def _parse_time(value: Any, now: float) -> float | None:
    """``start=``/``stop=`` of ``get_task_stream``: a time since the epoch,
    or a duration string (``"60s"``) meaning that long ago."""
    if value is None:
        return None
    if isinstance(value, str):
        return now - config.parse_timedelta(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hasattr(value, "timestamp"):  # datetime
        return value.timestamp()
    raise TypeError(f"start/stop must be a time (seconds since the epoch), a datetime or a "
                    f"duration string such as '60s', not {value!r}")


class get_task_stream:
    """Collect the task stream of the work done inside a block.

    ``with get_task_stream() as ts: ...`` then ``ts.data`` is the list of
    records of the tasks that finished during the block (also
    ``async with``).  Nothing needs priming: the scheduler records always;
    the block remembers where the stream was when it began.

    ``plot=True``/``"save"`` raises: the charts are on the dashboard and in
    ``performance_report``.

    >>> with get_task_stream(client) as ts:       # doctest: +SKIP
    ...     client.gather(client.map(inc, range(10)))
    >>> len(ts.data)                                # doctest: +SKIP
    10
    """

    def __init__(self, client: Any = None, plot: bool | str = False, filename: str = "task-stream.html",
                 bokeh_resources: Any = None):
        if plot:
            raise ValueError(PLOT_ERROR)
        self.client = client
        self.data: list[dict] = []
        self._index: int | None = None
        self.start: float | None = None
        self.stop: float | None = None

    def _client(self) -> Any:
        if self.client is None:
            from distributed.context import default_client

            self.client = default_client()
        return self.client

    def __enter__(self) -> get_task_stream:
        client = self._client()
        self.start = time.time()
        self._index = client.sync(client._task_stream_index)
        return self

    def __exit__(self, *exc: Any) -> None:
        client = self._client()
        self.data.extend(client.sync(client._task_stream_since, self._index))
        self.stop = time.time()

    async def __aenter__(self) -> get_task_stream:
        client = self._client()
        self.start = time.time()
        self._index = await client._task_stream_index()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        client = self._client()
        self.data.extend(await client._task_stream_since(self._index))
        self.stop = time.time()

    @property
    def figure(self) -> Any:
        raise AttributeError(PLOT_ERROR)
