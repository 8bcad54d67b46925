"""Client methods for structured events: publish, read back, subscribe.

``log_event`` publishes through the scheduler; ``get_events`` reads a
topic's kept log; ``subscribe_topic(topic, handler)`` has the scheduler
push every new event of ``topic`` to this client, where ``handler(event)``
runs on the client's event loop with ``event = (time, msg)``.  A handler
may be a coroutine function (each call runs as its own task; tasks still
running when the client closes are cancelled).  Subscribing again replaces
the handler.

Thread rules: the methods may be called from any thread; handlers run on
the client's loop.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable
from typing import Any

__all__ = ["EventMethods"]

logger = logging.getLogger(__name__)


class EventMethods:
    """The event methods of ``Client`` (``self`` is a Client)."""

    def log_event(self, topic, msg: Any):
        """Publish ``msg`` (anything msgpack can carry, else ``TypeError``)
        on ``topic`` or on each of a list of topics.

        >>> client.log_event("deployments", {"version": "1.2"})    # doctest: +SKIP
        """
        _check_msgpack(msg)
        if isinstance(topic, list):
            topic = tuple(topic)
        return self.sync(self._log_event, topic, msg)

    async def _log_event(self, topic, msg) -> None:
        await self.scheduler.log_event(topic=topic, msg=msg)

    def get_events(self, topic=None):
        """The events the scheduler keeps for ``topic``, oldest first, as a
        tuple of ``(time, msg)``; without a topic, ``{topic: events}``.

        >>> client.get_events("deployments")                      # doctest: +SKIP
        ((1767225600.0, {'version': '1.2'}),)
        """
        return self.sync(self._get_events, topic)

    async def _get_events(self, topic=None):
        events = await self.scheduler.events(topic=topic)
        if isinstance(events, dict):
            return {t: tuple(tuple(e) for e in evs) for t, evs in events.items()}
        return tuple(tuple(e) for e in events)

    def subscribe_topic(self, topic, handler: Callable[[tuple], Any]) -> None:
        """Call ``handler((time, msg))`` for every event published on
        ``topic`` from now on (a coroutine function is awaited as a task).

        >>> client.subscribe_topic("deployments", print)          # doctest: +SKIP
        """
        if not callable(handler):
            raise TypeError(f"subscribe_topic needs a callable handler, not {type(handler).__name__}")
        self._event_handlers_by_topic()[topic] = handler
        self._send_to_scheduler({"op": "subscribe-topic", "topic": topic})

    def unsubscribe_topic(self, topic) -> None:
        """Stop handling ``topic`` (``ValueError`` if it has no handler)."""
        handlers = self._event_handlers_by_topic()
        if topic not in handlers:
            raise ValueError(f"No event handler known for topic {topic}")
        del handlers[topic]
        self._send_to_scheduler({"op": "unsubscribe-topic", "topic": topic})

    # -- internals --------------------------------------------------------

    def _resubscribe_topics(self) -> None:
        """After reconnecting: the scheduler may be a new one."""
        for topic in self._event_handlers_by_topic():
            self._send_to_scheduler({"op": "subscribe-topic", "topic": topic})

    def _event_handlers_by_topic(self) -> dict:
        handlers = self.__dict__.get("_topic_handlers")
        if handlers is None:
            handlers = self.__dict__["_topic_handlers"] = {}
        return handlers

    def _on_event(self, topic=None, event=None, **kwargs) -> None:
        """An event pushed by the scheduler (on the loop)."""
        handler = self._event_handlers_by_topic().get(topic)
        if handler is None:
            return
        try:
            result = handler(tuple(event) if isinstance(event, list) else event)
        except Exception:
            logger.exception("event handler for topic %r failed", topic)
            return
        if inspect.isawaitable(result):
            tasks = self.__dict__.setdefault("_event_handler_tasks", set())
            task = asyncio.ensure_future(result)
            tasks.add(task)
            task.add_done_callback(lambda t: _handler_done(tasks, topic, t))

    async def _cancel_event_handlers(self) -> None:
        """The client closes: stop handler coroutines still running."""
        tasks = self.__dict__.get("_event_handler_tasks")
        if not tasks:
            return
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _handler_done(tasks: set, topic, task: asyncio.Future) -> None:
    tasks.discard(task)
    if not task.cancelled() and task.exception() is not None:
        logger.error("event handler for topic %r failed: %r", topic, task.exception(),
                     exc_info=task.exception())


def _check_msgpack(msg: Any) -> None:
    """``TypeError`` now, for a message the protocol cannot carry."""
    from distributed.protocol.message import encode_message

    try:
        encode_message({"msg": msg})
    except Exception as e:
        raise TypeError(f"an event message must be msgpack-serializable; {type(msg).__name__} is not "
                        f"({e})") from None
