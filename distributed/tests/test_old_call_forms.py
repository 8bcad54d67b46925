"""Call forms from dask.distributed 1.15-1.21 and from 2024-2026 that must
keep working: starting a Nanny with a port, tasks that start processes,
long and deep errors, tracebacks that show the user's code, version checks,
and the client's scatter/map/cancel/processing forms.

Each behaviour is tested in the coroutine era (generator tests that
``yield``), in the async era, and through a blocking client where users
call it that way.
"""
from __future__ import annotations

import asyncio
import multiprocessing
import os
import queue
import sys
import threading
import traceback

import pytest

import distributed
from distributed import Client, Nanny, config, futures_of, wait
from distributed.core import Status
from distributed.exceptions import error_message, truncate_exception, user_traceback
from distributed.utils_test import async_wait_for, cluster, gen_cluster, inc
from distributed.versions import VersionMismatchWarning, check_versions, get_versions
from distributed.versions import error_message as versions_message

pytestmark = pytest.mark.timeout(120)

HERE = os.path.abspath(__file__)


# ----------------------------------------------------------------------
# Task functions (module level: the workers import them by reference)
# ----------------------------------------------------------------------


def user_inner(x):
    raise ValueError(f"boom {x}")


def user_outer(x):
    return user_inner(x)


async def user_coroutine(x):
    await asyncio.sleep(0)
    raise KeyError(x)


def calls_into_distributed(x):
    from distributed.spec import open_spec

    return open_spec(x)  # a malformed spec: TypeError raised in our module


def raise_long(n):
    raise ValueError("x" * n)


class NeedsKeyword(Exception):
    """An exception type that cannot be made from positional arguments."""

    def __init__(self, *, text):
        self.text = text
        super().__init__()

    def __str__(self):
        return self.text

    def __reduce__(self):
        return _make_needs_keyword, (self.text,)


def _make_needs_keyword(text):
    return NeedsKeyword(text=text)


def raise_needs_keyword(n):
    raise NeedsKeyword(text="y" * n)


class BadStr(Exception):
    def __str__(self):
        raise RuntimeError("no text for you")


def raise_bad_str():
    raise BadStr("hidden")


def recurse(n):
    if n == 0:
        raise ZeroDivisionError("bottom")
    return recurse(n - 1)


def use_a_process_pool(n):
    # fork: the worker's own modules need not be importable by a fresh
    # interpreter; the pool only runs a builtin.
    with multiprocessing.get_context("fork").Pool(2) as pool:
        return sum(pool.map(abs, range(-n, 0)))


def add3(x, y, z):
    return x + y + z


def frame_names(tb):
    return [f.name for f in traceback.extract_tb(tb)]


def frame_files(tb):
    return [f.filename for f in traceback.extract_tb(tb)]


def assert_no_runner_frames(files):
    """No frame from the worker, the run-spec helpers or the thread pool."""
    bad = ("worker" + os.sep, "spec.py", "threadpool.py", "dask_graphs.py",
           os.path.join("concurrent", "futures"), "_task_spec.py")
    for f in files:
        assert not (f.startswith(os.path.dirname(os.path.dirname(HERE))) and any(b in f for b in bad)), f
        assert "_task_spec.py" not in f and os.path.join("concurrent", "futures") not in f, f


# ----------------------------------------------------------------------
# 1. Nanny.start(port) / yield nanny._start(port)
# ----------------------------------------------------------------------


@gen_cluster(nthreads=[])
def test_nanny_started_with_yield_start_port(s):
    n = Nanny(s.ip, s.port, ncores=2, loop=s.loop)
    result = yield n._start(0)
    assert result is n and n.status == Status.running
    assert n.worker_address in s.workers
    assert s.workers[n.worker_address].nthreads == 2
    yield n._close()
    assert n.status == Status.closed


@gen_cluster(nthreads=[])
async def test_nanny_start_takes_port_or_address(s):
    for where in (0, "127.0.0.1:0", "tcp://127.0.0.1:0", ("127.0.0.1", 0)):
        n = Nanny(s.address, nthreads=1)
        assert await n.start(where) is n
        assert n.ip == "127.0.0.1" and n.port > 0
        assert n.worker_address in s.workers
        await n.close()
        await async_wait_for(lambda: not s.workers, timeout=10)


