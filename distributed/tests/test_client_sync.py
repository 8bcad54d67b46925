"""The blocking Client API against a scheduler and workers in other processes.

Every test runs ``with cluster() as (s, [a, b])`` (two single-threaded worker
processes) and a blocking ``Client`` whose event loop runs in a thread.
Tasks run in the worker processes, so they coordinate with the test through
files, never through module state.
"""
from __future__ import annotations

import concurrent.futures
import os
import threading
import traceback

import pytest

from distributed import (
    CancelledError,
    Client,
    Future,
    TimeoutError,
    as_completed,
    default_client,
    fire_and_forget,
    get_client,
    rejoin,
    secede,
    wait,
    worker_client,
)
from distributed.utils_test import add, cluster, double, inc, throws, wait_for

# ----------------------------------------------------------------------
# Tasks (imported by the worker processes)
# ----------------------------------------------------------------------


def wait_for_path(path, x=None, timeout=10):
    """Block until ``path`` exists (AssertionError after ``timeout``); returns ``x``."""
    wait_for(lambda: os.path.exists(path), timeout=timeout)
    return x


def touch(path):
    with open(path, "w"):
        pass


def fail_until(path, n):
    """Fail the first ``n`` calls (counted in ``path``, across processes)."""
    with open(path, "a") as f:
        f.write("x")
    with open(path) as f:
        count = len(f.read())
    if count <= n:
        raise ValueError(f"attempt {count} fails")
    return count


def write_file(path, text="done"):
    with open(path, "w") as f:
        f.write(text)
    return path


def import_and_call(modname):
    import importlib

    return importlib.import_module(modname).value()


def sum_dict(d):
    return sum(d.values())


def fib(n):
    if n < 2:
        return n
    with worker_client() as client:
        a = client.submit(fib, n - 1)
        b = client.submit(fib, n - 2)
        return a.result() + b.result()


def submit_and_gather(n):
    client = get_client()
    futures = client.map(inc, range(n))
    secede()
    results = client.gather(futures)
    rejoin()
    return sum(results)


def scheduler_has(key, dask_scheduler=None):
    return key in dask_scheduler.tasks


def tree_reduction_graph(n):
    """A pairwise reduction over ``n`` leaves: ``2n - 1`` tasks."""
    dsk = {f"leaf-{i}": (inc, i) for i in range(n)}
    layer = [f"leaf-{i}" for i in range(n)]
    depth = 0
    while len(layer) > 1:
        depth += 1
        nxt = [f"sum-{depth}-{j}" for j in range(0, len(layer) - 1, 2)]
        for j, k in zip(range(0, len(layer) - 1, 2), nxt):
            dsk[k] = (add, layer[j], layer[j + 1])
        if len(layer) % 2:
            nxt.append(layer[-1])
        layer = nxt
    return dsk, layer[0]


def forgotten(c, key):
    return not c.run_on_scheduler(scheduler_has, key)


# ----------------------------------------------------------------------
# submit / map / gather
# ----------------------------------------------------------------------


def test_submit_map_gather(loop):
    with cluster() as (s, [a, b]):
        with Client(s["address"], loop=loop) as c:
            x = c.submit(inc, 1)
            assert c.submit(inc, 1).key == x.key
            assert c.submit(inc, 1, pure=False).key != x.key
            assert c.submit(inc, 1, key="mine").key == "mine"
            y = c.submit(add, x, y=10)
            z = c.submit(sum_dict, {"a": x, "b": [y][0]})
            w = c.submit(sum, [x, (y, 1)[0]])
            assert y.result() == 12
            assert c.gather([x, {"y": y, "zw": (z, w)}, "literal"]) == [2, {"y": 12, "zw": (14, 14)}, "literal"]
            squares = c.map(double, iter(range(5)), key="dbl")
            assert all(f.key.startswith("dbl-") for f in squares)
            assert c.gather(squares) == [0, 2, 4, 6, 8]
            assert c.gather(c.map(add, [1, 2, 3], [10, 20, 30])) == [11, 22, 33]
            assert [f.key for f in c.map(inc, [1, 2], key=["k1", "k2"])] == ["k1", "k2"]


