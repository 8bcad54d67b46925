"""Work stealing: move tasks waiting on busy workers to idle ones.

Rules of this file
------------------
Pure, like ``SchedulerState``: no sockets, no loop, no clock.  The
``Scheduler`` server calls ``WorkStealing.balance()`` on a timer (and when a
worker joins), sends one ``steal-request`` per decision to the victim, and
feeds the victim's ``steal-response`` back into
``WorkStealing.handle_steal_response``, which returns the messages to send
(like every ``SchedulerState`` event).  Not thread-safe.

Theory of operation
-------------------
The scheduler places a task once (``SchedulerState.decide_worker``), where
its inputs are.  When one worker holds the inputs of many tasks it gets all
of them while others idle; a worker that joins later holds nothing and gets
nothing.  ``balance()`` looks for **thieves** (running workers with a free
thread, or well under the mean load) and **victims** (workers with more
tasks than threads), and for each victim considers its tasks from the last
assigned backwards (the ones that would start last, so the least likely to
be running already), cheapest to move first.

A task moves when it would finish sooner on the thief, by a margin::

    thief_load + transfer + duration + margin  <  victim_load

where the loads are seconds of assigned work per thread (counting the steals
still in flight), ``transfer`` is the bytes of inputs the thief lacks over
the bandwidth estimate plus ``LATENCY``, and ``margin`` (the anti-thrash
margin, ``max(LATENCY, MARGIN_FRACTION * duration)``) stops a task from
bouncing between two workers whose loads are about equal.  A task moved once
is also not moved again for ``COOLDOWN_TICKS`` balance calls.  The loads are
updated after each decision, so one pass does not over-steal.

A task's cost *level* is ``round(log2((input bytes / bandwidth + LATENCY) /
duration) + 6)`` (at least 1; 0 for a task without inputs), as in
dask.distributed: at ``NEVER_LEVEL`` or more the transfer is hundreds of
times the work and the task is never stolen.  Levels order the candidates
and name the metrics.

Restrictions are never broken: a task with ``workers=`` goes only to those
workers (unless it allows others), ``resources=`` only to workers that have
them, and actors never move.  Tasks that seceded (long-running) stay.

The confirm step
----------------
The scheduler does not know which of a worker's tasks are running, so a
steal is a request: the victim answers from its own state.  ``waiting``,
``ready`` or ``constrained``: it drops the task and confirms, and the task is
sent to the thief.  ``executing``, ``long-running``, ``memory``,
``cancelled``, ``flight``, ``error``: rejected, the task stays.  Unknown
(``None`` or ``released``): the task is scheduled again from scratch.  A
task thus never runs twice and is never lost.  A steal in flight is dropped
the moment its task leaves ``processing`` on the victim (it finished, was
released, or the victim left: ``SchedulerState._unassign``), so a late answer
can never move a task that has been assigned anew.

>>> from distributed.scheduler.state import SchedulerState
>>> state = SchedulerState()
>>> _ = state.add_worker("tcp://a:1", nthreads=1)
>>> _ = state.update_data({"x": ["tcp://a:1"]}, {"x": 100}, client="c")
>>> keys = [f"t{i}" for i in range(6)]
>>> _ = state.update_graph("c", dict.fromkeys(keys, b"spec"), dict.fromkeys(keys, ["x"]), keys)
>>> _ = state.add_worker("tcp://b:1", nthreads=1)
>>> stealing = WorkStealing(state)
>>> [(d.victim, d.thief) for d in stealing.balance()][:1]
[('tcp://a:1', 'tcp://b:1')]
"""
from __future__ import annotations

import logging
import math
from collections import defaultdict, deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from distributed.scheduler.state import DEFAULT_TASK_DURATION, SchedulerState, TaskState, WorkerState

__all__ = ["WorkStealing", "StealDecision", "interval_from_config", "LATENCY"]

logger = logging.getLogger(__name__)

#: Seconds a steal costs beyond moving the inputs: the request and answer
#: through the scheduler and the thief's first fetch.  Our batched streams
#: flush every few milliseconds and a LAN round trip is well under one, so
#: 20 ms is generous; dask.distributed uses 100 ms, which blocks steals of
#: tasks shorter than about a second when the inputs are remote (d/d#5390,
#: d/d#6115).
LATENCY = 0.02

#: The anti-thrash margin is at least this fraction of the task's duration.
MARGIN_FRACTION = 0.2

#: Balance calls during which a task moved once stays where it went.
COOLDOWN_TICKS = 5

#: A task this many levels expensive or more is never stolen.
NEVER_LEVEL = 15

