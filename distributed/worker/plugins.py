"""Worker plugins and events on the worker, mixed into ``Worker``.

A worker plugin is any object with some of ``setup(worker)``,
``teardown(worker)`` (plain or coroutine functions) and
``transition(key, start, finish, **kwargs)``; the base class is
``distributed.diagnostics.plugin.WorkerPlugin``.  Plugins come from
``Worker(plugins=[...])``, from the scheduler when the worker registers
(every plugin registered so far) and from the scheduler's ``plugin_add``
requests later.  ``worker.plugins`` is ``{name: plugin}``.

Transitions: while some plugin defines ``transition``, the worker's
``WorkerState`` makes its tasks of an observed ``TaskState`` subclass
whose ``state`` attribute reports each change; otherwise tasks are plain
``TaskState`` objects and the hook costs nothing.

Errors: a plugin that fails to set up on a worker that is running is an
error for whoever added it (``client.register_plugin`` raises); on a
worker that is starting or registering again, it is logged and published
on the scheduler's ``"plugin-errors"`` topic, and the worker goes on.
Teardown and transition errors are logged and published the same way.

Runs on the worker's event loop, except ``log_event``, which may be called
from task threads.
"""
from __future__ import annotations

import inspect
import logging
import traceback
from typing import Any

from distributed.comm import CommClosedError
from distributed.plugin_hosting import add_plugin, defines, plugin_name, remove_plugin
from distributed.preloading import process_preloads
from distributed.utils import in_thread_of
from distributed.worker.state import TaskState

__all__ = ["WorkerPluginsMixin", "observed_task_class"]

logger = logging.getLogger(__name__)

_STATE_SLOT = TaskState.state  # the slot's descriptor: the plain attribute


def observed_task_class(callback) -> type:
    """A ``TaskState`` subclass (same layout) whose state changes call
    ``callback(key, start, finish)``.

    >>> seen = []
    >>> cls = observed_task_class(lambda *a: seen.append(a))
    >>> ts = cls("x"); ts.state = "waiting"; ts.state = "waiting"; ts.state = "ready"
    >>> seen
    [('x', 'released', 'waiting'), ('x', 'waiting', 'ready')]
    """

    class ObservedTaskState(TaskState):
        __slots__ = ()

        @property
        def state(self):
            return _STATE_SLOT.__get__(self, TaskState)

        @state.setter
        def state(self, finish):
            try:
                start = _STATE_SLOT.__get__(self, TaskState)
            except AttributeError:  # being built: no transition yet
                start = None
            _STATE_SLOT.__set__(self, finish)
            if start is not None and start != finish:
                callback(self.key, start, finish)

    return ObservedTaskState


