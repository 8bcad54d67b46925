"""The Scheduler's plugin and event methods, mixed into ``Scheduler``.

The bookkeeping lives in ``plugins.py`` (``SchedulerPlugins``) and
``events.py`` (``EventBroker``); this mixin gives the Scheduler its public
methods (``add_plugin``, ``log_event`` ...), its network handlers, and the
thin calls the server makes at each lifecycle point (``_note_worker_added``
...), so that ``server.py`` only calls them.

Runs on the scheduler's event loop; not thread-safe.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
import time
from typing import Any

from distributed import config
from distributed.comm import CommClosedError
from distributed.exceptions import error_message
from distributed.preloading import process_preloads, start_preloads, teardown_preloads
from distributed.protocol import Serialized
from distributed.protocol.pickle import loads
from distributed.scheduler.events import DEFAULT_LOG_LENGTH, EventBroker
from distributed.scheduler.plugins import (
    PLUGIN_ERRORS_TOPIC,
    SchedulerPlugins,
    defines_hook,
    error_event,
    plugin_name,
)

__all__ = ["SchedulerPluginsMixin"]

logger = logging.getLogger(__name__)


def _log_length() -> int:
    value = config.get("distributed.admin.low-level-log-length", DEFAULT_LOG_LENGTH)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{config.env_var('distributed.admin.low-level-log-length')}={value!r} "
                         "is not a valid integer (config key 'distributed.admin.low-level-log-length')"
                         ) from None


def _unpickle(plugin: Any) -> Any:
    """A plugin as a client sent it: pickled bytes or a Serialized payload."""
    if isinstance(plugin, Serialized):
        plugin = plugin.deserialize()
    if isinstance(plugin, (bytes, bytearray, memoryview)):
        plugin = loads(plugin)
    return plugin


class SchedulerPluginsMixin:
    """Plugins and structured events of the ``Scheduler`` (``self``)."""

    # -- set-up (called from Scheduler.__init__) ----------------------------

    def _init_plugins_and_events(self, plugins, preload=None, preload_argv=None) -> None:
        self.preloads = process_preloads(self, preload, preload_argv, kind="scheduler")
        self._broker = EventBroker(_log_length())
        self._plugins = SchedulerPlugins(self.state.plugins, on_error=self._plugin_failed)
        self._plugins_started: asyncio.Future | None = None
        self.handlers.update({
            "log_event": self._log_event_handler,
            "events": self._get_events_handler,
            "get_events": self._get_events_handler,
            "subscribe_topic": self._subscribe_handler,
            "unsubscribe_topic": self._unsubscribe_handler,
            "register_scheduler_plugin": self.register_scheduler_plugin,
            "unregister_scheduler_plugin": self.unregister_scheduler_plugin,
            "register_worker_plugin": self.register_worker_plugin,
            "register_worker_plugins": self.register_worker_plugin,
            "unregister_worker_plugin": self.unregister_worker_plugin,
            "register_nanny_plugin": self.register_nanny_plugin,
            "unregister_nanny_plugin": self.unregister_nanny_plugin,
            "get_nanny_plugins": self._get_nanny_plugins,
        })
        self.stream_handlers.update({
            "log-event": self._log_event_stream,
            "subscribe-topic": self._subscribe_stream,
            "unsubscribe-topic": self._unsubscribe_stream,
            "plugin-error": self._plugin_error_stream,
        })
        for plugin in plugins or ():
            self.add_plugin(plugin)

    # -- scheduler plugins ------------------------------------------------------

    @property
    def plugins(self) -> dict:
        """``{name: plugin}`` of the scheduler plugins."""
        return self._plugins.plugins

    @property
    def worker_plugins(self) -> dict:
        """``{name: pickled plugin}`` handed to every worker, now and later."""
        return self._plugins.worker_plugins

    @property
    def nanny_plugins(self) -> dict:
        """``{name: pickled plugin}`` handed to every nanny, now and later."""
        return self._plugins.nanny_plugins

    def add_plugin(self, plugin: Any, name: str | None = None, idempotent: bool | None = None) -> None:
        """Add a scheduler plugin now (its ``start`` hook is not called:
        ``Scheduler(plugins=...)`` and ``register_scheduler_plugin`` do that).

        >>> s.add_plugin(MyPlugin(), name="counter")     # doctest: +SKIP
        """
        self._plugins.add(plugin, name=name, idempotent=idempotent)

    def remove_plugin(self, name: str | None = None, plugin: Any = None) -> None:
        """Remove the scheduler plugin ``name`` (``ValueError`` if unknown).

        >>> s.remove_plugin("counter")                   # doctest: +SKIP
        """
        if name is not None and not isinstance(name, str):  # 1.x: remove_plugin(plugin_object)
            name, plugin = None, name
        if name is None and plugin is not None:  # the old spelling: remove_plugin(plugin=obj)
            names = [n for n, p in self._plugins.plugins.items() if p is plugin]
            if not names:
                raise ValueError(f"Could not find plugin {plugin!r} among the current scheduler plugins")
            name = names[0]
        if name is None:
            raise TypeError("remove_plugin needs the name of the plugin")
        self._plugins.remove(name)

    async def register_scheduler_plugin(self, comm=None, plugin=None, name: str | None = None,
                                        idempotent: bool | None = None, **kwargs) -> str:
        """Start and add a scheduler plugin sent pickled by a client (or given
        as an object in this process).  If its ``start`` raises, it is not
        added and the error goes back to the caller."""
        plugin = _unpickle(plugin)
        if name is None:
            name = plugin_name(plugin)
        if idempotent is None:
            idempotent = bool(getattr(plugin, "idempotent", False))
        if idempotent and dict.__contains__(self._plugins.plugins, name):
            return "OK"
        if defines_hook(plugin, "start"):
            result = plugin.start(self)
            if inspect.isawaitable(result):
                await result
        self._plugins.add(plugin, name=name, idempotent=idempotent)
        return "OK"

    async def unregister_scheduler_plugin(self, comm=None, name: str | None = None, **kwargs) -> str:
        """Remove the scheduler plugin ``name`` and call its ``close``."""
        plugin = self._plugins.remove(name)
        if defines_hook(plugin, "close"):
            try:
                result = plugin.close()
                if inspect.isawaitable(result):
                    await result
            except Exception as e:
                self._plugins.report(name, "close", e)
        return "OK"

    def _start_plugins(self) -> None:
        """Called when the scheduler starts listening: the preloads'
        ``dask_setup``, then each plugin's ``start``; ``await scheduler``
        waits for them (and raises a preload's error)."""
        if self.preloads or any(defines_hook(p, "start") for p in self._plugins.plugins.values()):
            self._plugins_started = asyncio.ensure_future(self._run_starts())
            self._plugins_started.add_done_callback(_log_start_failure)

    async def _run_starts(self) -> None:
        await start_preloads(self.preloads)
        await self._plugins.call_async("start", self)

    async def _wait_plugins_started(self) -> None:
        if self._plugins_started is not None:
            await self._plugins_started

    def _plugin_failed(self, name: str, hook: str, exc: BaseException) -> None:
        self.log_event(PLUGIN_ERRORS_TOPIC, error_event(name, hook, self.address, exc))

    def _plugin_error_stream(self, event=None, worker=None, **kwargs) -> None:
        """A worker's plugin failed where only a log would tell: publish it."""
        if isinstance(event, dict):
            self.log_event(PLUGIN_ERRORS_TOPIC, event)

    # -- worker and nanny plugins -----------------------------------------------

    async def register_worker_plugin(self, comm=None, plugin=None, name: str | None = None,
                                     idempotent: bool = False, **kwargs) -> dict:
        """Keep a pickled worker plugin for workers that join later and set
        it up on every worker now; ``{worker: {"status": "OK"} or error}``."""
        if not self._plugins.add_pickled("worker", name, _as_bytes(plugin), idempotent):
            return {}
        return await self.broadcast(msg={"op": "plugin_add", "plugin": self._plugins.worker_plugins[name],
                                         "name": name})

    async def unregister_worker_plugin(self, comm=None, name: str | None = None, **kwargs) -> dict:
        """Forget a worker plugin and tear it down on every worker."""
        self._plugins.remove_pickled("worker", name)
        return await self.broadcast(msg={"op": "plugin_remove", "name": name})

    async def register_nanny_plugin(self, comm=None, plugin=None, name: str | None = None,
                                    idempotent: bool = False, **kwargs) -> dict:
        """Keep a pickled nanny plugin for nannies that join later and set it
        up on every nanny now; ``{nanny: {"status": "OK"} or error}``."""
        if not self._plugins.add_pickled("nanny", name, _as_bytes(plugin), idempotent):
            return {}
        return await self._to_nannies({"op": "plugin_add", "plugin": self._plugins.nanny_plugins[name],
                                       "name": name})

    async def unregister_nanny_plugin(self, comm=None, name: str | None = None, **kwargs) -> dict:
        """Forget a nanny plugin and tear it down on every nanny."""
        self._plugins.remove_pickled("nanny", name)
        return await self._to_nannies({"op": "plugin_remove", "name": name})

    def _get_nanny_plugins(self, comm=None, **kwargs) -> dict:
        """What a starting nanny asks for before it starts its worker."""
        return dict(self._plugins.nanny_plugins)

    async def _to_nannies(self, msg: dict, nannies=None) -> dict:
        msg = dict(msg)
        op = msg.pop("op")
        if nannies is None:
            nannies = sorted({ws.nanny for ws in self.state.workers.values() if ws.nanny})

        async def one(addr):
            try:
                return await getattr(self.rpc(addr), op)(**msg)
            except Exception as e:
                return error_message(e)

        results = await asyncio.gather(*(one(n) for n in nannies))
        return dict(zip(nannies, results))

    async def _top_up_nanny(self, nanny: str) -> None:
        """A worker with a nanny registered: the nanny gets every nanny plugin
        (it skips those it has).  This closes the race where a plugin is
        registered while the nanny is starting: too late for what it fetched
        at start, too early for the broadcast to know the nanny."""
        for name, pickled in list(self._plugins.nanny_plugins.items()):
            try:
                result = await self.rpc(nanny).plugin_add(plugin=pickled, name=name)
            except Exception as e:
                logger.info("nanny %s did not take plugin %r: %r", nanny, name, e)
                continue
            if isinstance(result, dict) and result.get("status") == "error":
                logger.warning("nanny plugin %r failed to set up on %s: %s", name, nanny,
                               result.get("exception_text") or result.get("text"))

    # -- lifecycle points (thin calls from server.py) ------------------------------

    def _worker_registered_reply(self) -> dict:
        """What a registering worker gets besides "OK": the worker plugins."""
        return {"worker-plugins": dict(self._plugins.worker_plugins)}

    def _note_worker_added(self, address: str, nanny: str | None = None) -> None:
        self.log_event("all", {"action": "add-worker", "worker": address})
        pending = self._plugins.call("add_worker", scheduler=self, worker=address)
        if pending:
            self.spawn(self._plugins.await_all(pending))
        if nanny and self._plugins.nanny_plugins:
            self.spawn(self._top_up_nanny(nanny))

    def _note_worker_removed(self, address: str, safe: bool, reason: str | None) -> None:
        self.log_event("all", {"action": "remove-worker", "worker": address, "safe": bool(safe),
                               "reason": reason or ("removed" if safe else "lost")})
        pending = self._plugins.call("remove_worker", scheduler=self, worker=address,
                                     stimulus_id=f"remove-worker-{time.time()}", safe=safe)
        if pending:
            self.spawn(self._plugins.await_all(pending))

    def _note_client_added(self, client: str) -> None:
        self.log_event("all", {"action": "add-client", "client": client})
        pending = self._plugins.call("add_client", scheduler=self, client=client)
        if pending:
            self.spawn(self._plugins.await_all(pending))

    def _note_client_removed(self, client: str) -> None:
        self._broker.remove_client(client)
        self.log_event("all", {"action": "remove-client", "client": client})
        pending = self._plugins.call("remove_client", scheduler=self, client=client)
        if pending:
            self.spawn(self._plugins.await_all(pending))

    def _note_graph_updated(self, client, keys, tasks, dependencies, priority, annotations) -> None:
        if not self._plugins.plugins:
            return
        pending = self._plugins.call(
            "update_graph", self, client=client, keys=set(keys), tasks=list(tasks),
            dependencies=dependencies, priority=priority or {}, annotations=annotations or {},
            stimulus_id=f"update-graph-{time.time()}")
        if pending:
            self.spawn(self._plugins.await_all(pending))

    def _note_task_erred(self, key, worker: str | None, exception_text: str = "") -> None:
        ts = self.state.tasks.get(key)
        if ts is not None and ts.state == "erred":
            self.log_event("task-erred", {"action": "task-erred", "key": key, "worker": worker,
                                          "exception_text": exception_text})

    def _note_restart(self) -> None:
        pending = self._plugins.call("restart", self)
        if pending:
            self.spawn(self._plugins.await_all(pending))

    async def _close_plugins(self, hook: str) -> None:
        """``before_close`` / ``close`` of every plugin (then, at ``close``,
        the preloads' ``dask_teardown``); errors logged."""
        await self._plugins.call_async(hook)
        if hook == "close":
            await teardown_preloads(self.preloads)

    # -- events ------------------------------------------------------------------------

    def log_event(self, topic, msg: Any) -> None:
        """Publish ``msg`` on ``topic`` (or each of a list of topics): kept in
        the topic's log, pushed to its subscribers, given to every plugin's
        ``log_event``.

        >>> s.log_event("jobs", {"done": 3})      # doctest: +SKIP
        """
        out = self._broker.publish(topic, msg, time.time())
        for client, msgs in out.items():
            stream = self.client_streams.get(client)
            if stream is not None:
                try:
                    stream.send(*msgs)
                except CommClosedError:
                    pass
        if self._plugins.plugins:
            for t in topic if isinstance(topic, (list, tuple)) else (topic,):
                for name, plugin in list(self._plugins.plugins.items()):
                    if not defines_hook(plugin, "log_event"):
                        continue
                    try:
                        plugin.log_event(t, msg)
                    except Exception as e:
                        if t == PLUGIN_ERRORS_TOPIC:  # do not loop on a plugin failing here
                            logger.exception("scheduler plugin %r failed in log_event", name)
                        else:
                            self._plugins.report(name, "log_event", e)

    def get_events(self, topic=None):
        """The kept events of ``topic`` as a tuple of ``(time, msg)``, or
        ``{topic: events}`` for all topics."""
        return self._broker.get_events(topic)

    @property
    def events(self):
        """``{topic: deque of (time, msg)}``."""
        return self._broker.events

    @property
    def event_counts(self):
        """``{topic: number of events ever published}``."""
        return self._broker.counts

    @property
    def event_subscriber(self):
        """``{topic: set of subscribed client ids}``."""
        return self._broker.subscribers

    def subscribe_topic(self, topic, client: str) -> None:
        self._broker.subscribe(topic, client)

    def unsubscribe_topic(self, topic, client: str) -> None:
        self._broker.unsubscribe(topic, client)

    def _log_event_handler(self, comm=None, topic=None, msg=None, **kwargs) -> str:
        self.log_event(topic, msg)
        return "OK"

    def _get_events_handler(self, comm=None, topic=None, **kwargs):
        return self.get_events(topic)

    def _subscribe_handler(self, comm=None, topic=None, client=None, **kwargs) -> str:
        self.subscribe_topic(topic, client)
        return "OK"

    def _unsubscribe_handler(self, comm=None, topic=None, client=None, **kwargs) -> str:
        self.unsubscribe_topic(topic, client)
        return "OK"

    def _log_event_stream(self, topic=None, msg=None, **kwargs) -> None:
        self.log_event(topic, msg)

    def _subscribe_stream(self, topic=None, client=None, **kwargs) -> None:
        if client is not None:
            self.subscribe_topic(topic, client)

    def _unsubscribe_stream(self, topic=None, client=None, **kwargs) -> None:
        if client is not None:
            self.unsubscribe_topic(topic, client)


def _log_start_failure(task: asyncio.Future) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("scheduler start-up (preloads, plugins) failed: %r", task.exception(),
                     exc_info=task.exception())


def _as_bytes(plugin: Any) -> bytes:
    """A worker or nanny plugin as it must be kept: pickled bytes."""
    if isinstance(plugin, Serialized):
        # Sent as an object: keep its pickle (the scheduler never unpickles it).
        if plugin.kind == "pickle" and len(plugin.frames) == 1:
            return bytes(plugin.frames[0])
        from distributed.protocol.pickle import dumps

        return dumps(plugin.deserialize())
    if isinstance(plugin, (bytes, bytearray, memoryview)):
        return bytes(plugin)
    from distributed.protocol.pickle import dumps

    return dumps(plugin)
