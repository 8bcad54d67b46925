"""The stall explainer (``distributed/diagnostics/why.py``): pure functions
over a SchedulerState, then ``client.why`` on real clusters."""
from __future__ import annotations

from distributed.diagnostics.why import (
    REASONS,
    STALL_REASONS,
    critical_path,
    eta,
    explain,
    stalled_counts,
)
from distributed.scheduler.state import SchedulerState

W1 = "tcp://127.0.0.1:1"
W2 = "tcp://127.0.0.1:2"


def _state(**workers) -> SchedulerState:
    state = SchedulerState()
    for addr, kw in workers.items():
        state.add_worker(addr, **kw)
    state.add_client("c")
    return state


def test_reasons_are_fixed():
    assert "running" in REASONS and "running" not in STALL_REASONS
    assert set(stalled_counts(SchedulerState())) == set(STALL_REASONS)


def test_no_workers():
    state = _state()
    state.update_graph("c", tasks={"x": b"s"}, dependencies={}, keys=["x"])
    [entry] = explain(state, ["x"])
    assert entry["reason"] == "no-workers" and entry["keys"] == ["x"]
    assert stalled_counts(state)["no-workers"] == 1


def test_resource_nobody_has_is_the_root_of_its_dependents():
    state = _state(**{W1: {"nthreads": 1, "resources": {"CPU": 4}}})
    state.update_graph("c", tasks={"gpu": b"s", "after": b"s"}, dependencies={"after": ["gpu"]},
                       keys=["after"], resources={"gpu": {"GPU": 1}})
    [entry] = explain(state, ["after"])
    assert entry["reason"] == "no-worker-resource"
    assert entry["root"] == "gpu" and entry["keys"] == ["after"]
    assert "GPU=1" in entry["message"] and "CPU" in entry["message"]
    assert stalled_counts(state)["no-worker-resource"] == 1


def test_restriction_to_departed_worker():
    state = _state(**{W1: {"nthreads": 1}, W2: {"nthreads": 1}})
    state.update_graph("c", tasks={"x": b"s"}, dependencies={}, keys=["x"], restrictions={"x": [W2]})
    assert state.tasks["x"].processing_on.address == W2
    state.remove_worker(W2, safe=True)
    assert state.tasks["x"].state == "no-worker"
    [entry] = explain(state, ["x"], departed={W2: 90.0}, now=100.0)
    assert entry["reason"] == "waiting-on-lost-worker" and W2 in entry["message"]
    [entry] = explain(state, ["x"])
    assert entry["reason"] == "no-worker-restriction"


def test_all_workers_paused_queues_root_tasks():
    state = _state(**{W1: {"nthreads": 1}})
    state.handle_worker_status_change(W1, "paused")
    state.update_graph("c", tasks={"x": b"s"}, dependencies={}, keys=["x"])
    assert state.tasks["x"].state == "queued"
    [entry] = explain(state, ["x"])
    assert entry["reason"] == "all-workers-paused" and W1 in entry["detail"]["paused"]
    assert stalled_counts(state)["all-workers-paused"] == 1


def test_upstream_erred_blames_the_root():
    state = _state(**{W1: {"nthreads": 1}})
    state.update_graph("c", tasks={"a": b"s", "b": b"s"}, dependencies={"b": ["a"]}, keys=["b"])
    state.handle_task_erred("a", W1, exception=b"exc", traceback=None,
                           exception_text="ZeroDivisionError('boom')")
    assert state.tasks["b"].state == "erred"
    [entry] = explain(state, ["b"])
    assert entry["reason"] == "upstream-erred" and entry["root"] == "a"
    assert "boom" in entry["message"]
    assert stalled_counts(state, erred=["a"])["upstream-erred"] == 1


def test_outlier_and_lost_worker_need_time():
    state = _state(**{W1: {"nthreads": 2, "now": 0.0}})
    state.durations["slow"] = 0.1
    state.update_graph("c", tasks={"slow-1": b"s"}, dependencies={}, keys=["slow-1"])
    state.workers[W1].last_seen = 95.0
    assert explain(state, ["slow-1"])[0]["reason"] == "running"
    [entry] = explain(state, ["slow-1"], now=100.0, running={"slow-1": 80.0})
    assert entry["reason"] == "long-running-outlier" and entry["detail"]["elapsed"] == 20.0
    counts = stalled_counts(state, now=100.0, running={"slow-1": 80.0})
    assert counts["long-running-outlier"] == 1
    [entry] = explain(state, ["slow-1"], now=200.0)
    assert entry["reason"] == "waiting-on-lost-worker"


def test_queued_behind_saturation():
    state = _state(**{W1: {"nthreads": 1}})
    keys = [f"inc-{i}" for i in range(50)]
    state.update_graph("c", tasks=dict.fromkeys(keys, b"s"), dependencies={}, keys=keys)
    out = {e["reason"]: e for e in explain(state, keys)}
    assert "queued-saturated" in out and "running" in out
    assert out["queued-saturated"]["n_keys"] + out["running"]["n_keys"] == 50
    assert stalled_counts(state)["queued-saturated"] == len(state.queued)


def test_unknown_and_finished_keys():
    state = _state(**{W1: {"nthreads": 1}})
    state.update_graph("c", tasks={"x": b"s"}, dependencies={}, keys=["x"])
    state.handle_task_finished("x", W1, nbytes=8, type="int")
    assert explain(state, ["x"]) == []
    assert explain(state, ["nope"])[0]["reason"] == "unknown"


