"""Connection caps and handshake deadlines (``distributed.comm.limits``):
the figures F15-F19 of the security spec, against real listeners.

Peers that attack come from 127.0.0.2, legitimate ones from 127.0.0.1: both
are loopback, and the per-peer caps tell them apart as they would two hosts.
"""

from __future__ import annotations

import asyncio
import socket
import struct

import psutil
import pytest

from distributed import Client, Scheduler, Worker, config
from distributed.comm import CommClosedError, ServerBusyError, connect, limits, listen
from distributed.comm.auth import MAGIC, Status
from distributed.comm.auth_secret import AuthConfig
from distributed.comm.limits import COUNTERS, Admission, Limits
from distributed.core import rpc
from distributed.security import Security
from distributed.utils_test import captured_logger, gen_test, inc

SECRET = "limits-test-secret-0123456789abcdef0123456789abcdef"
ATTACKER = "127.0.0.2"


# --------------------------------------------------------------- Admission


def test_admission_counts_and_refuses():
    a = Admission(Limits(max_connections=2, max_pending=3, max_pending_per_peer=2))
    assert a.open("h1") and a.open("h2") and not a.open("h3")
    a.close("h1")
    assert a.open("h3")
    assert a.begin_handshake("h1") and a.begin_handshake("h1")
    assert not a.begin_handshake("h1")  # per peer
    assert a.begin_handshake("h2")
    assert not a.begin_handshake("h3")  # in all
    a.end_handshake("h1")
    assert a.begin_handshake("h3") and a.pending == 3
    with pytest.raises(RuntimeError):
        a.end_handshake("nobody")


def test_limits_validate_and_read_config():
    with pytest.raises(ValueError, match="max_connections"):
        Limits(max_connections=0, max_pending=1, max_pending_per_peer=1)
    with config.set({"distributed.comm.max-connections": 7,
                     "distributed.comm.max-pending-handshakes": 5,
                     "distributed.comm.max-pending-handshakes-per-peer": 2}):
        assert Limits.from_config() == Limits(7, 5, 2)
    with config.set({"distributed.comm.max-connections": "lots"}):
        with pytest.raises(ValueError, match="max-connections"):
            Limits.from_config()
    assert Limits.from_config().max_connections > 0  # auto


# --------------------------------------------------------------- helpers


def _open_fds() -> int:
    return psutil.Process().num_fds()


async def _raw(port: int, source: str = "127.0.0.1") -> tuple[asyncio.StreamReader,
                                                               asyncio.StreamWriter]:
    sock = socket.socket()
    sock.bind((source, 0))
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return await asyncio.open_connection(sock=sock)


async def _read_until_closed(reader: asyncio.StreamReader, timeout: float) -> bytes:
    """Everything the server sends before it closes (within ``timeout``)."""
    data = b""
    async with asyncio.timeout(timeout):
        while chunk := await reader.read(4096):
            data += chunk
    return data


async def _echo_listener(**kwargs):
    async def handler(comm):
        try:
            while True:
                await comm.write(await comm.read())
        except Exception:
            comm.abort()

    return listen("tcp://127.0.0.1:0", handler, **kwargs)


def _port(listener) -> int:
    return int(listener.address.rsplit(":", 1)[1])


async def _wait_for(predicate, timeout: float, what: str) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)
    assert predicate(), what


# --------------------------------------------------------------- F16 storm


@gen_test(timeout=60)
async def test_connection_storm_gets_busy_and_leaks_nothing():
    """F16: more connections than the cap; the excess hears BUSY at once,
    the listener keeps serving, and every descriptor comes back."""
    baseline = _open_fds()
    limits = Limits(max_connections=100, max_pending=1024, max_pending_per_peer=256)
    async with await _echo_listener(limits=limits) as listener:
        port = _port(listener)
        storm = await asyncio.gather(*[_raw(port, ATTACKER) for _ in range(400)])
        # Those admitted wait silently; the rest are told BUSY and closed.
        answers = await asyncio.gather(
            *[_read_until_closed(r, 10) for r, _ in storm[300:]]  # the last 100
        )
        assert all(a[:4] == MAGIC and a[5] == Status.BUSY for a in answers)
        assert listener.admission.connections == 100
        for _, w in storm:
            w.close()
        await _wait_for(lambda: listener.admission.connections == 0, 10,
                        "the listener to see every storm socket close")
        comm = await connect(listener.address, timeout=5)  # at once, no retry needed
        await comm.write({"x": 1})
        assert await comm.read() == {"x": 1}
        comm.abort()
    await _wait_for(lambda: _open_fds() <= baseline + 5, 10, "descriptors to be released")


