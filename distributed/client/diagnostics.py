"""Client methods that show what the cluster did and is doing: the task
stream, logs, stories, call stacks, the profiler, a cluster dump, and
``why`` (what holds unfinished work back).

The scheduler side is the ``"diagnostics"`` extension
(``distributed/diagnostics/extension.py``), which asks the workers where
needed.  Every method blocks on a blocking client and returns an awaitable
on an asynchronous one.

Thread rules: the methods may be called from any thread; forwarded log
records are re-emitted on the client's event loop.
"""
from __future__ import annotations

import logging
import time

from distributed.diagnostics import cluster_dump
from distributed.diagnostics.logs import ForwardLoggingPlugin, dict_to_record, forward_topic
from distributed.diagnostics.task_stream import PLOT_ERROR, _parse_time, trace_events
from distributed.futures import futures_of

__all__ = ["DiagnosticsMethods", "StallReport"]

logger = logging.getLogger(__name__)


def _keys_of(futures_or_keys) -> list:
    """Keys of futures, collections of futures, or plain keys."""
    keys = []
    for item in futures_or_keys:
        futs = futures_of(item)
        if futs:
            keys.extend(f.key for f in futs)
        elif hasattr(item, "__dask_graph__"):
            raise TypeError("why()/story() take futures or keys; persist the collection first "
                            "(client.persist(x)) and pass the result")
        else:
            keys.append(item)
    return keys


class StallReport(list):
    """What ``client.why`` returns: a list of explanations (dicts with
    ``reason``, ``root``, ``message``, ``keys``, ``n_keys``, ...), most
    urgent first, with ``.eta`` (seconds left, critical path, bottleneck).
    ``str()`` gives a readable summary.

    >>> print(StallReport([], {"eta": 0.0}))
    Nothing is stalled: every key asked about is finished.
    """

    def __init__(self, explanations: list, eta: dict | None = None):
        super().__init__(explanations)
        self.eta = eta or {}

    @property
    def stalled(self) -> bool:
        """Whether some explanation is a stall (not just running work)."""
        return any(e["reason"] not in ("running", "queued-saturated") for e in self)

    def __str__(self) -> str:
        if not self:
            return "Nothing is stalled: every key asked about is finished."
        lines = []
        for e in self:
            lines.append(f"[{e['reason']}] {e['message']} ({e['n_keys']} key(s) held back, "
                         f"e.g. {', '.join(map(repr, e['keys'][:3]))})")
        eta = self.eta
        if eta and eta.get("eta"):
            line = f"ETA {eta['eta']:.1f}s (critical path {eta['critical_path']:.1f}s"
            b = eta.get("bottleneck")
            if b:
                line += f"; {b['prefix']!r} is {100 * b['share']:.0f}% of it"
            lines.append(line + ")")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<StallReport: {len(self)} explanation(s)>\n{self}"


