"""TLS transport (``tls://host:port``): TCP with mutual TLS on top.

A TLS comm is a ``Comm`` over Tornado's ``SSLIOStream``; messages, frames and
limits are those of ``distributed.comm.tcp``.  The SSL contexts come from
``distributed.security.Security`` (``get_listen_args`` /
``get_connection_args``): both ends show a certificate of the cluster CA.

What this does better than upstream dask.distributed:

- **Handshake deadline.**  Upstream's listener awaits the TLS handshake with
  no timeout, so a peer that connects and stays silent holds a coroutine and
  a socket until TCP keepalive gives up.  Here the listener gives each new
  connection ``distributed.comm.timeouts.handshake`` to send its first byte
  and finish the handshake, then closes it.
- **Scheme mismatch is named, both ways, at once.**  The listener peeks at
  the first byte: a TLS handshake record (0x16) starts TLS; anything else (a
  plaintext ``tcp://`` client) is answered with two TLS alert records and a
  close, which our plaintext ``Comm.read`` recognises and turns into
  ``FatalCommClosedError("the server ... only accepts TLS: connect to
  tls://...")``.  A TLS client meeting a plaintext listener fails its
  handshake at once with "does not speak TLS".
- **A refused certificate fails ``connect``** in both directions, also with
  TLS 1.3 (where the client's handshake completes before the server has
  checked the client's certificate): the server confirms an accepted peer
  with one byte, ``_READY``, which the client waits for under the same
  deadline.  The failure is a ``FatalCommClosedError`` (an ``OSError``) that
  connect does not retry.  This costs one round trip per new connection,
  none per message.

The listener logs a failed handshake as a WARNING and keeps serving.
Everything here runs on the event loop; nothing is thread-safe.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable

from tornado.iostream import IOStream, StreamClosedError

from distributed.comm.addressing import normalize_address
from distributed.comm.auth_io import authenticate_server
from distributed.comm.errors import ServerBusyError
from distributed.comm.limits import Limits, warn_refused
from distributed.comm.tcp import (
    Comm,
    CommClosedError,
    FatalCommClosedError,
    Listener,
    configured_max_message_size,
    open_stream,
)

__all__ = ["TLSComm", "TLSListener", "connect_tls", "listen_tls"]

logger = logging.getLogger(__name__)

#: Sent by the listener once the peer's certificate is accepted.
_READY = b"\x01"
#: Two fatal TLS alerts (protocol_version) written in plaintext to a client
#: that did not start TLS: at least 8 bytes, so our plaintext reader sees a
#: whole "frame count" and recognises a TLS record in it.
_PLAINTEXT_REFUSAL = b"\x15\x03\x03\x00\x02\x02\x46" * 2
_TLS_HANDSHAKE_RECORD = 0x16
#: A fatal TLS alert, internal_error (80), written in plaintext to a client
#: over a connection cap: its handshake fails with TLSV1_ALERT_INTERNAL_ERROR,
#: which ``connect_tls`` retries as BUSY.
_BUSY_ALERT = b"\x15\x03\x03\x00\x02\x02\x50"


class TLSComm(Comm):
    """A ``Comm`` over TLS; ``extra_info`` has the peer's certificate and the cipher."""

    @property
    def extra_info(self) -> dict:
        sslobj = self.stream.socket
        if sslobj is None:
            return {}
        return {"peercert": sslobj.getpeercert(), "cipher": sslobj.cipher()}


def _check_context(ssl_context, address: str, role: str) -> ssl.SSLContext:
    if not isinstance(ssl_context, ssl.SSLContext):
        raise TypeError(
            f"{role} {address} needs an ssl.SSLContext (ssl_context=), got {ssl_context!r}: "
            "pass security=Security(...) with the CA and this role's certificate and key"
        )
    return ssl_context


