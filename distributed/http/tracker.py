"""Incremental per-prefix aggregates of the scheduler's tasks, for the dashboard.

The dashboard and ``/metrics`` must not loop over every task on each request
(a 1M-task graph would stall the event loop at every scrape).  A
``PrefixTracker`` is a scheduler plugin fed by the transition hook: it keeps,
per task prefix, how many tasks are in each state, cumulative transition
counts, compute seconds and output bytes, and a bounded ring of finished
tasks (the task stream).  Reading it costs O(prefixes), not O(tasks).

Tasks are born ``released`` without a transition (``update_graph``) and
scattered data goes straight to ``memory`` (``update_data``); so the tracker
counts the non-released states from transitions, the task total per prefix
from the state's observer hooks (``scheduler/observer.py``:
``tasks_created``, ``task_stored``), and derives ``released`` as the
difference.  The same hooks count workers and clients joining and leaving.
It is not a registered scheduler plugin: any registered plugin makes the
scheduler build per-graph arguments for plugin hooks, a cost the dashboard
should not add; it sits on ``SchedulerState.plugins`` (transitions) and
``SchedulerState.observers`` directly.

Runs on the scheduler's event loop; not thread-safe.
"""
from __future__ import annotations

import time
from collections import deque
from typing import Any

from distributed.scheduler.observer import StateObserver

__all__ = ["PrefixTracker", "TRACKED_STATES"]

#: States counted per prefix; ``released`` is derived (see the module docstring).
TRACKED_STATES = ("waiting", "no-worker", "queued", "processing", "memory", "erred")
_ACTIVE = frozenset(("waiting", "no-worker", "queued", "processing"))


class PrefixStats:
    """What the tracker knows of one task prefix."""

    __slots__ = ("name", "ntasks", "states", "entered", "compute_seconds", "nbytes", "durations_n")

    def __init__(self, name: str):
        self.name = name
        self.ntasks = 0  # tasks of this prefix the scheduler holds now
        self.states: dict[str, int] = dict.fromkeys(TRACKED_STATES, 0)
        self.entered: dict[str, int] = {}  # transitions into each state, ever
        self.compute_seconds = 0.0
        self.nbytes = 0  # output bytes of this prefix's tasks in memory
        self.durations_n = 0

    def counts(self) -> dict[str, int]:
        """Current state counts, ``released`` included.

        >>> p = PrefixStats("inc"); p.ntasks = 3; p.states["memory"] = 1
        >>> p.counts()["released"], p.counts()["memory"]
        (2, 1)
        """
        out = dict(self.states)
        out["released"] = max(0, self.ntasks - sum(self.states.values()))
        return out


