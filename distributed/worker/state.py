"""WorkerState: a worker's bookkeeping as a pure state machine.

Rules of this file
------------------
No I/O, no threads, no clocks.  The ``Worker`` server calls one ``handle_*``
method per stimulus (a message from the scheduler, a finished execution, a
finished transfer) and carries out the instructions it returns:

* ``Execute(key)``: run the task in the thread pool;
* ``GatherDep(worker, keys)``: fetch these keys from that peer in one request;
* messages for the scheduler accumulate in ``scheduler_msgs``
  (``task-finished``, ``task-erred``, ``add-keys``, ``missing-data``, ...).

Theory of operation
-------------------
Tasks to compute::

    waiting --(inputs in memory)--> ready --> executing --> memory
                                                  \\--> error

Inputs held elsewhere::

    fetch --> flight --> memory
       \\         \\--> fetch (another holder) / missing (none left)

A task released by the scheduler while it is executing or in flight is
``cancelled``: the thread or transfer cannot be interrupted, so its result is
dropped when it arrives, unless the scheduler asks for the key again first,
in which case the task resumes its previous state.

``ready`` tasks run in priority order (a heap), only while their resource
needs fit what is free.  ``executing`` tasks are those handed to the thread
pool: at most ``nthreads`` run at once.  Short tasks (expected under
``PREFETCH_BELOW`` seconds) are also handed over while every thread is busy,
up to ``PREFETCH_PER_THREAD * nthreads`` of them waiting in the pool's
queue, so that a thread that finishes one starts the next at once instead of
sleeping until the event loop hands it one: for tasks of microseconds that
handoff is most of the cost.  Longer tasks, and tasks with resource
restrictions, are handed over only to a free thread, so they keep their
priority order and a paused worker does not start them.
"""
from __future__ import annotations

import heapq
from collections import defaultdict, deque
from collections.abc import Iterable
from typing import Any, NamedTuple

__all__ = ["WorkerState", "TaskState", "Execute", "GatherDep"]

#: Short tasks waiting in the thread pool's queue, at most, per thread; and
#: the expected duration (seconds, the scheduler's estimate) under which a
#: task counts as short (see above).
PREFETCH_PER_THREAD = 4
PREFETCH_BELOW = 0.005

#: Fetch requests are bundled up to about this many bytes per peer.
TRANSFER_BYTES_TARGET = 50_000_000


class Execute(NamedTuple):
    key: Any


class GatherDep(NamedTuple):
    worker: str
    keys: list
    nbytes: int


class TaskState:
    """What a worker knows of one key."""

    __slots__ = (
        "key",
        "state",
        "previous",
        "run_spec",
        "priority",
        "dependencies",
        "dependents",
        "waiting_for_data",
        "who_has",
        "coming_from",
        "nbytes",
        "type",
        "resource_restrictions",
        "duration",
        "wanted",
        "actor",
        "_hash",
    )

    def __init__(self, key):
        self.key = key
        self.state = "released"
        self.previous: str | None = None
        self.run_spec = None
        self.priority: tuple = ()
        self.dependencies: set[TaskState] = set()
        self.dependents: set[TaskState] = set()
        self.waiting_for_data: set[TaskState] = set()
        self.who_has: set[str] = set()
        self.coming_from: str | None = None
        self.nbytes = 0
        self.type: str | None = None
        self.resource_restrictions: dict | None = None
        self.duration = 0.0
        self.wanted = False  # the scheduler asked us to compute it
        self.actor = False  # its value stays here as an actor (see WorkerState.actors)
        self._hash = hash(key)

    # Hash by key, not by id(): sets of tasks then iterate in the same order
    # on every run, so the state machine is deterministic.  Equality stays
    # identity.
    def __hash__(self) -> int:
        return self._hash

    def __repr__(self) -> str:
        return f"<TaskState {self.key!r} {self.state}>"

    def __lt__(self, other: TaskState) -> bool:
        return self.priority < other.priority


