"""The request handler every dashboard route derives from.

It carries the server it reports on (a Scheduler or a Worker), sets the
security headers once for all routes (a strict Content-Security-Policy: our
pages load only their own scripts and styles, never another host), writes
JSON, and refuses a POST whose ``Origin`` is not this server's own.

When its owner has a ``token`` (a dashboard reachable off-loopback on a
cluster with a secret: ``token_for``), every route but ``/health`` needs
it once, as ``?token=``; the handler then sets an HttpOnly, SameSite=Strict
cookie so that the pages' own requests carry it.  Programs (a Prometheus
scraper) may send ``Authorization: Bearer <token>`` instead.

Handlers run on the owning server's event loop.
"""
from __future__ import annotations

import hmac
import json
import logging
from urllib.parse import urlsplit

from tornado import web

__all__ = ["BaseHandler", "check_token", "json_default", "token_for"]

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


TOKEN_COOKIE = "dask-dashboard-token"


def token_for(host: str, security) -> str | None:
    """The token a dashboard bound to ``host`` requires (None: none), by
    ``distributed.dashboard.require-token``; see
    ``distributed.comm.auth_secret.dashboard_token_for``.

    >>> token_for("127.0.0.1", None) is None
    True
    """
    from distributed.comm.auth_secret import dashboard_token_for

    return dashboard_token_for(host, getattr(security, "auth_secret", None))


def check_token(handler: web.RequestHandler, token: str | None) -> None:
    """Raise 401 unless the request carries ``token`` (query, cookie or
    bearer header); a valid ``?token=`` also sets the cookie."""
    if token is None:
        return
    given = handler.get_query_argument("token", None)
    if given is not None and hmac.compare_digest(given, token):
        handler.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="Strict", path="/")
        return
    cookie = handler.get_cookie(TOKEN_COOKIE)
    if cookie is not None and hmac.compare_digest(cookie, token):
        return
    auth = handler.request.headers.get("Authorization", "")
    if auth.startswith("Bearer ") and hmac.compare_digest(auth[7:].strip(), token):
        return
    raise web.HTTPError(401, "this dashboard needs its token: open the link that "
                        "client.dashboard_link gives")


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

    #: Routes anyone may read (a load balancer's health check).
    open_route = False

    def prepare(self):
        if not self.open_route:
            check_token(self, getattr(self.server, "token", None))
        if self.request.method not in ("GET", "HEAD", "OPTIONS"):
            self.check_same_origin()

    def write_error(self, status_code: int, **kwargs) -> None:
        # Tornado's default page echoes the reason; keep it to plain text.
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(f"{status_code}: {self._reason}\n")
