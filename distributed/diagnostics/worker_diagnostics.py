"""The worker's side of the client diagnostics: logs, profile, call stacks,
story, and what is running since when.

``WorkerDiagnostics(worker)`` adds its handlers to ``worker.handlers``;
the worker calls ``start()`` once it runs (the log handler attaches, the
profiler thread starts) and ``close()`` when it closes (both go).  The
worker keeps ``active_threads`` (thread ident -> key of the task it runs)
and ``executing_since`` (key -> start time) up to date; the profiler reads a
copy of the first from its own thread.

Handlers (one request, one reply):

* ``get_logs(n=None)``: ``[(level, message)]``, newest first;
* ``profile(start=None, stop=None, key=None, server=False)``: a call tree;
* ``profile_metadata(start=None, stop=None)``: sample counts per cycle;
* ``call_stack(keys=None)``: ``{key: [lines]}`` of the tasks running now;
* ``get_story(keys=())``: this worker's story rows of ``keys``;
* ``executing_since()``: ``{key: start time}`` of the tasks running now;
* ``dump_state(exclude=())``: this worker's state as plain data.

>>> WorkerDiagnostics.HANDLERS[0]
'get_logs'
"""
from __future__ import annotations

import logging
import os
import sys
import threading
from typing import Any

from distributed import config
from distributed.diagnostics import logs, profile

__all__ = ["WorkerDiagnostics", "omit_machinery"]

logger = logging.getLogger(__name__)

_HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Frames of these files run a task; a profile starts below them.
_MACHINERY = tuple(os.path.join(_HERE, *p) for p in (
    ("threadpool.py",), ("worker", "server.py"), ("spec.py",), ("dask_graphs.py",)))


def omit_machinery(frame: Any) -> bool:
    """Whether ``frame`` belongs to the code that runs a task (not the task).

    >>> omit_machinery(sys._getframe())
    False
    """
    return frame.f_code.co_filename.startswith(_MACHINERY)


class WorkerDiagnostics:
    """See the module docstring."""

    HANDLERS = ("get_logs", "profile", "profile_metadata", "call_stack", "get_story",
                "executing_since", "dump_state")

    def __init__(self, worker: Any):
        self.worker = worker
        self.log_handler: logs.DequeHandler | None = None
        self.sampler: profile.Sampler | None = None
        worker.handlers.update({name: getattr(self, name) for name in self.HANDLERS})

    def start(self) -> None:
        """Attach the log handler and start the profiler (on the worker's loop)."""
        if self.log_handler is None:
            self.log_handler = logs.attach_log_handler()
        if self.sampler is None and config.get("distributed.worker.profile.enabled", True):
            active = self.worker.active_threads
            self.sampler = profile.Sampler(
                lambda: dict(active), loop_thread=threading.get_ident(), omit=omit_machinery,
                name=f"Dask-Profile-{self.worker.address}")
            self.sampler.start()

    def close(self) -> None:
        """Stop the profiler, detach the log handler (idempotent)."""
        if self.sampler is not None:
            self.sampler.stop()
        logs.detach_log_handler(self.log_handler)
        self.log_handler = None

    # -- handlers ----------------------------------------------------------

    def get_logs(self, comm=None, n: int | None = None, **kwargs) -> list:
        return logs.get_logs(self.log_handler, n)

    def profile(self, comm=None, start: float | None = None, stop: float | None = None,
                key: Any = None, server: bool = False, **kwargs) -> dict:
        if self.sampler is None:
            return profile.create()
        return self.sampler.get_profile(start=start, stop=stop, key=key, server=server)

    def profile_metadata(self, comm=None, **kwargs) -> dict:
        if self.sampler is None:
            return {"counts": [], "keys": {}}
        return self.sampler.metadata()

    def call_stack(self, comm=None, keys=None, **kwargs) -> dict:
        wanted = None if keys is None else set(keys)
        frames = sys._current_frames()
        out = {}
        for ident, key in list(self.worker.active_threads.items()):
            if wanted is not None and key not in wanted:
                continue
            frame = frames.get(ident)
            if frame is not None:
                out[key] = profile.call_stack(frame, omit_machinery)
        del frames
        return out

    def get_story(self, comm=None, keys=(), **kwargs) -> list:
        return [list(entry) for entry in self.worker.state.story(*keys)]

    def executing_since(self, comm=None, **kwargs) -> dict:
        return dict(self.worker.executing_since)

    def dump_state(self, comm=None, exclude=(), **kwargs) -> dict:
        from distributed.diagnostics.cluster_dump import worker_state_dict

        return worker_state_dict(self.worker, exclude)
