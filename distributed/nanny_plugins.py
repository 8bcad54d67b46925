"""Nanny plugins and events on the nanny, mixed into ``Nanny``.

A nanny plugin is any object with some of ``setup(nanny)`` and
``teardown(nanny)`` (plain or coroutine functions) and a ``restart``
attribute; the base class is ``distributed.diagnostics.plugin.NannyPlugin``.

Where plugins come from:

* a nanny that starts asks the scheduler for the nanny plugins registered
  so far and sets them up *before* it starts its worker process, so that
  e.g. ``Environ`` applies to the first worker without a restart;
* the scheduler sends ``plugin_add`` to every nanny when a client registers
  a plugin, and again to a nanny whose worker registers (the nanny skips a
  plugin it already has from the very same pickle): together these cover a
  plugin registered while the nanny was starting.

With ``restart = True``, a plugin added while the worker runs restarts the
worker after ``setup``.  A failing ``setup`` is returned to the scheduler
(and so raised to the client) when a client added the plugin; at the
nanny's start it is logged and the nanny goes on.

Runs on the nanny's event loop; not thread-safe.
"""
from __future__ import annotations

import asyncio
import logging
import traceback
from typing import Any

from distributed.exceptions import error_message
from distributed.plugin_hosting import add_plugin, remove_plugin
from distributed.preloading import process_preloads

__all__ = ["NannyPluginsMixin"]

logger = logging.getLogger(__name__)

#: How long a starting nanny waits for the scheduler's list of plugins.
FETCH_TIMEOUT = 5.0


class NannyPluginsMixin:
    """Plugins and ``log_event`` of the ``Nanny`` (``self``)."""

    def _init_plugins(self, preload=None, preload_argv=None) -> None:
        self.preloads = process_preloads(self, preload, preload_argv, kind="nanny")
        self.plugins: dict[str, Any] = {}
        self._plugin_sources: dict[str, bytes] = {}
        self.handlers.update({"plugin_add": self.plugin_add, "plugin_remove": self.plugin_remove})

    async def _fetch_plugins(self) -> None:
        """At start, before the worker process: the scheduler's nanny plugins.
        A scheduler that does not answer is not an error here (the worker's
        own registration will say what is wrong)."""
        try:
            plugins = await asyncio.wait_for(self.rpc(self.scheduler_address).get_nanny_plugins(),
                                             FETCH_TIMEOUT)
        except Exception as e:
            logger.debug("Nanny %s: no nanny plugins from %s: %r", self.address, self.scheduler_address, e)
            return
        for name, pickled in (plugins or {}).items():
            result = await self.plugin_add(plugin=pickled, name=name, restart=False)
            if result.get("status") != "OK":
                self._report_plugin_error(name, "setup", result.get("exception_text") or "")

    async def plugin_add(self, comm=None, plugin=None, name: str | None = None, restart: bool = True,
                         **kwargs) -> dict:
        """Set up ``plugin`` (an object or its pickle) under ``name``; with
        its ``restart`` attribute true (and ``restart`` here), restart the
        worker afterwards.  ``{"status": "OK"}`` or the error."""
        reply, plugin = await add_plugin(self, "nanny", plugin, name, log=logger)
        if plugin is not None and restart and getattr(plugin, "restart", False) \
                and self.process is not None and self.process.is_alive():
            logger.info("Nanny %s restarts its worker for plugin %r", self.address, name)
            try:
                await self.restart()
            except Exception as e:
                return error_message(e)
        return reply

    async def plugin_remove(self, comm=None, name: str | None = None, **kwargs) -> dict:
        """Tear down and forget the plugin ``name`` (nothing if unknown)."""
        return await remove_plugin(self, name, self._report_plugin_error)

    async def _teardown_plugins(self) -> None:
        for name in list(self.plugins):
            await self.plugin_remove(name=name)

    def _report_plugin_error(self, name: str, hook: str, exc) -> None:
        if isinstance(exc, BaseException):
            logger.error("Nanny %s: nanny plugin %r failed in %s: %r", self.address, name, hook, exc,
                         exc_info=exc)
            text = repr(exc)
            tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        else:
            logger.error("Nanny %s: nanny plugin %r failed in %s: %s", self.address, name, hook, exc)
            text, tb = str(exc), ""
        self.log_event("plugin-errors", {"action": "plugin-error", "plugin": name, "hook": hook,
                                         "server": self.address, "exception_text": text,
                                         "traceback_text": tb})

    def log_event(self, topic, msg: Any) -> None:
        """Publish ``msg`` on ``topic`` through the scheduler (in the background).

        >>> nanny.log_event("deploy", {"restarts": nanny.restarts})   # doctest: +SKIP
        """
        if isinstance(topic, list):
            topic = tuple(topic)

        async def send():
            try:
                await self.rpc(self.scheduler_address).log_event(topic=topic, msg=msg)
            except Exception as e:
                logger.info("Nanny %s: event on %r not delivered: %r", self.address, topic, e)

        self.spawn(send())
