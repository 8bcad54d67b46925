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
