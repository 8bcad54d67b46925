"""The same-host fast path (``distributed.comm.shm``).

Values of every size around the threshold go through every path (a task's
result, scatter, gather, a transfer between workers) in one process
(``gen_cluster``) and across processes (``cluster()``), checked bytewise,
with the counters showing whether shared memory carried them.  Then the
fallbacks (disabled by config, a peer on "another host", a probe or a
segment that cannot be opened, ``/dev/shm`` full), the clean-up of segments
left by dead processes, and a sender and a receiver killed mid-transfer:
the dependent task still computes and no segment stays behind.
"""
from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from distributed import Client, wait
from distributed.comm import CommClosedError, connect, listen, shm
from distributed.protocol import Serialize
from distributed.tests.test_large_values import is_intact, is_intact_with_kind, make_value
from distributed.utils_test import async_poll_for, cluster, gen_cluster, gen_test, poll_for

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="the shared-memory path is Linux only (/dev/shm)")

MB = 2**20
THRESHOLD = MB  # the default of distributed.comm.shm.threshold
KINDS = ["bytes", "numpy"]
SMALL_SIZES = [0, 1_000, THRESHOLD - 1, THRESHOLD + 1, 64 * MB]


def data_segments() -> set[str]:
    """Segments (not probes) with this boot's and pid namespace's prefix."""
    prefix = shm.segment_prefix()
    return {n for n in os.listdir(shm.SHM_DIR) if n.startswith(prefix) and "-probe-" not in n}


def shm_stats() -> dict:
    return dict(shm.stats)


def _label(path: str, kind: str, n: int) -> str:
    return f"{path}: {kind} of {n:,} bytes"


async def _every_path(c, a: str, b: str, kind: str, n: int) -> None:
    f = c.submit(make_value, kind, n, workers=[a], pure=False)
    assert is_intact(await f, kind, n, full=True), _label("result", kind, n)
    ok, typename = await c.submit(is_intact_with_kind, f, kind, n, workers=[b], pure=False)
    assert ok, (_label("peer", kind, n), typename)
    del f
    g = await c.scatter(make_value(kind, n), workers=[a])
    assert is_intact(await c.gather(g), kind, n, full=True), _label("scatter+gather", kind, n)
    ok, typename = await c.submit(is_intact_with_kind, g, kind, n, workers=[b], pure=False)
    assert ok, (_label("peer of scattered", kind, n), typename)


def _every_path_sync(c, a: str, b: str, kind: str, n: int) -> None:
    """``_every_path`` for a client outside the event loop (``cluster()``)."""
    f = c.submit(make_value, kind, n, workers=[a], pure=False)
    assert is_intact(f.result(), kind, n, full=True), _label("result", kind, n)
    ok, typename = c.submit(is_intact_with_kind, f, kind, n, workers=[b], pure=False).result()
    assert ok, (_label("peer", kind, n), typename)
    del f
    g = c.scatter(make_value(kind, n), workers=[a])
    assert is_intact(c.gather(g), kind, n, full=True), _label("scatter+gather", kind, n)
    ok, typename = c.submit(is_intact_with_kind, g, kind, n, workers=[b], pure=False).result()
    assert ok, (_label("peer of scattered", kind, n), typename)


# ----------------------------------------------------------------------
# Round trips
# ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@gen_cluster(client=True, timeout=120)
async def test_every_path_and_size_in_one_process(c, s, a, b, kind):
    before = data_segments()
    for n in SMALL_SIZES:
        start = shm_stats()
        await _every_path(c, a.address, b.address, kind, n)
        used = shm.stats["received"] - start["received"]
        if n > THRESHOLD:  # result, peer, scatter, gather, peer again
            assert used >= 5, (n, shm.stats, start)
        else:
            assert used == 0, (n, shm.stats, start)
    assert shm.stats["refused"] == 0
    await async_poll_for(lambda: data_segments() <= before, timeout=10)


def test_every_path_and_size_across_processes(loop):
    before = data_segments()
    with cluster(worker_kwargs={"memory_limit": "4GB"}) as (s, [a, b]):
        with Client(s["address"], loop=loop) as c:
            start = c.run(shm_stats)
            for kind in KINDS:
                for n in [*SMALL_SIZES, 256 * MB]:
                    _every_path_sync(c, a["address"], b["address"], kind, n)
            end = c.run(shm_stats)
            # both workers received through segments (peer transfers, scatters)
            for w in (a["address"], b["address"]):
                assert end[w]["received"] - start[w]["received"] >= 4, (w, start, end)
                assert end[w]["refused"] == 0
            poll_for(lambda: data_segments() <= before, timeout=10)
    shm.sweep_dead_segments()  # the workers were terminated: their probes
    assert data_segments() <= before


