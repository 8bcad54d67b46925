"""Shared-secret authentication: the connection handshake.

Each side is a small state machine fed the exact bytes it received and
returning the bytes to send (the h11 style, no I/O, tested on its own).
``distributed.comm.auth_io`` runs them on a new connection before any msgpack
or pickle byte is decoded, and ``distributed.comm.auth_secret`` finds,
checks and generates the secret.

Theory of operation
-------------------
All messages have fixed sizes, so a reader never trusts a length from the
peer::

    C -> S  ClientHello  40 B  b"DSK\\0" | u8 version=1 | u8 flags (bit 0: HAS_SECRET)
                               | u16 0 | client_nonce[32]
    S -> C  ServerHello  72 B  b"DSK\\0" | u8 version | u8 status | u8 mode
                               | u8 0 | server_nonce[32] | server_proof[32]
    C -> S  ClientProof  32 B  only when mode is HMAC and status is OK
    S -> C  Verdict       1 B  only when mode is HMAC: OK or AUTH_FAILED

With ``T = ClientHello || ServerHello[:40]`` and ``K`` the secret (UTF-8)::

    server_proof = HMAC-SHA256(K, b"dask-distributed auth v1 server" || T)
    client_proof = HMAC-SHA256(K, b"dask-distributed auth v1 client" || T || server_proof)

- The secret never crosses the wire, only HMACs of it.
- Both sides contribute a fresh 32-byte nonce, so a recorded proof is
  worthless on a new connection (no replay).
- The two labels differ, so a proof cannot be reflected back.
- The server proves first: a client (a worker!) never sends its proof to,
  nor accepts work from, a server that does not know the secret.
- Proofs are compared with ``hmac.compare_digest``.

Compared with CPython's ``multiprocessing.connection`` challenge (HMAC-MD5
before 3.12, ``==``): SHA-256, constant-time compare, and mutual by design.
On ``tcp://`` an on-path attacker can still take over a session after it is
authenticated; use ``tls://`` on untrusted networks.

Everything here is thread-safe (no shared state).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import secrets
import struct
from dataclasses import dataclass

# Defined with the comm, which raises it too (a refusal met on a first read).
from distributed.comm.errors import AuthenticationError, ServerBusyError
from distributed.protocol import ProtocolError

__all__ = [
    "MAGIC",
    "VERSION",
    "CLIENT_HELLO_SIZE",
    "SERVER_HELLO_SIZE",
    "PROOF_SIZE",
    "Status",
    "Mode",
    "ClientHello",
    "ServerHello",
    "AuthenticationError",
    "parse_client_hello",
    "parse_server_hello",
    "pack_client_hello",
    "pack_server_hello",
    "server_proof",
    "client_proof",
    "ClientHandshake",
    "ServerHandshake",
]

MAGIC = b"DSK\x00"
VERSION = 1
NONCE_SIZE = 32
PROOF_SIZE = 32
CLIENT_HELLO_SIZE = 40
SERVER_HELLO_SIZE = 72
_HAS_SECRET = 0x01
_CLIENT_HELLO = struct.Struct("!4sBBH32s")
_SERVER_HELLO = struct.Struct("!4sBBBB32s32s")
_SERVER_LABEL = b"dask-distributed auth v1 server"
_CLIENT_LABEL = b"dask-distributed auth v1 client"
_NO_PROOF = bytes(PROOF_SIZE)


class Status(enum.IntEnum):
    """The server's answer in ServerHello (and OK/AUTH_FAILED in the Verdict)."""

    OK = 0
    AUTH_REQUIRED = 1  # the client has no secret
    AUTH_FAILED = 2
    TLS_REQUIRED = 3
    BAD_VERSION = 4
    BUSY = 5  # retryable: too many connections or pending handshakes


class Mode(enum.IntEnum):
    """Whether the server authenticates this connection."""

    NONE = 0
    HMAC_SHA256 = 1


@dataclass(frozen=True, slots=True)
class ClientHello:
    version: int
    has_secret: bool
    nonce: bytes