def test_submit_retries_until_success(loop, tmp_path):
    counter = str(tmp_path / "attempts")
    with cluster() as (s, [a, b]):
        with Client(s["address"], loop=loop) as c:
            assert c.submit(fail_until, counter, 2, retries=2).result() == 3
            counter2 = str(tmp_path / "attempts2")
            with pytest.raises(ValueError, match="attempt 2 fails"):
                c.submit(fail_until, counter2, 2, retries=1).result()


def test_submit_workers_and_allow_other_workers(loop):
    with cluster() as (s, [a, b]):
        with Client(s["address"], loop=loop) as c:
            futures = c.map(inc, range(4), workers=[b["address"]])
            wait(futures)
            assert all(holders == [b["address"]] for holders in c.who_has(futures).values())
            by_name = c.submit(inc, 100, workers=[0])  # worker names in cluster() are 0 and 1
            assert by_name.result() == 101
            assert c.who_has([by_name])[by_name.key] == [a["address"]]
            loose = c.submit(inc, 200, workers=["tcp://127.0.0.1:1"], allow_other_workers=True)
            assert loose.result() == 201


def test_errors_reraised_with_remote_traceback(loop):
    with cluster() as (s, [a, b]):
        with Client(s["address"], loop=loop) as c:
            future = c.submit(throws, 1)
            with pytest.raises(RuntimeError, match="hello!"):
                future.result()
            assert future.status == "error"
            assert isinstance(future.exception(), RuntimeError)
            assert any("throws" in line for line in traceback.format_tb(future.traceback()))
            with pytest.raises(RuntimeError, match="hello!"):
                c.gather([future])
            assert c.gather([future, c.submit(inc, 1)], errors="skip") == [2]
            with pytest.raises(TypeError, match="lock"):
                c.submit(inc, threading.Lock())


def test_result_timeout(loop, tmp_path):
    flag = str(tmp_path / "go")
    with cluster() as (s, [a, b]):
        with Client(s["address"], loop=loop) as c:
            future = c.submit(wait_for_path, flag, 1)
            with pytest.raises(TimeoutError):
                future.result(timeout=0.05)
            assert not future.done()
            assert future.status == "pending"
            touch(flag)
            assert future.result(timeout=10) == 1
            assert future.done()


# ----------------------------------------------------------------------
# scatter / get / cancel
# ----------------------------------------------------------------------


def test_scatter(loop):
    with cluster() as (s, [a, b]):
        with Client(s["address"], loop=loop) as c:
            x = c.scatter(1)
            assert isinstance(x, Future) and x.result() == 1
            xs = c.scatter([1, 2, 3])
            assert c.gather(xs) == [1, 2, 3]
            d = c.scatter({"k": 10})
            assert d["k"].key == "k"
            everywhere = c.scatter(5, broadcast=True)
            assert sorted(c.who_has([everywhere])[everywhere.key]) == sorted([a["address"], b["address"]])
            on_b = c.scatter([7, 8], workers=[b["address"]], hash=False)
            assert all(h == [b["address"]] for h in c.who_has(on_b).values())
            assert c.scatter(9, hash=False).key != c.scatter(9, hash=False).key
            assert c.submit(add, xs[0], d["k"]).result() == 11
            assert c.submit(sum, on_b).result() == 15


