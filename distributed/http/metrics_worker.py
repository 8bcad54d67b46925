"""The worker's ``/metrics`` families (upstream's ``dask_worker_*`` names).

Built at scrape time from this worker only.  Transfer byte counts and spill
timings are not measured by our worker yet: those families are written with
what the worker knows (counts) and 0 elsewhere, so Grafana queries keep
working; ``dask_worker_info`` and ``dask_worker_memory_limit_bytes`` are ours.

Runs on the worker's event loop.
"""
from __future__ import annotations

import psutil

from distributed.http.metrics_process import GCTimer, process_families
from distributed.http.prometheus import MetricFamily

__all__ = ["collect"]

_PROCESS = psutil.Process()


def _one(name: str, kind: str, help_: str, value: float) -> MetricFamily:
    f = MetricFamily(name, kind, help_)
    f.add(value)
    return f


def task_states(worker) -> dict[str, int]:
    """Tasks on ``worker`` by state, with ``disk`` split from ``memory``."""
    out: dict[str, int] = {}
    for ts in worker.state.tasks.values():
        out[ts.state] = out.get(ts.state, 0) + 1
    spilled = _spilled(worker)
    if spilled[0]:
        out["memory"] = max(out.get("memory", 0) - spilled[0], 0)
        out["disk"] = spilled[0]
    return out


def _spilled(worker) -> tuple[int, int]:
    """(count, bytes) spilled to disk."""
    data = worker.data
    if hasattr(data, "spilled_count") and hasattr(data, "spilled_bytes"):
        return int(data.spilled_count), int(data.spilled_bytes)
    return 0, 0


def memory(worker) -> dict[str, int]:
    """Managed, unmanaged (process minus managed) and spilled bytes."""
    rss = _PROCESS.memory_info().rss
    data = worker.data
    managed = getattr(data, "memory_bytes", None)
    if managed is None:
        managed = sum(getattr(ts, "nbytes", 0) or 0 for ts in worker.state.tasks.values()
                      if ts.state == "memory")
    return {"managed": int(managed), "unmanaged": max(rss - int(managed), 0), "spilled": _spilled(worker)[1]}


def collect(http) -> list[MetricFamily]:
    """All families for the worker served by ``http`` (a ``WorkerHTTP``)."""
    worker = http.worker
    ns = "dask_worker_"
    f = MetricFamily(ns + "tasks", "gauge", "Number of tasks at worker.", labels=("state",))
    for s, n in sorted(task_states(worker).items()):
        f.add(n, state=s)
    fams = [f,
            _one(ns + "threads", "gauge", "Number of worker threads", worker.nthreads),
            _one(ns + "latency_seconds", "gauge", "Latency of worker connection",
                 float(getattr(worker, "latency", 0.0) or 0.0))]
    f = MetricFamily(ns + "memory_bytes", "gauge", "Memory breakdown", labels=("type",))
    for t, n in memory(worker).items():
        f.add(n, type=t)
    fams.append(f)
    incoming = int(getattr(worker, "incoming_transfers", 0))
    outgoing = int(getattr(worker, "outgoing_transfers", 0))
    fams += [
        _one(ns + "transfer_incoming_bytes", "gauge", "Total size of open data transfers from other workers", 0),
        _one(ns + "transfer_incoming_count", "gauge", "Number of open data transfers from other workers",
             len(worker.state.in_flight_workers)),
        _one(ns + "transfer_incoming_count", "counter",
             "Total number of data transfers from other workers since the worker was started", incoming),
        _one(ns + "transfer_outgoing_bytes", "gauge", "Size of open data transfers to other workers", 0),
        _one(ns + "transfer_outgoing_count", "gauge", "Number of open data transfers to other workers", 0),
        _one(ns + "transfer_outgoing_bytes", "counter",
             "Size of data transfers to other workers since the worker was started", 0),
        _one(ns + "transfer_outgoing_count", "counter",
             "Total number of data transfers to other workers since the worker was started", outgoing),
        _one(ns + "gc_collection_seconds", "counter", "Total time spent on garbage collection",
             GCTimer.get().seconds),
        _one(ns + "tick_duration_maximum_seconds", "gauge",
             "Maximum tick duration observed since Prometheus last scraped metrics", http.ticks.read_maximum()),
        _one(ns + "tick_count", "counter", "Total number of ticks observed since the server started",
             http.ticks.count),
    ]
    stats = getattr(worker.data, "stats", None) or {}
    for name, help_, field in (("spill_bytes", "Total size of spilled/unspilled data", "bytes"),
                               ("spill_count", "Total number of spilled/unspilled keys", "count"),
                               ("spill_time_seconds", "Total time spent spilling/unspilling", "seconds")):
        f = MetricFamily(ns + name, "counter", help_, labels=("activity",))
        f.add(stats.get(f"spill_{field}", 0), activity="disk-write")
        f.add(stats.get(f"unspill_{field}", 0), activity="disk-read")
        fams.append(f)
    fams.append(_one(ns + "memory_limit_bytes", "gauge", "Memory limit of this worker (0: none)",
                     worker.memory_limit or 0))
    info = MetricFamily(ns + "info", "gauge", "This worker (always 1)",
                        labels=("address", "name", "version", "host", "nthreads"))
    from distributed._version import __version__

    info.add(1, address=worker.address, name=str(worker.name), version=__version__,
             host=worker.address.split("://")[-1].rsplit(":", 1)[0], nthreads=str(worker.nthreads))
    fams.append(info)
    fams += process_families()
    return fams
