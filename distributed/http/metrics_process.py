"""Per-process metric families: ``process_*``, ``python_*``, GC time and loop ticks.

Grafana boards built on upstream also use the families the Prometheus
client's default collectors add (``process_resident_memory_bytes``...); we
write them from psutil and ``gc``.  ``GCTimer`` measures time spent in
generation-2 collections (one ``gc.callbacks`` entry per process, shared);
``TickMonitor`` measures the event loop's tick like upstream's ``admin.tick``
(the maximum is reset at each scrape of *this* server).

Runs on the owning server's loop, except the GC callback (any thread).
"""
from __future__ import annotations

import gc
import os
import platform
import resource
import threading
import time

import psutil
from tornado.ioloop import PeriodicCallback

from distributed.http.prometheus import MetricFamily

__all__ = ["process_families", "GCTimer", "TickMonitor"]

_PROCESS = psutil.Process()


def process_families() -> list[MetricFamily]:
    """``process_*`` and ``python_*`` families of this process.

    >>> names = [f.sample_name for f in process_families()]
    >>> "process_resident_memory_bytes" in names and "python_info" in names
    True
    """
    fams = []
    with _PROCESS.oneshot():
        mem = _PROCESS.memory_info()
        cpu = _PROCESS.cpu_times()
        created = _PROCESS.create_time()
        try:
            fds = _PROCESS.num_fds()
        except (AttributeError, psutil.Error):  # not on Windows
            fds = 0
    for name, help_, value in (
        ("process_virtual_memory_bytes", "Virtual memory size in bytes.", mem.vms),
        ("process_resident_memory_bytes", "Resident memory size in bytes.", mem.rss),
        ("process_start_time_seconds", "Start time of the process since unix epoch in seconds.", created),
        ("process_open_fds", "Number of open file descriptors.", fds),
        ("process_max_fds", "Maximum number of open file descriptors.",
         resource.getrlimit(resource.RLIMIT_NOFILE)[0]),
    ):
        f = MetricFamily(name, "gauge", help_)
        f.add(value)
        fams.append(f)
    f = MetricFamily("process_cpu_seconds", "counter", "Total user and system CPU time spent in seconds.")
    f.add(cpu.user + cpu.system)
    fams.append(f)
    stats = gc.get_stats()
    for name, field, help_ in (
        ("python_gc_objects_collected", "collected", "Objects collected during gc"),
        ("python_gc_objects_uncollectable", "uncollectable", "Uncollectable objects found during GC"),
        ("python_gc_collections", "collections", "Number of times this generation was collected"),
    ):
        f = MetricFamily(name, "counter", help_, labels=("generation",))
        for gen, st in enumerate(stats):
            f.add(st[field], generation=str(gen))
        fams.append(f)
    f = MetricFamily("python_info", "gauge", "Python platform information",
                     labels=("implementation", "major", "minor", "patchlevel", "version"))
    major, minor, patch = platform.python_version_tuple()
    f.add(1, implementation=platform.python_implementation(), major=major, minor=minor,
          patchlevel=patch, version=platform.python_version())
    fams.append(f)
    return fams


class GCTimer:
    """Seconds spent in generation-2 collections in this process.

    >>> GCTimer.get().seconds >= 0
    True
    """

    _instance: GCTimer | None = None
    _lock = threading.Lock()

    def __init__(self):
        self.seconds = 0.0
        self._start: float | None = None
        self._pid = os.getpid()
        gc.callbacks.append(self._callback)

    @classmethod
    def get(cls) -> GCTimer:
        """The process's timer, installed on first use (again after a fork)."""
        with cls._lock:
            if cls._instance is None or cls._instance._pid != os.getpid():
                cls._instance = cls()
            return cls._instance

    def _callback(self, phase: str, info: dict) -> None:
        if info.get("generation") != 2:
            return
        if phase == "start":
            self._start = time.perf_counter()
        elif self._start is not None:
            self.seconds += time.perf_counter() - self._start
            self._start = None


class TickMonitor:
    """Event-loop tick durations: count, and the maximum since the last read.

    A periodic callback every ``interval`` seconds notes how late it ran;
    the tick duration is the time between two runs.
    """

    def __init__(self, interval: float = 0.02):
        self.interval = interval
        self.count = 0
        self.maximum = 0.0
        self._last = time.monotonic()
        self._pc = PeriodicCallback(self._tick, interval * 1000)

    def start(self) -> None:
        self._last = time.monotonic()
        self._pc.start()

    def stop(self) -> None:
        self._pc.stop()

    def _tick(self) -> None:
        now = time.monotonic()
        self.maximum = max(self.maximum, now - self._last)
        self._last = now
        self.count += 1

    def read_maximum(self) -> float:
        """The longest tick since the previous read (this scrape target only)."""
        value, self.maximum = self.maximum, 0.0
        return value