def test_get_graphs(loop):
    with cluster() as (s, [a, b]):
        with Client(s["address"], loop=loop) as c:
            dsk = {
                "x": 1,
                "y": (inc, "x"),
                "alias": "y",
                "nested": (sum, ["x", (inc, "y"), 10]),
                "dict": (sum_dict, {"a": "x", "b": "y"}),
                "literal": "hello",
                ("t", 0): (add, "x", "y"),
            }
            assert c.get(dsk, "y") == 2
            assert c.get(dsk, [["alias", "nested"], ["dict", "literal"], ("t", 0)]) == [[2, 14], [3, "hello"], 3]
            tree, root = tree_reduction_graph(50)
            assert len(tree) == 99
            assert c.get(tree, root) == sum(range(1, 51))
            with pytest.raises(RuntimeError, match="hello!"):
                c.get({"e": (throws, 1)}, "e")


def test_cancel(loop, tmp_path):
    flag = str(tmp_path / "go")
    with cluster() as (s, [a, b]):
        with Client(s["address"], loop=loop) as c:
            x = c.submit(wait_for_path, flag, 1)
            y = c.submit(wait_for_path, flag, 2)
            c.cancel([x])
            assert x.cancelled() and x.status == "cancelled" and x.done()
            with pytest.raises(CancelledError):
                x.result()
            assert y.cancel() is True
            assert y.cancelled()
            wait_for(lambda: forgotten(c, x.key) and forgotten(c, y.key))
            touch(flag)


# ----------------------------------------------------------------------
# run / upload_file / cluster state
# ----------------------------------------------------------------------


def test_run_and_run_on_scheduler(loop):
    def address(dask_worker):
        return dask_worker.address

    def scheduler_address(dask_scheduler):
        return dask_scheduler.address

    with cluster() as (s, [a, b]):
        with Client(s["address"], loop=loop) as c:
            assert c.run(os.getpid) == {a["address"]: a["proc"].pid, b["address"]: b["proc"].pid}
            assert c.run(address) == {a["address"]: a["address"], b["address"]: b["address"]}
            assert c.run(add, 1, y=2, workers=[b["address"]]) == {b["address"]: 3}
            assert c.run_on_scheduler(scheduler_address) == s["address"]
            assert c.run_on_scheduler(os.getpid) == s["proc"].pid


def test_upload_file(loop, tmp_path):
    modname = "uploaded_module_for_sync_test"
    path = tmp_path / f"{modname}.py"
    path.write_text("def value():\n    return 42\n")
    with cluster() as (s, [a, b]):
        with Client(s["address"], loop=loop) as c:
            c.upload_file(str(path))
            assert c.submit(import_and_call, modname).result() == 42
            assert c.run(import_and_call, modname) == {a["address"]: 42, b["address"]: 42}


def test_who_has_has_what_nthreads_scheduler_info(loop):
    with cluster() as (s, [a, b]):
        with Client(s["address"], loop=loop) as c:
            x = c.submit(inc, 1, workers=[a["address"]])
            x.result()
            assert c.who_has([x]) == {x.key: [a["address"]]}
            assert c.who_has()[x.key] == [a["address"]]
            assert c.has_what() == {a["address"]: [x.key], b["address"]: []}
            assert c.ncores() == c.nthreads() == {a["address"]: 1, b["address"]: 1}
            info = c.scheduler_info()
            assert info["address"] == s["address"]
            assert set(info["workers"]) == {a["address"], b["address"]}


def test_replicate_rebalance_retire_workers(loop):
    with cluster() as (s, [a, b]):
        with Client(s["address"], loop=loop) as c:
            x = c.submit(inc, 1, workers=[a["address"]])
            c.replicate([x])
            assert sorted(c.who_has([x])[x.key]) == sorted([a["address"], b["address"]])
            data = c.scatter([b"x" * 10_000 for _ in range(6)], workers=[a["address"]], hash=False)
            c.rebalance(data)
            holders = c.who_has(data)
            assert 2 <= sum(h == [b["address"]] for h in holders.values()) <= 4
            y = c.submit(inc, 10, workers=[a["address"]])
            y.result()
            c.retire_workers([a["address"]])
            assert list(c.nthreads()) == [b["address"]]
            assert c.who_has([y])[y.key] == [b["address"]]
            assert y.result() == 11
            wait_for(lambda: not a["proc"].is_alive())


