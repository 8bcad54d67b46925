"""One server-sent-event stream, fanned out to every open tab.

A ``Broadcaster`` calls its ``produce`` function once per ``interval`` *only
while at least one tab is subscribed*, serialises the result once, and hands
the same bytes to every subscriber.  The cost on the scheduler is one
snapshot per tick whatever the number of tabs, and nothing when none is open.
A slow tab does not queue frames: it keeps only the newest one (every frame
is a full snapshot; the task-stream records carry an index, so a page that
skipped a frame refetches the gap from ``/api/v1/task_stream``).

Runs on the server's event loop; not thread-safe.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable

from tornado.ioloop import PeriodicCallback
from tornado.iostream import StreamClosedError

from distributed.http.base import BaseHandler, json_default

__all__ = ["Broadcaster", "EventStreamHandler"]

logger = logging.getLogger(__name__)


class _Subscriber:
    __slots__ = ("frame", "ready")

    def __init__(self):
        self.frame: bytes | None = None
        self.ready = asyncio.Event()


class Broadcaster:
    """Produce a frame per tick while anyone listens; give it to everyone.

    >>> b = Broadcaster(lambda after: {"n": 1}, interval=0.5)
    >>> b.running, len(b.subscribers)
    (False, 0)
    """

    def __init__(self, produce: Callable[[int], dict], interval: float = 0.5):
        if interval <= 0:
            raise ValueError(f"stream interval must be > 0 seconds, not {interval!r}")
        self.produce = produce
        self.interval = interval
        self.subscribers: set[_Subscriber] = set()
        self.ticks = 0  # frames produced, for tests and the benchmark
        self.cpu_seconds = 0.0  # CPU time spent producing them (the benchmark reports it)
        self._pc: PeriodicCallback | None = None
        self._last: bytes | None = None
        self._stream_index = -1  # task-stream index already sent

    @property
    def running(self) -> bool:
        return self._pc is not None

    def subscribe(self) -> _Subscriber:
        sub = _Subscriber()
        self.subscribers.add(sub)
        if self._pc is None:
            self._pc = PeriodicCallback(self.tick, self.interval * 1000)
            self._pc.start()
            self.tick()  # the first tab sees data at once
        elif self._last is not None:
            sub.frame = self._last
            sub.ready.set()
        return sub

    def unsubscribe(self, sub: _Subscriber) -> None:
        self.subscribers.discard(sub)
        if not self.subscribers:
            self.stop()

    def stop(self) -> None:
        """Stop producing (the last tab left, or the server closes)."""
        if self._pc is not None:
            self._pc.stop()
            self._pc = None
        self._last = None

    def tick(self) -> None:
        if not self.subscribers:
            self.stop()
            return
        t0 = time.thread_time()
        try:
            data = self.produce(self._stream_index)
        except Exception:
            logger.exception("dashboard snapshot failed")
            return
        self._stream_index = data.get("stream_index", 0) - 1 if "stream_index" in data else -1
        frame = b"event: snapshot\ndata: " + json.dumps(data, default=json_default).encode() + b"\n\n"
        self._last = frame
        self.ticks += 1
        self.cpu_seconds += time.thread_time() - t0
        for sub in self.subscribers:
            sub.frame = frame
            sub.ready.set()


class EventStreamHandler(BaseHandler):
    """``GET /api/v1/stream``: ``text/event-stream`` of snapshot frames."""

    def initialize(self, server, broadcaster: Broadcaster):
        super().initialize(server)
        self.broadcaster = broadcaster
        self._sub = None
        self._closed = False

    async def get(self):
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("X-Accel-Buffering", "no")
        # Browsers send Origin on cross-site EventSource requests; same rule as POST.
        self.check_same_origin()
        sub = self._sub = self.broadcaster.subscribe()
        try:
            self.write(b"retry: 2000\n\n")
            await self.flush()
            while not self._closed:
                await sub.ready.wait()
                sub.ready.clear()
                frame, sub.frame = sub.frame, None
                if frame and not self._closed:
                    self.write(frame)
                    await self.flush()
        except StreamClosedError:
            pass
        finally:
            self.broadcaster.unsubscribe(sub)
            self._sub = None

    def on_connection_close(self):
        # Wake the loop above so it notices the closed stream and unsubscribes.
        self._closed = True
        if self._sub is not None:
            self.broadcaster.unsubscribe(self._sub)
            self._sub.frame = None
            self._sub.ready.set()
