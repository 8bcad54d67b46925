"""Why is it stuck: explain unfinished work by its root causes.

Pure functions over a ``SchedulerState`` (``distributed/scheduler/state.py``):
no I/O, no clock (the time is an argument), nothing changed.  They run on
the scheduler's event loop, on demand, and cost O(the unfinished part of the
graph below the keys asked about), or O(the stuck frontier) for
``stalled_counts``: never a scan over all tasks.

Theory of operation
-------------------
A key that is not in memory waits on something.  Walking its dependencies
that are not in memory leads to the *frontier*: tasks that wait on no other
task (``no-worker``, ``queued``, ``processing``, ``erred``).  Each frontier
task is classified by a fixed ``reason``:

* ``no-workers``: no worker is connected at all;
* ``no-worker-resource``: it needs a resource (``GPU=1``) that no worker has
  enough of;
* ``no-worker-restriction``: it is restricted to workers (``workers=``) none
  of which is connected;
* ``waiting-on-lost-worker``: restricted to a worker that left (``departed``),
  or processing on a worker not heard from for ``stale_after`` seconds;
* ``all-workers-paused``: every worker that could run it is paused (memory
  above the pause threshold);
* ``upstream-erred``: an input failed; the root is the task whose own code
  raised;
* ``long-running-outlier``: running ``outlier_factor`` times longer than the
  typical duration of its prefix (needs ``running`` start times);
* ``queued-saturated``: a root task held back on the scheduler because every
  worker is busy.  Not a fault: the cluster is working through a large graph;
* ``running``: processing normally (not a stall; ``explain`` lists it so an
  answer is never empty while work is left).

``stalled_counts`` counts frontier tasks per reason, from the scheduler's
own indexes (``unrunnable``, ``queued``, each worker's ``processing``),
without walking anything: helper code for the gauge
``dask_scheduler_stalled_tasks{reason}``.

``critical_path`` and ``eta`` give the time still needed: the longest chain
of remaining work (per-prefix duration estimates) and the total remaining
work spread over every thread, whichever is larger.

>>> from distributed.scheduler.state import SchedulerState
>>> state = SchedulerState()
>>> _ = state.add_worker("tcp://127.0.0.1:1", nthreads=1, resources={"CPU": 1})
>>> state.add_client("c")
>>> _ = state.update_graph("c", tasks={"x": b"spec"}, dependencies={}, keys=["x"],
...                        resources={"x": {"GPU": 1}})
>>> [s["reason"] for s in explain(state, ["x"])]
['no-worker-resource']
>>> stalled_counts(state)["no-worker-resource"]
1
"""
from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["REASONS", "STALL_REASONS", "explain", "stalled_counts", "critical_path", "eta",
           "DEFAULT_OUTLIER_FACTOR", "DEFAULT_STALE_AFTER"]

#: Every reason ``explain`` may give, in order of how much it needs a human.
REASONS = (
    "no-workers",
    "no-worker-resource",
    "no-worker-restriction",
    "waiting-on-lost-worker",
    "all-workers-paused",
    "upstream-erred",
    "long-running-outlier",
    "queued-saturated",
    "running",
)

#: The reasons ``stalled_counts`` counts (all but ``running``).
STALL_REASONS = REASONS[:-1]

#: A task running this many times its prefix's typical duration is an outlier.
DEFAULT_OUTLIER_FACTOR = 40.0
#: ... and only once it has run at least this long (seconds): a 1 ms task at
#: 40 ms is noise, not a stall.
DEFAULT_OUTLIER_MIN_SECONDS = 5.0
#: A worker not heard from for this long (seconds) counts as lost.
DEFAULT_STALE_AFTER = 30.0

# Keys listed per explanation; the count is always exact.
_SAMPLE = 10

# Reasons explained one root task at a time (the others group alike tasks).
_PER_ROOT = ("upstream-erred", "long-running-outlier", "waiting-on-lost-worker")


