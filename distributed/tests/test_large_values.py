"""Values of every size on every path, and messages over the size limit.

Sizes run from empty to 256 MB (over 1 GB in the ``slow`` tests), through
each way data moves: a task's result, scatter, gather, a transfer between
workers, ``client.run``, published datasets and task arguments; in one
process (``gen_cluster``) and across processes (``cluster()``).  "Just over
100 MB" is one byte past Tornado's default read limit, which once refused
such values with a closed connection that callers retried for ever.

Then the limit itself (``distributed.comm.max-message-size``, set small
here): a message over it fails at once, at the sender before any byte is
written and at a receiver with a larger limit from the prelude, with an
error that names the size, the limit and the setting; each user path turns
that into an exception instead of a hang, and the cluster keeps serving.

Values carry a pattern with a period of 251 bytes (a prime, so a chunk
placed at the wrong offset, zeroed or lost shows), checked without building
a second copy (``is_intact``).
"""
from __future__ import annotations

import asyncio
import logging
import pickle
import re

import numpy as np
import psutil
import pytest

from distributed import Client, config, wait
from distributed.batched import BatchedSend
from distributed.comm import CommClosedError, connect, listen
from distributed.protocol import MessageTooLargeError, Serialize, buffers
from distributed.utils_test import async_wait_for, captured_logger, cluster, gen_cluster, gen_test, inc
from distributed.worker.state import GatherDep, WorkerState

MB = 2**20
#: Tornado's default ``max_buffer_size`` (100 MiB); one byte more.
JUST_OVER_100MB = 104_857_600 + 1
SIZES = [0, 1_000, 64 * MB, JUST_OVER_100MB, 256 * MB]
KINDS = ["bytes", "numpy"]

#: A small limit for the over-the-limit tests, and a value just over it.
SMALL_LIMIT = {"distributed.comm.max-message-size": "1MiB"}
OVER_SMALL_LIMIT = MB + 1
SETTING = "distributed.comm.max-message-size"
ENV_VAR = "DASK_DISTRIBUTED__COMM__MAX_MESSAGE_SIZE"

_PERIOD = 251


# ----------------------------------------------------------------------
# Values (these also run in worker processes)
# ----------------------------------------------------------------------


_WINDOW = 64 * 1024
_WINDOWS = 32
_base = np.resize(np.arange(_PERIOD, dtype=np.uint8), _WINDOW + _PERIOD)


def _fill(view: memoryview) -> None:
    """Write the pattern into ``view`` in one pass: copy what is written so
    far after itself, doubling it each time."""
    n = len(view)
    first = min(n, _PERIOD)
    view[:first] = bytes(range(first))
    filled = first
    while filled < n:  # ``filled`` stays a multiple of the period
        k = min(filled, n - filled)
        view[filled : filled + k] = view[:k]
        filled += k


def make_value(kind: str, n: int):
    """``n`` bytes of the period-251 pattern, as ``bytes`` or a uint8 array,
    written once (no second copy, which matters at 1 GB)."""
    if kind == "bytes" and buffers.SUPPORTED:
        value, view = buffers.new_bytes(n)
        _fill(view)
        del view  # the bytes object is complete: no writable view may remain
        return value
    arr = np.empty(n, dtype=np.uint8)
    _fill(memoryview(arr))
    return arr.tobytes() if kind == "bytes" else arr


def is_intact(value, kind: str, n: int, full: bool = False) -> bool:
    """``value`` is what ``make_value(kind, n)`` made, of the right type.

    By default ``_WINDOWS`` windows of 64 KiB spread over the value (the
    first and the last among them) are compared with the pattern: cheap,
    and a lost, zeroed, truncated or shifted frame shows.  ``full`` checks
    every byte, in pieces (no second copy).
    """
    if kind == "bytes":
        if type(value) is not bytes:
            return False
        arr = np.frombuffer(value, dtype=np.uint8)
    else:
        if not isinstance(value, np.ndarray) or value.dtype != np.uint8 or value.shape != (n,):
            return False
        arr = value
    if arr.size != n:
        return False
    if n == 0:
        return True
    if full:
        if not np.array_equal(arr[:_PERIOD], np.arange(min(n, _PERIOD), dtype=np.uint8)):
            return False
        step = 64 * MB
        return all(np.array_equal(arr[i : min(i + step, n)], arr[i - _PERIOD : min(i + step, n) - _PERIOD])
                   for i in range(_PERIOD, n, step))
    w = min(n, _WINDOW)
    for i in range(_WINDOWS + 1):
        offset = (n - w) * i // _WINDOWS
        shift = offset % _PERIOD
        if not np.array_equal(arr[offset : offset + w], _base[shift : shift + w]):
            return False
    return True


