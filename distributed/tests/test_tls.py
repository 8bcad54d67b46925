"""The tls:// transport: round trips, certificates refused both ways, scheme
mismatch both ways, the handshake deadline, and a listener that survives."""

from __future__ import annotations

import asyncio
import socket
import ssl

import pytest

from distributed import config
from distributed.comm import CommClosedError, FatalCommClosedError, connect, listen
from distributed.protocol import ProtocolError
from distributed.security import Security
from distributed.utils_test import (
    captured_logger,
    gen_test,
    get_cert,
    get_client_ssl_context,
    get_server_ssl_context,
    tls_security,
)

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


async def _echo(comm):
    try:
        while True:
            msg = await comm.read()
            await comm.write(msg)
    except (CommClosedError, ProtocolError):
        pass


def _other_ca_context(purpose) -> ssl.SSLContext:
    """Trusts the cluster CA but shows a self-signed certificate it did not sign."""
    ctx = ssl.create_default_context(purpose, cafile=get_cert("tls-ca-cert.pem"))
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_cert_chain(get_cert("tls-self-signed-cert.pem"), get_cert("tls-self-signed-key.pem"))
    return ctx


@gen_test()
async def test_tls_roundtrip_and_addresses():
    sec = tls_security()
    async with listen("tls://127.0.0.1:0", _echo, **sec.get_listen_args("scheduler")) as listener:
        assert listener.address.startswith("tls://127.0.0.1:")
        assert listener.contact_address == listener.address
        comm = await connect(listener.address, **sec.get_connection_args("worker"))
        assert comm.peer_address == listener.address
        assert comm.local_address.startswith("tls://127.0.0.1:")
        for msg in ["hello", {"op": "x", "data": b"1" * 100}, b"z" * 3_000_000]:
            await comm.write(msg)
            assert await comm.read() == msg
        info = comm.extra_info
        assert info["peercert"]["subject"] == ((("commonName", "localhost"),),)
        assert info["cipher"][1] in ("TLSv1.2", "TLSv1.3")
        await comm.close()


@gen_test()
async def test_tls_with_plain_ssl_contexts():
    async with listen("tls://127.0.0.1:0", _echo, ssl_context=get_server_ssl_context()) as listener:
        comm = await connect(listener.address, ssl_context=get_client_ssl_context())
        await comm.write(1)
        assert await comm.read() == 1
        comm.abort()


@gen_test()
async def test_tls_needs_an_ssl_context():
    sec = tls_security()
    async with listen("tls://127.0.0.1:0", _echo, **sec.get_listen_args("scheduler")) as listener:
        with pytest.raises(TypeError, match="ssl.SSLContext"):
            await connect(listener.address, **Security().get_connection_args("client"))
    with pytest.raises(TypeError, match="ssl.SSLContext"):
        listen("tls://127.0.0.1:0", _echo)


@gen_test()
async def test_tls_forced_cipher():
    keycert = get_cert("tls-key-cert.pem")
    forced = Security(tls_ca_file=get_cert("tls-ca-cert.pem"), tls_worker_cert=keycert,
                      tls_worker_key=keycert, tls_ciphers="ECDHE-RSA-AES128-GCM-SHA256",
                      tls_max_version=ssl.TLSVersion.TLSv1_2)
    sec = tls_security()
    async with listen("tls://127.0.0.1:0", _echo, **sec.get_listen_args("scheduler")) as listener:
        comm = await connect(listener.address, **forced.get_connection_args("worker"))
        assert comm.extra_info["cipher"][0] == "ECDHE-RSA-AES128-GCM-SHA256"
        comm.abort()