def _prefix(ts: Any) -> str:
    prefix = ts.prefix
    return prefix if isinstance(prefix, str) else getattr(prefix, "name", str(prefix))


def _fmt_resources(need: Mapping) -> str:
    return ", ".join(f"{r}={n:g}" if isinstance(n, (int, float)) else f"{r}={n}" for r, n in need.items())


def _matches_restriction(ws: Any, allowed: Iterable) -> bool:
    return (ws.address in allowed or ws.host in allowed or ws.name in allowed
            or str(ws.name) in allowed)


class _Classifier:
    """Classifies frontier tasks; holds the context both entry points share."""

    def __init__(self, state: Any, now: float | None, running: Mapping | None,
                 departed: Mapping | None, typical: Mapping | None,
                 outlier_factor: float, outlier_min_seconds: float, stale_after: float):
        self.state = state
        self.now = now
        self.running = running or {}
        self.departed = departed or {}
        self.typical = typical if typical is not None else state.durations
        self.outlier_factor = outlier_factor
        self.outlier_min_seconds = outlier_min_seconds
        self.stale_after = stale_after
        workers = state.workers.values()
        self.any_running = any(ws.status == "running" for ws in workers)

    def classify(self, ts: Any) -> tuple[str, Any, str, dict]:
        """``(reason, root_key, message, detail)`` for one frontier task."""
        state = ts.state
        if state == "erred":
            return self._erred(ts)
        if state == "no-worker":
            return self._no_worker(ts)
        if state == "queued":
            if not self.state.workers:
                return "no-workers", ts.key, "no worker is connected to the scheduler", {}
            if not self.any_running:
                return self._all_paused(ts)
            nthreads = sum(ws.nthreads for ws in self.state.workers.values())
            return ("queued-saturated", ts.key,
                    f"queued on the scheduler: every worker is busy ({nthreads} threads on "
                    f"{len(self.state.workers)} workers); it starts as slots free up",
                    {"nthreads": nthreads})
        if state == "processing":
            return self._processing(ts)
        # released/waiting with nothing left to wait on: about to move.
        return "running", ts.key, f"{ts.state}: being scheduled", {}

    def _erred(self, ts: Any) -> tuple[str, Any, str, dict]:
        blame = ts.exception_blame
        root = blame if blame is not None else ts
        text = root.exception_text or ts.exception_text or "erred"
        if root is ts:
            msg = f"{ts.key!r} failed: {text}"
        else:
            msg = f"input {root.key!r} failed: {text}"
        return "upstream-erred", root.key, msg, {"exception_text": text}

    def _all_paused(self, ts: Any) -> tuple[str, Any, str, dict]:
        paused = [ws.address for ws in self.state.workers.values() if ws.status == "paused"]
        return ("all-workers-paused", ts.key,
                f"every worker able to run it is paused ({len(paused)} paused; memory above "
                "the pause threshold): it starts when one frees memory or a worker joins",
                {"paused": paused[:_SAMPLE]})

    def _no_worker(self, ts: Any) -> tuple[str, Any, str, dict]:
        workers = list(self.state.workers.values())
        if not workers:
            return "no-workers", ts.key, "no worker is connected to the scheduler", {}
        need = ts.resource_restrictions
        if need:
            able = [ws for ws in workers
                    if all(ws.resources.get(r, 0) >= n for r, n in need.items())]
            if not able:
                have = sorted({r for ws in workers for r in ws.resources})
                missing = [r for r in need if not any(ws.resources.get(r, 0) >= need[r] for ws in workers)]
                return ("no-worker-resource", ts.key,
                        f"needs {_fmt_resources(need)}; no worker has enough "
                        f"{', '.join(map(str, missing))} (worker resources: "
                        f"{', '.join(map(str, have)) or 'none'})",
                        {"needs": dict(need), "missing": missing})
            workers = able
        allowed = ts.worker_restrictions
        if allowed:
            able = [ws for ws in workers if _matches_restriction(ws, allowed)]
            if not able and ts.loose_restrictions:
                able = workers
            if not able:
                gone = [a for a in allowed if a in self.departed]
                if gone:
                    when = self.departed[gone[0]]
                    ago = f" {self.now - when:.0f}s ago" if self.now is not None and when else ""
                    return ("waiting-on-lost-worker", ts.key,
                            f"restricted to {sorted(map(str, allowed))}; {gone[0]} left the "
                            f"cluster{ago} and no allowed worker is connected",
                            {"allowed": sorted(map(str, allowed)), "lost": gone})
                return ("no-worker-restriction", ts.key,
                        f"restricted to {sorted(map(str, allowed))}; none of them is connected",
                        {"allowed": sorted(map(str, allowed))})
            workers = able
        if not any(ws.status == "running" for ws in workers):
            return self._all_paused(ts)
        # Workers able and running exist: the next worker event reschedules it.
        return "running", ts.key, "no-worker: being rescheduled", {}

    def _processing(self, ts: Any) -> tuple[str, Any, str, dict]:
        ws = ts.processing_on
        addr = ws.address if ws is not None else None
        if ws is not None and self.now is not None and ws.last_seen:
            silent = self.now - ws.last_seen
            if silent > self.stale_after:
                return ("waiting-on-lost-worker", ts.key,
                        f"processing on {addr}, not heard from for {silent:.0f}s",
                        {"worker": addr, "silent": silent})
        start = self.running.get(ts.key)
        if start is not None and self.now is not None:
            elapsed = self.now - start
            prefix = _prefix(ts)
            typical = self.typical.get(prefix)
            if (typical and elapsed >= self.outlier_min_seconds
                    and elapsed > self.outlier_factor * typical):
                return ("long-running-outlier", ts.key,
                        f"running for {elapsed:.1f}s on {addr}, {elapsed / typical:.0f}x the "
                        f"typical {typical:.3g}s of {prefix!r}",
                        {"worker": addr, "elapsed": elapsed, "typical": typical})
        if ws is not None and ws.status == "paused" and ts in ws.processing and start is None:
            if not self.any_running:
                return self._all_paused(ts)
        return "running", ts.key, f"processing on {addr}", {"worker": addr}