def is_intact_with_kind(value, kind: str, n: int) -> tuple:
    return is_intact(value, kind, n), type(value).__name__


def label(kind: str, n: int) -> str:
    return f"{kind} of {n:,} bytes"


async def released(*workers, timeout: float = 10) -> None:
    """Wait until the workers hold nothing (the test let go of its futures)."""
    await async_wait_for(lambda: all(not w.data for w in workers), timeout=timeout)


# ----------------------------------------------------------------------
# Every size, one process
# ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@gen_cluster(client=True, timeout=60)
async def test_task_results_of_every_size(c, s, a, b, kind):
    for n in SIZES:
        f = c.submit(make_value, kind, n, workers=[a.address])
        assert is_intact(await f, kind, n), label(kind, n)
        del f
        await released(a)


@pytest.mark.parametrize("kind", KINDS)
@gen_cluster(client=True, timeout=60)
async def test_scatter_peer_gather_of_every_size(c, s, a, b, kind):
    for n in SIZES:
        value = make_value(kind, n)
        f = await c.scatter(value, workers=[a.address])
        del value
        assert is_intact(a.data[f.key], kind, n), label(kind, n)
        # b fetches it from a
        assert await c.submit(is_intact, f, kind, n, workers=[b.address]) is True, label(kind, n)
        assert is_intact(b.data[f.key], kind, n)
        assert is_intact(await c.gather(f), kind, n, full=True), label(kind, n)
        del f
        await released(a, b)


@pytest.mark.parametrize("kind", KINDS)
@gen_cluster(client=True, timeout=60)
async def test_run_returns_values_of_every_size(c, s, a, b, kind):
    for n in SIZES:
        out = await c.run(make_value, kind, n, workers=[a.address])
        assert is_intact(out[a.address], kind, n), label(kind, n)


@pytest.mark.parametrize("kind", KINDS)
@gen_cluster(client=True, timeout=60)
async def test_published_datasets_of_every_size(c, s, a, b, kind):
    async with Client(s.address, asynchronous=True) as other:
        for n in SIZES:
            # A value itself travels to the scheduler and back ...
            await c.publish_dataset(make_value(kind, n), name="value")
            assert is_intact(await other.get_dataset("value"), kind, n), label(kind, n)
            await c.unpublish_dataset("value")
            # ... a future's value from the worker that holds it.
            f = c.submit(make_value, kind, n, workers=[a.address])
            await c.publish_dataset(f, name="future")
            g = await other.get_dataset("future")
            assert is_intact(await g, kind, n), label(kind, n)
            await c.unpublish_dataset("future")
            del f, g
            await released(a)


@pytest.mark.parametrize("kind", KINDS)
@gen_cluster(client=True, timeout=60)
async def test_task_arguments_of_every_size(c, s, a, b, kind):
    for n in SIZES:
        ok, typename = await c.submit(is_intact_with_kind, make_value(kind, n), kind, n)
        assert ok, (label(kind, n), typename)


@gen_cluster(client=True, timeout=60)
async def test_tornado_never_refuses_a_message_we_accept(c, s, a, b):
    n = 128 * MB
    loggers = ["tornado.general", "tornado.application", "tornado.access"]
    with captured_logger(loggers[0], logging.DEBUG) as general, \
            captured_logger(loggers[1], logging.DEBUG) as application:
        f = c.submit(make_value, "numpy", n, workers=[a.address])
        assert await c.submit(is_intact, f, "numpy", n, full=True, workers=[b.address]) is True
        assert is_intact(await f, "numpy", n, full=True)
        g = await c.scatter(make_value("bytes", n), workers=[b.address])
        assert is_intact(await g, "bytes", n, full=True)
    logs = general.getvalue() + application.getvalue()
    assert "maximum read buffer" not in logs, logs
    # The cause, on every connection in the cluster: Tornado's limit is at
    # least ours (it was its 100 MB default on connections we opened).
    comms = [comm for server in (s, a, b) for comm in server._comms]
    comms += [comm for pool in (s.rpc, a.rpc, b.rpc, c.connection_pool)
              for comm in (*[x for v in pool.available.values() for x in v],
                           *[x for v in pool.occupied.values() for x in v])]
    assert comms
    for comm in comms:
        assert comm.stream.max_buffer_size >= comm.max_message_size, comm


