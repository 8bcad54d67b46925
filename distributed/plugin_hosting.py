"""Hosting plugins on a server: adding one (from an object or its pickle)
and removing one, the same for workers and nannies.

A host has ``plugins`` (name -> plugin) and ``_plugin_sources`` (name -> the
pickle a plugin came as, so that the scheduler sending the same pickle
again changes nothing).  ``kind`` ("worker", "nanny") names the host in
log lines.  Runs on the host's event loop.
"""
from __future__ import annotations

import inspect
import logging
import uuid
from collections.abc import Callable
from typing import Any

from distributed.exceptions import error_message
from distributed.protocol.pickle import loads

__all__ = ["add_plugin", "defines", "plugin_name", "remove_plugin"]

logger = logging.getLogger(__name__)


def plugin_name(plugin: Any) -> str:
    """The plugin's ``name``, or a fresh one from its type.

    >>> plugin_name(type("P", (), {"name": "mine"})())
    'mine'
    """
    name = getattr(plugin, "name", None)
    if not isinstance(name, str) or not name:
        name = f"{type(plugin).__name__}-{uuid.uuid4()}"
    return name


def defines(plugin: Any, hook: str) -> bool:
    """Whether ``plugin`` has its own ``hook`` (not the base class's no-op).

    >>> defines(object(), "setup")
    False
    """
    method = getattr(plugin, hook, None)
    return method is not None and callable(method) and not getattr(method, "_default_hook", False)


async def add_plugin(host: Any, kind: str, plugin: Any, name: str | None,
                     catch_errors: bool = True,
                     added: Callable[[], None] | None = None,
                     log: logging.Logger = logger) -> tuple[dict, Any]:
    """Set up ``plugin`` on ``host`` under ``name``; a plugin of that name
    already there is removed first, unless the very same pickle came again
    (then nothing happens).  Returns ``(reply, plugin)``: the reply is
    ``{"status": "OK"}`` or the error (raised instead without
    ``catch_errors``); ``plugin`` is None when nothing was set up.
    ``added`` runs once the plugin is in ``host.plugins``, before its setup.
    Failures are logged to ``log`` (the host's own logger).

    >>> reply, plugin = await add_plugin(worker, "worker", pickled, "p")  # doctest: +SKIP
    """
    source = None
    if isinstance(plugin, (bytes, bytearray, memoryview)):
        source = bytes(plugin)
        if name is not None and host._plugin_sources.get(name) == source:
            return {"status": "OK"}, None
        try:
            plugin = loads(source)
        except Exception as e:
            log.error("%s %s: %s plugin %r cannot be unpickled here: %r",
                         kind.capitalize(), host.address, kind, name, e)
            if not catch_errors:
                raise
            return error_message(e), None
    if name is None:
        name = plugin_name(plugin)
    if name in host.plugins:
        await host.plugin_remove(name=name)
    host.plugins[name] = plugin
    if source is not None:
        host._plugin_sources[name] = source
    if added is not None:
        added()
    if defines(plugin, "setup"):
        try:
            result = plugin.setup(host)
            if inspect.isawaitable(result):
                await result
        except Exception as e:
            log.exception("%s %s: %s plugin %r failed to set up",
                             kind.capitalize(), host.address, kind, name)
            if not catch_errors:
                raise
            return error_message(e), None
    return {"status": "OK"}, plugin


async def remove_plugin(host: Any, name: str | None, failed: Callable[[str, str, Any], None],
                        removed: Callable[[], None] | None = None) -> dict:
    """Tear down and forget the plugin ``name`` on ``host`` (nothing if
    unknown); a failing teardown is passed to ``failed(name, "teardown",
    error)`` and returned as the error reply.

    >>> await remove_plugin(worker, "p", worker._plugin_error)  # doctest: +SKIP
    {'status': 'OK'}
    """
    plugin = host.plugins.pop(name, None)
    host._plugin_sources.pop(name, None)
    if removed is not None:
        removed()
    if plugin is None or not defines(plugin, "teardown"):
        return {"status": "OK"}
    try:
        result = plugin.teardown(host)
        if inspect.isawaitable(result):
            await result
    except Exception as e:
        failed(name, "teardown", e)
        return error_message(e)
    return {"status": "OK"}