class PrefixTracker(StateObserver):
    """Per-prefix task counts and the task stream, kept up to date by hooks.

    >>> from distributed.scheduler.state import SchedulerState
    >>> state = SchedulerState()
    >>> tracker = PrefixTracker(state)
    >>> tracker.totals()["released"]
    0
    """

    name = "dashboard-tracker"

    def __init__(self, state: Any, stream_length: int = 20000):
        self.state = state
        self.prefixes: dict[str, PrefixStats] = {}
        self.stream: deque = deque(maxlen=stream_length)
        self.stream_index = 0  # index of the next task-stream record
        self.forgotten_total = 0
        # Worker deaths blamed on tasks, per prefix (no feed yet: always empty).
        self.suspicious: dict[str, int] = {}
        self.workers_added = 0
        self.workers_removed = 0
        self.clients_added = 0
        self.clients_removed = 0
        self._installed = False
        self.active = 0  # tasks waiting, queued or processing
        self.idle_since: float | None = time.time()
        self._seed()

    # -- installation --------------------------------------------------

    def _seed(self) -> None:
        """Count the tasks that exist already (once, when installed)."""
        for ts in self.state.tasks.values():
            p = self._prefix(ts.prefix)
            p.ntasks += 1
            if ts.state in p.states:
                p.states[ts.state] += 1
            if ts.state in _ACTIVE:
                self.active += 1
                self.idle_since = None
            if ts.state == "memory" and ts.nbytes > 0:
                p.nbytes += ts.nbytes

    def install(self) -> None:
        """Hook the state machine: its transitions (``plugins``) and the
        changes that are not transitions (``observers``)."""
        if self._installed:
            return
        self._installed = True
        self.state.plugins.append(self)
        self.state.observers.append(self)

    def uninstall(self) -> None:
        """Undo ``install``."""
        if not self._installed:
            return
        self._installed = False
        for hooks in (self.state.plugins, self.state.observers):
            if self in hooks:
                hooks.remove(self)

    # -- hooks ---------------------------------------------------------

    def _prefix(self, name: str) -> PrefixStats:
        p = self.prefixes.get(name)
        if p is None:
            p = self.prefixes[name] = PrefixStats(name)
        return p

    # StateObserver: the changes that are not transitions.

    def tasks_created(self, tasks: list) -> None:
        prefixes = self.prefixes
        for ts in tasks:
            p = prefixes.get(ts.prefix)
            if p is None:
                p = self._prefix(ts.prefix)
            p.ntasks += 1

    def task_stored(self, ts: Any) -> None:
        # Scattered data: ``memory`` straight from ``released`` (a task in
        # another state was moved to released first, by a transition).
        p = self._prefix(ts.prefix)
        p.states["memory"] += 1
        p.entered["memory"] = p.entered.get("memory", 0) + 1
        if ts.nbytes > 0:
            p.nbytes += ts.nbytes

    def worker_added(self, ws: Any) -> None:
        self.workers_added += 1

    def worker_removed(self, ws: Any) -> None:
        self.workers_removed += 1

    def client_added(self, cs: Any) -> None:
        self.clients_added += 1

    def client_removed(self, cs: Any) -> None:
        self.clients_removed += 1

    def transition(self, key, start: str, finish: str, **kwargs) -> None:
        # Called for every transition of every task: keep it to dict updates.
        ts = self.state.tasks.get(key)
        if ts is None:
            return
        p = self.prefixes.get(ts.prefix)
        if p is None:
            p = self._prefix(ts.prefix)
        states = p.states
        if start in states:
            states[start] -= 1
            if start == "memory" and ts.nbytes > 0:
                p.nbytes -= ts.nbytes
        if finish in states:
            states[finish] += 1
        entered = p.entered
        entered[finish] = entered.get(finish, 0) + 1
        if start in _ACTIVE:
            if finish not in _ACTIVE:
                self.active -= 1
                if not self.active:
                    self.idle_since = time.time()
        elif finish in _ACTIVE:
            self.active += 1
            self.idle_since = None
        if finish == "memory":
            if ts.nbytes > 0:
                p.nbytes += ts.nbytes
            duration = kwargs.get("duration")
            if duration is not None and start == "processing":
                p.compute_seconds += duration
                p.durations_n += 1
                now = time.time()
                self.stream.append((self.stream_index, ts.key, ts.prefix, kwargs.get("worker"),
                                    now - duration, now, "OK"))
                self.stream_index += 1
        elif finish == "forgotten":
            p.ntasks -= 1
            self.forgotten_total += 1
        elif finish == "erred" and start == "processing":
            now = time.time()
            self.stream.append((self.stream_index, ts.key, ts.prefix, kwargs.get("worker"), now, now, "error"))
            self.stream_index += 1

    # -- reading -------------------------------------------------------

    def totals(self) -> dict[str, int]:
        """State counts over all prefixes (``released`` included).

        O(prefixes); the total is ``len(state.tasks)``.
        """
        out = dict.fromkeys(TRACKED_STATES, 0)
        for p in self.prefixes.values():
            for s, n in p.states.items():
                out[s] += n
        out["released"] = max(0, len(self.state.tasks) - sum(out.values()))
        return out

    def groups(self) -> list[dict]:
        """One row per prefix that holds tasks now, in first-seen order."""
        rows = []
        for p in self.prefixes.values():
            if p.ntasks <= 0:
                continue
            c = p.counts()
            rows.append({
                "name": p.name,
                "total": p.ntasks,
                **c,
                "compute_seconds": p.compute_seconds,
                "nbytes": p.nbytes,
                "mean_duration": p.compute_seconds / p.durations_n if p.durations_n else None,
            })
        return rows

    def stream_rows(self, after: int = -1, limit: int = 1000) -> list[list]:
        """The newest task-stream records with ``index > after``, at most
        ``limit`` (oldest first), as compact rows for the event stream:
        ``[index, key, prefix, worker, start_ms, stop_ms, status]``."""
        if not self.stream:
            return []
        first = self.stream[0][0]
        start = max(0, after + 1 - first, len(self.stream) - max(0, limit))
        stream = self.stream
        # Times as integer milliseconds: cheaper to make and to encode than floats.
        return [[idx, key if type(key) is str else _key_text(key), prefix, worker, int(t0 * 1000),
                 int(t1 * 1000), status]
                for idx, key, prefix, worker, t0, t1, status in (stream[i] for i in range(start, len(stream)))]

    def stream_after(self, after: int = -1, limit: int = 1000) -> list[dict]:
        """Task-stream records with ``index > after`` (oldest first), at most ``limit``."""
        if not self.stream:
            return []
        first = self.stream[0][0]
        start = max(0, after + 1 - first)
        out = []
        for i in range(start, min(len(self.stream), start + max(0, limit))):
            idx, key, prefix, worker, t0, t1, status = self.stream[i]
            out.append({"index": idx, "key": _key_text(key), "prefix": prefix, "worker": worker,
                        "status": status, "startstops": [{"action": "compute", "start": t0, "stop": t1}]})
        return out


def _key_text(key) -> str:
    """A key as text for JSON (tuples and bytes keys included).

    >>> _key_text(("x", 1))
    "('x', 1)"
    """
    if isinstance(key, str):
        return key
    if isinstance(key, bytes):
        return key.decode(errors="replace")
    return str(key)
