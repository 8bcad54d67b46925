"""Servers, remote calls and the connection pool.

A ``Server`` reads ``{'op': name, **kwargs}`` messages from each connection
and calls ``handlers[name](comm, **kwargs)``; the return value is the reply.
A handler that raises sends the error back; the caller re-raises it with the
remote traceback.  A handler may instead take the connection over as a
long-lived stream (``handle_stream``) where each message is a list of
``{'op': ...}`` dicts dispatched to ``stream_handlers`` with no reply.

``rpc(address)`` turns attribute access into remote calls::

    await rpc("tcp://127.0.0.1:8786").identity()

Everything here runs on the event loop and is not thread-safe.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import uuid
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from tornado.ioloop import IOLoop, PeriodicCallback

from distributed import config
from distributed.comm import Comm, CommClosedError, connect, listen, normalize_address
from distributed.comm.tcp import configured_max_message_size
from distributed.exceptions import error_message, raise_remote
from distributed.protocol import MessageTooLargeError, ProtocolError

__all__ = ["Server", "rpc", "ConnectionPool", "send_recv", "Status", "NO_REPLY"]

logger = logging.getLogger(__name__)


class Status:
    """Lifecycle of a server (and of a cluster object: ``created`` until started)."""

    created = "created"
    init = "init"
    starting = "starting"
    running = "running"
    paused = "paused"
    closing = "closing"
    closed = "closed"


#: Returned by a handler that has taken the connection over.
NO_REPLY = object()


def _max_message_size() -> int:
    """``distributed.comm.max-message-size`` in bytes (read when a server
    starts listening; each outgoing connection reads it when it opens)."""
    return configured_max_message_size()


class Server:
    """Dispatch ops from connections to handlers.

    >>> async def main():  # doctest: +SKIP
    ...     server = Server({"ping": lambda comm: "pong"})
    ...     await server.listen("tcp://127.0.0.1:0")
    ...     assert await rpc(server.address).ping() == "pong"
    """

    def __init__(
        self,
        handlers: dict[str, Callable],
        stream_handlers: dict[str, Callable] | None = None,
        deserialize: bool = True,
        connection_limit: int | None = None,
    ):
        self.handlers = {"identity": self.identity, "echo": self._echo, **handlers}
        self.stream_handlers = dict(stream_handlers or {})
        self.deserialize = deserialize
        self.connection_limit = connection_limit
        self.id = f"{type(self).__name__}-{uuid.uuid4()}"
        self.status = Status.init
        self.listener = None
        self._comms: set[Comm] = set()
        self.periodic_callbacks: dict[str, PeriodicCallback] = {}
        self._background: set[asyncio.Task] = set()
        self._loop: IOLoop | None = None
        self.rpc = ConnectionPool(
            limit=config.get("distributed.worker.connections.outgoing", 50),
            deserialize=deserialize,
        )
        # TLS: set by ``set_security`` (plain tcp:// until then).
        self.security = None
        self.connection_args: dict = {}
        self.listen_args: dict = {}

    def set_security(self, security, role: str) -> None:
        """Use ``security`` (any accepted form, see ``coerce_security``) as
        ``role`` for listening, this server's rpc pool and its own connects."""
        from distributed.security import coerce_security

        self.security = coerce_security(security)
        self.connection_args = self.security.get_connection_args(role)
        self.listen_args = self.security.get_listen_args(role)
        self.rpc.connection_args = self.connection_args

    def _apply_auth_policy(self, address: str) -> None:
        """``distributed.comm.auth.mode``, decided per listen address: with no
        secret configured, listening off-loopback (or mode ``required``)
        generates one into a private file that same-user processes find."""
        from distributed.comm.auth_secret import auth_needed, ensure_secret

        auth = self.listen_args.get("auth")
        if auth is None or auth.secret is not None:
            return
        try:
            off_loopback = auth_needed("auto", None, [address])
        except ValueError:  # not a host:port address: nothing to decide here
            return
        if auth.mode == "disabled":
            if off_loopback:
                logger.warning("authentication is disabled: anyone who can reach %s can run "
                               "arbitrary code as this user", address)
            return
        if auth.mode == "required" or off_loopback:
            self.security.auth_secret = ensure_secret()
            self.connection_args["auth"] = self.listen_args["auth"] = self.security.auth_config()
            self.rpc.connection_args = self.connection_args

    def listen_scheme(self, host: str | None, protocol: str | None = None) -> str:
        """The scheme to listen with: the host's own (``tls://127.0.0.1``),
        else ``protocol``, else ``tls`` when this server has a certificate."""
        if host and "://" in host:
            return host.split("://", 1)[0]
        if protocol:
            protocol = protocol.rstrip(":/")
            if protocol not in ("tcp", "tls"):
                raise ValueError(f"unsupported protocol {protocol!r}: use 'tcp' or 'tls'")
            return protocol
        return "tls" if self.listen_args.get("ssl_context") is not None else "tcp"

    # -- lifecycle -----------------------------------------------------

    @property
    def address(self) -> str | None:
        return self.listener.address if self.listener else None

    @property
    def port(self) -> int | None:
        a = self.address
        return int(a.rsplit(":", 1)[1]) if a else None

    @property
    def ip(self) -> str | None:
        a = self.address
        return a.split("://")[-1].rsplit(":", 1)[0] if a else None

    @property
    def loop(self) -> IOLoop:
        """The loop the server runs on (also when asked from another thread)."""
        return self._loop if self._loop is not None else IOLoop.current()

    async def listen(self, address: str = "tcp://127.0.0.1:0") -> str:
        self._loop = IOLoop.current()
        self._apply_auth_policy(address)
        self.listener = listen(
            address,
            self.handle_comm,
            deserialize=self.deserialize,
            max_message_size=_max_message_size(),
            **self.listen_args,
        )
        return self.listener.address

    # -- for subclasses that define ``start()`` and ``close()`` -----------

    def __await__(self):
        return self.start().__await__()

    async def __aenter__(self):
        await self.start()
        return self

    async def __aexit__(self, *exc):
        await self.close()

    async def _start(self, port: int | None = None, **kwargs):
        """The seed-era spelling of ``start``, with the port to listen on."""
        if port is not None:
            self._requested_port = port
        return await self.start()

    def identity(self, comm=None) -> dict:
        return {"type": type(self).__name__, "id": self.id, "address": self.address}

    def _echo(self, comm=None, data=None):
        return data

    def start_periodic_callback(
        self, name: str, func: Callable, interval_s: float
    ) -> None:
        pc = PeriodicCallback(func, interval_s * 1000)
        self.periodic_callbacks[name] = pc
        pc.start()

    def spawn(self, coro) -> asyncio.Task:
        """Run ``coro`` in the background; it is cancelled on close."""
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background_done)
        return task

    def _background_done(self, task: asyncio.Task) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            if not isinstance(exc, (CommClosedError, OSError)):
                logger.error("background task failed", exc_info=exc)

    async def close_server(self) -> None:
        """Stop listening, callbacks, connections and background tasks."""
        for pc in self.periodic_callbacks.values():
            pc.stop()
        self.periodic_callbacks.clear()
        if self.listener is not None:
            self.listener.stop()
        for comm in list(self._comms):
            comm.abort()
        current = asyncio.current_task()
        tasks = [t for t in self._background if t is not current]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        await self.rpc.close()

    # -- dispatch ------------------------------------------------------

    async def handle_comm(self, comm: Comm) -> None:
        """Serve requests on one connection until it closes."""
        # The listener already caps connections (distributed.comm.max-connections,
        # answering BUSY); this is an extra, explicit per-server cap.
        if self.connection_limit is not None and len(self._comms) >= self.connection_limit:
            logger.warning(
                "%s: connection limit reached; refusing %s", self.id, comm.peer_address
            )
            comm.abort()
            return
        self._comms.add(comm)
        try:
            while not comm.closed():
                try:
                    msg = await comm.read()
                except CommClosedError:
                    return
                except ProtocolError as e:
                    logger.warning(
                        "%s: bad message from %s: %s", self.id, comm.peer_address, e
                    )
                    comm.abort()
                    return
                except Exception as e:
                    # Well framed, but a payload failed to load here (say a
                    # module this machine lacks): the stream is still at a
                    # message boundary, so answer and carry on.
                    logger.warning(
                        "%s: cannot load message from %s: %r", self.id, comm.peer_address, e
                    )
                    if not await self._reply(comm, error_message(e)):
                        return
                    continue
                if not isinstance(msg, dict) or "op" not in msg:
                    logger.warning(
                        "%s: message without an op from %s", self.id, comm.peer_address
                    )
                    await self._reply(
                        comm,
                        error_message(
                            ValueError(
                                "malformed request: expected a dict with an 'op' key"
                            )
                        ),
                    )
                    continue
                op = msg.pop("op")
                wants_reply = msg.pop("reply", True)
                close_after = msg.pop("close", False)
                handler = self.handlers.get(op)
                if handler is None:
                    logger.warning(
                        "%s: unknown operation %r from %s",
                        self.id,
                        op,
                        comm.peer_address,
                    )
                    result = error_message(ValueError(f"unknown operation {op!r}"))
                else:
                    try:
                        result = handler(comm, **msg)
                        if inspect.isawaitable(result):
                            result = await result
                    except CommClosedError:
                        return
                    except Exception as e:
                        logger.info("%s: handler %r raised %r", self.id, op, e)
                        result = error_message(e)
                if result is NO_REPLY:
                    return
                if wants_reply and not await self._reply(comm, result):
                    return
                if close_after:
                    await comm.close()
                    return
        except Exception:
            logger.exception("%s: error serving %s", self.id, comm.peer_address)
            comm.abort()
        finally:
            self._comms.discard(comm)

    async def _reply(self, comm: Comm, result: Any) -> bool:
        try:
            await comm.write(result)
            return True
        except CommClosedError:
            return False
        except (TypeError, MessageTooLargeError) as e:
            # Unencodable, or too large to send (refused before any byte was
            # written): tell the caller why instead of leaving it waiting.
            logger.error("%s: cannot send reply to %s: %s", self.id, comm.peer_address, e)
            try:
                await comm.write(error_message(e))
                return True
            except CommClosedError:
                return False

    async def handle_stream(self, comm: Comm, extra: dict | None = None) -> None:
        """Dispatch batches of stream messages until the connection closes."""
        handlers = self.stream_handlers
        extra = extra or {}
        try:
            while not comm.closed():
                try:
                    msgs = await comm.read()
                except (CommClosedError, ProtocolError):
                    raise
                except Exception as e:
                    # A payload failed to load; the stream is still at a
                    # message boundary.  Drop this batch, keep the stream.
                    logger.error("%s: cannot load stream message from %s: %r",
                                 self.id, comm.peer_address, e)
                    continue
                if isinstance(msgs, dict):
                    msgs = (msgs,)
                elif not isinstance(msgs, (tuple, list)):
                    logger.warning("%s: malformed stream message %r", self.id, msgs)
                    continue
                for msg in msgs:
                    if not isinstance(msg, dict) or "op" not in msg:
                        logger.warning("%s: malformed stream message %r", self.id, msg)
                        continue
                    op = msg.pop("op")
                    if op == "close-stream":
                        return
                    handler = handlers.get(op)
                    if handler is None:
                        logger.warning("%s: unknown stream operation %r", self.id, op)
                        continue
                    try:
                        handler(**{**msg, **extra})
                    except Exception:
                        logger.exception("%s: stream handler %r failed", self.id, op)
                        if config.get("distributed.admin.pdb-on-err", False):
                            raise
                # Let go of this batch now, not when the next one arrives: a
                # large graph would otherwise stay in memory in between.
                msgs = msg = None
        except CommClosedError as e:
            logger.debug("%s: stream from %s ended: %s", self.id, comm.peer_address, e)
        except ProtocolError as e:  # the connection is closed; say why
            logger.warning("%s: stream from %s ended: %s", self.id, comm.peer_address, e)


