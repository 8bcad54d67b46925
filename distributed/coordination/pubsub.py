"""Publish/subscribe by topic name: the scheduler extension, ``Pub`` and ``Sub``.

``Pub(name).put(msg)`` sends ``msg`` to every ``Sub(name)`` that exists at
that moment, in clients and in tasks alike; ``Sub.get(timeout=None)``
returns the next message, and a ``Sub`` is an iterator (``for msg in sub``,
``async for msg in sub``).  Messages are any picklable objects.  Upstream
deprecated Pub/Sub in 2024.7 and removed it in 2025.4 in favour of
structured events (``log_event`` / ``subscribe_topic``); old code still
calls it, so it is here, built on the scheduler.

Theory of operation
-------------------
Everything is relayed through the scheduler (``PubSubExtension``,
``scheduler.extensions["pubsub"]``); upstream sent worker-to-worker messages
directly, which needed per-worker extensions and address bookkeeping.
A ``Sub`` registers on its client's stream when it is made; a ``put`` is a
one-way message on the publisher's client's stream, so it costs the
publisher no round trip and keeps the publisher's order.  The scheduler
copies each message into the buffer of every subscriber of the name, and
drops it when there is none (as upstream: a message to nobody is lost).
``Sub.get`` takes the oldest message of its buffer, waiting at the
scheduler for one.

Each subscriber's buffer is bounded (``Sub(..., maxlen=1000)``): when a slow
subscriber's buffer is full, the *oldest* message is discarded to make room,
the scheduler logs a warning the first time, and ``sub.dropped`` counts the
messages lost so far (updated with every ``get``).  A subscription ends with
``sub.close()``, when the ``Sub`` object is garbage collected, or when its
client disconnects.

Thread rules: ``PubSubExtension`` runs on the scheduler's loop.  ``Pub`` and
``Sub`` methods may be called from any thread; with an asynchronous client
on its own loop ``get`` returns an awaitable.
"""
from __future__ import annotations

import asyncio
import logging
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from distributed import context
from distributed.coordination._shared import ClientBound, TokenMemory, normalize_name, parse_timeout
from distributed.exceptions import TimeoutError
from distributed.protocol import Serialize, Serialized

__all__ = ["Pub", "Sub", "PubSubExtension"]

logger = logging.getLogger(__name__)

#: Messages a subscriber's buffer holds by default before dropping the oldest.
DEFAULT_MAXLEN = 1000


# ----------------------------------------------------------------------
# Scheduler side
# ----------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class _Getter:
    token: str
    future: asyncio.Future
    timer: asyncio.TimerHandle | None = field(default=None)


class _Subscriber:
    __slots__ = ("id", "name", "client", "buffer", "dropped", "getters", "warned")

    def __init__(self, id: str, name: Any, client: str | None, maxlen: int):
        self.id = id
        self.name = name
        self.client = client
        self.buffer: deque = deque(maxlen=maxlen)
        self.dropped = 0
        self.getters: deque[_Getter] = deque()
        self.warned = False

    def __repr__(self) -> str:
        return f"<subscriber {self.id} of {self.name!r}: {len(self.buffer)} buffered, {self.dropped} dropped>"


