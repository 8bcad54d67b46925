"""A small Tornado HTTP server shared by the scheduler and the worker.

``HTTPServer(routes)`` wraps a ``tornado.web.Application``; ``listen`` binds
it to an address (falling back to a free port with a warning when the asked
port is taken, as upstream does), ``close`` stops it.  ``/sitemap.json``
lists the routes, as upstream's routing application does.

Runs on the event loop it was started from; not thread-safe.
"""
from __future__ import annotations

import asyncio
import errno
import logging

from tornado import httpserver, netutil, web

from distributed.http.base import BaseHandler

__all__ = ["HTTPServer", "parse_address"]

logger = logging.getLogger(__name__)


def parse_address(address: str | int | None, default_host: str, default_port: int) -> tuple[str, int]:
    """``(host, port)`` from a dashboard address such as ``":8787"``,
    ``"127.0.0.1:0"``, ``"8787"`` or ``8787``; a missing host is ``default_host``.

    >>> parse_address(":8787", "127.0.0.1", 0)
    ('127.0.0.1', 8787)
    >>> parse_address("10.0.0.5:0", "127.0.0.1", 8787)
    ('10.0.0.5', 0)
    >>> parse_address(None, "::1", 8787)
    ('::1', 8787)
    """
    if address is None or address == "":
        return default_host, default_port
    if isinstance(address, int):
        return default_host, address
    text = str(address).split("://", 1)[-1]
    if text.isdigit():
        return default_host, int(text)
    host, sep, port = text.rpartition(":")
    if not sep:
        return text, default_port
    host = host.strip("[]") or default_host
    try:
        port_n = int(port)
    except ValueError:
        raise ValueError(f"dashboard address {address!r}: {port!r} is not a port number") from None
    if not 0 <= port_n <= 65535:
        raise ValueError(f"dashboard address {address!r}: port {port_n} is not in 0..65535")
    return host, port_n


class _SitemapHandler(BaseHandler):
    def initialize(self, server, paths):
        super().initialize(server)
        self.paths = paths

    def get(self):
        self.write_json({"paths": self.paths})


class HTTPServer:
    """Serve ``routes`` (Tornado ``(pattern, handler, kwargs)`` tuples).

    >>> async def main():                                   # doctest: +SKIP
    ...     http = HTTPServer(health.routes(worker))
    ...     http.listen("127.0.0.1", 0)
    ...     print(http.port)
    ...     await http.close()
    """

    def __init__(self, routes: list, owner=None):
        paths = sorted({r[0] for r in routes} | {"/sitemap.json"})
        self.routes = [*routes, ("/sitemap.json", _SitemapHandler, {"server": owner, "paths": paths})]
        self.application = web.Application(self.routes, compress_response=True)
        self._server: httpserver.HTTPServer | None = None
        self.host: str | None = None
        self.port: int | None = None

    def listen(self, host: str, port: int) -> int:
        """Bind to ``host:port`` (port 0: any free one); returns the port.

        A taken port falls back to a free one with a warning; other errors raise.
        """
        try:
            sockets = netutil.bind_sockets(port, address=host, reuse_port=False)
        except OSError as e:
            if e.errno != errno.EADDRINUSE or port == 0:
                raise
            sockets = netutil.bind_sockets(0, address=host)
            logger.warning("Port %d is already in use; the dashboard is served on port %d instead",
                           port, sockets[0].getsockname()[1])
        # One socket: "localhost" may resolve to two families whose free ports differ.
        for extra in sockets[1:]:
            extra.close()
        server = httpserver.HTTPServer(self.application, xheaders=False)
        server.add_sockets(sockets[:1])
        self._server = server
        self.host = host
        self.port = sockets[0].getsockname()[1]
        return self.port

    async def close(self, timeout: float = 2) -> None:
        """Stop listening and end open connections (an SSE tab); idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        server.stop()
        try:
            await asyncio.wait_for(server.close_all_connections(), timeout)
        except asyncio.TimeoutError:
            logger.warning("dashboard connections still open %s s after close", timeout)