@gen_test()
async def test_tls_reject_client_certificate_and_listener_survives():
    sec = tls_security()
    async with listen("tls://127.0.0.1:0", _echo, **sec.get_listen_args("scheduler")) as listener:
        with captured_logger("distributed.comm.tls") as log:
            with pytest.raises(FatalCommClosedError, match="refused our certificate") as info:
                await connect(listener.address, timeout=5,
                              ssl_context=_other_ca_context(ssl.Purpose.SERVER_AUTH))
            assert isinstance(info.value, OSError)
            await _wait_for(lambda: "TLS handshake failed" in log.getvalue(), "the server's warning")
        comm = await connect(listener.address, **sec.get_connection_args("client"))
        await comm.write("still serving")
        assert await comm.read() == "still serving"
        comm.abort()


@gen_test()
async def test_tls_reject_server_certificate():
    sec = tls_security()
    async with listen("tls://127.0.0.1:0", _echo,
                      ssl_context=_other_ca_context(ssl.Purpose.CLIENT_AUTH)) as listener:
        with pytest.raises(FatalCommClosedError, match="certificate of the server") as info:
            await connect(listener.address, timeout=5, **sec.get_connection_args("client"))
        assert isinstance(info.value, OSError)


@gen_test()
async def test_plaintext_client_on_tls_port_fails_fast():
    sec = tls_security()
    async with listen("tls://127.0.0.1:0", _echo, **sec.get_listen_args("scheduler")) as listener:
        plain = listener.address.replace("tls://", "tcp://")
        comm = await connect(plain)
        loop = asyncio.get_running_loop()
        start = loop.time()
        await comm.write({"op": "identity"})
        with pytest.raises(FatalCommClosedError, match="only accepts TLS") as info:
            await comm.read()
        assert "tls://" in str(info.value)
        assert loop.time() - start < 5  # not a connect timeout
        # and the listener still serves TLS
        comm = await connect(listener.address, **sec.get_connection_args("client"))
        await comm.write(2)
        assert await comm.read() == 2
        comm.abort()


@gen_test()
async def test_tls_client_on_plaintext_port_fails_fast():
    sec = tls_security()
    async with listen("tcp://127.0.0.1:0", _echo) as listener:
        tls = listener.address.replace("tcp://", "tls://")
        with captured_logger("distributed.core") as log, captured_logger("distributed.comm.tcp"):
            with pytest.raises(FatalCommClosedError, match="does not speak TLS"):
                await connect(tls, timeout=20, **sec.get_connection_args("client"))
        del log
        comm = await connect(listener.address)
        await comm.write(3)
        assert await comm.read() == 3
        comm.abort()


@gen_test()
async def test_plaintext_server_names_a_tls_peer():
    """Our tcp:// listener reading a TLS ClientHello says what happened."""
    errors = []

    async def handler(comm):
        try:
            await comm.read()
        except ProtocolError as e:
            errors.append(str(e))

    sec = tls_security()
    async with listen("tcp://127.0.0.1:0", handler) as listener:
        with pytest.raises(FatalCommClosedError):
            await connect(listener.address.replace("tcp://", "tls://"), timeout=20,
                          **sec.get_connection_args("client"))
        await _wait_for(lambda: errors, "the server's read error")
    assert "speaks TLS" in errors[0]


@gen_test()
async def test_tls_handshake_deadline_with_silent_peer():
    sec = tls_security()
    with config.set({"distributed.comm.timeouts.handshake": "0.5s"}):
        listener = listen("tls://127.0.0.1:0", _echo, **sec.get_listen_args("scheduler"))
    async with listener:
        host, port = listener.address[len("tls://"):].rsplit(":", 1)
        loop = asyncio.get_running_loop()
        with captured_logger("distributed.comm.tls") as log:
            silent = socket.create_connection((host, int(port)))
            silent.setblocking(False)
            # The listener closes the silent socket at its deadline: we read EOF.
            data = await asyncio.wait_for(loop.sock_recv(silent, 10), 10)
            assert data == b""
            silent.close()
            assert "timed out" in log.getvalue()
            # A peer that starts TLS and stalls mid-handshake is closed too.
            stalled = socket.create_connection((host, int(port)))
            stalled.setblocking(False)
            await loop.sock_sendall(stalled, b"\x16\x03\x01\x00")
            data = await asyncio.wait_for(loop.sock_recv(stalled, 10), 10)
            assert data == b""
            stalled.close()
        comm = await connect(listener.address, **sec.get_connection_args("client"))
        await comm.write(4)
        assert await comm.read() == 4
        comm.abort()


