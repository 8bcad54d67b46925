"""The statistical profiler: trees, the sampling thread, client.profile."""
from __future__ import annotations

import sys
import threading
import time

import pytest

from distributed import Client
from distributed.diagnostics.profile import Sampler, call_stack, create, merge, plot_data, process
from distributed.utils_test import async_poll_for, cluster, gen_cluster, spin


def _names(tree, out=None):
    out = set() if out is None else out
    for child in tree["children"].values():
        out.add(child["description"]["name"])
        _names(child, out)
    return out


def test_tree_shape_and_merge():
    tree = create()
    process(sys._getframe(), tree)
    process(sys._getframe(), tree)
    assert tree["count"] == 2 and tree["identifier"] == "root"
    [(ident, child)] = list(tree["children"].items())[:1]
    assert set(child) == {"count", "children", "identifier", "description"}
    assert set(child["description"]) == {"filename", "name", "line_number", "line"}
    assert "test_tree_shape_and_merge" in _names(tree)
    both = merge(tree, tree)
    assert both["count"] == 4 and tree["count"] == 2  # inputs untouched
    assert plot_data(both)[0]["width"] == 1.0
    assert call_stack(sys._getframe())[-1].strip().startswith("File")


def test_sampler_thread_samples_only_its_targets():
    done = threading.Event()
    target: dict = {}

    def work():
        target[threading.get_ident()] = "spin-1"
        while not done.is_set():
            spin(0.01)

    t = threading.Thread(target=work, daemon=True)
    t.start()
    sampler = Sampler(lambda: dict(target), interval=0.005, cycle=0.05)
    sampler.start()
    try:
        deadline = time.monotonic() + 10
        while sampler.get_profile()["count"] < 5:
            assert time.monotonic() < deadline, "the sampler took no samples in 10 s"
            time.sleep(0.01)
        prof = sampler.get_profile()
        assert "spin" in _names(prof) and "test_sampler_thread_samples_only_its_targets" not in _names(prof)
        assert sampler.get_profile(key="spin-2")["count"] > 0  # same prefix "spin"
        assert sampler.get_profile(key="other-1")["count"] == 0
        assert sampler.get_profile(start=time.time() + 3600)["count"] == 0
    finally:
        sampler.stop()
        done.set()
        t.join(5)
    assert sampler._thread is None


@gen_cluster(client=True)
async def test_client_profile_of_running_tasks(c, s, a, b):
    futures = c.map(spin, [0.5, 0.5, 0.5], pure=False)
    await c.gather(futures)

    prof = await c.profile()
    deadline = time.monotonic() + 10
    while prof["count"] == 0:
        assert time.monotonic() < deadline, "no samples of 1.5 s of spinning"
        prof = await c.profile()
    assert "spin" in _names(prof)
    assert "_run_in_thread" not in _names(prof)  # the machinery is cut off
    by_worker = await c.profile(merge_workers=False)
    assert set(by_worker) == {a.address, b.address}
    assert all(t["identifier"] == "root" for t in by_worker.values())
    assert (await c.profile(key=futures[0].key))["count"] > 0
    assert (await c.profile(key="nothing-1"))["count"] == 0
    await async_poll_for(lambda: s.extensions["diagnostics"].sampler is not None, timeout=5)
    loop_tree = await c.profile(scheduler=True)
    assert loop_tree["identifier"] == "root"
    server = await c.profile(server=True)
    assert server["count"] > 0  # the workers' event loop is sampled too


@gen_cluster(client=True)
async def test_plot_is_refused(c, s, a, b):
    with pytest.raises(ValueError, match="/profile"):
        c.profile(plot=True)
    with pytest.raises(ValueError, match="bokeh"):
        c.profile(filename="p.html")


@gen_cluster(client=True, config={"distributed.worker.profile.enabled": False})
async def test_profiling_can_be_switched_off(c, s, a, b):
    assert a.diagnostics.sampler is None and s.extensions["diagnostics"].sampler is None
    await c.submit(spin, 0.1)
    assert (await c.profile())["count"] == 0


def test_blocking_api_with_real_processes():
    with cluster() as (s, [a, b]):
        with Client(s["address"]) as client:
            client.gather(client.map(spin, [0.5, 0.5], pure=False))
            deadline = time.monotonic() + 10
            while (prof := client.profile())["count"] == 0:
                assert time.monotonic() < deadline, "no samples in worker processes"
            assert "spin" in _names(prof)
