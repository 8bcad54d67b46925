"""distributed: parallel and distributed computing with a central scheduler.

>>> from distributed import Client
>>> client = Client()                      # doctest: +SKIP
>>> client.submit(sum, [1, 2]).result()    # doctest: +SKIP
3

The public names, here and at the old module paths user code imports from
(``distributed.lock``, ``distributed.client.wait``, ...), come from one
table, ``distributed/compat/table.py`` (listed in docs/import-map.rst).
"""
from __future__ import annotations

import sys

from distributed._version import __version__  # noqa: F401
from distributed.compat import hook as _hook

# Old module paths answer from the import map from now on.
_hook.install()

# Public names are imported on first use (a module __getattr__, PEP 562,
# made from the table): a worker process started by a nanny needs the worker
# and its protocol, not the client and dask, which are most of the import
# time.  A name whose feature is not built yet raises ImportError naming the
# issue that brings it.
_hook.attach(sys.modules[__name__])
__all__ = _hook.public_names(__name__)

# Not typing.TYPE_CHECKING: importing typing would triple the import time.
TYPE_CHECKING = False
if TYPE_CHECKING:  # for type checkers and editors; the import map is what runs
    from distributed import config  # noqa: F401
    from distributed.client import Client, get_client, worker_client  # noqa: F401
    from distributed.comm import connect  # noqa: F401
    from distributed.context import default_client, get_worker  # noqa: F401
    from distributed.core import Status, rpc  # noqa: F401
    from distributed.deploy.adaptive import Adaptive  # noqa: F401
    from distributed.deploy.local import LocalCluster  # noqa: F401
    from distributed.deploy.spec import SpecCluster  # noqa: F401
    from distributed.deploy.ssh import SSHCluster  # noqa: F401
    from distributed.diagnostics.perf_report import performance_report  # noqa: F401
    from distributed.diagnostics.task_stream import get_task_stream  # noqa: F401
    from distributed.exceptions import (  # noqa: F401
        CancelledError,
        FutureLost,
        KilledWorker,
        Reschedule,
        TimeoutError,
    )
    from distributed.futures import Future, as_completed, fire_and_forget, futures_of, wait  # noqa: F401
    from distributed.nanny import Nanny  # noqa: F401
    from distributed.scheduler.server import Scheduler  # noqa: F401
    from distributed.threadpool import rejoin, secede  # noqa: F401
    from distributed.utils import sync  # noqa: F401
    from distributed.worker.server import Worker  # noqa: F401
del sys, TYPE_CHECKING
