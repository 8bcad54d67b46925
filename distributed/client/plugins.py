"""Client methods that register plugins on the scheduler, workers and nannies.

``register_plugin(plugin)`` is the one entry point of current
dask.distributed: it looks at the plugin's base class
(``SchedulerPlugin``, ``WorkerPlugin``, ``NannyPlugin`` from
``distributed.diagnostics.plugin``) and refuses anything else.  The older
``register_worker_plugin`` / ``register_scheduler_plugin`` /
``register_worker_callbacks`` keep working, duck-typed plugins included.

Plugins travel pickled.  The scheduler keeps worker and nanny plugins and
gives them to workers and nannies that join later.  The client remembers
what it registered and registers it again after reconnecting to a
scheduler that restarted and lost them (dask.distributed does not: its
d/d#5125); plugins already there are left alone (sent as idempotent).
"""
from __future__ import annotations

import inspect
import logging
import uuid
from collections.abc import Callable
from typing import Any

from distributed.exceptions import clean_exception
from distributed.protocol.pickle import dumps

__all__ = ["PluginMethods"]

logger = logging.getLogger(__name__)


def _name_of(plugin: Any, name: str | None) -> str:
    if name is not None:
        if not isinstance(name, str) or not name:
            raise TypeError(f"a plugin name must be a non-empty string, not {name!r}")
        return name
    name = getattr(plugin, "name", None)
    if not isinstance(name, str) or not name:
        name = f"{type(plugin).__name__}-{uuid.uuid4()}"
    return name


def _raise_first_error(responses: dict) -> None:
    for resp in (responses or {}).values():
        if isinstance(resp, dict) and resp.get("status") == "error":
            _, exc, tb = clean_exception(**resp)
            raise exc.with_traceback(tb)


