"""SchedulerState: the scheduler's bookkeeping as a pure state machine.

Rules of this file
------------------
Everything that decides what a task does lives here, and nothing here does
I/O: no sockets, no coroutines, no clocks (the time is an argument where it
matters).  Each event is a method (``update_graph``, ``handle_task_finished``,
``remove_worker`` ...) that changes the state and returns the messages to
send, as ``(client_msgs, worker_msgs)``: dicts mapping a client id or a
worker address to a list of message dicts.  The ``Scheduler`` server in
``server.py`` is a thin shell that feeds events in and sends what comes out.

Theory of operation
-------------------
Task states::

                 +----------------------------------------------+
                 v                                              |
    released -> waiting -> queued -> processing -> memory ---> released
       |           |          |          |    \\                  |
       |           +-> no-worker ---------+     +-> erred          v
       +----------------------------------------------------> forgotten

* ``released``: known, not in memory, not wanted yet (or no longer).  Its
  ``run_spec`` is kept so it can be recomputed from its dependencies.
* ``waiting``: wanted; waits for dependencies in ``waiting_on``.
* ``queued``: runnable root task held back because every worker is
  saturated; taken in priority order as slots free up.
* ``no-worker``: runnable but no worker may run it (none connected, or
  restrictions match none).
* ``processing``: assigned to ``processing_on``.
* ``memory``: held by the workers in ``who_has``.
* ``erred``: failed; ``exception_blame`` is the task whose error it carries.
* ``forgotten``: dropped from ``tasks``.

Every change goes through ``transition(key, finish)`` which looks up
``(start, finish)`` in a table; a pair not in the table goes through
``released``.  Transitions return *recommendations* (more transitions),
which ``transitions()`` applies until none are left.

A key is needed while a client wants it (``who_wants``) or a task that has
not finished depends on it (``waiters``).  When neither holds it is
released, and forgotten once nothing depends on it at all.

Memory
------
A task's bytes count: see ``entities.py`` for how the collection-valued
fields of ``TaskState`` are stored, and why.  Only this file changes them,
through ``_add`` and ``_discard``.
"""
from __future__ import annotations

import heapq
import logging
import math
import sys
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from distributed.exceptions import ActorLostError, FutureLost, KilledWorker, error_message
from distributed.protocol.message import SharedBytes
from distributed.scheduler.entities import (  # noqa: F401 (re-exported: old import paths)
    _EMPTY,
    _SMALL,
    _TASK_SET_FIELDS,
    ClientState,
    TaskState,
    TransitionLog,
    WorkerState,
    _add,
    _discard,
)
from distributed.scheduler.observer import StateObserver
from distributed.utils import key_split

__all__ = ["SchedulerState", "TaskState", "WorkerState", "ClientState", "TransitionLog", "FIRE_AND_FORGET"]

#: The pseudo-client that holds fire-and-forget keys until they finish.
FIRE_AND_FORGET = "fire-and-forget"

logger = logging.getLogger(__name__)

DEFAULT_TASK_DURATION = 0.5
# A worker holds up to this much work (seconds per thread) before root tasks
# stay queued on the scheduler; tiny tasks need deep queues to keep threads
# busy across the round trip, long tasks need shallow ones to keep ordering.
_QUEUE_SECONDS = 0.02
_MAX_TASKS_PER_THREAD = 200
# Root tasks whose results are combined downstream (``_fans_in``) queue far
# less deep: each one held waits for its partners.  5 ms of work per thread
# (at most 16 tasks) keeps a tree reduction of tiny tasks at 4-6k tasks/s
# holding ~90 results (3 workers); upstream's 1.1/thread holds ~20 at about
# 1.7k tasks/s here, the 20 ms queue held 300-600.  The bytes held stay
# bounded by what a thread computes in those 5 ms.
_FAN_IN_QUEUE_SECONDS = 0.005
_FAN_IN_MAX_PER_THREAD = 16

#: Placement (``decide_worker``): seconds a worker spends per task beyond
#: its compute (messages, thread handoff: about 0.3 ms here), and the round
#: trip a fetch of a missing input costs before its bytes flow.  With up to
#: this many workers every running one is a candidate.
_TASK_OVERHEAD = 0.0005
_FETCH_LATENCY = 0.002
_SCAN_ALL_WORKERS = 32
#: ``_fans_in`` looks at most this many dependents of a task per level.
_FAN_IN_SCAN = 4

#: Function payloads interned across graphs: at most this many distinct ones,
#: each at most this large (the cache outlives the tasks that used them).
_FUNC_CACHE_ENTRIES = 1000
_FUNC_CACHE_MAX_BYTES = 64 * 1024