def _nothing_sent(e: BaseException) -> bool:
    """The request was refused before any byte was written (too large):
    the connection is still at a message boundary and may be reused."""
    return isinstance(e, MessageTooLargeError) and e.direction == "send"


async def send_recv(comm: Comm, reply: bool = True, **kwargs) -> Any:
    """Send one request and read its reply, re-raising remote errors."""
    await comm.write(kwargs if reply else {**kwargs, "reply": False})
    if not reply:
        return None
    response = await comm.read()
    if (
        isinstance(response, dict)
        and response.get("status") == "error"
        and "exception" in response
    ):
        raise_remote(response)
    return response


class rpc:
    """Remote calls to one address by attribute access.

    >>> await rpc("tcp://127.0.0.1:8786").identity()  # doctest: +SKIP
    {'type': 'Scheduler', ...}
    """

    def __init__(self, address, timeout: float | None = None, deserialize: bool = True,
                 connection_args: dict | None = None):
        self.address = normalize_address(address)
        self.timeout = timeout
        self.deserialize = deserialize
        # e.g. Security.get_connection_args(role), for tls:// addresses
        self.connection_args = dict(connection_args or {})
        self._idle: list[Comm] = []
        self._busy: set[Comm] = set()
        self.status = Status.running

    async def _get_comm(self) -> Comm:
        while self._idle:
            comm = self._idle.pop()
            if not comm.closed():
                break
        else:
            timeout = self.timeout or config.get_timedelta(
                "distributed.comm.timeouts.connect"
            )
            comm = await connect(
                self.address, timeout=timeout, deserialize=self.deserialize,
                **self.connection_args,
            )
            comm.name = "rpc"
        self._busy.add(comm)
        return comm

    def __getattr__(self, op: str):
        if op.startswith("__"):
            raise AttributeError(op)

        async def call(**kwargs):
            if self.status == Status.closed:
                raise RuntimeError(f"rpc to {self.address} is closed")
            comm = await self._get_comm()
            try:
                result = await send_recv(comm, op=op, **kwargs)
            except BaseException as e:
                self._busy.discard(comm)
                if _nothing_sent(e):
                    self._idle.append(comm)
                else:
                    comm.abort()
                raise
            self._busy.discard(comm)
            if not comm.closed():
                self._idle.append(comm)
            return result

        call.__name__ = op
        return call

    async def close_rpc(self) -> None:
        self.status = Status.closed
        for comm in [*self._idle, *self._busy]:
            await comm.close()
        self._idle.clear()
        self._busy.clear()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.close_rpc()

    def __repr__(self) -> str:
        return (
            f"<rpc to {self.address!r}, {len(self._busy)} busy, {len(self._idle)} idle>"
        )