def _walk(roots: Iterable, below: Any) -> tuple[list, set]:
    """Every task reachable from ``roots`` through ``below(ts)`` (the
    dependencies to follow), each once, in an order where a task comes
    before its dependencies; also the set of them.  Iterative: graphs are
    deeper than Python's recursion limit."""
    seen: set = set()
    topo: list = []
    stack = list(roots)
    while stack:
        ts = stack.pop()
        if ts in seen:
            continue
        seen.add(ts)
        topo.append(ts)
        stack.extend(d for d in below(ts) if d not in seen)
    return topo, seen


def _frontier(state: Any, keys: Iterable) -> dict[Any, list]:
    """Walk unfinished dependencies from ``keys``; ``{frontier task: [asked
    keys blocked by it]}``.  Each task is visited once."""
    tasks = state.tasks
    blocked: dict[Any, list] = {}
    # For each task, which asked keys reach it: propagated down the walk.
    reach: dict[Any, set] = {}
    order: list = []
    for key in keys:
        ts = tasks.get(key)
        if ts is None or ts.state == "memory":
            continue
        reach.setdefault(ts, set()).add(key)
        order.append(ts)
    topo, seen = _walk(order, lambda ts: [d for d in ts.dependencies if d.state != "memory"]
                       if ts.state in ("waiting", "released") else ())
    # Propagate reach along edges; a task with no unfinished dependency (or
    # one not waiting at all) is on the frontier.
    for ts in _toposort(topo):
        here = reach.get(ts, set())
        deps = [d for d in ts.dependencies if d.state != "memory"] if ts.state in ("waiting", "released") else []
        if deps:
            for d in deps:
                reach.setdefault(d, set()).update(here)
        else:
            blocked[ts] = sorted(here, key=str)
    return blocked