@gen_cluster(nthreads=[])
async def test_nanny_start_not_awaited_still_starts(s):
    n = Nanny(s.address, nthreads=1)
    n.start(0)  # old code did not wait: the start goes on by itself
    await async_wait_for(lambda: n.status == Status.running, timeout=30)
    assert n.start() is n.start(0)  # the first start's result, again
    assert await n is n
    await n.close()


@gen_cluster(nthreads=[])
async def test_nanny_start_bad_where_is_a_clear_error_and_changes_nothing(s):
    n = Nanny(s.address, nthreads=1)
    with pytest.raises(ValueError, match="has no port"):
        n.start("127.0.0.1")
    with pytest.raises(ValueError, match="out of range"):
        n.start(70000)
    with pytest.raises(TypeError, match="port or an address"):
        n.start(3.5)
    assert n.status == Status.init and n.address is None
    await n.start(0)
    with pytest.raises(ValueError, match="already running"):
        n.start(n.port + 1 if n.port < 65535 else 1)
    assert n.start(n.port) is n.start()
    await n.close()
    with pytest.raises(RuntimeError, match="closed"):
        n.start()


def test_nanny_start_before_the_loop_runs(loop):
    """1.15-era scripts: ``Nanny(..., loop=loop).start(0)`` and then run
    the loop."""
    with cluster(nworkers=0) as (s, []):
        n = Nanny(s["address"], nthreads=1, loop=loop)
        assert n.start(0) is None  # scheduled; nothing runs until the loop does

        async def running():
            await async_wait_for(lambda: n.status == Status.running, timeout=30)
            return n.worker_address

        assert loop.run_sync(running, timeout=60)
        loop.run_sync(n.close, timeout=30)
        assert n.status == Status.closed


# ----------------------------------------------------------------------
# 2. Tasks that start processes: distributed.worker.daemon
# ----------------------------------------------------------------------


@gen_cluster(client=True, nthreads=[("127.0.0.1", 1)], Worker=Nanny,
             config={"distributed.worker.daemon": False})
async def test_task_may_start_processes_when_worker_is_not_daemonic(c, s, n):
    assert n.daemon is False
    assert await c.submit(use_a_process_pool, 3) == 6


@gen_cluster(client=True, nthreads=[("127.0.0.1", 1)], Worker=Nanny)
def test_daemonic_worker_gives_pythons_error(c, s, n):
    assert n.daemon is True  # the default, as upstream
    with pytest.raises(AssertionError, match="daemonic processes are not allowed to have children"):
        yield c.submit(use_a_process_pool, 3)._result()


def test_daemon_setting_from_environment_with_blocking_client(loop, monkeypatch):
    monkeypatch.setenv("DASK_DISTRIBUTED__WORKER__DAEMON", "False")
    with cluster(nworkers=1, nanny=True) as (s, [a]), Client(s["address"], loop=loop) as c:
        assert c.submit(use_a_process_pool, 4).result(timeout=60) == 10


def test_daemon_setting_must_be_a_boolean():
    with config.set({"distributed.worker.daemon": "sometimes"}), \
            pytest.raises(ValueError, match="distributed.worker.daemon.*true or false"):
        Nanny("tcp://127.0.0.1:1")


# ----------------------------------------------------------------------
# 3. Long error messages are truncated
# ----------------------------------------------------------------------


def test_truncate_exception_forms():
    e = ValueError("a" * 50)
    assert truncate_exception(e, 100) is e
    short = truncate_exception(e, 10)
    assert type(short) is ValueError and short.args == ("Long error message", "a" * 10)
    other = truncate_exception(NeedsKeyword(text="b" * 50), 10)
    assert other.args == ("Long error message", "NeedsKeyword", "b" * 10)
    assert truncate_exception(e, None) is e


def test_error_message_survives_unprintable_and_unpicklable_errors():
    msg = error_message(BadStr("hidden"))
    assert msg["status"] == "error" and "str() failed" in msg["text"]

    class Local(Exception):  # not picklable by reference
        pass

    msg = error_message(Local("z" * 20_000))
    assert len(msg["text"]) < 10_100 and "Long error message" in msg["text"]


@gen_cluster(client=True)
def test_long_error_truncated_coroutine_era(c, s, a, b):
    f = c.submit(raise_long, 50_000)
    with pytest.raises(ValueError) as info:
        yield f._result()
    assert info.value.args == ("Long error message", "x" * 10_000)
    exc = yield f._exception()
    assert isinstance(exc, ValueError) and len(str(exc)) < 10_100
    assert s.tasks[f.key].state == "erred"


