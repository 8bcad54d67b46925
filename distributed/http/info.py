"""``/info/...``: server-rendered HTML tables to browse the cluster's state.

Workers -> one worker (its tasks) -> one task (dependencies, holders,
story).  Every string from the cluster (keys, names, exception text) goes
through ``html.escape``; links carry URL-quoted keys.  No script runs on
these pages.

Runs on the scheduler's event loop.
"""
from __future__ import annotations

import ast
import html
import time
from urllib.parse import quote

from tornado import web

from distributed.http.base import BaseHandler
from distributed.http.tracker import _key_text

__all__ = ["routes", "task_info", "find_task"]

_CAP = 200  # rows shown of a long list (dependents of a big reduction...)


def find_task(scheduler, text: str):
    """The scheduler's TaskState whose key reads ``text`` (a tuple key is
    written as its repr), or None."""
    tasks = scheduler.state.tasks
    ts = tasks.get(text)
    if ts is None and text.startswith("("):
        try:
            ts = tasks.get(ast.literal_eval(text))
        except (ValueError, SyntaxError, TypeError):
            ts = None
    return ts


def task_info(scheduler, text: str) -> dict | None:
    """What ``/api/v1/tasks/<key>`` returns, or None for an unknown key."""
    ts = find_task(scheduler, text)
    if ts is None:
        return None
    return {
        "key": _key_text(ts.key),
        "prefix": ts.prefix,
        "state": ts.state,
        "nbytes": ts.nbytes,
        "type": ts.type,
        "processing_on": ts.processing_on.address if ts.processing_on is not None else None,
        "who_has": sorted(ws.address for ws in ts.who_has),
        "dependencies": [_key_text(d.key) for d in list(ts.dependencies)[:_CAP]],
        "dependents": [_key_text(d.key) for d in list(ts.dependents)[:_CAP]],
        "retries": getattr(ts, "retries", 0),
        "exception": getattr(ts, "exception_text", None) or None,
        "story": [[_key_text(k), a, b] for k, a, b in scheduler.state.story(ts.key)[-_CAP:]],
    }


def _page(title: str, body: str) -> str:
    return ("<!doctype html><html lang=en><head><meta charset=utf-8><link rel=icon href=data:,>"
            f"<title>{html.escape(title)}</title>"
            '<link rel=stylesheet href="/statics/dashboard.css"></head><body>'
            '<nav><a href="/status">status</a> <a href="/workers">workers</a> '
            '<a href="/info/main/workers.html">info</a></nav>'
            f"<h1>{html.escape(title)}</h1>{body}</body></html>")


def _table(headers: list[str], rows: list[list[str]]) -> str:
    """An HTML table; cells are already-escaped HTML."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _task_link(key) -> str:
    text = _key_text(key)
    return f'<a href="/info/task/{quote(text, safe="")}.html">{html.escape(text)}</a>'


def _worker_link(addr: str) -> str:
    return f'<a href="/info/worker/{quote(addr, safe="")}.html">{html.escape(addr)}</a>'


class _HTMLHandler(BaseHandler):
    def send(self, title: str, body: str) -> None:
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.write(_page(title, body))


class WorkersPage(_HTMLHandler):
    def get(self):
        rows = []
        now = time.time()
        for addr, ws in self.server.scheduler.state.workers.items():
            rows.append([_worker_link(addr), html.escape(str(ws.name)), str(ws.nthreads),
                         str(len(ws.processing)), str(len(ws.has_what)), html.escape(ws.status),
                         f"{max(now - ws.last_seen, 0):.1f} s" if ws.last_seen else "-"])
        self.send("Workers", _table(["address", "name", "threads", "processing", "in memory", "status",
                                     "last seen"], rows))


class WorkerPage(_HTMLHandler):
    def get(self, addr: str):
        state = self.server.scheduler.state
        ws = state.workers.get(addr) or state.workers.get(state.aliases.get(addr, ""))
        if ws is None:
            raise web.HTTPError(404, "no such worker")
        procs = [[_task_link(ts.key), html.escape(ts.state)] for ts in list(ws.processing)[:_CAP]]
        held = [[_task_link(ts.key), str(ts.nbytes)] for ts in list(ws.has_what)[:_CAP]]
        body = (_table(["field", "value"], [[html.escape(k), html.escape(str(v))]
                                            for k, v in ws.identity().items()])
                + f"<h2>Processing ({len(ws.processing)})</h2>" + _table(["key", "state"], procs)
                + f"<h2>In memory ({len(ws.has_what)})</h2>" + _table(["key", "bytes"], held))
        self.send(f"Worker {addr}", body)


class TaskPage(_HTMLHandler):
    def get(self, key: str):
        info = task_info(self.server.scheduler, key)
        if info is None:
            raise web.HTTPError(404, "no such task")
        fields = [[html.escape(k), html.escape(str(info[k]))]
                  for k in ("key", "prefix", "state", "nbytes", "type", "retries", "exception")]
        if info["processing_on"]:
            fields.append(["processing on", _worker_link(info["processing_on"])])
        body = (_table(["field", "value"], fields)
                + "<h2>Held by</h2>" + _table(["worker"], [[_worker_link(w)] for w in info["who_has"]])
                + "<h2>Dependencies</h2>" + _table(["key"], [[_task_link(k)] for k in info["dependencies"]])
                + "<h2>Dependents</h2>" + _table(["key"], [[_task_link(k)] for k in info["dependents"]])
                + "<h2>Story</h2>" + _table(["key", "from", "to"],
                                            [[html.escape(c) for c in row] for row in info["story"]]))
        self.send(f"Task {info['key']}", body)


class ExceptionsPage(_HTMLHandler):
    def get(self):
        rows = []
        for ts in self.server.scheduler.state.tasks.values():
            if ts.state == "erred" and getattr(ts, "exception_text", None):
                rows.append([_task_link(ts.key), html.escape(str(ts.exception_text))])
                if len(rows) >= _CAP:
                    break
        self.send("Exceptions", _table(["key", "exception"], rows))


def routes(http) -> list:
    """The routes of this module for a ``SchedulerHTTP``."""
    kw = {"server": http}
    return [(r"/info", web.RedirectHandler, {"url": "/info/main/workers.html"}),
            (r"/info/main/workers.html", WorkersPage, kw),
            (r"/info/main/exceptions.html", ExceptionsPage, kw),
            (r"/info/worker/(.+)\.html", WorkerPage, kw),
            (r"/info/task/(.+)\.html", TaskPage, kw)]