# ----------------------------------------------------------------------
# Every size, real processes
# ----------------------------------------------------------------------


def test_every_path_and_size_across_processes(loop):
    with cluster(worker_kwargs={"memory_limit": "4GB"}) as (s, [a, b]):
        with Client(s["address"], loop=loop) as c:
            for kind in KINDS:
                for n in SIZES:
                    what = label(kind, n)
                    f = c.submit(make_value, kind, n, workers=[a["address"]])
                    assert is_intact(f.result(), kind, n), ("result", what)
                    # peer transfer of a task's result, a -> b
                    check = c.submit(is_intact, f, kind, n, workers=[b["address"]])
                    assert check.result() is True, ("peer", what)
                    del f, check
                    value = make_value(kind, n)
                    g = c.scatter(value, workers=[a["address"]])
                    assert is_intact(c.gather(g), kind, n), ("scatter, gather", what)
                    del g
                    ok, typename = c.submit(is_intact_with_kind, value, kind, n).result()
                    assert ok, ("task argument", what, typename)
                    c.publish_dataset(value, name="value")
                    del value
                    assert is_intact(c.get_dataset("value"), kind, n), ("dataset", what)
                    c.unpublish_dataset("value")
                    out = c.run(make_value, kind, n, workers=[b["address"]])
                    assert is_intact(out[b["address"]], kind, n), ("run", what)
                    del out


# ----------------------------------------------------------------------
# Over the limit: fails fast, on both ends, and the cluster keeps serving
# ----------------------------------------------------------------------


def assert_names_size_limit_and_setting(e: BaseException, size: int | None = None) -> None:
    text = str(e)
    assert "maximum message size of 1,048,576 bytes" in text, text
    assert SETTING in text and ENV_VAR in text, text
    if size is not None:
        assert f"{size:,} bytes" in text, text


async def assert_still_serving(c) -> None:
    assert await c.submit(inc, 41, pure=False) == 42


@gen_cluster(client=True, config=SMALL_LIMIT, timeout=30)
async def test_result_over_the_limit_fails_gather_with_the_reason(c, s, a, b):
    f = c.submit(make_value, "bytes", OVER_SMALL_LIMIT, workers=[a.address])
    await wait(f)
    with captured_logger("distributed.core") as log:
        with pytest.raises(MessageTooLargeError) as info:
            await f
    assert_names_size_limit_and_setting(info.value)
    assert info.value.size > OVER_SMALL_LIMIT and info.value.direction == "send"
    assert a.address in str(info.value)  # who could not send it
    assert "cannot send" in log.getvalue()  # the worker says so too
    assert f.key in a.data
    await assert_still_serving(c)


@gen_cluster(client=True, config=SMALL_LIMIT, timeout=30)
async def test_scatter_over_the_limit_raises_and_stores_nothing(c, s, a, b):
    with pytest.raises(MessageTooLargeError) as info:
        await c.scatter(make_value("bytes", OVER_SMALL_LIMIT))
    assert_names_size_limit_and_setting(info.value)
    assert not a.data and not b.data and not s.tasks
    await assert_still_serving(c)
    # values that fit one by one travel, however many go to one worker
    values = [make_value("bytes", 600_000)[i:] for i in range(3)]
    futures = await c.scatter(values, workers=[a.address])
    assert await c.gather(futures) == values


