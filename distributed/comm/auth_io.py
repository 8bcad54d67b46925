"""Run the authentication handshake (``distributed.comm.auth``) on a new comm.

``authenticate_client`` runs on the connecting side right after TCP/TLS
connect, ``authenticate_server`` on the accepting side before the handler
sees the comm, so nothing the peer sent is decoded as msgpack or pickle
before it proved it knows the secret.  Reads have exact sizes (4, 36, 32, 1
bytes) under ``distributed.comm.timeouts.handshake``.

Who runs it: a connector or listener given ``auth=AuthConfig(secret, ...)``
with a secret.  A ``tcp://`` listener given ``auth`` without a secret still
peeks at the first bytes, so a client with a secret meets a server without
one in mode NONE (the spec's ``auto``); a client without a secret sends no
ClientHello at all, so loopback clusters without a secret pay nothing.

An unauthenticated peer gets one status byte, then FIN: the server stops
writing, discards what the peer had already sent without decoding it, and
closes.  Refusals are logged once per peer host per 10 s.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Protocol

from tornado.iostream import IOStream, StreamClosedError

from distributed import config
from distributed.comm.auth import (
    CLIENT_HELLO_SIZE,
    MAGIC,
    PROOF_SIZE,
    SERVER_HELLO_SIZE,
    AuthenticationError,
    ClientHandshake,
    ServerHandshake,
    Status,
)
from distributed.comm.auth_secret import AuthConfig
from distributed.comm.errors import CommClosedError
from distributed.comm.limits import warn_refused
from distributed.protocol import ProtocolError


class Comm(Protocol):
    """What the handshake needs of a connection (``distributed.comm.tcp.Comm``,
    which imports this module, has it)."""

    stream: IOStream
    peer_address: str

    def abort(self) -> None: ...

__all__ = ["authenticate_client", "authenticate_server", "handshake_timeout", "refuse"]

logger = logging.getLogger(__name__)

_DRAIN_LIMIT = 1 << 16


def handshake_timeout() -> float:
    """``distributed.comm.timeouts.handshake`` in seconds.

    >>> handshake_timeout() > 0
    True
    """
    return config.get_timedelta("distributed.comm.timeouts.handshake")


def _warn(local: str, peer: str, reason: str, counter: str = "auth-failed") -> None:
    warn_refused(local, peer, reason, counter)


async def authenticate_client(comm: Comm, auth: AuthConfig | None, timeout: float | None = None
                              ) -> None:
    """Prove to the server at ``comm.peer_address`` that we know the secret
    (and check that it does).  No-op without a secret.  On failure the comm
    is aborted and ``AuthenticationError`` (``FatalCommClosedError``) raised.

    >>> await authenticate_client(comm, security.auth_config())  # doctest: +SKIP
    """
    if auth is None or auth.secret is None:
        return
    timeout = handshake_timeout() if timeout is None else timeout
    peer = f"the server at {comm.peer_address}"
    hs = ClientHandshake(auth.secret, required=auth.mode == "required", peer=peer)
    stream = comm.stream
    try:
        async with asyncio.timeout(timeout):
            await stream.write(hs.hello())
            try:
                reply = await stream.read_bytes(SERVER_HELLO_SIZE)
            except StreamClosedError:
                raise AuthenticationError(
                    f"{peer} closed the connection instead of answering our authentication "
                    "handshake: it does not authenticate (an older or foreign server?), or "
                    "refused us", Status.AUTH_FAILED,
                ) from None
            proof = hs.receive_server_hello(reply)
            if proof is not None:
                await stream.write(proof)
                hs.receive_verdict(await stream.read_bytes(1))
    except (AuthenticationError, ProtocolError):
        comm.abort()
        raise
    except TimeoutError:
        comm.abort()
        raise CommClosedError(
            f"authentication handshake with {peer} timed out after {timeout} s "
            "(distributed.comm.timeouts.handshake)"
        ) from None
    except StreamClosedError as e:
        comm.abort()
        raise CommClosedError(f"{peer} closed the connection during authentication: "
                              f"{e.real_error or ''}") from None


async def _peek(sock: socket.socket, n: int) -> bytes:
    """Up to ``n`` bytes the peer sent, left in the socket: returns once ``n``
    arrived, the data cannot start with MAGIC, or the peer closed."""
    loop = asyncio.get_running_loop()
    fd = sock.fileno()
    while True:
        readable = loop.create_future()
        loop.add_reader(fd, lambda fut=readable: fut.done() or fut.set_result(None))
        try:
            await readable
        finally:
            loop.remove_reader(fd)
        try:
            data = sock.recv(n, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            continue
        if len(data) >= n or not data or not MAGIC.startswith(data):
            return data
        await asyncio.sleep(0.005)  # a partial hello: wait for the rest


async def refuse(stream: IOStream, payload: bytes) -> None:
    """Send ``payload`` (a status byte, or a BUSY ServerHello), FIN, discard
    (never decode) what the peer had sent, close.  Draining first avoids a
    RST that would destroy the payload before the peer reads it.

    >>> await refuse(comm.stream, bytes([Status.AUTH_FAILED]))  # doctest: +SKIP
    """
    try:
        async with asyncio.timeout(1.0):
            await stream.write(payload)
            sock = stream.socket
            if sock is not None:
                sock.shutdown(socket.SHUT_WR)
            drained = 0
            while drained < _DRAIN_LIMIT:
                drained += len(await stream.read_bytes(4096, partial=True))
    except (TimeoutError, StreamClosedError, OSError):
        pass
    if not stream.closed():
        stream.close()


async def authenticate_server(comm: Comm, auth: AuthConfig | None, local: str = "",
                              timeout: float | None = None) -> bool:
    """Run the server side on a freshly accepted ``comm``; True when the
    handler may use it.  With a secret, a peer that does not prove it gets
    one status byte and a closed socket, and False is returned.

    >>> if await authenticate_server(comm, listen_auth): await handler(comm)  # doctest: +SKIP
    """
    if auth is None:
        return True
    timeout = handshake_timeout() if timeout is None else timeout
    stream, peer = comm.stream, comm.peer_address
    secret = auth.secret
    if secret is None:
        # Only a plain tcp:// socket can be peeked at (TLS bytes are encrypted).
        sock = stream.socket
        if sock is None or comm.peer_address.startswith("tls://"):
            return True
        try:
            first = await asyncio.wait_for(_peek(sock, len(MAGIC)), timeout)
        except (TimeoutError, OSError):
            return True  # no secret here: a slow legacy peer is served as before
        if first != MAGIC:
            return True
    hs = ServerHandshake(secret)
    try:
        async with asyncio.timeout(timeout):
            head = await stream.read_bytes(len(MAGIC))
            if head != MAGIC:
                _warn(local, peer, "no authentication handshake (a client without the secret, "
                      "or not a dask peer)", "auth-required")
                await refuse(stream, bytes([Status.AUTH_REQUIRED]))
                return False
            reply = hs.receive_client_hello(head + await stream.read_bytes(
                CLIENT_HELLO_SIZE - len(MAGIC)))
            await stream.write(reply)
            if hs.expects_proof:
                await stream.write(hs.receive_client_proof(await stream.read_bytes(PROOF_SIZE)))
    except ProtocolError as e:
        _warn(local, peer, str(e), "protocol")
        comm.abort()
        return False
    except TimeoutError:
        _warn(local, peer, f"authentication handshake timed out after {timeout} s",
              "handshake-timeout")
        comm.abort()
        return False
    except (StreamClosedError, OSError):
        if hs.expects_proof:  # it heard our proof and left: it holds another secret
            _warn(local, peer, "authentication failed (the peer closed instead of proving "
                  "it knows the secret: a different secret?)", "auth-failed")
        comm.abort()
        return False
    if hs.failed is not None:
        _warn(local, peer, f"authentication failed ({hs.failed.name})",
              hs.failed.name.lower().replace("_", "-"))
        comm.abort()
        return False
    return True
