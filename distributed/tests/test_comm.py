"""Comms, Server, rpc, ConnectionPool and BatchedSend over real loopback TCP."""
from __future__ import annotations

import asyncio
import pickle
import struct

import msgpack
import pytest

from distributed import config
from distributed.batched import BatchedSend
from distributed.comm import CommClosedError, connect, listen
from distributed.core import ConnectionPool, Server, rpc
from distributed.exceptions import RemoteTraceback
from distributed.protocol import Serialize, encode_message, pack_frames_prelude
from distributed.utils_test import async_wait_for, captured_logger, gen_test

np = pytest.importorskip("numpy")


class CustomError(Exception):
    pass


def raise_custom(comm=None, x=None):
    raise CustomError(f"custom failure with {x}")


def raise_zero(comm=None):
    return 1 / 0


async def start_server(**handlers) -> Server:
    server = Server({"ping": lambda comm: "pong", "raise_custom": raise_custom,
                     "raise_zero": raise_zero, **handlers})
    await server.listen("tcp://127.0.0.1:0")
    return server


async def write_raw(comm, data: bytes) -> None:
    await comm.stream.write(data)


async def assert_closed_by_peer(comm) -> None:
    with pytest.raises(CommClosedError):
        await asyncio.wait_for(comm.read(), 10)


async def assert_still_serving(server) -> None:
    async with rpc(server.address) as r:
        assert (await r.identity())["id"] == server.id
        assert await r.ping() == "pong"


# ----------------------------------------------------------------------
# Comm
# ----------------------------------------------------------------------


@gen_test()
async def test_comm_roundtrip_small_and_large_messages():
    received = []

    async def handler(comm):
        while True:
            try:
                msg = await comm.read()
            except CommClosedError:
                return
            received.append(msg)
            await comm.write(msg)

    # deserialize=False: payloads stay Serialized and are echoed untouched
    listener = listen("tcp://127.0.0.1:0", handler, deserialize=False)
    comm = await connect(listener.address)
    try:
        assert comm.peer_address == listener.address
        await comm.write({"op": "small", "x": [1, 2]})
        assert await comm.read() == {"op": "small", "x": (1, 2)}
        arr = np.arange(1_000_000)
        big = b"b" * 5_000_000
        n = await comm.write({"arr": Serialize(arr), "big": Serialize(big)})
        assert n > arr.nbytes + len(big)
        out = await comm.read()
        assert (out["arr"] == arr).all() and out["big"] == big
    finally:
        await comm.close()
        listener.stop()
    assert comm.closed()


@gen_test()
async def test_large_bytes_arrive_as_bytes_and_arrays_stay_writable():
    got = asyncio.Queue()

    async def handler(comm):
        await got.put(await comm.read())

    listener = listen("tcp://127.0.0.1:0", handler)
    comm = await connect(listener.address)
    try:
        big = bytes(range(256)) * 20_000  # 5 MB: read straight into a bytes object
        arr = np.arange(500_000)
        mid = b"m" * 70_000
        await comm.write({"big": Serialize(big), "arr": Serialize(arr), "mid": Serialize(mid),
                          "empty": Serialize(b""), "ba": Serialize(bytearray(b"x" * 100_000))})
        out = await asyncio.wait_for(got.get(), 10)
        assert type(out["big"]) is bytes and out["big"] == big
        assert hash(out["big"]) == hash(big)
        assert type(out["mid"]) is bytes and out["mid"] == mid
        assert out["empty"] == b""
        assert type(out["ba"]) is bytearray and out["ba"] == bytearray(b"x" * 100_000)
        assert (out["arr"] == arr).all()
        out["arr"][0] = -1  # received arrays are writable, as upstream's are
    finally:
        await comm.close()
        listener.stop()


def test_prelude_flags_large_bytes_frames_only():
    from distributed.protocol.frames import AS_BYTES_MIN, parse_frame_lengths

    frames = [b"h", b"x" * AS_BYTES_MIN, bytearray(AS_BYTES_MIN), memoryview(b"y" * AS_BYTES_MIN)]
    prelude = pack_frames_prelude(frames)
    lengths, as_bytes = parse_frame_lengths(prelude[8:], len(frames), 2**40)
    assert lengths == [1, AS_BYTES_MIN, AS_BYTES_MIN, AS_BYTES_MIN]
    assert as_bytes == [False, True, False, False]


@gen_test()
async def test_comm_write_after_close_raises_comm_closed():
    server_comms = []

    async def handler(comm):
        server_comms.append(comm)
        with pytest.raises(CommClosedError):
            await comm.read()

    listener = listen("tcp://127.0.0.1:0", handler)
    comm = await connect(listener.address)
    comm.abort()
    with pytest.raises(CommClosedError):
        await comm.write({"op": "x"})
    await async_wait_for(lambda: server_comms and server_comms[0].closed(), timeout=5)
    listener.stop()