@gen_test()
async def test_comm_round_trip_is_zero_copy_for_arrays():
    async def echo(comm):
        for _ in range(2):
            msg = await comm.read()
            await comm.write({"x": Serialize(msg["x"]), "b": msg["b"]})

    async with listen("tcp://127.0.0.1:0", echo) as listener:
        comm = await connect(listener.address)
        x = make_value("numpy", 8 * MB)
        blob = make_value("bytes", 3 * MB)
        start = shm_stats()
        # the first message carries our hello: the echo's reply may use shm
        await comm.write({"x": Serialize(x), "b": blob})
        reply = await comm.read()
        assert is_intact(reply["x"], "numpy", 8 * MB, full=True)
        assert type(reply["b"]) is bytes and reply["b"] == blob
        assert shm.stats["received"] - start["received"] == 2
        # backed by the mapping of the segment, not a private buffer
        base = reply["x"]
        while getattr(base, "base", None) is not None and not isinstance(base, memoryview):
            base = base.base
        assert isinstance(base, memoryview) and type(base.obj).__name__ == "mmap"
        # the second message from us goes through shm too (the echo's hello)
        await comm.write({"x": Serialize(x), "b": blob})
        await comm.read()
        # (one process: the counters hold both ends) the echo's first reply,
        # then our message and its reply, two frames each
        assert shm.stats["sent"] - start["sent"] == 6
        await comm.close()


# ----------------------------------------------------------------------
# Fallbacks
# ----------------------------------------------------------------------


@gen_cluster(client=True, timeout=60, config={"distributed.comm.shm.enabled": False})
async def test_disabled_by_config_uses_tcp(c, s, a, b):
    start = shm_stats()
    for kind in KINDS:
        await _every_path(c, a.address, b.address, kind, 4 * MB)
    assert shm.stats == start


@gen_cluster(client=True, timeout=60)
async def test_peer_on_another_host_uses_tcp(c, s, a, b, monkeypatch):
    # every call answers differently, as if each hello came from another machine
    count = iter(range(10**9))
    monkeypatch.setattr(shm, "host_id", lambda: f"host-{next(count)}")
    start = shm_stats()
    for kind in KINDS:
        await _every_path(c, a.address, b.address, kind, 4 * MB)
    assert shm.stats["sent"] == start["sent"] and shm.stats["received"] == start["received"]
    assert shm.stats["refused"] > start["refused"]


@gen_cluster(client=True, timeout=60)
async def test_peer_whose_segments_cannot_be_opened_uses_tcp(c, s, a, b, monkeypatch):
    # a peer in another container: same host id, another /dev/shm
    monkeypatch.setattr(shm, "_read_probe", lambda name: None)
    start = shm_stats()
    for kind in KINDS:
        await _every_path(c, a.address, b.address, kind, 4 * MB)
    assert shm.stats["sent"] == start["sent"] and shm.stats["received"] == start["received"]
    assert shm.stats["refused"] > start["refused"]


@gen_cluster(client=True, timeout=60)
async def test_dev_shm_full_sends_over_tcp(c, s, a, b, monkeypatch):
    def full(frame):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(shm, "_write_segment", full)
    start = shm_stats()
    for kind in KINDS:
        await _every_path(c, a.address, b.address, kind, 4 * MB)
    assert shm.stats["received"] == start["received"]
    assert shm.stats["fallback"] > start["fallback"]


def test_only_plain_tcp_on_one_host_is_a_candidate():
    import socket

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        with socket.create_connection(server.getsockname()) as client:
            ours = "tcp://127.0.0.1:1"
            assert shm.Channel.for_socket(client, ours, ours) is not None
            assert shm.Channel.for_socket(client, "tls://127.0.0.1:1", "tls://127.0.0.1:2") is None
            assert shm.Channel.for_socket(None, ours, ours) is None


