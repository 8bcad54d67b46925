"""TCP transport over Tornado's IOStream.

A ``Comm`` reads and writes whole messages (see ``distributed.protocol``).
It belongs to the event loop that created it and is not thread-safe.
Errors on the connection surface as ``CommClosedError``; bytes that are not a
valid message raise ``ProtocolError`` and close the connection, because the
stream can no longer be trusted to be at a message boundary.

Size limit
----------
Each ``Comm`` has a ``max_message_size`` (by default the setting
``distributed.comm.max-message-size``), checked at both ends with
``MessageTooLargeError``: ``write`` raises it before a single byte goes out,
so the connection stays usable; ``read`` raises it as soon as the prelude
announces more, without reading the payload, and closes the connection.
Tornado's own read limit (``max_buffer_size``, 100 MB unless told otherwise)
also counts the buffers we read frames into, so every stream here gets one
above ours: otherwise a value between the two limits would be refused by
Tornado with a closed connection and a log line, which callers would retry.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from tornado.iostream import IOStream, StreamClosedError
from tornado.netutil import bind_sockets
from tornado.tcpclient import TCPClient
from tornado.tcpserver import TCPServer

from distributed import config
from distributed.comm.addressing import get_address_host_port, normalize_address
from distributed.comm.auth import MAGIC, Mode, Status, pack_server_hello
from distributed.comm.auth_io import authenticate_server, refuse
from distributed.comm.errors import (
    AuthenticationError,
    CommClosedError,
    FatalCommClosedError,
    ServerBusyError,
)
from distributed.comm.limits import Admission, Limits, warn_refused
from distributed.comm.shm import Channel
from distributed.protocol import ProtocolError, buffers, decode_message, encode_message
from distributed.protocol.frames import (
    AS_BYTES,
    MAX_FRAMES,
    check_message_size,
    pack_frames_prelude,
    parse_frame_count,
    parse_frame_table,
)

__all__ = [
    "Comm",
    "CommClosedError",
    "FatalCommClosedError",
    "Listener",
    "ServerBusyError",
    "connect",
    "listen",
]

logger = logging.getLogger(__name__)

#: Messages up to this size are read in one piece and written as one buffer.
_SMALL = 2**16


def configured_max_message_size() -> int:
    """The limit set by ``distributed.comm.max-message-size``, in bytes:
    a size such as ``"4GiB"``, or ``"auto"`` for half of this machine's
    memory (what Tornado allowed upstream dask.distributed).

    >>> configured_max_message_size() > 0
    True
    """
    value = config.get("distributed.comm.max-message-size")
    if isinstance(value, str) and value.strip().lower() == "auto":
        return _memory_size() // 2
    limit = config.get_bytes("distributed.comm.max-message-size")
    if limit is None or limit <= 0:
        raise ValueError(
            "distributed.comm.max-message-size must be 'auto' or a positive size such as "
            f"'4GiB', not {value!r}"
        )
    return limit


def configured_max_frames() -> int:
    """``distributed.comm.max-frames``: most frames one message may announce,
    checked before the table of frame lengths is read.

    >>> configured_max_frames() <= MAX_FRAMES
    True
    """
    value = config.get("distributed.comm.max-frames")
    if type(value) is not int or not 0 < value <= MAX_FRAMES:
        raise ValueError(f"distributed.comm.max-frames must be an integer from 1 to "
                         f"{MAX_FRAMES}, not {value!r}")
    return value


_memory: int | None = None


def _memory_size() -> int:
    """Memory of this machine, or of its container when that is smaller."""
    global _memory
    if _memory is None:
        import psutil

        total = psutil.virtual_memory().total
        for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
            try:
                with open(path) as f:
                    total = min(total, int(f.read().strip()))
            except (OSError, ValueError):  # absent, or "max": no container limit
                pass
        _memory = total
    return _memory


def _tornado_buffer_limit(max_message_size: int) -> int:
    """A Tornado ``max_buffer_size`` that never refuses what we accept: the
    largest frame we read into one buffer, or the largest prelude (read
    through Tornado's own buffer), plus room for the 64 KiB chunks it reads
    ahead."""
    return max(max_message_size, 8 * (MAX_FRAMES + 1)) + 2**20


#: The one status byte a server requiring authentication sends a client that
#: did not start the handshake (``distributed.comm.auth.Status.AUTH_REQUIRED``).
_AUTH_REQUIRED = 1


def _auth_refusal(stream: IOStream) -> bool:
    """Whether a stream closed right after its server sent just the
    AUTH_REQUIRED status byte (only inspected on the error path)."""
    buffered = getattr(stream, "_read_buffer", b"")
    return getattr(stream, "_read_buffer_size", 0) == 1 and buffered[:1] == bytes([_AUTH_REQUIRED])


def _looks_like_tls(header: bytes) -> bool:
    """The first bytes of a TLS record (content type 20-23, version 3.x):
    what a TLS peer sends, never a sane frame count."""
    return len(header) >= 2 and 20 <= header[0] <= 23 and header[1] == 3


def set_tcp_timeouts(sock: socket.socket | None) -> None:
    """Make a dead peer (a cut cable, a host gone) an error on ``sock``
    within about ``distributed.comm.timeouts.tcp``: data unacknowledged
    that long (``TCP_USER_TIMEOUT``) and, on an idle connection, keepalive
    probes from a third of it, every tenth of it.  Without them a read from
    a peer that vanished waits for ever.  None or 0 leaves the kernel's
    defaults; options the platform lacks are skipped.

    >>> with socket.socket() as s:
    ...     set_tcp_timeouts(s)
    ...     s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) != 0
    True
    """
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    timeout = config.get_timedelta("distributed.comm.timeouts.tcp")
    if not timeout:
        return
    options = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
    for name, value in (("TCP_KEEPIDLE", max(1, int(timeout / 3))),
                        ("TCP_KEEPINTVL", max(1, int(timeout / 10))), ("TCP_KEEPCNT", 5),
                        ("TCP_USER_TIMEOUT", max(1, int(timeout * 1000)))):
        if hasattr(socket, name):
            options.append((socket.IPPROTO_TCP, getattr(socket, name), value))
    for level, option, value in options:
        try:
            sock.setsockopt(level, option, value)
        except OSError as e:  # a platform that lists the option but refuses it
            logger.debug("socket option %s=%s not set: %s", option, value, e)


class Comm:
    """One TCP connection that sends and receives whole messages.

    ``deserialize=False`` keeps pickled payloads as ``Serialized`` (used by
    the scheduler, which forwards them without looking inside).
    """

    #: True on the side that accepted the connection (a listener's).
    accepted = False

    def __init__(
        self,
        stream: IOStream,
        local_address: str,
        peer_address: str,
        deserialize: bool = True,
        max_message_size: int | None = None,
    ):
        self.stream = stream
        self.local_address = local_address
        self.peer_address = peer_address
        self.deserialize = deserialize
        if max_message_size is None:
            max_message_size = configured_max_message_size()
        self.max_message_size = max_message_size
        self.max_frames = configured_max_frames()
        self.name: str | None = None
        stream.set_nodelay(True)
        set_tcp_timeouts(stream.socket)  # every socket we open or accept
        # Large frames to a peer sharing our /dev/shm go through it (comm/shm.py).
        self._shm = Channel.for_socket(stream.socket, local_address, peer_address)

    @property
    def max_message_size(self) -> int:
        """Largest message, in bytes, this connection writes or reads."""
        return self._max_message_size

    @max_message_size.setter
    def max_message_size(self, value: int) -> None:
        if type(value) is not int or value <= 0:
            raise ValueError(f"max_message_size must be a positive int, not {value!r}")
        self._max_message_size = value
        # Tornado checks its limit against the buffer a frame is read into.
        self.stream.max_buffer_size = max(self.stream.max_buffer_size or 0,
                                          _tornado_buffer_limit(value))

    def __repr__(self) -> str:
        state = "closed" if self.closed() else "open"
        return f"<Comm {self.name or ''} {self.local_address} -> {self.peer_address} {state}>"

    @property
    def extra_info(self) -> dict:
        """Transport details (the TLS comm has the peer certificate and cipher)."""
        return {}

    async def read(self) -> Any:
        """Read one message.  Raises ``CommClosedError`` or ``ProtocolError``."""
        stream = self.stream
        header = b""
        try:
            header = await stream.read_bytes(8)
            n = parse_frame_count(header, self.max_frames)
            lengths, flags = parse_frame_table(
                await stream.read_bytes(8 * n), n, self.max_message_size, self.peer_address,
                self.local_address,
            )
            total = sum(lengths)
            if total <= _SMALL:  # the common case: one read, no per-frame work
                buf = await stream.read_bytes(total) if total else b""
                frames = _split(memoryview(buf), lengths)
            else:
                frames = await self._read_large(lengths, [flag == AS_BYTES for flag in flags])
            if any(flag & ~AS_BYTES for flag in flags):
                frames = self._resolve_shm(frames, flags)
        except StreamClosedError as e:
            if not self.accepted and header == b"" and _auth_refusal(stream):
                self.abort()
                raise AuthenticationError(
                    f"the server at {self.peer_address} requires authentication but no secret "
                    "is configured; set DASK_DISTRIBUTED__COMM__AUTH__SECRET, "
                    "distributed.comm.auth.secret-file, --auth-secret-file, or use "
                    "--scheduler-file", _AUTH_REQUIRED,
                ) from None
            self.abort()
            raise CommClosedError(
                f"connection to {self.peer_address} closed: {e.real_error or ''}"
            ) from None
        except ProtocolError:
            self.abort()
            if _looks_like_tls(header):
                self._raise_tls_peer()
            if not self.accepted and header[:4] == MAGIC:
                self._raise_server_hello(header)
            raise
        try:
            return decode_message(frames, self.deserialize)
        except ProtocolError:
            self.abort()
            raise

    def _resolve_shm(self, frames: list, flags: list[int]) -> list:
        """Frames with the same-host transport's descriptors and hellos
        resolved (``distributed.comm.shm``)."""
        if self._shm is None:
            raise ProtocolError(f"{self.peer_address} sent shared-memory frames on a "
                                "connection that does not use them")
        try:
            return self._shm.resolve(frames, flags, self.max_message_size)
        except OSError as e:  # the writer died: nothing to copy from
            raise StreamClosedError(e) from None

    def _raise_server_hello(self, header: bytes) -> None:
        """The server answered our first request with a ServerHello: it
        refused the connection before reading anything (an error path only)."""
        status = header[5]
        if status == Status.BUSY:
            raise ServerBusyError(
                f"the server at {self.peer_address} is busy (too many connections: "
                "distributed.comm.max-connections); nothing was processed, try again")
        raise AuthenticationError(
            f"the server at {self.peer_address} refused the connection (handshake status "
            f"{status}): check its authentication settings", status)

    def _raise_tls_peer(self) -> None:
        """TLS bytes arrived on a plaintext connection (an error path only)."""
        if self.accepted:  # we accepted it: a TLS client on our tcp:// port
            raise ProtocolError(
                f"{self.peer_address} speaks TLS but {self.local_address} is a plaintext "
                "tcp:// listener; the peer should use tcp:// or the server tls://"
            )
        tls = self.peer_address.replace("tcp://", "tls://", 1)
        raise FatalCommClosedError(
            f"the server at {self.peer_address} only accepts TLS: connect to {tls} "
            "with a Security holding the cluster's certificates (security=)"
        )

    async def _read_large(self, lengths: list[int], as_bytes: list[bool]) -> list:
        """Frames marked ``as_bytes`` are read into new ``bytes`` objects; the
        others share one buffer, which pickled arrays then use in place."""
        stream = self.stream
        if not buffers.SUPPORTED:
            as_bytes = [False] * len(lengths)
        shared = sum(n for n, whole in zip(lengths, as_bytes) if not whole)
        buf = buffers.new_buffer(shared) if shared else None
        frames = []
        offset = 0
        for length, whole in zip(lengths, as_bytes):
            if whole:
                frame, target = buffers.new_bytes(length)
            else:
                frame = target = buf[offset : offset + length]
                offset += length
            if length:
                await stream.read_into(target)
            frames.append(frame)
        return frames

    async def write(self, msg: Any) -> int:
        """Write one message; returns the number of bytes written.

        A message over ``max_message_size`` raises ``MessageTooLargeError``
        before anything is written: the connection can carry on.
        """
        if self.stream.closed():
            raise CommClosedError(f"connection to {self.peer_address} is closed")
        frames = encode_message(msg)
        return await self.write_frames(frames)

    async def write_frames(self, frames: list) -> int:
        """Write already encoded frames (see ``write``)."""
        frames = [_as_bytes_view(f) for f in frames]
        total = sum(len(f) for f in frames)
        check_message_size(total, self.max_message_size, "send", self.peer_address, self.local_address)
        wire, flags, ack = frames, None, None
        if self._shm is not None:  # large frames to a same-host peer: descriptors
            wire, flags, ack = self._shm.prepare(frames, self.accepted)
        prelude = pack_frames_prelude(wire, flags)
        stream = self.stream
        try:
            try:
                if total <= _SMALL:
                    await stream.write(b"".join([prelude, *wire]))
                else:
                    stream.write(prelude)
                    future = None
                    for frame in wire:
                        future = stream.write(frame)
                    await future
            except StreamClosedError as e:
                self.abort()
                raise CommClosedError(
                    f"connection to {self.peer_address} closed: {e.real_error or ''}"
                ) from None
            if ack is not None:  # the peer copies out of ``frames``: alive until it has
                try:
                    await self._shm.wait_acknowledged(ack, self.peer_address)
                except CommClosedError:
                    self.abort()
                    raise
        finally:
            if ack is not None:  # closed before ``frames`` may go: a late copy is refused
                ack.close()
        return total + len(prelude)

    def closed(self) -> bool:
        return self.stream.closed()

    async def close(self) -> None:
        """Close after pending writes are flushed."""
        stream = self.stream
        if not stream.closed():
            try:
                # Pending writes complete before the close takes effect.
                if stream.writing():
                    await asyncio.wait_for(stream.write(b""), 5)
            except Exception:
                pass
            stream.close()

    def abort(self) -> None:
        """Close at once, dropping anything not yet written."""
        if not self.stream.closed():
            self.stream.close()


def _split(mv: memoryview, lengths: list[int]) -> list[memoryview]:
    frames = []
    offset = 0
    for length in lengths:
        frames.append(mv[offset : offset + length])
        offset += length
    return frames


def _as_bytes_view(frame):
    if isinstance(frame, memoryview) and (frame.ndim != 1 or frame.format != "B"):
        return frame.cast("B")
    if not isinstance(frame, (bytes, bytearray, memoryview)):
        return memoryview(frame).cast("B")
    return frame


_tcp_client: TCPClient | None = None


async def connect(
    address: str,
    timeout: float = 30,
    deserialize: bool = True,
    max_message_size: int | None = None,
    retry_refused: bool = True,
) -> Comm:
    """Open a ``Comm`` to ``address``, retrying refused connections until
    ``timeout`` seconds have passed (at once an error without
    ``retry_refused``: a peer known to have listened there is gone).

    >>> comm = await connect("tcp://127.0.0.1:8786")  # doctest: +SKIP
    """
    if max_message_size is None:
        max_message_size = configured_max_message_size()
    address = normalize_address(address)
    stream = await open_stream(address, timeout, max_message_size, retry_refused)
    sock = stream.socket
    if sock is None:  # accepted, then closed at once (a server shutting down)
        raise CommClosedError(f"connection to {address} was closed while connecting")
    local = sock.getsockname()
    comm = Comm(
        stream,
        f"tcp://{local[0]}:{local[1]}",
        address,
        deserialize=deserialize,
        max_message_size=max_message_size,
    )
    return comm


async def open_stream(
    address: str, timeout: float, max_message_size: int, retry_refused: bool = True
) -> IOStream:
    """A connected plain ``IOStream`` to ``address`` (any scheme: TLS starts
    on top of it), retrying refused connections as ``connect`` says."""
    global _tcp_client
    host, port = get_address_host_port(address)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    delay = 0.01
    if _tcp_client is None:
        _tcp_client = TCPClient()
    while True:
        remaining = deadline - loop.time()
        try:
            stream = await asyncio.wait_for(
                _tcp_client.connect(
                    host, port, max_buffer_size=_tornado_buffer_limit(max_message_size)
                ),
                max(remaining, 0.001),
            )
            break
        except (StreamClosedError, OSError) as e:
            _raise_if_cancelled()
            if not retry_refused:
                raise OSError(f"could not connect to {address}: {e}") from e
            if loop.time() + delay >= deadline:
                raise OSError(
                    f"Timed out trying to connect to {address} after {timeout} s: {e}"
                ) from e
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)
        except asyncio.TimeoutError:
            raise OSError(
                f"Timed out trying to connect to {address} after {timeout} s"
            ) from None
    return stream


def _raise_if_cancelled() -> None:
    """Re-raise a cancellation of the current task that ``asyncio.wait_for``
    lost: before Python 3.12 a cancel arriving just as the inner connect
    fails surfaces as the connect's error, and a retry loop would then
    outlive the task that was told to stop (a worker ignoring Ctrl-C while
    it waits for its scheduler)."""
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)  # Python 3.11+
    if cancelling is not None and cancelling():
        raise asyncio.CancelledError()


#: What a connection over a cap is told before it is closed: a ServerHello
#: with status BUSY, which a client with a secret reads in its handshake and
#: a client without one recognises in place of its first reply.
_BUSY_HELLO = pack_server_hello(Status.BUSY, Mode.NONE, nonce=bytes(32))


class Listener(TCPServer):
    """Accepts connections and hands each new ``Comm`` to ``handler``.

    ``max_message_size`` defaults to ``distributed.comm.max-message-size``.
    ``auth`` (an ``AuthConfig``) runs the authentication handshake
    (``distributed.comm.auth_io``) before ``handler`` sees a connection.
    ``limits`` caps open connections and pending handshakes (by default from
    ``distributed.comm.*``, see ``distributed.comm.limits``); a connection
    over a cap is told BUSY and closed.
    ``async with listen(...) as listener:`` stops it on exit.
    """

    scheme = "tcp"

    def __init__(
        self,
        handler: Callable[[Comm], Awaitable[None]],
        deserialize: bool = True,
        max_message_size: int | None = None,
        auth=None,
        limits: Limits | None = None,
    ):
        if max_message_size is None:
            max_message_size = configured_max_message_size()
        super().__init__(max_buffer_size=_tornado_buffer_limit(max_message_size))
        self.handler = handler
        self.deserialize = deserialize
        self.max_message_size = max_message_size
        self.auth = auth
        self.admission = Admission(limits)
        self._handshaking: set[socket.socket] = set()  # accepted, not yet handed over
        self.handshake_timeout = config.get_timedelta("distributed.comm.timeouts.handshake")
        configured_max_frames()  # a bad setting fails here, not at the first connection
        self.address: str | None = None

    def start_listening(self, host: str, port: int) -> str:
        sockets = bind_sockets(
            port,
            address=host,
            family=socket.AF_INET if host and ":" not in host else socket.AF_UNSPEC,
            backlog=config.get("distributed.comm.socket-backlog"),
        )
        self.add_sockets(sockets)
        bound_host, bound_port = sockets[0].getsockname()[:2]
        self.address = f"{self.scheme}://{bound_host}:{bound_port}"
        return self.address

    @property
    def contact_address(self) -> str | None:
        """The address peers connect to (the bound one)."""
        return self.address

    async def __aenter__(self) -> Listener:
        return self

    async def __aexit__(self, *exc) -> None:
        self.stop()

    async def handle_stream(self, stream: IOStream, address) -> None:
        host = address[0]
        peer = f"{self.scheme}://{host}:{address[1]}"
        if not self.admission.open(host):
            warn_refused(self.address or "", peer,
                         "busy: too many connections (distributed.comm.max-connections)", "busy")
            await self._refuse_busy(stream)
            return
        sock = stream.socket
        self._handshaking.add(sock)
        try:
            try:
                comm = await self._handshake(stream, peer, host)
            finally:
                self._handshaking.discard(sock)
            if comm is not None:
                comm.accepted = True
                await self._serve(comm)
        finally:
            self.admission.close(host)

    async def _handshake(self, stream: IOStream, peer: str, host: str) -> Comm | None:
        """The new connection's ``Comm`` once it passed authentication (None:
        it was refused and closed)."""
        comm = self._comm(stream, peer)
        auth = self.auth
        if auth is None:
            return comm
        if auth.secret is None:  # only a peek for a client's hello: nothing pending
            ok = await authenticate_server(comm, auth, self.address or "", self.handshake_timeout)
            return comm if ok else None
        if not self.admission.begin_handshake(host):
            warn_refused(self.address or "", peer, "busy: too many pending handshakes "
                         "(distributed.comm.max-pending-handshakes)", "busy")
            await self._refuse_busy(stream)
            return None
        try:
            ok = await authenticate_server(comm, auth, self.address or "", self.handshake_timeout)
        finally:
            self.admission.end_handshake(host)
        return comm if ok else None

    def _comm(self, stream: IOStream, peer: str) -> Comm:
        return Comm(stream, self.address or "", peer, deserialize=self.deserialize,
                    max_message_size=self.max_message_size)

    async def _refuse_busy(self, stream: IOStream) -> None:
        await refuse(stream, _BUSY_HELLO)

    async def _serve(self, comm: Comm) -> None:
        try:
            await self.handler(comm)
        except Exception:
            # A failing handler must not leave its peer hanging on an open,
            # unserved connection.
            logger.exception("error handling connection from %s", comm.peer_address)
            comm.abort()

    def stop(self) -> None:
        """Stop accepting, and end the connections still in their TLS or
        authentication handshake (no server owns them yet, so nothing else
        would close them before their deadline)."""
        super().stop()
        for sock in list(self._handshaking):
            try:  # wakes the handshake's pending read, which then closes the stream
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def listen(
    address: str,
    handler: Callable[[Comm], Awaitable[None]],
    deserialize: bool = True,
    max_message_size: int | None = None,
    auth=None,
    limits: Limits | None = None,
) -> Listener:
    """Start listening on ``address`` (port 0 picks a free port).

    The returned listener's ``.address`` is the address actually bound.
    ``auth`` and ``limits`` are those of ``Listener``.
    """
    host, port = get_address_host_port(normalize_address(address))
    listener = Listener(handler, deserialize=deserialize, max_message_size=max_message_size,
                        auth=auth, limits=limits)
    listener.start_listening(host, port)
    return listener