def _toposort(tasks: list) -> list:
    """``tasks`` ordered so that each comes before its dependencies."""
    members = set(tasks)
    indeg = {ts: 0 for ts in tasks}
    for ts in tasks:
        for d in ts.dependencies:
            if d in members and ts.state in ("waiting", "released"):
                indeg[d] += 1
    ready = [ts for ts in tasks if indeg[ts] == 0]
    out = []
    while ready:
        ts = ready.pop()
        out.append(ts)
        if ts.state in ("waiting", "released"):
            for d in ts.dependencies:
                if d in members:
                    indeg[d] -= 1
                    if indeg[d] == 0:
                        ready.append(d)
    return out


def explain(state: Any, keys: Iterable, *, now: float | None = None, running: Mapping | None = None,
            departed: Mapping | None = None, typical: Mapping | None = None,
            outlier_factor: float = DEFAULT_OUTLIER_FACTOR,
            outlier_min_seconds: float = DEFAULT_OUTLIER_MIN_SECONDS,
            stale_after: float = DEFAULT_STALE_AFTER) -> list[dict]:
    """Why the unfinished ``keys`` are not done: one entry per root cause.

    Each entry is ``{"reason", "root", "roots", "n_roots", "message",
    "keys", "n_keys", "detail"}``: ``root`` is a task at the bottom of the
    problem (``roots``: up to 10 of the ``n_roots`` tasks stuck this same
    way), ``keys`` (at most 10 shown, ``n_keys`` in all) the asked keys held
    back.
    Entries come in the order of ``REASONS`` (most in need of a human first).
    Keys the scheduler does not know are reported as ``"unknown"``; keys in
    memory are left out.

    Optional context (none of it is in the state): ``now`` (seconds since the
    epoch), ``running`` (key -> when its execution started, from the
    workers), ``departed`` (worker address or name -> when it left),
    ``typical`` (prefix -> typical duration; default the scheduler's
    per-prefix estimates).

    >>> from distributed.scheduler.state import SchedulerState
    >>> state = SchedulerState()
    >>> state.add_client("c")
    >>> _ = state.update_graph("c", tasks={"x": b"s"}, dependencies={}, keys=["x"])
    >>> explain(state, ["x"])[0]["reason"]
    'no-workers'
    """
    keys = list(keys)
    tasks = state.tasks
    unknown = [k for k in keys if k not in tasks]
    clf = _Classifier(state, now, running, departed, typical, outlier_factor,
                      outlier_min_seconds, stale_after)
    groups: dict[tuple, dict] = {}
    for ts, asked in _frontier(state, [k for k in keys if k in tasks]).items():
        reason, root, message, detail = clf.classify(ts)
        # One entry per failed root or outlier; the other reasons group all
        # tasks stuck the same way (10,000 tasks needing a GPU: one entry).
        if reason in _PER_ROOT:
            group = (reason, root)
        elif reason == "running":
            group = (reason,)
            message, detail = "processing or being scheduled: not stalled", {}
        else:
            group = (reason, message)
        entry = groups.get(group)
        if entry is None:
            entry = groups[group] = {"reason": reason, "root": root, "message": message,
                                     "keys": set(), "roots": [], "n_roots": 0, "detail": detail}
        entry["keys"].update(asked)
        entry["n_roots"] += 1
        if len(entry["roots"]) < _SAMPLE:
            entry["roots"].append(root)
    rank = {r: i for i, r in enumerate(REASONS)}
    out = []
    for entry in sorted(groups.values(), key=lambda e: (rank[e["reason"]], -len(e["keys"]), str(e["root"]))):
        asked = sorted(entry.pop("keys"), key=str)
        entry["n_keys"] = len(asked)
        entry["keys"] = asked[:_SAMPLE]
        out.append(entry)
    if unknown:
        out.append({"reason": "unknown", "root": None, "roots": [], "n_roots": 0,
                    "message": "the scheduler does not know these keys (released, forgotten or never submitted)",
                    "keys": unknown[:_SAMPLE], "n_keys": len(unknown), "detail": {}})
    return out