class SchedulerState:
    """The scheduler's tasks, workers and clients, and the rules that move
    tasks between states.

    >>> state = SchedulerState()
    >>> _ = state.add_worker("tcp://127.0.0.1:1", nthreads=1)
    >>> state.add_client("c")
    >>> cmsgs, wmsgs = state.update_graph(
    ...     "c", tasks={"x": b"spec"}, dependencies={}, keys=["x"])
    >>> state.tasks["x"].state
    'processing'
    >>> wmsgs["tcp://127.0.0.1:1"][0]["op"]
    'compute-task'
    """

    def __init__(self, allowed_failures: int = 3, validate: bool = False,
                 bandwidth: float = 100e6, transition_log_length: int = 100_000,
                 worker_saturation: float | str = 1.1):
        try:
            saturation = float(worker_saturation)
        except (TypeError, ValueError):
            saturation = math.nan
        if not saturation > 0:  # also NaN
            raise ValueError(f"worker-saturation must be a positive number or 'inf', not "
                             f"{worker_saturation!r} (config distributed.scheduler.worker-saturation)")
        #: Root tasks a worker holds per thread before the rest queue here
        #: (upstream's ``worker-saturation``; ``inf`` turns queuing off).
        self.worker_saturation = saturation
        self.tasks: dict[Any, TaskState] = {}
        self.workers: dict[str, WorkerState] = {}
        self.clients: dict[str, ClientState] = {}
        self.aliases: dict[Any, str] = {}  # worker name -> address
        self.allowed_failures = allowed_failures
        self.validate = validate
        self.bandwidth = bandwidth
        self.generation = 0
        self.queued: list = []  # heap of (priority, counter, TaskState)
        self._queue_counter = 0
        self.unrunnable: set[TaskState] = set()
        # Workers with a free slot, for root tasks that may queue deep on a
        # worker (``idle``) and for the others (``idle_shallow``): see _slots.
        self.idle: dict[str, WorkerState] = {}
        self.idle_shallow: dict[str, WorkerState] = {}
        self.durations: dict[str, float] = {}  # task prefix -> mean seconds
        self._durations_total = 0.0  # sum of self.durations' values, kept as they change
        self._funcs: dict[bytes, SharedBytes] = {}  # see _intern_func
        self.transition_log = TransitionLog(transition_log_length)
        self.transition_counter = 0
        self.client_msgs: dict[str, list] = defaultdict(list)
        self.worker_msgs: dict[str, list] = defaultdict(list)
        self.plugins: list = []
        # Told of the changes that are not transitions (scheduler/observer.py).
        self.observers: list[StateObserver] = []
        # worker address -> (its server id, tasks whose death count it raised)
        self._blamed: dict[str, tuple] = {}
        # Actor tasks: key -> the worker it was last assigned to, where the
        # object lives once in memory (an actor never moves; see remove_worker).
        self.actor_homes: dict[Any, str | None] = {}
        # Steals asked of a victim and not answered yet (scheduler/stealing.py):
        # task -> its record.  Dropped when the task leaves processing.
        self.in_flight_steals: dict[TaskState, Any] = {}
        self._table = {
            ("released", "waiting"): self._released_waiting,
            ("released", "forgotten"): self._released_forgotten,
            ("released", "erred"): self._released_erred,
            ("waiting", "processing"): self._waiting_processing,
            ("waiting", "released"): self._waiting_released,
            ("waiting", "erred"): self._released_erred,
            ("queued", "processing"): self._queued_processing,
            ("queued", "released"): self._waiting_released,
            ("queued", "erred"): self._released_erred,
            ("no-worker", "processing"): self._no_worker_processing,
            ("no-worker", "released"): self._waiting_released,
            ("no-worker", "erred"): self._released_erred,
            ("processing", "memory"): self._processing_memory,
            ("processing", "released"): self._processing_released,
            ("processing", "erred"): self._processing_erred,
            ("memory", "released"): self._memory_released,
            ("memory", "erred"): self._memory_erred,
            ("erred", "released"): self._erred_released,
        }

    # ------------------------------------------------------------------
    # The transition engine
    # ------------------------------------------------------------------

    def transition(self, key, finish: str, **kwargs) -> dict:
        """Move ``key`` to ``finish``; returns recommendations."""
        ts = self.tasks.get(key)
        if ts is None:
            return {}
        start = ts.state
        if start == finish:
            return {}
        func = self._table.get((start, finish))
        if func is not None:
            recs = func(ts, **kwargs)
        elif finish in ("waiting", "forgotten") and (start, "released") in self._table:
            recs = self._table[(start, "released")](ts)
            recs.pop(key, None)  # the chain decides where this key goes next
            if ts.state == "released":
                recs.update(self._table[("released", finish)](ts, **kwargs))
        else:
            # A recommendation made stale by an earlier transition.
            return {}
        self.transition_counter += 1
        self.transition_log.append(ts.key, start, ts.state)  # ts.key: not a decoded copy
        if self.plugins:  # the only cost of the hook when nobody listens
            self._tell_plugins(ts, start, kwargs)
        return recs

    def _tell_plugins(self, ts: TaskState, start: str, kwargs: dict) -> None:
        """Call ``transition(key, start, finish, **kwargs)`` of each object in
        ``plugins`` (the scheduler's plugin hooks).  A task just forgotten is
        back in ``tasks`` during the call, so that plugins can read it."""
        finish = ts.state
        forgotten = finish == "forgotten"
        if forgotten:
            self.tasks[ts.key] = ts
        try:
            for plugin in self.plugins:
                try:
                    plugin.transition(ts.key, start, finish, **kwargs)
                except Exception:
                    logger.exception("plugin %r failed in transition", plugin)
        finally:
            if forgotten:
                self.tasks.pop(ts.key, None)

    def transitions(self, recommendations: dict) -> tuple[dict, dict]:
        """Apply recommendations until none are left; return the messages."""
        while recommendations:
            key, finish = recommendations.popitem()
            new = self.transition(key, finish)
            if new:
                recommendations.update(new)
        if self.validate:
            self.validate_state()
        return self.flush_messages()

    def flush_messages(self) -> tuple[dict, dict]:
        cmsgs, wmsgs = self.client_msgs, self.worker_msgs
        self.client_msgs = defaultdict(list)
        self.worker_msgs = defaultdict(list)
        return cmsgs, wmsgs

    def story(self, *keys) -> list:
        """The transitions recorded for ``keys``."""
        keys = set(keys)
        return [t for t in self.transition_log if t[0] in keys]

    # ------------------------------------------------------------------
    # Transitions
    # ------------------------------------------------------------------

    def _released_waiting(self, ts: TaskState) -> dict:
        recs: dict = {}
        if ts.run_spec is None:
            # Data that was scattered, never computed: nothing to rerun.
            return self._lost(ts)
        ts.state = "waiting"
        for dts in ts.dependencies:
            if dts.exception_blame is not None:
                recs[ts.key] = "erred"
                ts.exception_blame = dts.exception_blame
                return recs
            _add(dts, "waiters", ts)
            if dts.state != "memory":
                _add(ts, "waiting_on", dts)
                if dts.state == "released":
                    recs[dts.key] = "waiting"
        if not ts.waiting_on:
            recs[ts.key] = "processing"
        return recs

    def _lost(self, ts: TaskState) -> dict:
        ts.state = "erred"
        exc = FutureLost(
            f"The data of {ts.key!r} was lost: the workers holding it are gone, "
            "and it was scattered rather than computed, so it cannot be recomputed."
        )
        msg = error_message(exc)
        ts.exception, ts.traceback = msg["exception"], msg["traceback"]
        ts.exception_text = msg["text"]
        ts.exception_blame = ts
        recs = {}
        for cs in ts.who_wants:
            self.client_msgs[cs.client_key].append({"op": "lost-data", "key": ts.key})
            self.client_msgs[cs.client_key].append(self._erred_msg(ts))
        for dts in ts.dependents:
            if dts.state in ("waiting", "queued", "no-worker", "processing"):
                recs[dts.key] = "erred"
        return recs

    def _waiting_processing(self, ts: TaskState) -> dict:
        if ts.waiting_on:  # a stale recommendation
            return {}
        if not ts.dependencies and not ts.has_restrictions:
            ws = self._pick_idle_worker(not _fans_in(ts))
            if ws is None:
                if not self.workers:
                    return self._to_no_worker(ts)
                ts.state = "queued"
                self._queue_counter += 1
                heapq.heappush(self.queued, (ts.priority, self._queue_counter, ts))
                return {}
        else:
            ws = self.decide_worker(ts)
            if ws is None:
                return self._to_no_worker(ts)
        return self._assign(ts, ws)

    def _to_no_worker(self, ts: TaskState) -> dict:
        ts.state = "no-worker"
        self.unrunnable.add(ts)
        return {}

    def _queued_processing(self, ts: TaskState, worker: str | None = None) -> dict:
        ws = self.workers.get(worker) if worker else self._pick_idle_worker(not _fans_in(ts))
        if ws is None:  # no free slot after all: back in line
            self._queue_counter += 1
            heapq.heappush(self.queued, (ts.priority, self._queue_counter, ts))
            return {}
        return self._assign(ts, ws)

    def _no_worker_processing(self, ts: TaskState) -> dict:
        self.unrunnable.discard(ts)
        ts.state = "waiting"
        return self._waiting_processing(ts)

    def _assign(self, ts: TaskState, ws: WorkerState) -> dict:
        duration = self.durations.get(ts.prefix, DEFAULT_TASK_DURATION)
        ts.state = "processing"
        ts.processing_on = ws
        ws.processing[ts] = duration
        ws.occupancy += duration
        self._check_idle(ws)
        msg: dict = {"op": "compute-task", "key": ts.key, "run_spec": ts.run_spec,
                     "priority": ts.priority, "duration": duration}
        if ts.dependencies:
            msg["who_has"] = {dts.key: [w.address for w in dts.who_has] for dts in ts.dependencies}
            msg["nbytes"] = {dts.key: dts.nbytes for dts in ts.dependencies}
        rare = ts._rare
        if rare is not None:
            if rare.resource_restrictions:
                msg["resource_restrictions"] = rare.resource_restrictions
            if rare.actor:
                msg["actor"] = True
                self.actor_homes[ts.key] = ws.address
        self.worker_msgs[ws.address].append(msg)
        return {}

    def _unassign(self, ts: TaskState) -> WorkerState | None:
        ws = ts.processing_on
        if ws is None:
            return None
        ts.processing_on = None
        if self.in_flight_steals:  # a late steal answer must not move it
            self.in_flight_steals.pop(ts, None)
        duration = ws.processing.pop(ts, 0.0)
        ws.occupancy = max(ws.occupancy - duration, 0.0)
        ws.long_running.discard(ts)
        if ws.address in self.workers:
            self._check_idle(ws)
        return ws

    def move_processing(self, key, worker: str) -> tuple[dict, dict]:
        """Run ``key``, processing on one worker that has confirmed it
        dropped it (a steal), on ``worker`` instead; returns the messages.

        >>> state.move_processing("x", "tcp://127.0.0.1:2")   # doctest: +SKIP
        ({}, {'tcp://127.0.0.1:2': [{'op': 'compute-task', 'key': 'x', ...}]})
        """
        ts = self.tasks.get(key)
        ws = self.workers.get(worker)
        if ts is None or ts.state != "processing" or ws is None:
            raise ValueError(f"cannot move {key!r} to {worker}: the task is not processing "
                             "or the worker is not connected")
        old = self._unassign(ts)
        self._assign(ts, ws)
        self.transition_counter += 1
        self.transition_log.append(ts.key, "processing", "processing")
        recs: dict = {}
        if old is not None:
            self._fill_worker(old, recs)
        return self.transitions(recs)

    def _processing_memory(self, ts: TaskState, worker: str | None = None, nbytes: int = -1,
                           type: str | None = None, duration: float | None = None) -> dict:
        ws = self._unassign(ts)
        if worker is not None and worker in self.workers:
            ws = self.workers[worker]
        recs: dict = {}
        if duration is not None and duration >= 0:
            old = self.durations.get(ts.prefix)
            new = duration if old is None else 0.5 * old + 0.5 * duration
            self.durations[ts.prefix] = new
            self._durations_total += new - (old or 0.0)
        ts.state = "memory"
        # One shared string per type name, not one per decoded message.
        ts.type = sys.intern(type) if type.__class__ is str else type
        ts.nbytes = nbytes if nbytes >= 0 else 0
        if ws is not None:
            self._add_replica(ts, ws)
        for dts in ts.dependents:
            if ts in dts.waiting_on:
                _discard(dts, "waiting_on", ts)
                if not dts.waiting_on and dts.state == "waiting":
                    recs[dts.key] = "processing"
        for dts in ts.dependencies:
            _discard(dts, "waiters", ts)
            if not dts.waiters and not dts.who_wants and dts.state == "memory":
                recs[dts.key] = "released"
        self._drop_fire_and_forget(ts)
        if not ts.waiters and not ts.who_wants:
            recs[ts.key] = "released"
        else:
            workers = [w.address for w in ts.who_has]
            for cs in ts.who_wants:
                self.client_msgs[cs.client_key].append(
                    {"op": "key-in-memory", "key": ts.key, "type": type, "workers": workers})
        if ws is not None:
            self._fill_worker(ws, recs)
        return recs

    def _fill_worker(self, ws: WorkerState, recs: dict) -> None:
        """Recommend queued tasks for a worker that has free slots."""
        if not self.queued or ws.address not in self.workers:
            return
        queued = self.queued
        n = len(ws.processing)
        deep, shallow = self._slots(ws), self._slots(ws, deep=False)
        while n < deep and queued:
            qts = queued[0][2]
            if qts.state != "queued" or qts.key in recs:
                heapq.heappop(queued)
                continue
            if n >= shallow and _fans_in(qts):
                break  # in priority order: it waits for a shallow slot
            heapq.heappop(queued)
            recs[qts.key] = "processing"
            n += 1

    def _add_replica(self, ts: TaskState, ws: WorkerState) -> None:
        if ws not in ts.who_has:
            _add(ts, "who_has", ws, ws._singleton)
            ws.has_what[ts] = None
            ws.nbytes += max(ts.nbytes, 0)

    def _remove_replica(self, ts: TaskState, ws: WorkerState) -> None:
        if ws in ts.who_has:
            _discard(ts, "who_has", ws)
            del ws.has_what[ts]
            ws.nbytes -= max(ts.nbytes, 0)

    def _add_wanter(self, ts: TaskState, cs: ClientState) -> None:
        _add(ts, "who_wants", cs, cs._singleton)
        cs.wants_what.add(ts)

    def _remove_wanter(self, ts: TaskState, cs: ClientState) -> None:
        _discard(ts, "who_wants", cs)
        cs.wants_what.discard(ts)

    def _processing_released(self, ts: TaskState) -> dict:
        ws = self._unassign(ts)
        if ws is not None and ws.address in self.workers:
            self.worker_msgs[ws.address].append({"op": "free-keys", "keys": [ts.key]})
        recs = self._waiting_released(ts)
        if ws is not None:
            self._fill_worker(ws, recs)
        return recs

    def _waiting_released(self, ts: TaskState) -> dict:
        self.unrunnable.discard(ts)
        ts.state = "released"
        ts.waiting_on = _EMPTY
        recs: dict = {}
        if ts.who_wants or ts.waiters:
            # Still needed: it goes back to waiting at once (a retry, a lost
            # worker), so it stays a waiter of its inputs.  Releasing them
            # would recompute them, or lose them for good if scattered.
            recs[ts.key] = "waiting"
            return recs
        for dts in ts.dependencies:
            _discard(dts, "waiters", ts)
            if not dts.waiters and not dts.who_wants and dts.state not in ("released", "erred"):
                recs[dts.key] = "released"
        if not ts.dependents:
            recs[ts.key] = "forgotten"
        return recs

    def _memory_released(self, ts: TaskState, lost: bool = False) -> dict:
        recs: dict = {}
        for ws in list(ts.who_has):
            self._remove_replica(ts, ws)
            if not lost:
                self.worker_msgs[ws.address].append({"op": "free-keys", "keys": [ts.key]})
        ts.state = "released"
        for dts in ts.dependents:
            if dts.state in ("waiting", "queued", "no-worker"):
                if dts.state != "waiting":
                    recs[dts.key] = "waiting"
                _add(dts, "waiting_on", ts)
            elif dts.state == "processing":
                recs[dts.key] = "waiting"
        if ts.who_wants or ts.waiters:
            if ts.run_spec is not None:  # scattered data: _lost reports it
                for cs in ts.who_wants:
                    self.client_msgs[cs.client_key].append({"op": "lost-data", "key": ts.key})
            recs[ts.key] = "waiting"
        elif not ts.dependents:
            recs[ts.key] = "forgotten"
        return recs

    def _memory_erred(self, ts: TaskState, exception=None, traceback=None, exception_text: str = "",
                      traceback_text: str = "") -> dict:
        """A key in memory that must fail rather than be computed again: an
        actor whose worker left, taking the actor's state with it.  Every
        copy is dropped, and its unfinished dependents fail with it."""
        for ws in list(ts.who_has):
            self._remove_replica(ts, ws)
            if ws.address in self.workers:
                self.worker_msgs[ws.address].append({"op": "free-keys", "keys": [ts.key]})
        ts.exception, ts.traceback = exception, traceback
        ts.exception_text, ts.traceback_text = exception_text, traceback_text
        ts.exception_blame = ts
        ts.state = "erred"
        return self._report_error(ts)

    def _released_forgotten(self, ts: TaskState) -> dict:
        if ts.dependents or ts.who_wants or ts.waiters:
            return {}  # still part of some lineage
        recs: dict = {}
        for dts in ts.dependencies:
            _discard(dts, "dependents", ts)
            _discard(dts, "waiters", ts)
            if not dts.dependents and not dts.who_wants and not dts.waiters:
                recs[dts.key] = "forgotten"
        ts.dependencies = _EMPTY
        ts.state = "forgotten"
        rare = ts._rare
        if rare is not None:
            rare.exception_blame = None
            if rare.actor:
                self.actor_homes.pop(ts.key, None)
        del self.tasks[ts.key]
        return recs

    def _released_erred(self, ts: TaskState) -> dict:
        self.unrunnable.discard(ts)
        ts.waiting_on = _EMPTY
        blame = ts.exception_blame
        if blame is None:
            for dts in ts.dependencies:
                if dts.exception_blame is not None:
                    blame = dts.exception_blame
                    break
        if blame is None:
            raise RuntimeError(f"task {ts.key!r} erred with no cause")
        ts.exception_blame = blame
        ts.state = "erred"
        return self._report_error(ts)

    def _report_error(self, ts: TaskState) -> dict:
        recs: dict = {}
        for dts in ts.dependencies:
            _discard(dts, "waiters", ts)
            if not dts.waiters and not dts.who_wants and dts.state == "memory":
                recs[dts.key] = "released"
        for dts in ts.dependents:
            if dts.state not in ("erred", "memory", "forgotten"):
                dts.exception_blame = ts.exception_blame
                recs[dts.key] = "erred"
        for cs in ts.who_wants:
            self.client_msgs[cs.client_key].append(self._erred_msg(ts))
        self._drop_fire_and_forget(ts)
        return recs

    def _drop_fire_and_forget(self, ts: TaskState) -> None:
        """A fire-and-forget key is held only until it finishes."""
        cs = self.clients.get(FIRE_AND_FORGET)
        if cs is not None and cs in ts.who_wants:
            self._remove_wanter(ts, cs)

    def _erred_msg(self, ts: TaskState) -> dict:
        blame = ts.exception_blame or ts
        return {"op": "task-erred", "key": ts.key, "exception": blame.exception,
                "traceback": blame.traceback, "traceback_text": blame.traceback_text}

    def _processing_erred(self, ts: TaskState, worker: str | None = None, exception=None,
                          traceback=None, exception_text: str = "", traceback_text: str = "") -> dict:
        ws = self._unassign(ts)
        if ws is not None:
            _add(ts, "erred_on", ws.address)
        if exception is not None:
            ts.exception = exception
            ts.traceback = traceback
            ts.exception_text = exception_text
            ts.traceback_text = traceback_text
            ts.exception_blame = ts
        elif ts.exception_blame is None:
            ts.exception_blame = ts
        ts.state = "erred"
        recs = self._report_error(ts)
        if ws is not None:
            self._fill_worker(ws, recs)
        return recs

    def _erred_released(self, ts: TaskState) -> dict:
        ts.exception = ts.traceback = None
        ts.exception_text = ts.traceback_text = ""
        ts.exception_blame = None
        ts.erred_on = _EMPTY
        ts.state = "released"
        recs: dict = {}
        for dts in ts.dependents:
            if dts.state == "erred":
                recs[dts.key] = "released"
        if ts.who_wants or ts.waiters:
            recs[ts.key] = "waiting"
        elif not ts.dependents:
            recs[ts.key] = "forgotten"
        return recs

    # ------------------------------------------------------------------
    # Placement
    # ------------------------------------------------------------------

    def _slots(self, ws: WorkerState, deep: bool = True) -> int:
        """How many tasks a worker may hold before root tasks queue: at least
        ``ceil(worker_saturation * threads)`` as upstream (a seceded task's
        thread counts as free), more for tiny tasks, which need deeper
        queues to keep threads busy across the round trip: up to
        ``_QUEUE_SECONDS`` of work per thread with ``deep`` (root tasks whose
        results no task combines, see ``_fans_in``), ``_FAN_IN_QUEUE_SECONDS``
        without."""
        threads = ws.nthreads + len(ws.long_running)
        if self.worker_saturation == math.inf:
            return sys.maxsize
        mean = self._mean_duration()
        if not deep:
            per_thread = min(_FAN_IN_MAX_PER_THREAD, math.ceil(_FAN_IN_QUEUE_SECONDS / max(mean, 1e-6)))
            return max(math.ceil(self.worker_saturation * threads), 1, threads * per_thread)
        per_thread = min(_MAX_TASKS_PER_THREAD, math.ceil(_QUEUE_SECONDS / max(mean, 1e-6)))
        return max(math.ceil(self.worker_saturation * threads), 1, threads * per_thread)

    def _mean_duration(self) -> float:
        d = self.durations
        if not d:
            return DEFAULT_TASK_DURATION
        if len(d) > 50:
            return DEFAULT_TASK_DURATION / 10
        return self._durations_total / len(d)  # O(1): this runs on every transition

    def _check_idle(self, ws: WorkerState) -> None:
        n = len(ws.processing)
        if ws.status == "running" and n < self._slots(ws):
            self.idle[ws.address] = ws
            if n < self._slots(ws, deep=False):
                self.idle_shallow[ws.address] = ws
            else:
                self.idle_shallow.pop(ws.address, None)
        else:
            self.stop_placing(ws.address)

    def stop_placing(self, address: str) -> None:
        """No more root tasks for this worker until ``_check_idle`` says
        otherwise (it is closing, retiring, or full)."""
        self.idle.pop(address, None)
        self.idle_shallow.pop(address, None)

    def _pick_idle_worker(self, deep: bool = True) -> WorkerState | None:
        """An idle worker with a free slot (taking turns), or None; ``deep``:
        for a root task that may queue deep (see ``_slots``)."""
        idle = self.idle if deep else self.idle_shallow
        while idle:
            # Round robin: take the first, move it to the back, so root tasks
            # spread over idle workers at O(1) a task (a min() over the idle
            # workers on every root task cost more than the rest of placing it).
            address, ws = next(iter(idle.items()))
            del idle[address]
            if len(ws.processing) < self._slots(ws, deep) and ws.status == "running":
                idle[address] = ws
                return ws
        return None

    def valid_workers(self, ts: TaskState) -> list[WorkerState] | None:
        """Workers allowed to run ``ts``; None means all of them."""
        if not ts.has_restrictions:
            return None
        workers = self.workers.values()
        out = []
        for ws in workers:
            if ws.status != "running":
                continue
            allowed = ts.worker_restrictions
            if allowed and not (ws.address in allowed or ws.host in allowed
                                or ws.name in allowed or str(ws.name) in allowed):
                continue
            if ts.resource_restrictions:
                if any(ws.resources.get(r, 0) < need for r, need in ts.resource_restrictions.items()):
                    continue
            out.append(ws)
        if not out and ts.loose_restrictions and ts.worker_restrictions:
            # Loose: any worker will do, but resources are never optional.
            if not ts.resource_restrictions:
                return None
            out = [ws for ws in workers if ws.status == "running"
                   and all(ws.resources.get(r, 0) >= need
                           for r, need in ts.resource_restrictions.items())]
        return out

    def decide_worker(self, ts: TaskState) -> WorkerState | None:
        """Where to run ``ts``: the worker where it would start first.

        A worker's cost is its queued work per thread (``occupancy`` plus
        ``_TASK_OVERHEAD`` per task it holds) plus moving the input bytes it
        lacks (over ``bandwidth``, plus ``_FETCH_LATENCY`` when anything
        must move).  So a task goes where most of its input bytes already
        are unless the queue there is longer than the move; with small
        inputs, ties go to the least busy.  Only running workers count: a
        paused or retiring worker gets nothing new.  With up to
        ``_SCAN_ALL_WORKERS`` workers every one is a candidate; on bigger
        clusters the holders of the inputs and one idle worker are (the
        balancer, ``stealing.py``, evens out the rest).
        """
        valid = self.valid_workers(ts)
        if valid is not None and ts.actor and valid:  # only restricted tasks and actors get here
            return self._fewest_actors(valid)
        total = 0
        held: dict[WorkerState, int] = {}
        for dts in ts.dependencies:
            nbytes = max(dts.nbytes, 0)
            total += nbytes
            for ws in dts.who_has:
                held[ws] = held.get(ws, 0) + nbytes
        if valid is not None:
            candidates = valid
        elif len(self.workers) <= _SCAN_ALL_WORKERS:
            candidates = [ws for ws in self.workers.values() if ws.status == "running"]
        else:
            cands = {ws.address: ws for ws in held if ws.status == "running"}
            ws_idle = self._pick_idle_worker()
            if ws_idle is not None:
                cands[ws_idle.address] = ws_idle
            if not cands:
                cands = {a: w for a, w in self.workers.items() if w.status == "running"}
            candidates = list(cands.values())
        if not candidates:
            return None
        if len(candidates) == 1:
            return candidates[0]
        bandwidth = self.bandwidth

        def cost(ws: WorkerState):
            missing = total - held.get(ws, 0)
            move = missing / bandwidth + _FETCH_LATENCY if missing > 0 else 0.0
            queue = (ws.occupancy + len(ws.processing) * _TASK_OVERHEAD) / ws.nthreads
            return (queue + move, -held.get(ws, 0), len(ws.processing), ws.address)

        return min(candidates, key=cost)

    def note_bandwidth(self, rate: float) -> None:
        """A worker measured ``rate`` bytes/s fetching from its peers: the
        estimate that placement and stealing use moves halfway towards it
        (it starts at ``distributed.scheduler.bandwidth``).

        >>> state = SchedulerState(bandwidth=100e6)
        >>> state.note_bandwidth(300e6); state.bandwidth
        200000000.0
        """
        if isinstance(rate, (int, float)) and math.isfinite(rate) and rate > 0:
            self.bandwidth = 0.5 * (self.bandwidth + float(rate))

    def _fewest_actors(self, candidates: list[WorkerState]) -> WorkerState:
        """The candidate where the fewest actors live (or are being made),
        then the least busy: actors spread over the workers, since each
        worker runs its actors' methods one at a time."""
        count = dict.fromkeys((ws.address for ws in candidates), 0)
        tasks = self.tasks
        for key, home in self.actor_homes.items():
            if home in count and tasks[key].state in ("processing", "memory"):
                count[home] += 1
        return min(candidates, key=lambda ws: (count[ws.address], ws.occupancy / ws.nthreads,
                                               len(ws.processing), ws.address))

    def actors_on(self, address: str) -> list:
        """Keys of the actors living on worker ``address``, or being made there.

        >>> state.actors_on("tcp://127.0.0.1:1")         # doctest: +SKIP
        ['Counter-6f1d...']
        """
        tasks = self.tasks
        return [key for key, home in self.actor_homes.items()
                if home == address and tasks[key].state in ("processing", "memory")]

    def _actor_lost_fields(self, key, address: str, reason: str | None) -> dict:
        """The error of an actor whose worker left (``task-erred`` fields)."""
        exc = ActorLostError(
            f"Worker holding Actor was lost: actor {key!r} lived on {address}, which left the cluster"
            f"{f' ({reason})' if reason else ''}. An actor's state cannot be recomputed elsewhere: "
            "submit a new actor.")
        msg = error_message(exc)
        return {"exception": msg["exception"], "traceback": msg["traceback"],
                "exception_text": msg["text"], "traceback_text": msg.get("traceback_text", "")}

    # ------------------------------------------------------------------
    # Events from clients
    # ------------------------------------------------------------------

    def add_client(self, client: str, now: float = 0.0) -> None:
        cs = self.clients.get(client)
        if cs is None:
            cs = self.clients[client] = ClientState(client)
            for observer in self.observers:
                observer.client_added(cs)
        cs.last_seen = now

    def remove_client(self, client: str) -> tuple[dict, dict]:
        cs = self.clients.pop(client, None)
        if cs is None:
            return {}, {}
        for observer in self.observers:
            observer.client_removed(cs)
        recs = self._release_wants(cs, [ts.key for ts in cs.wants_what])
        cmsgs, wmsgs = self.transitions(recs)
        cmsgs.pop(client, None)
        return cmsgs, wmsgs

    def update_graph(
        self,
        client: str,
        tasks: dict,
        dependencies: dict,
        keys: Iterable,
        priority: dict | None = None,
        user_priority: int | dict = 0,
        restrictions: dict | None = None,
        loose_restrictions: Iterable | None = None,
        resources: dict | None = None,
        retries: dict | None = None,
        actors: Iterable | None = None,
    ) -> tuple[dict, dict]:
        """New tasks from a client; ``keys`` are the ones it wants back.

        ``tasks`` maps key -> opaque run spec; ``dependencies`` maps key ->
        keys it needs (new ones or ones already known); ``priority`` maps
        key -> graph order (lower runs first); ``actors`` are keys whose
        values stay on their worker as actors.
        """
        if client not in self.clients:
            self.add_client(client)
        cs = self.clients[client]
        self.generation += 1
        generation = self.generation
        priority = priority or {}
        recs: dict = {}
        new = []
        touched = []
        graph_funcs: dict[bytes, SharedBytes] = {}
        for key, spec in tasks.items():
            ts = self.tasks.get(key)
            if ts is None:
                ts = TaskState(key, self._intern_func(spec, graph_funcs), sys.intern(key_split(key)))
                self.tasks[key] = ts
                new.append(ts)
            elif ts.run_spec is None and ts.state in ("released", "erred"):
                ts.run_spec = self._intern_func(spec, graph_funcs)
            touched.append(ts)
        if self.observers and new:
            for observer in self.observers:
                observer.tasks_created(new)
        # Dependencies: every named key must exist
        missing_deps: dict = {}
        for ts in new:
            for dkey in dependencies.get(ts.key, ()):
                dts = self.tasks.get(dkey)
                if dts is None:
                    missing_deps.setdefault(ts.key, []).append(dkey)
                    continue
                _add(ts, "dependencies", dts)
                _add(dts, "dependents", ts)
        for ts in touched:
            up = user_priority.get(ts.key, 0) if isinstance(user_priority, dict) else user_priority
            if ts.state in ("released",) or ts in new:
                ts.priority = (-up, generation, priority.get(ts.key, 0))
        if restrictions:
            for key, workers in restrictions.items():
                ts = self.tasks.get(key)
                if ts is None or ts.state != "released" or workers is None:
                    continue
                if isinstance(workers, (str, int)) or not isinstance(workers, Iterable):
                    workers = [workers]
                ts.worker_restrictions = {_normalize_restriction(w) for w in workers}
        for key in loose_restrictions or ():
            if key in self.tasks:
                self.tasks[key].loose_restrictions = True
        for key, res in (resources or {}).items():
            if key in self.tasks and res:
                self.tasks[key].resource_restrictions = dict(res)
        for key, n in (retries or {}).items():
            if key in self.tasks and n:
                self.tasks[key].retries = n
        for key in actors or ():
            ts = self.tasks.get(key)
            if ts is not None and ts.run_spec is not None and ts.state == "released":
                ts.actor = True
                self.actor_homes[key] = None
        for key, dkeys in missing_deps.items():
            ts = self.tasks[key]
            exc = KeyError(
                f"Task {key!r} depends on {dkeys!r}, which the scheduler does not hold "
                "(the futures were released or cancelled before this task was submitted)"
            )
            msg = error_message(exc)
            ts.exception, ts.traceback = msg["exception"], msg["traceback"]
            ts.exception_text = msg["text"]
            ts.exception_blame = ts
            recs[key] = "erred"
        for key in keys:
            ts = self.tasks.get(key)
            if ts is None:
                continue
            self._add_wanter(ts, cs)
            if ts.state == "memory":
                self.client_msgs[client].append({"op": "key-in-memory", "key": key, "type": ts.type,
                                                 "workers": [w.address for w in ts.who_has]})
            elif ts.state == "erred":
                self.client_msgs[client].append(self._erred_msg(ts))
            elif ts.state == "released" and key not in recs:
                recs[key] = "waiting"
        for ts in new:
            if ts.state == "released" and ts.key not in recs and (ts.waiters or ts.who_wants or ts.dependents):
                recs[ts.key] = "waiting"
        # Apply the recommendations for the new tasks in priority order so
        # that queued root tasks and assignments follow graph order.
        # (``transitions`` pops from the end; ties keep submission order.)
        index = {key: i for i, key in enumerate(recs)}
        ordered = dict(sorted(recs.items(), key=lambda kv: (self._prio_of(kv[0]), index[kv[0]]),
                              reverse=True))
        return self.transitions(ordered)

    def _intern_func(self, spec, graph_funcs: dict):
        """``spec`` with its pickled function (``spec[1]``, a ``SharedBytes``,
        see ``distributed.spec``) replaced by one shared object per distinct
        value.  A decoded message already shares one object among its tasks;
        this shares it across messages (one ``submit`` each).  Small payloads
        are remembered across graphs (a bounded cache), large ones within
        this graph only.  Nothing is unpickled; anything else passes
        unchanged.
        """
        if type(spec) is tuple and len(spec) == 3:
            func = spec[1]
            if type(func) is SharedBytes:
                funcs = self._funcs if len(func.data) <= _FUNC_CACHE_MAX_BYTES else graph_funcs
                shared = funcs.get(func.data)
                if shared is None:
                    if len(funcs) >= _FUNC_CACHE_ENTRIES:
                        funcs.clear()
                    funcs[func.data] = shared = func
                elif shared is not func:
                    return (spec[0], shared, spec[2])
        return spec

    def _prio_of(self, key):
        ts = self.tasks.get(key)
        return ts.priority if ts is not None and ts.priority else (0,)

    def client_releases_keys(self, client: str, keys: Iterable) -> tuple[dict, dict]:
        """A client dropped its last future for ``keys``."""
        cs = self.clients.get(client)
        if cs is None:
            return {}, {}
        return self.transitions(self._release_wants(cs, keys))

    def _release_wants(self, cs: ClientState, keys: Iterable) -> dict:
        recs: dict = {}
        for key in keys:
            ts = self.tasks.get(key)
            if ts is None or ts not in cs.wants_what:
                continue
            self._remove_wanter(ts, cs)
            if not ts.who_wants and not ts.waiters:
                if ts.state in ("released", "erred"):
                    if not ts.dependents:
                        recs[key] = "forgotten"
                    elif ts.state == "erred":
                        recs[key] = "released"
                else:
                    recs[key] = "released"
        return recs

    def client_desires_keys(self, client: str, keys: Iterable) -> tuple[dict, dict]:
        return self.update_graph(client, {}, {}, keys)

    def fire_and_forget(self, keys: Iterable) -> tuple[dict, dict]:
        """Keep ``keys`` until they finish even if no client wants them."""
        keys = [k for k in keys if k in self.tasks and self.tasks[k].state not in ("memory", "erred")]
        return self.update_graph(FIRE_AND_FORGET, {}, {}, keys)

    def retry(self, keys: Iterable) -> tuple[dict, dict]:
        """Run erred ``keys`` again, with the erred tasks they depend on."""
        erred: list[TaskState] = []
        stack = [self.tasks[k] for k in keys if k in self.tasks]
        seen: set = set()
        while stack:
            ts = stack.pop()
            if ts.key in seen or ts.state != "erred":
                continue
            seen.add(ts.key)
            erred.append(ts)
            stack.extend(ts.dependencies)
        recs: dict = {}
        for ts in reversed(erred):  # dependencies first
            if ts.state == "erred":
                recs.update(self._erred_released(ts))
        for ts in erred:
            if ts.state == "released" and (ts.who_wants or ts.waiters or ts.dependents):
                recs[ts.key] = "waiting"
        return self.transitions(recs)

    def cancel_keys(self, client: str, keys: Iterable, force: bool = False) -> tuple[dict, dict]:
        """Cancel ``keys`` for ``client`` (for every client with ``force``).

        Tasks that depend on a cancelled key and are not finished are
        cancelled too: they would otherwise keep the key alive.
        """
        recs: dict = {}
        closure: list[TaskState] = []
        seen: set = set()
        stack = [self.tasks[k] for k in keys if k in self.tasks]
        while stack:
            ts = stack.pop()
            if ts.key in seen:
                continue
            seen.add(ts.key)
            closure.append(ts)
            stack.extend(d for d in ts.dependents if d.state not in ("memory", "erred"))
        for ts in closure:
            clients = list(ts.who_wants) if force else [self.clients.get(client)]
            for cs in clients:
                if cs is None or (cs not in ts.who_wants and ts.key not in keys):
                    continue
                self.client_msgs[cs.client_key].append({"op": "cancelled-keys", "keys": [ts.key]})
                recs.update(self._release_wants(cs, [ts.key]))
        return self.transitions(recs)

    def update_data(self, who_has: dict, nbytes: dict, client: str | None = None,
                    types: dict | None = None) -> tuple[dict, dict]:
        """Data placed directly on workers (scatter)."""
        if client is not None and client not in self.clients:
            self.add_client(client)
        cs = self.clients.get(client) if client else None
        recs: dict = {}
        for key, workers in who_has.items():
            ts = self.tasks.get(key)
            if ts is None:
                ts = TaskState(key, None, sys.intern(key_split(key)))
                self.tasks[key] = ts
                for observer in self.observers:
                    observer.tasks_created([ts])
            holders = [self.workers[w] for w in workers if w in self.workers]
            if ts.state in ("memory",):
                for ws in holders:
                    self._add_replica(ts, ws)
            elif holders:
                if ts.state != "released":
                    recs.update(self.transition(key, "released"))
                ts.state = "memory"
                ts.nbytes = nbytes.get(key, 0)
                ts.type = (types or {}).get(key)
                for ws in holders:
                    self._add_replica(ts, ws)
                for observer in self.observers:
                    observer.task_stored(ts)
                for dts in ts.dependents:
                    if ts in dts.waiting_on:
                        _discard(dts, "waiting_on", ts)
                        if not dts.waiting_on and dts.state == "waiting":
                            recs[dts.key] = "processing"
            if cs is not None:
                self._add_wanter(ts, cs)
            for c in ts.who_wants:
                self.client_msgs[c.client_key].append(
                    {"op": "key-in-memory", "key": key, "type": ts.type,
                     "workers": [w.address for w in ts.who_has]})
        return self.transitions(recs)

    # ------------------------------------------------------------------
    # Events from workers
    # ------------------------------------------------------------------

    def add_worker(self, address: str, nthreads: int, name=None, memory_limit: int = 0,
                   resources: dict | None = None, pid: int = 0, host: str = "",
                   local_directory: str = "", nanny: str | None = None,
                   keys: Iterable = (), nbytes: dict | None = None, now: float = 0.0,
                   server_id: str | None = None) -> tuple[dict, dict]:
        """A worker joins (or the same worker, ``server_id``, comes back after
        losing its connection: the deaths it was blamed for are withdrawn)."""
        if address in self.workers:
            raise ValueError(f"worker {address} is already registered")
        if name is not None and name in self.aliases and self.aliases[name] != address:
            raise ValueError(f"a worker named {name!r} is already registered")
        ws = WorkerState(address, nthreads, name, memory_limit, resources, pid, host,
                         local_directory, nanny)
        ws.last_seen = now
        ws.server_id = server_id
        self.workers[address] = ws
        for observer in self.observers:
            observer.worker_added(ws)
        blamed = self._blamed.pop(address, None)
        if blamed is not None and server_id is not None and blamed[0] == server_id:
            for ts in blamed[1]:
                if ts.suspicious > 0 and self.tasks.get(ts.key) is ts and ts.state != "erred":
                    ts.suspicious -= 1
        self.aliases[ws.name] = address
        self._check_idle(ws)
        recs: dict = {}
        nbytes = nbytes or {}
        for key in keys:
            ts = self.tasks.get(key)
            if ts is not None and ts.state == "memory":
                ts.nbytes = nbytes.get(key, ts.nbytes)
                self._add_replica(ts, ws)
            else:
                self.worker_msgs[address].append({"op": "free-keys", "keys": [key]})
        for ts in list(self.unrunnable):
            recs[ts.key] = "processing"
        self._fill_worker(ws, recs)
        return self.transitions(recs)

    def remove_worker(self, address: str, safe: bool = False, reason: str | None = None,
                      culprits: Iterable | None = None) -> tuple[dict, dict]:
        """A worker left.  Its tasks are rescheduled; keys it alone held are
        recomputed from their dependencies (or reported lost).  Unless
        ``safe``, the tasks it was running count a death and fail with
        ``KilledWorker`` after ``allowed_failures`` deaths: the keys in
        ``culprits`` when the worker said which task ended it, else the ones
        it most likely ran.  ``reason`` (why it died) goes into that error."""
        ws = self.workers.pop(address, None)
        if ws is None:
            return {}, {}
        for observer in self.observers:
            observer.worker_removed(ws)
        if self.aliases.get(ws.name) == address:
            del self.aliases[ws.name]
        self.stop_placing(address)
        ws.status = "closed"
        # First, so that it comes before any task message: every worker
        # drops the fetches it has running from this one (a host cut off
        # mid-transfer never answers) and plans them again.
        for other in self.workers:
            self.worker_msgs[other].append({"op": "worker-removed", "worker": address})
        recs: dict = {}
        processing = list(ws.processing)
        if not safe:
            known = [self.tasks[k] for k in culprits or () if k in self.tasks]
            known = [ts for ts in known if ts.processing_on is ws]
            if known:
                blamed = set(known)
            else:
                # Workers run in priority order: the highest-priority tasks
                # are the ones that were executing when the worker died.
                running = heapq.nsmallest(ws.nthreads + len(ws.long_running), processing,
                                          key=lambda t: t.priority)
                blamed = {*running, *ws.long_running}
            for ts in blamed:
                ts.suspicious += 1
            # Only a death if it does not come back: see add_worker.
            self._blamed[address] = (ws.server_id, blamed)
            if len(self._blamed) > 1000:
                del self._blamed[next(iter(self._blamed))]
        # Transition at once rather than recommend: a task left "processing"
        # on a gone worker would be misread by the transitions that follow.
        for ts in processing:
            if ts.suspicious > self.allowed_failures:
                exc = KilledWorker(ts.key, address, self.allowed_failures, reason, ts.suspicious)
                msg = error_message(exc)
                ts.exception, ts.traceback = msg["exception"], msg["traceback"]
                ts.exception_text = msg["text"]
                ts.traceback_text = msg["traceback_text"]
                ts.exception_blame = ts
                recs.update(self.transition(ts.key, "erred"))
            else:
                recs.update(self.transition(ts.key, "released"))
        # An actor that lived here is gone with its state: it fails (one still
        # being made was rescheduled above, like any task).
        for key in self.actors_on(address) if self.actor_homes else ():
            if self.tasks[key].state == "memory":
                recs.update(self.transition(key, "erred", **self._actor_lost_fields(key, address, reason)))
        for ts in list(ws.has_what):
            self._remove_replica(ts, ws)
            if not ts.who_has and ts.state == "memory":
                recs.update(self.transition(ts.key, "released", lost=True))
        return self.transitions(recs)

    def handle_worker_status_change(self, worker: str, status: str) -> tuple[dict, dict]:
        """A worker paused (no new tasks go there) or resumed."""
        ws = self.workers.get(worker)
        if ws is None or status not in ("running", "paused") or ws.status == status:
            return {}, {}
        ws.status = status
        self._check_idle(ws)
        recs: dict = {}
        if status == "running":
            for ts in list(self.unrunnable):
                recs[ts.key] = "processing"
            self._fill_worker(ws, recs)
        return self.transitions(recs)

    def restart(self) -> tuple[dict, dict]:
        """Forget every task: each client gets a ``restart`` message (its
        futures are cancelled) and each worker is told to free its keys."""
        for ws in self.workers.values():
            keys = [ts.key for ts in ws.has_what] + [ts.key for ts in ws.processing]
            if keys:
                self.worker_msgs[ws.address].append({"op": "free-keys", "keys": keys})
            ws.has_what.clear()
            ws.processing.clear()
            ws.long_running.clear()
            ws.occupancy = 0.0
            ws.nbytes = 0
            self._check_idle(ws)
        for cs in self.clients.values():
            cs.wants_what.clear()
            self.client_msgs[cs.client_key].append({"op": "restart"})
        self.tasks.clear()
        self.actor_homes.clear()
        self.in_flight_steals.clear()
        self.queued.clear()
        self.unrunnable.clear()
        if self.validate:
            self.validate_state()
        return self.flush_messages()

    def handle_task_finished(self, key, worker: str, nbytes: int = -1, type: str | None = None,
                             duration: float | None = None) -> tuple[dict, dict]:
        ts = self.tasks.get(key)
        ws = self.workers.get(worker)
        if ws is None:
            return {}, {}
        if ts is None:
            self.worker_msgs[worker].append({"op": "free-keys", "keys": [key]})
            return self.flush_messages()
        if ts.state == "processing" and ts.processing_on is ws:
            return self.transitions(self.transition(key, "memory", worker=worker, nbytes=nbytes,
                                                    type=type, duration=duration))
        if ts.state == "memory":
            self._add_replica(ts, ws)
            return self.flush_messages()
        # A stale result: the task was released or moved meanwhile.
        self.worker_msgs[worker].append({"op": "free-keys", "keys": [key]})
        return self.flush_messages()

    def handle_task_erred(self, key, worker: str, exception=None, traceback=None,
                          exception_text: str = "", traceback_text: str = "") -> tuple[dict, dict]:
        ts = self.tasks.get(key)
        ws = self.workers.get(worker)
        if ts is None or ws is None or ts.state != "processing" or ts.processing_on is not ws:
            return {}, {}
        if ts.retries > 0:
            ts.retries -= 1
            return self.transitions(self._processing_released(ts))
        return self.transitions(self.transition(
            key, "erred", worker=worker, exception=exception, traceback=traceback,
            exception_text=exception_text, traceback_text=traceback_text))

    def handle_missing_data(self, key, errant_worker: str) -> tuple[dict, dict]:
        """Someone could not find ``key`` on ``errant_worker``."""
        return self._replica_gone(key, errant_worker)

    def handle_release_worker_data(self, key, worker: str) -> tuple[dict, dict]:
        """A worker dropped its copy of ``key``."""
        return self._replica_gone(key, worker)

    def _replica_gone(self, key, worker: str) -> tuple[dict, dict]:
        """``worker`` no longer holds ``key``; with no copy left the key is
        recomputed (or reported lost)."""
        ts = self.tasks.get(key)
        ws = self.workers.get(worker)
        if ts is None or ws is None or ws not in ts.who_has:
            return {}, {}
        self._remove_replica(ts, ws)
        if not ts.who_has and ts.state == "memory":
            return self.transitions(self.transition(key, "released", lost=True))
        return self.flush_messages()

    def handle_add_keys(self, worker: str, keys: Iterable, nbytes: dict | None = None) -> tuple[dict, dict]:
        """A worker now also holds ``keys`` (replicas it fetched)."""
        ws = self.workers.get(worker)
        if ws is None:
            return {}, {}
        for key in keys:
            ts = self.tasks.get(key)
            if ts is not None and ts.state == "memory":
                self._add_replica(ts, ws)
            else:
                self.worker_msgs[worker].append({"op": "free-keys", "keys": [key]})
        return self.flush_messages()

    def handle_long_running(self, key, worker: str) -> tuple[dict, dict]:
        """A task seceded from its worker's thread pool: its thread is free."""
        ts = self.tasks.get(key)
        ws = self.workers.get(worker)
        if ts is None or ws is None or ts.processing_on is not ws:
            return {}, {}
        ws.long_running.add(ts)
        duration = ws.processing.get(ts, 0.0)
        ws.occupancy = max(ws.occupancy - duration, 0.0)
        ws.processing[ts] = 0.0
        recs: dict = {}
        self._fill_worker(ws, recs)
        self._check_idle(ws)
        return self.transitions(recs)

    def check_worker_ttl(self, now: float, ttl: float) -> list[str]:
        """Workers whose last heartbeat is older than ``ttl`` seconds."""
        return [ws.address for ws in self.workers.values() if now - ws.last_seen > ttl]

    # ------------------------------------------------------------------
    # Queries
    # ------------------------------------------------------------------

    def who_has(self, keys: Iterable | None = None) -> dict:
        keys = self.tasks if keys is None else keys
        return {k: [ws.address for ws in self.tasks[k].who_has] if k in self.tasks else []
                for k in keys}

    def has_what(self, workers: Iterable | None = None) -> dict:
        addrs = self.workers if workers is None else [self.coerce_address(w) for w in workers]
        return {a: [ts.key for ts in self.workers[a].has_what] if a in self.workers else []
                for a in addrs}

    def coerce_address(self, worker) -> str:
        """A worker address from an address, a name, or host:port."""
        if worker in self.aliases:
            return self.aliases[worker]
        if isinstance(worker, str) and worker in self.workers:
            return worker
        if isinstance(worker, str) and "://" not in worker and f"tcp://{worker}" in self.workers:
            return f"tcp://{worker}"
        if isinstance(worker, (tuple, list)) and len(worker) == 2:
            return f"tcp://{worker[0]}:{worker[1]}"
        return worker

    # ------------------------------------------------------------------
    # Validation
    # ------------------------------------------------------------------

    def validate_state(self) -> None:
        """Check every invariant; raises AssertionError naming the broken one."""
        for key, ts in self.tasks.items():
            assert ts.key == key, (ts, key)
            self._validate_task(ts)
        for addr, ws in self.workers.items():
            assert ws.address == addr
            for ts in ws.has_what:
                assert ws in ts.who_has, ("has_what/who_has mismatch", ts, ws)
                assert ts.state == "memory", ("worker holds non-memory task", ts)
            for ts in ws.processing:
                assert ts.processing_on is ws, ("processing mismatch", ts, ws)
                assert ts.state == "processing", ts
            assert ws.nbytes == sum(max(t.nbytes, 0) for t in ws.has_what), ("nbytes", ws)
        for cs in self.clients.values():
            for ts in cs.wants_what:
                assert cs in ts.who_wants, ("wants_what/who_wants", ts, cs)
                assert ts.key in self.tasks, ("client wants forgotten key", ts)
        for ts in self.unrunnable:
            assert ts.state == "no-worker", ts
        for ts, steal in self.in_flight_steals.items():  # see scheduler/stealing.py
            assert ts.state == "processing" and ts.processing_on is steal.victim, (
                "steal in flight of a task not processing on its victim", ts)
        for key, home in self.actor_homes.items():
            ts = self.tasks.get(key)
            assert ts is not None and ts.actor, ("actor_homes names a non-actor", key)
            if ts.state == "memory":
                assert any(ws.address == home for ws in ts.who_has), ("actor away from home", ts, home)

    def _validate_task(self, ts: TaskState) -> None:
        for field in _TASK_SET_FIELDS:  # see "Memory" in the module docstring
            members = getattr(ts, field)
            if type(members) is set:
                assert members, ("empty set instead of _EMPTY", ts, field)
            elif type(members) is tuple:
                assert 0 < len(members) <= _SMALL, ("tuple of the wrong size", ts, field, members)
                assert len(set(members)) == len(members), ("repeated member", ts, field, members)
            elif members:
                assert field in ("who_has", "who_wants") and len(members) == 1, (ts, field, members)
                assert members is next(iter(members))._singleton, ("unshared singleton", ts, field)
            else:
                assert members is _EMPTY, ("empty field is not _EMPTY", ts, field)
        for dts in ts.dependencies:
            assert ts in dts.dependents, ("dependents mismatch", ts, dts)
            assert dts.key in self.tasks, ("dependency forgotten", ts, dts)
        for dts in ts.dependents:
            assert ts in dts.dependencies, ("dependencies mismatch", ts, dts)
        for dts in ts.waiters:
            assert ts in dts.dependencies, ("waiter is not a dependent", ts, dts)
            assert dts.state not in ("memory", "released", "forgotten"), ("finished waiter", ts, dts)
        for cs in ts.who_wants:
            assert ts in cs.wants_what
        state = ts.state
        if state == "memory":
            assert ts.who_has, ("memory task without holders", ts)
            assert ts.processing_on is None
            assert not ts.waiting_on
        else:
            assert not ts.who_has, ("non-memory task with holders", ts, ts.who_has)
        if state == "processing":
            ws = ts.processing_on
            assert ws is not None and ws.address in self.workers, ("processing on dead worker", ts)
            assert ts in ws.processing
            assert not ts.waiting_on, ("processing with missing deps", ts, ts.waiting_on)
            for dts in ts.dependencies:
                assert dts.state == "memory", ("processing with non-memory dep", ts, dts)
        else:
            assert ts.processing_on is None, ("not processing but assigned", ts)
        if state == "waiting":
            assert ts.waiting_on, ("waiting with nothing to wait on", ts)
            for dts in ts.waiting_on:
                assert dts.state != "memory", ("waiting on memory dep", ts, dts)
                assert ts in dts.waiters
        if state == "queued":
            assert not ts.dependencies and not ts.waiting_on
        if state == "erred":
            assert ts.exception_blame is not None, ts
        if state == "released":
            assert not ts.waiting_on