@gen_test()
async def test_missing_segment_is_a_closed_connection_not_a_wrong_value(monkeypatch):
    received = []

    async def handler(comm):
        try:
            received.append(await comm.read())
            received.append(await comm.read())
        except CommClosedError as e:
            received.append(e)

    async with listen("tcp://127.0.0.1:0", handler) as listener:
        comm = await connect(listener.address)
        await comm.write({"op": "hello"})  # carries our hello
        await async_poll_for(lambda: received, timeout=10)
        # the listener's side has not written yet, so it never told us its
        # hello: pretend it did, then lose the segment before it is read
        comm._shm.peer_ok = True

        def lose(name, nbytes, as_bytes):
            os.unlink(os.path.join(shm.SHM_DIR, name))
            raise FileNotFoundError(name)

        monkeypatch.setattr(shm, "_open_segment", lose)
        await comm.write({"x": Serialize(make_value("numpy", 2 * MB))})
        await async_poll_for(lambda: len(received) == 2, timeout=10)
        assert isinstance(received[1], CommClosedError)
        await comm.close()


# ----------------------------------------------------------------------
# Segments of dead processes
# ----------------------------------------------------------------------


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@gen_test()
async def test_listener_start_removes_segments_of_dead_processes():
    prefix = shm.segment_prefix()
    dead = os.path.join(shm.SHM_DIR, f"{prefix}{_dead_pid()}-7-deadbeef")
    alive = os.path.join(shm.SHM_DIR, f"{prefix}{os.getpid()}-999999-deadbeef")
    stranger = os.path.join(shm.SHM_DIR, "dsk-not-ours")
    for path in (dead, alive, stranger):
        fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
        os.close(fd)
    try:
        async with listen("tcp://127.0.0.1:0", lambda comm: comm.close()):
            pass
        assert not os.path.exists(dead)
        assert os.path.exists(alive) and os.path.exists(stranger)
    finally:
        for path in (dead, alive, stranger):
            if os.path.exists(path):
                os.unlink(path)


# ----------------------------------------------------------------------
# Killed mid-transfer
# ----------------------------------------------------------------------


def _die_while_writing_segments():
    """In a worker: the next segment is half written, then SIGKILL."""
    from distributed.comm import shm as worker_shm

    def write_half_and_die(fd, view):
        os.write(fd, view[: len(view) // 2])
        os.kill(os.getpid(), signal.SIGKILL)

    worker_shm._write_all = write_half_and_die


def _die_while_opening_segments():
    """In a worker: SIGKILL as soon as a segment arrives, before mapping it."""
    from distributed.comm import shm as worker_shm

    def die(name, nbytes, as_bytes):
        os.kill(os.getpid(), signal.SIGKILL)

    worker_shm._open_segment = die


N_KILL = 32 * MB


def test_sender_killed_mid_transfer(loop):
    before = data_segments()
    with cluster(worker_kwargs={"memory_limit": "2GB"}) as (s, [a, b]):
        with Client(s["address"], loop=loop) as c:
            x = c.submit(make_value, "numpy", N_KILL, workers=[a["address"]],
                         allow_other_workers=True)
            wait(x)
            assert list(c.who_has(x)[x.key]) == [a["address"]]
            c.run(_die_while_writing_segments, workers=[a["address"]])
            y = c.submit(is_intact_with_kind, x, "numpy", N_KILL, workers=[b["address"]])
            # a dies half-way through its segment; x is recomputed on b
            assert y.result(timeout=60) == (True, "ndarray")
            a["proc"].join(10)
            assert a["proc"].exitcode == -signal.SIGKILL
        # a's half-written segment: removed by the next listener (here: the sweep)
        shm.sweep_dead_segments()
        assert data_segments() <= before


def test_receiver_killed_mid_transfer(loop):
    before = data_segments()
    with cluster(worker_kwargs={"memory_limit": "2GB"}) as (s, [a, b]):
        with Client(s["address"], loop=loop) as c:
            x = c.submit(make_value, "numpy", N_KILL, workers=[a["address"]])
            wait(x)
            c.run(_die_while_opening_segments, workers=[b["address"]])
            y = c.submit(is_intact_with_kind, x, "numpy", N_KILL, workers=[b["address"]],
                         allow_other_workers=True)
            # b dies holding a segment it never mapped; y runs on a instead
            assert y.result(timeout=60) == (True, "ndarray")
            b["proc"].join(10)
            assert b["proc"].exitcode == -signal.SIGKILL
            # a, still alive, removes the segment b never took once it sees
            # the connection closed
            poll_for(lambda: data_segments() <= before, timeout=20)
            assert c.submit(np.sum, x, workers=[a["address"]]).result() == make_value(
                "numpy", N_KILL).sum()
    shm.sweep_dead_segments()
    assert data_segments() <= before
