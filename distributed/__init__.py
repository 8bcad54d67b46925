"""distributed: parallel and distributed computing with a central scheduler.

>>> from distributed import Client
>>> client = Client()                      # doctest: +SKIP
>>> client.submit(sum, [1, 2]).result()    # doctest: +SKIP
3
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Public names are imported on first use (PEP 562): a worker process started
# by a nanny needs the worker and its protocol, not the client and dask,
# which are most of the import time.
_LAZY = {
    "config": "distributed.config",
    "Client": "distributed.client",
    "default_client": "distributed.client",
    "get_client": "distributed.client",
    "worker_client": "distributed.client",
    "rpc": "distributed.core",
    "LocalCluster": "distributed.deploy.local",
    "CancelledError": "distributed.exceptions",
    "FutureLost": "distributed.exceptions",
    "KilledWorker": "distributed.exceptions",
    "Reschedule": "distributed.exceptions",
    "TimeoutError": "distributed.exceptions",
    "Future": "distributed.futures",
    "as_completed": "distributed.futures",
    "fire_and_forget": "distributed.futures",
    "futures_of": "distributed.futures",
    "wait": "distributed.futures",
    "Nanny": "distributed.nanny",
    "Scheduler": "distributed.scheduler.server",
    "rejoin": "distributed.threadpool",
    "secede": "distributed.threadpool",
    "Worker": "distributed.worker.server",
    "get_worker": "distributed.worker.server",
}

if TYPE_CHECKING:
    from distributed import config
    from distributed.client import Client, default_client, get_client, worker_client
    from distributed.core import rpc
    from distributed.deploy.local import LocalCluster
    from distributed.exceptions import CancelledError, FutureLost, KilledWorker, Reschedule, TimeoutError
    from distributed.futures import Future, as_completed, fire_and_forget, futures_of, wait
    from distributed.nanny import Nanny
    from distributed.scheduler.server import Scheduler
    from distributed.threadpool import rejoin, secede
    from distributed.worker.server import Worker, get_worker


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'distributed' has no attribute {name!r}")
    value = importlib.import_module(module)
    if name != "config":
        value = getattr(value, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


from distributed._version import __version__  # noqa: E402

__all__ = [
    "CancelledError",
    "Client",
    "Future",
    "FutureLost",
    "KilledWorker",
    "LocalCluster",
    "Nanny",
    "Reschedule",
    "Scheduler",
    "TimeoutError",
    "Worker",
    "__version__",
    "as_completed",
    "config",
    "default_client",
    "fire_and_forget",
    "futures_of",
    "get_client",
    "get_worker",
    "rejoin",
    "rpc",
    "secede",
    "wait",
    "worker_client",
]