def _normalize_restriction(worker) -> str:
    """Addresses without a scheme get ``tcp://``; names and hosts stay."""
    if isinstance(worker, (tuple, list)) and len(worker) == 2:
        return f"tcp://{worker[0]}:{worker[1]}"
    if isinstance(worker, str) and "://" not in worker and ":" in worker:
        return f"tcp://{worker}"
    return worker


def _fans_in(ts: TaskState) -> bool:
    """Whether a task downstream of root task ``ts``, within two levels,
    combines its result with others' (a reduction).  Such root tasks queue
    on the scheduler, with shallow worker queues (``_FAN_IN_QUEUE_SECONDS``),
    so that partial results are combined before many more are made (a deep
    worker queue held hundreds of a tree reduction's leaves in memory).
    Results nothing combines (maps, chains of maps) may queue deep.

    >>> from distributed.scheduler.entities import TaskState
    >>> leaf, total = TaskState("leaf", None, "leaf"), TaskState("total", None, "total")
    >>> _fans_in(leaf)
    False
    >>> leaf.dependents = {total}; total.dependencies = {leaf, TaskState("other", None, "other")}
    >>> _fans_in(leaf)
    True
    """
    level = ts.dependents
    for _ in range(2):
        if not level:
            return False
        if len(level) > _FAN_IN_SCAN:
            return True  # a wide fan-out from one root: no deep queue either
        following: list = []
        for dts in level:
            if len(dts.dependencies) > 1:
                return True
            following.extend(dts.dependents)
        level = following
    return False
