"""``/api/v1/...``: upstream's API routes and our read-only additions.

Upstream's: ``/api/v1`` (text), ``get_workers``, ``adaptive_target``,
``check_idle`` and ``POST retire_workers`` (same-origin only, JSON body).
Ours: ``cluster``, ``workers``, ``workers/<addr>``, ``groups``,
``task_stream?after=&limit=``, ``tasks/<key>`` and the event ``stream``.

Runs on the scheduler's event loop.
"""
from __future__ import annotations

import json

from tornado import web

from distributed.http import snapshot
from distributed.http.base import BaseHandler
from distributed.http.stream import EventStreamHandler

__all__ = ["routes"]


class APIHandler(BaseHandler):
    def get(self):
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.write("API V1")


class GetWorkersHandler(BaseHandler):
    def get(self):
        self.write_json(snapshot.get_workers(self.server.scheduler))


class AdaptiveTargetHandler(BaseHandler):
    def get(self):
        self.write_json({"workers": self.server.desired_workers()})


class CheckIdleHandler(BaseHandler):
    def get(self):
        self.write_json({"idle_since": self.server.tracker.idle_since})


class RetireWorkersHandler(BaseHandler):
    async def post(self):
        if not self.request.headers.get("Content-Type", "").startswith("application/json"):
            raise web.HTTPError(415, "send a JSON body (Content-Type: application/json)")
        try:
            body = json.loads(self.request.body or b"{}")
        except ValueError:
            raise web.HTTPError(400, "the body is not JSON") from None
        if not isinstance(body, dict) or not ({"workers", "n"} & set(body)):
            raise web.HTTPError(400, 'give {"workers": [addresses or names]} or {"n": count}')
        scheduler = self.server.scheduler
        workers = body.get("workers")
        if workers is None:
            n = body["n"]
            if not isinstance(n, int) or n < 0:
                raise web.HTTPError(400, '"n" must be a non-negative integer')
            # The workers holding the least data go first.
            order = sorted(scheduler.state.workers.values(), key=lambda ws: (ws.nbytes, ws.address))
            workers = [ws.address for ws in order[:n]]
        elif not isinstance(workers, list):
            raise web.HTTPError(400, '"workers" must be a list')
        retired = await scheduler.retire_workers(workers=workers)
        self.write_json(retired)


class ClusterHandler(BaseHandler):
    def get(self):
        self.write_json(snapshot.cluster(self.server.scheduler, self.server.tracker))


class WorkersHandler(BaseHandler):
    def get(self, addr: str | None = None):
        rows = snapshot.worker_rows(self.server.scheduler)
        if addr is None:
            self.write_json(rows)
            return
        for r in rows:
            if r["address"] == addr or r["name"] == addr:
                self.write_json(r)
                return
        raise web.HTTPError(404, "no such worker")


class GroupsHandler(BaseHandler):
    def get(self):
        self.write_json(self.server.tracker.groups())


class TaskStreamHandler(BaseHandler):
    def get(self):
        try:
            after = int(self.get_argument("after", "-1"))
            limit = min(int(self.get_argument("limit", "1000")), 20000)
        except ValueError:
            raise web.HTTPError(400, "after and limit are integers") from None
        tracker = self.server.tracker
        self.write_json({"records": tracker.stream_after(after, limit), "next": tracker.stream_index})


class TaskHandler(BaseHandler):
    def get(self, key: str):
        from distributed.http.info import task_info

        info = task_info(self.server.scheduler, key)
        if info is None:
            raise web.HTTPError(404, "no such task")
        self.write_json(info)


def routes(http) -> list:
    """The routes of this module for a ``SchedulerHTTP``.

    >>> len(routes(None)) > 5
    True
    """
    kw = {"server": http}
    return [("/api/v1", APIHandler, kw),
            ("/api/v1/get_workers", GetWorkersHandler, kw),
            ("/api/v1/adaptive_target", AdaptiveTargetHandler, kw),
            ("/api/v1/check_idle", CheckIdleHandler, kw),
            ("/api/v1/retire_workers", RetireWorkersHandler, kw),
            ("/api/v1/cluster", ClusterHandler, kw),
            ("/api/v1/workers", WorkersHandler, kw),
            (r"/api/v1/workers/(.+)", WorkersHandler, kw),
            ("/api/v1/groups", GroupsHandler, kw),
            ("/api/v1/task_stream", TaskStreamHandler, kw),
            (r"/api/v1/tasks/(.+)", TaskHandler, kw),
            ("/api/v1/stream", EventStreamHandler,
             {"server": http, "broadcaster": http.broadcaster if http is not None else None})]
