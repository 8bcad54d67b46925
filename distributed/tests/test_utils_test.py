"""The test harness itself: gen_cluster, gen_test, clean, popen, cluster and
the task helpers."""
from __future__ import annotations

import asyncio
import logging
import socket
import subprocess
import sys
import threading

import pytest

from distributed import Client, Scheduler, Worker, config
from distributed.utils_test import (
    add,
    async_wait_for,
    asyncinc,
    captured_logger,
    clean,
    cluster,
    dec,
    div,
    double,
    gen_cluster,
    gen_test,
    geninc,
    inc,
    mul,
    popen,
    randominc,
    slowadd,
    slowdec,
    slowidentity,
    slowinc,
    slowsum,
    throws,
    varying,
    wait_for,
    wait_for_port,
)

# ----------------------------------------------------------------------
# gen_cluster
# ----------------------------------------------------------------------


@gen_cluster()
async def test_gen_cluster_default_is_scheduler_and_two_workers(s, a, b):
    assert isinstance(s, Scheduler)
    assert isinstance(a, Worker) and isinstance(b, Worker)
    assert (a.nthreads, b.nthreads) == (1, 2)
    assert set(s.workers) == {a.address, b.address}
    assert s.validate and a.validate
    for addr in (s.address, a.address, b.address):
        assert addr.startswith("tcp://127.0.0.1:")


@gen_cluster(ncores=[("127.0.0.1", 3)])
async def test_gen_cluster_ncores(s, a):
    assert a.nthreads == 3
    assert list(s.workers) == [a.address]


@gen_cluster(nthreads=[("127.0.0.1", 1)] * 3)
async def test_gen_cluster_nthreads_three_workers(s, a, b, c):
    assert len(s.workers) == 3
    assert {w.name for w in (a, b, c)} == {0, 1, 2}


@gen_cluster(nthreads=[])
async def test_gen_cluster_without_workers(s):
    assert not s.workers


@gen_cluster(nthreads=[("127.0.0.1", 1, {"resources": {"GPU": 2}, "name": "gpu"})],
             worker_kwargs={"memory_limit": "1GB"})
async def test_gen_cluster_per_worker_kwargs(s, a):
    assert a.name == "gpu"
    assert a.resources == {"GPU": 2}
    assert a.memory_limit == 1_000_000_000
    assert s.workers[a.address].resources == {"GPU": 2}


def test_gen_cluster_refuses_both_ncores_and_nthreads():
    with pytest.raises(TypeError, match="not both"):
        gen_cluster(ncores=[("127.0.0.1", 1)], nthreads=[("127.0.0.1", 1)])


@gen_cluster(client=True)
def test_gen_cluster_generator_test_with_client(c, s, a, b):
    assert isinstance(c, Client)
    future = c.submit(inc, 1)
    result = yield future
    assert result == 2
    assert future.key in s.tasks


@gen_cluster(client=True)
async def test_gen_cluster_async_test_with_client(c, s, a, b):
    futures = c.map(inc, range(10))
    assert await c.gather(futures) == list(range(1, 11))


@gen_cluster(config={"distributed.scheduler.allowed-failures": 7})
async def test_gen_cluster_applies_config(s, a, b):
    assert config.get("distributed.scheduler.allowed-failures") == 7
    assert s.state.allowed_failures == 7


@gen_cluster(scheduler_kwargs={"allowed_failures": 5})
async def test_gen_cluster_scheduler_kwargs(s, a, b):
    assert s.state.allowed_failures == 5


def test_gen_cluster_timeout_fails_the_test():
    @gen_cluster(timeout=0.5)
    async def hangs(s, a, b):
        await asyncio.Event().wait()

    with pytest.raises(asyncio.TimeoutError, match="did not finish within 0.5 s"):
        hangs()


def test_gen_cluster_keeps_a_timeout_error_raised_by_the_test_body():
    @gen_cluster(nthreads=[])
    async def raises(s):
        raise asyncio.TimeoutError("the test's own timeout")

    with pytest.raises(asyncio.TimeoutError, match="the test's own timeout"):
        raises()


