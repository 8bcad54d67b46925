"""The same-host fast path (``distributed.comm.shm``).

Values of every size around the threshold go through every path (a task's
result, scatter, gather, a transfer between workers) in one process
(``gen_cluster``) and across processes (``cluster()``), checked bytewise,
with the counters showing whether the fast path carried them.  Then the
fallbacks (disabled by config, a peer on "another host", a peer whose
memory cannot be read, no socket for the acknowledgement), a copy that
fails mid-message, and a sender and a receiver killed mid-transfer: the
dependent task still computes, and nothing is left in ``/dev/shm``.
"""
from __future__ import annotations

import errno
import os
import signal
import socket

import numpy as np
import pytest

from distributed import Client, config, wait
from distributed.comm import CommClosedError, connect, listen, shm
from distributed.protocol import Serialize
from distributed.tests.test_large_values import is_intact, is_intact_with_kind, make_value
from distributed.utils_test import async_poll_for, cluster, gen_cluster, gen_test

pytestmark = pytest.mark.skipif(not shm.available(),
                                reason="needs Linux with process_vm_readv and no Yama ptrace "
                                       "restriction")

MB = 2**20
THRESHOLD = MB  # the default of distributed.comm.shm.threshold
KINDS = ["bytes", "numpy"]
SMALL_SIZES = [0, 1_000, THRESHOLD - 1, THRESHOLD + 1, 64 * MB]


def dev_shm() -> set[str]:
    """What is in /dev/shm (the fast path must never put anything there)."""
    return set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()


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
    before = dev_shm()
    for n in SMALL_SIZES:
        start = shm_stats()
        await _every_path(c, a.address, b.address, kind, n)
        used = shm.stats["received"] - start["received"]
        if n > THRESHOLD:  # result, peer, scatter, gather, peer again
            assert used >= 5, (n, shm.stats, start)
        else:
            assert used == 0, (n, shm.stats, start)
    assert shm.stats["refused"] == 0
    assert dev_shm() <= before


def test_every_path_and_size_across_processes(loop):
    before = dev_shm()
    with cluster(worker_kwargs={"memory_limit": "4GB"}) as (s, [a, b]):
        with Client(s["address"], loop=loop) as c:
            start = c.run(shm_stats)
            for kind in KINDS:
                for n in [*SMALL_SIZES, 256 * MB]:
                    _every_path_sync(c, a["address"], b["address"], kind, n)
            end = c.run(shm_stats)
            # both workers received by copy (peer transfers, scatters)
            for w in (a["address"], b["address"]):
                assert end[w]["received"] - start[w]["received"] >= 4, (w, start, end)
                assert end[w]["refused"] == 0
    assert dev_shm() <= before


@gen_test()
async def test_comm_round_trip_copies_once_into_fresh_memory():
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
        # backed by a fresh huge-page buffer (protocol/buffers.py), not shared
        assert not np.shares_memory(reply["x"], x)
        base = reply["x"]
        while getattr(base, "base", None) is not None and not isinstance(base, memoryview):
            base = base.base
        assert isinstance(base, memoryview) and type(base.obj).__name__ == "mmap"
        # the second message from us takes the fast path too (the echo's hello)
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
async def test_peer_whose_memory_cannot_be_read_uses_tcp(c, s, a, b, monkeypatch):
    # a peer in another container or pid namespace, or a seccomp profile
    # that forbids process_vm_readv: the hello's token cannot be read
    def refuse(pid, address, target):
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(shm, "_read_remote", refuse)
    start = shm_stats()
    for kind in KINDS:
        await _every_path(c, a.address, b.address, kind, 4 * MB)
    assert shm.stats["sent"] == start["sent"] and shm.stats["received"] == start["received"]
    assert shm.stats["refused"] > start["refused"]


@gen_cluster(client=True, timeout=60)
async def test_no_socket_for_the_acknowledgement_sends_over_tcp(c, s, a, b, monkeypatch):
    def exhausted():
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(shm, "_ack_socket", exhausted)
    start = shm_stats()
    for kind in KINDS:
        await _every_path(c, a.address, b.address, kind, 4 * MB)
    assert shm.stats["received"] == start["received"]
    assert shm.stats["fallback"] > start["fallback"]


def test_only_plain_tcp_on_one_host_is_a_candidate(monkeypatch):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        with socket.create_connection(server.getsockname()) as client:
            ours = "tcp://127.0.0.1:1"
            assert shm.Channel.for_socket(client, ours, ours) is not None
            assert shm.Channel.for_socket(client, "tls://127.0.0.1:1", "tls://127.0.0.1:2") is None
            assert shm.Channel.for_socket(None, ours, ours) is None
            # Yama's ptrace_scope 1 lets a process read only its children
            real = shm._read_text
            monkeypatch.setattr(shm, "_read_text",
                                lambda path: "1" if "yama" in path else real(path))
            assert not shm.available()
            assert shm.Channel.for_socket(client, ours, ours) is None