def test_critical_path_and_eta():
    state = _state(**{W1: {"nthreads": 2}})
    deps = {"b-1": ["a-1"], "c-1": ["b-1"], "d-1": ["a-1"]}
    tasks = dict.fromkeys(["a-1", "b-1", "c-1", "d-1"], b"s")
    state.update_graph("c", tasks=tasks, dependencies=deps, keys=["c-1", "d-1"])
    durations = {"a": 1.0, "b": 2.0, "c": 3.0, "d": 0.5}
    length, path, work = critical_path(state, durations=durations)
    assert (length, path, work) == (6.0, ["a-1", "b-1", "c-1"], 6.5)
    out = eta(state, durations=durations)
    assert out["eta"] == 6.0 and out["nthreads"] == 2
    assert out["bottleneck"] == {"prefix": "c", "share": 0.5}
    state.handle_task_finished("a-1", W1, nbytes=8)
    assert critical_path(state, durations=durations)[0] == 5.0


# ----------------------------------------------------------------------
# client.why on real clusters, each root cause built for real
# ----------------------------------------------------------------------

import asyncio  # noqa: E402
import threading  # noqa: E402

import pytest  # noqa: E402

from distributed import Client  # noqa: E402
from distributed.utils_test import async_poll_for, cluster, gen_cluster, inc, slowinc, throws  # noqa: E402

_release = threading.Event()


def block(x):
    """Runs until the test lets it go (never longer than 30 s)."""
    _release.wait(30)
    return x


@gen_cluster(client=True)
async def test_why_resource_nobody_has(c, s, a, b):
    x = c.submit(inc, 1, resources={"GPU": 1})
    y = c.submit(inc, x)
    await async_poll_for(lambda: x.key in s.tasks and s.tasks[x.key].state == "no-worker", timeout=10)
    report = await c.why(y)
    [entry] = report
    assert entry["reason"] == "no-worker-resource" and entry["root"] == x.key
    assert entry["keys"] == [y.key] and "GPU=1" in entry["message"]
    assert report.stalled and "no-worker-resource" in str(report)
    assert s.extensions["diagnostics"].stalled_counts()["no-worker-resource"] == 1


@gen_cluster(client=True, nthreads=[("127.0.0.1", 1)],
             worker_kwargs={"memory_limit": "10MB", "memory_pause_fraction": 0.5,
                            "memory_spill_fraction": False, "memory_target_fraction": False,
                            "memory_monitor_interval": "10ms"})
async def test_why_all_workers_paused(c, s, a):
    # The process holds far more than 5 MB: the memory monitor pauses the worker.
    await async_poll_for(lambda: s.workers[a.address].status == "paused", timeout=10)
    x = c.submit(inc, 1)
    await async_poll_for(lambda: x.key in s.tasks and s.tasks[x.key].state in ("queued", "no-worker"),
                         timeout=10)
    [entry] = await c.why(x)
    assert entry["reason"] == "all-workers-paused" and a.address in entry["detail"]["paused"]
    assert s.extensions["diagnostics"].stalled_counts()["all-workers-paused"] == 1


@gen_cluster(client=True)
async def test_why_upstream_erred(c, s, a, b):
    x = c.submit(throws, 1)
    y = c.submit(inc, x)
    z = c.submit(inc, y)
    with pytest.raises(RuntimeError):
        await z
    [entry] = await c.why(z)
    assert entry["reason"] == "upstream-erred" and entry["root"] == x.key
    assert "hello" in entry["message"]  # throws raises RuntimeError("hello!")
    assert s.extensions["diagnostics"].stalled_counts()["upstream-erred"] == 1


@gen_cluster(client=True, config={"distributed.diagnostics.why.outlier-min-duration": "100ms"})
async def test_why_long_running_outlier(c, s, a, b):
    _release.clear()
    try:
        await c.gather(c.map(slowinc, range(10), delay=0.001))
        slow = c.submit(slowinc, 100, delay=0.001, pure=False)
        await slow
        # Same prefix, runs until released: 40x its siblings' median soon.
        stuck = c.submit(block, 1, key="slowinc-123456")
        await async_poll_for(lambda: stuck.key in a.executing_since or stuck.key in b.executing_since,
                             timeout=10)

        async def outlier():
            report = await c.why(stuck)
            return report and report[0]["reason"] == "long-running-outlier"

        deadline = asyncio.get_running_loop().time() + 10
        while not await outlier():
            assert asyncio.get_running_loop().time() < deadline, "never reported as an outlier"
            await asyncio.sleep(0.05)
        [entry] = await c.why(stuck)
        assert entry["root"] == stuck.key and entry["detail"]["elapsed"] > 40 * entry["detail"]["typical"]
        stacks = await c.call_stack(keys=[stuck.key])
        [(worker, by_key)] = stacks.items()
        assert any("_release.wait" in line for line in by_key[stuck.key])
    finally:
        _release.set()


def test_why_waiting_on_a_killed_worker():
    with cluster() as (s, [a, b]):
        with Client(s["address"]) as client:
            x = client.submit(slowinc, 1, delay=60, workers=[a["address"]])
            poll_for_processing = 0
            while not client.processing().get(a["address"]):
                poll_for_processing += 1
                assert poll_for_processing < 1000, "the task never started"
                client.gather(client.submit(inc, poll_for_processing, pure=False))
            a["proc"].kill()
            a["proc"].join(10)
            deadline = 30
            import time as _time

            end = _time.monotonic() + deadline
            while True:
                report = client.why(x)
                if report and report[0]["reason"] == "waiting-on-lost-worker":
                    break
                assert _time.monotonic() < end, f"not explained as a lost worker: {report}"
                client.gather(client.submit(inc, 0, pure=False))  # a round trip, not a bare sleep
            assert a["address"] in report[0]["message"]
            assert report[0]["detail"]["lost"] == [a["address"]]