@gen_cluster(client=True, config={"distributed.admin.max-error-length": 100})
async def test_long_error_truncated_to_configured_length(c, s, a, b):
    with pytest.raises(ValueError) as info:
        await c.submit(raise_long, 1000)
    assert info.value.args == ("Long error message", "x" * 100)
    with pytest.raises(Exception, match="Long error message") as info:
        await c.submit(raise_needs_keyword, 1000)
    assert info.value.args == ("Long error message", "NeedsKeyword", "y" * 100)
    # short errors are untouched; the cluster goes on working
    with pytest.raises(ValueError, match="^boom 1$"):
        await c.submit(user_outer, 1)
    assert await c.submit(inc, 1) == 2


@gen_cluster(client=True)
async def test_error_whose_str_fails_still_reaches_the_client(c, s, a, b):
    with pytest.raises(Exception) as info:
        await c.submit(raise_bad_str)
    assert type(info.value).__name__ == "BadStr"
    assert await c.submit(inc, 2) == 3


@gen_cluster(client=True, config={"distributed.admin.max-error-length": 2000})
async def test_deep_traceback_keeps_innermost_frames(c, s, a, b):
    f = c.submit(recurse, 500)
    with pytest.raises(ZeroDivisionError, match="bottom") as info:
        await f
    tb = await f.traceback()
    names = frame_names(tb)
    assert 1 < len(names) < 500 and set(names) == {"recurse"}
    assert traceback.extract_tb(tb)[-1].line == 'raise ZeroDivisionError("bottom")'
    assert "outer frames omitted" in str(info.value.__cause__)


def test_long_error_truncated_with_blocking_client(loop):
    with cluster(nworkers=1) as (s, [a]), Client(s["address"], loop=loop) as c:
        f = c.submit(raise_long, 30_000)
        with pytest.raises(ValueError) as info:
            f.result(timeout=30)
        assert info.value.args == ("Long error message", "x" * 10_000)
        assert c.submit(inc, 1).result(timeout=30) == 2


# ----------------------------------------------------------------------
# 4. Tracebacks show the user's code
# ----------------------------------------------------------------------


def test_user_traceback_keeps_a_traceback_with_no_user_frame():
    from distributed.spec import open_spec

    try:
        open_spec(None)
    except TypeError as e:
        tb = e.__traceback__
    # this test's frame is a user frame: it is first, our frame follows
    assert frame_names(user_traceback(tb)) == frame_names(tb)
    assert frame_names(user_traceback(tb.tb_next)) == ["open_spec"]  # only ours: kept


@gen_cluster(client=True)
def test_traceback_starts_at_user_code_coroutine_era(c, s, a, b):
    f = c.submit(user_outer, 1)
    tb = yield f._traceback()
    assert frame_names(tb) == ["user_outer", "user_inner"]
    assert frame_files(tb) == [HERE, HERE]


@gen_cluster(client=True)
async def test_reraised_exception_shows_user_frames_in_order(c, s, a, b):
    f = c.submit(user_outer, 2)
    with pytest.raises(ValueError, match="boom 2") as info:
        await f
    names = frame_names(info.value.__traceback__)
    assert names[-2:] == ["user_outer", "user_inner"]
    assert_no_runner_frames(frame_files(info.value.__traceback__))
    remote_text = str(info.value.__cause__)
    assert "user_outer" in remote_text and "user_inner" in remote_text
    assert "_run_in_thread" not in remote_text and "run_spec_call" not in remote_text
    # The rebuilt frames show the user's source line, not markers under it.
    text = "".join(traceback.format_tb(await f.traceback()))
    assert "return user_inner(x)" in text and "^" not in text


@gen_cluster(client=True)
async def test_traceback_of_async_task_and_dask_graph(c, s, a, b):
    f = c.submit(user_coroutine, "k")
    with pytest.raises(KeyError):
        await f
    assert frame_names(await f.traceback()) == ["user_coroutine"]

    dask = pytest.importorskip("dask")
    g = c.compute(dask.delayed(user_outer)(3))
    with pytest.raises(ValueError, match="boom 3"):
        await g
    assert frame_names(await g.traceback()) == ["user_outer", "user_inner"]


