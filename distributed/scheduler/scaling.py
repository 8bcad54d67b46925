"""How many workers the work needs, and which ones can go: pure reads of a
``SchedulerState``, no I/O (``Scheduler.adaptive_target`` and
``Scheduler.workers_to_close`` call these; ``Adaptive`` asks them).

Theory of operation.  The work in sight is the occupancy of every worker
(the expected seconds of the tasks assigned to it) plus the expected seconds
of the tasks waiting for a worker (queued or with none able to run them),
each from its prefix's measured mean duration.  To finish all of it within
``target_duration`` takes ``ceil(work / target_duration)`` threads, never
more than there are tasks, turned into workers by the mean threads per
worker.  Memory adds its own demand: when the workers hold more than 60% of
their memory limits, double them.  When fewer workers would do, the answer
is the current count minus the workers that can close without harm
(``workers_to_close``): idle ones (nothing processing, no seceded task), the
ones holding the fewest bytes first, while the others keep room for the data
(``memory_ratio`` times what is stored) and at least one worker stays while
any data is held.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

__all__ = ["adaptive_target", "workers_to_close"]

#: Queued tasks looked at one by one; beyond that their mean is extrapolated.
_SAMPLE = 100
#: Fraction of the memory limits held above which the target doubles.
_MEMORY_HIGH = 0.6


def _queued_seconds(state, default_duration: float) -> tuple[float, int]:
    """Expected seconds of the tasks not yet on a worker, and their count."""
    waiting = [entry[-1] for entry in state.queued]
    waiting.extend(state.unrunnable)
    n = len(waiting)
    if not n:
        return 0.0, 0
    sample = waiting[:_SAMPLE]
    durations = state.durations
    seconds = sum(durations.get(ts.prefix, default_duration) for ts in sample)
    return seconds * n / len(sample), n


def adaptive_target(state, target_duration: float, default_duration: float = 0.5) -> int:
    """The number of workers that would finish the work in sight within
    ``target_duration`` seconds (see the module docstring).

    >>> from distributed.scheduler.state import SchedulerState
    >>> adaptive_target(SchedulerState(), target_duration=5)
    0
    """
    if target_duration <= 0:
        raise ValueError(f"target_duration must be > 0 seconds, not {target_duration!r}")
    workers = list(state.workers.values())
    queued_seconds, n_queued = _queued_seconds(state, default_duration)
    busy_seconds = sum(ws.occupancy for ws in workers)
    n_tasks = n_queued + sum(len(ws.processing) for ws in workers)
    threads = min(math.ceil((busy_seconds + queued_seconds) / target_duration), n_tasks)
    if workers:
        mean_threads = sum(ws.nthreads for ws in workers) / len(workers)
        cpu = math.ceil(threads / max(mean_threads, 1))
    else:
        cpu = threads
    if n_queued and not workers:
        cpu = max(1, cpu)
    limit = sum(ws.memory_limit for ws in workers)
    stored = sum(ws.nbytes for ws in workers)
    memory = 2 * len(workers) if limit and stored > _MEMORY_HIGH * limit else 0
    target = max(cpu, memory)
    if target >= len(workers):
        return target
    return len(workers) - len(workers_to_close(state, target=target))


def workers_to_close(state, n: int | None = None, target: int | None = None,
                     memory_ratio: float | None = None, key: Callable | None = None,
                     minimum: int | None = None, attribute: str = "address") -> list[Any]:
    """Workers that can close without harm, cheapest first (their
    ``attribute``, the address by default).

    ``n``: close up to that many; ``target``: leave that many; neither: as
    many as leave ``memory_ratio`` (default 2) times the stored bytes in
    memory limits.  ``key(ws)`` groups workers that close together (a batch
    job with several workers); ``minimum`` workers always stay.

    >>> from distributed.scheduler.state import SchedulerState
    >>> workers_to_close(SchedulerState())
    []
    """
    workers = list(state.workers.values())
    if target is not None and n is None:
        n = len(workers) - target
    if n is not None:
        n = max(n, 0)
        target = len(workers) - n
    elif memory_ratio is None:
        memory_ratio = 2
    if n == 0:
        return []
    groups: dict[Any, list] = {}
    for ws in workers:
        groups.setdefault(key(ws) if key is not None else ws.address, []).append(ws)
    idle = [g for g in groups.values()
            if all(not ws.processing and not ws.long_running and ws.status == "running" for ws in g)]
    idle.sort(key=lambda g: sum(ws.nbytes for ws in g))
    stored = sum(ws.nbytes for ws in workers)
    limit = sum(ws.memory_limit for ws in workers)
    remain = len(workers)
    floor = max(minimum or 0, 1 if stored else 0)
    chosen: list = []
    for group in idle:
        if remain - len(group) < floor:
            break
        if n is not None:
            if remain - len(group) < target:
                break
        else:
            group_limit = sum(ws.memory_limit for ws in group)
            if limit and limit - group_limit < memory_ratio * stored:
                break
            limit -= group_limit
        chosen.extend(group)
        remain -= len(group)
    return [getattr(ws, attribute) for ws in chosen]
