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
from collections.abc import Callable
from typing import Any

from distributed.comm import Comm, CommClosedError
from distributed.protocol import MessageTooLargeError

__all__ = ["BatchedSend"]

logger = logging.getLogger(__name__)


class BatchedSend:
    """Buffer messages and write them to ``comm`` as lists.

    >>> bs = BatchedSend()                      # doctest: +SKIP
    >>> bs.start(comm)                          # doctest: +SKIP
    >>> bs.send({"op": "task-finished", ...})   # doctest: +SKIP
    """

    def __init__(self, name: str = "",
                 on_too_large: Callable[[Any, MessageTooLargeError], None] | None = None):
        self.name = name
        # Called with a message that is over the maximum message size on its
        # own; it is dropped, the stream goes on.
        self.on_too_large = on_too_large
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
            except MessageTooLargeError:
                # Nothing was written: send one message per write instead.
                if not await self._write_one_by_one(comm, payload):
                    break
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

    async def _write_one_by_one(self, comm: Comm, payload: list) -> bool:
        """Write each message alone; one too large by itself is dropped and
        reported.  False if the connection closed."""
        for msg in payload:
            try:
                self.byte_count += await comm.write([msg])
                self.batch_count += 1
            except MessageTooLargeError as e:
                op = msg.get("op") if isinstance(msg, dict) else type(msg).__name__
                logger.error("BatchedSend %s: dropped a %r message: %s", self.name, op, e)
                if self.on_too_large is not None:
                    try:
                        self.on_too_large(msg, e)
                    except Exception:
                        logger.exception("BatchedSend %s: on_too_large failed", self.name)
            except CommClosedError:
                return False
        return True

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