class ConnectionPool:
    """Reusable connections to many addresses, at most ``limit`` open.

    ``pool(address).op(**kwargs)`` borrows a connection for one call.
    """

    def __init__(self, limit: int = 512, deserialize: bool = True,
                 connection_args: dict | None = None):
        self.limit = limit
        self.deserialize = deserialize
        # e.g. Security.get_connection_args(role), for tls:// addresses
        self.connection_args = dict(connection_args or {})
        self.available: dict[str, list[Comm]] = defaultdict(list)
        self.occupied: dict[str, set[Comm]] = defaultdict(set)
        self.open = 0
        self._released = asyncio.Condition()
        self.closed = False

    def __call__(self, address) -> _PooledRPC:
        return _PooledRPC(self, normalize_address(address))

    async def connect(self, address: str, timeout: float | None = None) -> Comm:
        """Borrow an open connection to ``address`` (give it back with ``reuse``)."""
        if self.closed:
            raise RuntimeError("connection pool is closed")
        while True:
            available = self.available[address]
            while available:
                comm = available.pop()
                if comm.closed():
                    self.open -= 1
                    continue
                self.occupied[address].add(comm)
                return comm
            if self.open < self.limit or self._close_one_idle():
                break
            # At the limit with every connection busy: wait for one to come
            # back, then look again (it may be to this very address).
            async with self._released:
                await self._released.wait()
            if self.closed:
                raise RuntimeError("connection pool is closed")
        self.open += 1
        try:
            timeout = timeout or config.get_timedelta(
                "distributed.comm.timeouts.connect"
            )
            comm = await connect(address, timeout=timeout, deserialize=self.deserialize,
                                 retry_refused=False, **self.connection_args)
        except BaseException:
            self.open -= 1
            await self._notify()
            raise
        self.occupied[address].add(comm)
        return comm

    def reuse(self, address: str, comm: Comm) -> None:
        """Give back a borrowed connection."""
        occupied = self.occupied.get(address)
        if occupied is None or comm not in occupied:
            comm.abort()  # already counted out by ``remove``
            return
        occupied.discard(comm)
        if comm.closed() or self.closed:
            self.open -= 1
            comm.abort()
        else:
            self.available[address].append(comm)
        asyncio.ensure_future(self._notify())

    async def _notify(self) -> None:
        async with self._released:
            self._released.notify()

    def _close_one_idle(self) -> bool:
        for comms in self.available.values():
            if comms:
                comms.pop().abort()
                self.open -= 1
                return True
        return False

    def remove(self, address: str) -> None:
        """Close all connections to ``address`` (a peer that went away)."""
        for comm in self.available.pop(address, []):
            comm.abort()
            self.open -= 1
        for comm in self.occupied.pop(address, set()):
            comm.abort()
            self.open -= 1

    async def close(self) -> None:
        self.closed = True
        for address in list(self.available) + list(self.occupied):
            self.remove(address)
        async with self._released:
            self._released.notify_all()


class _PooledRPC:
    def __init__(self, pool: ConnectionPool, address: str):
        self.pool = pool
        self.address = address

    def __getattr__(self, op: str):
        if op.startswith("__"):
            raise AttributeError(op)

        async def call(**kwargs):
            comm = await self.pool.connect(self.address)
            try:
                return await send_recv(comm, op=op, **kwargs)
            except BaseException as e:
                if not _nothing_sent(e):
                    comm.abort()
                raise
            finally:
                self.pool.reuse(self.address, comm)

        call.__name__ = op
        return call
