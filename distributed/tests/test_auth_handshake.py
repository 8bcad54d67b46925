"""The shared-secret handshake as pure functions (distributed/comm/auth.py):
the exchange, refusals, replay, reflection and impostors, and the parsers
under arbitrary bytes (hypothesis).  No sockets: the wiring comes later."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distributed.comm import FatalCommClosedError
from distributed.comm.auth import (
    CLIENT_HELLO_SIZE,
    MAGIC,
    SERVER_HELLO_SIZE,
    AuthenticationError,
    ClientHandshake,
    Mode,
    ServerHandshake,
    Status,
    pack_client_hello,
    pack_server_hello,
    parse_client_hello,
    parse_server_hello,
)
from distributed.comm.errors import ServerBusyError
from distributed.protocol import ProtocolError

SECRET = "a" * 64


def _run(client: ClientHandshake, server: ServerHandshake) -> list[bytes]:
    """Run both sides; returns everything that crossed the wire."""
    wire = [client.hello()]
    wire.append(server.receive_client_hello(wire[0]))
    proof = client.receive_server_hello(wire[1])
    if proof is not None:
        wire.append(proof)
        wire.append(server.receive_client_proof(proof))
        client.receive_verdict(wire[3])
    return wire


def test_same_secret_authenticates_both_ways():
    client, server = ClientHandshake(SECRET), ServerHandshake(SECRET)
    wire = _run(client, server)
    assert client.authenticated and server.authenticated
    assert [len(w) for w in wire] == [40, 72, 32, 1]
    assert wire[0].startswith(MAGIC) and wire[1].startswith(MAGIC)


def test_secret_never_on_the_wire_nor_in_reprs():
    client, server = ClientHandshake(SECRET), ServerHandshake(SECRET)
    wire = b"".join(_run(client, server))
    for form in (SECRET.encode(), SECRET.encode().hex().encode(), b"a" * 16):
        assert form not in wire
    assert SECRET not in repr(client) and SECRET not in repr(server)


def test_bytes_secret_equals_str_secret():
    client, server = ClientHandshake(SECRET.encode()), ServerHandshake(SECRET)
    _run(client, server)
    assert client.authenticated and server.authenticated


def test_no_auth_on_either_side():
    client, server = ClientHandshake(), ServerHandshake()
    wire = _run(client, server)
    assert len(wire) == 2 and not server.failed and server.done and client.done
    assert not client.authenticated  # nothing was authenticated, and nothing failed


def test_client_with_secret_meets_server_without():
    client = ClientHandshake(SECRET)
    assert _run(client, ServerHandshake()) and client.done
    strict = ClientHandshake(SECRET, required=True)
    with pytest.raises(AuthenticationError, match="required"):
        _run(strict, ServerHandshake())


def test_no_secret_is_refused_with_the_fix_named():
    client, server = ClientHandshake(peer="scheduler at tcp://h:8786"), ServerHandshake(SECRET)
    hello = server.receive_client_hello(client.hello())
    assert server.failed == Status.AUTH_REQUIRED and server.done
    with pytest.raises(AuthenticationError) as info:
        client.receive_server_hello(hello)
    assert info.value.status == Status.AUTH_REQUIRED
    assert "DASK_DISTRIBUTED__COMM__AUTH__SECRET" in str(info.value)
    assert "--auth-secret-file" in str(info.value)
    assert isinstance(info.value, FatalCommClosedError)  # connect does not retry it


def test_impostor_server_gets_no_proof():
    """A server with another secret cannot prove itself: the client stops
    before sending anything derived from its secret."""
    client, impostor = ClientHandshake(SECRET), ServerHandshake("b" * 64)
    hello = impostor.receive_client_hello(client.hello())
    with pytest.raises(AuthenticationError, match="could not prove"):
        client.receive_server_hello(hello)
    assert not impostor.authenticated


def test_wrong_client_proof_fails():
    client, server = ClientHandshake(SECRET), ServerHandshake(SECRET)
    reply = server.receive_client_hello(client.hello())
    client.receive_server_hello(reply)
    verdict = server.receive_client_proof(b"\x00" * 32)
    assert verdict == bytes([Status.AUTH_FAILED]) and server.failed == Status.AUTH_FAILED
    with pytest.raises(AuthenticationError, match="authentication failed"):
        client.receive_verdict(verdict)


def test_replayed_proof_fails_on_a_new_connection():
    client, server = ClientHandshake(SECRET), ServerHandshake(SECRET)
    recorded = _run(client, server)
    # An eavesdropper replays the recorded ClientHello and proof.
    server2 = ServerHandshake(SECRET)
    server2.receive_client_hello(recorded[0])  # a fresh server nonce
    assert server2.receive_client_proof(recorded[2]) == bytes([Status.AUTH_FAILED])
    assert not server2.authenticated


def test_reflected_server_proof_is_not_a_client_proof():
    client, server = ClientHandshake(SECRET), ServerHandshake(SECRET)
    reply = server.receive_client_hello(client.hello())
    server_proof = reply[40:72]
    assert server.receive_client_proof(server_proof) == bytes([Status.AUTH_FAILED])


def test_busy_and_bad_version():
    busy = ServerHandshake(SECRET, busy=True)
    reply = busy.receive_client_hello(pack_client_hello(True))
    client = ClientHandshake(SECRET)
    client.hello()
    with pytest.raises(ServerBusyError, match="busy") as info:
        client.receive_server_hello(reply)
    assert not isinstance(info.value, AuthenticationError)  # retryable, not fatal
    old = bytearray(pack_client_hello(True))
    old[4] = 9
    server = ServerHandshake(SECRET)
    reply = server.receive_client_hello(bytes(old))
    assert parse_server_hello(reply).status == Status.BAD_VERSION


def test_out_of_order_calls_raise():
    client = ClientHandshake(SECRET)
    with pytest.raises(RuntimeError):
        client.receive_server_hello(pack_server_hello(Status.OK, Mode.NONE))
    client.hello()
    with pytest.raises(RuntimeError):
        client.hello()
    with pytest.raises(RuntimeError):
        ServerHandshake(SECRET).receive_client_proof(b"x" * 32)


def test_http_request_is_refused_on_its_first_bytes():
    with pytest.raises(ProtocolError, match="not a dask peer"):
        parse_client_hello(b"GET ")
    with pytest.raises(ProtocolError, match="not a dask peer"):
        parse_client_hello(b"\x16\x03\x01" + bytes(37))  # a TLS ClientHello


def test_bad_secret_types():
    with pytest.raises(TypeError):
        ClientHandshake(secret="")
    with pytest.raises(TypeError):
        ServerHandshake(secret=123)


@settings(deadline=None)  # examples: the hypothesis profile (conftest.py)
@given(st.binary(max_size=200))
def test_parse_client_hello_any_bytes(data):
    try:
        hello = parse_client_hello(data)
    except ProtocolError:
        return
    assert len(data) == CLIENT_HELLO_SIZE and data.startswith(MAGIC)
    assert len(hello.nonce) == 32


@settings(deadline=None)  # examples: the hypothesis profile (conftest.py)
@given(st.binary(max_size=200))
def test_parse_server_hello_any_bytes(data):
    try:
        hello = parse_server_hello(data)
    except ProtocolError:
        return
    assert len(data) == SERVER_HELLO_SIZE and data.startswith(MAGIC)
    assert isinstance(hello.status, Status) and isinstance(hello.mode, Mode)


@settings(deadline=None)  # examples: the hypothesis profile (conftest.py)
@given(st.binary(min_size=36, max_size=36), st.integers(0, 255), st.integers(0, 255))
def test_server_handshake_any_client_hello(tail, version, flags):
    data = MAGIC + bytes([version, flags]) + tail[:34]
    server = ServerHandshake(SECRET)
    try:
        reply = server.receive_client_hello(data)
    except ProtocolError:
        return
    assert parse_server_hello(reply).status in set(Status)


@settings(deadline=None)  # examples: the hypothesis profile (conftest.py)
@given(st.binary(max_size=64))
def test_server_handshake_any_proof(proof):
    client, server = ClientHandshake(SECRET), ServerHandshake(SECRET)
    client.receive_server_hello(server.receive_client_hello(client.hello()))
    assert server.receive_client_proof(proof) == bytes([Status.AUTH_FAILED])
    assert not server.authenticated
