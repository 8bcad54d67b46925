"""A cluster-wide variable: the scheduler extension and the ``Variable`` users hold.

A ``Variable`` names one value kept in the scheduler.  Any client, and any
task through its worker's client, can ``set`` it, ``get`` it (waiting until
it is first set) and ``delete`` it.  The value is any picklable object; the
Futures in it (a Future, or Futures inside lists, tuples, sets and dicts)
keep their data alive while the variable holds them, even after every
client dropped its own Futures.

Theory of operation
-------------------
The scheduler (``VariableExtension``, ``scheduler.extensions["variables"]``)
stores the pickled value unopened, with the keys of its Futures, and holds
those keys as the pseudo-client ``"variable-<name>"`` (``KeyHolder``).

Handing a Future to a client is a handshake, so that a ``get`` racing a
``set`` never loses the key (upstream's d/d#1132): each ``get`` carries a
token; the reply takes *one more* hold on the value's keys for that token;
the client unpickles the value (its Futures tell the scheduler, on the
client's stream, that the client wants their keys) and then confirms the
token on the same stream, after those messages; only the confirmation lets
go of the token's hold.  A ``set`` replacing the value therefore releases
the old keys at once without harm: a reader still in flight holds its own.
A reader that gives up (timeout on its side, cancellation, a broken
connection) abandons its token; a reader whose client disconnects loses its
tokens with it.  Upstream instead delayed the release of the old value until
every outstanding token of the name was confirmed.

Waits: ``get`` without a timeout waits as long as it takes (as upstream),
but a waiting ``get`` is answered with an error when its client disconnects
or the scheduler closes.  ``set`` waits (default 30 s) for the scheduler to
learn of the Futures it names, which travel on the client's stream.

Thread rules: ``VariableExtension`` runs on the scheduler's loop.
``Variable`` methods may be called from any thread; with an asynchronous
client on its own loop they return awaitables.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from distributed.coordination._shared import (
    ClientBound,
    KeyHolder,
    TokenMemory,
    future_keys,
    key_states,
    normalize_name,
    parse_timeout,
    wait_for_keys,
)
from distributed.protocol import Serialize, Serialized

__all__ = ["Variable", "VariableExtension"]

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------
# Scheduler side
# ----------------------------------------------------------------------


@dataclass(slots=True)
class _Value:
    data: Any  # the pickled value (Serialized), never unpickled here
    keys: tuple  # the keys of the Futures inside it


@dataclass(slots=True, eq=False)
class _Reader:
    """A ``get`` waiting for a variable to be set."""

    token: str
    client: str | None
    future: asyncio.Future
    timer: asyncio.TimerHandle | None = field(default=None)


class VariableExtension:
    """The scheduler's side of ``Variable``.

    ``variables`` maps each set name to its value (``.data``, ``.keys``);
    ``waiting`` maps a name to the ``get`` requests waiting for it;
    ``in_flight`` maps each token handed out and not yet confirmed to
    ``(name, keys, client)``.  Nothing is kept for a name that is neither
    set nor waited on.

    >>> scheduler.extensions["variables"].variables["x"].keys     # doctest: +SKIP
    ('inc-5f0c...',)
    """

    def __init__(self, scheduler: Any):
        self.scheduler = scheduler
        self.variables: dict[Any, _Value] = {}
        self.waiting: dict[Any, list[_Reader]] = {}
        self.in_flight: dict[str, tuple] = {}
        self.holders: dict[Any, KeyHolder] = {}
        self._abandoned = TokenMemory()
        self._closed = False
        scheduler.handlers.update({
            "variable_set": self.set,
            "variable_get": self.get,
            "variable_delete": self.delete,
            "variable_is_set": self.is_set,
        })
        scheduler.stream_handlers.update({
            "variable-future-received-confirm": self.confirm,
            "variable-abandon": self.abandon,
        })

    def __repr__(self) -> str:
        return (f"<VariableExtension: {len(self.variables)} set, "
                f"{sum(map(len, self.waiting.values()))} waiting, {len(self.in_flight)} in flight>")

    async def set(self, comm=None, name=None, data=None, keys=(), timeout=None, client=None, **kwargs) -> str:
        """Store ``data`` (holding ``keys``) as the value of ``name``; wake
        the readers waiting for it."""
        self._check_open()
        name = normalize_name(name)
        keys = tuple(keys or ())
        if keys:
            await wait_for_keys(self.scheduler, keys, timeout, f"Variable {name!r}.set")
            self._check_open()
        holder = self._holder(name)
        holder.hold(keys)  # the new keys first: a key in both values stays held
        old = self.variables.get(name)
        self.variables[name] = _Value(data, keys)
        if old is not None:
            holder.release(old.keys)
        for reader in self.waiting.pop(name, ()):
            if reader.timer is not None:
                reader.timer.cancel()
            if not reader.future.done():
                reader.future.set_result(self._hand_out(name, reader.token, reader.client))
        self._tidy(name)
        return "OK"

    async def get(self, comm=None, name=None, token=None, client=None, timeout=None, **kwargs) -> dict:
        """The value of ``name`` once it is set: ``{"status": "OK", "data",
        "keys", "token", "states"}``, or ``{"status": "timeout"}``."""
        self._check_open()
        name = normalize_name(name)
        if not isinstance(token, str):
            raise TypeError("variable_get needs a string 'token'")
        if self._abandoned.pop(token):
            return {"status": "abandoned"}
        if name in self.variables:
            return self._hand_out(name, token, client)
        timeout = parse_timeout(timeout, "Variable.get")
        if timeout is not None and timeout <= 0:
            return {"status": "timeout"}
        loop = asyncio.get_running_loop()
        reader = _Reader(token, client, loop.create_future())
        self.waiting.setdefault(name, []).append(reader)
        if timeout is not None:
            reader.timer = loop.call_later(timeout, self._answer, name, reader, {"status": "timeout"})
        return await reader.future

    def delete(self, comm=None, name=None, **kwargs) -> str:
        """Forget the value of ``name`` (a no-op if it is not set)."""
        name = normalize_name(name)
        value = self.variables.pop(name, None)
        if value is not None:
            self._holder(name).release(value.keys)
            self._tidy(name)
        return "OK"

    def is_set(self, comm=None, name=None, **kwargs) -> bool:
        return normalize_name(name) in self.variables

    def confirm(self, token=None, name=None, client=None, **kwargs) -> None:
        """The reader of ``token`` holds its own Futures now."""
        self._settle(token)

    def abandon(self, token=None, name=None, client=None, **kwargs) -> None:
        """The reader of ``token`` gave up: drop its waiting request or its
        hold, or refuse the request when it arrives."""
        if self._settle(token):
            return
        name = normalize_name(name)
        for reader in self.waiting.get(name, ()):
            if reader.token == token:
                self._answer(name, reader, {"status": "abandoned"})
                return
        self._abandoned.add(token)

    def remove_client(self, client: str) -> None:
        """A client's stream ended: answer its waiting readers, drop the
        holds of the values it had not confirmed."""
        gone = RuntimeError(f"the client {client} was disconnected from the scheduler while waiting for a Variable")
        for name, readers in list(self.waiting.items()):
            for reader in [r for r in readers if r.client == client]:
                self._answer(name, reader, gone)
        for token in [t for t, (_, _, c) in self.in_flight.items() if c == client]:
            self._settle(token)

    def close(self) -> None:
        """Answer every waiting reader: the scheduler is closing."""
        self._closed = True
        closing = RuntimeError("the scheduler closed while this request waited for a Variable")
        for name, readers in list(self.waiting.items()):
            for reader in list(readers):
                self._answer(name, reader, closing)

    # -- internals -------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the scheduler is closing; Variables cannot be used")

    def _holder(self, name: Any) -> KeyHolder:
        holder = self.holders.get(name)
        if holder is None:
            holder = self.holders[name] = KeyHolder(self.scheduler, f"variable-{name}")
        return holder

    def _tidy(self, name: Any) -> None:
        holder = self.holders.get(name)
        if holder is not None and not holder:
            del self.holders[name]

    def _hand_out(self, name: Any, token: str, client: str | None) -> dict:
        value = self.variables[name]
        if value.keys and client is not None:
            # This reader's own hold, until it confirms (see the module docstring).
            self._holder(name).hold(value.keys)
            self.in_flight[token] = (name, value.keys, client)
        return {"status": "OK", "data": value.data, "keys": value.keys, "token": token,
                "states": key_states(self.scheduler, value.keys) if value.keys else {}}

    def _settle(self, token: str) -> bool:
        entry = self.in_flight.pop(token, None)
        if entry is None:
            return False
        name, keys, _ = entry
        self._holder(name).release(keys)
        self._tidy(name)
        return True

    def _answer(self, name: Any, reader: _Reader, answer: dict | BaseException) -> None:
        """Take a waiting reader out of the queue with ``answer``."""
        if reader.timer is not None:
            reader.timer.cancel()
        readers = self.waiting.get(name)
        if readers is not None:
            if reader in readers:
                readers.remove(reader)
            if not readers:
                del self.waiting[name]
        if not reader.future.done():
            if isinstance(answer, BaseException):
                reader.future.set_exception(answer)
            else:
                reader.future.set_result(answer)


# ----------------------------------------------------------------------
# User side
# ----------------------------------------------------------------------


class Variable(ClientBound):
    """A value shared by every client and task of a cluster, by name.

    >>> x = Variable("x")                       # doctest: +SKIP
    >>> x.set(client.submit(inc, 1))            # doctest: +SKIP
    >>> x.get().result()                        # doctest: +SKIP
    2
    >>> def task():                             # doctest: +SKIP
    ...     return Variable("x").get().result()

    ``set(value, timeout="30s")`` stores any picklable value; Futures in it
    (also inside lists, tuples, sets, dicts) keep their data alive until the
    value is replaced or deleted.  ``get(timeout=None)`` returns the value,
    waiting until the variable is first set (``TimeoutError`` after
    ``timeout``); each Future it returns is this client's own and already
    knows its status.  ``delete()`` forgets the value; ``is_set()`` says
    whether there is one.  The value lives in the scheduler's memory: it
    survives the client that set it, not a scheduler restart.

    Behaviour that may surprise:

    * With an asynchronous client, ``delete()`` starts at once and returns
      an awaitable (awaiting it is optional, as upstream's fire-and-forget
      ``delete``); this object's next call waits for it.
    * ``client=`` picks the client; by default it is found on first use.
      Unpickled where there is no client, the object works once one exists;
      until then every method raises ``RuntimeError``.
    """

    _kind = "Variable"

    def __init__(self, name: Any = None, client: Any = None):
        super().__init__(name, client)
        self._pending: asyncio.Future | None = None  # a delete started asynchronously

    def set(self, value: Any, timeout: Any = "30 s"):
        """Make ``value`` the variable's value (waiting up to ``timeout`` for
        the scheduler to learn of the Futures in it)."""
        timeout = parse_timeout(timeout, "Variable.set")
        return self._run(self._set, value, timeout)

    async def _set(self, value: Any, timeout: float | None) -> None:
        await self._after_pending()
        client = self._require_client()
        keys = future_keys(value, client, f"Variable {self.name!r}.set")
        await self._scheduler().variable_set(name=self._key, data=Serialize(value), keys=keys,
                                             timeout=timeout, client=client.id)

    def get(self, timeout: Any = None):
        """The value, waiting until the variable is set; ``TimeoutError``
        after ``timeout`` (seconds, ``"200ms"``, a timedelta)."""
        timeout = parse_timeout(timeout, "Variable.get")
        return self._run(self._get, timeout)

    async def _get(self, timeout: float | None = None) -> Any:
        await self._after_pending()
        def unpack(reply):
            data = reply.get("data") if isinstance(reply, dict) else None
            return data.deserialize() if isinstance(data, Serialized) else data

        data = await self._receive(
            lambda token, client_id: self._scheduler().variable_get(
                name=self._key, token=token, client=client_id, timeout=timeout),
            unpack, "variable-abandon", "variable-future-received-confirm",
            f"Variable {self.name!r} was not set within {timeout} s")
        return data

    def delete(self):
        """Forget the value (nothing happens if it is not set)."""
        return self._run_now(self._delete)

    async def _delete(self) -> None:
        await self._scheduler().variable_delete(name=self._key)

    def is_set(self):
        """Whether the variable has a value now."""
        return self._run(self._is_set)

    async def _is_set(self) -> bool:
        await self._after_pending()
        return bool(await self._scheduler().variable_is_set(name=self._key))

    def __repr__(self) -> str:
        return f"<Variable: {self.name!r}>"