@gen_cluster(client=True, config=SMALL_LIMIT, timeout=30)
async def test_task_argument_over_the_limit_fails_the_future(c, s, a, b):
    with captured_logger("distributed.batched") as log:
        f = c.submit(len, make_value("bytes", OVER_SMALL_LIMIT))
        with pytest.raises(MessageTooLargeError) as info:
            await f
    assert_names_size_limit_and_setting(info.value)
    assert "dropped a 'update-graph' message" in log.getvalue()
    assert f.key not in s.tasks
    await assert_still_serving(c)  # the client's stream to the scheduler is intact


@gen_cluster(client=True, config=SMALL_LIMIT, timeout=30)
async def test_peer_transfer_over_the_limit_fails_the_dependent_task(c, s, a, b):
    x = c.submit(make_value, "bytes", OVER_SMALL_LIMIT, workers=[a.address])
    await wait(x)
    y = c.submit(len, x, workers=[b.address])
    with pytest.raises(MessageTooLargeError) as info:
        await y
    assert_names_size_limit_and_setting(info.value)
    assert s.tasks[y.key].state == "erred"
    assert s.tasks[x.key].state == "memory"  # still on a, not lost nor recomputed
    assert x.key not in b.data and b.state.tasks[x.key].state != "flight"
    assert b.state.tasks[y.key].state == "error"
    await assert_still_serving(c)
    # A dependency that fits still travels between the same workers.
    z = c.submit(make_value, "bytes", 1000, workers=[a.address])
    assert await c.submit(len, z, workers=[b.address]) == 1000


@gen_cluster(client=True, config=SMALL_LIMIT, timeout=30)
async def test_run_returning_too_much_raises(c, s, a, b):
    with pytest.raises(MessageTooLargeError) as info:
        await c.run(make_value, "bytes", OVER_SMALL_LIMIT, workers=[a.address])
    assert_names_size_limit_and_setting(info.value)
    assert await c.run(make_value, "bytes", 10, workers=[a.address]) == {a.address: make_value("bytes", 10)}


@gen_cluster(client=True, config=SMALL_LIMIT, timeout=30)
async def test_sender_refuses_before_writing_and_the_connection_stays_usable(c, s, a, b):
    comm = await connect(a.address)
    try:
        with pytest.raises(MessageTooLargeError) as info:
            await comm.write({"op": "echo", "data": Serialize(make_value("bytes", OVER_SMALL_LIMIT))})
        assert_names_size_limit_and_setting(info.value)
        assert info.value.direction == "send" and a.address in str(info.value)
        assert not comm.closed()
        await comm.write({"op": "echo", "data": b"still here"})
        assert await comm.read() == b"still here"
    finally:
        await comm.close()


@gen_cluster(client=True, config=SMALL_LIMIT, timeout=30)
async def test_receiver_refuses_a_larger_peers_message_and_keeps_serving(c, s, a, b):
    size = OVER_SMALL_LIMIT
    comm = await connect(a.address, max_message_size=2**30)  # a peer with a larger limit
    with captured_logger("distributed.core") as log:
        await comm.write({"op": "update_data", "data": {"big": Serialize(make_value("bytes", size))}})
        with pytest.raises(CommClosedError):  # closed after the prelude, payload unread
            await asyncio.wait_for(comm.read(), 10)
    found = re.search(r"refused a message of ([\d,]+) bytes", log.getvalue())
    assert found and int(found.group(1).replace(",", "")) > size, log.getvalue()
    assert SETTING in log.getvalue()
    assert "big" not in a.data
    await assert_still_serving(c)


@gen_cluster(client=True, config=SMALL_LIMIT, timeout=30)
async def test_reply_over_the_readers_smaller_limit_is_refused(c, s, a, b):
    f = await c.scatter(make_value("bytes", 2_000), workers=[a.address])
    comm = await connect(a.address, max_message_size=1_000)  # a reader with a smaller limit
    await comm.write({"op": "get_data", "keys": [f.key]})
    with pytest.raises(MessageTooLargeError) as info:
        await comm.read()
    assert info.value.direction == "receive" and "maximum message size of 1,000 bytes" in str(info.value)
    assert comm.closed()
    assert is_intact(await f, "bytes", 2_000)  # the worker serves on