@gen_test()
async def test_failing_connection_handler_closes_the_connection():
    async def handler(comm):
        await comm.read()
        raise RuntimeError("handler bug")

    listener = listen("tcp://127.0.0.1:0", handler)
    comm = await connect(listener.address)
    with captured_logger("distributed.comm.tcp") as log:
        await comm.write({"op": "anything"})
        await assert_closed_by_peer(comm)
    assert "handler bug" in log.getvalue()
    listener.stop()


@gen_test()
async def test_connect_to_nothing_fails_within_timeout():
    listener = listen("tcp://127.0.0.1:0", lambda comm: None)
    address = listener.address
    listener.stop()
    with pytest.raises(OSError, match="Timed out"):
        await connect(address, timeout=0.2)


# ----------------------------------------------------------------------
# Server: bad input never kills it
# ----------------------------------------------------------------------


@gen_test()
async def test_malformed_frame_count_closes_connection_server_keeps_serving():
    server = await start_server()
    comm = await connect(server.address)
    with captured_logger("distributed.core") as log:
        await write_raw(comm, struct.pack("<Q", 2**62))
        await assert_closed_by_peer(comm)
    assert "bad message" in log.getvalue()
    await assert_still_serving(server)
    await server.close_server()


@gen_test()
async def test_garbage_msgpack_closes_connection_server_keeps_serving():
    server = await start_server()
    comm = await connect(server.address)
    await comm.write_frames([b"\xc1\xc1\xc1"])
    await assert_closed_by_peer(comm)
    await assert_still_serving(server)
    await server.close_server()


@gen_test()
async def test_bad_frame_reference_closes_connection_server_keeps_serving():
    server = await start_server()
    comm = await connect(server.address)
    header = msgpack.packb({"op": "ping", "x": msgpack.ExtType(2, msgpack.packb((0, 7, 1)))})
    await comm.write_frames([header])
    await assert_closed_by_peer(comm)
    await assert_still_serving(server)
    await server.close_server()


@gen_test()
async def test_truncated_message_then_hangup_leaves_server_serving():
    server = await start_server()
    comm = await connect(server.address)
    frames = [msgpack.packb({"op": "ping"})]
    data = pack_frames_prelude(frames) + frames[0]
    await write_raw(comm, data[:-2])
    comm.abort()
    await assert_still_serving(server)
    await async_wait_for(lambda: len(server._comms) == 0, timeout=5)
    await server.close_server()


@gen_test()
async def test_unknown_op_gets_error_reply_and_connection_stays_usable():
    server = await start_server()
    comm = await connect(server.address)
    try:
        await comm.write({"op": "no-such-op", "x": 1})
        reply = await comm.read()
        assert reply["status"] == "error"
        assert "unknown operation 'no-such-op'" in reply["text"]
        await comm.write({"op": "ping"})
        assert await comm.read() == "pong"
    finally:
        await comm.close()
    async with rpc(server.address) as r:
        with pytest.raises(ValueError, match="unknown operation"):
            await r.no_such_op()
        assert await r.ping() == "pong"
    await server.close_server()


@pytest.mark.parametrize("msg", [[1, 2, 3], "hello", 42, {"no": "op"}])
@gen_test()
async def test_message_without_op_gets_error_reply(msg):
    server = await start_server()
    comm = await connect(server.address)
    try:
        await comm.write(msg)
        reply = await comm.read()
        assert reply["status"] == "error"
        assert "expected a dict with an 'op' key" in reply["text"]
        await comm.write({"op": "ping"})
        assert await comm.read() == "pong"
    finally:
        await comm.close()
    await server.close_server()


@gen_test()
async def test_handler_with_wrong_arguments_gets_error_reply():
    server = await start_server()
    async with rpc(server.address) as r:
        with pytest.raises(TypeError, match="unexpected keyword"):
            await r.ping(nonsense=1)
        assert await r.ping() == "pong"
    await server.close_server()


@gen_test()
async def test_oversized_message_closes_connection_server_keeps_serving():
    with config.set({"distributed.comm.max-message-size": "1kB"}):
        server = await start_server(echo_size=lambda comm, data=None: len(data))
    comm = await connect(server.address)
    with captured_logger("distributed.core") as log:
        await comm.write({"op": "echo_size", "data": b"x" * 10_000})
        await assert_closed_by_peer(comm)
    assert "maximum message size" in log.getvalue()
    async with rpc(server.address) as r:
        assert await r.echo_size(data=b"x" * 100) == 100
    await assert_still_serving(server)
    await server.close_server()