def test_wait_for_workers(loop):
    with cluster(nworkers=1) as (s, [a]):
        with Client(s["address"], loop=loop) as c:
            c.wait_for_workers(1)
            with pytest.raises(TimeoutError):
                c.wait_for_workers(2, timeout="100ms")


# ----------------------------------------------------------------------
# executor / datasets
# ----------------------------------------------------------------------


def test_get_executor(loop):
    with cluster() as (s, [a, b]):
        with Client(s["address"], loop=loop) as c:
            with c.get_executor() as ex:
                f = ex.submit(inc, 1)
                assert isinstance(f, concurrent.futures.Future)
                assert f.result() == 2
                fs = [ex.submit(inc, i) for i in range(5)]
                done, not_done = concurrent.futures.wait(fs)
                assert done == set(fs) and not not_done
                assert sorted(f.result() for f in concurrent.futures.as_completed(fs)) == [1, 2, 3, 4, 5]
                assert list(ex.map(add, [1, 2], [10, 20])) == [11, 22]
                bad = ex.submit(throws, 1)
                with pytest.raises(RuntimeError, match="hello!"):
                    bad.result()
                assert isinstance(bad.exception(), RuntimeError)
            with pytest.raises(RuntimeError):
                ex.submit(inc, 1)
            with c.get_executor(workers=[b["address"]]) as ex:
                f = ex.submit(os.getpid)
                assert f.result() == b["proc"].pid


def test_datasets(loop):
    with cluster() as (s, [a, b]):
        with Client(s["address"], loop=loop) as c, Client(s["address"], loop=loop) as c2:
            x = c.submit(inc, 1)
            c.publish_dataset(x=x)
            c.datasets["y"] = [x, 10]
            assert c.list_datasets() == ["x", "y"]
            assert "y" in c.datasets and len(c.datasets) == 2
            key = x.key
            del x
            y = c2.get_dataset("x")
            assert y.key == key and y.result() == 2
            assert c2.gather(c2.datasets["y"]) == [2, 10]
            c.unpublish_dataset("x")
            del c.datasets["y"]
            assert c.list_datasets() == []
            with pytest.raises(KeyError):
                c2.get_dataset("x")


# ----------------------------------------------------------------------
# Future lifetime, callbacks, waiting
# ----------------------------------------------------------------------


def test_add_done_callback_runs_once_in_another_thread(loop):
    with cluster() as (s, [a, b]):
        with Client(s["address"], loop=loop) as c:
            calls = []
            done = threading.Event()

            def callback(future):
                calls.append((future.key, threading.current_thread().name, future.result()))
                done.set()

            x = c.submit(inc, 1)
            x.add_done_callback(callback)
            assert done.wait(10)
            assert x.result() == 2
            c.submit(inc, 5).result()  # more traffic; the callback must not run again
            assert len(calls) == 1
            key, thread, result = calls[0]
            assert key == x.key and result == 2
            assert thread != threading.current_thread().name


def test_release_and_reference_counting(loop):
    with cluster() as (s, [a, b]):
        with Client(s["address"], loop=loop) as c:
            x = c.submit(inc, 1)
            y = c.submit(inc, 1)
            key = x.key
            assert x.result() == 2
            del x
            assert c.submit(inc, 100).result() == 101  # a round trip after the release
            assert not forgotten(c, key)
            y.release()
            wait_for(lambda: forgotten(c, key))
            z = c.submit(inc, 2)
            zkey = z.key
            z.result()
            del z
            wait_for(lambda: forgotten(c, zkey))