class WorkerPluginsMixin:
    """Plugins and ``log_event`` of the ``Worker`` (``self``)."""

    def _init_plugins(self, plugins, preload=None, preload_argv=None) -> None:
        # Imported now: an error in a preload stops the worker being built.
        self.preloads = process_preloads(self, preload, preload_argv, kind="worker")
        self.plugins: dict[str, Any] = {}
        self._plugin_sources: dict[str, bytes] = {}  # name -> the pickle it came as
        self._pending_plugins = list(plugins or ())
        self._observed_class: type | None = None
        self.handlers.update({"plugin_add": self.plugin_add, "plugin_remove": self.plugin_remove})

    # -- adding and removing -------------------------------------------------

    async def plugin_add(self, comm=None, plugin=None, name: str | None = None,
                         catch_errors: bool = True, **kwargs) -> dict:
        """Set up ``plugin`` (an object or its pickle) under ``name``; a
        plugin of that name already here is torn down first, unless it came
        as the very same pickle (then nothing happens).  Returns
        ``{"status": "OK"}``, or the error when set-up fails and
        ``catch_errors`` (else it raises)."""
        reply, _ = await add_plugin(self, "worker", plugin, name, catch_errors,
                                    added=self._watch_transitions, log=logger)
        return reply

    async def plugin_remove(self, comm=None, name: str | None = None, **kwargs) -> dict:
        """Tear down and forget the plugin ``name`` (nothing if unknown)."""
        return await remove_plugin(self, name, self._plugin_error, removed=self._watch_transitions)

    async def _setup_plugins_from_scheduler(self, plugins: dict | None) -> None:
        """Registration: the scheduler's worker plugins; failures are logged."""
        for name, pickled in (plugins or {}).items():
            result = await self.plugin_add(plugin=pickled, name=name)
            if result.get("status") != "OK":
                self._plugin_error(name, "setup", result.get("exception_text") or result.get("text"))

    async def _setup_pending_plugins(self) -> None:
        """``Worker(plugins=[...])``, set up once the worker is registered."""
        pending, self._pending_plugins = self._pending_plugins, []
        for plugin in pending:
            name = plugin_name(plugin)
            result = await self.plugin_add(plugin=plugin, name=name)
            if result.get("status") != "OK":
                self._plugin_error(name, "setup", result.get("exception_text") or result.get("text"))

    async def _teardown_plugins(self) -> None:
        """The worker closes: every plugin's teardown; errors are logged."""
        for name in list(self.plugins):
            plugin = self.plugins.pop(name)
            if not defines(plugin, "teardown"):
                continue
            try:
                result = plugin.teardown(self)
                if inspect.isawaitable(result):
                    await result
            except Exception as e:
                self._plugin_error(name, "teardown", e)
        self._plugin_sources.clear()
        self._watch_transitions()

    # -- transitions -------------------------------------------------------------

    def _watch_transitions(self) -> None:
        """Observe task states while some plugin has a ``transition`` hook."""
        watch = any(defines(p, "transition") for p in self.plugins.values())
        state = self.state
        if watch and self._observed_class is None:
            self._observed_class = observed_task_class(self._tell_transition)
        new_class = self._observed_class if watch else TaskState
        if state.task_class is new_class:
            return
        state.task_class = new_class
        for ts in state.tasks.values():  # same slot layout, so the class can change
            if type(ts) in (TaskState, self._observed_class):
                ts.__class__ = new_class

    def _tell_transition(self, key, start: str, finish: str) -> None:
        for name, plugin in list(self.plugins.items()):
            if not defines(plugin, "transition"):
                continue
            try:
                plugin.transition(key, start, finish)
            except Exception as e:
                self._plugin_error(name, "transition", e)

    # -- errors and events -------------------------------------------------------------

    def _plugin_error(self, name: str, hook: str, exc) -> None:
        """Log a plugin failure and publish it on "plugin-errors"."""
        if isinstance(exc, BaseException):
            logger.error("Worker %s: worker plugin %r failed in %s: %r", self.address, name, hook, exc,
                         exc_info=exc)
            text = repr(exc)
            tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        else:
            logger.error("Worker %s: worker plugin %r failed in %s: %s", self.address, name, hook, exc)
            text, tb = str(exc), ""
        self._send_or_keep({"op": "plugin-error", "event": {
            "action": "plugin-error", "plugin": name, "hook": hook, "server": self.address,
            "exception_text": text, "traceback_text": tb}})

    def log_event(self, topic, msg: Any) -> None:
        """Publish ``msg`` on ``topic`` (or a list of topics) through the
        scheduler; a dict message gets this worker's address as ``"worker"``.
        Callable from tasks (``get_worker().log_event(...)``).

        >>> def task():                                        # doctest: +SKIP
        ...     get_worker().log_event("progress", {"done": 10})
        """
        _check_msgpack(msg)
        if isinstance(msg, dict):
            msg = {**msg, "worker": self.address}
        if isinstance(topic, list):
            topic = tuple(topic)
        self._send_or_keep({"op": "log-event", "topic": topic, "msg": msg})

    def _send_or_keep(self, msg: dict) -> None:
        """Send on the scheduler stream from any thread; while it is down the
        message waits with the state machine's own (sent on reconnection)."""
        if not in_thread_of(self.loop):
            self.loop.add_callback(self._send_or_keep, msg)
            return
        stream = self.batched_stream
        if stream is not None and not stream.closed():
            try:
                stream.send(msg)
                return
            except CommClosedError:
                pass
        self.state.scheduler_msgs.append(msg)


def _check_msgpack(msg: Any) -> None:
    """``TypeError`` now, rather than a broken stream later."""
    from distributed.protocol.message import encode_message

    try:
        encode_message({"msg": msg})
    except Exception as e:
        raise TypeError(f"an event message must be msgpack-serializable; {type(msg).__name__} is not "
                        f"({e})") from None
