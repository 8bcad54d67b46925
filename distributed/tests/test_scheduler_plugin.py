"""Scheduler plugins: hooks at the right places, registration from the
client and the scheduler, and a failing plugin that does not stop anything."""
from __future__ import annotations

import pytest

from distributed import Client, Worker
from distributed.diagnostics.plugin import SchedulerPlugin, WorkerPlugin
from distributed.scheduler import state as scheduler_state
from distributed.utils_test import async_wait_for, cluster, gen_cluster, gen_test, inc


class Recorder(SchedulerPlugin):
    name = "recorder"

    def __init__(self):
        self.calls = []
        self.transitions = []

    async def start(self, scheduler):
        self.calls.append("start")

    async def before_close(self):
        self.calls.append("before_close")

    async def close(self):
        self.calls.append("close")

    def update_graph(self, scheduler, *, client, keys, tasks, **kwargs):
        self.calls.append(("update_graph", client, sorted(keys)))

    def transition(self, key, start, finish, *args, **kwargs):
        self.transitions.append((key, start, finish))

    def add_worker(self, scheduler, worker):
        self.calls.append(("add_worker", worker))

    def remove_worker(self, scheduler, worker, **kwargs):
        self.calls.append(("remove_worker", worker))

    def add_client(self, scheduler, client):
        self.calls.append(("add_client", client))

    def remove_client(self, scheduler, client):
        self.calls.append(("remove_client", client))

    def restart(self, scheduler):
        self.calls.append("restart")

    def log_event(self, topic, msg):
        self.calls.append(("log_event", topic))


@gen_test()
async def test_hooks_of_a_plugin_given_to_the_constructor():
    from distributed import Scheduler

    plugin = Recorder()
    async with Scheduler(port=0, plugins=[plugin], validate=True) as s:
        assert s.plugins == {"recorder": plugin}
        assert plugin.calls == ["start"]
        async with Worker(s.address, nthreads=1) as w:
            async with Client(s.address, asynchronous=True) as c:
                assert await c.submit(inc, 1, key="x") == 2
                del_keys = {"x"}
                client_id = c.id
            await async_wait_for(lambda: ("remove_client", client_id) in plugin.calls, timeout=5)
        await async_wait_for(lambda: ("remove_worker", w.address) in plugin.calls, timeout=5)
        assert ("add_worker", w.address) in plugin.calls
        assert ("add_client", client_id) in plugin.calls
        assert ("update_graph", client_id, sorted(del_keys)) in plugin.calls
        assert ("log_event", "all") in plugin.calls
        story = [t for t in plugin.transitions if t[0] == "x"]
        assert story[:3] == [("x", "released", "waiting"), ("x", "waiting", "processing"),
                             ("x", "processing", "memory")]
        assert story[-1][2] == "forgotten"
    assert plugin.calls[-2:] == ["before_close", "close"]


@gen_cluster(client=True)
async def test_add_and_remove_plugin_on_the_scheduler(c, s, a, b):
    plugin = Recorder()
    s.add_plugin(plugin)
    assert s.plugins["recorder"] is plugin
    with pytest.warns(UserWarning, match="already contains a plugin with name recorder"):
        s.add_plugin(Recorder())
    assert s.plugins["recorder"] is not plugin
    s.remove_plugin("recorder")
    assert "recorder" not in s.plugins
    with pytest.raises(ValueError, match="Could not find plugin"):
        s.remove_plugin("recorder")
    assert not s.state.plugins  # no transition hook left behind


@gen_cluster(client=True)
async def test_idempotent_plugin_is_kept(c, s, a, b):
    class Once(SchedulerPlugin):
        name = "once"
        idempotent = True

    first = Once()
    s.add_plugin(first)
    s.add_plugin(Once())
    assert s.plugins["once"] is first


def test_no_transition_hook_without_a_transition_method():
    class OnlyWorkers(SchedulerPlugin):
        def add_worker(self, scheduler, worker):
            pass

    state = scheduler_state.SchedulerState()
    from distributed.scheduler.plugins import SchedulerPlugins

    registry = SchedulerPlugins(state.plugins)
    registry.add(OnlyWorkers(), name="w")
    assert state.plugins == []  # transitions pay nothing for it
    registry.add(Recorder())
    assert len(state.plugins) == 1


@gen_cluster(client=True)
async def test_register_plugin_from_the_client(c, s, a, b):
    class Counter(SchedulerPlugin):
        name = "counter"

        def __init__(self):
            self.started = False
            self.finished = 0

        async def start(self, scheduler):
            self.started = True

        def transition(self, key, start, finish, *args, **kwargs):
            if finish == "memory":
                self.finished += 1

    await c.register_plugin(Counter())
    plugin = s.plugins["counter"]
    assert plugin.started
    await c.gather(c.map(inc, range(5)))
    assert plugin.finished == 5
    await c.unregister_scheduler_plugin("counter")
    assert "counter" not in s.plugins
    with pytest.raises(ValueError, match="Could not find plugin"):
        await c.unregister_scheduler_plugin("counter")


@gen_cluster(client=True)
async def test_start_error_is_raised_and_plugin_not_added(c, s, a, b):
    class Broken(SchedulerPlugin):
        name = "broken"

        async def start(self, scheduler):
            raise ValueError("cannot start")

    with pytest.raises(ValueError, match="cannot start"):
        await c.register_plugin(Broken())
    assert "broken" not in s.plugins


