"""The request handler every dashboard route derives from.

It carries the server it reports on (a Scheduler or a Worker), sets the
security headers once for all routes (a strict Content-Security-Policy: our
pages load only their own scripts and styles, never another host), writes
JSON, and refuses a POST whose ``Origin`` is not this server's own.

Handlers run on the owning server's event loop.
"""
from __future__ import annotations

import json
import logging
from urllib.parse import urlsplit

from tornado import web

__all__ = ["BaseHandler", "json_default"]

logger = logging.getLogger(__name__)

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'self'")


def json_default(obj):
    """``json.dumps(default=)``: sets and tuples as lists, bytes and anything else as text.

    >>> json.dumps({"a": {1}}, default=json_default)
    '{"a": [1]}'
    """
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    if isinstance(obj, bytes):
        return obj.decode(errors="replace")
    return str(obj)


class BaseHandler(web.RequestHandler):
    """Security headers, JSON output and the owning ``server``."""

    def initialize(self, server):
        self.server = server

    def set_default_headers(self):
        self.set_header("Content-Security-Policy", CSP)
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Referrer-Policy", "no-referrer")
        self.set_header("Cache-Control", "no-store")

    def write_json(self, obj, status: int = 200) -> None:
        """Send ``obj`` as JSON (keys and names from the cluster stay data)."""
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.write(json.dumps(obj, default=json_default))

    def check_same_origin(self) -> None:
        """Raise 403 unless the request's ``Origin`` (if any) is this host.

        Browsers send ``Origin`` on every cross-site POST; a missing header
        means a non-browser client (curl, a script), which CSRF cannot forge.
        """
        origin = self.request.headers.get("Origin")
        if origin is None:
            return
        host = self.request.headers.get("Host", "")
        if urlsplit(origin).netloc != host:
            logger.warning("refused %s %s from origin %r (this server is %r)",
                           self.request.method, self.request.path, origin, host)
            raise web.HTTPError(403, "cross-origin request refused")

    def prepare(self):
        if self.request.method not in ("GET", "HEAD", "OPTIONS"):
            self.check_same_origin()

    def write_error(self, status_code: int, **kwargs) -> None:
        # Tornado's default page echoes the reason; keep it to plain text.
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(f"{status_code}: {self._reason}\n")
