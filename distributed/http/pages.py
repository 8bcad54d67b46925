"""The dashboard's pages: one static HTML shell per page, drawn by our JS.

``/status``, ``/workers``, ``/tasks``, ``/system``, ``/profile``,
``/groups`` and the ``/individual-*`` panes are the same small document with
a ``data-page`` attribute; ``/statics/dashboard.js`` builds the page with
DOM calls (``textContent`` only, so cluster strings never become markup)
from ``/api/v1/*`` and the event stream; its ``layouts`` table says which
panels each page has (``/profile``: the flame graph, fed by
``/json/profile.json`` while the tab is visible, then compute time per
task prefix).  No bokeh, no CDN: every byte
comes from this server, which the Content-Security-Policy enforces.

Runs on the server's event loop.
"""
from __future__ import annotations

import html
import os

from tornado import web

from distributed.http.base import BaseHandler

__all__ = ["routes", "PAGES", "STATIC_DIR", "page_html"]

STATIC_DIR = os.path.join(os.path.dirname(__file__), "static")

#: Navbar pages of the scheduler, in order.
PAGES = ("status", "workers", "tasks", "system", "profile", "groups")
#: Single-panel pages (``/individual-<name>``), as ``/individual-plots.json`` lists them.
PANES = ("task-stream", "progress", "cluster-memory", "workers-memory", "nprocessing", "workers", "groups")


def page_html(page: str, title: str, nav: tuple[str, ...] = PAGES) -> str:
    """The HTML shell of one page (no cluster data in it).

    >>> "data-page=\\"status\\"" in page_html("status", "Status")
    True
    """
    links = "".join(f'<a href="/{html.escape(p)}"{" aria-current=page" if p == page else ""}>'
                    f"{html.escape(p)}</a>" for p in nav)
    links += '<a href="/info/main/workers.html">info</a>' if nav is PAGES else ""
    return ("<!doctype html><html lang=en><head><meta charset=utf-8><link rel=icon href=data:,>"
            '<meta name=viewport content="width=device-width, initial-scale=1">'
            f"<title>Dask: {html.escape(title)}</title>"
            '<link rel=stylesheet href="/statics/dashboard.css">'
            '<script src="/statics/dashboard.js" defer></script></head>'
            f'<body data-page="{html.escape(page)}">'
            f'<header><strong>Dask</strong><nav>{links}</nav>'
            '<span id=connection class=conn>connecting</span></header>'
            '<div id=banner role=status hidden></div><main id=main></main></body></html>')


class PageHandler(BaseHandler):
    def initialize(self, server, page: str, title: str, nav=PAGES):
        super().initialize(server)
        self.page, self.title, self.nav = page, title, nav

    def get(self):
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.write(page_html(self.page, self.title, self.nav))


class StaticHandler(web.StaticFileHandler):
    def set_default_headers(self):
        BaseHandler.set_default_headers(self)

    def set_extra_headers(self, path):
        self.set_header("Cache-Control", "no-cache")


def routes(http, pages=PAGES, panes=PANES, nav=PAGES) -> list:
    """Page routes (``/`` redirects to the first page) and ``/statics/``.

    >>> [r[0] for r in routes(None)][:3]
    ['/', '/status', '/workers']
    """
    out = [("/", web.RedirectHandler, {"url": f"/{pages[0]}"})]
    for p in pages:
        out.append((f"/{p}", PageHandler, {"server": http, "page": p, "title": p, "nav": nav}))
    for p in panes:
        out.append((f"/individual-{p}", PageHandler,
                    {"server": http, "page": f"individual-{p}", "title": p, "nav": nav}))
    out.append((r"/statics/(.*)", StaticHandler, {"path": STATIC_DIR}))
    return out
