"""Coordination primitives shared by clients and tasks across a cluster.

One module per primitive, each holding the scheduler extension and the
user-facing class side by side (``lock``: ``LockExtension`` and ``Lock``).
The scheduler loads the extensions through its registry
(``distributed.scheduler.extensions``) and never imports this package.

Names are imported on first use, so that loading one extension into a
scheduler does not import the others.

>>> from distributed.coordination import Lock
>>> Lock.__module__
'distributed.coordination.lock'
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = ["Lock", "Variable", "Queue", "Event", "Pub", "Sub", "Actor", "ActorFuture"]

_LAZY = {
    "Lock": "distributed.coordination.lock",
    "Variable": "distributed.coordination.variable",
    "Queue": "distributed.coordination.queue",
    "Event": "distributed.coordination.event",
    "Pub": "distributed.coordination.pubsub",
    "Sub": "distributed.coordination.pubsub",
    "Actor": "distributed.coordination.actor",
    "ActorFuture": "distributed.coordination.actor",
}

if TYPE_CHECKING:
    from distributed.coordination.actor import Actor, ActorFuture
    from distributed.coordination.event import Event
    from distributed.coordination.lock import Lock
    from distributed.coordination.pubsub import Pub, Sub
    from distributed.coordination.queue import Queue
    from distributed.coordination.variable import Variable


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'distributed.coordination' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
