"""Scheduler extensions: named add-ons the scheduler loads when it is built.

An extension is a class called with the scheduler, ``Cls(scheduler)``; it
keeps its own state and adds its operations to ``scheduler.handlers`` (one
request, one reply) and ``scheduler.stream_handlers`` (one-way messages on
a client's or worker's stream).  The scheduler keeps the instances in
``scheduler.extensions`` by name.

The scheduler knows extensions only through this registry of
``name -> "module:Class"`` strings, imported with ``importlib`` when a
scheduler is built, so the scheduler's modules never import the packages
that provide them (``distributed.coordination`` and later ones).  Three
sources make the set of extensions, later ones winning:

1. ``DEFAULT_EXTENSIONS`` plus whatever ``register_extension`` added;
2. the configuration ``distributed.scheduler.extensions`` (a mapping name ->
   target; a target of ``None`` or ``False`` switches a default off), e.g.
   ``DASK_DISTRIBUTED__SCHEDULER__EXTENSIONS__MINE=mypkg.ext:MyExtension``;
3. ``Scheduler(extensions={...})``, which replaces both: exactly those
   extensions are loaded (classes or target strings).

The work-stealing balancer is not one of these: it is part of the
scheduler (``scheduler/stealing.py``, switched by
``distributed.scheduler.work-stealing``), and appears in
``scheduler.extensions["stealing"]`` only because upstream's code looks for
it there.

Optional hooks an extension may define, called by the scheduler:

* ``remove_client(client)``: a client's stream to the scheduler ended (it
  closed or was lost); what it held may be let go.
* ``close()`` (plain or ``async``): the scheduler is closing; answer every
  pending request.

Errors in hooks are logged, never raised into the scheduler.  Everything here
runs on the scheduler's event loop and is not thread-safe.
"""
from __future__ import annotations

import importlib
import inspect
import logging
from collections.abc import Mapping
from typing import Any

from distributed import config

__all__ = [
    "DEFAULT_EXTENSIONS",
    "register_extension",
    "extension_targets",
    "import_extension",
    "load_extensions",
    "notify_extensions",
    "close_extensions",
]

logger = logging.getLogger(__name__)

_CONFIG_KEY = "distributed.scheduler.extensions"

#: The extensions every scheduler loads unless told otherwise.
DEFAULT_EXTENSIONS: dict[str, str] = {
    "locks": "distributed.coordination.lock:LockExtension",
    "variables": "distributed.coordination.variable:VariableExtension",
    "queues": "distributed.coordination.queue:QueueExtension",
    "events": "distributed.coordination.event:EventExtension",
    "pubsub": "distributed.coordination.pubsub:PubSubExtension",
    "metadata": "distributed.coordination.metadata:MetadataExtension",
    "semaphores": "distributed.coordination.semaphore:SemaphoreExtension",
    "multi_locks": "distributed.coordination.multi_lock:MultiLockExtension",
    "progress": "distributed.diagnostics.progress_watch:ProgressExtension",
    "diagnostics": "distributed.diagnostics.extension:DiagnosticsExtension",
    "memory_sampler": "distributed.diagnostics.memory_sampler:MemorySamplerExtension",
}

# Defaults plus registrations made at run time (by name; last one wins).
_registry: dict[str, str | type] = dict(DEFAULT_EXTENSIONS)


def register_extension(name: str, target: str | type) -> None:
    """Have every scheduler built from now on load ``target`` as ``name``.

    ``target`` is a class or a ``"module:Class"`` string (imported only when
    a scheduler is built).

    >>> register_extension("locks", "distributed.coordination.lock:LockExtension")
    """
    _check_entry(name, target, "register_extension")
    _registry[name] = target


