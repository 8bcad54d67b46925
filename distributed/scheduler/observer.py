"""What a ``SchedulerState`` tells its observers, besides transitions.

Transitions reach ``SchedulerState.plugins`` (the scheduler's plugin
hooks).  Some changes are not transitions: a task is born ``released``
(``update_graph``, ``update_data``), scattered data goes straight to
``memory`` (``update_data``), and workers and clients come and go.  An
object that keeps aggregates of the state incrementally (the dashboard's
``PrefixTracker``) needs those too; it subclasses ``StateObserver``,
overrides what it needs and is appended to ``SchedulerState.observers``.

Observers are called synchronously, inside the state change, after it is
made; they must not change the state.  Nothing is called, and nothing is
built for them, while ``observers`` is empty.

>>> from distributed.scheduler.state import SchedulerState
>>> class Joins(StateObserver):
...     def __init__(self): self.n = 0
...     def worker_added(self, ws): self.n += 1
>>> state = SchedulerState(); joins = Joins(); state.observers.append(joins)
>>> _ = state.add_worker("tcp://a:1", nthreads=1)
>>> joins.n
1
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from distributed.scheduler.entities import ClientState, TaskState, WorkerState

__all__ = ["StateObserver"]


class StateObserver:
    """No-op hooks for the state changes that are not transitions."""

    def tasks_created(self, tasks: list[TaskState]) -> None:
        """New tasks, each ``released``, just added to ``state.tasks``."""

    def task_stored(self, ts: TaskState) -> None:
        """``ts`` was put in ``memory`` directly (scattered data), from
        ``released``; its ``nbytes`` is set."""

    def worker_added(self, ws: WorkerState) -> None:
        """``ws`` joined ``state.workers``."""

    def worker_removed(self, ws: WorkerState) -> None:
        """``ws`` left ``state.workers``."""

    def client_added(self, cs: ClientState) -> None:
        """``cs`` joined ``state.clients``."""

    def client_removed(self, cs: ClientState) -> None:
        """``cs`` left ``state.clients``."""
