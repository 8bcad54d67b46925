"""Where new tasks go (``SchedulerState.decide_worker`` and root-task
queuing): where most of their input bytes are, ties to the least busy;
root tasks spread and queued by ``worker-saturation``; paused and retiring
workers get nothing new.  Mostly the state machine alone, then a cluster."""
from __future__ import annotations

import math

import pytest

from distributed import config
from distributed.scheduler.state import _FAN_IN_MAX_PER_THREAD, SchedulerState
from distributed.utils_test import gen_cluster, inc, slowinc

pytestmark = pytest.mark.timeout(120)

A, B, C = "tcp://10.0.0.1:1", "tcp://10.0.0.2:1", "tcp://10.0.0.3:1"


def _state(*workers, nthreads: int = 1, **kwargs) -> SchedulerState:
    state = SchedulerState(validate=True, **kwargs)
    for w in workers:
        state.add_worker(w, nthreads=nthreads)
    state.add_client("c")
    return state


def _where(state: SchedulerState, key) -> str:
    return state.tasks[key].processing_on.address


def test_a_task_goes_where_most_of_its_input_bytes_are():
    state = _state(A, B)
    state.update_data({"big": [A], "small": [B]}, {"big": 50_000_000, "small": 1_000}, client="c")
    state.update_graph("c", {"y": b"s"}, {"y": ["big", "small"]}, ["y"])
    assert _where(state, "y") == A


def test_small_inputs_tie_and_the_least_busy_worker_wins():
    state = _state(A, B)
    state.update_data({"x": [A], "z": [B]}, {"x": 100, "z": 100}, client="c")
    state.durations["busy"] = 1.0
    keys = [f"busy-{i}" for i in range(3)]
    state.update_graph("c", dict.fromkeys(keys, b"s"), {}, keys, restrictions=dict.fromkeys(keys, [A]))
    state.update_graph("c", {"y": b"s"}, {"y": ["x", "z"]}, ["y"])
    assert _where(state, "y") == B


def test_many_tasks_on_one_small_input_spread_over_the_workers():
    """The issue's case: 40 tasks needing a small value held by A."""
    state = _state(A, B)
    state.update_data({"x": [A]}, {"x": 28}, client="c")
    state.durations["f"] = 0.25
    keys = [f"f-{i}" for i in range(40)]
    state.update_graph("c", dict.fromkeys(keys, b"s"), dict.fromkeys(keys, ["x"]), keys)
    where = [_where(state, k) for k in keys]
    assert abs(where.count(A) - where.count(B)) <= 2


def test_large_input_stays_unless_the_queue_there_is_longer_than_the_move():
    keys = [f"f-{i}" for i in range(200)]
    slow_net = _state(A, B, bandwidth=100e6)
    slow_net.update_data({"x": [A]}, {"x": 10_000_000}, client="c")
    slow_net.durations["f"] = 1e-5
    slow_net.update_graph("c", dict.fromkeys(keys, b"s"), dict.fromkeys(keys, ["x"]), keys)
    assert {_where(slow_net, k) for k in keys} == {A}  # 0.1 s to move vs 0.1 ms tasks
    fast_net = _state(A, B, bandwidth=2e9)  # as measured on loopback
    fast_net.update_data({"x": [A]}, {"x": 10_000_000}, client="c")
    fast_net.durations["f"] = 1e-5
    fast_net.update_graph("c", dict.fromkeys(keys, b"s"), dict.fromkeys(keys, ["x"]), keys)
    assert {_where(fast_net, k) for k in keys} == {A, B}


def test_bandwidth_estimate_learns_from_measurements():
    state = _state(A, bandwidth=100e6)
    state.note_bandwidth(1e9)
    assert state.bandwidth == pytest.approx(550e6)
    for bad in (0, -5, float("nan"), float("inf"), "fast", None):
        state.note_bandwidth(bad)
    assert state.bandwidth == pytest.approx(550e6)