async def connect_tls(
    address: str,
    ssl_context: ssl.SSLContext,
    timeout: float = 30,
    deserialize: bool = True,
    max_message_size: int | None = None,
    retry_refused: bool = True,
    server_hostname: str | None = None,
) -> TLSComm:
    """Open a TLS comm to ``address`` (``tls://host:port``).

    ``timeout`` bounds everything: the TCP connect (refusals are retried as
    in ``tcp.connect``), the handshake and the server's confirmation.  A
    refused certificate or a server that does not speak TLS raises
    ``FatalCommClosedError``.

    >>> comm = await connect_tls("tls://127.0.0.1:8786", sec.get_connection_args("client")["ssl_context"])  # doctest: +SKIP
    """
    _check_context(ssl_context, address, "connecting to")
    if max_message_size is None:
        max_message_size = configured_max_message_size()
    address = normalize_address(address)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    stream = await open_stream(address, timeout, max_message_size, retry_refused)
    if stream.socket is None:
        raise CommClosedError(f"connection to {address} was closed while connecting")
    local = stream.socket.getsockname()
    try:
        stream = await asyncio.wait_for(
            stream.start_tls(False, ssl_options=ssl_context, server_hostname=server_hostname),
            max(deadline - loop.time(), 0.001),
        )
        # The server's verdict on our certificate (see the module docstring).
        ready = await asyncio.wait_for(stream.read_bytes(1), max(deadline - loop.time(), 0.001))
    except ssl.SSLCertVerificationError as e:
        _close(stream)
        raise FatalCommClosedError(
            f"TLS certificate of the server at {address} was rejected: {e.verify_message}. "
            "Check that both sides use certificates signed by the same CA (tls_ca_file)"
        ) from None
    except asyncio.TimeoutError:
        _close(stream)
        raise OSError(
            f"Timed out after {timeout} s waiting for the TLS handshake with {address}"
        ) from None
    except (ssl.SSLError, StreamClosedError, OSError) as e:
        _close(stream)
        if getattr(e, "reason", None) == "TLSV1_ALERT_INTERNAL_ERROR":
            raise ServerBusyError(
                f"the server at {address} is busy (too many connections or pending "
                "handshakes); try again") from None
        raise _handshake_error(address, e) from None
    if ready != _READY:
        _close(stream)
        raise FatalCommClosedError(f"the server at {address} sent {ready!r} after the TLS "
                                   "handshake: it is not a dask peer")
    return TLSComm(
        stream,
        f"tls://{local[0]}:{local[1]}",
        address,
        deserialize=deserialize,
        max_message_size=max_message_size,
    )


def _handshake_error(address: str, e: BaseException) -> FatalCommClosedError:
    """The error for a TLS handshake that failed other than by our own check
    of the server's certificate."""
    real = getattr(e, "real_error", None) or e
    reason = getattr(real, "reason", None) or ""
    text = str(real) or type(real).__name__
    if reason == "WRONG_VERSION_NUMBER" or isinstance(real, (StreamClosedError, ConnectionError)) \
            or "EOF" in text or reason == "UNEXPECTED_EOF_WHILE_READING":
        if "ALERT" not in reason:
            plain = address.replace("tls://", "tcp://", 1)
            return FatalCommClosedError(
                f"the server at {address} does not speak TLS (it closed the connection "
                f"during the TLS handshake): if it is a plaintext server use {plain}; "
                f"({text})"
            )
    return FatalCommClosedError(
        f"TLS handshake with {address} failed, the server refused our certificate or "
        f"settings: {text}. Check that both sides use certificates signed by the same CA "
        "(tls_ca_file) and that this role has a certificate and key"
    )


