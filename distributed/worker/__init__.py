"""The worker: ``state.py`` (WorkerState, the state machine, no I/O) and
``server.py`` (the Worker server that feeds it).

``from distributed.worker import Worker, get_worker, thread_state`` and the
other names user code imports from here come from the import map
(distributed/compat/table.py, listed in docs/import-map.rst), on first use;
importing this package alone loads neither the server nor the state machine.
"""
