"""Command-line programs: ``dask-scheduler`` and ``dask-worker``.

Each lives in its own module with a ``main(argv=None) -> int`` function and
can be run as ``python -m distributed.cli.dask_scheduler`` (or
``...dask_worker``).  Shared plumbing (logging, signals) is in ``utils``.
"""