def test_wait_and_as_completed(loop, tmp_path):
    flag = str(tmp_path / "go")
    with cluster() as (s, [a, b]):
        with Client(s["address"], loop=loop) as c:
            slow = c.submit(wait_for_path, flag, 0)
            fast = c.submit(inc, 1)
            done, not_done = wait([slow, fast], return_when="FIRST_COMPLETED")
            assert fast in done and not_done == {slow}
            with pytest.raises(TimeoutError):
                wait([slow], timeout=0.05)
            touch(flag)
            assert wait([slow, fast]).done == {slow, fast}

            futures = c.map(inc, range(4))
            ac = as_completed(futures[:2])
            ac.update(futures[2:3])
            assert ac.count() == 3
            seen = []
            for f in ac:
                seen.append(f.result())
                if len(seen) == 1:
                    ac.add(futures[3])
            assert sorted(seen) == [1, 2, 3, 4]
            assert ac.is_empty()
            batched = [f for batch in as_completed(futures).batches() for f in batch]
            assert sorted(f.key for f in batched) == sorted(f.key for f in futures)
            results = dict(as_completed(futures, with_results=True))
            assert sorted(results.values()) == [1, 2, 3, 4]


def test_fire_and_forget(loop, tmp_path):
    path = str(tmp_path / "fired")
    flag = str(tmp_path / "go")
    with cluster() as (s, [a, b]):
        with Client(s["address"], loop=loop) as c:
            x = c.submit(wait_for_path, flag, path)
            future = c.submit(write_file, x)
            fire_and_forget(future)
            del x, future
            touch(flag)
            wait_for(lambda: os.path.exists(path))


# ----------------------------------------------------------------------
# tasks using a client
# ----------------------------------------------------------------------


def test_tasks_submitting_tasks(loop):
    with cluster() as (s, [a, b]):  # one thread per worker
        with Client(s["address"], loop=loop) as c:
            assert c.submit(submit_and_gather, 4).result() == 10
            assert c.submit(fib, 8).result() == 21


# ----------------------------------------------------------------------
# client life cycle
# ----------------------------------------------------------------------


def test_default_client_and_reprs(loop):
    with cluster() as (s, [a, b]):
        with Client(s["address"], loop=loop) as c:
            assert default_client() is c
            assert get_client() is c
            text = repr(c)
            assert s["address"] in text and "processes=2" in text and "threads=2" in text
            html = c._repr_html_()
            assert s["address"] in html and "Workers" in html and "Threads" in html and "Memory" in html
            x = c.submit(inc, 1)
            x.result()
            assert x.key in repr(x) and "finished" in repr(x) and "int" in repr(x)
            assert x.key in x._repr_html_() and "int" in x._repr_html_()
        assert "closed" in repr(c)


def test_close_and_shutdown_are_idempotent(loop):
    with cluster() as (s, [a, b]):
        c = Client(s["address"], loop=loop)
        assert c.submit(inc, 1).result() == 2
        c.close()
        c.close()
        assert c.status == "closed"
        c2 = Client(s["address"], loop=loop)
        c2.shutdown()
        c2.shutdown()
        assert c2.status == "closed"
        with Client(s["address"], loop=loop) as c3:  # the scheduler is still there
            assert c3.submit(inc, 2).result() == 3
        assert c3.status == "closed"


def test_client_without_address_threads(loop):
    with Client(processes=False, n_workers=2, threads_per_worker=1, loop=loop) as c:
        cluster_ = c.cluster
        assert c.scheduler_address.startswith("tcp://127.0.0.1:")
        assert len(c.nthreads()) == 2
        assert c.submit(inc, 1).result() == 2
    assert str(cluster_.status).endswith("closed")


def test_client_without_address_processes(loop):
    with Client(n_workers=2, threads_per_worker=1, loop=loop) as c:
        cluster_ = c.cluster
        pids = c.run(os.getpid)
        assert len(pids) == 2
        assert os.getpid() not in pids.values()
        assert c.submit(inc, 1).result() == 2
    assert str(cluster_.status).endswith("closed")
