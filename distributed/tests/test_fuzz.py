"""Fuzzing the wire (security spec §4.6, P2-P5, and F14) with hypothesis.

The number of examples comes from the hypothesis profile (``conftest.py``):
``ci`` by default, ``nightly`` (10,000 examples) with
``HYPOTHESIS_PROFILE=nightly``.  The handshake parsers (P1) are fuzzed in
``test_auth_handshake.py``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import struct
import time

import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from tornado.iostream import IOStream

from distributed import Client, Scheduler, Worker
from distributed.comm import CommClosedError, connect
from distributed.comm.auth import MAGIC, SERVER_HELLO_SIZE, ClientHandshake
from distributed.comm.tcp import Comm
from distributed.core import Server, Status
from distributed.protocol import ProtocolError, encode_message
from distributed.protocol.frames import pack_frames_prelude
from distributed.security import Security
from distributed.utils import LoopRunner, sync
from distributed.utils_test import captured_logger, gen_test, inc

SECRET = "fuzz-test-secret-0123456789abcdef0123456789abcdef0123"
_SETTINGS = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ----------------------------------------------------- P2/P3: the frame reader


async def _read_messages(chunks: list[bytes], max_message_size: int) -> list:
    """Feed ``chunks`` into one end of a socket pair and read messages from
    the other with a server-side ``Comm`` until it gives up."""
    left, right = socket.socketpair()
    comm = Comm(IOStream(left), "tcp://fuzz-local:1", "tcp://fuzz-peer:2", deserialize=False,
                max_message_size=max_message_size)
    comm.accepted = True
    right.setblocking(False)
    loop = asyncio.get_running_loop()

    async def feed():
        try:
            for chunk in chunks:
                await loop.sock_sendall(right, chunk)
                await asyncio.sleep(0)
        except OSError:  # the reader gave up and closed first
            pass
        finally:
            right.close()

    feeder = asyncio.ensure_future(feed())
    messages = []
    try:
        while True:
            try:
                messages.append(await asyncio.wait_for(comm.read(), 10))
            except (ProtocolError, CommClosedError):
                break
    finally:
        comm.abort()
        await feeder
    return messages


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)])]


def _frame_like() -> st.SearchStrategy[bytes]:
    """Bytes that look like our framing often enough to reach deep paths:
    a small or huge frame count, small or huge lengths, then anything."""
    count = st.one_of(st.integers(0, 4), st.integers(0, 2**64 - 1))
    length = st.one_of(st.integers(0, 64), st.integers(0, 2**64 - 1))
    head = st.builds(lambda n, ls: struct.pack("<Q", n) + b"".join(struct.pack("<Q", x) for x in ls),
                     count, st.lists(length, max_size=4))
    return st.one_of(st.binary(max_size=512), st.builds(bytes.__add__, head, st.binary(max_size=256)))


@_SETTINGS
@given(data=_frame_like(), cuts=st.lists(st.integers(0, 10**6), max_size=8))
def test_frame_reader_any_bytes_any_chunking(data, cuts):
    """P2: any bytes in any chunks give messages, then a ProtocolError or a
    closed comm; never MemoryError, struct.error, IndexError or a hang, and
    nothing is allocated past the 1 MiB limit."""
    asyncio.run(_read_messages(_split(data, cuts), max_message_size=2**20))


_leaves = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False), st.text(max_size=50), st.binary(max_size=200),
)
_messages = st.recursive(
    _leaves,
    lambda children: st.one_of(st.lists(children, max_size=5),
                               st.dictionaries(st.text(max_size=10), children, max_size=5)),
    max_leaves=20,
)


def _as_received(value):
    """What msgpack gives back: sequences as tuples."""
    if isinstance(value, list):
        return tuple(_as_received(v) for v in value)
    if isinstance(value, dict):
        return {k: _as_received(v) for k, v in value.items()}
    return value


@_SETTINGS
@given(msgs=st.lists(_messages, min_size=1, max_size=3), cuts=st.lists(st.integers(0, 10**6),
                                                                        max_size=8))
def test_messages_round_trip_under_any_chunking(msgs, cuts):
    """P3: ``read(write(m)) == m`` however the bytes are split in transit."""
    wire = b""
    for m in msgs:
        frames = encode_message(m)
        wire += pack_frames_prelude(frames) + b"".join(bytes(f) for f in frames)
    received = asyncio.run(_read_messages(_split(wire, cuts), max_message_size=2**24))
    assert received == [_as_received(m) for m in msgs]


# ----------------------------------------------------- a cluster in a thread


class _ThreadCluster:
    """A scheduler with a secret and two workers on a loop in another thread,
    so that synchronous hypothesis tests can drive it."""

    def __init__(self):
        self.runner = LoopRunner()
        self.runner.start()
        self.loop = self.runner.loop
        self.security = Security(auth_secret=SECRET)

        async def start():
            s = await Scheduler(port=0, security=self.security, dashboard_address=None)
            workers = [await Worker(s.address, nthreads=1, security=self.security)
                       for _ in range(2)]
            return s, workers

        self.scheduler, self.workers = sync(self.loop, start)

    def run(self, func, *args, timeout: float = 30):
        return sync(self.loop, func, *args, callback_timeout=timeout)

    def close(self):
        async def stop():
            for w in self.workers:
                await w.close()
            await self.scheduler.close()

        self.run(stop)
        self.runner.stop()


@pytest.fixture(scope="module")
def thread_cluster():
    c = _ThreadCluster()
    yield c
    c.close()


#: Operations the handler fuzz never sends: they end servers or take workers
#: away by design, which is not what it tests (that garbage ends nothing).
DESTRUCTIVE_OPS = frozenset({
    "terminate", "close", "restart", "retire_workers", "remove_worker", "close_worker",
    "unregister", "remove_worker_plugin", "unregister_worker_plugin", "restart_workers",
    "register_worker_plugin", "register_scheduler_plugin", "register_nanny_plugin",
    "register_plugin", "run_function", "broadcast", "scheduler_run", "run", "set_restrictions",
})

_kwarg_values = st.one_of(_leaves, st.lists(_leaves, max_size=3),
                          st.dictionaries(st.text(max_size=5), _leaves, max_size=3))


async def _call(address: str, security: Security, msg: dict) -> None:
    """Send one request; a reply, an error reply or a closed comm are all
    fine.  Handlers that wait (a lock, a queue) are given up on after 1 s."""
    comm = await connect(address, timeout=10, **security.get_connection_args("client"))
    try:
        await comm.write(msg)
        try:
            await asyncio.wait_for(comm.read(), 1)
        except (CommClosedError, ProtocolError, asyncio.TimeoutError):
            pass
        except Exception:  # a reply that does not load here (a pickled error type)
            pass
    finally:
        comm.abort()


def test_handler_fuzz_keeps_the_cluster_up(thread_cluster):
    """P4: random operations with random arguments against a live
    authenticated cluster; afterwards it computes as before."""
    s = thread_cluster.scheduler
    ops = sorted(set(s.handlers) - DESTRUCTIVE_OPS)

    @_SETTINGS
    @given(op=st.one_of(st.sampled_from(ops), st.text(max_size=20)),
           kwargs=st.dictionaries(st.text(max_size=12), _kwarg_values, max_size=4))
    def fuzz(op, kwargs):
        kwargs.pop("op", None)
        thread_cluster.run(_call, s.address, thread_cluster.security, {"op": op, **kwargs})

    fuzz()
    assert s.status == Status.running and len(s.workers) == 2

    async def compute():
        async with Client(s.address, asynchronous=True, security=thread_cluster.security) as c:
            return await c.submit(inc, 1)

    assert thread_cluster.run(compute) == 2


# ----------------------------------------------------- P5: connection lifecycles


def _server_in_thread():
    runner = LoopRunner()
    runner.start()
    sec = Security(auth_secret=SECRET)

    async def start():
        server = Server({"ping": lambda comm: "pong"})
        server.set_security(sec, "scheduler")
        await server.listen("tcp://127.0.0.1:0")
        return server

    return runner, sync(runner.loop, start)


def _authenticate(sock: socket.socket) -> None:
    hs = ClientHandshake(SECRET)
    sock.sendall(hs.hello())
    reply = b""
    while len(reply) < SERVER_HELLO_SIZE:
        chunk = sock.recv(SERVER_HELLO_SIZE - len(reply))
        if not chunk:
            raise ConnectionError("closed during the handshake")
        reply += chunk
    sock.sendall(hs.receive_server_hello(reply))
    hs.receive_verdict(sock.recv(1))


def _request(msg) -> bytes:
    frames = encode_message(msg)
    return pack_frames_prelude(frames) + b"".join(bytes(f) for f in frames)


class ConnectionLifecycles(RuleBasedStateMachine):
    """P5: connect, authenticate, send garbage or valid requests, half-close
    and close, in any order.  The server never counts more connections than
    are open, and gives every one back at the end."""

    def __init__(self):
        super().__init__()
        self.runner, self.server = _server_in_thread()
        self.port = int(self.server.address.rsplit(":", 1)[1])
        self.baseline_fds = psutil.Process().num_fds()
        self.socks: list[socket.socket] = []

    def _admitted(self) -> int:
        return sync(self.runner.loop, self._count)

    async def _count(self) -> int:
        return self.server.listener.admission.connections

    @rule(authenticate=st.booleans())
    def open(self, authenticate):
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        if authenticate:
            _authenticate(sock)
        self.socks.append(sock)

    @precondition(lambda self: self.socks)
    @rule(i=st.integers(0, 100), data=st.binary(max_size=64))
    def send_garbage(self, i, data):
        try:
            self.socks[i % len(self.socks)].sendall(data)
        except OSError:
            pass  # the server already closed it

    @precondition(lambda self: self.socks)
    @rule(i=st.integers(0, 100))
    def send_valid(self, i):
        try:
            self.socks[i % len(self.socks)].sendall(_request({"op": "ping"}))
        except OSError:
            pass

    @precondition(lambda self: self.socks)
    @rule(i=st.integers(0, 100))
    def half_close(self, i):
        try:
            self.socks[i % len(self.socks)].shutdown(socket.SHUT_WR)
        except OSError:
            pass

    @precondition(lambda self: self.socks)
    @rule(i=st.integers(0, 100))
    def close(self, i):
        self.socks.pop(i % len(self.socks)).close()

    @invariant()
    def never_more_than_open(self):
        async def settle():
            async with asyncio.timeout(5):
                while self.server.listener.admission.connections > len(self.socks):
                    await asyncio.sleep(0.005)

        sync(self.runner.loop, settle)

    def teardown(self):
        for sock in self.socks:
            sock.close()

        async def drained():
            async with asyncio.timeout(10):
                while self.server.listener.admission.connections:
                    await asyncio.sleep(0.005)
            await self.server.close_server()

        try:
            sync(self.runner.loop, drained)
        finally:
            self.runner.stop()
        deadline = time.monotonic() + 5  # descriptors close as the loop thread ends
        while psutil.Process().num_fds() > self.baseline_fds + 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert psutil.Process().num_fds() <= self.baseline_fds + 5


TestConnectionLifecycles = ConnectionLifecycles.TestCase
TestConnectionLifecycles.settings = settings(
    _SETTINGS, max_examples=min(settings.default.max_examples, 30), stateful_step_count=20)


# ----------------------------------------------------- F14: fuzzed frames in bulk


@pytest.mark.slow
@gen_test(timeout=300)
async def test_ten_thousand_fuzzed_connections_leave_the_scheduler_healthy():
    """F14: 10,000 fresh sockets each send 0-64 KiB of seeded random bytes
    (half starting with the handshake magic, some with huge length prefixes).
    Afterwards the scheduler computes, holds no extra descriptors or much
    memory, and logged nothing worse than rate-limited warnings."""
    rng = random.Random(20261202)
    sec = Security(auth_secret=SECRET)
    proc = psutil.Process()
    async with Scheduler(port=0, security=sec, dashboard_address=None) as s, \
            Worker(s.address, nthreads=1, security=sec):
        port = int(s.address.rsplit(":", 1)[1])
        fds, rss = proc.num_fds(), proc.memory_info().rss

        def payload() -> bytes:
            body = rng.randbytes(rng.randrange(0, 65536))
            kind = rng.random()
            if kind < 0.5:
                body = MAGIC + body
            elif kind < 0.6:
                body = struct.pack("<QQ", 1, rng.randrange(2**40, 2**64)) + body
            return body

        async def one(data: bytes) -> None:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(data)
                await writer.drain()
                writer.close()
                await writer.wait_closed()
            except OSError:
                pass  # the server closed on us first: fine

        with captured_logger("distributed", level=logging.ERROR) as errors:
            for _ in range(100):
                await asyncio.gather(*[one(payload()) for _ in range(100)])
            async with asyncio.timeout(30):
                # every fuzzing socket gone: only served comms (the worker's) remain
                while s.listener.admission.connections > len(s._comms):
                    await asyncio.sleep(0.05)
            async with Client(s.address, asynchronous=True, security=sec) as c:
                assert await c.submit(inc, 1) == 2
        assert errors.getvalue() == ""
        async with asyncio.timeout(10):
            while proc.num_fds() > fds + 5:
                await asyncio.sleep(0.05)
        assert proc.memory_info().rss - rss < 50 * 2**20
