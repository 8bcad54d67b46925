"""What the scheduler's dashboard shows, as plain dicts.

Each function reads the scheduler and the ``PrefixTracker`` in O(workers +
prefixes), never O(tasks): they back ``/json/counts.json``, ``/api/v1/*``
and every tick of the event stream.

Runs on the scheduler's event loop.
"""
from __future__ import annotations

import time

__all__ = ["counts", "cluster", "worker_rows", "snapshot", "get_workers"]


def counts(scheduler, tracker) -> dict:
    """Upstream's ``/json/counts.json`` payload.

    ``waiting_data`` is always 0: our scheduler has no such state (upstream
    counts tasks with waiters by a scan over all tasks).
    """
    state = scheduler.state
    totals = tracker.totals()
    workers = state.workers
    return {
        "bytes": sum(ws.nbytes for ws in workers.values()),
        "clients": len(state.clients),
        "cores": sum(ws.nthreads for ws in workers.values()),
        "erred": totals["erred"],
        "hosts": len({ws.host for ws in workers.values()}),
        "idle": len(state.idle),
        "memory": totals["memory"],
        "processing": totals["processing"],
        "released": totals["released"],
        "saturated": sum(1 for ws in workers.values() if len(ws.processing) > ws.nthreads),
        "tasks": len(state.tasks),
        "unrunnable": len(state.unrunnable),
        "waiting": totals["waiting"] + totals["queued"] + totals["no-worker"],
        "waiting_data": 0,
        "workers": len(workers),
        "desired_workers": desired_workers(scheduler),
    }


def desired_workers(scheduler) -> int:
    """The adaptive target: the scheduler's if it has one, else the workers it has."""
    target = getattr(scheduler, "adaptive_target", None)
    if callable(target):
        return int(target())
    return len(scheduler.state.workers)


def worker_rows(scheduler) -> list[dict]:
    """One row per worker (the ``/workers`` table)."""
    rows = []
    for addr, ws in scheduler.state.workers.items():
        m = ws.metrics or {}
        memory = int(m.get("memory") or 0)
        managed = max(ws.nbytes, 0)
        rows.append({
            "address": addr,
            "name": str(ws.name),
            "host": ws.host,
            "nthreads": ws.nthreads,
            "status": ws.status,
            "memory": memory,
            "memory_limit": ws.memory_limit,
            "managed": managed,
            "unmanaged": max(memory - managed, 0),
            "spilled": int(m.get("spilled_nbytes", {}).get("disk", 0)) if isinstance(
                m.get("spilled_nbytes"), dict) else 0,
            "processing": len(ws.processing),
            "in_memory": len(ws.has_what),
            "executing": int(m.get("executing") or 0),
            "ready": int(m.get("ready") or 0),
            "in_flight": int(m.get("in_flight") or 0),
            "cpu": float(m.get("cpu") or 0.0),
            "last_seen": ws.last_seen,
            "dashboard": (getattr(scheduler, "worker_services", {}).get(addr) or {}).get("dashboard"),
        })
    return rows


def cluster(scheduler, tracker, rows: list[dict] | None = None) -> dict:
    """``/api/v1/cluster``: counts.json plus thread and memory totals
    (``rows``: ``worker_rows`` already computed for this tick)."""
    rows = worker_rows(scheduler) if rows is None else rows
    return {
        **counts(scheduler, tracker),
        "threads": sum(r["nthreads"] for r in rows),
        "memory_limit": sum(r["memory_limit"] for r in rows),
        "memory_process": sum(r["memory"] for r in rows),
        "managed": sum(r["managed"] for r in rows),
        "unmanaged": sum(r["unmanaged"] for r in rows),
        "spilled": sum(r["spilled"] for r in rows),
        "address": scheduler.address,
        "idle_since": tracker.idle_since,
    }


def get_workers(scheduler) -> dict:
    """Upstream's ``/api/v1/get_workers`` payload."""
    workers = scheduler.state.workers
    return {"num_workers": len(workers),
            "workers": [{"name": str(ws.name), "address": addr} for addr, ws in workers.items()]}


#: Task-stream rows per frame at most: the newest, when more finished in one
#: tick (pages draw the last 1,000; ``/api/v1/task_stream`` has them all).
STREAM_ROWS_PER_FRAME = 1000


def snapshot(scheduler, tracker, stream_after: int) -> dict:
    """One tick of the event stream: everything a page draws, plus the
    newest task-stream rows after index ``stream_after`` (``stream_rows``)."""
    rows = worker_rows(scheduler)
    return {
        "time": time.time(),
        "cluster": cluster(scheduler, tracker, rows),
        "totals": tracker.totals(),
        "groups": tracker.groups(),
        "workers": rows,
        "stream": tracker.stream_rows(stream_after, limit=STREAM_ROWS_PER_FRAME),
        "stream_index": tracker.stream_index,
    }
