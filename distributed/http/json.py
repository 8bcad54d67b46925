"""Upstream's JSON routes: ``/json/identity.json``, ``/json/counts.json``,
``/json/index.html`` and ``/individual-plots.json``; and ours,
``/json/profile.json`` (the flame graph's data: ``distributed/http/profile.py``).

Payloads keep upstream's shape; counts come from the ``PrefixTracker``
(O(prefixes)) rather than a loop over every task.

Runs on the scheduler's event loop.
"""
from __future__ import annotations

import html

from distributed.http import snapshot
from distributed.http.base import BaseHandler
from distributed.http.profile import ProfileHandler

__all__ = ["routes", "INDIVIDUAL_PLOTS"]

#: Pane title -> path, as dask-labextension lists them (each is one of our panes).
INDIVIDUAL_PLOTS = {
    "Individual Task Stream": "/individual-task-stream",
    "Individual Progress": "/individual-progress",
    "Individual Cluster Memory": "/individual-cluster-memory",
    "Individual Workers Memory": "/individual-workers-memory",
    "Individual Nprocessing": "/individual-nprocessing",
    "Individual Workers": "/individual-workers",
    "Individual Groups": "/individual-groups",
}


class IdentityHandler(BaseHandler):
    def get(self):
        self.write_json(self.server.scheduler.identity())


class CountsHandler(BaseHandler):
    def get(self):
        self.write_json(snapshot.counts(self.server.scheduler, self.server.tracker))


class IndexHandler(BaseHandler):
    def get(self):
        self.set_header("Content-Type", "text/html; charset=utf-8")
        items = "".join(f'<li><a href="{html.escape(p.lstrip("/"))}">{html.escape(p)}</a></li>'
                        for p in ("/json/counts.json", "/json/identity.json", "/json/profile.json"))
        self.write(f"<!doctype html><title>JSON</title><ul>{items}</ul>")


class IndividualPlotsHandler(BaseHandler):
    def get(self):
        self.write_json(INDIVIDUAL_PLOTS)


def routes(http) -> list:
    """The routes of this module for a ``SchedulerHTTP``.

    >>> [r[0] for r in routes(None)][:2]
    ['/json/identity.json', '/json/counts.json']
    """
    kw = {"server": http}
    return [("/json/identity.json", IdentityHandler, kw),
            ("/json/counts.json", CountsHandler, kw),
            ("/json/index.html", IndexHandler, kw),
            ("/json/profile.json", ProfileHandler, kw),
            ("/individual-plots.json", IndividualPlotsHandler, kw)]
