"""The scheduler: ``state.py`` (SchedulerState, the state machine, no I/O)
and ``server.py`` (the Scheduler server that feeds it).

``from distributed.scheduler import Scheduler, KilledWorker, TaskState`` and
the other names user code imports from here come from the import map
(distributed/compat/table.py, listed in docs/import-map.rst), on first use;
importing this package alone loads neither the server nor the state machine.
"""
