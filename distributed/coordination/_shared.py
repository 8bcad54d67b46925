"""What the coordination primitives share, on both sides.

Scheduler side:

* ``KeyHolder`` keeps keys alive on behalf of a primitive, as a client of
  the scheduler that has no connection (``"variable-<name>"``,
  ``"queue-<name>"``), with a count per key so one key can be held several
  times (the same Future queued twice).  The pseudo-client exists only while
  it holds something, so ``scheduler.clients`` does not fill up with them.
* ``wait_for_keys``: a Future's task reaches the scheduler on its client's
  stream, a ``set``/``put`` naming it on an rpc connection; the rpc may win
  the race, so the handler waits (with a deadline) until the keys are known.
* ``TokenMemory``: tokens whose requester gave up before its request
  arrived, so the late request is refused (see ``lock.py``).

Client side: ``ClientBound``, the base of ``Variable``, ``Queue``, ``Event``,
``Pub`` and ``Sub``: a name, a client found lazily (``get_client()``: the
worker's client inside a task), pickling by name, and ``_run`` that blocks
on a blocking client and returns an awaitable on an asynchronous one.

Everything scheduler-side runs on the scheduler's loop; ``ClientBound``
methods may be called from any thread.
"""
from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter, OrderedDict
from collections.abc import Iterable
from typing import Any

from distributed import config
from distributed.coordination.lock import _normalize_name

__all__ = ["KeyHolder", "wait_for_keys", "TokenMemory", "ClientBound", "parse_timeout", "normalize_name",
           "key_states", "apply_key_states", "future_keys"]

logger = logging.getLogger(__name__)

normalize_name = _normalize_name

#: Seconds a put/set without a timeout waits for the scheduler to learn of its Futures.
KEY_WAIT = 30.0


def parse_timeout(timeout: Any, what: str) -> float | None:
    """``timeout`` in seconds (``None`` stays ``None``); negative raises.

    >>> parse_timeout("200ms", "get"), parse_timeout(None, "get")
    (0.2, None)
    """
    if timeout is None:
        return None
    seconds = config.parse_timedelta(timeout)
    if seconds < 0:
        raise ValueError(f"{what}(timeout=...) must not be negative, got {timeout!r}")
    return float(seconds)


# ----------------------------------------------------------------------
# Scheduler side
# ----------------------------------------------------------------------


class KeyHolder:
    """Hold keys on the scheduler for a primitive (a pseudo-client ``owner``).

    >>> holder = KeyHolder(scheduler, "variable-x")     # doctest: +SKIP
    >>> holder.hold(["inc-123"]); holder.release(["inc-123"])   # doctest: +SKIP
    """

    def __init__(self, scheduler: Any, owner: str):
        self.scheduler = scheduler
        self.owner = owner
        self.counts: Counter = Counter()

    def hold(self, keys: Iterable) -> None:
        """Take one more reference on each of ``keys`` (known to the scheduler)."""
        new = []
        for key in keys:
            if not self.counts[key]:
                new.append(key)
            self.counts[key] += 1
        if new:
            state = self.scheduler.state
            if self.owner not in state.clients:
                state.add_client(self.owner, now=time.time())
            self.scheduler.send_all(*state.client_desires_keys(self.owner, new))

    def release(self, keys: Iterable) -> None:
        """Drop one reference on each of ``keys``; a key nobody else wants is
        released by the scheduler."""
        gone = []
        for key in keys:
            n = self.counts.get(key, 0)
            if n <= 0:
                continue
            if n == 1:
                del self.counts[key]
                gone.append(key)
            else:
                self.counts[key] = n - 1
        state = self.scheduler.state
        if gone:
            self.scheduler.send_all(*state.client_releases_keys(self.owner, gone))
        if not self.counts and self.owner in state.clients:
            self.scheduler.send_all(*state.remove_client(self.owner))

    def release_all(self) -> None:
        self.release([k for k, n in self.counts.items() for _ in range(n)])

    def __bool__(self) -> bool:
        return bool(self.counts)


