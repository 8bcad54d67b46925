"""Work stealing (distributed/scheduler/stealing.py): the balancer driven
directly, without sockets, then the whole protocol on in-process clusters
and real processes.  Counts of who ran what come from the workers' own
records (``Worker.startstops``, the tasks each one executed), never from
timing."""
from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

from distributed import Client, Worker, wait
from distributed.scheduler.state import SchedulerState
from distributed.scheduler.stealing import (
    NEVER_LEVEL,
    StealDecision,
    WorkStealing,
    cost_level,
    interval_from_config,
)
from distributed.utils_test import async_wait_for, cluster, gen_cluster
from distributed.worker.state import WorkerState as WorkerMachine

pytestmark = pytest.mark.timeout(120)

A, B, C = "tcp://10.0.0.1:1", "tcp://10.0.0.2:1", "tcp://10.0.0.3:1"


# ----------------------------------------------------------------------
# The balancer alone
# ----------------------------------------------------------------------


def _state_with_work(n: int = 40, durations: float | None = 0.25, **graph) -> SchedulerState:
    """Worker A holds a small ``x``; ``n`` tasks depending on it all sit on
    A (placed before B joined); B is idle."""
    state = SchedulerState(validate=True)
    state.add_worker(A, nthreads=1)
    state.update_data({"x": [A]}, {"x": 28}, client="c")
    if durations is not None:
        state.durations["f"] = durations
    keys = [f"f-{i}" for i in range(n)]
    state.update_graph("c", dict.fromkeys(keys, b"spec"), dict.fromkeys(keys, ["x"]), keys,
                       priority={k: i for i, k in enumerate(keys)}, **graph)
    state.add_worker(B, nthreads=1)
    assert len(state.workers[A].processing) == n
    return state


def _answer_all(stealing: WorkStealing, decisions, answer: str = "ready") -> dict:
    """Feed the victims' answers back; returns the worker messages."""
    out: dict = {}
    for d in decisions:
        _, wmsgs = stealing.handle_steal_response(d.key, d.stimulus_id, answer, d.victim)
        for w, msgs in wmsgs.items():
            out.setdefault(w, []).extend(msgs)
    return out


def test_idle_worker_steals_about_half_of_the_queue():
    state = _state_with_work()
    stealing = WorkStealing(state)
    decisions = stealing.balance()
    assert decisions and {(d.victim, d.thief) for d in decisions} == {(A, B)}
    assert 15 <= len(decisions) <= 20, len(decisions)
    assert all(d.level >= 1 for d in decisions)  # they have an input
    wmsgs = _answer_all(stealing, decisions)
    assert {m["key"] for m in wmsgs[B] if m["op"] == "compute-task"} == {d.key for d in decisions}
    counts = Counter(ts.processing_on.address for ts in state.tasks.values() if ts.state == "processing")
    assert abs(counts[A] - counts[B]) <= 2, counts
    assert stealing.metrics["confirmed"] == len(decisions)
    state.validate_state()


def test_balanced_workers_do_not_trade_tasks_back():
    state = _state_with_work()
    stealing = WorkStealing(state)
    _answer_all(stealing, stealing.balance())
    for _ in range(20):  # anti-thrash margin and cooldown: nothing bounces
        assert stealing.balance() == []
    moved = [e for e in state.transition_log if e[1:] == ("processing", "processing")]
    assert len(moved) == len({e[0] for e in moved})  # each task moved at most once


def test_in_flight_steals_count_so_a_second_pass_does_not_over_steal():
    state = _state_with_work()
    stealing = WorkStealing(state)
    first = stealing.balance()
    assert first
    assert stealing.balance() == []  # nothing answered yet, but counted already
    assert stealing.in_flight_occupancy[B] > 0 > stealing.in_flight_occupancy[A]


