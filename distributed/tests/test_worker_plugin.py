"""Worker plugins: set up on workers there now and joining later, torn down,
transitions as a plugin sees them, errors, and the older entry points."""
from __future__ import annotations

import pytest

from distributed import Client, Worker
from distributed.core import Status
from distributed.diagnostics.plugin import UploadFile, WorkerPlugin
from distributed.utils_test import async_wait_for, captured_logger, cluster, gen_cluster, inc


class MyPlugin(WorkerPlugin):
    name = "MyPlugin"

    def __init__(self, data):
        self.data = data
        self.observed = []

    def setup(self, worker):
        assert isinstance(worker, Worker)
        self.worker = worker
        worker._my_plugin_status = "setup"
        worker._my_plugin_data = self.data

    def teardown(self, worker):
        worker._my_plugin_status = "teardown"

    def transition(self, key, start, finish, **kwargs):
        self.observed.append((key, start, finish))


@gen_cluster(client=True, nthreads=[("127.0.0.1", 1)])
async def test_plugin_added_before_and_after_a_worker_joins_runs_on_both(c, s, a):
    await c.register_plugin(MyPlugin(123))
    assert a._my_plugin_status == "setup" and a._my_plugin_data == 123
    async with Worker(s.address, nthreads=1) as late:
        assert late._my_plugin_status == "setup" and late._my_plugin_data == 123
        assert "MyPlugin" in late.plugins
    assert late._my_plugin_status == "teardown"  # closing a worker tears its plugins down
    assert "MyPlugin" in s.worker_plugins


@gen_cluster(client=True, nthreads=[])
async def test_unregister_tears_down_everywhere(c, s):
    await c.register_worker_plugin(MyPlugin(123), name="foo")
    await c.register_worker_plugin(MyPlugin(456), name="bar")
    async with Worker(s.address, nthreads=1) as w:
        await c.unregister_worker_plugin("foo")
        assert w._my_plugin_status == "teardown"
        assert list(s.worker_plugins) == ["bar"]
        assert "foo" not in w.plugins and "bar" in w.plugins
        await c.unregister_worker_plugin("bar")
        assert not s.worker_plugins and not w.plugins
        with pytest.raises(ValueError, match="bar"):
            await c.unregister_worker_plugin("bar")
        with pytest.raises(KeyError, match="bar"):  # older code catches KeyError
            await c.unregister_worker_plugin("bar")


@gen_cluster(client=True, nthreads=[("127.0.0.1", 1)])
async def test_exact_transitions_a_plugin_sees_for_one_task(c, s, w):
    plugin = MyPlugin(1)
    await c.register_plugin(plugin)
    plugin = w.plugins["MyPlugin"]  # the worker's own copy
    x = c.submit(inc, 1, key="task")
    assert await x == 2
    del x
    await async_wait_for(lambda: not w.state.tasks, timeout=5)
    assert plugin.observed == [
        ("task", "released", "waiting"),
        ("task", "waiting", "ready"),
        ("task", "ready", "executing"),
        ("task", "executing", "memory"),
        ("task", "memory", "released"),
        ("task", "released", "forgotten"),
    ]


@gen_cluster(client=True, nthreads=[("127.0.0.1", 1)])
async def test_failing_task_transitions(c, s, w):
    def failing(x):
        raise ValueError("no")

    await c.register_plugin(MyPlugin(1))
    plugin = w.plugins["MyPlugin"]
    with pytest.raises(ValueError):
        await c.submit(failing, 1, key="task")
    assert plugin.observed == [("task", "released", "waiting"), ("task", "waiting", "ready"),
                               ("task", "ready", "executing"), ("task", "executing", "error")]


@gen_cluster(client=True, nthreads=[("127.0.0.1", 1)])
async def test_tasks_are_plain_again_when_no_plugin_watches(c, s, w):
    from distributed.worker.state import TaskState

    await c.register_plugin(MyPlugin(1))
    x = c.submit(inc, 1)
    await x
    assert type(w.state.tasks[x.key]) is not TaskState
    await c.unregister_worker_plugin("MyPlugin")
    assert type(w.state.tasks[x.key]) is TaskState
    assert w.state.task_class is TaskState
    assert await c.submit(inc, x) == 3


@gen_cluster(client=True, worker_kwargs={"plugins": [MyPlugin(5)]})
async def test_plugins_given_to_the_worker(c, s, a, b):
    assert len(a.plugins) == len(b.plugins) == 1
    assert a._my_plugin_status == "setup" and a._my_plugin_data == 5


@gen_cluster(client=True, nthreads=[("127.0.0.1", 1)])
async def test_setup_error_on_existing_worker_reaches_the_client(c, s, a):
    class Broken(WorkerPlugin):
        name = "broken"

        def setup(self, worker):
            raise RuntimeError("setup failed here")

    with pytest.raises(RuntimeError, match="setup failed here"):
        await c.register_plugin(Broken())
    # a worker that joins later logs it and works
    with captured_logger("distributed.worker.plugins") as log:
        async with Worker(s.address, nthreads=1) as late:
            assert late.status == Status.running
            assert await c.submit(inc, 1, workers=[late.address]) == 2
    assert "failed to set up" in log.getvalue()
    await async_wait_for(lambda: len(s.get_events("plugin-errors")) >= 1, timeout=5)
    assert s.get_events("plugin-errors")[-1][1]["plugin"] == "broken"


