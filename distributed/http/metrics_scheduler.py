"""The scheduler's ``/metrics`` families (upstream's ``dask_scheduler_*`` names).

Built at scrape time from the scheduler's own state and its
``PrefixTracker``: O(workers + prefixes), never O(tasks).  Names, types and
labels are upstream's (DIAGNOSTICS §1.3) so existing Grafana boards work;
``dask_scheduler_info`` is ours.  Not emitted: the GIL-contention counter
(upstream only has it with gilknocker) and the work-stealing families (this
scheduler does not steal work).

Runs on the scheduler's event loop.
"""
from __future__ import annotations

import functools
import time

from distributed.http.metrics_process import GCTimer, process_families
from distributed.http.prometheus import MetricFamily, label_set

__all__ = ["collect"]

_TASK_STATES = ("released", "waiting", "no-worker", "queued", "processing", "memory", "erred")
_TASK_STATE_SET = frozenset(_TASK_STATES)
_WORKER_STATES = ("idle", "partially_saturated", "saturated", "paused", "retiring")


@functools.lru_cache(maxsize=16384)
def _prefix_labels(prefix: str, state: str | None = None) -> str:
    """The rendered label set of a prefix (and state), kept between scrapes."""
    if state is None:
        return label_set(task_prefix_name=prefix)
    return label_set(task_prefix_name=prefix, state=state)


def _one(name: str, kind: str, help_: str, value: float) -> MetricFamily:
    f = MetricFamily(name, kind, help_)
    f.add(value)
    return f


def _worker_states(scheduler) -> dict[str, int]:
    out = dict.fromkeys(_WORKER_STATES, 0)
    for ws in scheduler.state.workers.values():
        if ws.status == "paused":
            out["paused"] += 1
        elif ws.status in ("closing", "closing_gracefully", "retiring"):
            out["retiring"] += 1
        elif not ws.processing:
            out["idle"] += 1
        elif len(ws.processing) > ws.nthreads:
            out["saturated"] += 1
        else:
            out["partially_saturated"] += 1
    return out


def collect(http) -> list[MetricFamily]:
    """All families for the scheduler served by ``http`` (a ``SchedulerHTTP``)."""
    scheduler, tracker = http.scheduler, http.tracker
    state = scheduler.state
    ns = "dask_scheduler_"
    fams = [
        _one(ns + "clients", "gauge", "Number of clients connected",
             sum(1 for c in state.clients if c != "fire-and-forget")),
        _one(ns + "client_connections_added", "counter", "Number of client connections added",
             tracker.clients_added),
        _one(ns + "client_connections_removed", "counter", "Number of client connections removed",
             tracker.clients_removed),
        _one(ns + "desired_workers", "gauge", "Number of workers the scheduler would like to have",
             http.desired_workers()),
    ]
    f = MetricFamily(ns + "workers", "gauge", "Number of workers known by scheduler", labels=("state",))
    for s, n in _worker_states(scheduler).items():
        f.add(n, state=s)
    fams.append(f)
    fams += [
        _one(ns + "workers_added", "counter", "Number of workers added", tracker.workers_added),
        _one(ns + "workers_removed", "counter", "Number of workers removed", tracker.workers_removed),
        _one(ns + "gc_collection_seconds", "counter", "Total time spent on garbage collection",
             GCTimer.get().seconds),
        _one(ns + "last_time", "counter", "SystemMonitor last time", time.time()),
    ]
    totals = tracker.totals()
    f = MetricFamily(ns + "tasks", "gauge", "Number of tasks known by scheduler", labels=("state",))
    for s in _TASK_STATES:
        f.add(totals.get(s, 0), state=s)
    fams.append(f)
    fams.append(_one(ns + "tasks_forgotten", "counter",
                     "Total number of processed tasks no longer in memory and already removed from the "
                     "scheduler job queue", tracker.forgotten_total))
    prefixes = list(tracker.prefixes.values())
    suspicious = MetricFamily(ns + "tasks_suspicious", "counter",
                              "Total possible number of tasks that caused a worker to crash",
                              labels=("task_prefix_name",))
    compute = MetricFamily(ns + "tasks_compute_seconds", "counter",
                           "Total time (per prefix) spent computing tasks", labels=("task_prefix_name",))
    transfer = MetricFamily(ns + "tasks_transfer_seconds", "counter",
                            "Total time (per prefix) spent transferring", labels=("task_prefix_name",))
    output = MetricFamily(ns + "tasks_output_bytes", "gauge",
                          "Current size of in memory tasks, broken down by task prefix",
                          labels=("task_prefix_name",))
    totals_f = MetricFamily(ns + "prefix_state_totals", "counter",
                            "Accumulated count of task prefix in each state",
                            labels=("task_prefix_name", "state"))
    # One rendered label set per prefix, shared by its five families; the
    # samples lists are appended to directly (this loop runs per prefix).
    suspicious_counts = tracker.suspicious
    add_susp, add_comp = suspicious.samples.append, compute.samples.append
    add_xfer, add_out, add_tot = transfer.samples.append, output.samples.append, totals_f.samples.append
    for p in prefixes:
        name = p.name
        lbl = _prefix_labels(name)
        add_susp((lbl, suspicious_counts.get(name, 0)))
        add_comp((lbl, p.compute_seconds))
        add_xfer((lbl, 0.0))  # transfers are not timed per prefix yet
        add_out((lbl, p.nbytes if p.nbytes > 0 else 0))
        for s, n in p.entered.items():
            if n and s in _TASK_STATE_SET:
                add_tot((_prefix_labels(name, s), n))
    fams += [suspicious,
             _one(ns + "task_groups", "gauge", "Number of task groups known by scheduler",
                  sum(1 for p in prefixes if p.ntasks > 0)),
             compute, transfer, output, totals_f,
             _one(ns + "tick_duration_maximum_seconds", "gauge",
                  "Maximum tick duration observed since Prometheus last scraped metrics",
                  http.ticks.read_maximum()),
             _one(ns + "tick_count", "counter", "Total number of ticks observed since the server started",
                  http.ticks.count)]
    info = MetricFamily(ns + "info", "gauge", "This scheduler (always 1)", labels=("address", "version"))
    info.add(1, address=scheduler.address, version=_version())
    fams.append(info)
    stalled = http.stalled_counts()
    if stalled is not None:
        f = MetricFamily(ns + "stalled_tasks", "gauge", "Unfinished tasks by the reason they are stuck",
                         labels=("reason",))
        for reason, n in sorted(stalled.items()):
            f.add(n, reason=reason)
        fams.append(f)
    fams += _semaphore_families(scheduler)
    fams += _stealing_families(scheduler)
    fams += process_families()
    return fams


