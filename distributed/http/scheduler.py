"""The scheduler's HTTP server: dashboard pages, JSON, ``/metrics`` and the stream.

``SchedulerHTTP(scheduler)`` installs a ``PrefixTracker`` on the scheduler's
state (per-prefix counts for every route), a ``Broadcaster`` for the event
stream (idle until a tab subscribes) and a ``TickMonitor``, and serves them
on a Tornado ``HTTPServer``.  ``Scheduler.start`` creates it when a
dashboard is asked for.

Runs on the scheduler's event loop; not thread-safe.
"""
from __future__ import annotations

import logging
import time

from distributed import config
from distributed.http import api, health, info, snapshot
from distributed.http import json as json_routes
from distributed.http import pages as pages_
from distributed.http.base import token_for
from distributed.http.metrics_process import GCTimer, TickMonitor
from distributed.http.metrics_scheduler import collect
from distributed.http.prometheus import MetricsHandler
from distributed.http.server import HTTPServer, parse_address
from distributed.http.stream import Broadcaster
from distributed.http.tracker import PrefixTracker

__all__ = ["SchedulerHTTP"]

logger = logging.getLogger(__name__)

_STALLED_EVERY = 5.0  # seconds between two stall checks for the stream's banner


def _seconds(key: str, default: float) -> float:
    try:
        return float(config.get_timedelta(key))
    except Exception:  # the key is not set: our default
        return default


class SchedulerHTTP:
    """The dashboard of one scheduler.

    >>> async def main():                                   # doctest: +SKIP
    ...     async with Scheduler(port=0, dashboard_address="127.0.0.1:0") as s:
    ...         print(s.http_server.port, s.dashboard_link)
    """

    def __init__(self, scheduler, pages: bool = True):
        self.scheduler = scheduler
        self.tracker = PrefixTracker(scheduler.state,
                                     stream_length=int(config.get("distributed.dashboard.task-stream-length",
                                                                  20000) or 20000))
        self.broadcaster = Broadcaster(self._produce, _seconds("distributed.dashboard.interval", 0.5))
        self.ticks = TickMonitor(_seconds("distributed.admin.tick.interval", 0.02))
        routes = [*health.routes(self), ("/metrics", MetricsHandler, {"server": self, "collect": collect}),
                  *json_routes.routes(self), *api.routes(self)]
        if pages:  # --no-dashboard keeps the machine-readable routes only
            routes += [*info.routes(self), *pages_.routes(self)]
        self.http = HTTPServer(routes, owner=self)
        self._stalled: dict = {}
        self._stalled_at = float("-inf")
        self.token: str | None = None  # set at start: see base.token_for
        self._eta: dict | None = None
        self._eta_next = 0.0
        self._eta_cost = 0.0

    @property
    def status(self):
        """The scheduler's status (``/health`` reports it)."""
        return self.scheduler.status

    @property
    def port(self) -> int | None:
        return self.http.port

    def _produce(self, stream_after: int) -> dict:
        snap = snapshot.snapshot(self.scheduler, self.tracker, stream_after)
        # The stall banner is refreshed every few seconds, not every tick:
        # stalled_counts costs O(queued + processing) tasks.
        now = time.monotonic()
        if now - self._stalled_at >= _STALLED_EVERY:
            self._stalled_at = now
            self._stalled = {k: v for k, v in (self.stalled_counts() or {}).items() if v}
        snap["stalled"] = self._stalled
        if now >= self._eta_next:
            self._eta = self._estimate()
            self._eta_next = now + max(_STALLED_EVERY, 20 * self._eta_cost)
        snap["eta"] = self._eta
        return snap

    def _estimate(self) -> dict | None:
        """``why.eta`` of all wanted work, for the Progress and Task groups
        panels: ``{"eta", "critical_path", "bottleneck", "made"}`` or None.
        It costs O(remaining tasks), hence at most 5% of the time."""
        from distributed.diagnostics.why import eta

        began = time.perf_counter()
        try:
            est = eta(self.scheduler.state)
        except Exception:
            logger.exception("the dashboard's ETA failed; left out")
            return None
        finally:
            self._eta_cost = time.perf_counter() - began
        return {"eta": est["eta"], "critical_path": est["critical_path"],
                "bottleneck": est["bottleneck"], "made": time.time()}

    def desired_workers(self) -> int:
        return snapshot.desired_workers(self.scheduler)

    def stalled_counts(self) -> dict | None:
        """``why.stalled_counts`` when that module exists, else None (no gauge)."""
        try:
            from distributed.diagnostics.why import stalled_counts
        except ImportError:
            return None
        try:
            return stalled_counts(self.scheduler.state)
        except Exception:
            logger.exception("stalled_counts failed; dask_scheduler_stalled_tasks left out")
            return None

    def start(self, address, default_host: str, default_port: int = 8787) -> int:
        """Listen on ``address`` (``":8787"``, ``"127.0.0.1:0"``...); returns the port."""
        host, port = parse_address(address, default_host, default_port)
        self.token = token_for(host, self.scheduler.security)
        self.tracker.install()
        try:
            port = self.http.listen(host, port)
        except BaseException:
            self._unhook()
            raise
        GCTimer.get()
        self.ticks.start()
        logger.info("Dashboard at http://%s:%d/status%s", host if ":" not in host else f"[{host}]", port,
                    " (token required: see client.dashboard_link)" if self.token else "")
        return port

    def _unhook(self) -> None:
        self.tracker.uninstall()

    async def close(self) -> None:
        """Stop the stream, the tick monitor and the server; idempotent."""
        self.broadcaster.stop()
        self.ticks.stop()
        await self.http.close()
        self._unhook()