def test_gen_cluster_reports_invalid_scheduler_state():
    @gen_cluster(nthreads=[])
    async def corrupts(s):
        from distributed.scheduler.state import TaskState

        ts = TaskState("x", None, "x")
        ts.state = "memory"  # in memory, but no worker holds it
        s.state.tasks["x"] = ts

    with pytest.raises(AssertionError, match="memory task without holders"):
        corrupts()


def test_gen_cluster_passes_pytest_parameters_through():
    seen = []

    @gen_cluster(nthreads=[("127.0.0.1", 1)])
    async def takes_param(s, a, x):
        seen.append((a.nthreads, x))

    takes_param(x=5)
    assert seen == [(1, 5)]


# ----------------------------------------------------------------------
# gen_test
# ----------------------------------------------------------------------


@gen_test()
async def test_gen_test_async():
    assert await asyncinc(1, delay=0) == 2
    async with Scheduler(port=0, host="127.0.0.1") as s:
        assert s.address.startswith("tcp://127.0.0.1:")


@gen_test()
def test_gen_test_generator():
    result = yield geninc(1, delay=0)
    assert result == 2


@gen_test
async def test_gen_test_without_parentheses():
    assert await asyncinc(2, delay=0) == 3


def test_gen_test_timeout_fails_the_test():
    @gen_test(timeout=0.2)
    async def hangs():
        await asyncio.Event().wait()

    with pytest.raises(asyncio.TimeoutError):
        hangs()


def test_gen_test_runs_each_test_on_a_fresh_loop():
    loops = []

    @gen_test()
    async def record():
        loops.append(asyncio.get_running_loop())

    record()
    record()
    assert loops[0] is not loops[1]
    assert all(loop.is_closed() for loop in loops)


# ----------------------------------------------------------------------
# clean(): leak detection
# ----------------------------------------------------------------------


def test_clean_passes_when_nothing_leaks():
    with clean(timeout=1):
        t = threading.Thread(target=lambda: None)
        t.start()
        t.join()


def test_clean_waits_for_threads_that_end_soon():
    release = threading.Event()
    with clean(timeout=10):
        t = threading.Thread(target=release.wait, name="ends-soon")
        t.start()
        release.set()
    t.join()


def test_clean_catches_leaked_thread():
    stop = threading.Event()
    t = None
    try:
        with pytest.raises(AssertionError, match=r"threads leaked: \['leaky-thread'\]"):
            with clean(processes=False, sockets=False, timeout=0.2):
                t = threading.Thread(target=stop.wait, name="leaky-thread", daemon=True)
                t.start()
    finally:
        stop.set()
        if t is not None:
            t.join(5)


def test_clean_catches_leaked_socket():
    sock = None
    try:
        with pytest.raises(AssertionError, match="sockets leaked"):
            with clean(threads=False, processes=False, timeout=0.2):
                sock = socket.socket()
                sock.bind(("127.0.0.1", 0))
                sock.listen()
    finally:
        if sock is not None:
            sock.close()


def test_clean_catches_leaked_child_process_and_kills_it():
    proc = None
    with pytest.raises(AssertionError, match="child processes leaked"):
        with clean(threads=False, sockets=False, timeout=0.2):
            proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                                    stdin=subprocess.PIPE)
    assert proc.wait(10) != 0, "clean() killed the leaked child"
    proc.stdin.close()


def test_clean_lists_every_kind_of_leak_at_once():
    stop = threading.Event()
    sock = socket.socket()
    try:
        with pytest.raises(AssertionError) as info:
            with clean(processes=False, timeout=0.2):
                threading.Thread(target=stop.wait, name="leak-2", daemon=True).start()
                sock.bind(("127.0.0.1", 0))
                sock.listen()
        assert "threads leaked" in str(info.value) and "sockets leaked" in str(info.value)
    finally:
        stop.set()
        sock.close()


def test_gen_test_catches_leaked_thread():
    stop = threading.Event()

    @gen_test(clean_kwargs={"timeout": 0.2})
    async def leaks():
        threading.Thread(target=stop.wait, name="gen-test-leak", daemon=True).start()

    try:
        with pytest.raises(AssertionError, match="gen-test-leak"):
            leaks()
    finally:
        stop.set()


# ----------------------------------------------------------------------
# popen and cluster
# ----------------------------------------------------------------------