@gen_cluster(client=True, nthreads=[("127.0.0.1", 1)])
async def test_raising_transition_and_teardown_do_not_stop_the_worker(c, s, a):
    class Noisy(WorkerPlugin):
        name = "noisy"

        def transition(self, key, start, finish, **kwargs):
            raise RuntimeError("transition boom")

        def teardown(self, worker):
            raise RuntimeError("teardown boom")

    await c.register_plugin(Noisy())
    assert await c.submit(inc, 1) == 2
    with pytest.raises(RuntimeError, match="teardown boom"):  # the caller waits for it: it hears
        await c.unregister_worker_plugin("noisy")
    assert "noisy" not in a.plugins and "noisy" not in s.worker_plugins
    assert await c.submit(inc, 2) == 3
    await async_wait_for(lambda: {"transition", "teardown"} <= {m["hook"] for _, m in
                                                                s.get_events("plugin-errors")}, timeout=5)


@gen_cluster(client=True, nthreads=[("127.0.0.1", 1)])
async def test_same_name_replaces_and_idempotent_keeps(c, s, a):
    await c.register_plugin(MyPlugin(1))
    await c.register_plugin(MyPlugin(2))
    assert a._my_plugin_data == 2

    class Once(WorkerPlugin):
        name = "once"
        idempotent = True

        def __init__(self, n):
            self.n = n

        def setup(self, worker):
            worker.once = self.n

    await c.register_plugin(Once(1))
    assert await c.register_plugin(Once(2)) == {}
    assert a.once == 1


@gen_cluster(client=True, nthreads=[("127.0.0.1", 1)])
async def test_older_entry_points(c, s, a):
    class Empty:
        pass

    await c.register_worker_plugin(Empty(), name="empty")  # duck-typed: allowed here
    await c.register_worker_plugin(MyPlugin, data=456)  # a class with its arguments, as 1.x code does
    assert a._my_plugin_data == 456
    with pytest.raises(TypeError):
        await c.register_plugin(Empty())

    def setup(dask_worker):
        dask_worker.called_back = True

    await c.register_worker_callbacks(setup)
    assert a.called_back
    async with Worker(s.address, nthreads=1) as late:
        assert late.called_back and late._my_plugin_data == 456


@gen_cluster(client=True, nthreads=[("127.0.0.1", 1)])
async def test_upload_file_plugin(c, s, a):
    import os
    import tempfile

    d = tempfile.mkdtemp()
    path = os.path.join(d, "g_uploaded_mod.py")
    with open(path, "w") as f:
        f.write("VALUE = 42\n")
    await c.register_plugin(UploadFile(path))

    def value():
        import g_uploaded_mod

        return g_uploaded_mod.VALUE

    assert await c.submit(value) == 42
    async with Worker(s.address, nthreads=1) as late:
        assert os.path.exists(os.path.join(late.local_directory, "g_uploaded_mod.py"))
    import shutil
    import sys

    shutil.rmtree(d)
    sys.modules.pop("g_uploaded_mod", None)


def test_worker_plugin_with_processes(loop):
    class Mark(WorkerPlugin):
        name = "mark"

        def setup(self, worker):
            worker.marked = "yes"

    with cluster(nworkers=1) as (s, [a]):
        with Client(s["address"], loop=loop) as c:
            result = c.register_plugin(Mark())
            assert result == {a["address"]: {"status": "OK"}}
            assert c.run(lambda dask_worker: dask_worker.marked) == {a["address"]: "yes"}
            c.unregister_worker_plugin("mark")
            assert c.run(lambda dask_worker: list(dask_worker.plugins)) == {a["address"]: []}


@gen_cluster(client=True, nthreads=[("127.0.0.1", 1)])
async def test_upload_file_reaches_workers_that_join_later(c, s, a):
    import os
    import shutil
    import sys
    import tempfile

    d = tempfile.mkdtemp()
    try:
        good = os.path.join(d, "g_later_mod.py")
        with open(good, "w") as f:
            f.write("VALUE = 7\n")
        assert await c.upload_file(good) == {a.address: {"status": "OK"}}
        async with Worker(s.address, nthreads=1) as late:
            assert os.path.exists(os.path.join(late.local_directory, "g_later_mod.py"))
        bad = os.path.join(d, "g_bad_mod.py")
        with open(bad, "w") as f:
            f.write("def broken(:\n")
        with pytest.raises(SyntaxError):
            await c.upload_file(bad)
        assert "upload-file-g_bad_mod.py" not in s.worker_plugins  # withdrawn
        assert "upload-file-g_later_mod.py" in s.worker_plugins
    finally:
        shutil.rmtree(d)
        sys.modules.pop("g_later_mod", None)
