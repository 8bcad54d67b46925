"""``AdaptiveCore``: the decision loop of adaptive scaling, without a cluster.

Every ``interval`` it asks ``target()`` (how many workers the work needs),
clamps it to ``[minimum, maximum]`` and compares it with ``plan`` (the
workers asked for):

* more needed: ``scale_up(n)`` at once;
* fewer: the workers that could go (first those asked for but never seen by
  the scheduler, then ``workers_to_close(target)``) are each counted, and a
  worker goes (``scale_down(workers)``) only once proposed ``wait_count``
  times in a row: hysteresis, so a short lull between two graphs does not
  close workers that the next graph needs.

Subclasses provide ``target``, ``workers_to_close``, ``scale_up``,
``scale_down`` and the ``plan``/``requested``/``observed`` name sets
(``adaptive.py`` does, for a cluster object).

Runs on one event loop (the cluster's); ``adapt()`` is guarded against
re-entry, so a slow round never overlaps the next.
"""
from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque

from distributed import config

__all__ = ["AdaptiveCore"]

logger = logging.getLogger(__name__)


class AdaptiveCore:
    """The adapt loop; subclass it and provide the cluster-facing methods.

    >>> class Fixed(AdaptiveCore):                    # doctest: +SKIP
    ...     plan = requested = observed = set()
    ...     async def target(self): return 3
    ...     async def scale_up(self, n): print("up", n)
    >>> await Fixed(maximum=2).adapt()                # doctest: +SKIP
    up 2
    """

    def __init__(self, minimum: float = 0, maximum: float = math.inf, wait_count: int = 3,
                 interval: float | str = "1s"):
        if minimum is None or minimum < 0:
            raise ValueError(f"Adaptive: minimum must be >= 0, not {minimum!r}")
        if maximum is None or maximum < minimum:
            raise ValueError(f"Adaptive: maximum ({maximum!r}) must be >= minimum ({minimum!r})")
        if not isinstance(wait_count, int) or wait_count < 1:
            raise ValueError(f"Adaptive: wait_count must be a whole number >= 1, not {wait_count!r}")
        interval_s = config.parse_timedelta(interval)
        if not interval_s or interval_s <= 0:
            raise ValueError(f"Adaptive: interval must be > 0, not {interval!r}")
        self.minimum = minimum
        self.maximum = maximum
        self.wait_count = wait_count
        self.interval = interval_s
        self.close_counts: dict = {}
        self.log: deque = deque(maxlen=10_000)
        self._adapting = False
        self._state = "starting"
        self._task: asyncio.Task | None = None

    # -- provided by subclasses -------------------------------------------

    plan: set = set()
    requested: set = set()
    observed: set = set()

    async def target(self) -> int:
        raise NotImplementedError

    async def workers_to_close(self, target: int) -> list:
        return []

    async def scale_up(self, n: int) -> None:
        raise NotImplementedError

    async def scale_down(self, workers: list) -> None:
        raise NotImplementedError

    # -- the loop -------------------------------------------------------------

    @property
    def state(self) -> str:
        """"starting", "running", "stopped", or "inactive" (its cluster closed)."""
        return self._state

    async def safe_target(self) -> int:
        """``target()`` clamped to ``[minimum, maximum]``."""
        n = await self.target()
        return int(max(self.minimum, min(n, self.maximum)))

    async def recommendations(self, target: int) -> dict:
        """``{"status": "same"}``, ``{"status": "up", "n": n}`` or
        ``{"status": "down", "workers": [...]}`` (see the module docstring)."""
        plan = self.plan
        if target >= len(plan):
            self.close_counts.clear()
            return {"status": "up", "n": target} if target > len(plan) else {"status": "same"}
        n_close = len(plan) - target
        # Asked for but never seen: nothing to retire, they may go at once.
        never_seen = sorted(self.requested - self.observed, key=str)[:n_close]
        firm = list(never_seen)
        candidates = []
        if len(firm) < n_close:
            candidates = [w for w in await self.workers_to_close(target) if w not in firm]
            candidates = candidates[: n_close - len(firm)]
        for w in candidates:
            self.close_counts[w] = self.close_counts.get(w, 0) + 1
            if self.close_counts[w] >= self.wait_count:
                firm.append(w)
        for w in list(self.close_counts):
            if w not in candidates:
                del self.close_counts[w]  # not proposed this round: start over
        if firm:
            for w in firm:
                self.close_counts.pop(w, None)
            return {"status": "down", "workers": firm}
        return {"status": "same"}

    async def adapt(self) -> None:
        """One round: decide, then scale up or down."""
        if self._adapting:
            return
        self._adapting = True
        try:
            target = await self.safe_target()
            recs = await self.recommendations(target)
            if recs["status"] != "same":
                self.log.append((time.time(), dict(recs)))
            if recs["status"] == "up":
                await self.scale_up(recs["n"])
            elif recs["status"] == "down":
                await self.scale_down(recs["workers"])
        finally:
            self._adapting = False

    def _active(self) -> bool:
        return True

    async def _run(self) -> None:
        self._state = "running"
        try:
            while self._state == "running":
                if not self._active():
                    self._state = "inactive"
                    return
                try:
                    await self.adapt()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    if not self._active():
                        self._state = "inactive"
                        return
                    logger.exception("Adaptive round failed; trying again in %.2f s", self.interval)
                if self._state != "running":  # stopped during the round
                    return
                await asyncio.sleep(self.interval)
        except asyncio.CancelledError:
            pass

    def start(self) -> None:
        """Begin the loop (on the running event loop)."""
        if self._task is None and self._state == "starting":
            self._task = asyncio.ensure_future(self._run())

    def stop(self) -> None:
        """End the loop; ``state`` becomes "stopped".  A round in progress
        finishes (cancelling it could leave workers half-retired); a loop
        waiting for its next round ends at once."""
        self._state = "stopped"
        task = self._task
        self._task = None
        if task is not None and not task.done() and not self._adapting:
            try:
                loop = task.get_loop()
                if loop.is_running() and not _on_loop(loop):
                    loop.call_soon_threadsafe(task.cancel)
                else:
                    task.cancel()
            except RuntimeError:
                pass


def _on_loop(loop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
