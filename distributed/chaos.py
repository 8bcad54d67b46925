"""Fault injection for tests: break things on purpose, reproducibly.

Everything random here draws from one ``random.Random(seed)``, and every
fault is recorded in ``Chaos.log``, so a failing run can be replayed with
the same seed and read back afterwards.

In-process faults act on servers running on the caller's event loop (the
``gen_cluster`` kind); process faults act on workers in other processes
through a ``Client``.

>>> chaos = Chaos(seed=42)
>>> chaos.choice(["a", "b", "c"])
'a'
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import random
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

__all__ = ["Chaos"]


def _exit_soon(code: int) -> int:
    """Run in a worker (``client.run``): end its process abruptly, after
    the reply has had a moment to leave."""
    threading.Timer(0.01, os._exit, (code,)).start()
    return os.getpid()


def _block_loop(seconds: float, dask_worker=None) -> int:
    """Run in a worker (``client.run``): freeze its event loop."""
    dask_worker.loop.add_callback(time.sleep, seconds)
    return os.getpid()


class Chaos:
    """Seeded fault injection.

    >>> chaos = Chaos(seed=1)
    >>> chaos.uniform(0, 1) == Chaos(seed=1).uniform(0, 1)
    True
    """

    def __init__(self, seed: int):
        self.seed = seed
        self.rng = random.Random(seed)
        self.log: list[tuple[str, Any]] = []

    def __repr__(self) -> str:
        return f"<Chaos seed={self.seed}: {len(self.log)} faults>"

    # -- randomness ------------------------------------------------------

    def choice(self, items: Sequence):
        """One of ``items`` (in a stable order: sort sets first)."""
        return items[self.rng.randrange(len(items))]

    def uniform(self, low: float, high: float) -> float:
        return self.rng.uniform(low, high)

    async def pause(self, low: float, high: float) -> float:
        """Wait a random time in ``[low, high]`` seconds: the random moment
        at which the next fault strikes."""
        delay = self.uniform(low, high)
        await asyncio.sleep(delay)
        return delay

    # -- in-process faults -------------------------------------------------

    def abort_connections(self, server) -> int:
        """Abort every connection ``server`` (a Worker or Scheduler on this
        loop) has: its scheduler stream, the connections it serves, and its
        pooled outgoing ones.  Returns how many were aborted."""
        comms = set(server._comms)
        stream_comm = getattr(server, "_scheduler_comm", None)
        if stream_comm is not None:
            comms.add(stream_comm)
        pool = server.rpc
        for address in list(pool.available) + list(pool.occupied):
            comms.update(pool.available.get(address, ()))
            comms.update(pool.occupied.get(address, ()))
        aborted = 0
        for comm in comms:
            if not comm.closed():
                comm.abort()
                aborted += 1
        self.log.append(("abort-connections", server.address))
        return aborted

    def silence_heartbeats(self, worker) -> None:
        """Stop a worker's heartbeats (it stays connected and keeps running)."""
        pc = worker.periodic_callbacks.get("heartbeat")
        if pc is not None:
            pc.stop()
        self.log.append(("silence-heartbeats", worker.address))

    def block_event_loop(self, seconds: float) -> None:
        """Freeze the current event loop for ``seconds`` (every server on
        it stops: use ``block_worker_loop`` for one worker in a process)."""
        asyncio.get_running_loop().call_soon(time.sleep, seconds)
        self.log.append(("block-loop", seconds))

    @contextlib.contextmanager
    def delay_stream(self, stream, seconds: float) -> Iterator[None]:
        """Hold every message sent on ``stream`` (a BatchedSend) for
        ``seconds`` before it goes out; order is kept."""
        send = stream.send
        loop = asyncio.get_running_loop()

        def delayed(*msgs):
            loop.call_later(seconds, _send_if_open, send, stream, msgs)

        stream.send = delayed
        self.log.append(("delay-stream", stream.name, seconds))
        try:
            yield
        finally:
            del stream.send  # back to the class's method

    def drop_stream(self, stream) -> None:
        """Cut a batched stream (what is buffered is lost, as on a network
        failure); both ends see the connection close."""
        stream.abort()
        self.log.append(("drop-stream", stream.name))

    # -- faults in worker processes ----------------------------------------

    async def exit_worker(self, client, address: str, code: int = 1) -> int | None:
        """Make the worker process at ``address`` call ``os._exit(code)``;
        returns its pid (None if it was already gone)."""
        self.log.append(("exit-worker", address))
        try:
            result = await client.run(_exit_soon, code, workers=[address])
        except Exception:
            return None
        return result.get(address)

    async def block_worker_loop(self, client, address: str, seconds: float) -> None:
        """Freeze the event loop of the worker process at ``address``."""
        self.log.append(("block-worker-loop", address, seconds))
        await client.run(_block_loop, seconds, workers=[address])

    async def exit_random_workers(self, client, times: int, low: float, high: float,
                                  code: int = 1) -> list[tuple[str, int | None]]:
        """``times`` times: wait a random ``[low, high]`` seconds, then end a
        random worker's process (``client`` is asynchronous).  Returns the
        ``(address, pid)`` of each worker hit."""
        hit = []
        for _ in range(times):
            await self.pause(low, high)
            workers = sorted((await client.scheduler.identity())["workers"])
            if not workers:
                continue
            address = self.choice(workers)
            pid = await self.exit_worker(client, address, code)
            hit.append((address, pid))
        return hit


def _send_if_open(send, stream, msgs) -> None:
    if not stream.closed():
        with contextlib.suppress(Exception):
            send(*msgs)