def test_popen_runs_a_command_and_interrupts_it():
    code = "import sys; print('ready', flush=True); sys.stdin.read()"
    with popen([sys.executable, "-c", code], stdin=subprocess.PIPE, flush_output=False) as proc:
        assert proc.stdout.readline() == b"ready\n"
        assert proc.poll() is None
    assert proc.poll() is not None, "still running after the block"
    proc.stdin.close()


def test_popen_kills_a_command_that_ignores_sigint():
    code = ("import signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); "
            "print('ready', flush=True); sys.stdin.read()")
    with popen([sys.executable, "-c", code], stdin=subprocess.PIPE, flush_output=False,
               terminate_timeout=0.5) as proc:
        assert proc.stdout.readline() == b"ready\n"
    assert proc.returncode == -9
    proc.stdin.close()


def test_popen_finds_dask_commands_without_installed_scripts():
    with popen(["dask-worker", "--help"], flush_output=False) as proc:
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert b"usage: dask-worker" in out


def test_popen_after_communicate_exits_cleanly():
    with popen([sys.executable, "-c", "print('hi')"]) as proc:
        out, _ = proc.communicate(timeout=60)
    assert out == b"hi\n"


def test_cluster_starts_processes_and_stops_them(loop):
    with cluster(nworkers=2) as (s, workers):
        procs = [s["proc"]] + [w["proc"] for w in workers]
        assert all(p.is_alive() for p in procs)
        wait_for_port(s["address"])
        assert s["address"] == f"tcp://127.0.0.1:{s['port']}"
        with Client(s["address"], loop=loop) as c:
            assert set(c.nthreads()) == {w["address"] for w in workers}
            assert c.submit(inc, 1).result() == 2
    assert not any(p.is_alive() for p in procs)


# ----------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------


def test_task_helpers():
    assert inc(1) == 2 and dec(1) == 0
    assert add(1, 2) == 3 and mul(2, 3) == 6 and div(6, 3) == 2 and double(4) == 8
    with pytest.raises(RuntimeError, match="hello"):
        throws(1)
    assert slowinc(1, delay=0) == 2 and slowdec(1, delay=0) == 0
    assert slowadd(1, 2, delay=0) == 3 and slowsum([1, 2, 3], delay=0) == 6
    assert slowidentity(5, delay=0) == 5 and slowidentity(1, 2, delay=0) == (1, 2)
    assert randominc(1, scale=0) == 2


def test_varying_returns_items_in_turn_and_raises_exceptions():
    f = varying([1, ValueError("second"), 3])
    assert f() == 1
    with pytest.raises(ValueError, match="second"):
        f()
    assert f() == 3
    assert f() == 3, "the last item repeats"


@gen_cluster(client=True)
async def test_task_helpers_run_on_a_cluster(c, s, a, b):
    assert await c.submit(slowinc, 1, delay=0.001) == 2
    assert await c.submit(asyncinc, 1, delay=0.001) == 2
    with pytest.raises(RuntimeError, match="hello"):
        await c.submit(throws, 1)


def test_wait_for_raises_on_timeout():
    wait_for(lambda: True, timeout=0.1)
    with pytest.raises(AssertionError, match="not met within"):
        wait_for(lambda: False, timeout=0.05)


@gen_test()
async def test_async_wait_for_raises_on_timeout():
    flag = []
    asyncio.get_running_loop().call_soon(flag.append, 1)
    await async_wait_for(lambda: flag, timeout=5)
    with pytest.raises(AssertionError, match="not met within"):
        await async_wait_for(lambda: False, timeout=0.05)


def test_captured_logger_captures_and_restores():
    log = logging.getLogger("distributed.test.captured")
    level = log.level
    with captured_logger("distributed.test.captured", level=logging.INFO) as out:
        log.info("hello %s", "world")
        log.debug("not shown")
    assert out.getvalue() == "hello world\n"
    assert log.level == level
    log.info("after")
    assert "after" not in out.getvalue()


def test_wait_for_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        wait_for_port(("127.0.0.1", port), timeout=5)
        wait_for_port(f"tcp://127.0.0.1:{port}", timeout=5)
    with pytest.raises(OSError):
        wait_for_port(("127.0.0.1", port), timeout=0.05)
