"""Hard failures with real processes: workers killed mid-computation, tasks
that kill their workers, and garbage sent to worker and scheduler sockets."""
from __future__ import annotations

import asyncio
import os
import signal
import socket
import struct

import msgpack
import pytest

from distributed import Client, KilledWorker, wait
from distributed.protocol import decode_message, encode_message, pack_frames_prelude
from distributed.utils_test import async_wait_for, cluster, gen_cluster, inc, slowadd, slowinc, wait_for

pytestmark = pytest.mark.timeout(120)


def kill_own_process(x):
    os._exit(1)


def tree_sum(c: Client, leaves: list):
    layer = leaves
    while len(layer) > 1:
        nxt = [c.submit(slowadd, layer[i], layer[i + 1], delay=0.01) for i in range(0, len(layer) - 1, 2)]
        if len(layer) % 2:
            nxt.append(layer[-1])
        layer = nxt
    return layer[0]


def test_killing_a_worker_mid_tree_reduction_still_gives_the_exact_result(loop):
    n = 250  # 250 leaves + 249 additions
    with cluster(nworkers=3) as (s, workers):
        with Client(s["address"], loop=loop) as c:
            leaves = c.map(slowinc, range(n), delay=0.01)
            total = tree_sum(c, leaves)
            # some work done, much still to do
            wait_for(lambda: sum(f.done() for f in leaves) >= 30, timeout=60)
            assert not total.done()
            victim = workers[0]
            os.kill(victim["proc"].pid, signal.SIGKILL)
            victim["proc"].join(10)
            assert total.result(timeout=90) == sum(range(1, n + 1))
            assert victim["address"] not in c.nthreads()


def test_task_killing_its_workers_ends_as_killed_worker_and_cluster_serves_on(loop):
    with cluster(nworkers=3, scheduler_kwargs={"allowed_failures": 1}) as (s, workers):
        with Client(s["address"], loop=loop) as c:
            assert c.submit(inc, 1).result(timeout=30) == 2
            future = c.submit(kill_own_process, 1, key="killer")
            with pytest.raises(KilledWorker) as info:
                future.result(timeout=60)
            err = info.value
            assert err.task == "killer"
            assert "2 different workers" in str(err)
            wait_for(lambda: sum(w["proc"].is_alive() for w in workers) == 1, timeout=30)
            # the last worker goes on serving
            assert c.submit(inc, 10).result(timeout=30) == 11
            assert c.gather(c.map(inc, range(20))) == list(range(1, 21))
            assert len(c.nthreads()) == 1


# ----------------------------------------------------------------------
# garbage on the sockets
# ----------------------------------------------------------------------


def _host_port(address: str) -> tuple[str, int]:
    host, port = address.split("://")[-1].rsplit(":", 1)
    return host, int(port)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return buf


def _request(sock: socket.socket, msg, raw: bytes | None = None) -> object:
    if raw is None:
        frames = encode_message(msg)
        raw = pack_frames_prelude(frames) + b"".join(bytes(f) for f in frames)
    sock.sendall(raw)
    (n,) = struct.unpack("<Q", _recv_exact(sock, 8))
    lengths = struct.unpack(f"<{n}Q", _recv_exact(sock, 8 * n))
    return decode_message([_recv_exact(sock, length) for length in lengths])


def _closed_by_peer(sock: socket.socket) -> bool:
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


ATTACKS = {
    "absurd frame count": struct.pack("<Q", 2**62),
    "zero frames": struct.pack("<Q", 0),
    "frame larger than the size limit": struct.pack("<QQ", 1, 2**50),
    "garbage msgpack": pack_frames_prelude([b"\xc1\xc1"]) + b"\xc1\xc1",
    "bad frame reference": (lambda f: pack_frames_prelude([f]) + f)(
        msgpack.packb({"op": "identity", "x": msgpack.ExtType(2, msgpack.packb((0, 9, 1)))})),
}


def _attack(address: str) -> None:
    for name, data in ATTACKS.items():
        with socket.create_connection(_host_port(address), timeout=10) as sock:
            sock.sendall(data)
            assert _closed_by_peer(sock), f"{name}: connection left open"
    # a payload that is not a pickle: a worker closes the connection; the
    # scheduler never unpickles payloads, so for it the request is valid
    frame = msgpack.packb({"op": "identity", "x": msgpack.ExtType(1, b"garbage")})
    with socket.create_connection(_host_port(address), timeout=10) as sock:
        try:
            reply = _request(sock, None, raw=pack_frames_prelude([frame]) + frame)
        except ConnectionError:
            pass
        else:
            assert reply["address"] == address
    # well-framed but wrong requests get an error reply on a usable connection
    with socket.create_connection(_host_port(address), timeout=10) as sock:
        reply = _request(sock, {"op": "no-such-op"})
        assert reply["status"] == "error" and "unknown operation" in reply["text"]
        reply = _request(sock, [1, 2, 3])
        assert reply["status"] == "error" and "'op'" in reply["text"]
        reply = _request(sock, {"op": "identity"})
        assert reply["address"] == address
    # half a message, then hang up
    with socket.create_connection(_host_port(address), timeout=10) as sock:
        sock.sendall(struct.pack("<QQ", 1, 100) + b"x" * 10)


def test_garbage_sent_to_worker_and_scheduler_sockets_leaves_them_serving(loop):
    with cluster(nworkers=1) as (s, [a]):
        with Client(s["address"], loop=loop) as c:
            _attack(a["address"])
            _attack(s["address"])
            assert c.submit(inc, 1, workers=[a["address"]]).result(timeout=30) == 2
            assert list(c.nthreads()) == [a["address"]]
            assert c.gather(c.map(inc, range(10))) == list(range(1, 11))


@gen_cluster(client=True, config={"distributed.comm.timeouts.connect": "10s"})
async def test_gather_skips_a_dead_holder_when_a_replica_survives(c, s, a, b):
    x = c.submit(inc, 1, workers=[a.address])
    await wait([x])  # the client knows x is on a, and never connected to a
    await c.replicate([x])
    assert {ws.address for ws in s.tasks[x.key].who_has} == {a.address, b.address}
    await a.close()
    await async_wait_for(lambda: a.address not in s.workers, timeout=10)
    # far less than the connect timeout; a healthy gather takes milliseconds
    assert await asyncio.wait_for(c.gather(x), 3) == 2