@pytest.mark.parametrize("status", ["paused", "closing_gracefully"])
def test_a_paused_or_retiring_worker_gets_nothing_new(status):
    state = _state(A, B)
    state.update_data({"x": [A]}, {"x": 10_000_000}, client="c")
    if status == "paused":
        state.handle_worker_status_change(A, "paused")
    else:  # what retire_workers does first
        state.workers[A].status = status
        state.idle.pop(A, None)
    keys = [f"f-{i}" for i in range(10)]
    state.update_graph("c", dict.fromkeys(keys, b"s"), dict.fromkeys(keys, ["x"]), keys)
    roots = [f"r-{i}" for i in range(10)]
    state.update_graph("c", dict.fromkeys(roots, b"s"), {}, roots)
    assert not state.workers[A].processing
    assert {_where(state, k) for k in keys} == {B}


def test_root_tasks_are_spread_and_queued_by_worker_saturation():
    state = _state(A, B)
    keys = [f"r-{i}" for i in range(100)]
    state.update_graph("c", dict.fromkeys(keys, b"s"), {}, keys,
                       priority={k: i for i, k in enumerate(keys)})
    held = [len(state.workers[w].processing) for w in (A, B)]
    assert held == [math.ceil(1.1 * 1)] * 2  # upstream's default for an unknown duration
    assert sum(ts.state == "queued" for ts in state.tasks.values()) == 100 - sum(held)
    # Graph order: the first keys run first, the last ones wait.
    assert state.tasks["r-0"].state == "processing" and state.tasks["r-99"].state == "queued"
    # As a task finishes, its worker takes the next one from the queue.
    first = next(iter(state.workers[A].processing)).key
    state.handle_task_finished(first, A, nbytes=8)
    assert len(state.workers[A].processing) == 2


def _tree(state: SchedulerState, n: int) -> list:
    """``n`` leaves, each summed with its neighbour, pairwise up to one total."""
    leaves = [f"leaf-{i}" for i in range(n)]
    tasks, deps, level, depth = dict.fromkeys(leaves, b"s"), {}, leaves, 0
    while len(level) > 1:
        depth += 1
        nxt = [f"sum{depth}-{j}" for j in range(0, len(level), 2)]
        for j, key in enumerate(nxt):
            tasks[key] = b"s"
            deps[key] = level[2 * j:2 * j + 2]
        level = nxt
    state.update_graph("c", tasks, deps, level, priority={k: i for i, k in enumerate(tasks)})
    return leaves


def test_tiny_root_tasks_queue_deep_on_workers_unless_their_results_are_combined():
    """Tiny tasks need deep worker queues to keep threads busy across the
    round trip, but the leaves of a reduction must not run far ahead of the
    sums that combine them: they get a much shallower queue."""
    maps = _state(A, B)
    maps.durations["m"] = maps._durations_total = 0.0001  # known tiny
    keys = [f"m-{i}" for i in range(1000)]
    maps.update_graph("c", dict.fromkeys(keys, b"s"), {}, keys)
    assert min(len(maps.workers[w].processing) for w in (A, B)) > 2
    tree = _state(A, B)
    tree.durations["leaf"] = tree._durations_total = 0.0001
    leaves = _tree(tree, 256)
    shallow = [len(tree.workers[w].processing) for w in (A, B)]
    assert shallow == [_FAN_IN_MAX_PER_THREAD] * 2  # 5 ms of 0.1 ms tasks, capped
    assert min(len(maps.workers[w].processing) for w in (A, B)) > max(shallow)
    # A finished leaf frees a slot for the next queued leaf, one for one.
    first = next(iter(tree.workers[A].processing)).key
    assert first in leaves
    tree.handle_task_finished(first, A, nbytes=8, duration=0.0001)
    assert len(tree.workers[A].processing) == shallow[0]
    # Unknown durations: upstream's one-and-a-bit per thread.
    slow = _state(A)
    _tree(slow, 64)
    assert len(slow.workers[A].processing) == math.ceil(1.1)