#: Bounds that keep one ``balance()`` call cheap on big clusters: victims
#: considered, tasks looked at per victim, thieves tried per task.
MAX_VICTIMS = 10
SCAN_PER_VICTIM = 1000
MAX_THIEVES = 20
#: Steals decided per call at most: a pass stays a few milliseconds even
#: when thousands of tasks could move (the next tick takes more).
MAX_STEALS_PER_TICK = 100

#: A worker's answers that mean "not started; dropped, take it".
_CONFIRMED = frozenset({"waiting", "ready", "constrained"})
#: Answers that mean "the worker does not have it": schedule it again.
_UNKNOWN = frozenset({None, "released", "forgotten"})


@dataclass(slots=True, frozen=True)
class StealDecision:
    """One steal to ask for: move ``key`` from ``victim`` to ``thief``.

    ``stimulus_id`` goes into the ``steal-request`` and comes back in the
    answer; ``cost`` is the estimated transfer seconds, ``level`` the cost
    level (see the module docstring).
    """

    key: Any
    victim: str
    thief: str
    stimulus_id: str
    cost: float
    level: int

    def request(self) -> dict:
        """The ``steal-request`` message for the victim."""
        return {"op": "steal-request", "key": self.key, "stimulus_id": self.stimulus_id}


@dataclass(slots=True)
class _InFlight:
    victim: WorkerState
    thief: WorkerState
    duration: float
    transfer: float
    stimulus_id: str
    level: int


def interval_from_config(value) -> float:
    """The balance interval in seconds from ``work-stealing-interval``: a
    duration string, or a bare number meaning milliseconds (as upstream).

    >>> interval_from_config("100ms"), interval_from_config(250)
    (0.1, 0.25)
    """
    from distributed.config import parse_timedelta

    if isinstance(value, bool) or value is None:
        raise ValueError(f"work-stealing-interval must be a duration, not {value!r}")
    if isinstance(value, (int, float)):
        seconds = value / 1000
    else:
        seconds = parse_timedelta(value)
    if not seconds or seconds <= 0:
        raise ValueError(f"work-stealing-interval must be positive, not {value!r}")
    return seconds


def cost_level(nbytes: int, duration: float, bandwidth: float, latency: float = LATENCY) -> int:
    """The cost level of moving a task with ``nbytes`` of inputs that takes
    ``duration`` seconds (0 for no inputs; ``NEVER_LEVEL`` and up: never).

    >>> cost_level(0, 1.0, 100e6, latency=0.0)
    0
    >>> cost_level(1_000, 1.0, 100e6), cost_level(10**9, 0.001, 100e6) >= NEVER_LEVEL
    (1, True)
    """
    if nbytes <= 0 and not latency:
        return 0
    ratio = (nbytes / bandwidth + latency) / max(duration, 1e-9)
    return max(1, round(math.log2(ratio) + 6))


