"""Structured events: named topics, a bounded log per topic, subscribers.

Anyone may publish an event, a msgpack-serializable message, on one or more
topics: the scheduler itself (``Scheduler.log_event``), a task through its
worker (``get_worker().log_event``), a nanny, a client
(``client.log_event``).  The scheduler keeps the last
``distributed.admin.low-level-log-length`` events of each topic as
``(time, msg)`` pairs and pushes every new one to the clients that
subscribed to its topic (``client.subscribe_topic``).

The ``EventBroker`` here does no I/O and reads no clock: ``publish`` takes
the time and returns the messages to send, ``{client: [msg, ...]}``, which
the scheduler sends on its client streams.  It runs on the scheduler's event
loop and is not thread-safe.

Topics the scheduler itself publishes on (``LIFECYCLE_TOPICS``):

* ``"all"``: workers and clients coming and going, as
  ``{"action": "add-worker", "worker": address}``, ``"remove-worker"`` (with
  ``"reason"`` and ``"safe"``), ``"add-client"`` and ``"remove-client"``
  (with ``"client"``);
* ``"task-erred"``: ``{"action": "task-erred", "key": key, "worker":
  address, "exception_text": ...}`` for each task whose own code failed (not
  for the tasks that fail because an input did);
* ``"plugin-errors"``: ``{"action": "plugin-error", "plugin": name,
  "hook": hook, "server": address, "exception_text": ...,
  "traceback_text": ...}`` when a plugin's hook raises on the scheduler, a
  worker or a nanny.

Unlike dask.distributed, no topic is named after a worker or a client: such
topics would pile up without end on a long-lived scheduler that sees many
of them come and go (upstream clears them an hour after they leave); the
``"all"`` topic carries the same events with the address inside.

>>> broker = EventBroker(maxlen=2)
>>> broker.subscribe("jobs", "client-1")
>>> broker.publish("jobs", {"n": 1}, now=10.0)
{'client-1': [{'op': 'event', 'topic': 'jobs', 'event': (10.0, {'n': 1})}]}
>>> broker.get_events("jobs")
((10.0, {'n': 1}),)
"""
from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

__all__ = ["EventBroker", "Topic", "LIFECYCLE_TOPICS", "DEFAULT_LOG_LENGTH"]

#: Topics the scheduler publishes on by itself (see the module docstring).
LIFECYCLE_TOPICS = ("all", "task-erred", "plugin-errors")

#: Events kept per topic when ``distributed.admin.low-level-log-length`` is unset.
DEFAULT_LOG_LENGTH = 1000


class Topic:
    """One topic: its last events, how many were ever published, who listens."""

    __slots__ = ("events", "count", "subscribers")

    def __init__(self, maxlen: int):
        self.events: deque = deque(maxlen=maxlen)
        self.count = 0
        self.subscribers: set[str] = set()

    def __repr__(self) -> str:
        return f"<Topic: {len(self.events)} events kept of {self.count}, {len(self.subscribers)} subscribers>"


class _View(Mapping):
    """A read-only ``{topic: field}`` view of the broker's topics; a topic
    never used reads as ``empty`` (and is not created by reading it)."""

    def __init__(self, topics: dict, field: str, empty: Any):
        self._topics = topics
        self._field = field
        self._empty = empty

    def __getitem__(self, topic):
        t = self._topics.get(topic)
        return self._empty if t is None else getattr(t, self._field)

    def __iter__(self) -> Iterator:
        return iter(self._topics)

    def __len__(self) -> int:
        return len(self._topics)

    def __contains__(self, topic) -> bool:
        return topic in self._topics


class EventBroker:
    """The topics of one scheduler (see the module docstring).

    ``maxlen`` is how many events each topic keeps; older ones are dropped
    (``Topic.count`` still counts them).
    """

    def __init__(self, maxlen: int = DEFAULT_LOG_LENGTH):
        if not isinstance(maxlen, int) or isinstance(maxlen, bool) or maxlen < 0:
            raise ValueError(f"the event log length must be an integer >= 0, not {maxlen!r}")
        self.maxlen = maxlen
        self.topics: dict[Any, Topic] = {}
        #: ``{topic: deque of (time, msg)}``, as ``Scheduler.events``.
        self.events: Mapping = _View(self.topics, "events", ())
        #: ``{topic: number of events ever published}``.
        self.counts: Mapping = _View(self.topics, "count", 0)
        #: ``{topic: set of subscribed client ids}``.
        self.subscribers: Mapping = _View(self.topics, "subscribers", frozenset())

    def __repr__(self) -> str:
        return f"<EventBroker: {len(self.topics)} topics>"

    def _topic(self, topic) -> Topic:
        t = self.topics.get(topic)
        if t is None:
            t = self.topics[topic] = Topic(self.maxlen)
        return t

    def publish(self, topics, msg: Any, now: float) -> dict[str, list]:
        """Record ``msg`` at time ``now`` on ``topics`` (one topic or a list);
        returns the ``event`` messages for the subscribed clients.

        >>> EventBroker().publish(["a", "b"], "hi", now=1.0)
        {}
        """
        out: dict[str, list] = {}
        event = (now, msg)
        for topic in _topic_list(topics):
            t = self._topic(topic)
            t.events.append(event)
            t.count += 1
            for client in t.subscribers:
                out.setdefault(client, []).append({"op": "event", "topic": topic, "event": event})
        return out

    def subscribe(self, topic, client: str) -> None:
        """Send the future events of ``topic`` to ``client``."""
        self._topic(topic).subscribers.add(client)

    def unsubscribe(self, topic, client: str) -> None:
        """Stop sending ``topic`` to ``client`` (nothing happens if it was not subscribed)."""
        t = self.topics.get(topic)
        if t is not None:
            t.subscribers.discard(client)

    def remove_client(self, client: str) -> None:
        """``client`` is gone: drop all its subscriptions."""
        for t in self.topics.values():
            t.subscribers.discard(client)

    def get_events(self, topic=None):
        """The kept events of ``topic`` as a tuple of ``(time, msg)``; without
        a topic, ``{topic: events}`` for every topic that has some.

        >>> b = EventBroker()
        >>> _ = b.publish("x", 1, now=2.0)
        >>> b.get_events("x"), b.get_events("y"), b.get_events()
        (((2.0, 1),), (), {'x': ((2.0, 1),)})
        """
        if topic is not None:
            t = self.topics.get(topic)
            return () if t is None else tuple(t.events)
        return {name: tuple(t.events) for name, t in self.topics.items() if t.events}


def _topic_list(topics) -> Iterable:
    """A single topic or a list/tuple of them, as a list of topics."""
    if isinstance(topics, (list, tuple)):
        if not topics:
            raise ValueError("log_event needs at least one topic")
        return topics
    return (topics,)