@gen_cluster(client=True)
async def test_register_plugin_rejects_classes_and_duck_types(c, s, a, b):
    class Duck:
        def transition(self, *args, **kwargs):
            pass

    with pytest.raises(TypeError, match="instance"):
        await c.register_plugin(Recorder)
    with pytest.raises(TypeError, match="duck-typed"):
        await c.register_plugin(Duck())
    # the older entry point takes duck types
    await c.register_scheduler_plugin(Duck(), name="duck")
    assert "duck" in s.plugins


@gen_cluster(client=True)
async def test_a_raising_plugin_does_not_stop_the_scheduler(c, s, a, b):
    class Raises(SchedulerPlugin):
        name = "raises"

        def transition(self, key, start, finish, *args, **kwargs):
            raise RuntimeError("transition boom")

        def add_worker(self, scheduler, worker):
            raise RuntimeError("add_worker boom")

        def update_graph(self, scheduler, **kwargs):
            raise RuntimeError("update_graph boom")

    s.add_plugin(Raises())
    assert await c.submit(inc, 1) == 2
    async with Worker(s.address, nthreads=1):
        assert await c.submit(inc, 2) == 3
    errors = [m for _, m in s.get_events("plugin-errors")]
    hooks = {m["hook"] for m in errors}
    assert {"transition", "add_worker", "update_graph"} <= hooks
    assert all(m["plugin"] == "raises" for m in errors)
    assert any("transition boom" in m["exception_text"] for m in errors)


@gen_cluster(client=True)
async def test_forgotten_task_is_readable_during_the_hook(c, s, a, b):
    seen = {}

    class Reads(SchedulerPlugin):
        def transition(self, key, start, finish, *args, **kwargs):
            if finish == "forgotten":
                seen[key] = s.tasks[key].state

    s.add_plugin(Reads())
    x = c.submit(inc, 1, key="x")
    await x
    del x
    await async_wait_for(lambda: "x" in seen, timeout=5)
    assert seen["x"] == "forgotten" and "x" not in s.tasks


@gen_cluster(client=True)
async def test_restart_hook(c, s, a, b):
    plugin = Recorder()
    s.add_plugin(plugin)
    await c.restart()
    assert "restart" in plugin.calls


def test_register_plugin_with_a_blocking_client(loop):
    class Count(SchedulerPlugin):
        name = "count"

        def __init__(self):
            self.n = 0

        def transition(self, key, start, finish, *args, **kwargs):
            if finish == "memory":
                self.n += 1

    class Tag(WorkerPlugin):
        def setup(self, worker):
            worker.tagged = True

    with cluster() as (s, [a, b]):
        with Client(s["address"], loop=loop) as c:
            c.register_plugin(Count())
            c.register_plugin(Tag(), name="tag")
            c.gather(c.map(inc, range(3)))
            assert c.run_on_scheduler(lambda dask_scheduler: dask_scheduler.plugins["count"].n) == 3
            assert c.run(lambda dask_worker: dask_worker.tagged) == {a["address"]: True, b["address"]: True}


@gen_cluster(client=True)
def test_coroutine_era_registration_and_events(c, s, a, b):
    """Generator tests ``yield`` the same calls (tornado coroutines)."""

    class Mark(WorkerPlugin):
        name = "mark"

        def setup(self, worker):
            worker.marked = True

    yield c.register_worker_plugin(Mark())
    assert a.marked and b.marked
    yield c.log_event("old-style", {"n": 1})
    events = yield c.get_events("old-style")
    assert [m for _, m in events] == [{"n": 1}]
    yield c.unregister_worker_plugin("mark")
    assert not a.plugins


class _Mark(WorkerPlugin):
    name = "mark"

    def setup(self, worker):
        worker.marked = True


def test_plugins_and_subscriptions_survive_a_scheduler_restart(loop):
    """A client registers its plugins and topic subscriptions again on a
    restarted scheduler (dask.distributed loses them: d/d#5125)."""
    import os
    import signal

    from distributed.utils_test import scheduler_process, wait_for

    with cluster(nworkers=1, worker_kwargs={"death_timeout": 60}) as (s, [a]):
        with Client(s["address"], loop=loop) as c:
            c.register_plugin(_Mark())
            got = []
            c.subscribe_topic("t", got.append)
            os.kill(s["proc"].pid, signal.SIGKILL)
            s["proc"].join(10)
            with scheduler_process(port=s["port"]):
                wait_for(lambda: c.status == "running", timeout=30)
                wait_for(lambda: "mark" in c.run_on_scheduler(
                    lambda dask_scheduler: list(dask_scheduler.worker_plugins)), timeout=30)
                wait_for(lambda: c.run_on_scheduler(
                    lambda dask_scheduler: len(dask_scheduler.event_subscriber["t"])) == 1, timeout=30)
                c.log_event("t", "after the restart")
                wait_for(lambda: [m for _, m in got] == ["after the restart"], timeout=30)


@gen_cluster(client=True)
async def test_plugins_take_the_old_list_idioms(c, s, a, b):
    """1.x code treated ``s.plugins`` as a list of plugin objects."""

    class Old:  # duck-typed, no name: as 1.x plugins were
        def __init__(self):
            self.n = 0

        def transition(self, key, start, finish, *args, **kwargs):
            self.n += 1

    plugin = Old()
    s.add_plugin(plugin)
    assert plugin in s.plugins
    assert await c.submit(inc, 1) == 2
    assert plugin.n > 0
    s.remove_plugin(plugin)
    assert plugin not in s.plugins and not s.state.plugins
    s.plugins.append(plugin)
    assert plugin in s.plugins
    s.plugins.remove(plugin)
    assert not s.plugins