class TLSListener(Listener):
    """Accepts TLS connections; a failed handshake is logged and dropped.

    The server socket is plain: each accepted connection has
    ``distributed.comm.timeouts.handshake`` to show a TLS record and finish
    the TLS handshake and, with ``auth``, the authentication handshake (see
    the module docstring).  Every such connection counts as a pending
    handshake (``distributed.comm.limits``).
    """

    scheme = "tls"

    def __init__(
        self,
        handler: Callable[[Comm], Awaitable[None]],
        ssl_context: ssl.SSLContext,
        deserialize: bool = True,
        max_message_size: int | None = None,
        auth=None,
        limits: Limits | None = None,
    ):
        super().__init__(handler, deserialize=deserialize, max_message_size=max_message_size,
                         auth=auth, limits=limits)
        self.ssl_context = _check_context(ssl_context, "tls://", "listening on")

    async def _handshake(self, stream: IOStream, peer: str, host: str) -> Comm | None:
        if not self.admission.begin_handshake(host):
            warn_refused(self.address or "", peer, "busy: too many pending handshakes "
                         "(distributed.comm.max-pending-handshakes)", "busy")
            await self._refuse_busy(stream)
            return None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.handshake_timeout  # TLS and authentication together
        try:
            stream = await self._start_tls(stream, peer)
            if stream is None:
                return None
            comm = self._comm(stream, peer)
            if self.auth is not None and self.auth.secret is not None \
                    and not await authenticate_server(comm, self.auth, self.address or "",
                                                      max(deadline - loop.time(), 0.001)):
                return None
            return comm
        finally:
            self.admission.end_handshake(host)

    async def _start_tls(self, stream: IOStream, peer: str) -> IOStream | None:
        """The TLS stream once the peer's certificate is accepted (None: closed)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.handshake_timeout
        sock = stream.socket
        try:
            first = await asyncio.wait_for(_peek_first_byte(sock), self.handshake_timeout)
            if first != _TLS_HANDSHAKE_RECORD:
                logger.warning(
                    "%s: refused %s: it did not start TLS (a plaintext tcp:// client?)",
                    self.address, peer,
                )
                if first is not None:
                    try:
                        sock.send(_PLAINTEXT_REFUSAL)
                    except OSError:
                        pass
                _close(stream)
                return None
            stream = await asyncio.wait_for(
                stream.start_tls(True, ssl_options=self.ssl_context),
                max(deadline - loop.time(), 0.001),
            )
            await stream.write(_READY)
        except asyncio.TimeoutError:
            logger.warning("%s: TLS handshake with %s timed out after %s s; closed",
                           self.address, peer, self.handshake_timeout)
            _close(stream)
            return None
        except (ssl.SSLError, StreamClosedError, OSError) as e:
            real = getattr(e, "real_error", None) or e
            logger.warning("%s: TLS handshake failed with %s: %s", self.address, peer, real)
            _close(stream)
            return None
        return stream

    def _comm(self, stream: IOStream, peer: str) -> TLSComm:
        return TLSComm(stream, self.address or "", peer, deserialize=self.deserialize,
                       max_message_size=self.max_message_size)

    async def _refuse_busy(self, stream: IOStream) -> None:
        # Before TLS starts: a plaintext TLS alert the client's handshake
        # reports, and ``connect_tls`` turns into a retryable ServerBusyError.
        try:
            await asyncio.wait_for(stream.write(_BUSY_ALERT), 1.0)
        except (asyncio.TimeoutError, StreamClosedError, OSError):
            pass
        _close(stream)


def _close(stream: IOStream) -> None:
    """Close a stream, also one whose socket ``start_tls`` has taken over
    (Tornado's ``close`` would fail on its missing socket)."""
    if stream.socket is not None:
        stream.close()


async def _peek_first_byte(sock: socket.socket) -> int | None:
    """The first byte the peer sent, left in the socket; None if it closed."""
    loop = asyncio.get_running_loop()
    fd = sock.fileno()
    readable = loop.create_future()
    loop.add_reader(fd, lambda: readable.done() or readable.set_result(None))
    try:
        await readable
    finally:
        loop.remove_reader(fd)
    try:
        data = sock.recv(1, socket.MSG_PEEK)
    except (BlockingIOError, InterruptedError):
        return await _peek_first_byte(sock)
    return data[0] if data else None


def listen_tls(
    address: str,
    handler: Callable[[Comm], Awaitable[None]],
    ssl_context: ssl.SSLContext,
    deserialize: bool = True,
    max_message_size: int | None = None,
    auth=None,
    limits: Limits | None = None,
) -> TLSListener:
    """Start a TLS listener on ``address`` (``tls://host:port``; port 0 picks one).

    >>> listener = listen_tls("tls://127.0.0.1:0", handler, ctx)  # doctest: +SKIP
    """
    from distributed.comm.addressing import get_address_host_port

    host, port = get_address_host_port(normalize_address(address))
    listener = TLSListener(handler, ssl_context, deserialize=deserialize,
                           max_message_size=max_message_size, auth=auth, limits=limits)
    listener.start_listening(host, port)
    return listener
