"""The scheduler's side of the client diagnostics.

``DiagnosticsExtension`` is loaded by the scheduler as the extension
``"diagnostics"`` (registry in ``distributed/scheduler/extensions.py``).
It keeps

* the task stream (``TaskStreamPlugin``), fed by wrapping the scheduler's
  ``task-finished`` and ``task-erred`` stream handlers: recording costs one
  dict and one deque append per task, and nothing per transition;
* the scheduler's log records (``distributed.admin.log-length``);
* a profiler of the scheduler's event loop (``profile(scheduler=True)``),

and answers the client's diagnostics requests, asking the workers where
needed (logs, profiles, call stacks, stories, start times of running tasks).

Handlers: ``task_stream_index``, ``get_task_stream``, ``get_logs``,
``worker_logs``, ``get_story``, ``why``, ``stalled_counts``, ``eta``,
``profile``, ``call_stack``, ``dump_cluster_state``,
``performance_report_data``.

For the dashboard: ``scheduler.extensions["diagnostics"].stalled_counts()``
gives ``{reason: count}`` with every piece of context the scheduler has
(``distributed.diagnostics.why.stalled_counts`` over the state alone also works).

Everything here runs on the scheduler's event loop.

>>> DiagnosticsExtension.__name__   # built by the scheduler: Cls(scheduler)
'DiagnosticsExtension'
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

from distributed import config
from distributed.diagnostics import logs, profile, why
from distributed.diagnostics.task_stream import TaskStreamPlugin, summarize
from distributed.utils import key_split

__all__ = ["DiagnosticsExtension"]

logger = logging.getLogger(__name__)

# Requests to workers give up after this long (seconds) and name the worker.
_WORKER_TIMEOUT = 30.0
# Recent records used for each prefix's typical duration in ``why``.
_TYPICAL_SAMPLES = 200


def _why_setting(name: str, default: float) -> float:
    key = f"distributed.diagnostics.why.{name}"
    value = config.get(key, None)
    if value is None:
        return default
    seconds = config.parse_timedelta(value) if name != "outlier-factor" else float(value)
    if seconds is None or seconds <= 0:
        raise ValueError(f"configuration {key!r} must be positive, not {value!r}")
    return seconds


class DiagnosticsExtension:
    """See the module docstring."""

    def __init__(self, scheduler: Any):
        self.scheduler = scheduler
        self.task_stream = TaskStreamPlugin(scheduler)
        self.log_handler = logs.attach_log_handler()
        self.sampler: profile.Sampler | None = None
        self._running: dict = {}  # key -> start time, as last asked of the workers
        self._closed = False
        handlers = scheduler.stream_handlers
        self._on_finished = handlers.get("task-finished")
        self._on_erred = handlers.get("task-erred")
        if self._on_finished is not None:
            handlers["task-finished"] = self._task_finished
        if self._on_erred is not None:
            handlers["task-erred"] = self._task_erred
        # The loop profiler starts with the first worker (the scheduler runs
        # by then, on its loop's thread): a Scheduler built and never started
        # leaves no thread behind.
        self._on_register = scheduler.handlers.get("register-worker")
        if self._on_register is not None:
            scheduler.handlers["register-worker"] = self._register_worker
        scheduler.handlers.update({
            "task_stream_index": self.task_stream_index,
            "get_task_stream": self.get_task_stream,
            "get_logs": self.get_logs,
            "worker_logs": self.worker_logs,
            "get_story": self.get_story,
            "why": self.why,
            "stalled_counts": self._stalled_counts_handler,
            "eta": self.eta,
            "profile": self.profile,
            "call_stack": self.call_stack,
            "dump_cluster_state": self.dump_cluster_state,
            "performance_report_data": self.performance_report_data,
        })

    def _register_worker(self, *args: Any, **kwargs: Any) -> Any:
        self._ensure_sampler()
        return self._on_register(*args, **kwargs)

    # -- recording -----------------------------------------------------------

    def _accepted(self, key: Any, worker: Any) -> bool:
        """Whether the scheduler takes this result: the task processes there."""
        ts = self.scheduler.state.tasks.get(key)
        if ts is None or ts.state != "processing":
            return False
        ws = ts.processing_on
        return ws is not None and ws.address == worker

    def _task_finished(self, **msg: Any) -> None:
        accepted = self._accepted(msg.get("key"), msg.get("worker"))
        self._on_finished(**msg)
        if accepted:
            self.task_stream.record(msg, "OK")

    def _task_erred(self, **msg: Any) -> None:
        accepted = self._accepted(msg.get("key"), msg.get("worker"))
        self._on_erred(**msg)
        if accepted:
            self.task_stream.record(msg, "error")

    def _ensure_sampler(self) -> None:
        """Profile the event loop once we know its thread (we are on it)."""
        if self.sampler is not None or self._closed:
            return
        if not config.get("distributed.worker.profile.enabled", True):
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # built outside the loop: started by the first request
        self.sampler = profile.Sampler(dict, loop_thread=threading.get_ident(),
                                       name="Dask-Profile-scheduler")
        self.sampler.start()

    def close(self) -> None:
        """The scheduler closes: stop the profiler, detach the log handler,
        give back the stream handlers."""
        self._closed = True
        if self.sampler is not None:
            self.sampler.stop()
        logs.detach_log_handler(self.log_handler)
        handlers = self.scheduler.stream_handlers
        if handlers.get("task-finished") == self._task_finished:
            handlers["task-finished"] = self._on_finished
        if handlers.get("task-erred") == self._task_erred:
            handlers["task-erred"] = self._on_erred
        if self.scheduler.handlers.get("register-worker") == self._register_worker:
            self.scheduler.handlers["register-worker"] = self._on_register

    # -- task stream ---------------------------------------------------------

    def task_stream_index(self, comm=None, **kwargs) -> int:
        """How many records were ever added (a reader's bookmark)."""
        self._ensure_sampler()
        return self.task_stream.index

    def get_task_stream(self, comm=None, start=None, stop=None, count=None, since=None,
                        **kwargs) -> list:
        """Records by time window, count, or after a bookmark (``since``)."""
        self._ensure_sampler()
        if since is not None:
            return self.task_stream.since(since)
        return self.task_stream.collect(start=start, stop=stop, count=count)

    # -- logs ----------------------------------------------------------------

    def get_logs(self, comm=None, n: int | None = None, **kwargs) -> list:
        """The scheduler's recent log records, newest first."""
        return logs.get_logs(self.log_handler, n)

    async def worker_logs(self, comm=None, n: int | None = None, workers=None, nanny: bool = False,
                          **kwargs) -> dict:
        """Each worker's (or nanny's) recent log records."""
        if nanny:
            return await self._ask_nannies({"op": "get_logs", "n": n}, workers)
        return await self._ask_workers({"op": "get_logs", "n": n}, workers)

    # -- stories, why, eta -----------------------------------------------------

    async def get_story(self, comm=None, keys=(), **kwargs) -> list:
        """Scheduler rows ``("scheduler", key, start, finish)`` then each
        worker's rows ``(worker, *entry)``."""
        keys = list(keys)
        rows = [("scheduler", *row) for row in self.scheduler.state.story(*keys)]
        replies = await self._ask_workers({"op": "get_story", "keys": keys}, None, strict=False)
        for worker, story in sorted(replies.items()):
            if isinstance(story, list):
                rows.extend((worker, *entry) for entry in story)
        return rows

    def _departed(self) -> dict:
        out = {}
        try:
            events = self.scheduler.get_events("all")
        except Exception:
            return out
        for t, msg in events:
            if isinstance(msg, dict) and msg.get("action") == "remove-worker":
                out[msg.get("worker")] = t
            elif isinstance(msg, dict) and msg.get("action") == "add-worker":
                out.pop(msg.get("worker"), None)
        return out

    def _typical(self) -> dict:
        samples: dict[str, list] = {}
        for rec in reversed(self.task_stream.buffer):
            prefix = key_split(rec.get("key"))
            got = samples.setdefault(prefix, [])
            if len(got) >= _TYPICAL_SAMPLES:
                continue
            for ss in rec.get("startstops") or ():
                if ss.get("action") == "compute":
                    got.append(ss["stop"] - ss["start"])
        typical = dict(self.scheduler.state.durations)
        typical.update(why.typical_durations(samples))
        return typical

    async def _refresh_running(self) -> dict:
        """Start times of the tasks running on the workers (asked now)."""
        busy = [a for a, ws in self.scheduler.state.workers.items() if ws.processing]
        replies = await self._ask_workers({"op": "executing_since"}, busy, strict=False) if busy else {}
        running: dict = {}
        for reply in replies.values():
            if isinstance(reply, dict) and "status" not in reply:
                running.update(reply)
        self._running = running
        return running

    def _why_kwargs(self, running: dict) -> dict:
        return {"now": time.time(), "running": running, "departed": self._departed(),
                "outlier_factor": _why_setting("outlier-factor", why.DEFAULT_OUTLIER_FACTOR),
                "outlier_min_seconds": _why_setting("outlier-min-duration",
                                                    why.DEFAULT_OUTLIER_MIN_SECONDS),
                "stale_after": _why_setting("stale-after", why.DEFAULT_STALE_AFTER)}

    async def why(self, comm=None, keys=None, **kwargs) -> dict:
        """``{"explanations": why.explain(...), "eta": why.eta(...)}`` for
        ``keys`` (default: every key a client wants)."""
        state = self.scheduler.state
        if keys is None:
            keys = [ts.key for cs in state.clients.values() for ts in cs.wants_what]
        keys = list(keys)
        running = await self._refresh_running()
        kw = self._why_kwargs(running)
        explanations = why.explain(state, keys, typical=self._typical(), **kw)
        known = [k for k in keys if k in state.tasks]
        estimate = why.eta(state, known, now=kw["now"], running=running)
        return {"explanations": explanations, "eta": estimate}

    def stalled_counts(self) -> dict:
        """``{reason: count}`` (``why.STALL_REASONS``) with the context the
        scheduler has now: start times from the last ``why``, departed
        workers, failed tasks from the ``"task-erred"`` topic.  Cheap: for
        the dashboard's gauge."""
        try:
            erred = [msg.get("key") for _, msg in self.scheduler.get_events("task-erred")
                     if isinstance(msg, dict)]
        except Exception:
            erred = []
        return why.stalled_counts(self.scheduler.state, erred=erred, **self._why_kwargs(self._running))

    def _stalled_counts_handler(self, comm=None, **kwargs) -> dict:
        return self.stalled_counts()

    def eta(self, comm=None, keys=None, **kwargs) -> dict:
        """``why.eta`` of ``keys`` (default all wanted work)."""
        return why.eta(self.scheduler.state, keys, now=time.time(), running=self._running)

    # -- profile and call stacks ----------------------------------------------

    async def profile(self, comm=None, start=None, stop=None, key=None, workers=None,
                      merge_workers: bool = True, server: bool = False, scheduler: bool = False,
                      **kwargs) -> Any:
        """A call tree: of the workers' tasks (merged, or ``{worker: tree}``),
        of their event loops (``server``), or of the scheduler's loop."""
        self._ensure_sampler()
        if scheduler:
            if self.sampler is None:
                return profile.create()
            return self.sampler.get_profile(start=start, stop=stop, server=True)
        msg = {"op": "profile", "start": start, "stop": stop, "key": key, "server": server}
        replies = await self._ask_workers(msg, workers)
        trees = {w: r for w, r in replies.items() if isinstance(r, dict) and "count" in r}
        if merge_workers:
            return profile.merge(*trees.values())
        return trees

    async def call_stack(self, comm=None, keys=None, **kwargs) -> dict:
        """``{worker: {key: [lines]}}`` of the tasks running now (of
        ``keys`` when given), only workers with any."""
        state = self.scheduler.state
        if keys is None:
            workers = [a for a, ws in state.workers.items() if ws.processing]
        else:
            keys = list(keys)
            workers = sorted({ts.processing_on.address for k in keys
                              if (ts := state.tasks.get(k)) is not None and ts.processing_on is not None})
        if not workers:
            return {}
        replies = await self._ask_workers({"op": "call_stack", "keys": keys}, workers, strict=False)
        return {w: r for w, r in replies.items() if isinstance(r, dict) and r and "status" not in r}

    # -- cluster dump ----------------------------------------------------------

    async def dump_cluster_state(self, comm=None, exclude=(), filename: str | None = None,
                                 format: str = "msgpack", **kwargs) -> dict | str:
        """Everything the scheduler and the workers know, as plain data:
        ``{"scheduler", "workers", "versions"}``; task fields named in
        ``exclude`` are left out.  With ``filename``, the scheduler writes
        it (``cluster_dump.write_state``) and returns the path."""
        from distributed.diagnostics.cluster_dump import scheduler_state_dict, write_state

        if filename is not None:
            state = await self.dump_cluster_state(exclude=exclude)
            return write_state(state, filename, format)

        exclude = set(exclude or ())
        state = scheduler_state_dict(self.scheduler, exclude)
        replies = await self._ask_workers({"op": "dump_state", "exclude": sorted(exclude)}, None,
                                          strict=False)
        versions = await self._ask_workers({"op": "versions"}, None, strict=False)
        return {"scheduler": state, "workers": replies,
                "versions": {"scheduler": self.scheduler.versions(), "workers": versions}}

    # -- performance report ----------------------------------------------------

    async def performance_report_data(self, comm=None, start: float | None = None,
                                      since: int | None = None, **kwargs) -> dict:
        """What a performance report needs for the work since ``start``
        (time) and ``since`` (task stream bookmark)."""
        now = time.time()
        records = self.task_stream.since(since) if since is not None else self.task_stream.collect(start=start)
        state = self.scheduler.state
        workers = [{"address": ws.address, "name": str(ws.name), "nthreads": ws.nthreads,
                    "memory_limit": ws.memory_limit, "status": ws.status}
                   for ws in state.workers.values()]
        tree = await self.profile(start=start, stop=None)
        loop_tree = self.sampler.get_profile(start=start, server=True) if self.sampler else profile.create()
        return {"start": start, "stop": now, "records": records, "summary": summarize(records),
                "workers": workers, "nthreads": sum(w["nthreads"] for w in workers),
                "profile": tree, "scheduler_profile": loop_tree,
                "logs": logs.get_logs(self.log_handler, 200),
                "scheduler": self.scheduler.address}

    # -- asking workers --------------------------------------------------------

    async def _ask_workers(self, msg: dict, workers, strict: bool = True) -> dict:
        """``{address: reply}`` of each worker (all when ``workers`` is
        None); a worker that fails or does not answer in time gets an error
        reply naming it, unless ``strict`` is False (then it is left out)."""
        if workers is None:
            addresses = list(self.scheduler.state.workers)
        else:
            addresses = self.scheduler._resolve_workers(workers)
        msg = dict(msg)
        op = msg.pop("op")

        async def one(addr: str) -> Any:
            try:
                return await asyncio.wait_for(getattr(self.scheduler.rpc(addr), op)(**msg),
                                              _WORKER_TIMEOUT)
            except asyncio.TimeoutError:
                return {"status": "error",
                        "exception_text": f"worker {addr} did not answer {op!r} within {_WORKER_TIMEOUT:.0f}s"}
            except Exception as e:
                return {"status": "error", "exception_text": f"worker {addr}: {op!r} failed: {e!r}"}

        replies = await asyncio.gather(*(one(a) for a in addresses))
        out = dict(zip(addresses, replies))
        if not strict:
            out = {a: r for a, r in out.items() if not (isinstance(r, dict) and r.get("status") == "error")}
        return out

    async def _ask_nannies(self, msg: dict, workers) -> dict:
        addresses = list(self.scheduler.state.workers) if workers is None \
            else self.scheduler._resolve_workers(workers)
        nannies = {a: self.scheduler.state.workers[a].nanny for a in addresses
                   if a in self.scheduler.state.workers}
        missing = [a for a, n in nannies.items() if not n]
        if missing:
            raise ValueError(f"get_worker_logs(nanny=True): workers {missing} have no nanny")
        msg = dict(msg)
        op = msg.pop("op")
        replies = await asyncio.gather(*(getattr(self.scheduler.rpc(n), op)(**msg)
                                         for n in nannies.values()), return_exceptions=True)
        out = {}
        for nanny, reply in zip(nannies.values(), replies):
            if isinstance(reply, BaseException):
                raise ValueError(f"get_worker_logs(nanny=True): nanny {nanny} cannot send its logs "
                                 f"({reply!r})") from reply
            out[nanny] = reply
        return out
