"""Cluster state as plain data, and writing it to a file.

``client.dump_cluster_state(filename)`` asks the scheduler (which asks
every worker) for everything they know, as plain msgpack-able data, and
writes it as ``<filename>.msgpack.gz`` (gzip-compressed msgpack) or
``<filename>.yaml`` (needs pyyaml).  ``load_cluster_dump`` reads either back.

Task records are dicts of their fields, with tasks named by key (never
objects), run specs left out (opaque bytes), collections as lists.

>>> write_state({"a": 1}, "/tmp/dask-dump-doctest", "msgpack")
'/tmp/dask-dump-doctest.msgpack.gz'
>>> load_cluster_dump("/tmp/dask-dump-doctest.msgpack.gz")
{'a': 1}
"""
from __future__ import annotations

import gzip
import logging
from collections.abc import Iterable
from typing import Any

import msgpack

__all__ = ["scheduler_state_dict", "worker_state_dict", "write_state", "load_cluster_dump", "FORMATS"]

logger = logging.getLogger(__name__)

FORMATS = ("msgpack", "yaml")

_TASK_FIELDS = ("state", "priority", "prefix", "nbytes", "type", "retries", "suspicious",
                "exception_text", "traceback_text", "loose_restrictions", "resource_restrictions",
                "actor")
_TASK_REFS = ("dependencies", "dependents", "waiting_on", "waiters")


def _plain(value: Any) -> Any:
    """msgpack/yaml-friendly: tuples and sets as lists, odd objects as text."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    if isinstance(value, dict):
        return {str(k) if not isinstance(k, (int, str)) else k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(v) for v in value]
    return repr(value)


def _key(key: Any) -> Any:
    return key if isinstance(key, (str, int)) else str(key)


def scheduler_state_dict(scheduler: Any, exclude: Iterable[str] = ()) -> dict:
    """The scheduler's tasks, workers, clients and recent transitions.

    >>> scheduler_state_dict(scheduler)["tasks"]          # doctest: +SKIP
    {'inc-1': {'state': 'memory', 'who_has': ['tcp://...'], ...}}
    """
    exclude = set(exclude)
    state = scheduler.state
    tasks = {}
    for key, ts in state.tasks.items():
        rec = {f: _plain(getattr(ts, f)) for f in _TASK_FIELDS if f not in exclude}
        for f in _TASK_REFS:
            if f not in exclude:
                rec[f] = [_key(d.key) for d in getattr(ts, f)]
        if "who_has" not in exclude:
            rec["who_has"] = sorted(ws.address for ws in ts.who_has)
        if "processing_on" not in exclude:
            rec["processing_on"] = ts.processing_on.address if ts.processing_on is not None else None
        if "who_wants" not in exclude:
            rec["who_wants"] = sorted(cs.client_key for cs in ts.who_wants)
        if "exception_blame" not in exclude:
            blame = ts.exception_blame
            rec["exception_blame"] = _key(blame.key) if blame is not None else None
        if "worker_restrictions" not in exclude:
            rec["worker_restrictions"] = _plain(ts.worker_restrictions)
        tasks[_key(key)] = rec
    workers = {}
    for addr, ws in state.workers.items():
        info = _plain(ws.identity())
        info.update(status=ws.status, occupancy=ws.occupancy, nbytes=ws.nbytes,
                    processing=[_key(t.key) for t in ws.processing],
                    has_what=[_key(t.key) for t in ws.has_what],
                    long_running=[_key(t.key) for t in ws.long_running])
        workers[addr] = info
    return {
        "address": scheduler.address,
        "id": scheduler.id,
        "tasks": tasks,
        "workers": workers,
        "clients": {c: sorted(_key(t.key) for t in cs.wants_what) for c, cs in state.clients.items()},
        "queued": len(state.queued),
        "unrunnable": sorted(_key(t.key) for t in state.unrunnable),
        "transition_log": [[_key(k), s, f] for k, s, f in list(state.transition_log)[-10_000:]],
        "durations": dict(state.durations),
        "events": _plain(scheduler.get_events()),
    }


def worker_state_dict(worker: Any, exclude: Iterable[str] = ()) -> dict:
    """A worker's tasks, data keys, log and status.

    >>> worker_state_dict(worker)["status"]               # doctest: +SKIP
    'running'
    """
    exclude = set(exclude)
    st = worker.state
    tasks = {}
    for key, ts in st.tasks.items():
        rec = {}
        for f in ("state", "previous", "priority", "nbytes", "type", "resource_restrictions",
                  "duration", "wanted", "coming_from"):
            if f not in exclude:
                rec[f] = _plain(getattr(ts, f))
        for f in ("dependencies", "dependents", "waiting_for_data"):
            if f not in exclude:
                rec[f] = [_key(d.key) for d in getattr(ts, f)]
        if "who_has" not in exclude:
            rec["who_has"] = sorted(ts.who_has)
        tasks[_key(key)] = rec
    return {
        "address": worker.address,
        "name": _plain(worker.name),
        "status": str(getattr(worker.status, "name", worker.status)),
        "nthreads": worker.nthreads,
        "memory_limit": worker.memory_limit,
        "tasks": tasks,
        "data": [_key(k) for k in list(worker.data)],
        "executing": [_key(t.key) for t in st.executing],
        "long_running": [_key(t.key) for t in st.long_running],
        "in_flight_workers": {w: [_key(t.key) for t in ts] for w, ts in st.in_flight_workers.items()},
        "log": [_plain(entry) for entry in list(st.log)[-10_000:]],
        "executing_since": {_key(k): v for k, v in worker.executing_since.items()},
    }


def write_state(state: dict, filename: str, format: str = "msgpack") -> str:
    """Write ``state`` as ``<filename>.msgpack.gz`` or ``<filename>.yaml``;
    returns the path written.  YAML without pyyaml raises ``ImportError``."""
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, not {format!r}")
    if not isinstance(filename, str) or not filename:
        raise TypeError(f"filename must be a non-empty path string, not {filename!r}")
    if "://" in filename:
        raise ValueError(f"dump_cluster_state writes local files only (no fsspec here), not {filename!r}")
    if format == "msgpack":
        path = filename if filename.endswith(".msgpack.gz") else filename + ".msgpack.gz"
        with gzip.open(path, "wb") as f:
            f.write(msgpack.packb(_plain(state), use_bin_type=True))
        return path
    try:
        import yaml
    except ImportError:
        raise ImportError("dump_cluster_state(format='yaml') needs pyyaml: pip install pyyaml, "
                          "or use format='msgpack'") from None
    path = filename if filename.endswith(".yaml") else filename + ".yaml"
    with open(path, "w") as f:
        yaml.safe_dump(_plain(state), f)
    return path


def load_cluster_dump(path: str) -> dict:
    """Read a file written by ``write_state`` (by its extension)."""
    if path.endswith(".msgpack.gz"):
        with gzip.open(path, "rb") as f:
            return msgpack.unpackb(f.read(), raw=False, strict_map_key=False)
    if path.endswith(".yaml"):
        import yaml

        with open(path) as f:
            return yaml.safe_load(f)
    raise ValueError(f"not a cluster dump (.msgpack.gz or .yaml): {path!r}")