class WorkStealing:
    """The balancer: decides steals and applies their answers (see the
    module docstring).  ``scheduler.extensions["stealing"]`` is one.

    ``metrics`` counts requests per level (``request_count_total``) and
    their estimated cost (``request_cost_total``), and the answers
    (``confirmed``, ``rejected``, ``rescheduled``, ``stale``).  ``events``
    collects what happened for the event topic "stealing"; the server drains
    it with ``take_events()``.
    """

    def __init__(self, state: SchedulerState, *, latency: float = LATENCY,
                 margin_fraction: float = MARGIN_FRACTION, cooldown_ticks: int = COOLDOWN_TICKS):
        if latency < 0 or margin_fraction < 0 or cooldown_ticks < 0:
            raise ValueError("latency, margin_fraction and cooldown_ticks must not be negative")
        self.state = state
        self.latency = latency
        self.margin_fraction = margin_fraction
        self.cooldown_ticks = cooldown_ticks
        # Shared with the state, which drops an entry when its task leaves
        # processing (SchedulerState._unassign).
        self.in_flight: dict[TaskState, _InFlight] = state.in_flight_steals
        self.count = 0  # steals requested, ever
        self.ticks = 0
        self._moved: dict[Any, int] = {}  # key -> tick it was moved at
        self.metrics: dict[str, Any] = {
            "request_count_total": defaultdict(int),
            "request_cost_total": defaultdict(float),
            "confirmed": 0, "rejected": 0, "rescheduled": 0, "stale": 0,
        }
        self.events: deque = deque(maxlen=100_000)

    # ------------------------------------------------------------------
    # Deciding
    # ------------------------------------------------------------------

    def _loads(self) -> tuple[dict, dict]:
        """Per worker: seconds of assigned work per thread, and the number
        of tasks assigned, both counting the steals in flight."""
        occupancy: dict[WorkerState, float] = {}
        ntasks: dict[WorkerState, int] = {}
        for ws in self.state.workers.values():
            occupancy[ws] = ws.occupancy
            ntasks[ws] = len(ws.processing)
        for steal in self.in_flight.values():
            if steal.victim in occupancy:
                occupancy[steal.victim] -= steal.duration
                ntasks[steal.victim] -= 1
            if steal.thief in occupancy:
                occupancy[steal.thief] += steal.duration + steal.transfer
                ntasks[steal.thief] += 1
        return {ws: occ / ws.nthreads for ws, occ in occupancy.items()}, ntasks

    def balance(self) -> list[StealDecision]:
        """The steals to ask for now (each already counted as in flight).

        Cheap when there is nothing to do: one pass over the workers.
        """
        self.ticks += 1
        state = self.state
        if len(state.workers) < 2:
            return []
        load, ntasks = self._loads()
        running = [ws for ws in state.workers.values() if ws.status == "running"]
        if not running:
            return []
        mean = sum(load[ws] for ws in running) / len(running)
        thieves = [ws for ws in running
                   if ntasks[ws] < ws.nthreads or load[ws] < mean / 2]
        victims = [ws for ws in state.workers.values()
                   if ntasks[ws] > ws.nthreads and load[ws] > mean]
        if not thieves or not victims:
            return []
        if self._moved:
            horizon = self.ticks - self.cooldown_ticks
            self._moved = {k: t for k, t in self._moved.items() if t > horizon}
        victims.sort(key=lambda ws: -load[ws])
        thieves.sort(key=lambda ws: (load[ws], ws.address))
        thieves = thieves[:MAX_THIEVES]
        decisions: list[StealDecision] = []
        for victim in victims[:MAX_VICTIMS]:
            decisions.extend(self._steal_from(victim, thieves, load, ntasks,
                                              MAX_STEALS_PER_TICK - len(decisions)))
            if len(decisions) >= MAX_STEALS_PER_TICK:
                break
        return decisions

    def _candidates(self, victim: WorkerState, keep: int,
                    scan: int = SCAN_PER_VICTIM) -> list[tuple[int, float, int, TaskState]]:
        """Tasks of ``victim`` worth a look, as (level, duration, input
        bytes, task), cheapest level first.  The ``keep`` tasks assigned
        first are left alone: they are the ones most likely running."""
        state = self.state
        durations = state.durations
        bandwidth = state.bandwidth
        in_flight = self.in_flight
        moved = self._moved
        out = []
        processing = victim.processing
        budget = min(len(processing) - keep, scan)
        for ts in reversed(processing):
            if budget <= 0:
                break
            budget -= 1
            if ts in in_flight or ts.key in moved or ts in victim.long_running or ts.actor:
                continue
            duration = durations.get(ts.prefix, processing[ts] or DEFAULT_TASK_DURATION)
            if duration <= 0:
                continue
            nbytes = sum(max(dts.nbytes, 0) for dts in ts.dependencies)
            level = cost_level(nbytes, duration, bandwidth, self.latency) if ts.dependencies else 0
            if level >= NEVER_LEVEL:
                continue
            out.append((level, duration, nbytes, ts))
        out.sort(key=lambda c: c[0])
        return out

    def _steal_from(self, victim: WorkerState, thieves: list[WorkerState], load: dict,
                    ntasks: dict, most: int) -> list[StealDecision]:
        state = self.state
        bandwidth = state.bandwidth
        latency = self.latency
        decisions: list[StealDecision] = []
        # Looking at a few times as many tasks as may move finds the cheap ones.
        for level, duration, nbytes, ts in self._candidates(victim, victim.nthreads,
                                                            min(SCAN_PER_VICTIM, 4 * most)):
            if ntasks[victim] <= victim.nthreads or len(decisions) >= most:
                break  # what is left is running or about to
            margin = max(latency, self.margin_fraction * duration)
            limit = load[victim] - margin  # a thief must finish it before this
            thieves.sort(key=load.__getitem__)  # least loaded first (a few, cheap)
            best = None
            for thief in thieves:
                # Transfer costs at least the latency: no later thief can
                # win (by more than a tenth of a millisecond, not worth a look).
                floor = load[thief] + latency + duration
                if floor >= limit or (best is not None and floor + 1e-4 >= best[0]):
                    break
                if not _may_run(ts, thief):
                    continue
                missing = nbytes - sum(max(dts.nbytes, 0) for dts in ts.dependencies
                                       if thief in dts.who_has) if nbytes else 0
                transfer = missing / bandwidth + latency
                finish = load[thief] + transfer + duration
                if finish < limit and (best is None or finish < best[0]):
                    best = (finish, thief, transfer)
            if best is None:
                continue
            _, thief, transfer = best
            self.count += 1
            sid = f"steal-{self.count}"
            self.in_flight[ts] = _InFlight(victim, thief, duration, transfer, sid, level)
            load[victim] -= duration / victim.nthreads
            load[thief] += (duration + transfer) / thief.nthreads
            ntasks[victim] -= 1
            ntasks[thief] += 1
            self._moved[ts.key] = self.ticks
            self.metrics["request_count_total"][level] += 1
            self.metrics["request_cost_total"][level] += transfer
            decisions.append(StealDecision(ts.key, victim.address, thief.address, sid, transfer, level))
            self.events.append({"action": "request", "key": ts.key, "victim": victim.address,
                                "thief": thief.address, "level": level, "stimulus_id": sid})
        return decisions

    @staticmethod
    def requests(decisions: Iterable[StealDecision]) -> dict[str, list[dict]]:
        """The ``steal-request`` messages of ``decisions``, by victim.

        >>> WorkStealing.requests([StealDecision("x", "tcp://a:1", "tcp://b:1", "steal-1", 0.0, 0)])
        {'tcp://a:1': [{'op': 'steal-request', 'key': 'x', 'stimulus_id': 'steal-1'}]}
        """
        out: dict[str, list[dict]] = defaultdict(list)
        for d in decisions:
            out[d.victim].append(d.request())
        return dict(out)

    # ------------------------------------------------------------------
    # Answers
    # ------------------------------------------------------------------

    def handle_steal_response(self, key, stimulus_id: str, state: str | None,
                              worker: str | None = None) -> tuple[dict, dict]:
        """The victim's answer to a ``steal-request``: its state for
        ``key`` when the request arrived.  Returns ``(client_msgs,
        worker_msgs)`` like every scheduler event.

        >>> stealing.handle_steal_response("x", "steal-9", "ready")   # doctest: +SKIP
        ({}, {'tcp://b:1': [{'op': 'compute-task', ...}]})
        """
        sstate = self.state
        ts = sstate.tasks.get(key)
        steal = self.in_flight.get(ts) if ts is not None else None
        if steal is None or steal.stimulus_id != stimulus_id or (
                worker is not None and steal.victim.address != worker):
            # The task left processing meanwhile (finished, released, its
            # worker left): nothing to move.
            self.metrics["stale"] += 1
            return {}, {}
        del self.in_flight[ts]
        victim, thief = steal.victim, steal.thief
        event = {"key": key, "victim": victim.address, "thief": thief.address,
                 "state": state, "stimulus_id": stimulus_id}
        if state in _CONFIRMED:
            if sstate.workers.get(thief.address) is thief and thief.status == "running" \
                    and _may_run(ts, thief):
                self.metrics["confirmed"] += 1
                self.events.append({"action": "confirm", **event})
                return sstate.move_processing(key, thief.address)
            # The thief left or paused: the victim let it go, so decide anew.
            self.metrics["rescheduled"] += 1
            self.events.append({"action": "reschedule", **event})
            return sstate.transitions({key: "waiting"})
        if state in _UNKNOWN:
            self.metrics["rescheduled"] += 1
            self.events.append({"action": "reschedule", **event})
            return sstate.transitions({key: "waiting"})
        self.metrics["rejected"] += 1
        self.events.append({"action": "reject", **event})
        return {}, {}

    def take_events(self) -> list[dict]:
        """The events since the last call (for the topic "stealing")."""
        out = list(self.events)
        self.events.clear()
        return out

    @property
    def in_flight_occupancy(self) -> dict[str, float]:
        """Seconds of work each worker gains (thief) or loses (victim) once
        the steals in flight are answered."""
        out: dict[str, float] = defaultdict(float)
        for steal in self.in_flight.values():
            out[steal.victim.address] -= steal.duration
            out[steal.thief.address] += steal.duration + steal.transfer
        return dict(out)


def _may_run(ts: TaskState, ws: WorkerState) -> bool:
    """Whether moving ``ts`` to ``ws`` keeps its restrictions: workers named
    in ``workers=`` (unless ``allow_other_workers``), ``resources=`` always,
    and an actor never moves."""
    if not ts.has_restrictions:
        return True
    if ts.actor:
        return False
    need = ts.resource_restrictions
    if need and any(ws.resources.get(r, 0) < n for r, n in need.items()):
        return False
    allowed = ts.worker_restrictions
    if allowed and not ts.loose_restrictions:
        return (ws.address in allowed or ws.host in allowed or ws.name in allowed
                or str(ws.name) in allowed)
    return True
