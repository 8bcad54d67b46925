"""``Adaptive``: grow and shrink a cluster object with the load.

The decisions are ``AdaptiveCore``'s (``adaptive_core.py``); this class
connects them to a cluster and its scheduler:

* the target is the scheduler's ``adaptive_target(target_duration)`` (the
  workers that finish the queued and running work within that time);
* the workers that can go are the scheduler's ``workers_to_close`` (idle,
  fewest bytes first), by worker name;
* scaling up is ``cluster.scale(n)``; scaling down first retires the workers
  through the scheduler (``retire_workers``: their data moves to the others,
  no key is lost), then ``cluster.scale_down(names)`` stops their processes.

Made by ``cluster.adapt(...)``; runs on the cluster's event loop.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
import math
from typing import Any

from distributed import config
from distributed.core import Status
from distributed.deploy.adaptive_core import AdaptiveCore

__all__ = ["Adaptive"]

logger = logging.getLogger(__name__)


class Adaptive(AdaptiveCore):
    """Adaptive scaling of a cluster object (a ``SpecCluster``, or any
    ``Cluster`` with ``scale``/``scale_down``).

    Keywords default to the ``distributed.adaptive.*`` configuration.

    >>> cluster = LocalCluster(n_workers=0)                              # doctest: +SKIP
    >>> adaptive = cluster.adapt(minimum=0, maximum=8, interval="500ms")  # doctest: +SKIP
    >>> adaptive.state                                                    # doctest: +SKIP
    'running'
    """

    def __init__(self, cluster=None, interval: float | str | None = None, minimum: float | None = None,
                 maximum: float | None = None, wait_count: int | None = None,
                 target_duration: float | str | None = None, worker_key=None,
                 **workers_to_close_kwargs: Any):
        def default(value, key):
            return config.get(f"distributed.adaptive.{key}") if value is None else value

        maximum = default(maximum, "maximum")
        maximum = math.inf if maximum in (None, "inf", float("inf")) else maximum
        super().__init__(minimum=default(minimum, "minimum"), maximum=maximum,
                         wait_count=default(wait_count, "wait-count"), interval=default(interval, "interval"))
        target_duration = config.parse_timedelta(default(target_duration, "target-duration"))
        if not target_duration or target_duration <= 0:
            raise ValueError(f"Adaptive: target_duration must be > 0, not {target_duration!r}")
        unknown = set(workers_to_close_kwargs) - {"memory_ratio"}
        if unknown:
            raise TypeError(f"Adaptive: unexpected keywords {sorted(unknown)}")
        self.cluster = cluster
        self.target_duration = target_duration
        self.worker_key = worker_key
        self._workers_to_close_kwargs = workers_to_close_kwargs
        if cluster is not None:
            loop = cluster.loop
            if _on_loop_of(loop):
                self.start()
            else:
                loop.add_callback(self.start)

    # -- what the cluster says ----------------------------------------------

    @property
    def plan(self) -> set:
        return set(getattr(self.cluster, "plan", self.observed))

    @property
    def requested(self) -> set:
        return set(getattr(self.cluster, "requested", self.observed))

    @property
    def observed(self) -> set:
        workers = self.cluster.scheduler_info.get("workers", {})
        return {w.get("name") for w in workers.values()}

    def _active(self) -> bool:
        return self.cluster is not None and self.cluster.status not in (Status.closing, Status.closed)

    # -- what the scheduler says ---------------------------------------------

    async def target(self) -> int:
        return await self.cluster._scheduler_call("adaptive_target", target_duration=self.target_duration)

    async def workers_to_close(self, target: int) -> list:
        kwargs = dict(self._workers_to_close_kwargs)
        if self.worker_key is not None:
            if self.cluster._local_scheduler() is None:
                raise ValueError("Adaptive(worker_key=) needs the scheduler in this process")
            kwargs["key"] = self.worker_key
        return await self.cluster._scheduler_call("workers_to_close", target=target, attribute="name", **kwargs)

    # -- acting on the cluster ------------------------------------------------

    async def scale_up(self, n: int) -> None:
        await _maybe_await(self.cluster.scale(n))

    async def scale_down(self, workers: list) -> None:
        if not workers:
            return
        # Data first: the scheduler copies what only these workers hold.
        await self.cluster._scheduler_call("retire_workers", names=list(workers), remove=True, close_workers=True)
        await _maybe_await(self.cluster.scale_down(workers))

    def __repr__(self) -> str:
        return (f"<Adaptive minimum={self.minimum} maximum={self.maximum} wait_count={self.wait_count} "
                f"interval={self.interval}s target_duration={self.target_duration}s state={self.state}>")


async def _maybe_await(result) -> Any:
    if inspect.isawaitable(result):
        return await result
    return result


def _on_loop_of(loop) -> bool:
    try:
        return asyncio.get_running_loop() is loop.asyncio_loop
    except RuntimeError:
        return False
