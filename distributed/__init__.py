"""distributed: parallel and distributed computing with a central scheduler.

>>> from distributed import Client
>>> client = Client()                      # doctest: +SKIP
>>> client.submit(sum, [1, 2]).result()    # doctest: +SKIP
3
"""
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

__version__ = "0.1.0"

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