class DiagnosticsMethods:
    """The diagnostics methods of ``Client`` (``self`` is a Client)."""

    # -- task stream ---------------------------------------------------------

    def get_task_stream(self, start=None, stop=None, count=None, plot=False,
                        filename: str = "task-stream.html", bokeh_resources=None, asynchronous=None):
        """Records of the tasks that finished (always recorded, nothing to
        prime): ``[{"key", "status", "nbytes", "type", "typename",
        "metadata", "thread", "worker", "startstops": [{"action", "start",
        "stop"}]}]``, oldest first.

        ``start``/``stop``: times since the epoch, datetimes, or durations
        ago such as ``"60s"``; ``count``: the last ``count`` records.
        ``plot`` is refused (the chart lives on the dashboard and in
        ``performance_report``).

        >>> client.get_task_stream(count=1)[0]["startstops"][0]["action"]   # doctest: +SKIP
        'compute'
        """
        if plot:
            raise ValueError(PLOT_ERROR)
        now = time.time()
        start, stop = _parse_time(start, now), _parse_time(stop, now)
        return self.sync(self._get_task_stream, start, stop, count, asynchronous=asynchronous)

    async def _get_task_stream(self, start=None, stop=None, count=None):
        return await self.scheduler.get_task_stream(start=start, stop=stop, count=count)

    def export_trace(self, filename: str, start=None, stop=None, count=None):
        """Write the task stream as a Chrome/Perfetto trace (JSON trace
        events: open it in ui.perfetto.dev or chrome://tracing); returns the
        number of tasks written.  ``start``/``stop``/``count`` as in
        ``get_task_stream``.

        >>> client.export_trace("trace.json")      # doctest: +SKIP
        2000
        """
        import json

        records = self.get_task_stream(start=start, stop=stop, count=count)
        if not self.asynchronous:
            with open(filename, "w", encoding="utf-8") as f:
                json.dump(trace_events(records), f)
            return len(records)

        async def write():
            recs = await records
            with open(filename, "w", encoding="utf-8") as f:
                json.dump(trace_events(recs), f)
            return len(recs)

        return write()

    async def _task_stream_index(self) -> int:
        return await self.scheduler.task_stream_index()

    async def _task_stream_since(self, index: int) -> list:
        return await self.scheduler.get_task_stream(since=index)

    # -- logs ----------------------------------------------------------------

    def get_scheduler_logs(self, n: int | None = None, asynchronous=None):
        """The scheduler's recent log records, ``[(level, message)]``, newest
        first (``n`` of them, or all kept: ``distributed.admin.log-length``).

        >>> client.get_scheduler_logs(n=1)     # doctest: +SKIP
        [('INFO', '2026-... - distributed.scheduler.server - INFO - ...')]
        """
        return self.sync(self._get_scheduler_logs, n, asynchronous=asynchronous)

    async def _get_scheduler_logs(self, n=None):
        return [tuple(r) for r in await self.scheduler.get_logs(n=n)]

    def get_worker_logs(self, n: int | None = None, workers=None, nanny: bool = False,
                        asynchronous=None):
        """Each worker's recent log records: ``{address: [(level, message)]}``,
        newest first.  ``nanny=True``: the nannies' instead (keyed by nanny
        address; raises if a worker has no nanny).

        >>> client.get_worker_logs(n=2)        # doctest: +SKIP
        {'tcp://127.0.0.1:40575': [('INFO', '...'), ('INFO', '...')]}
        """
        from distributed.client.data import _worker_list

        return self.sync(self._get_worker_logs, n, _worker_list(workers), nanny,
                         asynchronous=asynchronous)

    async def _get_worker_logs(self, n=None, workers=None, nanny=False):
        replies = await self.scheduler.worker_logs(n=n, workers=workers, nanny=nanny)
        out = {}
        for addr, reply in replies.items():
            if isinstance(reply, dict) and reply.get("status") == "error":
                raise RuntimeError(f"get_worker_logs: {reply.get('exception_text')}")
            out[addr] = [tuple(r) for r in reply]
        return out

    def forward_logging(self, logger_name: str | None = None, level: int | str = logging.NOTSET):
        """Re-emit in this process the log records of ``logger_name`` (the
        root logger by default) at ``level`` or above, from every worker,
        now and joining later; each record gets ``record.worker``.

        >>> client.forward_logging("app", level="INFO")        # doctest: +SKIP
        """
        level = logging._checkLevel(level)
        plugin = ForwardLoggingPlugin(logger_name, level)
        topic = forward_topic(logger_name)

        def handle(event) -> None:
            _, fields = event
            if not isinstance(fields, dict):
                return
            record = dict_to_record(fields, fields.get("worker"))
            target = logging.getLogger(record.name)
            if target.isEnabledFor(record.levelno):
                target.handle(record)

        self.subscribe_topic(topic, handle)
        return self.register_plugin(plugin, name=topic)

    def unforward_logging(self, logger_name: str | None = None):
        """Stop ``forward_logging(logger_name)``."""
        topic = forward_topic(logger_name)
        self.unsubscribe_topic(topic)
        return self.unregister_worker_plugin(topic)

    # -- story, call stacks, profile ------------------------------------------

    def story(self, *keys_or_stimuli, on_error: str = "raise", asynchronous=None):
        """Everything recorded about ``keys`` (futures or keys): the
        scheduler's rows ``("scheduler", key, start, finish)`` then each
        worker's rows ``(worker, key, ...)``.  ``on_error="ignore"`` skips
        workers that cannot answer (they are always skipped here; the
        keyword is accepted for compatibility and checked).

        >>> client.story(future)[0]            # doctest: +SKIP
        ('scheduler', 'inc-abc', 'released', 'waiting')
        """
        if on_error not in ("raise", "ignore"):
            raise ValueError(f"on_error must be 'raise' or 'ignore', not {on_error!r}")
        keys = _keys_of(keys_or_stimuli)
        return self.sync(self._story, keys, asynchronous=asynchronous)

    async def _story(self, keys):
        return [tuple(r) for r in await self.scheduler.get_story(keys=keys)]

    def call_stack(self, futures=None, keys=None, asynchronous=None):
        """The stacks of tasks running now: ``{worker: {key: [lines]}}``,
        for all running tasks, or those of ``futures``/``keys``.

        >>> client.call_stack(future)          # doctest: +SKIP
        {'tcp://127.0.0.1:40575': {'slow-abc': ['  File "...", line 3, in slow\\n    time.sleep(10)\\n']}}
        """
        wanted = None
        if futures is not None or keys is not None:
            wanted = [f.key for f in futures_of(futures)] if futures is not None else []
            wanted += list(keys or ())
        return self.sync(self._call_stack, wanted, asynchronous=asynchronous)

    async def _call_stack(self, keys=None):
        reply = await self.scheduler.call_stack(keys=keys)
        return {w: {k: list(lines) for k, lines in stacks.items()} for w, stacks in reply.items()}

    def profile(self, key=None, start=None, stop=None, workers=None, merge_workers: bool = True,
                plot=False, filename=None, server: bool = False, scheduler: bool = False,
                asynchronous=None):
        """The statistical profile of the workers' tasks (sampled every
        ``distributed.worker.profile.interval`` off the event loop), as a
        call tree ``{"count", "children", "identifier", "description"}``;
        ``merge_workers=False`` gives ``{worker: tree}``.  ``key``: only
        tasks of that key's prefix; ``start``/``stop``: a time range
        (epoch seconds or durations ago like ``"30s"``); ``server``: the
        workers' event loops; ``scheduler``: the scheduler's event loop.
        ``plot``/``filename`` are refused (they would need bokeh): the
        flame graph of this tree is on the dashboard's /profile page (its
        data, trimmed, at ``/json/profile.json``) and in the "Worker
        Profile" and "Scheduler Profile" tabs of ``performance_report``.

        >>> client.profile()["count"]          # doctest: +SKIP
        1532
        """
        if plot or filename is not None:
            raise ValueError("profile(plot=..., filename=...) would need bokeh, which this distributed "
                             "does not use: see the dashboard's /profile page or performance_report(); "
                             "call with plot=False for the call tree")
        from distributed.client.data import _worker_list

        now = time.time()
        return self.sync(self._profile, key, _parse_time(start, now), _parse_time(stop, now),
                         _worker_list(workers), merge_workers, server, scheduler,
                         asynchronous=asynchronous)

    async def _profile(self, key=None, start=None, stop=None, workers=None, merge_workers=True,
                       server=False, scheduler=False):
        return await self.scheduler.profile(key=key, start=start, stop=stop, workers=workers,
                                            merge_workers=merge_workers, server=server,
                                            scheduler=scheduler)

    # -- cluster dump ------------------------------------------------------------

    def dump_cluster_state(self, filename: str = "dask-cluster-dump", write_from_scheduler=None,
                           exclude=(), format: str = "msgpack", **storage_options):
        """Write what the scheduler and every worker know to
        ``<filename>.msgpack.gz`` (or ``.yaml`` with ``format="yaml"``, which
        needs pyyaml); returns the path.  ``exclude``: task fields to leave
        out.  ``write_from_scheduler=True`` has the scheduler write the file
        on its own filesystem.  ``storage_options`` (fsspec) are refused:
        only local paths are written.

        >>> client.dump_cluster_state("dump")   # doctest: +SKIP
        'dump.msgpack.gz'
        """
        if storage_options:
            raise ValueError(f"dump_cluster_state writes local files only; storage options "
                             f"{sorted(storage_options)} cannot be honoured")
        if format not in cluster_dump.FORMATS:
            raise ValueError(f"format must be one of {cluster_dump.FORMATS}, not {format!r}")
        if format == "yaml":
            try:
                import yaml  # noqa: F401
            except ImportError:
                raise ImportError("dump_cluster_state(format='yaml') needs pyyaml: pip install pyyaml, "
                                  "or use format='msgpack'") from None
        return self.sync(self._dump_cluster_state, filename, write_from_scheduler, tuple(exclude), format)

    async def _dump_cluster_state(self, filename="dask-cluster-dump", write_from_scheduler=None,
                                  exclude=(), format="msgpack"):
        if write_from_scheduler:
            return await self.scheduler.dump_cluster_state(exclude=list(exclude), filename=filename,
                                                           format=format)
        state = await self.scheduler.dump_cluster_state(exclude=list(exclude))
        return cluster_dump.write_state(state, filename, format)

    # -- why ---------------------------------------------------------------------

    def why(self, *futures_or_keys, asynchronous=None):
        """Why unfinished work is not done, by root cause: a ``StallReport``
        (a list of ``{"reason", "root", "message", "keys", "n_keys", ...}``,
        most urgent first, with ``.eta``).  Reasons: ``no-workers``,
        ``no-worker-resource``, ``no-worker-restriction``,
        ``waiting-on-lost-worker``, ``all-workers-paused``,
        ``upstream-erred``, ``long-running-outlier``, ``queued-saturated``,
        ``running``.  Without arguments: every key this cluster's clients
        hold.

        >>> print(client.why(future))          # doctest: +SKIP
        [no-worker-resource] needs GPU=1; no worker has enough GPU (worker resources: none) ...
        """
        keys = _keys_of(futures_or_keys) if futures_or_keys else None
        return self.sync(self._why, keys, asynchronous=asynchronous)

    def eta(self, *futures_or_keys, asynchronous=None):
        """Estimated seconds until ``futures`` (default: all wanted work)
        finish: ``{"eta", "critical_path", "work", "nthreads", "path",
        "bottleneck"}`` (see ``distributed.diagnostics.why.eta``).

        >>> client.eta(future)["eta"]            # doctest: +SKIP
        12.5
        """
        keys = _keys_of(futures_or_keys) if futures_or_keys else None
        return self.sync(self._eta, keys, asynchronous=asynchronous)

    async def _eta(self, keys=None):
        out = dict(await self.scheduler.eta(keys=keys))
        out["path"] = list(out.get("path") or ())
        return out

    async def _why(self, keys=None):
        reply = await self.scheduler.why(keys=keys)
        explanations = []
        for e in reply["explanations"]:
            e = dict(e)
            # The wire gives tuples for lists; the keys inside stay as they are.
            e["keys"], e["roots"] = list(e["keys"]), list(e["roots"])
            e["detail"] = {k: list(v) if isinstance(v, tuple) else v for k, v in e["detail"].items()}
            explanations.append(e)
        eta = dict(reply["eta"])
        eta["path"] = list(eta.get("path") or ())
        return StallReport(explanations, eta)