async def wait_for_keys(scheduler: Any, keys: Iterable, timeout: float | None, what: str) -> None:
    """Return once the scheduler knows every key; ``TimeoutError`` after
    ``timeout`` seconds (``KEY_WAIT`` when None) naming the missing ones.  The keys come on another
    connection (the client's stream), usually within milliseconds."""
    keys = list(keys)
    tasks = scheduler.state.tasks
    missing = [k for k in keys if k not in tasks]
    if not missing:
        return
    if timeout is None:
        timeout = KEY_WAIT  # a key that never comes must not hold the request forever
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    delay = 0.002
    while missing:
        if getattr(scheduler, "status", None) in ("closing", "closed"):
            raise RuntimeError(f"{what}: the scheduler closed while waiting for {missing[:3]!r}")
        if loop.time() >= deadline:
            raise asyncio.TimeoutError(
                f"{what}: the scheduler did not learn of the Future(s) {missing[:3]!r} within {timeout} s "
                "(were they released or cancelled before this call?)")
        await asyncio.sleep(max(0.0, min(delay, deadline - loop.time())))
        delay = min(delay * 2, 0.05)
        missing = [k for k in missing if k not in tasks]


class TokenMemory:
    """Tokens given up on before their request arrived (bounded, oldest
    forgotten first).

    >>> m = TokenMemory(2); m.add("a"); m.pop("a"), m.pop("a")
    (True, False)
    """

    def __init__(self, size: int = 10_000):
        self.size = size
        self._tokens: OrderedDict[str, None] = OrderedDict()

    def add(self, token: str) -> None:
        self._tokens[token] = None
        while len(self._tokens) > self.size:
            self._tokens.popitem(last=False)

    def pop(self, token: str) -> bool:
        """Whether ``token`` was given up on (and forget it)."""
        return self._tokens.pop(token, False) is None

    def __len__(self) -> int:
        return len(self._tokens)


def key_states(scheduler: Any, keys: Iterable) -> dict:
    """What a client needs to know of ``keys`` at once: ``{key: {"state":
    ..., ...}}`` with the type and holders of a key in memory and the error
    of an erred one; ``"forgotten"`` for a key the scheduler no longer has."""
    out = {}
    tasks = scheduler.state.tasks
    for key in keys:
        ts = tasks.get(key)
        if ts is None:
            out[key] = {"state": "forgotten"}
        elif ts.state == "memory":
            out[key] = {"state": "memory", "type": ts.type, "workers": [ws.address for ws in ts.who_has]}
        elif ts.state == "erred":
            msg = scheduler.state._erred_msg(ts)
            msg.pop("op", None)
            out[key] = {"state": "erred", **msg}
        else:
            out[key] = {"state": ts.state}
    return out


# ----------------------------------------------------------------------
# Client side
# ----------------------------------------------------------------------


def apply_key_states(client: Any, value: Any, states: dict, what: str) -> None:
    """Give the Futures in ``value``, just received, the states the scheduler
    sent with them, so that ``future.status`` is right at once (the
    scheduler's own report follows on the stream)."""
    from distributed.futures import futures_of  # client side only: the scheduler never loads it

    for future in futures_of(value):
        info = states.get(future.key)
        if not info:
            continue
        st = future._state
        if st.status not in ("pending", "lost"):
            continue
        state = info.get("state")
        if state == "memory":
            st.finish(info.get("type"), info.get("workers") or ())
        elif state == "erred":
            client._on_task_erred(key=future.key, exception=info.get("exception"),
                                  traceback=info.get("traceback"), traceback_text=info.get("traceback_text"))
        elif state == "forgotten":
            st.cancel(f"the scheduler no longer has it (restarted?) when it came out of {what}")


def future_keys(value: Any, client: Any, what: str) -> list:
    """The keys of the Futures in ``value``; a Future that can no longer be
    held (cancelled, or of another cluster) raises at once instead of making
    the scheduler wait for a key that will not come."""
    from distributed.exceptions import CancelledError
    from distributed.futures import futures_of  # client side only: the scheduler never loads it

    keys = []
    for f in futures_of(value):
        if f.client is not client and f.client.scheduler_address != client.scheduler_address:
            raise ValueError(f"{what}: {f!r} belongs to a client of another scheduler")
        if f.status == "cancelled":
            raise CancelledError(f"{what}: {f!r} was cancelled; its data cannot be kept")
        keys.append(f.key)
    return keys