class PubSubExtension:
    """The scheduler's side of ``Pub``/``Sub``.

    ``subscribers`` maps a topic name to ``{sub id: subscriber}`` (each
    with ``.client``, ``.buffer``, ``.dropped``); ``dropped_unheard`` counts
    the messages published to nobody.

    >>> list(scheduler.extensions["pubsub"].subscribers["a"])   # doctest: +SKIP
    ['5f0c...']
    """

    def __init__(self, scheduler: Any):
        self.scheduler = scheduler
        self.subscribers: dict[Any, dict[str, _Subscriber]] = {}
        self._subs: dict[str, _Subscriber] = {}
        self._closed_ids = TokenMemory()  # unsubscribed ids: a late get must not revive them
        self._abandoned = TokenMemory()
        self.dropped_unheard = 0
        self._closed = False
        scheduler.handlers.update({
            "pubsub_get": self.get,
            "pubsub_subscribers": self.get_subscribers,
        })
        scheduler.stream_handlers.update({
            "pubsub-subscribe": self.subscribe,
            "pubsub-unsubscribe": self.unsubscribe,
            "pubsub-msg": self.publish,
            "pubsub-abandon": self.abandon,
        })

    def __repr__(self) -> str:
        return f"<PubSubExtension: {len(self.subscribers)} topics, {len(self._subs)} subscribers>"

    def subscribe(self, name=None, sub=None, client=None, maxlen=DEFAULT_MAXLEN, **kwargs) -> None:
        self._subscriber(normalize_name(name), sub, client, maxlen)

    def unsubscribe(self, name=None, sub=None, client=None, **kwargs) -> None:
        self._closed_ids.add(sub)
        s = self._subs.pop(sub, None)
        if s is None:
            return
        topic = self.subscribers.get(s.name)
        if topic is not None:
            topic.pop(sub, None)
            if not topic:
                del self.subscribers[s.name]
        gone = RuntimeError(f"Sub {s.name!r} was closed while waiting for a message")
        for getter in list(s.getters):
            self._answer(s, getter, gone)

    def publish(self, name=None, msg=None, client=None, **kwargs) -> None:
        """Copy ``msg`` to every subscriber of ``name`` (or drop it)."""
        topic = self.subscribers.get(normalize_name(name))
        if not topic:
            self.dropped_unheard += 1
            return
        for s in topic.values():
            if s.getters:
                self._answer(s, s.getters[0], {"status": "OK", "msg": msg, "dropped": s.dropped})
                continue
            if len(s.buffer) == s.buffer.maxlen:
                s.dropped += 1
                if not s.warned:
                    s.warned = True
                    logger.warning("Sub %r (%s, client %s) is not keeping up: its buffer of %d messages is full; "
                                   "the oldest messages are dropped", s.name, s.id, s.client, s.buffer.maxlen)
            s.buffer.append(msg)

    async def get(self, comm=None, name=None, sub=None, client=None, token=None, timeout=None,
                  maxlen=DEFAULT_MAXLEN, **kwargs) -> dict:
        """The next message for ``sub``: ``{"status": "OK", "msg",
        "dropped"}`` or ``{"status": "timeout"}``."""
        if self._closed:
            raise RuntimeError("the scheduler is closing; Sub.get cannot wait")
        if self._closed_ids.pop(sub):
            self._closed_ids.add(sub)
            raise RuntimeError(f"Sub {name!r} is closed")
        if token is not None and self._abandoned.pop(token):
            return {"status": "abandoned"}
        s = self._subscriber(normalize_name(name), sub, client, maxlen)
        if s.buffer and not s.getters:
            return {"status": "OK", "msg": s.buffer.popleft(), "dropped": s.dropped}
        timeout = parse_timeout(timeout, "Sub.get")
        if timeout is not None and timeout <= 0:
            return {"status": "timeout"}
        loop = asyncio.get_running_loop()
        getter = _Getter(token, loop.create_future())
        s.getters.append(getter)
        if timeout is not None:
            getter.timer = loop.call_later(timeout, self._answer, s, getter, {"status": "timeout"})
        return await getter.future

    def get_subscribers(self, comm=None, name=None, **kwargs) -> dict:
        """``{sub id: client id}`` of the subscribers of ``name``."""
        return {sid: s.client for sid, s in self.subscribers.get(normalize_name(name), {}).items()}

    def abandon(self, token=None, sub=None, **kwargs) -> None:
        s = self._subs.get(sub)
        if s is not None:
            for getter in s.getters:
                if getter.token == token:
                    self._answer(s, getter, {"status": "abandoned"})
                    return
        if token is not None:
            self._abandoned.add(token)

    def remove_client(self, client: str) -> None:
        """A client's stream ended: its subscriptions end with it."""
        for sid in [sid for sid, s in self._subs.items() if s.client == client]:
            self.unsubscribe(sub=sid)

    def close(self) -> None:
        self._closed = True
        closing = RuntimeError("the scheduler closed while this Sub waited for a message")
        for s in list(self._subs.values()):
            for getter in list(s.getters):
                self._answer(s, getter, closing)

    def _subscriber(self, name: Any, sub: Any, client: str | None, maxlen: Any) -> _Subscriber:
        if not isinstance(sub, str):
            raise TypeError("a Sub id must be a string")
        s = self._subs.get(sub)
        if s is None:
            if self._closed_ids.pop(sub):  # closed before this late subscribe arrived
                self._closed_ids.add(sub)
                raise RuntimeError(f"Sub {name!r} is closed")
            maxlen = int(maxlen) if maxlen else DEFAULT_MAXLEN
            if maxlen < 1:
                raise ValueError(f"Sub maxlen must be at least 1, got {maxlen}")
            s = self._subs[sub] = _Subscriber(sub, name, client, maxlen)
            self.subscribers.setdefault(name, {})[sub] = s
        return s

    def _answer(self, s: _Subscriber, getter: _Getter, answer: dict | BaseException) -> None:
        if getter.timer is not None:
            getter.timer.cancel()
        try:
            s.getters.remove(getter)
        except ValueError:
            pass
        if not getter.future.done():
            if isinstance(answer, BaseException):
                getter.future.set_exception(answer)
            else:
                getter.future.set_result(answer)


# ----------------------------------------------------------------------
# User side
# ----------------------------------------------------------------------


def _client_of(worker: Any, client: Any) -> Any:
    if worker is not None and client is not None:
        raise ValueError("Pub/Sub take worker= or client=, not both")
    if worker is not None:
        return worker._get_client()  # the worker's own client: messages go through the scheduler
    return client


