"""BatchedSend: many small stream messages, one write per loop iteration.

``send(msg)`` only appends to a buffer and wakes the background writer.
When the connection is idle the writer flushes on the next loop iteration,
so an isolated message goes out at once; while a write is in progress new
messages accumulate and leave together in the next write.  This batches
under load without adding latency when the system is idle.

Not thread-safe: call ``send`` from the event loop (``loop.add_callback``
from other threads).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from distributed.comm import Comm, CommClosedError

__all__ = ["BatchedSend"]

logger = logging.getLogger(__name__)


class BatchedSend:
    """Buffer messages and write them to ``comm`` as lists.

    >>> bs = BatchedSend()                      # doctest: +SKIP
    >>> bs.start(comm)                          # doctest: +SKIP
    >>> bs.send({"op": "task-finished", ...})   # doctest: +SKIP
    """

    def __init__(self, name: str = ""):
        self.name = name
        self.comm: Comm | None = None
        self.buffer: list = []
        self.message_count = 0
        self.batch_count = 0
        self.byte_count = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._stopping = False

    def start(self, comm: Comm) -> None:
        self.comm = comm
        self._task = asyncio.ensure_future(self._background_send())

    def send(self, *msgs: Any) -> None:
        """Queue messages for the next write."""
        if self.comm is None or self.comm.closed() or self._stopping:
            raise CommClosedError(f"BatchedSend {self.name} is closed")
        self.buffer.extend(msgs)
        self.message_count += len(msgs)
        self._wake.set()

    def closed(self) -> bool:
        return self.comm is None or self.comm.closed() or self._stopping

    async def _background_send(self) -> None:
        comm = self.comm
        assert comm is not None
        while True:
            if not self.buffer:
                if self._stopping:
                    break
                self._wake.clear()
                await self._wake.wait()
                continue
            payload, self.buffer = self.buffer, []
            try:
                self.byte_count += await comm.write(payload)
                self.batch_count += 1
            except CommClosedError:
                logger.debug(
                    "BatchedSend %s: connection closed, %d messages dropped",
                    self.name,
                    len(payload),
                )
                break
            except Exception:
                logger.exception("BatchedSend %s: error while writing", self.name)
                comm.abort()
                break
        self.buffer = []

    async def close(self, timeout: float = 2) -> None:
        """Flush what is buffered, then close the connection."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
            except (asyncio.TimeoutError, Exception):
                self._task.cancel()
        if self.comm is not None:
            await self.comm.close()

    def abort(self) -> None:
        """Close at once, dropping what is buffered."""
        self._stopping = True
        self.buffer = []
        if self._task is not None and not self._task.done():
            self._task.cancel()
        if self.comm is not None:
            self.comm.abort()