def test_over_the_limit_across_processes(loop, monkeypatch):
    monkeypatch.setenv(ENV_VAR, "1MiB")  # the worker and scheduler processes read it
    with config.set(SMALL_LIMIT), cluster() as (s, [a, b]):
        with Client(s["address"], loop=loop) as c:
            x = c.submit(make_value, "numpy", OVER_SMALL_LIMIT, workers=[a["address"]])
            wait(x)
            with pytest.raises(MessageTooLargeError) as info:
                x.result()
            assert_names_size_limit_and_setting(info.value)
            y = c.submit(np.sum, x, workers=[b["address"]])
            with pytest.raises(MessageTooLargeError):
                y.result()
            with pytest.raises(MessageTooLargeError):
                c.scatter(make_value("numpy", OVER_SMALL_LIMIT))
            with pytest.raises(MessageTooLargeError):
                c.run(make_value, "bytes", OVER_SMALL_LIMIT)
            assert c.submit(inc, 1, pure=False).result() == 2
            z = c.scatter(make_value("numpy", 1000), workers=[a["address"]])
            assert c.submit(is_intact, z, "numpy", 1000, workers=[b["address"]]).result() is True


# ----------------------------------------------------------------------
# The pieces: the error, the limit setting, batched streams, fetch bundles
# ----------------------------------------------------------------------


def test_too_large_error_travels_in_a_pickle():
    e = MessageTooLargeError(5_000, 1_000, "send", "tcp://127.0.0.1:2", "tcp://127.0.0.1:1")
    e2 = pickle.loads(pickle.dumps(e))
    assert type(e2) is MessageTooLargeError and str(e2) == str(e)
    assert (e2.size, e2.limit, e2.direction, e2.peer, e2.local) == (5_000, 1_000, "send",
                                                                    "tcp://127.0.0.1:2", "tcp://127.0.0.1:1")
    assert isinstance(e, ValueError)
    with pytest.raises(ValueError, match="direction"):
        MessageTooLargeError(1, 1, "sideways")


def test_limit_is_half_the_memory_by_default_and_bad_values_are_clear():
    from distributed.comm.tcp import _memory_size, configured_max_message_size

    assert config.defaults["distributed"]["comm"]["max-message-size"] == "auto"
    with config.set({SETTING: "auto"}):
        assert configured_max_message_size() == _memory_size() // 2
    assert _memory_size() <= psutil.virtual_memory().total
    with config.set({SETTING: "3GiB"}):
        assert configured_max_message_size() == 3 * 2**30
    for bad in ["lots", 0, -5]:
        with config.set({SETTING: bad}), pytest.raises(ValueError, match="max-message-size"):
            configured_max_message_size()


@gen_test()
async def test_every_stream_can_hold_the_configured_limit():
    received = []

    async def handler(comm):
        received.append(comm)

    with config.set({SETTING: "64GiB"}):
        listener = listen("tcp://127.0.0.1:0", handler)
        comm = await connect(listener.address)
        await async_wait_for(lambda: received, timeout=5)
    try:
        for c in (comm, received[0]):
            assert c.max_message_size == 64 * 2**30
            assert c.stream.max_buffer_size >= 64 * 2**30
        with pytest.raises(ValueError, match="positive"):
            comm.max_message_size = 0
    finally:
        comm.abort()
        received[0].abort()
        listener.stop()