@gen_test()
async def test_failed_copy_is_a_closed_connection_not_a_wrong_value(monkeypatch):
    received = []

    async def handler(comm):
        try:
            received.append(await comm.read())
            await comm.write({"op": "hello back"})  # carries the listener's hello
            received.append(await comm.read())
        except CommClosedError as e:
            received.append(e)

    async with listen("tcp://127.0.0.1:0", handler) as listener:
        comm = await connect(listener.address)
        await comm.write({"op": "hello"})  # carries our hello
        assert (await comm.read()) == {"op": "hello back"}
        assert comm._shm.peer is not None

        def writer_died(pid, address, target):
            raise ProcessLookupError(errno.ESRCH, "No such process")

        monkeypatch.setattr(shm, "_read_remote", writer_died)
        # the reader fails the copy, says so, and closes: our write fails too
        with pytest.raises(CommClosedError, match="could not copy"):
            await comm.write({"x": Serialize(make_value("numpy", 2 * MB))})
        await async_poll_for(lambda: len(received) == 2, timeout=10)
        assert isinstance(received[1], CommClosedError)
        await comm.close()


@gen_test()
async def test_writer_gives_up_on_a_live_reader_that_never_acknowledges(monkeypatch):
    """The writer's wait has a deadline (distributed.comm.timeouts.tcp)."""
    received = []

    async def handler(comm):
        try:
            received.append(await comm.read())
            await comm.write({"op": "hello back"})
            received.append(await comm.read())
        except CommClosedError as e:
            received.append(e)

    with config.set({"distributed.comm.timeouts.tcp": "1s"}):
        async with listen("tcp://127.0.0.1:0", handler) as listener:
            comm = await connect(listener.address)
            await comm.write({"op": "hello"})
            await comm.read()
            monkeypatch.setattr(shm, "_acknowledge", lambda name, answer: None)
            with pytest.raises(CommClosedError, match="did not take"):
                await comm.write({"x": Serialize(make_value("numpy", 2 * MB))})
            assert comm.closed()
            # the reader got the value itself, whole: only the answer was lost
            await async_poll_for(lambda: len(received) >= 2, timeout=10)
            assert is_intact(received[1]["x"], "numpy", 2 * MB, full=True)


# ----------------------------------------------------------------------
# Killed mid-transfer
# ----------------------------------------------------------------------


def _die_before_the_copy():
    """In a worker: SIGKILL right after sending descriptors (they are
    flushed), before the peer copies the frames."""
    from distributed.comm import shm as worker_shm

    async def die(self, ack, peer_address):
        os.kill(os.getpid(), signal.SIGKILL)

    worker_shm.Channel.wait_acknowledged = die


def _die_while_copying():
    """In a worker: SIGKILL as it starts copying a frame from its peer."""
    from distributed.comm import shm as worker_shm

    real = worker_shm._read_remote

    def die(pid, address, target):
        if len(target) > 16:  # not a hello's token
            os.kill(os.getpid(), signal.SIGKILL)
        real(pid, address, target)

    worker_shm._read_remote = die


def _copy_only_once_dead(pid: int):
    """In a worker: copy frames only once process ``pid`` is gone, so the
    copy meets a dead writer every time."""
    import time

    from distributed.comm import shm as worker_shm

    real = worker_shm._read_remote

    def late(peer, address, target):
        if len(target) > 16:  # not a hello's token
            deadline = time.monotonic() + 30
            while worker_shm._pid_alive(pid):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"process {pid} still alive after 30 s")
                time.sleep(0.01)
        real(peer, address, target)

    worker_shm._read_remote = late


N_KILL = 32 * MB


def test_sender_killed_mid_transfer(loop):
    before = dev_shm()
    with cluster(worker_kwargs={"memory_limit": "2GB"}) as (s, [a, b]):
        with Client(s["address"], loop=loop) as c:
            x = c.submit(make_value, "numpy", N_KILL, workers=[a["address"]],
                         allow_other_workers=True)
            wait(x)
            assert list(c.who_has(x)[x.key]) == [a["address"]]
            pid_a = c.run(os.getpid, workers=[a["address"]])[a["address"]]
            c.run(_copy_only_once_dead, pid_a, workers=[b["address"]])
            c.run(_die_before_the_copy, workers=[a["address"]])
            y = c.submit(is_intact_with_kind, x, "numpy", N_KILL, workers=[b["address"]])
            # a dies before b has copied x; x is recomputed on b
            assert y.result(timeout=60) == (True, "ndarray")
            a["proc"].join(10)
            assert a["proc"].exitcode == -signal.SIGKILL
    assert dev_shm() <= before


def test_receiver_killed_mid_transfer(loop):
    before = dev_shm()
    with cluster(worker_kwargs={"memory_limit": "2GB"}) as (s, [a, b]):
        with Client(s["address"], loop=loop) as c:
            x = c.submit(make_value, "numpy", N_KILL, workers=[a["address"]])
            wait(x)
            c.run(_die_while_copying, workers=[b["address"]])
            y = c.submit(is_intact_with_kind, x, "numpy", N_KILL, workers=[b["address"]],
                         allow_other_workers=True)
            # b dies copying x; y runs on a instead
            assert y.result(timeout=60) == (True, "ndarray")
            b["proc"].join(10)
            assert b["proc"].exitcode == -signal.SIGKILL
            # a stopped waiting for b's acknowledgement and still serves x
            total = c.submit(np.sum, x, workers=[a["address"]]).result(timeout=30)
            assert total == make_value("numpy", N_KILL).sum()
    assert dev_shm() <= before