@gen_test()
async def test_require_encryption_refuses_tcp():
    sec = tls_security()
    strict = Security(require_encryption=True)
    async with listen("tcp://127.0.0.1:0", _echo, **sec.get_listen_args("scheduler")) as listener:
        with pytest.raises(RuntimeError, match="encryption required"):
            await connect(listener.address, **strict.get_connection_args("worker"))
    with pytest.raises(RuntimeError, match="encryption required"):
        listen("tcp://127.0.0.1:0", _echo, **strict.get_listen_args("scheduler"))


@gen_test()
async def test_extra_conn_args_cannot_be_honoured():
    with pytest.raises(ValueError, match="extra_conn_args"):
        await connect("tcp://127.0.0.1:1", extra_conn_args={"headers": {}})


@gen_test()
async def test_temporary_credentials_functional():
    pytest.importorskip("cryptography")
    sec = Security.temporary()
    async with listen("tls://127.0.0.1:0", _echo, **sec.get_listen_args("scheduler")) as listener:
        comm = await connect(listener.address, **sec.get_connection_args("worker"))
        await comm.write("hello")
        assert await comm.read() == "hello"
        comm.abort()


async def _wait_for(predicate, what: str, timeout: float = 10) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.01)


@gen_test()
async def test_rpc_tls():
    from distributed.core import Server, rpc

    sec = tls_security()
    server = Server({"ping": lambda comm: "pong"})
    server.set_security(sec, "scheduler")
    await server.listen("tls://127.0.0.1:0")
    try:
        assert server.address.startswith("tls://")
        async with rpc(server.address, connection_args=sec.get_connection_args("client")) as r:
            assert await r.ping() == "pong"
        async with rpc(server.address, timeout=5) as r:  # no certificate: refused, clearly
            with pytest.raises(TypeError, match="ssl.SSLContext"):
                await r.ping()
    finally:
        await server.close_server()


@gen_test()
async def test_connection_pool_tls():
    from distributed.core import ConnectionPool, Server

    sec = tls_security()
    servers = [Server({"ping": lambda comm: "pong"}) for _ in range(3)]
    for server in servers:
        server.set_security(sec, "worker")
        await server.listen("tls://127.0.0.1:0")
    pool = ConnectionPool(limit=2, connection_args=sec.get_connection_args("client"))
    try:
        results = await asyncio.gather(*(pool(s.address).ping() for s in servers for _ in range(3)))
        assert results == ["pong"] * 9
        assert pool.open <= 2
    finally:
        await pool.close()
        for server in servers:
            await server.close_server()


@gen_test()
async def test_tls_comm_closed_both_ways():
    sec = tls_security()
    server_comms = []

    async def keep(comm):
        server_comms.append(comm)

    async with listen("tls://127.0.0.1:0", keep, **sec.get_listen_args("scheduler")) as listener:
        comm = await connect(listener.address, **sec.get_connection_args("client"))
        await _wait_for(lambda: server_comms, "the accepted comm")
        await server_comms[0].close()  # the server closes: the client's read fails cleanly
        with pytest.raises(CommClosedError):
            await comm.read()
        assert comm.closed()
        comm2 = await connect(listener.address, **sec.get_connection_args("client"))
        await _wait_for(lambda: len(server_comms) == 2, "the second accepted comm")
        comm2.abort()  # the client goes away: the server's read fails cleanly
        with pytest.raises(CommClosedError):
            await server_comms[1].read()
        assert "tls://" in repr(server_comms[1])