@gen_test()
async def test_batched_stream_splits_a_batch_over_the_limit_and_drops_only_a_message_too_large():
    received = []
    dropped = []

    async def handler(comm):
        while True:
            try:
                received.extend(await comm.read())
            except CommClosedError:
                return

    listener = listen("tcp://127.0.0.1:0", handler, max_message_size=MB)
    comm = await connect(listener.address, max_message_size=MB)
    bs = BatchedSend("test", on_too_large=lambda msg, e: dropped.append((msg["i"], e)))
    bs.start(comm)
    try:
        with captured_logger("distributed.batched") as log:
            # queued together, one batch: too large together, each one fits but the third
            chunk = b"x" * (MB // 2)
            bs.send({"i": 0, "data": chunk}, {"i": 1, "data": chunk}, {"i": 2, "data": chunk * 3},
                    {"i": 3, "data": chunk})
            await async_wait_for(lambda: len(received) == 3, timeout=10)
            bs.send({"i": 4})
            await async_wait_for(lambda: len(received) == 4, timeout=10)
        assert [m["i"] for m in received] == [0, 1, 3, 4]
        assert [i for i, _ in dropped] == [2]
        assert isinstance(dropped[0][1], MessageTooLargeError)
        assert "dropped a" in log.getvalue() and SETTING in log.getvalue()
        assert not comm.closed()
    finally:
        bs.abort()
        listener.stop()


def test_worker_state_fails_the_tasks_waiting_for_a_value_that_cannot_travel():
    ws = WorkerState(nthreads=1, data={}, address="tcp://b:1", validate=True)
    instructions = ws.handle_compute_task("y", run_spec="spec", priority=(0,),
                                          who_has={"x": ["tcp://a:1"]}, nbytes={"x": 5 * MB})
    assert instructions == [GatherDep("tcp://a:1", ["x"], 5 * MB)]
    error = {"exception": "E", "traceback": None, "exception_text": "too large", "traceback_text": ""}
    assert ws.handle_gather_dep_error("tcp://a:1", ["x"], error) == []
    ws.validate_state()
    assert ws.tasks["y"].state == "error"
    assert ws.tasks["x"].state != "flight" and not ws.in_flight_workers
    assert [m for m in ws.scheduler_msgs if m["op"] == "task-erred"] == [{"op": "task-erred", "key": "y", **error}]
    assert not [m for m in ws.scheduler_msgs if m["op"] == "missing-data"]  # a is not to blame


def test_worker_state_bundles_fetches_under_the_transfer_limit():
    ws = WorkerState(nthreads=1, data={}, address="tcp://b:1", max_transfer_bytes=10 * MB)
    fetches = ws.handle_compute_task("y", run_spec="spec", priority=(0,),
                                     who_has={"x1": ["tcp://a:1"], "x2": ["tcp://a:1"], "x3": ["tcp://a:1"]},
                                     nbytes={"x1": 6 * MB, "x2": 6 * MB, "x3": 1 * MB})
    assert len(fetches) == 1 and fetches[0].nbytes <= 10 * MB  # one peer at a time
    first = fetches[0]
    later = ws.handle_gather_dep_success(first.worker, first.keys, {k: b"" for k in first.keys})
    assert len(later) == 1 and later[0].nbytes <= 10 * MB
    assert sorted(first.keys + later[0].keys) == ["x1", "x2", "x3"]


# ----------------------------------------------------------------------
# Over 1 GB
# ----------------------------------------------------------------------


def _available_memory() -> int:
    return psutil.virtual_memory().available


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
@gen_cluster(client=True, timeout=300)
async def test_a_value_over_1gb_goes_scatter_peer_gather_intact(c, s, a, b, kind):
    if _available_memory() < 8 * 2**30:
        pytest.skip("needs 8 GB of free memory: up to four 1 GB copies live in this process")
    n = 2**30 + 7
    f = await c.scatter(make_value(kind, n), workers=[a.address])  # no copy kept here
    assert await c.submit(is_intact, f, kind, n, full=True, workers=[b.address]) is True
    del a.data[f.key]  # drop one copy before the third arrives (b still holds it)
    assert is_intact(await c.gather(f), kind, n, full=True)


@pytest.mark.slow
@gen_test(timeout=300)
async def test_a_single_3gb_bytes_frame_travels_when_the_limit_allows():
    """Frames over 2 and 4 GiB: 64-bit lengths, and socket calls that may
    each move less than asked."""
    if _available_memory() < 10 * 2**30:
        pytest.skip("needs 10 GB of free memory: the value and its received copy")
    n = 3 * 10**9
    received = []

    async def handler(comm):
        received.append(await comm.read())
        await comm.write("thanks")

    with config.set({SETTING: "4GiB"}):
        listener = listen("tcp://127.0.0.1:0", handler)
        comm = await connect(listener.address)
    try:
        value = make_value("bytes", n)
        await comm.write({"data": Serialize(value)})
        assert await comm.read() == "thanks"
        del value
        got = received.pop()["data"]
        assert is_intact(got, "bytes", n, full=True)
    finally:
        await comm.close()
        listener.stop()