def test_answers_confirm_reject_and_reschedule():
    state = _state_with_work(n=6)
    stealing = WorkStealing(state)
    decisions = stealing.balance()
    assert len(decisions) >= 3
    d_ok, d_running, d_unknown = decisions[:3]
    _, wmsgs = stealing.handle_steal_response(d_ok.key, d_ok.stimulus_id, "waiting", A)
    assert state.tasks[d_ok.key].processing_on.address == B
    assert [m["key"] for m in wmsgs[B]] == [d_ok.key]
    assert stealing.handle_steal_response(d_running.key, d_running.stimulus_id, "executing", A) == ({}, {})
    assert state.tasks[d_running.key].processing_on.address == A  # rejected: it stays
    stealing.handle_steal_response(d_unknown.key, d_unknown.stimulus_id, None, A)
    assert state.tasks[d_unknown.key].state == "processing"  # scheduled again from scratch
    assert stealing.metrics["confirmed"] == stealing.metrics["rejected"] == 1
    assert stealing.metrics["rescheduled"] == 1
    events = stealing.take_events()
    assert [e["action"] for e in events].count("request") == len(decisions)
    assert {"confirm", "reject", "reschedule"} <= {e["action"] for e in events}
    state.validate_state()


def test_a_late_answer_never_moves_a_task_that_finished_or_was_reassigned():
    state = _state_with_work(n=6)
    stealing = WorkStealing(state)
    d = stealing.balance()[0]
    # The victim ran it meanwhile (it answered "executing" in real life; here
    # its result overtakes a stale confirmation).
    state.handle_task_finished(d.key, A, nbytes=8)
    assert stealing.handle_steal_response(d.key, d.stimulus_id, "ready", A) == ({}, {})
    assert stealing.metrics["stale"] == 1
    assert state.tasks[d.key].state in ("memory", "released", "forgotten")
    # A wrong stimulus id is stale too.
    d2 = stealing.balance()
    if d2:
        assert stealing.handle_steal_response(d2[0].key, "steal-nope", "ready", A) == ({}, {})
    state.validate_state()


def test_thief_gone_before_the_answer_reschedules_instead():
    state = _state_with_work(n=6)
    stealing = WorkStealing(state)
    d = stealing.balance()[0]
    state.remove_worker(B, safe=True)
    stealing.handle_steal_response(d.key, d.stimulus_id, "ready", A)
    assert state.tasks[d.key].processing_on.address == A
    state.validate_state()


def test_victim_gone_drops_its_steals():
    state = _state_with_work(n=6)
    stealing = WorkStealing(state)
    decisions = stealing.balance()
    state.remove_worker(A, safe=True)
    assert not stealing.in_flight
    for d in decisions:
        assert stealing.handle_steal_response(d.key, d.stimulus_id, "ready", A) == ({}, {})
    state.validate_state()


def test_restricted_tasks_never_move_and_loose_ones_may():
    keys = [f"f-{i}" for i in range(20)]
    strict = _state_with_work(n=20, restrictions=dict.fromkeys(keys, [A]))
    assert WorkStealing(strict).balance() == []
    loose = _state_with_work(n=20, restrictions=dict.fromkeys(keys, [A]), loose_restrictions=keys)
    assert WorkStealing(loose).balance()


def test_resources_are_never_optional():
    keys = [f"f-{i}" for i in range(20)]
    state = SchedulerState(validate=True)
    state.add_worker(A, nthreads=1, resources={"GPU": 1})
    state.update_data({"x": [A]}, {"x": 28}, client="c")
    state.update_graph("c", dict.fromkeys(keys, b"s"), dict.fromkeys(keys, ["x"]), keys,
                       resources=dict.fromkeys(keys, {"GPU": 1}))
    state.add_worker(B, nthreads=1)  # no GPU
    state.add_worker(C, nthreads=1, resources={"GPU": 2})
    decisions = WorkStealing(state).balance()
    assert decisions and {d.thief for d in decisions} == {C}