class PluginMethods:
    """The plugin methods of ``Client`` (``self`` is a Client)."""

    def register_plugin(self, plugin: Any, name: str | None = None, idempotent: bool | None = None):
        """Register a scheduler, worker or nanny plugin (an instance of a
        subclass of ``SchedulerPlugin``, ``WorkerPlugin`` or ``NannyPlugin``).

        Worker and nanny plugins are set up on every worker/nanny now (an
        error there is raised here) and on those that join later.  Returns
        ``{address: {"status": "OK"}}`` for worker and nanny plugins.

        >>> client.register_plugin(MyWorkerPlugin(), name="mine")   # doctest: +SKIP
        """
        from distributed.diagnostics.plugin import (
            InstallPlugin,
            NannyPlugin,
            SchedulerPlugin,
            WorkerPlugin,
            _NannyInstall,
        )

        if isinstance(plugin, type):
            raise TypeError(f"register_plugin needs a plugin instance, not the class {plugin.__name__}: "
                            f"call it first, e.g. register_plugin({plugin.__name__}(...))")
        if isinstance(plugin, InstallPlugin) and plugin.restart_workers:
            plugin = _NannyInstall(plugin)
        if isinstance(plugin, SchedulerPlugin):
            return self.sync(self._register_scheduler_plugin, plugin, name=name, idempotent=idempotent)
        if isinstance(plugin, NannyPlugin):
            return self.sync(self._register_nanny_plugin, plugin, name=name, idempotent=idempotent)
        if isinstance(plugin, WorkerPlugin):
            return self.sync(self._register_worker_plugin, plugin, name=name, idempotent=idempotent)
        raise TypeError(f"Registering duck-typed plugins is not allowed: {type(plugin).__name__} must "
                        "subclass SchedulerPlugin, WorkerPlugin or NannyPlugin "
                        "(from distributed.diagnostics.plugin)")

    def register_scheduler_plugin(self, plugin: Any, name: str | None = None, idempotent: bool | None = None,
                                  **kwargs):
        """Older spelling: register a scheduler plugin (duck-typed allowed)."""
        if isinstance(plugin, type):
            plugin = plugin(**kwargs)
        return self.sync(self._register_scheduler_plugin, plugin, name=name, idempotent=idempotent)

    def register_worker_plugin(self, plugin: Any = None, name: str | None = None, nanny: bool | None = None,
                               **kwargs):
        """Older spelling: register a worker plugin, or a nanny plugin with
        ``nanny=True`` (``nanny=None``: by its class).  A class is called
        with ``**kwargs`` first, as very old code expects.

        >>> client.register_worker_plugin(MyPlugin(), name="mine")   # doctest: +SKIP
        """
        from distributed.diagnostics.plugin import NannyPlugin

        if isinstance(plugin, type):
            plugin = plugin(**kwargs)
        elif kwargs:
            raise TypeError(f"register_worker_plugin got unexpected keywords {sorted(kwargs)} "
                            "(they are passed only to a plugin class)")
        if nanny is None:
            nanny = isinstance(plugin, NannyPlugin)
        method = self._register_nanny_plugin if nanny else self._register_worker_plugin
        return self.sync(method, plugin, name=name, idempotent=None)

    def register_worker_callbacks(self, setup: Callable | None = None):
        """Run ``setup`` on every worker, now and on workers that join later
        (a ``dask_worker`` parameter receives the Worker)."""
        from distributed.diagnostics.plugin import _WorkerSetupPlugin

        if setup is None or not callable(setup):
            raise TypeError(f"register_worker_callbacks needs a callable setup, not {setup!r}")
        return self.register_worker_plugin(_WorkerSetupPlugin(setup))

    def unregister_worker_plugin(self, name: str, nanny: bool | None = None):
        """Remove the worker plugin ``name`` (a nanny plugin with
        ``nanny=True``) from every worker and from the scheduler's list;
        its ``teardown`` runs.  Unknown names raise ``ValueError``."""
        return self.sync(self._unregister_worker_plugin, name, nanny=nanny)

    def unregister_scheduler_plugin(self, name: str):
        """Remove the scheduler plugin ``name`` (its ``close`` runs)."""
        return self.sync(self._unregister_scheduler_plugin, name)

    # -- coroutines --------------------------------------------------------

    async def _register_scheduler_plugin(self, plugin, name=None, idempotent=None):
        name = _name_of(plugin, name)
        if idempotent is None:
            idempotent = bool(getattr(plugin, "idempotent", False))
        pickled = dumps(plugin)
        result = await self.scheduler.register_scheduler_plugin(plugin=pickled, name=name,
                                                                idempotent=idempotent)
        self._plugins_registered()[("scheduler", name)] = pickled
        return result

    async def _register_worker_plugin(self, plugin, name=None, idempotent=None) -> dict:
        _check_hooks(plugin, ("setup", "teardown", "transition"))
        name = _name_of(plugin, name)
        if idempotent is None:
            idempotent = bool(getattr(plugin, "idempotent", False))
        pickled = dumps(plugin)
        responses = await self.scheduler.register_worker_plugin(plugin=pickled, name=name,
                                                                idempotent=idempotent)
        self._plugins_registered()[("worker", name)] = pickled
        _raise_first_error(responses)
        return responses

    async def _register_nanny_plugin(self, plugin, name=None, idempotent=None) -> dict:
        _check_hooks(plugin, ("setup", "teardown"))
        name = _name_of(plugin, name)
        if idempotent is None:
            idempotent = bool(getattr(plugin, "idempotent", False))
        pickled = dumps(plugin)
        responses = await self.scheduler.register_nanny_plugin(plugin=pickled, name=name,
                                                               idempotent=idempotent)
        self._plugins_registered()[("nanny", name)] = pickled
        _raise_first_error(responses)
        return responses

    async def _unregister_worker_plugin(self, name, nanny=None) -> dict:
        if nanny:
            responses = await self.scheduler.unregister_nanny_plugin(name=name)
        else:
            responses = await self.scheduler.unregister_worker_plugin(name=name)
        self._plugins_registered().pop(("nanny" if nanny else "worker", name), None)
        _raise_first_error(responses)
        return responses

    async def _unregister_scheduler_plugin(self, name):
        result = await self.scheduler.unregister_scheduler_plugin(name=name)
        self._plugins_registered().pop(("scheduler", name), None)
        return result

    def _plugins_registered(self) -> dict:
        """``{(kind, name): pickled plugin}`` this client registered."""
        registered = self.__dict__.get("_registered_plugins")
        if registered is None:
            registered = self.__dict__["_registered_plugins"] = {}
        return registered

    async def _reregister_plugins(self) -> None:
        """After reconnecting: register again what this client registered
        (as idempotent: a scheduler that kept them changes nothing)."""
        for (kind, name), pickled in list(self._plugins_registered().items()):
            try:
                method = getattr(self.scheduler, f"register_{kind}_plugin")
                responses = await method(plugin=pickled, name=name, idempotent=True)
                if kind != "scheduler":
                    _raise_first_error(responses)
            except Exception as e:
                logger.warning("could not register %s plugin %r again after reconnecting: %r", kind, name, e)


def _check_hooks(plugin: Any, hooks: tuple) -> None:
    """A hook that is not a function would fail on every worker: say so here."""
    for hook in hooks:
        value = getattr(plugin, hook, None)
        if value is not None and not callable(value):
            raise TypeError(f"plugin {type(plugin).__name__}.{hook} must be a method, not {value!r}")
        if value is not None and inspect.isclass(value):
            raise TypeError(f"plugin {type(plugin).__name__}.{hook} must be a method, not a class")