def test_map_then_map_queues_deep_and_map_then_sum_does_not():
    """Two levels downstream are looked at: a chain of maps is not a fan-in,
    a map whose results are summed is."""
    from distributed.scheduler.state import _fans_in

    state = _state(A)
    xs, ys = [f"x-{i}" for i in range(3)], [f"y-{i}" for i in range(3)]
    state.update_graph("c", dict.fromkeys(xs + ys, b"s"), {y: [x] for x, y in zip(xs, ys)}, ys)
    assert not any(_fans_in(state.tasks[x]) for x in xs)
    state.update_graph("c", {"total": b"s"}, {"total": ys}, ["total"])
    assert all(_fans_in(state.tasks[x]) for x in xs)


def test_worker_saturation_inf_turns_queuing_off_and_bad_values_raise():
    state = _state(A, B, worker_saturation="inf")
    keys = [f"r-{i}" for i in range(50)]
    state.update_graph("c", dict.fromkeys(keys, b"s"), {}, keys)
    assert not any(ts.state == "queued" for ts in state.tasks.values())
    four = _state(A, nthreads=4, worker_saturation=2.0)
    four.update_graph("c", dict.fromkeys(keys, b"s"), {}, keys)
    assert len(four.workers[A].processing) == 8
    for bad in (0, -1, "lots", None):
        with pytest.raises(ValueError, match="worker-saturation"):
            SchedulerState(worker_saturation=bad)


def _add(x, y):
    return x + y


# Validating the whole state after every change is quadratic on 2,000 tasks.
@gen_cluster(client=True, nthreads=[("127.0.0.1", 1)] * 3,
             scheduler_kwargs={"validate": False}, worker_kwargs={"validate": False})
async def test_a_tree_reduction_of_tiny_tasks_keeps_few_results_in_memory(c, s, *workers):
    """dask.array's ``sum(split_every=2)`` shape without dask: upstream holds
    about twenty results at once here, the shallow queue for combined
    results about 90, a deep worker queue held 300-600."""
    held = {"now": 0, "max": 0}

    class CountMemory:
        def transition(self, key, start, finish, **kwargs):
            held["now"] += (finish == "memory") - (start == "memory")
            held["max"] = max(held["max"], held["now"])

    s.state.plugins.append(CountMemory())
    dsk: dict = {f"leaf-{i}": (inc, i) for i in range(1000)}
    level, depth = list(dsk), 0
    while len(level) > 1:  # one graph: the scheduler sees the whole tree at once
        depth += 1
        nxt = []
        for j in range(0, len(level), 2):
            key = f"sum{depth}-{j}"
            dsk[key] = (_add, level[j], level[j + 1]) if j + 1 < len(level) else (inc, level[j])
            nxt.append(key)
        level = nxt
    assert await c.get(dsk, level[0]) > sum(range(1, 1001))
    assert held["max"] < 200, held


@gen_cluster(client=True, nthreads=[("127.0.0.1", 1), ("127.0.0.1", 1)])
async def test_root_tasks_use_both_workers(c, s, a, b):
    futures = c.map(slowinc, range(20), delay=0.05)
    assert await c.gather(futures) == [i + 1 for i in range(20)]
    ran = [sum(1 for k in w.startstops if str(k).startswith("slowinc")) for w in (a, b)]
    assert min(ran) >= 5, ran


@gen_cluster(client=True, nthreads=[("127.0.0.1", 1), ("127.0.0.1", 1)],
             config={"distributed.scheduler.worker-saturation": 3.0})
async def test_scheduler_reads_worker_saturation_from_config(c, s, a, b):
    assert s.state.worker_saturation == 3.0
    assert config.get("distributed.scheduler.worker-saturation") == 3.0
    await c.submit(inc, 1)


@gen_cluster(client=True, nthreads=[("127.0.0.1", 1), ("127.0.0.1", 1)])
async def test_paused_worker_runs_nothing_new(c, s, a, b):
    x = await c.scatter(1, workers=[a.address])
    s.state.handle_worker_status_change(a.address, "paused")
    futures = c.map(inc, [x] * 10 + list(range(10)), pure=False)
    await c.gather(futures)
    assert not any(str(k).startswith("inc") for k in a.startstops)
    s.state.handle_worker_status_change(a.address, "running")