class WorkerState:
    """Tasks, dependencies and slots of one worker.

    ``data`` is the worker's mapping of results; this class only adds and
    removes keys.  An actor task's object is kept in ``actors`` instead (it
    must never be spilled or sent anywhere), and ``data`` holds the handle
    that ``make_actor_handle(key, obj)`` returns, which is what dependents,
    peers and clients receive.

    >>> ws = WorkerState(nthreads=1, data={}, address="tcp://127.0.0.1:2")
    >>> ws.handle_compute_task("x", run_spec="spec", priority=(0,))
    [Execute(key='x')]
    >>> ws.handle_execute_success("x", 42, nbytes=28)
    []
    >>> ws.data["x"], ws.scheduler_msgs[-1]["op"]
    (42, 'task-finished')
    """

    def __init__(self, nthreads: int, data, address: str = "", resources: dict | None = None,
                 max_gather_peers: int = 10, validate: bool = False,
                 story_length: int = 10_000, max_transfer_bytes: int | None = None,
                 make_actor_handle=None):
        self.nthreads = nthreads
        self.data = data
        # A SpillBuffer takes the size we already know instead of measuring again.
        self._set_sized = getattr(data, "set", None)
        self.address = address
        self.total_resources = dict(resources or {})
        self.available_resources = dict(resources or {})
        self.max_gather_peers = max_gather_peers
        # Bundled fetches stay under this (part of the maximum message size),
        # so keys that fit one by one are never refused together.
        self.max_transfer_bytes = max_transfer_bytes
        self.validate = validate
        self.tasks: dict[Any, TaskState] = {}
        self.ready: list = []  # heap of (priority, counter, TaskState)
        self._counter = 0
        self.constrained: deque[TaskState] = deque()
        self.executing: set[TaskState] = set()
        self.long_running: set[TaskState] = set()
        self.data_needed: list = []  # heap of (priority, counter, TaskState) to fetch
        self.in_flight_workers: dict[str, set[TaskState]] = {}
        self.scheduler_msgs: list = []
        self.log: deque = deque(maxlen=story_length)
        self.paused = False
        # The class of new tasks: a subclass reports state changes to
        # worker plugins (worker/plugins.py); plain TaskState costs nothing.
        self.task_class: type = TaskState
        self.actors: dict[Any, Any] = {}  # key -> the live object of an actor task here
        self.make_actor_handle = make_actor_handle

    # ------------------------------------------------------------------
    # Stimuli from the scheduler
    # ------------------------------------------------------------------

    def handle_compute_task(self, key, run_spec, priority=(), who_has: dict | None = None,
                            nbytes: dict | None = None, resource_restrictions: dict | None = None,
                            duration: float = 0.0, actor: bool = False) -> list:
        if actor and self.make_actor_handle is None:
            raise RuntimeError(f"actor task {key!r} sent to a WorkerState without make_actor_handle")
        ts = self._ensure_task(key)
        self.log.append((key, "compute-task", ts.state))
        state = ts.state
        if state == "memory":
            self.scheduler_msgs.append(self._finished_msg(ts))
            return []
        if state in ("waiting", "ready", "executing", "long-running", "constrained"):
            return []
        if state == "cancelled" and ts.previous in ("executing", "long-running"):
            ts.wanted = True
            ts.state = ts.previous
            ts.previous = None
            return []
        ts.run_spec = run_spec
        ts.priority = priority
        ts.resource_restrictions = resource_restrictions
        ts.duration = duration
        ts.wanted = True
        if actor:
            ts.actor = True
        nbytes = nbytes or {}
        for dkey, holders in (who_has or {}).items():
            dts = self._ensure_task(dkey)
            ts.dependencies.add(dts)
            dts.dependents.add(ts)
            if dkey in nbytes:
                dts.nbytes = nbytes[dkey]
            dts.who_has.update(h for h in holders if h != self.address)
        if state in ("flight", "cancelled"):
            # A transfer of this key is running: let it finish.  If it
            # fails, the task is computed here (``_fetch_failed``).
            ts.state = "flight"
            ts.previous = None
            return []
        self._schedule(ts)
        return self._next()

    def _schedule(self, ts: TaskState) -> None:
        """Wait for the inputs of ``ts`` that are not here, or make it ready."""
        ts.waiting_for_data.clear()
        for dts in ts.dependencies:
            if dts.state != "memory":
                ts.waiting_for_data.add(dts)
                if dts.state == "cancelled":
                    # Its transfer or execution is still running and counts
                    # again (an execution we were not asked for is reported
                    # with add-keys, see handle_execute_success).
                    dts.state = dts.previous
                    dts.previous = None
                elif dts.state in ("released", "missing", "error"):
                    self._to_fetch(dts)
        # Through "waiting" even when nothing is missing: transition
        # observers see released, waiting, ready as in dask.distributed.
        ts.state = "waiting"
        if not ts.waiting_for_data:
            self._to_ready(ts)

    def _fetch_failed(self, ts: TaskState) -> None:
        """A transfer of ``ts`` failed: try another holder, or compute it
        if the scheduler asked us to."""
        if ts.wanted and ts.run_spec is not None:
            self._schedule(ts)
        else:
            self._to_fetch(ts)

    def handle_free_keys(self, keys: Iterable) -> list:
        """The scheduler no longer needs ``keys`` here."""
        for key in keys:
            ts = self.tasks.get(key)
            if ts is None:
                continue
            self.log.append((key, "free-keys", ts.state))
            ts.wanted = False
            if ts.state in ("executing", "long-running", "flight"):
                if any(d.wanted and d.state not in ("memory", "released") for d in ts.dependents):
                    continue  # still an input of a task here
                ts.previous = ts.state
                ts.state = "cancelled"
            elif ts.state == "cancelled":
                pass
            else:
                if any(d.wanted and d.state not in ("memory", "released") for d in ts.dependents):
                    continue
                self._release(ts)
        return self._next()

    def handle_steal_request(self, key, stimulus_id: str = "") -> list:
        """The scheduler wants to run ``key`` elsewhere.  Answered from our
        own state (``steal-response``): a task not started yet (waiting,
        ready, constrained) is dropped here and never starts; any other
        state is only reported, so the task runs exactly once.

        >>> ws = WorkerState(nthreads=1, data={})
        >>> _ = [ws.handle_compute_task(k, "spec", duration=1.0) for k in "xy"]
        >>> ws.handle_steal_request("y", "steal-1")
        []
        >>> ws.scheduler_msgs[-1]["state"], "y" in ws.tasks
        ('ready', False)
        """
        ts = self.tasks.get(key)
        state = None if ts is None else ts.state
        self.log.append((key, "steal-request", state, stimulus_id))
        if ts is not None and state in ("waiting", "ready", "constrained"):
            self._release(ts)
        self.scheduler_msgs.append({"op": "steal-response", "key": key, "state": state,
                                    "stimulus_id": stimulus_id})
        return self._next()

    def handle_update_data(self, data: dict, nbytes: dict | None = None,
                           types: dict | None = None) -> None:
        """Data put here directly (scatter, replicate)."""
        for key, value in data.items():
            ts = self._ensure_task(key)
            ts.nbytes = (nbytes or {}).get(key, ts.nbytes)
            self._store(key, value, ts.nbytes)
            ts.type = (types or {}).get(key)
            self._to_memory(ts)

    def handle_acquire_replicas(self, who_has: dict, nbytes: dict) -> list:
        """Fetch copies of keys held elsewhere (replicate)."""
        for key, holders in who_has.items():
            ts = self._ensure_task(key)
            if ts.state == "memory":
                continue
            ts.nbytes = nbytes.get(key, ts.nbytes)
            ts.who_has.update(h for h in holders if h != self.address)
            if ts.state in ("released", "missing"):
                ts.priority = (1,)
                self._to_fetch(ts)
        return self._next()

    # ------------------------------------------------------------------
    # Stimuli from our own execution and transfers
    # ------------------------------------------------------------------

    def handle_execute_success(self, key, value, nbytes: int, type: str | None = None,
                               duration: float | None = None, startstops: list | None = None,
                               thread: int | None = None) -> list:
        """The task ran and returned ``value``.  ``startstops`` (the
        ``{"action", "start", "stop"}`` records of its compute and of the
        transfers of its inputs) and ``thread`` go to the scheduler with the
        result, for its task stream."""
        ts = self.tasks.get(key)
        if ts is None:
            return self._next()
        self._finish_execution(ts)
        if ts.state == "cancelled":
            self._release(ts)
            return self._next()
        if ts.actor:
            # The object stays here; its handle is what everyone else gets.
            self.actors[key] = value
            self._store(key, self.make_actor_handle(key, value), -1)
        else:
            self._store(key, value, nbytes)
        ts.nbytes = nbytes
        ts.type = type
        self._to_memory(ts)
        if not ts.wanted:
            # Resumed as an input of another task after the scheduler let
            # it go: tell it we hold a copy, not that we computed it.
            self.scheduler_msgs.append({"op": "add-keys", "keys": [key], "nbytes": {key: nbytes}})
            return self._next()
        msg = self._finished_msg(ts)
        if duration is not None:
            msg["duration"] = duration
        if startstops:
            msg["startstops"] = startstops
            msg["thread"] = thread
        self.scheduler_msgs.append(msg)
        return self._next()

    def handle_execute_failure(self, key, error: dict, startstops: list | None = None,
                               thread: int | None = None) -> list:
        ts = self.tasks.get(key)
        if ts is None:
            return self._next()
        self._finish_execution(ts)
        if ts.state == "cancelled":
            self._release(ts)
            return self._next()
        if not ts.wanted:  # only an input here (see _schedule): fetch it
            self._to_fetch(ts)
            return self._next()
        ts.state = "error"
        self.log.append((key, "error"))
        msg = {"op": "task-erred", "key": key, **error}
        if startstops:
            msg["startstops"] = startstops
            msg["thread"] = thread
        self.scheduler_msgs.append(msg)
        return self._next()

    def handle_reschedule(self, key) -> list:
        """The task asked to be rescheduled elsewhere (``Reschedule``)."""
        ts = self.tasks.get(key)
        if ts is None:
            return self._next()
        self._finish_execution(ts)
        self._release(ts)
        self.scheduler_msgs.append({"op": "reschedule", "key": key})
        return self._next()

    def handle_secede(self, key) -> list:
        """A running task left the thread pool; its slot is free."""
        ts = self.tasks.get(key)
        if ts is None or ts not in self.executing:
            return []
        self.executing.discard(ts)
        self.long_running.add(ts)
        if ts.state == "executing":
            ts.state = "long-running"
        elif ts.state == "cancelled":
            ts.previous = "long-running"  # what it resumes as
        self._release_resources(ts)
        self.scheduler_msgs.append({"op": "long-running", "key": key})
        return self._next()

    def handle_gather_dep_success(self, worker: str, requested: Iterable, data: dict) -> list:
        """A transfer from ``worker`` finished; ``data`` may lack some keys."""
        self.in_flight_workers.pop(worker, None)
        got = []
        for key in requested:
            ts = self.tasks.get(key)
            if ts is None:
                continue
            ts.coming_from = None
            if key in data:
                if ts.state == "cancelled":
                    self._release(ts)
                    continue
                if ts.state != "flight":
                    continue
                self._store(key, data[key], ts.nbytes)
                self._to_memory(ts)
                if ts.wanted and ts.run_spec is not None:
                    self.scheduler_msgs.append(self._finished_msg(ts))
                else:
                    got.append(key)
            else:
                ts.who_has.discard(worker)
                if ts.state == "cancelled":
                    self._release(ts)
                    continue
                self.scheduler_msgs.append({"op": "missing-data", "key": key, "errant_worker": worker})
                if ts.state == "flight":
                    self._fetch_failed(ts)
        if got:
            self.scheduler_msgs.append(
                {"op": "add-keys", "keys": got, "nbytes": {k: self.tasks[k].nbytes for k in got}})
        return self._next()

    def handle_gather_dep_failure(self, worker: str, requested: Iterable) -> list:
        """``worker`` could not be reached: forget it as a holder of anything."""
        self.in_flight_workers.pop(worker, None)
        for ts in self.tasks.values():
            ts.who_has.discard(worker)
        for key in requested:
            ts = self.tasks.get(key)
            if ts is None:
                continue
            ts.coming_from = None
            if ts.state == "cancelled":
                self._release(ts)
                continue
            if ts.state == "flight":
                self.scheduler_msgs.append({"op": "missing-data", "key": key, "errant_worker": worker})
                self._fetch_failed(ts)
        return self._next()

    def handle_worker_removed(self, worker: str) -> list:
        """The scheduler removed ``worker``: it holds nothing any more, and
        a transfer from it still running is abandoned (the server cancels
        it), its keys fetched from another holder or asked for again.

        >>> ws = WorkerState(nthreads=1, data={}, address="tcp://me:1")
        >>> ws.handle_compute_task("y", "spec", who_has={"x": ["tcp://gone:1"]})
        [GatherDep(worker='tcp://gone:1', keys=['x'], nbytes=0)]
        >>> ws.handle_worker_removed("tcp://gone:1"), ws.tasks["x"].state
        ([], 'missing')
        """
        requested = [ts.key for ts in self.in_flight_workers.get(worker, ())]
        self.log.append((worker, "worker-removed", requested))
        return self.handle_gather_dep_failure(worker, requested)

    def handle_gather_dep_error(self, worker: str, requested: Iterable, error: dict) -> list:
        """``worker`` cannot send these keys however often we ask (a value
        over the maximum message size): the tasks here that wait for them
        fail with ``error`` (task-erred fields) instead of fetching again."""
        self.in_flight_workers.pop(worker, None)
        for key in requested:
            ts = self.tasks.get(key)
            if ts is None:
                continue
            ts.coming_from = None
            if ts.state == "cancelled":
                self._release(ts)
                continue
            if ts.state != "flight":
                continue
            self.log.append((key, "gather-dep-error"))
            if ts.wanted and ts.run_spec is not None:
                self._schedule(ts)  # we were asked to compute it here as well
                continue
            ts.state = "released"  # fetched again only if a retried task asks for it
            for dts in ts.dependents:
                if dts.state == "waiting" and ts in dts.waiting_for_data:
                    dts.waiting_for_data.clear()
                    dts.state = "error"
                    self.log.append((dts.key, "error"))
                    if dts.wanted:
                        self.scheduler_msgs.append({"op": "task-erred", "key": dts.key, **error})
            if not ts.dependents and not ts.wanted:
                self._forget(ts)
        return self._next()

    def handle_new_holders(self, who_has: dict) -> list:
        """Fresh locations for keys we could not find."""
        for key, holders in who_has.items():
            ts = self.tasks.get(key)
            if ts is None:
                continue
            ts.who_has.update(h for h in holders if h != self.address)
            if ts.state == "missing" and ts.who_has:
                self._to_fetch(ts)
        return self._next()

    def _store(self, key, value, nbytes: int) -> None:
        if self._set_sized is not None and nbytes >= 0:
            self._set_sized(key, value, nbytes)
        else:
            self.data[key] = value

    def _drop(self, key) -> None:
        # Not data.pop: on a SpillBuffer that would read a spilled value back.
        try:
            del self.data[key]
        except KeyError:
            pass
        if self.actors:
            self.actors.pop(key, None)

    def handle_pause(self, paused: bool) -> list:
        """Stop (or resume) starting tasks and fetches: memory is short."""
        self.paused = paused
        return self._next()

    # ------------------------------------------------------------------
    # Internal moves
    # ------------------------------------------------------------------

    def _ensure_task(self, key) -> TaskState:
        ts = self.tasks.get(key)
        if ts is None:
            ts = self.tasks[key] = self.task_class(key)
        return ts

    def _finished_msg(self, ts: TaskState) -> dict:
        return {"op": "task-finished", "key": ts.key, "nbytes": ts.nbytes, "type": ts.type}

    def _to_ready(self, ts: TaskState) -> None:
        ts.state = "ready"
        self._counter += 1
        heapq.heappush(self.ready, (ts.priority, self._counter, ts))

    def _to_fetch(self, ts: TaskState) -> None:
        if not ts.who_has:
            ts.state = "missing"
            self.scheduler_msgs.append({"op": "request-who-has", "keys": [ts.key]})
            return
        ts.state = "fetch"
        if not ts.priority:
            ts.priority = min((d.priority for d in ts.dependents if d.priority), default=(0,))
        self._counter += 1
        heapq.heappush(self.data_needed, (ts.priority, self._counter, ts))

    def _to_memory(self, ts: TaskState) -> None:
        ts.state = "memory"
        ts.previous = None
        ts.who_has.clear()
        self.log.append((ts.key, "memory"))
        for dts in ts.dependents:
            if ts in dts.waiting_for_data:
                dts.waiting_for_data.discard(ts)
                if not dts.waiting_for_data and dts.state == "waiting":
                    self._to_ready(dts)

    def _finish_execution(self, ts: TaskState) -> None:
        if ts in self.executing:
            self.executing.discard(ts)
            self._release_resources(ts)
        else:  # seceded: its resources went back then
            self.long_running.discard(ts)

    def _release_resources(self, ts: TaskState) -> None:
        if ts.resource_restrictions:
            for r, n in ts.resource_restrictions.items():
                self.available_resources[r] = self.available_resources.get(r, 0) + n

    def _release(self, ts: TaskState) -> None:
        """Forget a task here (its data too)."""
        self.log.append((ts.key, "release", ts.state))
        self._drop(ts.key)
        ts.state = "released"
        ts.previous = None
        ts.run_spec = None
        ts.wanted = False
        ts.waiting_for_data.clear()
        for dts in ts.dependencies:
            dts.dependents.discard(ts)
            if not dts.dependents and not dts.wanted and dts.state in ("fetch", "missing"):
                self._forget(dts)
            elif not dts.dependents and dts.state == "flight":
                dts.previous = "flight"
                dts.state = "cancelled"
        ts.dependencies.clear()
        if not ts.dependents:
            self._forget(ts)

    def _forget(self, ts: TaskState) -> None:
        if ts.state in ("executing", "long-running", "cancelled", "flight"):
            return
        ts.state = "released"
        self._drop(ts.key)
        if self.tasks.get(ts.key) is ts:
            del self.tasks[ts.key]
            ts.state = "forgotten"  # nothing refers to it any more

    # ------------------------------------------------------------------
    # Deciding what to start
    # ------------------------------------------------------------------

    def _next(self) -> list:
        return self._ensure_computing() + self._ensure_communicating()

    def _resources_fit(self, ts: TaskState) -> bool:
        need = ts.resource_restrictions
        if not need:
            return True
        avail = self.available_resources
        return all(avail.get(r, 0) >= n for r, n in need.items())

    def _ensure_computing(self) -> list:
        if self.paused:
            return []
        out = []
        # Tasks waiting for resources first: they are the oldest ready work.
        if self.constrained:
            keep: deque = deque()
            while self.constrained and len(self.executing) < self.nthreads:
                ts = self.constrained.popleft()
                if ts.state != "constrained":
                    continue
                if self._resources_fit(ts):
                    out.append(self._start(ts))
                else:
                    keep.append(ts)
            keep.extend(self.constrained)
            self.constrained = keep
        ready = self.ready
        nthreads = self.nthreads
        most = nthreads * (1 + PREFETCH_PER_THREAD)
        while ready and len(self.executing) < most:
            ts = ready[0][2]
            if ts.state != "ready":
                heapq.heappop(ready)
                continue
            if len(self.executing) >= nthreads and (ts.resource_restrictions
                                                    or ts.duration >= PREFETCH_BELOW):
                break  # it waits for a free thread, not in the pool's queue
            heapq.heappop(ready)
            if not self._resources_fit(ts):
                ts.state = "constrained"
                self.constrained.append(ts)
                continue
            out.append(self._start(ts))
        return out

    def _start(self, ts: TaskState) -> Execute:
        ts.state = "executing"
        self.executing.add(ts)
        if ts.resource_restrictions:
            for r, n in ts.resource_restrictions.items():
                self.available_resources[r] = self.available_resources.get(r, 0) - n
        return Execute(ts.key)

    def _ensure_communicating(self) -> list:
        if self.paused:
            return []
        out = []
        skipped = []
        heap = self.data_needed
        while heap and len(self.in_flight_workers) < self.max_gather_peers:
            item = heapq.heappop(heap)
            ts = item[2]
            if ts.state != "fetch":
                continue
            holders = [w for w in ts.who_has if w not in self.in_flight_workers]
            if not holders:
                if not ts.who_has:
                    self._to_fetch(ts)  # becomes missing
                else:
                    skipped.append(item)
                continue
            worker = min(holders)
            keys = [ts]
            total = max(ts.nbytes, 0)
            # Bundle other keys this peer holds, highest priority first.
            rest = []
            limit = self.max_transfer_bytes
            while heap and total < TRANSFER_BYTES_TARGET:
                other = heapq.heappop(heap)
                ots = other[2]
                if ots.state != "fetch":
                    continue
                if worker in ots.who_has and (limit is None or total + max(ots.nbytes, 0) <= limit):
                    keys.append(ots)
                    total += max(ots.nbytes, 0)
                else:
                    rest.append(other)
            for other in rest:
                heapq.heappush(heap, other)
            for kts in keys:
                kts.state = "flight"
                kts.coming_from = worker
            self.in_flight_workers[worker] = set(keys)
            out.append(GatherDep(worker, [k.key for k in keys], total))
        for item in skipped:
            heapq.heappush(heap, item)
        return out

    # ------------------------------------------------------------------
    # Inspection
    # ------------------------------------------------------------------

    def story(self, *keys) -> list:
        keys = set(keys)
        return [entry for entry in self.log if entry[0] in keys]

    def validate_state(self) -> None:
        for key, ts in self.tasks.items():
            assert ts.key == key
            if ts.state == "memory":
                assert key in self.data, ("memory task without data", ts)
            if ts.state == "waiting":
                assert ts.waiting_for_data, ("waiting for nothing", ts)
            for dts in ts.waiting_for_data:
                assert dts.state != "memory", ("waiting on memory dep", ts, dts)
            if ts.state == "executing":
                assert ts in self.executing
            if ts.state == "flight":
                assert ts.coming_from in self.in_flight_workers, ("flight without transfer", ts)
        for key in self.actors:
            ts = self.tasks.get(key)
            assert ts is not None and ts.actor and ts.state == "memory", ("actor without its task", key, ts)
        for ts in self.executing:
            assert ts.state in ("executing", "cancelled"), ts
        assert len(self.executing) <= self.nthreads * (1 + PREFETCH_PER_THREAD), "too many executing"

    def counts(self) -> dict:
        out: dict = defaultdict(int)
        for ts in self.tasks.values():
            out[ts.state] += 1
        return dict(out)
