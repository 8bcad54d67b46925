"""``GET /health``: ``ok`` as text/plain while the server runs (upstream's payload).

Load balancers and Kubernetes probes read it; a closing server answers 503.
"""
from __future__ import annotations

from distributed.http.base import BaseHandler

__all__ = ["HealthHandler", "routes"]


class HealthHandler(BaseHandler):
    """``ok`` (200) while the server is running, else its status (503)."""

    open_route = True  # needs no dashboard token

    def get(self):
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        status = getattr(self.server, "status", None)
        name = getattr(status, "name", "running")
        if name in ("running", "paused", "init", "starting"):
            self.write("ok")
        else:
            self.set_status(503)
            self.write(name)


def routes(server) -> list:
    """The routes of this module for ``server``.

    >>> [r[0] for r in routes(object())]
    ['/health']
    """
    return [("/health", HealthHandler, {"server": server})]