def extension_targets(extensions: Mapping | None = None) -> dict[str, str | type]:
    """The extensions a scheduler built now loads: ``name -> target``.

    With ``extensions`` given, exactly those; otherwise the registry updated
    by the configuration.

    >>> extension_targets()["locks"]
    'distributed.coordination.lock:LockExtension'
    >>> extension_targets({"mine": "mypkg.ext:Mine"})
    {'mine': 'mypkg.ext:Mine'}
    """
    if extensions is not None:
        if not isinstance(extensions, Mapping):
            raise TypeError("Scheduler(extensions=...) must be a mapping name -> class or 'module:Class', "
                            f"not {type(extensions).__name__}")
        targets = dict(extensions)
        for name, target in targets.items():
            _check_entry(name, target, "Scheduler(extensions=...)")
        return targets
    targets = dict(_registry)
    extra = config.get(_CONFIG_KEY, default=None) or {}
    if not isinstance(extra, Mapping):
        raise TypeError(f"configuration {_CONFIG_KEY!r} ({config.env_var(_CONFIG_KEY)}) must be a mapping "
                        f"name -> 'module:Class', not {type(extra).__name__}")
    for name, target in extra.items():
        if target is None or target is False:
            targets.pop(name, None)
            continue
        _check_entry(name, target, f"configuration {_CONFIG_KEY!r}")
        targets[name] = target
    return targets


def import_extension(target: str | type) -> type:
    """The class named by ``"package.module:Class"`` (a class is returned as
    it is).  A missing module or class raises ``ImportError`` naming it.

    >>> import_extension("distributed.coordination.lock:LockExtension").__name__
    'LockExtension'
    """
    if not isinstance(target, str):
        return target
    module_name, sep, attr = target.partition(":")
    if not sep:  # also accept the dotted form "package.module.Class"
        module_name, _, attr = target.rpartition(".")
    if not module_name or not attr:
        raise ImportError(f"scheduler extension {target!r} is not of the form 'package.module:Class'")
    module = importlib.import_module(module_name)
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ImportError(f"scheduler extension {target!r}: module {module_name!r} has no {attr!r}") from None


def load_extensions(scheduler: Any, extensions: Mapping | None = None) -> dict[str, Any]:
    """Build every extension for ``scheduler``; ``{name: instance}``.

    A target that cannot be imported or built raises, naming the extension:
    a scheduler missing an extension it was asked for would fail later, and
    less clearly.

    >>> load_extensions(scheduler)               # doctest: +SKIP
    {'locks': <LockExtension: 0 held, 0 waiting>}
    """
    loaded: dict[str, Any] = {}
    for name, target in extension_targets(extensions).items():
        try:
            cls = import_extension(target)
        except ImportError as e:
            raise ImportError(f"scheduler extension {name!r} could not be imported: {e}") from e
        try:
            loaded[name] = cls(scheduler)
        except Exception as e:
            raise RuntimeError(f"scheduler extension {name!r} ({target!r}) failed to start: {e!r}") from e
        logger.debug("scheduler extension %r loaded from %r", name, target)
    return loaded


def notify_extensions(extensions: Mapping[str, Any], hook: str, *args: Any) -> None:
    """Call ``hook(*args)`` on every extension that defines it; log errors.

    >>> notify_extensions(scheduler.extensions, "remove_client", "Client-1")   # doctest: +SKIP
    """
    for name, ext in extensions.items():
        method = getattr(ext, hook, None)
        if method is None:
            continue
        try:
            method(*args)
        except Exception:
            logger.exception("scheduler extension %r failed in %s", name, hook)


async def close_extensions(extensions: Mapping[str, Any]) -> None:
    """Close every extension (``close()`` plain or async); log errors.

    >>> await close_extensions(scheduler.extensions)    # doctest: +SKIP
    """
    for name, ext in extensions.items():
        close = getattr(ext, "close", None)
        if close is None:
            continue
        try:
            result = close()
            if inspect.isawaitable(result):
                await result
        except Exception:
            logger.exception("scheduler extension %r failed to close", name)


def _check_entry(name: Any, target: Any, where: str) -> None:
    if not isinstance(name, str) or not name:
        raise TypeError(f"{where}: an extension name must be a non-empty string, not {name!r}")
    if not (isinstance(target, str) or inspect.isclass(target) or callable(target)):
        raise TypeError(f"{where}: extension {name!r} must be a class or a 'module:Class' string, "
                        f"not {type(target).__name__}")