@gen_cluster(client=True)
async def test_frames_after_user_code_are_kept(c, s, a, b):
    f = c.submit(calls_into_distributed, "not a spec")
    with pytest.raises(TypeError, match="malformed task specification"):
        await f
    assert frame_names(await f.traceback()) == ["calls_into_distributed", "open_spec"]


def test_traceback_with_blocking_client(loop):
    with cluster(nworkers=1) as (s, [a]), Client(s["address"], loop=loop) as c:
        f = c.submit(user_outer, 4)
        with pytest.raises(ValueError, match="boom 4") as info:
            f.result(timeout=30)
        assert frame_names(f.traceback(timeout=30)) == ["user_outer", "user_inner"]
        assert frame_names(info.value.__traceback__)[-2:] == ["user_outer", "user_inner"]
        assert_no_runner_frames(frame_files(info.value.__traceback__))


# ----------------------------------------------------------------------
# 5. Versions
# ----------------------------------------------------------------------


def test_get_versions_shape_and_extra_packages():
    import msgpack
    import tornado

    v = get_versions(["pytest", "no_such_package_here", ("tornado", lambda m: m.version)])
    assert set(v) == {"host", "packages"}
    assert {"python", "python-bits", "OS", "OS-release", "machine", "processor", "byteorder",
            "LC_ALL", "LANG"} <= set(v["host"])
    p = v["packages"]
    assert p["python"] == ".".join(map(str, sys.version_info))
    assert p["distributed"] == distributed.__version__
    assert p["tornado"] == tornado.version
    assert p["msgpack"] == ".".join(map(str, msgpack.version))
    assert p["pytest"] == pytest.__version__
    assert p["no_such_package_here"] is None
    for name in ("dask", "cloudpickle", "toolz", "numpy", "pandas", "lz4"):
        assert name in p
    with pytest.raises(TypeError, match="package names"):
        get_versions("pytest")
    with pytest.raises(TypeError, match="package names"):
        get_versions([3])


def _versions_with(**changes):
    v = get_versions()
    return {"host": v["host"], "packages": {**v["packages"], **changes}}


def test_version_comparison_names_package_and_versions():
    same = get_versions()
    assert versions_message(same, {"w1": same, "w2": same}, same) == {"error": "", "warning": ""}

    msg = versions_message(same, {"w1": same, "w2": _versions_with(dask="0.0.1")}, same)
    assert msg["warning"] == ""
    assert "dask" in msg["error"] and "0.0.1 (w2)" in msg["error"]
    assert same["packages"]["dask"] in msg["error"]

    msg = versions_message(same, {"w1": _versions_with(numpy="0.1")}, same)
    assert msg["error"] == "" and "numpy" in msg["warning"] and "0.1" in msg["warning"]

    # the scheduler runs no user code: only its required packages count
    assert versions_message(_versions_with(numpy="0.1"), {}, same) == {"error": "", "warning": ""}
    msg = versions_message(_versions_with(tornado="4.5"), {}, same)
    assert "tornado" in msg["error"] and "4.5" in msg["error"]

    # a process that sent nothing is UNKNOWN; a package it lacks is MISSING
    assert "UNKNOWN" in versions_message(same, {"w1": None}, same)["error"]
    lacking = get_versions()
    del lacking["packages"]["msgpack"]
    assert "MISSING" in versions_message(same, {"w1": lacking}, same)["error"]


def test_check_versions_raises_for_required_and_warns_for_others():
    same = get_versions()
    check_versions({"scheduler": same, "workers": {"w": same}, "client": same})
    with pytest.raises(ValueError, match=r"(?s)required packages.*cloudpickle.*9\.9"):
        check_versions({"scheduler": same, "workers": {"w": _versions_with(cloudpickle="9.9")},
                        "client": same})
    with pytest.warns(VersionMismatchWarning, match="pandas"):
        check_versions({"scheduler": same, "workers": {"w": _versions_with(pandas="0.1")}, "client": same})
    with pytest.raises(TypeError, match="get_versions"):
        check_versions({"client": same})


@gen_cluster()
async def test_scheduler_and_worker_report_versions(s, a, b):
    from distributed.core import rpc

    async with rpc(s.address) as r:
        v = await r.versions(packages=["pytest"])
    assert v["packages"]["pytest"] == pytest.__version__ and "host" in v
    async with rpc(a.address) as r:
        v = await r.versions()
    assert v["packages"]["distributed"] == distributed.__version__