@dataclass(frozen=True, slots=True)
class ServerHello:
    version: int
    status: Status
    mode: Mode
    nonce: bytes
    proof: bytes


def _secret_bytes(secret: str | bytes | None) -> bytes | None:
    if secret is None:
        return None
    if isinstance(secret, str):
        secret = secret.encode()
    if not isinstance(secret, bytes) or not secret:
        raise TypeError("the authentication secret must be a non-empty str or bytes")
    return secret


def pack_client_hello(has_secret: bool, nonce: bytes | None = None) -> bytes:
    """The 40-byte ClientHello.

    >>> len(pack_client_hello(True))
    40
    """
    nonce = secrets.token_bytes(NONCE_SIZE) if nonce is None else nonce
    if len(nonce) != NONCE_SIZE:
        raise ValueError(f"a nonce has {NONCE_SIZE} bytes, not {len(nonce)}")
    return _CLIENT_HELLO.pack(MAGIC, VERSION, _HAS_SECRET if has_secret else 0, 0, nonce)


def parse_client_hello(data: bytes) -> ClientHello:
    """Parse a ClientHello; anything else raises ``ProtocolError``.

    >>> parse_client_hello(pack_client_hello(False, bytes(32))).has_secret
    False
    >>> parse_client_hello(b"GET / HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n1234567890")
    Traceback (most recent call last):
    ...
    distributed.protocol.frames.ProtocolError: not a dask peer: the connection did not start with b'DSK\\x00'
    """
    data = bytes(data)
    # The magic first: an HTTP request or a TLS record is refused on its
    # first 4 bytes, whatever its length.
    if not MAGIC.startswith(data[:4]) or (len(data) >= 4 and data[:4] != MAGIC):
        raise ProtocolError(f"not a dask peer: the connection did not start with {MAGIC!r}")
    if len(data) != CLIENT_HELLO_SIZE:
        raise ProtocolError(f"a ClientHello has {CLIENT_HELLO_SIZE} bytes, not {len(data)}")
    magic, version, flags, reserved, nonce = _CLIENT_HELLO.unpack(data)
    if flags & ~_HAS_SECRET or reserved:
        raise ProtocolError("malformed ClientHello: unknown flags or non-zero reserved bytes")
    return ClientHello(version, bool(flags & _HAS_SECRET), nonce)


def pack_server_hello(status: Status, mode: Mode, nonce: bytes | None = None,
                      proof: bytes = _NO_PROOF) -> bytes:
    """The 72-byte ServerHello (``proof`` is all zeros unless mode is HMAC).

    >>> len(pack_server_hello(Status.BUSY, Mode.NONE))
    72
    """
    nonce = secrets.token_bytes(NONCE_SIZE) if nonce is None else nonce
    if len(nonce) != NONCE_SIZE or len(proof) != PROOF_SIZE:
        raise ValueError("nonce and proof have 32 bytes each")
    return _SERVER_HELLO.pack(MAGIC, VERSION, Status(status), Mode(mode), 0, nonce, proof)


def parse_server_hello(data: bytes) -> ServerHello:
    """Parse a ServerHello; anything else raises ``ProtocolError``.

    >>> parse_server_hello(pack_server_hello(Status.OK, Mode.NONE)).status
    <Status.OK: 0>
    """
    data = bytes(data)
    if not MAGIC.startswith(data[:4]) or (len(data) >= 4 and data[:4] != MAGIC):
        raise ProtocolError(f"not a dask server: its answer did not start with {MAGIC!r}")
    if len(data) != SERVER_HELLO_SIZE:
        raise ProtocolError(f"a ServerHello has {SERVER_HELLO_SIZE} bytes, not {len(data)}")
    magic, version, status, mode, reserved, nonce, proof = _SERVER_HELLO.unpack(data)
    try:
        status, mode = Status(status), Mode(mode)
    except ValueError:
        raise ProtocolError(f"malformed ServerHello: status {status}, mode {mode}") from None
    if reserved:
        raise ProtocolError("malformed ServerHello: non-zero reserved byte")
    return ServerHello(version, status, mode, nonce, proof)