@gen_test()
async def test_client_without_secret_learns_busy_on_its_first_read():
    limits = Limits(max_connections=1, max_pending=8, max_pending_per_peer=8)
    async with await _echo_listener(limits=limits) as listener:
        first = await connect(listener.address)
        await first.write("hold")
        assert await first.read() == "hold"
        second = await connect(listener.address)
        await second.write({"op": "anything"})
        with pytest.raises(ServerBusyError, match="busy"):
            await second.read()
        first.abort()


@gen_test()
async def test_connect_with_a_secret_retries_busy_until_a_slot_frees():
    auth = AuthConfig(SECRET)
    limits = Limits(max_connections=1, max_pending=8, max_pending_per_peer=8)
    async with await _echo_listener(limits=limits, auth=auth) as listener:
        holder = await connect(listener.address, auth=auth)
        busy_before = COUNTERS["busy"]
        waiting = asyncio.ensure_future(connect(listener.address, auth=auth, timeout=20))
        await _wait_for(lambda: COUNTERS["busy"] > busy_before, 10,
                        "the second connect to be told BUSY")
        assert not waiting.done()  # it backs off and tries again
        holder.abort()
        comm = await asyncio.wait_for(waiting, 20)
        await comm.write(b"hi")
        assert await comm.read() == b"hi"
        comm.abort()


@gen_test()
async def test_busy_that_never_ends_fails_at_the_deadline():
    auth = AuthConfig(SECRET)
    limits = Limits(max_connections=1, max_pending=8, max_pending_per_peer=8)
    async with await _echo_listener(limits=limits, auth=auth) as listener:
        holder = await connect(listener.address, auth=auth)
        with pytest.raises(ServerBusyError, match="gave up after"):
            await connect(listener.address, auth=auth, timeout=0.5)
        holder.abort()


# --------------------------------------------------------------- F17 slowloris


@gen_test(timeout=60)
async def test_slowloris_is_cut_at_the_deadline_while_others_connect():
    """F17: 500 sockets send one byte and stall.  Those over the per-peer cap
    hear BUSY at once, the rest are closed at the handshake deadline, and a
    legitimate client connects during the attack."""
    auth = AuthConfig(SECRET)
    with config.set({"distributed.comm.timeouts.handshake": "3s"}):
        listener = await _echo_listener(auth=auth)
    async with listener:
        port = _port(listener)
        attackers = await asyncio.gather(*[_raw(port, ATTACKER) for _ in range(500)])
        for _, w in attackers:
            w.write(MAGIC[:1])
        await _wait_for(lambda: listener.admission.pending == 256, 10,
                        "the per-peer cap to fill")
        closing = [asyncio.ensure_future(_read_until_closed(r, 10)) for r, _ in attackers]
        comm = await connect(listener.address, auth=auth, timeout=5)
        assert not all(c.done() for c in closing)  # connected during the attack
        await comm.write(1)
        assert await comm.read() == 1
        answers = await asyncio.gather(*closing)  # each cut at the deadline, or told BUSY
        assert sum(a[:4] == MAGIC and a[5] == Status.BUSY for a in answers) >= 500 - 256
        assert listener.admission.pending == 0
        for _, w in attackers:
            w.close()
        comm.abort()


# --------------------------------------------------------------- F15, F19


@gen_test()
async def test_huge_length_prefix_closes_only_that_comm():
    """F15: an authenticated peer announcing a 2**62-byte frame loses its
    connection (no allocation); the server carries on."""
    sec = Security(auth_secret=SECRET)
    async with Scheduler(port=0, security=sec, dashboard_address=None) as s:
        comm = await connect(s.address, **sec.get_connection_args("client"))
        await comm.stream.write(struct.pack("<Q", 1) + struct.pack("<Q", 2**62))
        with pytest.raises(CommClosedError):  # the server hangs up on us
            await asyncio.wait_for(comm.read(), 5)
        async with rpc(s.address, connection_args=sec.get_connection_args("client")) as r:
            assert (await r.identity())["type"] == "Scheduler"


@gen_test()
async def test_frame_count_over_max_frames_is_a_protocol_error():
    async with await _echo_listener() as listener:
        with config.set({"distributed.comm.max-frames": 4}):
            comm = await connect(listener.address)
        assert comm.max_frames == 4
        await comm.write({"x": [b"a"] * 3})  # a handful of frames is fine
        assert await comm.read() == {"x": (b"a",) * 3}
        reader, writer = await _raw(_port(listener))
        writer.write(struct.pack("<Q", 10**9))
        # The listener's comm refuses the count before reading lengths.
        assert await _read_until_closed(reader, 5) == b""
        writer.close()
        comm.abort()
    with config.set({"distributed.comm.max-frames": 0}):
        with pytest.raises(ValueError, match="max-frames"):
            async with await _echo_listener():
                pass