def test_actors_and_long_running_tasks_stay():
    state = _state_with_work(n=10)
    ws = state.workers[A]
    for ts in list(ws.processing):
        state.handle_long_running(ts.key, A)
    assert WorkStealing(state).balance() == []


def test_huge_inputs_for_tiny_tasks_are_never_stolen():
    state = SchedulerState()
    state.add_worker(A, nthreads=1)
    state.update_data({"x": [A]}, {"x": 10**10}, client="c")
    state.durations["f"] = 0.001
    keys = [f"f-{i}" for i in range(50)]
    state.update_graph("c", dict.fromkeys(keys, b"s"), dict.fromkeys(keys, ["x"]), keys)
    state.add_worker(B, nthreads=1)
    assert WorkStealing(state).balance() == []
    assert cost_level(10**10, 0.001, state.bandwidth) >= NEVER_LEVEL


def test_nothing_to_do_is_one_pass_over_the_workers():
    state = SchedulerState()
    for i in range(200):
        state.add_worker(f"tcp://10.1.0.{i}:1", nthreads=2)
    stealing = WorkStealing(state)
    assert stealing.balance() == []
    assert stealing.count == 0


def test_requests_group_by_victim_and_interval_parsing():
    d = StealDecision("k", A, B, "steal-1", 0.1, 3)
    assert WorkStealing.requests([d]) == {A: [{"op": "steal-request", "key": "k", "stimulus_id": "steal-1"}]}
    assert interval_from_config("1s") == 1.0
    assert interval_from_config(100) == 0.1  # a bare number is milliseconds
    with pytest.raises(ValueError, match="positive"):
        interval_from_config("0s")
    with pytest.raises(ValueError):
        WorkStealing(SchedulerState(), latency=-1)


def test_worker_machine_answers_from_its_own_state():
    ws = WorkerMachine(nthreads=1, data={})
    ws.handle_compute_task("run", "spec", priority=(0,), duration=1.0)
    ws.handle_compute_task("queued", "spec", priority=(1,), duration=1.0)
    assert ws.tasks["run"].state == "executing"
    ws.handle_steal_request("run", "steal-1")
    ws.handle_steal_request("queued", "steal-2")
    ws.handle_steal_request("never-heard-of", "steal-3")
    answers = {m["key"]: (m["state"], m["stimulus_id"]) for m in ws.scheduler_msgs if m["op"] == "steal-response"}
    assert answers == {"run": ("executing", "steal-1"), "queued": ("ready", "steal-2"),
                       "never-heard-of": (None, "steal-3")}
    assert "queued" not in ws.tasks and ws.tasks["run"].state == "executing"
    # The dropped task never starts: finishing "run" starts nothing.
    assert ws.handle_execute_success("run", 1, nbytes=28) == []


# ----------------------------------------------------------------------
# In-process clusters
# ----------------------------------------------------------------------

_executions: Counter = Counter()
_executions_lock = threading.Lock()


def counted_sleep(x, i, delay=0.25):
    """Sleeps ``delay``; records that it ran (a side effect, to catch a
    task run twice)."""
    with _executions_lock:
        _executions[i] += 1
    time.sleep(delay)
    return x + i


def _ran(worker: Worker, prefix: str = "counted_sleep") -> int:
    """Tasks of ``prefix`` this worker executed (its own record)."""
    return sum(1 for k in worker.startstops if str(k).startswith(prefix))


@gen_cluster(client=True, nthreads=[("127.0.0.1", 1), ("127.0.0.1", 1)])
async def test_both_workers_run_tasks_whose_input_is_on_one(c, s, a, b):
    x = await c.scatter(1, workers=[a.address])
    futures = c.map(counted_sleep, [x] * 40, range(40), delay=0.25)
    results = await c.gather(futures)
    assert results == [1 + i for i in range(40)]
    ran = (_ran(a), _ran(b))
    assert sum(ran) == 40 and min(ran) >= 10, ran