def server_proof(secret: str | bytes, client_hello: bytes, server_hello_prefix: bytes) -> bytes:
    """HMAC-SHA256 proving the server knows ``secret``, bound to both nonces.

    ``server_hello_prefix`` is the first 40 bytes of the ServerHello.
    """
    transcript = bytes(client_hello) + bytes(server_hello_prefix[:40])
    return hmac.new(_secret_bytes(secret), _SERVER_LABEL + transcript, hashlib.sha256).digest()


def client_proof(secret: str | bytes, client_hello: bytes, server_hello: bytes) -> bytes:
    """HMAC-SHA256 proving the client knows ``secret``, bound to the whole exchange."""
    server_hello = bytes(server_hello)
    transcript = bytes(client_hello) + server_hello[:40]
    return hmac.new(_secret_bytes(secret), _CLIENT_LABEL + transcript + server_hello[40:72],
                    hashlib.sha256).digest()


class ClientHandshake:
    """The connecting side.

    >>> server = ServerHandshake("s3cret")
    >>> client = ClientHandshake("s3cret")
    >>> reply = server.receive_client_hello(client.hello())
    >>> proof = client.receive_server_hello(reply)
    >>> verdict = server.receive_client_proof(proof)
    >>> client.receive_verdict(verdict); client.authenticated and server.authenticated
    True
    """

    def __init__(self, secret: str | bytes | None = None, required: bool = False,
                 peer: str = "the server"):
        self._secret = _secret_bytes(secret)
        self.required = required  # refuse a server that does not authenticate
        self.peer = peer
        self.authenticated = False
        self.done = False
        self._hello: bytes | None = None
        self._expect_verdict = False

    def __repr__(self) -> str:  # never the secret
        return (f"<ClientHandshake to {self.peer}, secret={'set' if self._secret else 'none'}, "
                f"authenticated={self.authenticated}>")

    def hello(self, nonce: bytes | None = None) -> bytes:
        """The ClientHello to send first."""
        if self._hello is not None:
            raise RuntimeError("hello() was already sent on this connection")
        self._hello = pack_client_hello(self._secret is not None, nonce)
        return self._hello

    def receive_server_hello(self, data: bytes) -> bytes | None:
        """Check the ServerHello; return the ClientProof to send (or None
        when the server does not authenticate).  Raises
        ``AuthenticationError`` (``status`` says why) or ``ProtocolError``."""
        if self._hello is None or self.done or self._expect_verdict:
            raise RuntimeError("receive_server_hello() out of order")
        hello = parse_server_hello(data)
        if hello.status == Status.BUSY:
            self.done = True
            raise ServerBusyError(self._refusal(Status.BUSY))
        if hello.status != Status.OK:
            self.done = True
            raise AuthenticationError(self._refusal(hello.status), hello.status)
        if hello.mode == Mode.NONE:
            self.done = True
            if self.required:
                raise AuthenticationError(
                    f"{self.peer} does not authenticate, and authentication is required here "
                    "(distributed.comm.auth.mode: required)", Status.AUTH_FAILED)
            return None
        if self._secret is None:  # a server in HMAC mode always says AUTH_REQUIRED then
            self.done = True
            raise AuthenticationError(self._refusal(Status.AUTH_REQUIRED), Status.AUTH_REQUIRED)
        expected = server_proof(self._secret, self._hello, data[:40])
        if not hmac.compare_digest(expected, hello.proof):
            # An impostor, or a different secret: send nothing more.
            self.done = True
            raise AuthenticationError(
                f"{self.peer} could not prove it knows the cluster secret (a different "
                "secret, or not our server); nothing was sent to it", Status.AUTH_FAILED)
        self._expect_verdict = True
        return client_proof(self._secret, self._hello, data)

    def receive_verdict(self, data: bytes) -> None:
        """The server's one-byte verdict on our proof."""
        if not self._expect_verdict or self.done:
            raise RuntimeError("receive_verdict() out of order")
        self.done = True
        if len(data) != 1:
            raise ProtocolError(f"a Verdict has 1 byte, not {len(data)}")
        if data[0] != Status.OK:
            raise AuthenticationError(self._refusal(Status.AUTH_FAILED), Status.AUTH_FAILED)
        self.authenticated = True

    def _refusal(self, status: Status) -> str:
        if status == Status.AUTH_REQUIRED:
            return (f"{self.peer} requires authentication but no secret is configured; set "
                    "DASK_DISTRIBUTED__COMM__AUTH__SECRET, distributed.comm.auth.secret-file, "
                    "--auth-secret-file, or use --scheduler-file")
        if status == Status.AUTH_FAILED:
            return f"authentication failed: {self.peer} did not accept our secret"
        if status == Status.TLS_REQUIRED:
            return f"{self.peer} only accepts TLS: use a tls:// address and certificates"
        if status == Status.BAD_VERSION:
            return f"{self.peer} speaks another version of the dask handshake"
        return (f"{self.peer} is busy (too many connections or pending handshakes: "
                "distributed.comm.max-connections, max-pending-handshakes); try again")