@gen_cluster(client=True)
async def test_client_get_versions_shape_and_check(c, s, a, b):
    v = await c.get_versions(check=True, packages=["pytest"])
    assert set(v) == {"scheduler", "workers", "client"}
    assert set(v["workers"]) == {a.address, b.address}
    for part in (v["scheduler"], v["client"], *v["workers"].values()):
        assert set(part) == {"host", "packages"} and part["packages"]["pytest"] == pytest.__version__

    real = a.handlers["versions"]

    def old_tornado(comm=None, packages=None, **kwargs):
        out = real(comm, packages=packages)
        out["packages"]["tornado"] = "4.5.3"
        return out

    a.handlers["versions"] = old_tornado
    assert (await c.get_versions())["workers"][a.address]["packages"]["tornado"] == "4.5.3"
    with pytest.raises(ValueError, match=rf"(?s)tornado.*4\.5\.3 \({a.address}\)"):
        await c.get_versions(check=True)
    with pytest.raises(TypeError, match="package names"):
        await c.get_versions(packages="pytest")


def test_client_get_versions_blocking(loop):
    with cluster(nworkers=1) as (s, [a]), Client(s["address"], loop=loop) as c:
        v = c.get_versions(check=True)
        assert list(v["workers"]) == [a["address"]]
        assert v["scheduler"]["packages"]["distributed"] == distributed.__version__


# ----------------------------------------------------------------------
# 6. scatter of any iterable, and of a queue.Queue
# ----------------------------------------------------------------------


@gen_cluster(client=True)
def test_scatter_return_shapes_coroutine_era(c, s, a, b):
    fs = yield c._scatter([1, 2])
    assert isinstance(fs, list) and len(fs) == 2
    t = yield c._scatter((1, 2))
    assert isinstance(t, tuple) and len(t) == 2
    st = yield c._scatter({1, 2})
    assert isinstance(st, set) and len(st) == 2
    fz = yield c._scatter(frozenset([3]))
    assert isinstance(fz, frozenset)
    g = yield c._scatter(x for x in [4, 5, 6])
    assert isinstance(g, list) and (yield c._gather(g)) == [4, 5, 6]
    r = yield c._scatter(range(3))
    assert isinstance(r, list) and (yield c._gather(r)) == [0, 1, 2]
    d = yield c._scatter({"x": 1, ("y", 0): 2})
    assert set(d) == {"x", ("y", 0)} and d[("y", 0)].key == ("y", 0)
    one = yield c._scatter(7)
    assert isinstance(one, distributed.Future) and (yield one._result()) == 7


@gen_cluster(client=True)
async def test_scatter_of_dict_views_and_to_named_workers(c, s, a, b):
    src = {"a": 1, "b": 2}
    assert await c.gather(await c.scatter(src.keys())) == ["a", "b"]
    assert await c.gather(await c.scatter(src.values())) == [1, 2]
    assert await c.gather(await c.scatter(src.items())) == [("a", 1), ("b", 2)]
    f = await c.scatter(10, workers=a.address)  # one address, not its letters
    assert (await c.who_has(f))[f.key] == [a.address]
    f = await c.scatter(11, workers=("127.0.0.1", b.port))  # old (host, port) form
    assert (await c.who_has(f))[f.key] == [b.address]


@gen_cluster(client=True)
async def test_scatter_queue_async(c, s, a, b):
    q = queue.Queue()
    out = c.scatter(q)
    assert isinstance(out, queue.Queue)
    for i in (10, 20):
        q.put(i)
    await async_wait_for(lambda: out.qsize() == 2, timeout=10)
    f1, f2 = out.get_nowait(), out.get_nowait()
    assert await c.gather([f1, f2]) == [10, 20]
    q.put(StopIteration)
    await async_wait_for(lambda: out.qsize() == 1, timeout=10)
    assert isinstance(out.get_nowait(), StopIteration)
    await async_wait_for(lambda: not feeder_threads(), timeout=10)


def feeder_threads():
    return [t for t in threading.enumerate() if t.name.startswith("Dask-Queue")]