def stalled_counts(state: Any, *, now: float | None = None, running: Mapping | None = None,
                   departed: Mapping | None = None, erred: Iterable | None = None,
                   typical: Mapping | None = None,
                   outlier_factor: float = DEFAULT_OUTLIER_FACTOR,
                   outlier_min_seconds: float = DEFAULT_OUTLIER_MIN_SECONDS,
                   stale_after: float = DEFAULT_STALE_AFTER) -> dict[str, int]:
    """How many frontier tasks are stalled, per reason (every reason of
    ``STALL_REASONS`` is present, zero included).

    Cost: O(no-worker + queued + processing tasks), from the scheduler's own
    indexes, never a scan over all tasks.  ``upstream-erred`` counts the
    failed tasks in ``erred`` (e.g. the keys of the scheduler's
    ``"task-erred"`` event topic) that are still erred and still wanted;
    without ``erred`` it is 0.  The other keywords are as in ``explain``.

    >>> from distributed.scheduler.state import SchedulerState
    >>> stalled_counts(SchedulerState())["no-workers"]
    0
    """
    counts = dict.fromkeys(STALL_REASONS, 0)
    clf = _Classifier(state, now, running, departed, typical, outlier_factor,
                      outlier_min_seconds, stale_after)
    for ts in state.unrunnable:
        reason = clf.classify(ts)[0]
        if reason in counts:
            counts[reason] += 1
    queued = sum(1 for _, _, ts in state.queued if ts.state == "queued")
    if queued:
        if not state.workers:
            counts["no-workers"] += queued
        elif not clf.any_running:
            counts["all-workers-paused"] += queued
        else:
            counts["queued-saturated"] += queued
    if now is not None:
        for ws in state.workers.values():
            if not ws.processing:
                continue
            if ws.last_seen and now - ws.last_seen > stale_after:
                counts["waiting-on-lost-worker"] += len(ws.processing)
                continue
            if running:
                for ts in ws.processing:
                    if ts.key in running and clf.classify(ts)[0] == "long-running-outlier":
                        counts["long-running-outlier"] += 1
    if erred:
        tasks = state.tasks
        for key in set(erred):
            ts = tasks.get(key)
            if ts is not None and ts.state == "erred" and (ts.who_wants or ts.dependents):
                counts["upstream-erred"] += 1
    return counts


def _remaining_seconds(ts: Any, durations: Mapping, default: float, now: float | None,
                       running: Mapping) -> float:
    d = durations.get(_prefix(ts), default)
    if ts.state == "processing" and now is not None and ts.key in running:
        return max(d - (now - running[ts.key]), 0.0)
    return d