class ServerHandshake:
    """The accepting side; ``secret=None`` means no authentication (mode NONE).

    A peer with no secret, or a bad proof, gets its status and nothing else:
    ``receive_*`` return the bytes to send, and ``failed`` says to close.
    """

    def __init__(self, secret: str | bytes | None = None, busy: bool = False):
        self._secret = _secret_bytes(secret)
        self.busy = busy
        self.authenticated = False
        self.failed: Status | None = None
        self.done = False
        self._client_hello: bytes | None = None
        self._server_hello: bytes | None = None

    def __repr__(self) -> str:  # never the secret
        return (f"<ServerHandshake secret={'set' if self._secret else 'none'}, "
                f"authenticated={self.authenticated}, failed={self.failed}>")

    @property
    def expects_proof(self) -> bool:
        """True when a ClientProof must be read next."""
        return self._server_hello is not None and not self.done

    def receive_client_hello(self, data: bytes) -> bytes:
        """Parse the ClientHello (``ProtocolError`` if it is not one) and
        return the ServerHello to send."""
        if self._client_hello is not None:
            raise RuntimeError("receive_client_hello() out of order")
        hello = parse_client_hello(data)
        self._client_hello = bytes(data)
        mode = Mode.HMAC_SHA256 if self._secret is not None else Mode.NONE
        status = Status.OK
        if hello.version != VERSION:
            status = Status.BAD_VERSION
        elif self.busy:
            status = Status.BUSY
        elif mode == Mode.HMAC_SHA256 and not hello.has_secret:
            status = Status.AUTH_REQUIRED
        if status != Status.OK or mode == Mode.NONE:
            self.done = True
            self.failed = None if status == Status.OK else status
            return pack_server_hello(status, mode)
        nonce = secrets.token_bytes(NONCE_SIZE)
        prefix = _SERVER_HELLO.pack(MAGIC, VERSION, status, mode, 0, nonce, _NO_PROOF)[:40]
        proof = server_proof(self._secret, self._client_hello, prefix)
        self._server_hello = pack_server_hello(status, mode, nonce, proof)
        return self._server_hello

    def receive_client_proof(self, data: bytes) -> bytes:
        """Check the client's proof; return the one-byte Verdict to send."""
        if not self.expects_proof:
            raise RuntimeError("receive_client_proof() out of order")
        self.done = True
        expected = client_proof(self._secret, self._client_hello, self._server_hello)
        if len(data) == PROOF_SIZE and hmac.compare_digest(expected, bytes(data)):
            self.authenticated = True
            return bytes([Status.OK])
        self.failed = Status.AUTH_FAILED
        return bytes([Status.AUTH_FAILED])