class Pub(ClientBound):
    """Publish messages to every ``Sub`` of the same name.

    >>> pub = Pub("results")              # doctest: +SKIP
    >>> pub.put({"step": 1})              # doctest: +SKIP

    ``put(msg)`` returns at once (it does not wait for the scheduler);
    messages from one publisher arrive in the order they were put.  A
    message published while no ``Sub`` of the name exists is dropped.
    ``subscribers`` asks the scheduler who listens (``{sub id: client id}``);
    it is a round trip, so on an asynchronous client's own loop use
    ``await pub.get_subscribers()`` instead.
    """

    _kind = "Pub"

    def __init__(self, name: Any = None, worker: Any = None, client: Any = None):
        super().__init__(name, _client_of(worker, client))

    def put(self, msg: Any) -> None:
        """Send ``msg`` to the subscribers of this name."""
        client = self._require_client()
        client._send_to_scheduler({"op": "pubsub-msg", "name": self._key, "msg": Serialize(msg)})

    _put = put

    @property
    def subscribers(self) -> dict:
        client = self._require_client()
        if client.asynchronous:
            raise RuntimeError("Pub.subscribers is a round trip to the scheduler; on an asynchronous client's "
                               "loop use 'await pub.get_subscribers()'")
        return client.sync(self._get_subscribers)

    def get_subscribers(self):
        """``{sub id: client id}`` of the current subscribers."""
        return self._run(self._get_subscribers)

    async def _get_subscribers(self) -> dict:
        return dict(await self._scheduler().pubsub_subscribers(name=self._key))

    def __repr__(self) -> str:
        return f"<Pub: {self.name!r}>"


class Sub(ClientBound):
    """Receive the messages published under a name from now on.

    >>> sub = Sub("results")               # doctest: +SKIP
    >>> sub.get(timeout=10)                # doctest: +SKIP
    {'step': 1}
    >>> for msg in sub:                    # doctest: +SKIP
    ...     handle(msg)

    ``get(timeout=None)`` returns the next message (``TimeoutError`` after
    ``timeout``); ``for msg in sub`` / ``async for msg in sub`` iterate
    forever.  The scheduler buffers up to ``maxlen`` messages for this
    subscriber; beyond that the oldest are dropped and counted in
    ``dropped``.  ``close()`` ends the subscription (so does garbage
    collection, or the client disconnecting).  A Sub pickles by name: the
    copy in a task is a new subscriber there.
    """

    _kind = "Sub"

    def __init__(self, name: Any = None, worker: Any = None, client: Any = None, maxlen: int = DEFAULT_MAXLEN):
        if not isinstance(maxlen, int) or isinstance(maxlen, bool) or maxlen < 1:
            raise ValueError(f"Sub maxlen must be an integer >= 1, got {maxlen!r}")
        super().__init__(name, _client_of(worker, client))
        self.id = uuid.uuid4().hex
        self.maxlen = maxlen
        self.dropped = 0
        self._closed = False
        self._registered = False
        self._register()

    def _register(self) -> None:
        """Subscribe on the client's stream (so a later ``put`` of the same
        client reaches this Sub); without a client yet, on first use."""
        if self._registered or self.client is None:
            return
        self._registered = True
        self._send({"op": "pubsub-subscribe", "name": self._key, "sub": self.id, "maxlen": self.maxlen})

    def get(self, timeout: Any = None):
        """The next message; ``TimeoutError`` after ``timeout``."""
        if self._closed:
            raise RuntimeError(f"Sub {self.name!r} is closed")
        timeout = parse_timeout(timeout, "Sub.get")
        self._require_client()
        self._register()
        return self._run(self._get, timeout)

    async def _get(self, timeout: float | None = None) -> Any:
        client = self._require_client()
        token = uuid.uuid4().hex
        try:
            with context.receiving_for(client):
                reply = await self._scheduler().pubsub_get(name=self._key, sub=self.id, client=client.id,
                                                           token=token, timeout=timeout, maxlen=self.maxlen)
                msg = reply.get("msg") if isinstance(reply, dict) else None
                if isinstance(msg, Serialized):
                    msg = msg.deserialize()
        except BaseException:
            self._send({"op": "pubsub-abandon", "sub": self.id, "token": token})
            raise
        status = reply.get("status")
        if status == "timeout":
            raise TimeoutError(f"Sub {self.name!r}: no message came within {timeout} s")
        if status != "OK":
            raise RuntimeError(f"Sub {self.name!r}.get: unexpected answer {status!r} from the scheduler")
        self.dropped = int(reply.get("dropped") or 0)
        return msg

    def close(self) -> None:
        """End the subscription (messages buffered for it are dropped)."""
        if self._closed:
            return
        self._closed = True
        if self._registered and self._client is not None:
            self._send({"op": "pubsub-unsubscribe", "name": self._key, "sub": self.id})

    def __del__(self):
        try:
            if not self._closed and self._registered and self._client is not None \
                    and self._client.status == "running":
                self.close()
        except Exception:
            pass

    def __iter__(self):
        return self

    def __next__(self) -> Any:
        client = self._require_client()
        if client.asynchronous:
            raise TypeError(f"Sub {self.name!r} uses an asynchronous client here: use 'async for msg in sub' "
                            "or 'await sub.get()'")
        return self.get()

    def __aiter__(self):
        return self

    async def __anext__(self) -> Any:
        result = self.get()
        if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
            result = await result
        return result

    def __reduce__(self):
        return Sub, (self.name, None, None, self.maxlen)

    def __repr__(self) -> str:
        return f"<Sub: {self.name!r}>"
