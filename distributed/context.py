"""Which client and which worker are current.

Three questions are answered here, below the client and the worker servers
so that both (and ``futures``) can ask them without importing each other:

- **The default client**: the most recent live Client made with
  ``set_as_default=True`` (``default_client()``), falling back on any live
  client.
- **The current worker**: the Worker whose task runs in this thread (set by
  the worker for each task thread), in this asyncio task (async tasks), or on
  whose behalf the loop is deserializing (``working_for(worker)``).
- **The client of a new Future**: a Future unpickled while a client receives
  data (``receiving_for(client)``) belongs to that client; one unpickled on a
  worker (task arguments, a task calling ``get_client()``) belongs to the
  worker's own client, made on first use and then reused; anywhere else it
  belongs to the default client.

Thread rules: the client registry may be read and written from any thread
(weak references, single assignments); ``thread_state`` is per thread; the
context variables follow asyncio tasks.
"""
from __future__ import annotations

import contextvars
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from distributed.utils import thread_state

# The client and the worker are both above this module: they are named in
# annotations only, as strings, so that this module imports neither.
Client = Worker = Any

__all__ = [
    "client_for_future",
    "live_clients",
    "new_worker_client",
    "current_worker",
    "default_client",
    "get_worker",
    "global_client",
    "receiving_for",
    "register_client",
    "set_default_client",
    "working_for",
]

#: Live clients by creation order (weak: a dropped client leaves by itself).
_clients: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
_client_count = [0]
_default: list = [None]

#: The worker an async task or a deserializing loop works for.
_worker_var: contextvars.ContextVar = contextvars.ContextVar("distributed_worker", default=None)
#: The client whose incoming data is being deserialized.
_receiving_var: contextvars.ContextVar = contextvars.ContextVar("distributed_receiving_client", default=None)


def _live(client: Any) -> bool:
    return client is not None and client.status not in ("closing", "closed")


def register_client(client: Client) -> None:
    """Record a new client (called by ``Client.__init__``)."""
    _client_count[0] += 1
    _clients[_client_count[0]] = client


def live_clients() -> list:
    """The registered clients that are not closed, oldest first."""
    return [c for _, c in sorted(_clients.items()) if c is not None]


def set_default_client(client: Client | None) -> None:
    """Make ``client`` the default (``None`` clears it)."""
    _default[0] = client


def clear_default_client(client: Client) -> None:
    """Stop ``client`` being the default, if it is."""
    if _default[0] is client:
        _default[0] = None


def default_client(c: Client | None = None) -> Client:
    """The Client used when none is named: the most recent one created with
    ``set_as_default=True``, or else the newest live one of those.

    >>> client = default_client()    # doctest: +SKIP
    """
    if c is not None:
        return c
    c = _default[0]
    if _live(c):
        return c
    for i in sorted(_clients, reverse=True):
        c = _clients.get(i)
        # A client made with set_as_default=False (a worker's own client) is
        # nobody's default: it may outlive its worker for a moment.
        if _live(c) and getattr(c, "_set_as_default", True):
            return c
    raise ValueError(
        "No clients found. Start a client and point it to the scheduler address:\n"
        "    from distributed import Client\n    client = Client('ip-addr-of-scheduler:8786')")


def global_client() -> Client | None:
    """The default client, or None when there is none (dask.distributed's
    ``_get_global_client``, which fsspec's ``dask://`` filesystem imports).

    >>> global_client() is None or global_client().status == "running"
    True
    """
    try:
        return default_client()
    except ValueError:
        return None


def current_worker() -> Worker | None:
    """The worker the current code runs for, or None outside of one."""
    worker = getattr(thread_state, "worker", None)
    if worker is not None:
        return worker
    return _worker_var.get()


def get_worker() -> Worker:
    """The worker running the current task.

    >>> def task():                     # doctest: +SKIP
    ...     return get_worker().address
    """
    worker = current_worker()
    if worker is None:
        raise ValueError("get_worker() called outside of a task running on a worker")
    return worker


@contextmanager
def working_for(worker: Worker) -> Iterator[None]:
    """Code in this block (on the loop, or in one asyncio task) runs on behalf
    of ``worker``: ``get_worker()`` finds it and Futures unpickled here bind
    to its client."""
    token = _worker_var.set(worker)
    try:
        yield
    finally:
        _worker_var.reset(token)


def set_task_worker(worker: Worker) -> None:
    """For the rest of this asyncio task (an async user task), code runs on
    behalf of ``worker``; the task's context ends with it."""
    _worker_var.set(worker)


@contextmanager
def receiving_for(client: Client) -> Iterator[None]:
    """Futures unpickled in this block (or in asyncio tasks it starts)
    belong to ``client``."""
    token = _receiving_var.set(client)
    try:
        yield
    finally:
        _receiving_var.reset(token)


def client_for_future() -> Client:
    """The client a Future made without one (e.g. by unpickling) belongs to."""
    client = _receiving_var.get()
    if client is not None:
        return client
    worker = current_worker()
    if worker is not None:
        return worker._get_client()
    return default_client()


#: Where the Client class lives.  Workers sit below the client in the layers
#: (ARCHITECTURE.md), so a worker reaches it by name, the way the scheduler
#: reaches its extensions: a worker process that never needs a client never
#: imports the client code.
CLIENT_CLASS = "distributed.client.core:Client"


def new_worker_client(worker: Worker, timeout: float | None = None) -> Client:
    """A new Client for ``worker``'s own use, on the worker's loop.

    It is asynchronous on that loop and blocking from task threads: the
    same object serves both (``Client.asynchronous`` depends on the thread).
    """
    import importlib

    module, _, name = CLIENT_CLASS.partition(":")
    client_class = getattr(importlib.import_module(module), name)
    return client_class(worker.scheduler_address, loop=worker.loop, asynchronous=True,
                        set_as_default=False, timeout=timeout, name="worker",
                        security=_worker_client_security(worker))


def _worker_client_security(worker: Worker):
    """The worker's Security for its own client: a worker given only a
    worker certificate (``dask-worker --tls-cert``) shows that one."""
    import copy

    security = getattr(worker, "security", None)
    if security is None or security.tls_client_cert is not None:
        return security
    security = copy.copy(security)
    security.tls_client_cert = security.tls_worker_cert
    security.tls_client_key = security.tls_worker_key
    return security
