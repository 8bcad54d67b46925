"""Futures fed into a ``queue.Queue``: the old (1.x) ``scatter`` and ``map``
over queues.

``client.map(func, q)`` and ``client.scatter(q)``, with ``q`` a
``queue.Queue``, return a ``queue.Queue`` at once.  A daemon thread (a
``QueueFeeder``) takes items from the input queue as they come, turns each
into a Future (``submit`` or a one-item scatter) and puts it into the output
queue.  Other iterables given to ``map`` next to a queue are read in step
with it.  So a producer that never ends works: nothing is read ahead of
what the output queue has room for (``maxsize``).

The feeder ends when an input queue yields ``StopIteration`` (the class or
an instance, as old code used to end a stream) or another input runs out --
it then puts a ``StopIteration()`` into the output queue -- and when the
client closes: the client stops and joins its feeders in ``close``.

Thread rules: the feeder only calls the client's thread-safe methods
(``submit``, and ``sync`` onto the client's loop); every wait in it has a
deadline or wakes at least every ``POLL`` seconds to see whether it must
stop.
"""
from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["QueueFeeder", "is_queue", "stop_feeders"]

logger = logging.getLogger(__name__)

#: How often a waiting feeder checks whether it must stop (seconds).
POLL = 0.05

_STOPPED = object()  # the feeder was told to stop while waiting


def is_queue(obj: Any) -> bool:
    """Whether ``obj`` is a ``queue.Queue`` (or a subclass).

    >>> is_queue(queue.Queue()), is_queue([1])
    (True, False)
    """
    return isinstance(obj, queue.Queue)


def _is_end(item: Any) -> bool:
    return item is StopIteration or isinstance(item, StopIteration)


class QueueFeeder:
    """A daemon thread that turns items from ``inputs`` into Futures with
    ``make(*items)`` and puts them into ``self.output``.

    ``inputs`` are ``queue.Queue`` objects and iterables, read in step (one
    item from each per Future).

    >>> import queue
    >>> q = queue.Queue()
    >>> feeder = QueueFeeder(client, [q], lambda x: client.submit(inc, x))  # doctest: +SKIP
    >>> feeder.start()                                                       # doctest: +SKIP
    >>> q.put(1); feeder.output.get(timeout=5).result()                      # doctest: +SKIP
    2
    """

    def __init__(self, client, inputs: Iterable, make: Callable, maxsize: int = 0, name: str = "map"):
        if not isinstance(maxsize, int) or isinstance(maxsize, bool) or maxsize < 0:
            raise ValueError(f"maxsize must be a whole number >= 0 (0: no limit), not {maxsize!r}")
        self.client = client
        self.inputs: list = [q if is_queue(q) else iter(q) for q in inputs]
        self.make = make
        self.output: queue.Queue = queue.Queue(maxsize=maxsize)
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"Dask-Queue-{name}", daemon=True)

    def start(self) -> queue.Queue:
        feeders = getattr(self.client, "_queue_feeders", None)
        if feeders is None:
            feeders = self.client._queue_feeders = set()
        feeders.add(self)
        self.thread.start()
        return self.output

    def stop(self) -> None:
        """Ask the thread to end; it does within ``POLL`` seconds unless it
        is turning an item into a Future (which has its own deadline)."""
        self._stop.set()

    def _stopping(self) -> bool:
        return self._stop.is_set() or self.client.status in ("closing", "closed")

    def _get(self, source) -> Any:
        if not is_queue(source):
            return next(source, StopIteration)
        while not self._stopping():
            try:
                return source.get(timeout=POLL)
            except queue.Empty:
                continue
        return _STOPPED

    def _put(self, item: Any) -> bool:
        while not self._stopping():
            try:
                self.output.put(item, timeout=POLL)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            while not self._stopping():
                items = []
                for source in self.inputs:
                    item = self._get(source)
                    if item is _STOPPED:
                        return
                    if _is_end(item):
                        self._put(item if isinstance(item, StopIteration) else StopIteration())
                        return
                    items.append(item)
                try:
                    future = self.make(*items)
                except Exception as e:
                    if not self._stopping():
                        logger.error("%s: could not make a Future for an item from the queue, and "
                                     "stops: %r", self.thread.name, e)
                        self._put(e)
                    return
                if not self._put(future):
                    return
        finally:
            feeders = getattr(self.client, "_queue_feeders", None)
            if feeders is not None:
                feeders.discard(self)


async def stop_feeders(client, timeout: float = 10) -> None:
    """Stop the client's feeder threads and wait (without blocking the
    loop) until they ended; a thread still alive after ``timeout`` is
    logged by name."""
    feeders = list(getattr(client, "_queue_feeders", ()) or ())
    for f in feeders:
        f.stop()
    deadline = time.monotonic() + timeout
    for f in feeders:
        while f.thread.is_alive() and time.monotonic() < deadline:
            await asyncio.sleep(POLL / 5)
        if f.thread.is_alive():
            logger.warning("client %s closed, but its queue thread %s has not ended within %s s",
                           client.id, f.thread.name, timeout)
