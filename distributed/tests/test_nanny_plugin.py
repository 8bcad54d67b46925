"""Nanny plugins: set up on nannies there now and starting later, restart,
teardown, errors; the Environ built-in."""
from __future__ import annotations

import os

import pytest

from distributed import Client, Nanny
from distributed.diagnostics.plugin import Environ, NannyPlugin
from distributed.utils_test import async_wait_for, gen_cluster


class Mark(NannyPlugin):
    name = "mark"

    def setup(self, nanny):
        nanny.marked = True

    def teardown(self, nanny):
        nanny.marked = False


def _env(name):
    return os.environ.get(name)


@gen_cluster(client=True, Worker=Nanny, nthreads=[("127.0.0.1", 1)])
async def test_environ_before_and_after_a_nanny_joins(c, s, a):
    old_pid = a.process.pid
    await c.register_plugin(Environ({"G_PLUGIN_TEST": "123"}))
    assert a.process.pid != old_pid  # restart=True: a new worker process
    assert list((await c.run(_env, "G_PLUGIN_TEST")).values()) == ["123"]
    async with Nanny(s.address, nthreads=1) as late:
        # set up before its first worker started: no restart needed
        assert late.restarts == 0
        assert "environ" in late.plugins
        await async_wait_for(lambda: late.worker_address in s.workers, timeout=10)
        result = await c.run(_env, "G_PLUGIN_TEST", workers=[late.worker_address])
        assert result == {late.worker_address: "123"}


@gen_cluster(client=True, Worker=Nanny, nthreads=[("127.0.0.1", 1)])
async def test_setup_teardown_and_unregister(c, s, a):
    pid = a.process.pid
    await c.register_plugin(Mark())
    assert a.marked and "mark" in s.nanny_plugins
    assert a.process.pid == pid  # restart is False: the worker kept running
    await c.unregister_worker_plugin("mark", nanny=True)
    assert a.marked is False and "mark" not in a.plugins and not s.nanny_plugins
    with pytest.raises(ValueError, match="mark"):
        await c.unregister_worker_plugin("mark", nanny=True)


@gen_cluster(client=True, Worker=Nanny, nthreads=[("127.0.0.1", 1)])
async def test_setup_error_reaches_the_client_and_the_nanny_lives(c, s, a):
    class Broken(NannyPlugin):
        name = "broken"

        def setup(self, nanny):
            raise RuntimeError("nanny setup failed")

    with pytest.raises(RuntimeError, match="nanny setup failed"):
        await c.register_plugin(Broken())
    assert a.status == "running"
    assert await c.submit(lambda: 1) == 1


@gen_cluster(client=True, Worker=Nanny, nthreads=[("127.0.0.1", 1)])
async def test_plugin_registered_while_a_nanny_starts_reaches_it(c, s, a):
    # The nanny asks for plugins before its worker registers; one registered
    # in between comes when the worker registers (the scheduler tops it up).
    late = Nanny(s.address, nthreads=1)
    fetched = late._fetch_plugins

    async def fetch_then_register():
        await fetched()
        await c.register_plugin(Mark())

    late._fetch_plugins = fetch_then_register
    async with late:
        await async_wait_for(lambda: getattr(late, "marked", False), timeout=10)
    assert a.marked


def test_environ_rejects_bad_names():
    with pytest.raises(ValueError, match="invalid environment variable"):
        Environ({"A=B": "1"})


def test_register_nanny_plugin_with_a_blocking_client(loop):
    from distributed.utils_test import cluster

    with cluster(nworkers=1, nanny=True) as (s, [a]):
        with Client(s["address"], loop=loop) as c:
            c.register_plugin(Environ({"G_PLUGIN_BLOCKING": "yes"}))
            assert list(c.run(_env, "G_PLUGIN_BLOCKING").values()) == ["yes"]