def test_scatter_queue_blocking_and_thread_ends_with_client(loop):
    with cluster() as (s, [a, b]):
        with Client(s["address"], loop=loop) as c:
            q = queue.Queue()
            out = c.scatter(q, maxsize=2)
            q.put("hello")
            f = out.get(timeout=10)
            assert f.result(timeout=10) == "hello"
            assert feeder_threads()  # waiting for more
        assert not feeder_threads()  # close joined it


# ----------------------------------------------------------------------
# 7. map over iterators and queues; several iterables; key and batch_size
# ----------------------------------------------------------------------


@gen_cluster(client=True)
def test_map_over_iterators_and_mixed_iterables(c, s, a, b):
    from operator import add

    fs = c.map(inc, (i for i in range(3)))
    assert isinstance(fs, list) and (yield c._gather(fs)) == [1, 2, 3]
    fs = c.map(add, [1, 2, 3], range(10, 13))
    assert (yield c._gather(fs)) == [11, 13, 15]
    fs = c.map(add3, iter([1, 2]), {"a": 10, "b": 20}.values(), (x for x in [100, 200, 300]))
    assert (yield c._gather(fs)) == [111, 222]
    fs = c.map(inc, range(5), key=[f"k{i}" for i in range(5)])
    assert [f.key for f in fs] == ["k0", "k1", "k2", "k3", "k4"]
    fs = c.map(inc, range(10), batch_size=3)
    assert (yield c._gather(fs)) == list(range(1, 11))
    with pytest.raises(ValueError, match="batch_size"):
        c.map(inc, range(3), batch_size=0)
    with pytest.raises(TypeError, match="Dictionaries"):
        c.map(inc, {"a": 1})


@gen_cluster(client=True)
async def test_map_over_queue_async(c, s, a, b):
    from operator import add

    q = queue.Queue()
    out = c.map(inc, q, key="plus-one")
    assert isinstance(out, queue.Queue)
    for i in range(3):
        q.put(i)
    await async_wait_for(lambda: out.qsize() == 3, timeout=10)
    fs = [out.get_nowait() for _ in range(3)]
    assert all(f.key.startswith("plus-one-") for f in fs)
    assert await c.gather(fs) == [1, 2, 3]
    q.put(StopIteration())
    await async_wait_for(lambda: out.qsize() == 1, timeout=10)
    assert isinstance(out.get_nowait(), StopIteration)

    # a queue next to a finite iterable: they are read in step
    q2 = queue.Queue()
    out2 = c.map(add, q2, range(2))
    for i in (100, 200, 300):
        q2.put(i)
    await async_wait_for(lambda: out2.qsize() == 3, timeout=10)
    got = [out2.get_nowait() for _ in range(3)]
    assert isinstance(got[-1], StopIteration)
    assert await c.gather(got[:2]) == [100, 201]
    await async_wait_for(lambda: not feeder_threads(), timeout=10)

    with pytest.raises(ValueError, match="prefix"):
        c.map(inc, queue.Queue(), key=["a", "b"])


def test_map_over_infinite_queue_blocking(loop):
    """An endless producer: futures come out as items go in, no more than
    the output queue holds are submitted, and closing the client ends the
    feeding thread."""
    stop = threading.Event()
    q = queue.Queue(maxsize=10)

    def produce():
        i = 0
        while not stop.is_set():
            try:
                q.put(i, timeout=0.05)
                i += 1
            except queue.Full:
                pass

    producer = threading.Thread(target=produce, name="test-producer", daemon=True)
    try:
        with cluster() as (s, [a, b]):
            with Client(s["address"], loop=loop) as c:
                producer.start()
                out = c.map(inc, q, maxsize=5)
                futures = [out.get(timeout=10) for _ in range(20)]
                assert c.gather(futures) == list(range(1, 21))
                assert out.qsize() <= 5
            assert not feeder_threads()
    finally:
        stop.set()
        producer.join(10)
    assert not producer.is_alive()


# ----------------------------------------------------------------------
# 8. cancel, release, who_has and gather with tuple keys
# ----------------------------------------------------------------------