class ClientBound:
    """A named primitive that talks to the scheduler through a client."""

    _kind = "object"

    def __init__(self, name: Any = None, client: Any = None):
        self.name = uuid.uuid4().hex if name is None else name
        self._key = normalize_name(self.name)
        self._client = client

    @property
    def client(self) -> Any:
        """The client this object talks through: the one given, else found
        on first use (the worker's client inside a task, the default client
        elsewhere); None while there is none."""
        if self._client is None:
            from distributed.client import get_client

            try:
                self._client = get_client()
            except ValueError:
                return None
        return self._client

    def _require_client(self) -> Any:
        client = self.client
        if client is None:
            raise RuntimeError(
                f"{self._kind} {self.name!r} is not properly initialized: no client was given and none was "
                "found. Start a Client first (or pass client=); inside a task the worker's client is used.")
        return client

    def _run(self, func, *args, **kwargs):
        """Run coroutine function ``func`` through the client: an awaitable on
        an asynchronous client's loop, else block until it finishes."""
        return self._require_client().sync(func, *args, **kwargs)

    def _run_now(self, func, *args):
        """Like ``_run``, but on an asynchronous client's loop the call starts
        at once and awaiting the result is optional (upstream made such calls,
        ``Variable.delete``, ``Queue.close``, fire-and-forget); this object's
        next call waits for it (``_after_pending``)."""
        client = self._require_client()
        if client.asynchronous:
            previous = getattr(self, "_pending", None)

            async def in_order():
                if previous is not None and not previous.done():
                    try:  # an earlier such call first
                        await previous
                    except Exception:
                        pass  # reported by whoever awaits it, or logged by _after_pending
                return await func(*args)

            task = asyncio.ensure_future(in_order())
            self._pending = task
            return task
        return client.sync(func, *args)

    async def _after_pending(self) -> None:
        pending = getattr(self, "_pending", None)
        self._pending = None
        if pending is not None and not pending.done():
            try:
                await pending
            except Exception as e:  # it was fire-and-forget: report, go on
                logger.warning("%s %r: an earlier call failed: %r", self._kind, self.name, e)

    def _scheduler(self) -> Any:
        scheduler = self._client.scheduler
        if scheduler is None:
            raise RuntimeError(f"{self._kind} {self.name!r}: the client is not connected to a scheduler")
        return scheduler

    def _send(self, msg: dict) -> None:
        """A one-way message on the client's stream (ordered with its other
        messages, e.g. after the Futures it took)."""
        try:
            self._client._send_to_scheduler(msg)
        except Exception as e:  # a closed client: the scheduler cleans up after it
            logger.debug("%s %r: could not send %s: %s", self._kind, self.name, msg.get("op"), e)

    async def _receive(self, request: Any, unpack: Any, abandon_op: str, confirm_op: str,
                       timeout_text: str) -> Any:
        """A get that may hand Futures over: ``await request(token, client_id)``
        and ``unpack(reply)`` with those Futures bound to our client.  On any
        failure ``abandon_op`` gives back what was handed out; once the
        Futures hold their keys, ``confirm_op`` lets the scheduler drop its
        own hold.  ``timeout_text`` is the TimeoutError when none came."""
        from distributed import context
        from distributed.exceptions import TimeoutError

        client = self._require_client()
        token = uuid.uuid4().hex
        try:
            with context.receiving_for(client):  # Futures unpickled from the reply are this client's
                reply = await request(token, client.id)
                value = unpack(reply)
        except BaseException:
            # Cancelled, a broken connection, or a value that cannot be
            # unpickled here: what was handed out goes back.
            self._send({"op": abandon_op, "name": self._key, "token": token})
            raise
        status = reply.get("status")
        if status == "timeout":
            raise TimeoutError(timeout_text)
        if status != "OK":
            raise RuntimeError(f"{self._kind} {self.name!r}.get: unexpected answer {status!r} "
                               "from the scheduler")
        if reply.get("keys"):
            apply_key_states(client, value, reply.get("states") or {}, f"{self._kind} {self.name!r}")
            # After the Futures' own messages on the same stream: they hold the keys now.
            self._send({"op": confirm_op, "name": self._key, "token": token})
        return value

    def __await__(self):
        """``await Variable(...)`` (upstream's constructors are awaitable)."""
        async def ready():
            return self

        return ready().__await__()

    def __reduce__(self):
        return type(self), (self.name,)

    def __repr__(self) -> str:
        return f"<{self._kind}: {self.name!r}>"