@gen_test()
async def test_payload_that_is_not_a_pickle_closes_connection_server_keeps_serving():
    server = await start_server(echo=lambda comm, data=None: data)
    comm = await connect(server.address)
    header = msgpack.packb({"op": "echo", "data": msgpack.ExtType(1, b"definitely not a pickle")})
    await comm.write_frames([header])
    await assert_closed_by_peer(comm)
    await assert_still_serving(server)
    await server.close_server()


class NeedsMissingModule:
    """Pickles fine here, fails to unpickle on the receiving side."""

    def __reduce__(self):
        return (_import_missing, ())


def _import_missing():
    import distributed_module_that_does_not_exist  # noqa: F401


@gen_test()
async def test_payload_failing_to_unpickle_gets_error_reply():
    server = await start_server(echo=lambda comm, data=None: data)
    comm = await connect(server.address)
    try:
        frames = encode_message({"op": "echo", "data": Serialize(NeedsMissingModule())})
        await comm.write_frames(frames)
        reply = await asyncio.wait_for(comm.read(), 10)
        assert reply["status"] == "error"
        assert "distributed_module_that_does_not_exist" in reply["text"]
        await comm.write({"op": "ping"})
        assert await comm.read() == "pong"
    finally:
        await comm.close()
    await server.close_server()


@gen_test()
async def test_many_bad_connections_leave_no_connection_behind():
    server = await start_server()
    comms = [await connect(server.address) for _ in range(5)]
    for comm in comms:
        await write_raw(comm, struct.pack("<Q", 0))
    for comm in comms:
        await assert_closed_by_peer(comm)
    await async_wait_for(lambda: len(server._comms) == 0, timeout=5)
    await assert_still_serving(server)
    await server.close_server()


# ----------------------------------------------------------------------
# rpc
# ----------------------------------------------------------------------


@gen_test()
async def test_rpc_reraises_remote_exception_with_same_type_and_remote_traceback():
    server = await start_server()
    async with rpc(server.address) as r:
        with pytest.raises(CustomError, match="custom failure with 5") as info:
            await r.raise_custom(x=5)
        cause = info.value.__cause__
        assert isinstance(cause, RemoteTraceback)
        assert "raise_custom" in cause.text
        assert "CustomError: custom failure with 5" in cause.text
        with pytest.raises(ZeroDivisionError) as info:
            await r.raise_zero()
        assert "1 / 0" in info.value.__cause__.text
        # the connection survives errors
        assert await r.ping() == "pong"
    await server.close_server()


@gen_test()
async def test_rpc_reuses_its_connection():
    server = await start_server()
    async with rpc(server.address) as r:
        for _ in range(5):
            assert await r.ping() == "pong"
        assert len(r._idle) == 1
        assert len(server._comms) == 1
    await server.close_server()


@gen_test()
async def test_rpc_to_closed_server_raises_oserror():
    server = await start_server()
    address = server.address
    await server.close_server()
    r = rpc(address, timeout=0.2)
    with pytest.raises(OSError):
        await r.ping()
    await r.close_rpc()


# ----------------------------------------------------------------------
# ConnectionPool
# ----------------------------------------------------------------------


@gen_test()
async def test_connection_pool_respects_its_limit_and_reuses_connections():
    release = asyncio.Event()
    active = 0
    peak = 0

    async def slow(comm, i=None):
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await release.wait()
        active -= 1
        return i

    server = await start_server(slow=slow)
    accepted = []
    original = server.handle_comm

    async def counting(comm):
        accepted.append(comm)
        await original(comm)

    server.listener.handler = counting
    pool = ConnectionPool(limit=2)
    calls = [asyncio.ensure_future(pool(server.address).slow(i=i)) for i in range(6)]
    await async_wait_for(lambda: active == 2, timeout=5)
    assert pool.open == 2
    assert not any(c.done() for c in calls)
    release.set()
    assert await asyncio.gather(*calls) == list(range(6))
    assert peak == 2
    assert pool.open <= 2
    assert len(accepted) == 2, "waiting calls reuse the released connections"
    await pool.close()
    await server.close_server()


@gen_test()
async def test_connection_pool_counts_right_when_a_peer_is_removed_mid_call():
    started = asyncio.Event()

    async def hang(comm):
        started.set()
        await asyncio.Event().wait()

    server = await start_server(hang=hang)
    pool = ConnectionPool(limit=2)
    call = asyncio.ensure_future(pool(server.address).hang())
    await asyncio.wait_for(started.wait(), 5)
    assert pool.open == 1
    pool.remove(server.address)
    with pytest.raises(CommClosedError):
        await asyncio.wait_for(call, 5)
    assert pool.open == 0
    assert await pool(server.address).ping() == "pong"
    assert pool.open == 1
    await pool.close()
    await server.close_server()