def critical_path(state: Any, keys: Iterable | None = None, *, durations: Mapping | None = None,
                  now: float | None = None, running: Mapping | None = None,
                  default: float = 0.5) -> tuple[float, list, float]:
    """``(seconds, path, work)``: the longest chain of remaining work below
    ``keys`` (default every task a client wants), its keys from first to
    run to last, and the total remaining work in seconds.

    Only tasks not in memory count (erred ones do not: they will not run).
    A task's cost is its prefix's estimate in ``durations`` (default the
    scheduler's own per-prefix estimates), less what it has already run
    when ``now`` and ``running`` say so.  O(remaining tasks + their edges).

    >>> from distributed.scheduler.state import SchedulerState
    >>> state = SchedulerState()
    >>> state.add_client("c")
    >>> _ = state.update_graph("c", tasks={"a": b"s", "b": b"s"}, dependencies={"b": ["a"]}, keys=["b"])
    >>> critical_path(state, ["b"], durations={"a": 2.0, "b": 1.0})
    (3.0, ['a', 'b'], 3.0)
    """
    durations = state.durations if durations is None else durations
    running = running or {}
    if keys is None:
        roots = [ts for cs in state.clients.values() for ts in cs.wants_what]
    else:
        roots = [state.tasks[k] for k in keys if k in state.tasks]
    roots = [ts for ts in roots if ts.state not in ("memory", "erred")]
    topo, seen = _walk(roots, lambda ts: [d for d in ts.dependencies
                                          if d.state not in ("memory", "erred")])
    order = _toposort_all(topo, seen)
    finish: dict = {}
    best_dep: dict = {}
    work = 0.0
    for ts in reversed(order):  # dependencies first
        cost = _remaining_seconds(ts, durations, default, now, running)
        work += cost
        longest, via = 0.0, None
        for d in ts.dependencies:
            f = finish.get(d)
            if f is not None and f > longest:
                longest, via = f, d
        finish[ts] = longest + cost
        best_dep[ts] = via
    if not finish:
        return 0.0, [], 0.0
    end = max(finish, key=lambda t: (finish[t], str(t.key)))
    path = []
    node = end
    while node is not None:
        path.append(node.key)
        node = best_dep[node]
    path.reverse()
    return finish[end], path, work


def _toposort_all(tasks: list, members: set) -> list:
    """``tasks`` (closed under unfinished dependencies) ordered so that
    each comes before its dependencies."""
    indeg = dict.fromkeys(tasks, 0)
    for ts in tasks:
        for d in ts.dependencies:
            if d in members:
                indeg[d] += 1
    ready = [ts for ts in tasks if indeg[ts] == 0]
    out = []
    while ready:
        ts = ready.pop()
        out.append(ts)
        for d in ts.dependencies:
            if d in members:
                indeg[d] -= 1
                if indeg[d] == 0:
                    ready.append(d)
    return out


def eta(state: Any, keys: Iterable | None = None, **kwargs: Any) -> dict:
    """Estimated seconds until ``keys`` (default all wanted work) are done:
    ``max(critical path, remaining work / running threads)``.

    Returns ``{"eta", "critical_path", "work", "nthreads", "path",
    "bottleneck"}``; ``bottleneck`` names the prefix with the largest share
    of the critical path (``{"prefix", "share"}``), or None.  Keywords go
    to ``critical_path``.

    >>> from distributed.scheduler.state import SchedulerState
    >>> eta(SchedulerState())["eta"]
    0.0
    """
    length, path, work = critical_path(state, keys, **kwargs)
    nthreads = sum(ws.nthreads for ws in state.workers.values() if ws.status == "running")
    spread = work / nthreads if nthreads else (work if work else 0.0)
    bottleneck = None
    if path and length > 0:
        durations = kwargs.get("durations") or state.durations
        default = kwargs.get("default", 0.5)
        share: dict[str, float] = {}
        for key in path:
            ts = state.tasks[key]
            share[_prefix(ts)] = share.get(_prefix(ts), 0.0) + durations.get(_prefix(ts), default)
        total = sum(share.values()) or 1.0
        name = max(share, key=lambda p: (share[p], p))
        bottleneck = {"prefix": name, "share": share[name] / total}
    return {"eta": max(length, spread), "critical_path": length, "work": work, "nthreads": nthreads,
            "path": path[:_SAMPLE * 10], "bottleneck": bottleneck}


def typical_durations(samples: Mapping[str, Iterable[float]]) -> dict[str, float]:
    """Median duration per prefix from recorded samples (e.g. the task
    stream's recent compute times).

    >>> typical_durations({"inc": [1.0, 3.0, 2.0]})
    {'inc': 2.0}
    """
    return {p: statistics.median(v) for p, v in samples.items() if v}
