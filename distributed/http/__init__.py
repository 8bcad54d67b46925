"""The dashboard: Tornado routes, JSON and Prometheus writers, the event
stream, static pages and our own JS (issue 13).

``SchedulerHTTP`` (``distributed.http.scheduler``) and ``WorkerHTTP``
(``distributed.http.worker``) assemble the route modules ``health``,
``prometheus`` (+ ``metrics_*``), ``json``, ``api``, ``info``, ``pages`` and
``stream`` on the small server in ``distributed.http.server``.  Import them
from their modules: this package imports nothing at start-up, so a process
without a dashboard never loads Tornado's web stack.
"""