@gen_cluster(client=True)
def test_cancel_tuple_keys_coroutine_era(c, s, a, b):
    from distributed.utils_test import slowinc

    x = c.submit(slowinc, 1, delay=0.5, key=("x", 0))
    y = c.submit(inc, 1, key="y")
    z = c.submit(inc, 2, key=("z", 1, "a"))
    yield c._cancel([x, y])
    yield async_wait_for(lambda: ("x", 0) not in s.tasks and "y" not in s.tasks, timeout=10)
    assert x.cancelled() and y.cancelled()
    assert (yield z._result()) == 3
    wh = yield c._who_has([z])
    assert list(wh) == [("z", 1, "a")] and len(wh[("z", 1, "a")]) == 1
    del z
    yield async_wait_for(lambda: ("z", 1, "a") not in s.tasks, timeout=10)


@gen_cluster(client=True)
async def test_tuple_keys_of_dask_arrays_on_every_path(c, s, a, b):
    da = pytest.importorskip("dask.array")
    x = da.arange(10, chunks=5) + 1
    (p,) = c.persist([x])
    fs = futures_of(p)
    keys = {f.key for f in fs}
    assert all(isinstance(k, tuple) for k in keys)
    await wait(fs)
    assert set(await c.who_has(fs)) == keys
    held = set().union(*map(set, (await c.has_what()).values()))
    assert keys <= held
    assert [list(v) for v in await c.gather(fs)] in ([[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]],
                                                    [[6, 7, 8, 9, 10], [1, 2, 3, 4, 5]])
    # cancel a list mixing tuple and string keys
    other = c.submit(inc, 1, key="plain")
    first = fs[0].key
    await c.cancel([fs[0], other])
    await async_wait_for(lambda: first not in s.tasks and "plain" not in s.tasks, timeout=10)
    # release: dropping the last reference forgets the rest
    rest = fs[1].key
    del p, fs, x
    await async_wait_for(lambda: rest not in s.tasks, timeout=10)


def test_cancel_and_gather_tuple_keys_blocking(loop):
    with cluster() as (s, [a, b]), Client(s["address"], loop=loop) as c:
        f = c.submit(inc, 1, key=("t", 0))
        g = c.submit(inc, 2, key="g")
        assert c.gather([f, g]) == [2, 3]
        assert set(c.who_has([f, g])) == {("t", 0), "g"}
        c.cancel([f, g])
        assert f.cancelled() and g.cancelled()
        c.run_on_scheduler(lambda dask_scheduler: None)  # the cancel went before this
        assert c.run_on_scheduler(lambda dask_scheduler: sorted(map(str, dask_scheduler.tasks))) == []


# ----------------------------------------------------------------------
# 9. processing, ncores/nthreads, who_has, has_what shapes
# ----------------------------------------------------------------------


@gen_cluster(client=True)
def test_processing_and_introspection_shapes_coroutine_era(c, s, a, b):
    from distributed.utils_test import slowinc

    fs = c.map(slowinc, range(4), delay=0.3)
    yield async_wait_for(lambda: all(s.tasks.get(f.key) is not None and s.tasks[f.key].state == "processing"
                                     for f in fs), timeout=10)
    p = yield c._processing()
    assert set(p) == {a.address, b.address}
    assert all(isinstance(v, list) for v in p.values())
    assert sorted(k for v in p.values() for k in v) == sorted(f.key for f in fs)
    for f in fs:
        assert f.key in p[s.tasks[f.key].processing_on.address]
    only_a = yield c._processing(workers=[a.address])
    assert list(only_a) == [a.address] and only_a[a.address] == p[a.address]
    assert list((yield c._processing(workers=a.address))) == [a.address]

    nc = yield c._ncores()
    assert nc == {a.address: 1, b.address: 2} == (yield c._nthreads())
    assert (yield c._ncores(workers=("127.0.0.1", b.port))) == {b.address: 2}
    yield c._gather(fs)
    wh = yield c._who_has(fs)
    assert set(wh) == {f.key for f in fs} and all(isinstance(v, list) and len(v) == 1 for v in wh.values())
    hw = yield c._has_what()
    assert set(hw) == {a.address, b.address} and all(isinstance(v, list) for v in hw.values())
    assert sorted(k for v in hw.values() for k in v) == sorted(f.key for f in fs)
    assert list((yield c._has_what(workers=b.address))) == [b.address]


def test_processing_blocking(loop):
    with cluster() as (s, [a, b]), Client(s["address"], loop=loop) as c:
        assert c.processing() == {a["address"]: [], b["address"]: []}
        assert c.nthreads() == c.ncores() == {a["address"]: 1, b["address"]: 1}