def _version() -> str:
    from distributed._version import __version__

    return __version__


#: Upstream's label for a stealing cost level: the multiplier it stood for
#: (level 0, tasks without inputs: 1.0; level i: 1 + 2**(i - 6)).
_COST_MULTIPLIERS = [1.0] + [1 + 2 ** (i - 6) for i in range(1, 15)]


def _stealing_families(scheduler) -> list[MetricFamily]:
    """``dask_stealing_request_{count,cost}_total{cost_multiplier}``, as upstream."""
    stealing = getattr(scheduler, "extensions", {}).get("stealing")
    metrics = getattr(stealing, "metrics", None)
    if metrics is None:
        return []
    count = MetricFamily("dask_stealing_request_count", "counter",
                         "Total number of stealing requests", labels=("cost_multiplier",))
    cost = MetricFamily("dask_stealing_request_cost", "counter",
                        "Total cost of stealing requests", labels=("cost_multiplier",))
    for level, multiplier in enumerate(_COST_MULTIPLIERS):
        count.add(metrics["request_count_total"].get(level, 0), cost_multiplier=str(multiplier))
        cost.add(metrics["request_cost_total"].get(level, 0.0), cost_multiplier=str(multiplier))
    return [count, cost]


def _semaphore_families(scheduler) -> list[MetricFamily]:
    ext = getattr(scheduler, "extensions", {}).get("semaphores")
    states = getattr(ext, "_states", None)
    if states is None:
        return []
    ns = "dask_semaphore_"
    spec = [("max_leases", "gauge", "Maximum leases allowed per semaphore"),
            ("active_leases", "gauge", "Amount of currently active leases per semaphore"),
            ("pending_leases", "gauge", "Amount of currently pending leases per semaphore"),
            ("acquire", "counter", "Total number of leases acquired per semaphore"),
            ("release", "counter", "Total number of leases released per semaphore"),
            ("average_pending_lease_time_s", "gauge",
             "Exponential moving average of the time it took to acquire a lease per semaphore")]
    fams = {k: MetricFamily(ns + k, kind, h, labels=("name",)) for k, kind, h in spec}
    for name, st in states.items():
        name = str(name)
        fams["max_leases"].add(st.max_leases, name=name)
        fams["active_leases"].add(len(st.leases), name=name)
        fams["pending_leases"].add(len(st.waiters), name=name)
        fams["acquire"].add(st.acquire_total, name=name)
        fams["release"].add(st.release_total, name=name)
        fams["average_pending_lease_time_s"].add(
            st.waited_total / st.acquire_total if st.acquire_total else 0.0, name=name)
    return list(fams.values())