@gen_cluster(client=True, nthreads=[("127.0.0.1", 1)])
async def test_a_worker_added_after_submission_runs_tasks(c, s, a):
    x = await c.scatter(1, workers=[a.address])
    futures = c.map(counted_sleep, [x] * 20, range(100, 120), delay=0.25)
    await async_wait_for(lambda: len(a.state.executing) > 0, timeout=10)
    async with Worker(s.address, nthreads=1) as late:
        await wait(futures)
        assert _ran(late) >= 3, (_ran(a), _ran(late))
    assert await c.gather(futures) == [1 + i for i in range(100, 120)]


@gen_cluster(client=True, nthreads=[("127.0.0.1", 1), ("127.0.0.1", 1)])
async def test_restricted_tasks_never_move(c, s, a, b):
    x = await c.scatter(1, workers=[a.address])
    strict = c.map(counted_sleep, [x] * 12, range(200, 212), delay=0.1, workers=[a.address])
    await wait(strict)
    assert (_ran(a), _ran(b)) == (12, 0)
    loose = c.map(counted_sleep, [x] * 20, range(300, 320), delay=0.2, workers=[a.address],
                  allow_other_workers=True)
    await wait(loose)
    assert _ran(b) >= 5  # allow_other_workers=True tasks may move: placed on a, stolen by b
    assert s.extensions["stealing"].metrics["confirmed"] >= 5
    assert any(e["action"] == "confirm" for _, e in s.get_events("stealing"))


@gen_cluster(client=True, nthreads=[("127.0.0.1", 1), ("127.0.0.1", 1)],
             config={"distributed.scheduler.work-stealing-interval": "5ms"})
async def test_a_steal_racing_a_start_never_runs_a_task_twice(c, s, a, b):
    x = await c.scatter(1, workers=[a.address])
    keys = range(1000, 1200)
    # Placed on a (allow_other_workers), so that b must steal them.
    futures = c.map(counted_sleep, [x] * len(keys), keys, delay=0.01, workers=[a.address],
                    allow_other_workers=True)
    assert await c.gather(futures) == [1 + i for i in keys]
    with _executions_lock:
        assert {i: _executions[i] for i in keys} == dict.fromkeys(keys, 1)
    metrics = s.extensions["stealing"].metrics
    assert sum(metrics["request_count_total"].values()) >= 1
    s.validate_state()


@gen_cluster(client=True, nthreads=[("127.0.0.1", 1), ("127.0.0.1", 1)],
             config={"distributed.scheduler.work-stealing": False})
async def test_stealing_off_by_config_means_none_happen(c, s, a, b):
    assert "stealing" not in s.extensions
    assert "stealing" not in s.periodic_callbacks
    x = await c.scatter(1, workers=[a.address])
    futures = c.map(counted_sleep, [x] * 10, range(400, 410), delay=0.05)
    await wait(futures)
    assert not s.get_events("stealing")
    assert not [e for e in s.story(*[f.key for f in futures]) if e[1:] == ("processing", "processing")]


# ----------------------------------------------------------------------
# Real processes
# ----------------------------------------------------------------------


def _count_tasks(dask_worker, prefix="counted_sleep"):
    return sum(1 for k in dask_worker.startstops if str(k).startswith(prefix))


def test_both_worker_processes_run_tasks_whose_input_is_on_one(loop):
    with cluster(nworkers=2, worker_kwargs={"nthreads": 1}) as (s, [wa, wb]):
        with Client(s["address"], loop=loop) as c:
            x = c.scatter(1, workers=[wa["address"]])
            futures = c.map(counted_sleep, [x] * 40, range(40), delay=0.25)
            assert c.gather(futures) == [1 + i for i in range(40)]
            counts = c.run(_count_tasks)
            assert sum(counts.values()) == 40 and min(counts.values()) >= 10, counts
