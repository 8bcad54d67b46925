"""Plugin bookkeeping of the scheduler: its own plugins, and the worker and
nanny plugins it hands to every worker and nanny, now and later.

Scheduler plugins are duck-typed: any object with some of the hooks of
``distributed.diagnostics.plugin.SchedulerPlugin`` (``start``,
``before_close``, ``close``, ``update_graph``, ``transition``,
``add_worker``, ``remove_worker``, ``add_client``, ``remove_client``,
``restart``, ``log_event``, ``valid_workers_downscaling``).  This module
does not import that class (the scheduler sits below ``diagnostics``); a
hook the base class leaves empty is marked ``_default_hook`` and is never
called, so a plugin costs only the hooks it defines.  In particular
``transition`` is fed from the state machine's single transition point
(``SchedulerState.plugins``) only for plugins that define it: with none,
a transition pays one falsy check.

A plugin that raises never stops the scheduler: the error is logged and
published on the ``"plugin-errors"`` event topic.  (Upstream logs most hook
errors and swallows transition errors at INFO level; a failing plugin is
then easy to miss.)

Worker and nanny plugins are kept pickled (``bytes``): the scheduler never
unpickles them, so a plugin whose code only the workers have is fine.

Runs on the scheduler's event loop; not thread-safe.
"""
from __future__ import annotations

import inspect
import logging
import traceback
import uuid
import warnings
from typing import Any

__all__ = ["SchedulerPlugins", "UnknownPluginError", "plugin_name", "defines_hook", "error_event",
           "PLUGIN_ERRORS_TOPIC"]

logger = logging.getLogger(__name__)

#: The event topic on which plugin failures are published.
PLUGIN_ERRORS_TOPIC = "plugin-errors"


