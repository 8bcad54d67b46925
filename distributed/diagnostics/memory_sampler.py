"""MemorySampler: the cluster's memory over time, while a block runs.

>>> from distributed.diagnostics import MemorySampler        # doctest: +SKIP
>>> ms = MemorySampler()                                     # doctest: +SKIP
>>> with ms.sample("before"):                                # doctest: +SKIP
...     x.compute()
>>> ms.to_pandas()                                           # doctest: +SKIP

The scheduler samples (``MemorySamplerExtension``, the extension
``"memory_sampler"``) every ``interval`` seconds while a block is open, so
the client's own latency does not skew the series.  Measures:

* ``"process"``: the workers' process memory (RSS) as their heartbeats
  last reported it, summed;
* ``"managed"``: the bytes of the results the workers hold, summed;
* ``"unmanaged"``: process minus managed (never below 0).

``"spilled"`` (upstream's fourth) is not tracked by our workers and
raises.  ``plot`` needs matplotlib (through pandas).

Thread rules: the extension runs on the scheduler's loop; ``sample`` may be
used from any thread through the client.
"""
from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

__all__ = ["MemorySampler", "MemorySamplerExtension", "MEASURES"]

logger = logging.getLogger(__name__)

MEASURES = ("process", "managed", "unmanaged")
# A sampling series is dropped after this many samples (about 14 h at 0.5 s).
_MAX_SAMPLES = 100_000


def _check(measure: str, interval: float) -> None:
    if measure == "spilled":
        raise ValueError("MemorySampler(measure='spilled'): spilled bytes are not reported by this "
                         f"distributed's workers; use one of {MEASURES}")
    if measure not in MEASURES:
        raise ValueError(f"measure must be one of {MEASURES}, not {measure!r}")
    if not isinstance(interval, (int, float)) or isinstance(interval, bool) or interval <= 0:
        raise ValueError(f"interval must be a positive number of seconds, not {interval!r}")


def measure_now(state: Any, measure: str) -> int:
    """One sample of ``measure`` over the workers of a ``SchedulerState``.

    >>> from distributed.scheduler.state import SchedulerState
    >>> measure_now(SchedulerState(), "managed")
    0
    """
    process = managed = 0
    for ws in state.workers.values():
        managed += max(ws.nbytes, 0)
        process += int((ws.metrics or {}).get("memory", 0) or 0)
    if measure == "process":
        return process
    if measure == "managed":
        return managed
    return max(process - managed, 0)


class MemorySamplerExtension:
    """Scheduler side: ``memory_sampler_start(measure, interval)`` -> id,
    ``memory_sampler_stop(id)`` -> ``[(time, bytes), ...]``."""

    def __init__(self, scheduler: Any):
        self.scheduler = scheduler
        self.samples: dict[str, list] = {}
        self.tasks: dict[str, asyncio.Task] = {}
        self.measures: dict[str, str] = {}
        scheduler.handlers.update({"memory_sampler_start": self.start,
                                   "memory_sampler_stop": self.stop})

    def start(self, comm=None, measure: str = "process", interval: float = 0.5, **kwargs) -> str:
        _check(measure, interval)
        key = uuid.uuid4().hex
        self.measures[key] = measure
        self.samples[key] = [(time.time(), measure_now(self.scheduler.state, measure))]
        self.tasks[key] = asyncio.ensure_future(self._run(key, measure, interval))
        return key

    async def _run(self, key: str, measure: str, interval: float) -> None:
        series = self.samples[key]
        while len(series) < _MAX_SAMPLES:
            await asyncio.sleep(interval)
            series.append((time.time(), measure_now(self.scheduler.state, measure)))

    async def stop(self, comm=None, key: str | None = None, **kwargs) -> list:
        task = self.tasks.pop(key, None)
        if task is None:
            raise KeyError(f"no memory sampler {key!r} (stopped already, or the scheduler restarted)")
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        series = self.samples.pop(key)
        series.append((time.time(), measure_now(self.scheduler.state, self.measures.pop(key))))
        return series

    async def close(self) -> None:
        for task in self.tasks.values():
            task.cancel()
        self.tasks.clear()
        self.samples.clear()
        self.measures.clear()


class _Sampling:
    """The block of ``MemorySampler.sample``: sync and async context manager."""

    def __init__(self, sampler: MemorySampler, label: str, client: Any, measure: str, interval: float):
        self.sampler, self.label, self.client = sampler, label, client
        self.measure, self.interval = measure, interval
        self.key: str | None = None

    def _client(self) -> Any:
        if self.client is None:
            from distributed.context import default_client

            self.client = default_client()
        return self.client

    def __enter__(self) -> _Sampling:
        c = self._client()
        self.key = c.sync(c.scheduler.memory_sampler_start, measure=self.measure, interval=self.interval)
        return self

    def __exit__(self, *exc: Any) -> None:
        c = self._client()
        series = c.sync(c.scheduler.memory_sampler_stop, key=self.key)
        self.sampler.samples[self.label] = [tuple(s) for s in series]

    async def __aenter__(self) -> _Sampling:
        c = self._client()
        self.key = await c.scheduler.memory_sampler_start(measure=self.measure, interval=self.interval)
        return self

    async def __aexit__(self, *exc: Any) -> None:
        c = self._client()
        series = await c.scheduler.memory_sampler_stop(key=self.key)
        self.sampler.samples[self.label] = [tuple(s) for s in series]


class MemorySampler:
    """Samples of cluster memory, one series per labelled block.

    ``samples`` maps a label to ``[(time, bytes), ...]``.

    >>> MemorySampler().samples
    {}
    """

    def __init__(self):
        self.samples: dict[str, list[tuple[float, int]]] = {}

    def sample(self, label: str | None = None, *, client: Any = None, measure: str = "process",
               interval: float = 0.5) -> _Sampling:
        """A context manager (``with`` or ``async with``) sampling
        ``measure`` every ``interval`` seconds into ``samples[label]``
        (default label: ``"Samples"`` numbered)."""
        _check(measure, interval)
        if label is None:
            label = f"Samples {len(self.samples)}"
        return _Sampling(self, label, client, measure, interval)

    def to_pandas(self, *, align: bool = False) -> Any:
        """A DataFrame: one column per label, indexed by time (a
        ``DatetimeIndex``), or by seconds since each series began with
        ``align=True``."""
        import pandas as pd

        columns = {}
        for label, series in self.samples.items():
            if not series:
                continue
            times = [t for t, _ in series]
            if align:
                index = pd.Index([t - times[0] for t in times], name="elapsed")
            else:
                index = pd.DatetimeIndex(pd.to_datetime(times, unit="s"), name="time")
            columns[label] = pd.Series([v for _, v in series], index=index)
        return pd.DataFrame(columns)

    def plot(self, *, align: bool = False, **kwargs: Any) -> Any:
        """``to_pandas(align=...).plot(**kwargs)``, in GiB (needs matplotlib)."""
        df = self.to_pandas(align=align) / 2**30
        return df.plot(ylabel="Cluster memory (GiB)", **kwargs)