@gen_test()
async def test_connection_pool_closes_idle_connections_to_reach_other_peers():
    s1 = await start_server()
    s2 = await start_server()
    pool = ConnectionPool(limit=1)
    assert await pool(s1.address).ping() == "pong"
    assert await pool(s2.address).ping() == "pong"
    assert pool.open == 1
    await pool.close()
    await s1.close_server()
    await s2.close_server()


# ----------------------------------------------------------------------
# BatchedSend and streams
# ----------------------------------------------------------------------


async def stream_pair():
    server_side: asyncio.Future = asyncio.get_running_loop().create_future()
    closed = asyncio.Event()

    async def handler(comm):
        server_side.set_result(comm)
        await closed.wait()

    listener = listen("tcp://127.0.0.1:0", handler)
    client = await connect(listener.address)
    server = await asyncio.wait_for(server_side, 5)
    return listener, client, server, closed


@gen_test()
async def test_batched_send_coalesces_messages_sent_in_one_tick():
    listener, client, server, closed = await stream_pair()
    bs = BatchedSend(name="test")
    bs.start(client)
    try:
        bs.send({"op": "a"})
        bs.send({"op": "b"})
        bs.send({"op": "c"}, {"op": "d"})
        batch = await asyncio.wait_for(server.read(), 5)
        assert batch == ({"op": "a"}, {"op": "b"}, {"op": "c"}, {"op": "d"})
        assert bs.message_count == 4
        assert bs.batch_count == 1
        # an isolated message later goes out on its own
        bs.send({"op": "e"})
        assert await asyncio.wait_for(server.read(), 5) == ({"op": "e"},)
        assert bs.batch_count == 2
    finally:
        await bs.close()
        closed.set()
        listener.stop()
        server.abort()


@gen_test()
async def test_batched_send_close_flushes_and_then_refuses():
    listener, client, server, closed = await stream_pair()
    bs = BatchedSend(name="test")
    bs.start(client)
    bs.send({"op": "last"})
    await bs.close()
    assert await asyncio.wait_for(server.read(), 5) == ({"op": "last"},)
    with pytest.raises(CommClosedError):
        bs.send({"op": "too-late"})
    assert bs.closed()
    closed.set()
    listener.stop()
    server.abort()


@gen_test()
async def test_batched_send_survives_peer_hangup():
    listener, client, server, closed = await stream_pair()
    bs = BatchedSend(name="test")
    bs.start(client)
    server.abort()

    def send_until_closed() -> bool:
        try:
            bs.send({"op": "x", "data": b"y" * 10_000})
        except CommClosedError:
            return True
        return False

    await async_wait_for(send_until_closed, timeout=10)
    assert bs.closed()
    await bs.close()
    closed.set()
    listener.stop()


@gen_test()
async def test_stream_handlers_skip_bad_messages_and_keep_going():
    seen = []
    server = Server({}, stream_handlers={"note": lambda x=None: seen.append(x),
                                         "broken": lambda: 1 / 0})

    async def open_stream(comm):
        await server.handle_stream(comm)
        from distributed.core import NO_REPLY
        return NO_REPLY

    server.handlers["open_stream"] = open_stream
    await server.listen("tcp://127.0.0.1:0")
    comm = await connect(server.address)
    await comm.write({"op": "open_stream", "reply": False})
    with captured_logger("distributed.core") as log:
        await comm.write([{"op": "note", "x": 1}, {"op": "unknown"}, "not-a-dict", {"op": "broken"},
                          {"op": "note", "x": 2}])
        await comm.write_frames([msgpack.packb([{"op": "note", "x": msgpack.ExtType(
            1, pickle.dumps(NeedsMissingModule()))}])])
        await comm.write({"op": "note", "x": 3})
        await async_wait_for(lambda: seen == [1, 2, 3], timeout=5)
    text = log.getvalue()
    assert "unknown stream operation 'unknown'" in text
    assert "failed" in text
    await comm.close()
    await server.close_server()


@gen_test()
async def test_cancelled_connect_to_refused_port_stops_retrying():
    """A cancel that lands just as a refused connect fails is not lost
    (asyncio.wait_for before Python 3.12 could swallow it, and the retry loop
    then went on: a worker ignored Ctrl-C while waiting for its scheduler)."""
    import random
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, never listening: every connect is refused
        address = f"tcp://127.0.0.1:{sock.getsockname()[1]}"
        for _ in range(100):
            task = asyncio.ensure_future(connect(address, timeout=30))
            await asyncio.sleep(random.random() * 0.02)  # land the cancel anywhere in the retry loop
            task.cancel()
            done, _ = await asyncio.wait([task], timeout=5)
            assert done, "connect kept retrying after it was cancelled"
            assert task.cancelled()