class UnknownPluginError(KeyError, ValueError):
    """No plugin of that name is registered.  A ``KeyError`` (as old
    dask.distributed raised) and a ``ValueError`` (as newer ones do)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def plugin_name(plugin: Any) -> str:
    """The plugin's ``name`` attribute, else ``<ClassName>-<uuid>``.

    >>> class P: name = "mine"
    >>> plugin_name(P())
    'mine'
    >>> plugin_name(object()).startswith("object-")
    True
    """
    name = getattr(plugin, "name", None)
    if name is None or not isinstance(name, str):
        name = f"{type(plugin).__name__}-{uuid.uuid4()}"
    return name


def defines_hook(plugin: Any, hook: str) -> bool:
    """Whether ``plugin`` has a ``hook`` of its own (not a base class's no-op).

    >>> class P:
    ...     def add_worker(self, scheduler, worker): pass
    >>> defines_hook(P(), "add_worker"), defines_hook(P(), "transition")
    (True, False)
    """
    method = getattr(plugin, hook, None)
    if method is None or not callable(method):
        return False
    return not getattr(method, "_default_hook", False)


class _TransitionHook:
    """What ``SchedulerState.plugins`` holds for one scheduler plugin: calls
    its ``transition`` with the keywords dask.distributed plugins expect
    (``stimulus_id``), and reports its errors."""

    __slots__ = ("name", "plugin", "owner")

    def __init__(self, name: str, plugin: Any, owner: SchedulerPlugins):
        self.name = name
        self.plugin = plugin
        self.owner = owner

    def transition(self, key, start: str, finish: str, **kwargs) -> None:
        kwargs.setdefault("stimulus_id", "scheduler")
        try:
            self.plugin.transition(key, start, finish, **kwargs)
        except Exception as e:
            self.owner.report(self.name, "transition", e)

    def __repr__(self) -> str:
        return f"<transition hook of plugin {self.name!r}>"


class _PluginDict(dict):
    """``Scheduler.plugins``: ``{name: plugin}`` as in current
    dask.distributed, that also takes the 1.x list idioms
    (``plugin in s.plugins``, ``s.plugins.append(p)``, ``s.plugins.remove(p)``).

    >>> d = SchedulerPlugins([]).plugins
    >>> p = object(); d.append(p)
    >>> p in d, len(d)
    (True, 1)
    >>> d.remove(p); len(d)
    0
    """

    def __init__(self, owner: SchedulerPlugins):
        super().__init__()
        self._owner = owner

    def __contains__(self, item) -> bool:
        try:
            if dict.__contains__(self, item):
                return True
        except TypeError:  # an unhashable plugin object
            pass
        return any(v is item for v in self.values())

    def append(self, plugin: Any) -> None:
        self._owner.add(plugin)

    def remove(self, plugin: Any) -> None:
        names = [n for n, p in self.items() if p is plugin]
        if not names:
            raise ValueError(f"{plugin!r} is not among the scheduler plugins")
        self._owner.remove(names[0])


class SchedulerPlugins:
    """The plugins of one scheduler.

    ``plugins`` is ``{name: plugin}`` (``Scheduler.plugins``);
    ``worker_plugins`` and ``nanny_plugins`` are ``{name: pickled plugin}``.
    ``on_error(name, hook, exc)`` is called when a plugin raises (the
    scheduler publishes the event); ``transition_hooks`` is the state
    machine's list of transition observers, kept in step with ``plugins``.

    >>> class Count:
    ...     n = 0
    ...     def add_worker(self, scheduler, worker): Count.n += 1
    >>> registry = SchedulerPlugins(transition_hooks=[])
    >>> registry.add(Count(), name="count")
    'count'
    >>> registry.call("add_worker", scheduler=None, worker="w")   # no async hook: nothing to await
    []
    >>> Count.n
    1
    """

    def __init__(self, transition_hooks: list, on_error=None):
        self.plugins: dict[str, Any] = _PluginDict(self)
        self.worker_plugins: dict[str, bytes] = {}
        self.nanny_plugins: dict[str, bytes] = {}
        self.transition_hooks = transition_hooks
        self.on_error = on_error

    def __repr__(self) -> str:
        return (f"<SchedulerPlugins: {len(self.plugins)} scheduler, {len(self.worker_plugins)} worker, "
                f"{len(self.nanny_plugins)} nanny>")

    # -- scheduler plugins -----------------------------------------------

    def add(self, plugin: Any, name: str | None = None, idempotent: bool | None = None) -> str | None:
        """Add ``plugin`` under ``name`` (default: ``plugin_name``); returns
        the name, or None when an idempotent plugin of that name was there.

        A duplicate name replaces the old plugin with a ``UserWarning``,
        unless the plugin is idempotent (argument, else its ``idempotent``
        attribute): then the old one stays.
        """
        if isinstance(plugin, type):
            raise TypeError(f"add_plugin needs a plugin instance, not the class {plugin.__name__}; "
                            f"call it first: {plugin.__name__}(...)")
        if name is None:
            name = plugin_name(plugin)
        if not isinstance(name, str) or not name:
            raise TypeError(f"a plugin name must be a non-empty string, not {name!r}")
        if idempotent is None:
            idempotent = bool(getattr(plugin, "idempotent", False))
        if dict.__contains__(self.plugins, name):
            if idempotent:
                return None
            warnings.warn(f"Scheduler already contains a plugin with name {name}; overwriting.",
                          category=UserWarning, stacklevel=3)
            self.remove(name)
        self.plugins[name] = plugin
        if defines_hook(plugin, "transition"):
            self.transition_hooks.append(_TransitionHook(name, plugin, self))
        return name

    def remove(self, name: str) -> Any:
        """Remove the plugin ``name`` and return it; ``UnknownPluginError``
        (a ``ValueError`` and a ``KeyError``) if there is none."""
        try:
            plugin = dict.pop(self.plugins, name)
        except (KeyError, TypeError):
            raise UnknownPluginError(f"Could not find plugin {name!r} among the current scheduler "
                                     f"plugins {sorted(self.plugins)}") from None
        self.transition_hooks[:] = [h for h in self.transition_hooks
                                    if not (isinstance(h, _TransitionHook) and h.name == name)]
        return plugin

    def call(self, hook: str, *args, **kwargs) -> list:
        """Call ``hook(*args, **kwargs)`` on every plugin that defines it;
        errors are reported, never raised.  Returns the awaitables that
        async hooks returned (``await_all`` them, or ``spawn`` it)."""
        pending = []
        for name, plugin in list(self.plugins.items()):
            if not defines_hook(plugin, hook):
                continue
            try:
                result = getattr(plugin, hook)(*args, **kwargs)
            except Exception as e:
                self.report(name, hook, e)
                continue
            if inspect.isawaitable(result):
                pending.append((name, hook, result))
        return pending

    async def await_all(self, pending: list) -> None:
        """Wait for what ``call`` returned; errors are reported."""
        for name, hook, awaitable in pending:
            try:
                await awaitable
            except Exception as e:
                self.report(name, hook, e)

    async def call_async(self, hook: str, *args, **kwargs) -> None:
        """``call`` then ``await_all``: for hooks that may be coroutines
        (``start``, ``before_close``, ``close``)."""
        await self.await_all(self.call(hook, *args, **kwargs))

    def valid_workers_downscaling(self, scheduler: Any, workers: list) -> list:
        """``workers`` filtered by every plugin's ``valid_workers_downscaling``
        (for retiring workers: a plugin may protect some)."""
        for name, plugin in list(self.plugins.items()):
            if not defines_hook(plugin, "valid_workers_downscaling"):
                continue
            try:
                workers = list(plugin.valid_workers_downscaling(scheduler, workers))
            except Exception as e:
                self.report(name, "valid_workers_downscaling", e)
        return workers

    def report(self, name: str, hook: str, exc: BaseException) -> None:
        """A plugin's hook raised: log it and tell ``on_error``."""
        logger.error("scheduler plugin %r failed in %s: %r", name, hook, exc, exc_info=exc)
        if self.on_error is not None:
            try:
                self.on_error(name, hook, exc)
            except Exception:
                logger.exception("reporting the failure of plugin %r failed", name)

    # -- worker and nanny plugins ------------------------------------------

    def add_pickled(self, kind: str, name: str, pickled: bytes, idempotent: bool = False) -> bool:
        """Keep the pickled ``kind`` ("worker" or "nanny") plugin ``name``;
        False (and nothing changes) when idempotent and already there."""
        store = self._store(kind)
        if not isinstance(name, str) or not name:
            raise TypeError(f"a plugin name must be a non-empty string, not {name!r}")
        if not isinstance(pickled, (bytes, bytearray, memoryview)):
            raise TypeError(f"a {kind} plugin must arrive pickled (bytes), not {type(pickled).__name__}")
        if idempotent and name in store:
            return False
        store[name] = bytes(pickled)
        return True

    def remove_pickled(self, kind: str, name: str) -> None:
        store = self._store(kind)
        if name not in store:
            raise UnknownPluginError(f"The {kind} plugin {name!r} does not exist (known: {sorted(store)})")
        del store[name]

    def _store(self, kind: str) -> dict:
        if kind == "worker":
            return self.worker_plugins
        if kind == "nanny":
            return self.nanny_plugins
        raise ValueError(f"plugin kind must be 'worker' or 'nanny', not {kind!r}")


def error_event(name: str, hook: str, server: str | None, exc: BaseException) -> dict:
    """The ``"plugin-errors"`` event for a failure of plugin ``name`` in ``hook``.

    >>> error_event("p", "setup", "tcp://w:1", ValueError("x"))["exception_text"]
    "ValueError('x')"
    """
    return {
        "action": "plugin-error",
        "plugin": name,
        "hook": hook,
        "server": server,
        "exception_text": repr(exc),
        "traceback_text": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
    }

