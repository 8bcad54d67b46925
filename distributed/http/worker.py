"""A worker's own HTTP server: ``/health``, ``/metrics``, ``/status``.

``/status`` is one server-rendered page (every value escaped) with the
worker's task counts and memory; ``/metrics`` carries upstream's
``dask_worker_*`` families.  ``Worker.start`` creates this server only when
asked (``dashboard_address=`` or ``distributed.worker.http.enabled``).

Runs on the worker's event loop; not thread-safe.
"""
from __future__ import annotations

import html
import logging

from distributed.http import health, metrics_worker, pages
from distributed.http.base import BaseHandler, token_for
from distributed.http.metrics_process import GCTimer, TickMonitor
from distributed.http.prometheus import MetricsHandler
from distributed.http.server import HTTPServer, parse_address

__all__ = ["WorkerHTTP"]

logger = logging.getLogger(__name__)


class WorkerStatusPage(BaseHandler):
    def get(self):
        w = self.server.worker
        mem = metrics_worker.memory(w)
        rows = [("address", w.address), ("name", w.name), ("scheduler", w.scheduler_address),
                ("threads", w.nthreads), ("memory limit", w.memory_limit),
                *((f"memory: {k}", v) for k, v in mem.items()),
                *((f"tasks: {k}", v) for k, v in sorted(metrics_worker.task_states(w).items()))]
        body = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
                       for k, v in rows)
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.write("<!doctype html><html lang=en><head><meta charset=utf-8><link rel=icon href=data:,>"
                   f"<title>Dask worker {html.escape(str(w.name))}</title>"
                   '<link rel=stylesheet href="/statics/dashboard.css"></head><body>'
                   f"<h1>Worker {html.escape(str(w.address))}</h1><table id=worker>{body}</table>"
                   '<p><a href="/metrics">metrics</a> <a href="/health">health</a></p></body></html>')


class WorkerHTTP:
    """The HTTP server of one worker."""

    def __init__(self, worker):
        self.worker = worker
        self.ticks = TickMonitor()
        routes = [*health.routes(self), ("/metrics", MetricsHandler,
                                         {"server": self, "collect": metrics_worker.collect}),
                  ("/", WorkerStatusPage, {"server": self}), ("/status", WorkerStatusPage, {"server": self}),
                  (r"/statics/(.*)", pages.StaticHandler, {"path": pages.STATIC_DIR})]
        self.http = HTTPServer(routes, owner=self)
        self.token: str | None = None  # set at start: see base.token_for

    @property
    def status(self):
        return self.worker.status

    @property
    def port(self) -> int | None:
        return self.http.port

    def start(self, address, default_host: str) -> int:
        """Listen on ``address`` (a free port when it names none); returns the port."""
        host, port = parse_address(address, default_host, 0)
        self.token = token_for(host, self.worker.security)
        port = self.http.listen(host, port)
        GCTimer.get()
        self.ticks.start()
        logger.info("Worker dashboard at http://%s:%d/status%s", host, port,
                    " (token required)" if self.token else "")
        return port

    async def close(self) -> None:
        self.ticks.stop()
        await self.http.close()