@gen_test()
async def test_http_request_on_an_authenticated_port():
    """F19: an HTTP client gets a status byte and a closed socket, and one
    rate-limited WARNING."""
    auth = AuthConfig(SECRET)
    limits._last_warning.clear()  # earlier tests' warnings from 127.0.0.1 would suppress ours
    async with await _echo_listener(auth=auth) as listener:
        with captured_logger("distributed.comm.limits") as log:
            reader, writer = await _raw(_port(listener))
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert await _read_until_closed(reader, 5) == bytes([Status.AUTH_REQUIRED])
            writer.close()
        assert "not a dask peer" in log.getvalue()
        comm = await connect(listener.address, auth=auth)
        await comm.write("still serving")
        assert await comm.read() == "still serving"
        comm.abort()


@gen_test()
async def test_garbage_on_a_plain_server_port_keeps_it_serving():
    async with Scheduler(port=0, dashboard_address=None) as s:
        port = int(s.address.rsplit(":", 1)[1])
        reader, writer = await _raw(port)
        writer.write(b"GET / HTTP/1.1\r\n\r\n")
        await _read_until_closed(reader, 5)
        writer.close()
        async with rpc(s.address) as r:
            assert (await r.identity())["type"] == "Scheduler"


# --------------------------------------------------------------- real clusters


@gen_test(timeout=60)
async def test_cluster_serves_through_a_storm():
    """A scheduler at its connection cap: a client told BUSY on connect keeps
    trying and then computes; nothing in the cluster is lost."""
    sec = Security(auth_secret=SECRET)
    with config.set({"distributed.comm.max-connections": 40}):
        async with Scheduler(port=0, security=sec, dashboard_address=None) as s, \
                Worker(s.address, nthreads=1, security=sec) as w:
            port = int(s.address.rsplit(":", 1)[1])
            used = s.listener.admission.connections
            hogs = await asyncio.gather(*[_raw(port, ATTACKER) for _ in range(40 - used)])
            for _, writer in hogs:  # complete handshakes never come: they hold slots
                writer.write(MAGIC[:1])
            await _wait_for(lambda: s.listener.admission.connections == 40, 10,
                            "the scheduler to be full")
            busy = COUNTERS["busy"]
            client = asyncio.ensure_future(
                Client(s.address, asynchronous=True, security=sec, timeout=30))
            await _wait_for(lambda: COUNTERS["busy"] > busy, 10, "the client to hear BUSY")
            for _, writer in hogs:
                writer.close()
            async with await client as c:
                assert await c.submit(inc, 1) == 2
                assert sum(await c.gather(c.map(inc, range(100)))) == sum(range(1, 101))
            assert list(s.workers) == [w.address]  # the worker kept its place


def test_storm_against_a_real_scheduler_process():
    """The same against a scheduler in its own process (``cluster()``): the
    blocking Client gets through once the storm ends."""
    from distributed.utils_test import cluster

    with cluster(nworkers=1) as (s, workers):
        port = int(s["address"].rsplit(":", 1)[1])
        socks = []
        for _ in range(300):
            sock = socket.socket()
            sock.bind((ATTACKER, 0))
            sock.connect(("127.0.0.1", port))
            sock.sendall(b"\x00" * 3)  # an unfinished frame count
            socks.append(sock)
        for sock in socks:
            sock.close()
        with Client(s["address"], timeout=30) as c:
            assert c.submit(inc, 41).result(timeout=30) == 42


@gen_test()
async def test_stopping_a_listener_ends_connections_in_their_handshake():
    """A connection still authenticating when its listener stops is closed
    at once, not left for its deadline (or, when the loop ends first,
    forever in CLOSE_WAIT)."""
    from distributed.utils_test import tls_security

    auth = AuthConfig(SECRET)
    plain = await _echo_listener(auth=auth)
    tls = listen("tls://127.0.0.1:0", lambda comm: comm.close(),
                 **tls_security().get_listen_args("scheduler"))
    for listener in (plain, tls):
        reader, writer = await _raw(_port(listener))
        writer.write(MAGIC[:1] if listener is plain else b"\x16")
        await _wait_for(lambda lst=listener: lst._handshaking, 5, "the handshake to start")
        listener.stop()
        assert await _read_until_closed(reader, 5) is not None  # EOF well before the 10 s deadline
        await _wait_for(lambda lst=listener: lst.admission.connections == 0, 5,
                        "the listener to let the connection go")
        writer.close()
