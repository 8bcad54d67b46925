"""SchedulerState driven directly: events in, messages out, no network.

Every state is built with ``validate=True`` (the invariants are checked at
the end of each batch of transitions) and ``check()`` validates again after
each step, because some events return without running transitions.
"""
from __future__ import annotations

import pytest

from distributed.exceptions import FutureLost, KilledWorker
from distributed.protocol import Serialize, SharedBytes
from distributed.scheduler.state import SchedulerState
from distributed.spec import CALL, NODE, WALK

try:
    import hypothesis
    from hypothesis import HealthCheck, settings
    from hypothesis import strategies as st
    from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
except ImportError:  # a test extra: only the random tests need it
    hypothesis = None

A = "tcp://127.0.0.1:1001"
B = "tcp://127.0.0.1:1002"
C = "tcp://127.0.0.1:1003"
D2 = "tcp://127.0.0.2:1004"  # another loopback host


# ----------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------


def new_state(*workers, nthreads=1, **kwargs) -> SchedulerState:
    s = SchedulerState(validate=True, **kwargs)
    for w in workers:
        s.add_worker(w, nthreads=nthreads)
    s.add_client("c")
    return s


def check(s: SchedulerState, result=None):
    s.validate_state()
    return result


def ops(msgs: dict, op: str, to=None) -> list:
    """Messages of type ``op`` (to one recipient or to all)."""
    out = []
    for recipient, lst in msgs.items():
        if to is not None and recipient != to:
            continue
        out.extend(m for m in lst if m["op"] == op)
    return out


def computed(wmsgs: dict) -> dict:
    """key -> worker address for the compute-task messages in ``wmsgs``."""
    return {m["key"]: w for w, lst in wmsgs.items() for m in lst if m["op"] == "compute-task"}


def finish(s: SchedulerState, key, nbytes: int = 100, duration=None):
    """The worker processing ``key`` reports it done."""
    ws = s.tasks[key].processing_on
    assert ws is not None, f"{key!r} is {s.tasks[key].state}, not processing"
    return check(s, s.handle_task_finished(key, ws.address, nbytes=nbytes, duration=duration))


def fail(s: SchedulerState, key, exc: BaseException | None = None):
    ws = s.tasks[key].processing_on
    assert ws is not None, f"{key!r} is {s.tasks[key].state}, not processing"
    exc = exc or ZeroDivisionError("boom")
    return check(s, s.handle_task_erred(key, ws.address, exception=Serialize(exc), traceback=[],
                                        exception_text=repr(exc), traceback_text="Traceback: boom"))


def states(s: SchedulerState, *keys) -> dict:
    return {k: s.tasks[k].state if k in s.tasks else "forgotten" for k in keys}


# ----------------------------------------------------------------------
# update_graph and task completion
# ----------------------------------------------------------------------


def test_update_graph_sends_compute_task_for_ready_tasks_only():
    s = new_state(A)
    cmsgs, wmsgs = check(s, s.update_graph(
        "c", tasks={"x": "spec-x", "y": "spec-y"}, dependencies={"y": ["x"]}, keys=["y"]))
    msgs = ops(wmsgs, "compute-task", to=A)
    assert [m["key"] for m in msgs] == ["x"]
    assert msgs[0]["run_spec"] == "spec-x"
    assert "who_has" not in msgs[0]
    assert states(s, "x", "y") == {"x": "processing", "y": "waiting"}
    assert s.tasks["x"].processing_on is s.workers[A]
    assert not ops(cmsgs, "key-in-memory")


def test_finished_task_schedules_dependents_with_input_locations():
    s = new_state(A, B)
    s.update_graph("c", tasks={"x": 1, "y": 2}, dependencies={"y": ["x"]}, keys=["y"])
    holder = s.tasks["x"].processing_on.address
    cmsgs, wmsgs = finish(s, "x", nbytes=1234)
    (msg,) = ops(wmsgs, "compute-task")
    assert msg["key"] == "y"
    assert msg["who_has"] == {"x": [holder]}
    assert msg["nbytes"] == {"x": 1234}
    assert not ops(cmsgs, "key-in-memory"), "nobody asked for x"
    assert states(s, "x", "y") == {"x": "memory", "y": "processing"}


def test_finished_wanted_key_tells_client_and_frees_intermediates():
    s = new_state(A)
    s.update_graph("c", tasks={"x": 1, "y": 2}, dependencies={"y": ["x"]}, keys=["y"])
    finish(s, "x")
    cmsgs, wmsgs = finish(s, "y")
    (msg,) = ops(cmsgs, "key-in-memory", to="c")
    assert msg["key"] == "y" and msg["workers"] == [A]
    # x is needed by nobody any more: freed on the worker, kept (released)
    # as y's lineage until y is forgotten too
    assert {"op": "free-keys", "keys": ["x"]} in wmsgs[A]
    assert states(s, "x", "y") == {"x": "released", "y": "memory"}
    assert s.workers[A].has_what.keys() == {s.tasks["y"]}
    check(s, s.client_releases_keys("c", ["y"]))
    assert s.tasks == {}


def test_update_graph_for_key_already_in_memory_reports_at_once():
    s = new_state(A)
    s.update_graph("c", tasks={"x": 1}, dependencies={}, keys=["x"])
    finish(s, "x")
    s.add_client("d")
    cmsgs, wmsgs = check(s, s.update_graph("d", tasks={"x": 1}, dependencies={}, keys=["x"]))
    assert [m["key"] for m in ops(cmsgs, "key-in-memory", to="d")] == ["x"]
    assert not ops(wmsgs, "compute-task")


def test_task_depending_on_unknown_key_errs_with_clear_message():
    s = new_state(A)
    cmsgs, _ = check(s, s.update_graph("c", tasks={"y": 1}, dependencies={"y": ["gone"]}, keys=["y"]))
    (msg,) = ops(cmsgs, "task-erred", to="c")
    assert isinstance(msg["exception"].data, KeyError)
    assert "gone" in str(msg["exception"].data)


def test_client_releases_keys_forgets_them_and_frees_worker_memory():
    s = new_state(A)
    s.update_graph("c", tasks={"x": 1, "y": 2}, dependencies={"y": ["x"]}, keys=["x", "y"])
    finish(s, "x")
    finish(s, "y")
    cmsgs, wmsgs = check(s, s.client_releases_keys("c", ["y"]))
    assert ops(wmsgs, "free-keys", to=A) == [{"op": "free-keys", "keys": ["y"]}]
    assert "y" not in s.tasks
    assert s.tasks["x"].state == "memory", "x is still wanted"
    cmsgs, wmsgs = check(s, s.client_releases_keys("c", ["x"]))
    assert ops(wmsgs, "free-keys", to=A) == [{"op": "free-keys", "keys": ["x"]}]
    assert s.tasks == {}
    assert not s.clients["c"].wants_what
    assert s.workers[A].nbytes == 0


def test_releasing_a_processing_key_cancels_it_on_the_worker():
    s = new_state(A)
    s.update_graph("c", tasks={"x": 1}, dependencies={}, keys=["x"])
    _, wmsgs = check(s, s.client_releases_keys("c", ["x"]))
    assert ops(wmsgs, "free-keys", to=A) == [{"op": "free-keys", "keys": ["x"]}]
    assert "x" not in s.tasks
    assert not s.workers[A].processing
    # the late result is refused
    _, wmsgs = check(s, s.handle_task_finished("x", A, nbytes=10))
    assert wmsgs[A] == [{"op": "free-keys", "keys": ["x"]}]
    assert "x" not in s.tasks


def test_key_shared_by_two_clients_lives_until_both_release():
    s = new_state(A)
    s.add_client("d")
    s.update_graph("c", tasks={"x": 1}, dependencies={}, keys=["x"])
    s.update_graph("d", tasks={"x": 1}, dependencies={}, keys=["x"])
    finish(s, "x")
    check(s, s.client_releases_keys("c", ["x"]))
    assert s.tasks["x"].state == "memory"
    check(s, s.remove_client("d"))
    assert "x" not in s.tasks


def test_stale_result_from_other_worker_is_freed():
    s = new_state(A, B)
    s.update_graph("c", tasks={"x": 1}, dependencies={}, keys=["x"])
    other = B if s.tasks["x"].processing_on.address == A else A
    cmsgs, wmsgs = check(s, s.handle_task_finished("x", other, nbytes=1))
    assert wmsgs[other] == [{"op": "free-keys", "keys": ["x"]}]
    assert s.tasks["x"].state == "processing"


# ----------------------------------------------------------------------
# errors and retries
# ----------------------------------------------------------------------


def test_error_propagates_to_dependents_and_their_clients():
    s = new_state(A)
    s.add_client("d")
    s.update_graph("c", tasks={"x": 1, "y": 2, "z": 3}, dependencies={"y": ["x"], "z": ["y"]},
                   keys=["x", "z"])
    s.update_graph("d", tasks={"y": 2}, dependencies={"y": ["x"]}, keys=["y"])
    cmsgs, wmsgs = fail(s, "x")
    assert states(s, "x", "y", "z") == {"x": "erred", "y": "erred", "z": "erred"}
    assert sorted(m["key"] for m in ops(cmsgs, "task-erred", to="c")) == ["x", "z"]
    assert [m["key"] for m in ops(cmsgs, "task-erred", to="d")] == ["y"]
    for m in ops(cmsgs, "task-erred"):
        assert isinstance(m["exception"].data, ZeroDivisionError)
        assert m["traceback_text"] == "Traceback: boom"
    assert s.tasks["z"].exception_blame is s.tasks["x"]
    assert not ops(wmsgs, "compute-task")


def test_new_task_on_erred_dependency_errs_at_once():
    s = new_state(A)
    s.update_graph("c", tasks={"x": 1}, dependencies={}, keys=["x"])
    fail(s, "x")
    cmsgs, wmsgs = check(s, s.update_graph("c", tasks={"y": 2}, dependencies={"y": ["x"]}, keys=["y"]))
    (msg,) = ops(cmsgs, "task-erred", to="c")
    assert msg["key"] == "y" and isinstance(msg["exception"].data, ZeroDivisionError)
    assert not ops(wmsgs, "compute-task")


def test_retries_reschedule_before_the_error_reaches_the_client():
    s = new_state(A)
    s.update_graph("c", tasks={"x": 1}, dependencies={}, keys=["x"], retries={"x": 2})
    for _ in range(2):
        cmsgs, wmsgs = fail(s, "x")
        assert not ops(cmsgs, "task-erred")
        assert [m["key"] for m in ops(wmsgs, "compute-task", to=A)] == ["x"]
        assert s.tasks["x"].state == "processing"
    cmsgs, wmsgs = fail(s, "x")
    assert [m["key"] for m in ops(cmsgs, "task-erred", to="c")] == ["x"]
    assert s.tasks["x"].state == "erred"


def test_retry_keeps_inputs_that_only_the_retried_task_needs():
    """A retried task must not release its inputs: a scattered input held
    only for this task could not be recomputed."""
    s = new_state(A)
    s.update_data({"d": [A]}, {"d": 10}, client="c")
    s.update_graph("c", tasks={"y": 1}, dependencies={"y": ["d"]}, keys=["y"], retries={"y": 1})
    check(s, s.client_releases_keys("c", ["d"]))
    cmsgs, wmsgs = fail(s, "y")
    assert not ops(cmsgs, "task-erred"), cmsgs
    assert not ops(wmsgs, "free-keys", to=A) or all("d" not in m["keys"] for m in ops(wmsgs, "free-keys"))
    assert states(s, "d", "y") == {"d": "memory", "y": "processing"}
    cmsgs, wmsgs = finish(s, "y")
    assert [m["key"] for m in ops(cmsgs, "key-in-memory")] == ["y"]
    assert {"op": "free-keys", "keys": ["d"]} in wmsgs[A]
    assert s.tasks["d"].state == "released"


def test_retry_of_erred_key_reruns_it_and_its_erred_dependents():
    s = new_state(A)
    s.update_graph("c", tasks={"x": 1, "y": 2}, dependencies={"y": ["x"]}, keys=["y"])
    fail(s, "x")
    assert states(s, "x", "y") == {"x": "erred", "y": "erred"}
    _, wmsgs = check(s, s.retry(["y"]))
    assert [m["key"] for m in ops(wmsgs, "compute-task")] == ["x"]
    assert states(s, "x", "y") == {"x": "processing", "y": "waiting"}
    finish(s, "x")
    cmsgs, _ = finish(s, "y")
    assert [m["key"] for m in ops(cmsgs, "key-in-memory")] == ["y"]


# ----------------------------------------------------------------------
# losing workers
# ----------------------------------------------------------------------


def test_processing_tasks_of_a_removed_worker_are_rescheduled():
    s = new_state(A, B)
    s.update_graph("c", tasks={"x0": 0, "x1": 1}, dependencies={}, keys=["x0", "x1"])
    on_a = [k for k, ts in s.tasks.items() if ts.processing_on is s.workers[A]]
    assert len(on_a) == 1
    _, wmsgs = check(s, s.remove_worker(A, safe=True))
    assert A not in wmsgs, "no messages to a dead worker"
    assert set(computed(wmsgs)) == set(on_a)
    assert set(computed(wmsgs).values()) == {B}
    assert all(ts.processing_on is s.workers[B] for ts in s.tasks.values())


def test_key_only_on_lost_worker_is_recomputed_from_lineage():
    s = new_state(A, B)
    s.update_graph("c", tasks={"x": 1}, dependencies={}, keys=["x"], restrictions={"x": [A]})
    finish(s, "x")
    s.update_graph("c", tasks={"y": 2}, dependencies={"y": ["x"]}, keys=["y"], restrictions={"y": [B]})
    assert s.tasks["y"].processing_on is s.workers[B]
    # x's restriction was a placement hint for the first run; lift it so it
    # can be recomputed on B (restrictions are not the point here).
    s.tasks["x"].worker_restrictions = None
    cmsgs, wmsgs = check(s, s.remove_worker(A))
    assert [m["key"] for m in ops(cmsgs, "lost-data", to="c")] == ["x"]
    assert computed(wmsgs) == {"x": B}
    assert ("x", "memory", "released") in s.story("x")
    assert ("x", "released", "waiting") in s.story("x")
    assert s.story("x")[-1] == ("x", "waiting", "processing")
    assert states(s, "x", "y") == {"x": "processing", "y": "waiting"}
    assert ops(wmsgs, "free-keys", to=B) == [{"op": "free-keys", "keys": ["y"]}]
    _, wmsgs = finish(s, "x")
    (msg,) = ops(wmsgs, "compute-task", to=B)
    assert msg["key"] == "y" and msg["who_has"] == {"x": [B]}
    cmsgs, _ = finish(s, "y")
    assert [m["key"] for m in ops(cmsgs, "key-in-memory")] == ["y"]


def test_intermediate_lost_with_its_worker_is_recomputed_for_waiting_dependent():
    s = new_state(A, B)
    s.update_graph("c", tasks={"x": 1, "w": 2}, dependencies={}, keys=[],
                   restrictions={"x": [A], "w": [B]})
    # nobody wants x or w yet: add a dependent that needs both
    s.update_graph("c", tasks={"z": 3}, dependencies={"z": ["x", "w"]}, keys=["z"])
    s.tasks["x"].worker_restrictions = None
    finish(s, "x")
    assert states(s, "x", "w", "z") == {"x": "memory", "w": "processing", "z": "waiting"}
    cmsgs, wmsgs = check(s, s.remove_worker(A))
    assert not ops(cmsgs, "lost-data"), "the client never asked for x"
    assert computed(wmsgs) == {"x": B}
    assert set(s.tasks["z"].waiting_on) == {s.tasks["x"], s.tasks["w"]}
    finish(s, "x")
    _, wmsgs = finish(s, "w")
    assert computed(wmsgs) == {"z": B}


def test_scattered_data_lost_with_its_worker_errs_with_future_lost():
    s = new_state(A, B)
    cmsgs, _ = check(s, s.update_data({"d": [A]}, {"d": 10}, client="c"))
    assert [m["key"] for m in ops(cmsgs, "key-in-memory", to="c")] == ["d"]
    s.update_graph("c", tasks={"e": 1}, dependencies={"e": ["d"]}, keys=["e"])
    cmsgs, wmsgs = check(s, s.remove_worker(A))
    assert ops(cmsgs, "lost-data", to="c") == [{"op": "lost-data", "key": "d"}]
    erred = {m["key"]: m for m in ops(cmsgs, "task-erred", to="c")}
    assert set(erred) == {"d", "e"}
    for m in erred.values():
        exc = m["exception"].data
        assert isinstance(exc, FutureLost)
        assert "'d'" in str(exc) and "scattered" in str(exc)
    assert states(s, "d", "e") == {"d": "erred", "e": "erred"}
    assert not computed(wmsgs)


def test_scattered_data_with_a_second_replica_survives():
    s = new_state(A, B)
    s.update_data({"d": [A, B]}, {"d": 10}, client="c")
    cmsgs, _ = check(s, s.remove_worker(A))
    assert not ops(cmsgs, "lost-data")
    assert set(s.tasks["d"].who_has) == {s.workers[B]}


def test_killed_worker_after_allowed_failures_plus_one_deaths():
    s = new_state(A, B, C, allowed_failures=1)
    s.update_graph("c", tasks={"x": 1}, dependencies={}, keys=["x"])
    first = s.tasks["x"].processing_on.address
    cmsgs, wmsgs = check(s, s.remove_worker(first))
    assert not ops(cmsgs, "task-erred")
    second = s.tasks["x"].processing_on.address
    assert second != first and computed(wmsgs) == {"x": second}
    cmsgs, wmsgs = check(s, s.remove_worker(second))
    (msg,) = ops(cmsgs, "task-erred", to="c")
    exc = msg["exception"].data
    assert isinstance(exc, KilledWorker)
    assert exc.task == "x" and exc.last_worker == second
    assert "2 different workers" in str(exc)
    assert s.tasks["x"].state == "erred"
    assert not computed(wmsgs)
    # the remaining worker serves other work
    _, wmsgs = check(s, s.update_graph("c", tasks={"y": 1}, dependencies={}, keys=["y"]))
    assert len(computed(wmsgs)) == 1


def test_safe_worker_removal_does_not_count_as_a_death():
    s = new_state(A, B, C, allowed_failures=0)
    s.update_graph("c", tasks={"x": 1}, dependencies={}, keys=["x"])
    check(s, s.remove_worker(s.tasks["x"].processing_on.address, safe=True))
    check(s, s.remove_worker(s.tasks["x"].processing_on.address, safe=True))
    assert s.tasks["x"].state == "processing"
    assert s.tasks["x"].suspicious == 0


def test_only_running_tasks_are_blamed_for_a_death():
    s = new_state(A, B, allowed_failures=0)
    keys = [f"x{i}" for i in range(3)]
    s.update_graph("c", tasks={k: 1 for k in keys}, dependencies={}, keys=keys,
                   priority={k: i for i, k in enumerate(keys)}, restrictions={k: [A] for k in keys},
                   loose_restrictions=keys)
    cmsgs, _ = check(s, s.remove_worker(A))
    # one thread: only the highest-priority task was running
    assert [m["key"] for m in ops(cmsgs, "task-erred")] == ["x0"]
    assert states(s, *keys) == {"x0": "erred", "x1": "processing", "x2": "processing"}


def test_removing_unknown_worker_is_harmless():
    s = new_state(A)
    assert s.remove_worker(B) == ({}, {})
    check(s)


# ----------------------------------------------------------------------
# restrictions and resources
# ----------------------------------------------------------------------


def test_worker_restriction_by_address():
    s = new_state(A, B)
    _, wmsgs = check(s, s.update_graph("c", tasks={f"x{i}": i for i in range(4)}, dependencies={},
                                       keys=[f"x{i}" for i in range(4)],
                                       restrictions={f"x{i}": [B] for i in range(4)}))
    assert set(computed(wmsgs).values()) == {B}


def test_worker_restriction_without_scheme_is_normalized():
    s = new_state(A, B)
    _, wmsgs = check(s, s.update_graph("c", tasks={"x": 1}, dependencies={}, keys=["x"],
                                       restrictions={"x": "127.0.0.1:1002"}))
    assert computed(wmsgs) == {"x": B}


def test_worker_restriction_by_name():
    s = new_state()
    s.add_worker(A, nthreads=1, name="alice")
    s.add_worker(B, nthreads=1, name="bob")
    _, wmsgs = check(s, s.update_graph("c", tasks={"x": 1, "y": 2}, dependencies={}, keys=["x", "y"],
                                       restrictions={"x": ["bob"], "y": "alice"}))
    assert computed(wmsgs) == {"x": B, "y": A}


def test_worker_restriction_by_host():
    s = new_state(A, D2)
    _, wmsgs = check(s, s.update_graph("c", tasks={"x": 1, "y": 2}, dependencies={}, keys=["x", "y"],
                                       restrictions={"x": ["127.0.0.2"], "y": ["127.0.0.1"]}))
    assert computed(wmsgs) == {"x": D2, "y": A}


def test_strict_restriction_to_absent_worker_waits_for_it():
    s = new_state(A)
    _, wmsgs = check(s, s.update_graph("c", tasks={"x": 1}, dependencies={}, keys=["x"],
                                       restrictions={"x": ["carol"]}))
    assert not computed(wmsgs)
    assert s.tasks["x"].state == "no-worker"
    _, wmsgs = check(s, s.add_worker(C, nthreads=1, name="carol"))
    assert computed(wmsgs) == {"x": C}


def test_loose_restriction_runs_elsewhere_when_no_worker_matches():
    s = new_state(A)
    _, wmsgs = check(s, s.update_graph("c", tasks={"x": 1}, dependencies={}, keys=["x"],
                                       restrictions={"x": ["carol"]}, loose_restrictions=["x"]))
    assert computed(wmsgs) == {"x": A}


def test_loose_restriction_prefers_the_matching_worker():
    s = new_state(A, B)
    _, wmsgs = check(s, s.update_graph("c", tasks={"x": 1}, dependencies={}, keys=["x"],
                                       restrictions={"x": [B]}, loose_restrictions=["x"]))
    assert computed(wmsgs) == {"x": B}


def test_resources_only_placed_where_enough():
    s = new_state()
    s.add_worker(A, nthreads=4, resources={"GPU": 1})
    s.add_worker(B, nthreads=1, resources={"GPU": 2})
    s.add_worker(C, nthreads=8)
    _, wmsgs = check(s, s.update_graph("c", tasks={f"x{i}": i for i in range(3)}, dependencies={},
                                       keys=[f"x{i}" for i in range(3)],
                                       resources={f"x{i}": {"GPU": 2} for i in range(3)}))
    assert set(computed(wmsgs).values()) == {B}
    assert all(m["resource_restrictions"] == {"GPU": 2} for m in ops(wmsgs, "compute-task"))


def test_resources_nowhere_enough_wait_for_a_worker_that_has_them():
    s = new_state(A)
    _, wmsgs = check(s, s.update_graph("c", tasks={"x": 1}, dependencies={}, keys=["x"],
                                       resources={"x": {"MEM": 10}}))
    assert s.tasks["x"].state == "no-worker"
    _, wmsgs = check(s, s.add_worker(B, nthreads=1, resources={"MEM": 5}))
    assert not computed(wmsgs) and s.tasks["x"].state == "no-worker"
    _, wmsgs = check(s, s.add_worker(C, nthreads=1, resources={"MEM": 10}))
    assert computed(wmsgs) == {"x": C}
    # loose restrictions do not let a task run without its resources
    _, wmsgs = check(s, s.update_graph("c", tasks={"y": 1}, dependencies={}, keys=["y"],
                                       restrictions={"y": [A]}, loose_restrictions=["y"],
                                       resources={"y": {"MEM": 10}}))
    assert computed(wmsgs) == {"y": C}


# ----------------------------------------------------------------------
# placement
# ----------------------------------------------------------------------


@pytest.mark.parametrize("big", [A, B])
def test_placement_prefers_worker_holding_most_input_bytes(big):
    small = B if big == A else A
    s = new_state(A, B, C)
    s.update_data({"big": [big], "small": [small]}, {"big": 100_000_000, "small": 10}, client="c")
    _, wmsgs = check(s, s.update_graph("c", tasks={"z": 1}, dependencies={"z": ["big", "small"]},
                                       keys=["z"]))
    assert computed(wmsgs) == {"z": big}


def test_placement_moves_small_inputs_to_an_idle_worker_rather_than_queue():
    s = new_state(A, B)
    s.update_data({"tiny": [A]}, {"tiny": 1}, client="c")
    # occupy A with work
    s.update_graph("c", tasks={f"busy{i}": i for i in range(2)}, dependencies={},
                   keys=[f"busy{i}" for i in range(2)], restrictions={f"busy{i}": [A] for i in range(2)})
    _, wmsgs = check(s, s.update_graph("c", tasks={"z": 1}, dependencies={"z": ["tiny"]}, keys=["z"]))
    assert computed(wmsgs) == {"z": B}


# ----------------------------------------------------------------------
# priorities, FIFO and queuing
# ----------------------------------------------------------------------


def drain(s: SchedulerState, first: dict) -> list:
    """Finish tasks one at a time, oldest assignment first; the order in
    which compute-task messages went out."""
    order = list(computed(first))
    pending = list(order)
    while pending:
        key = pending.pop(0)
        _, wmsgs = finish(s, key)
        new = list(computed(wmsgs))
        order.extend(new)
        pending.extend(new)
    return order


def test_root_tasks_queue_when_workers_are_saturated_and_drain_in_order():
    s = new_state(A)
    keys = [f"x-{i}" for i in range(10)]
    _, wmsgs = check(s, s.update_graph("c", tasks={k: 1 for k in keys}, dependencies={}, keys=keys,
                                       priority={k: i for i, k in enumerate(keys)}))
    sent = list(computed(wmsgs))
    assert 0 < len(sent) < len(keys), "a one-thread worker gets a few tasks, not all"
    assert sent == keys[: len(sent)]
    queued = [k for k in keys if s.tasks[k].state == "queued"]
    assert queued == keys[len(sent):]
    assert len(s.workers[A].processing) == len(sent)
    order = drain(s, wmsgs)
    assert order == keys
    assert all(s.tasks[k].state == "memory" for k in keys)
    assert not s.queued or all(t[2].state != "queued" for t in s.queued)


def test_queued_tasks_flow_to_a_new_worker():
    s = new_state(A)
    keys = [f"x-{i}" for i in range(10)]
    s.update_graph("c", tasks={k: 1 for k in keys}, dependencies={}, keys=keys)
    nqueued = sum(s.tasks[k].state == "queued" for k in keys)
    assert nqueued
    _, wmsgs = check(s, s.add_worker(B, nthreads=1))
    assert computed(wmsgs) and set(computed(wmsgs).values()) == {B}
    assert sum(s.tasks[k].state == "queued" for k in keys) == nqueued - len(computed(wmsgs))


def test_earlier_graph_runs_first():
    s = new_state(A)
    first = [f"a-{i}" for i in range(6)]
    second = [f"b-{i}" for i in range(6)]
    _, w1 = s.update_graph("c", tasks={k: 1 for k in first}, dependencies={}, keys=first,
                           priority={k: i for i, k in enumerate(first)})
    # the second graph's internal order would put its tasks first if
    # generations were ignored
    _, w2 = s.update_graph("c", tasks={k: 1 for k in second}, dependencies={}, keys=second,
                           priority={k: -100 + i for i, k in enumerate(second)})
    assert not computed(w2)
    order = drain(s, {**w1})
    assert order == first + second


def test_user_priority_overtakes_earlier_graphs():
    s = new_state(A)
    low = [f"low-{i}" for i in range(6)]
    high = [f"high-{i}" for i in range(3)]
    _, w1 = s.update_graph("c", tasks={k: 1 for k in low}, dependencies={}, keys=low)
    s.update_graph("c", tasks={k: 1 for k in high}, dependencies={}, keys=high, user_priority=10)
    order = drain(s, w1)
    started_first = list(computed(w1))
    assert order[: len(started_first)] == started_first
    rest = order[len(started_first):]
    assert rest[: len(high)] == high


def test_no_worker_until_a_worker_arrives():
    s = new_state()
    cmsgs, wmsgs = check(s, s.update_graph("c", tasks={"x": 1, "y": 2}, dependencies={"y": ["x"]},
                                           keys=["y"]))
    assert not wmsgs
    assert states(s, "x", "y") == {"x": "no-worker", "y": "waiting"}
    assert s.unrunnable == {s.tasks["x"]}
    _, wmsgs = check(s, s.add_worker(A, nthreads=1))
    assert computed(wmsgs) == {"x": A}
    assert not s.unrunnable


def test_last_worker_leaving_puts_tasks_in_no_worker():
    s = new_state(A)
    s.update_graph("c", tasks={"x": 1}, dependencies={}, keys=["x"])
    check(s, s.remove_worker(A, safe=True))
    assert s.tasks["x"].state == "no-worker"
    _, wmsgs = check(s, s.add_worker(B, nthreads=1))
    assert computed(wmsgs) == {"x": B}


def test_secede_frees_a_slot_for_queued_work():
    s = new_state(A)
    keys = [f"x-{i}" for i in range(10)]
    _, wmsgs = s.update_graph("c", tasks={k: 1 for k in keys}, dependencies={}, keys=keys)
    before = len(s.workers[A].processing)
    first = next(iter(computed(wmsgs)))
    _, wmsgs = check(s, s.handle_long_running(first, A))
    assert len(computed(wmsgs)) >= 1
    assert len(s.workers[A].processing) > before


# ----------------------------------------------------------------------
# worker events
# ----------------------------------------------------------------------


def test_missing_data_reported_by_a_peer_triggers_recompute():
    s = new_state(A, B)
    s.update_graph("c", tasks={"x": 1}, dependencies={}, keys=[], restrictions={"x": [A]})
    s.update_graph("c", tasks={"y": 2}, dependencies={"y": ["x"]}, keys=["y"], restrictions={"y": [B]})
    s.tasks["x"].worker_restrictions = None
    finish(s, "x")
    assert s.tasks["y"].processing_on is s.workers[B]
    _, wmsgs = check(s, s.handle_missing_data("x", A))
    assert states(s, "x", "y") == {"x": "processing", "y": "waiting"}
    assert "x" in computed(wmsgs)


def test_worker_registering_with_unknown_keys_is_told_to_free_them():
    s = new_state()
    _, wmsgs = check(s, s.add_worker(A, nthreads=1, keys=["old"]))
    assert wmsgs[A] == [{"op": "free-keys", "keys": ["old"]}]


def test_duplicate_worker_name_is_refused():
    s = new_state()
    s.add_worker(A, nthreads=1, name="w")
    with pytest.raises(ValueError, match="already registered"):
        s.add_worker(B, nthreads=1, name="w")
    check(s)


# ----------------------------------------------------------------------
# memory per task
# ----------------------------------------------------------------------


def _copy(b: bytes) -> bytes:
    """Equal bytes in a new object, as msgpack decodes each occurrence."""
    return bytes(bytearray(b))


def test_empty_task_fields_share_one_object_and_small_ones_are_tuples():
    s = new_state(A)
    s.update_graph("c", tasks={"x": 1, "y": 2}, dependencies={"y": ["x"]}, keys=["y"])
    x, y = s.tasks["x"], s.tasks["y"]
    assert x.dependencies is y.dependents is x.waiting_on is y.waiters is x.erred_on
    assert set(x.dependencies) == set() and not x.dependencies and len(x.dependencies) == 0
    assert list(x.who_has) == [] and A not in x.who_has
    assert y.dependencies == (x,) and x.dependents == (y,) and y.waiting_on == (x,)
    finish(s, "x")
    assert not y.waiting_on and y.waiting_on is x.dependencies, "emptied fields are shared again"
    finish(s, "y")
    assert y.who_has == {s.workers[A]} and len(y.who_has) == 1
    assert y.who_wants == {s.clients["c"]}


def test_single_holder_and_single_wanter_share_one_frozenset_per_worker_and_client():
    s = new_state(A, B)
    s.add_client("d")
    s.update_graph("c", tasks={"x": 1, "y": 2}, dependencies={}, keys=["x", "y"],
                   restrictions={"x": [A], "y": [A]})
    finish(s, "x")
    finish(s, "y")
    x, y = s.tasks["x"], s.tasks["y"]
    assert x.who_has is y.who_has == frozenset({s.workers[A]})
    assert x.who_wants is y.who_wants == frozenset({s.clients["c"]})
    # a second replica and a second client: x gets tuples of its own
    check(s, s.handle_add_keys(B, ["x"]))
    check(s, s.client_desires_keys("d", ["x"]))
    assert x.who_has == (s.workers[A], s.workers[B]) and y.who_has == {s.workers[A]}
    assert x.who_wants == (s.clients["c"], s.clients["d"]) and y.who_wants == {s.clients["c"]}
    check(s, s.handle_release_worker_data("x", A))
    check(s, s.client_releases_keys("c", ["x"]))
    assert x.who_has == (s.workers[B],) and x.who_wants == (s.clients["d"],)
    assert s.who_has(["x", "y"]) == {"x": [B], "y": [A]}


def test_a_field_is_a_tuple_up_to_small_members_then_a_set():
    from distributed.scheduler.state import _SMALL
    s = new_state(A)
    n = _SMALL + 2
    leaves = [f"x-{i}" for i in range(n)]
    s.update_graph("c", tasks={**{k: 1 for k in leaves}, "y": 2},
                   dependencies={"y": leaves[:_SMALL]}, keys=["y"])
    y = s.tasks["y"]
    assert type(y.dependencies) is tuple and len(y.dependencies) == _SMALL
    s.update_graph("c", tasks={"z": 3}, dependencies={"z": leaves}, keys=["z"])
    assert type(s.tasks["z"].dependencies) is set and len(s.tasks["z"].dependencies) == n
    for k in leaves:
        finish(s, k)
        check(s)
    assert y.waiting_on is s.tasks["z"].waiting_on is s.tasks["x-0"].dependencies, "all back to _EMPTY"
    finish(s, "y")
    finish(s, "z")
    assert states(s, "y", "z") == {"y": "memory", "z": "memory"}


def test_rare_fields_cost_nothing_until_a_task_fails_or_is_restricted():
    s = new_state(A, B)
    s.update_graph("c", tasks={"x": 1, "y": 2, "z": 3}, dependencies={}, keys=["x", "y", "z"],
                   restrictions={"z": [B]})
    x, y, z = (s.tasks[k] for k in "xyz")
    finish(s, "x")
    fail(s, "y", ValueError("boom"))
    assert x._rare is None and x.exception is None and x.retries == 0 and not x.has_restrictions
    assert y._rare is not None and y.exception_blame is y and "boom" in y.exception_text
    assert z.worker_restrictions == {B} and z.has_restrictions and z.processing_on is s.workers[B]
    check(s)


def test_validate_state_rejects_an_empty_set_left_in_a_task():
    s = new_state(A)
    s.update_graph("c", tasks={"x": 1}, dependencies={}, keys=["x"])
    s.tasks["x"].waiters = set()
    with pytest.raises(AssertionError, match="empty set"):
        s.validate_state()
    s.tasks["x"].waiters = ()
    with pytest.raises(AssertionError, match="wrong size"):
        s.validate_state()


def test_equal_function_payloads_are_stored_once():
    s = new_state(A)
    f = b"pickled function" * 3
    specs = {f"t-{i}": (WALK, SharedBytes(_copy(f)), b"args%d" % i) for i in range(3)}
    _, wmsgs = s.update_graph("c", tasks=specs, dependencies={}, keys=list(specs))
    funcs = [s.tasks[k].run_spec[1] for k in specs]
    assert funcs[0].data == f and all(func is funcs[0] for func in funcs)
    assert all(m["run_spec"][1] is funcs[0] for m in ops(wmsgs, "compute-task"))
    assert [s.tasks[k].run_spec for k in specs] == [(WALK, SharedBytes(f), b"args%d" % i) for i in range(3)]
    # a later graph shares the same object; other payloads are untouched
    args = Serialize(1)
    s.update_graph("c", tasks={"u": (CALL, SharedBytes(_copy(f)), args), "v": (NODE, None, b"n"), "w": b"w"},
                   dependencies={}, keys=[])
    assert s.tasks["u"].run_spec == (CALL, SharedBytes(f), args)
    assert s.tasks["u"].run_spec[1] is funcs[0]
    assert s.tasks["v"].run_spec == (NODE, None, b"n") and s.tasks["w"].run_spec == b"w"
    check(s)


def test_large_function_payloads_are_shared_within_a_graph_only():
    s = new_state(A)
    big = b"x" * 100_000
    s.update_graph("c", tasks={f"t-{i}": (CALL, SharedBytes(_copy(big)), b"") for i in range(2)},
                   dependencies={}, keys=[])
    s.update_graph("c", tasks={"u": (CALL, SharedBytes(_copy(big)), b"")}, dependencies={}, keys=[])
    t0, t1, u = (s.tasks[k].run_spec[1] for k in ("t-0", "t-1", "u"))
    assert t0 is t1 and t0 == u and u is not t0
    assert not s._funcs, "large payloads are not kept beyond their graph"


def test_task_type_names_are_stored_once():
    s = new_state(A)
    s.update_graph("c", tasks={"x": 1, "y": 2}, dependencies={}, keys=["x", "y"])
    for key in ("x", "y"):
        s.handle_task_finished(key, A, nbytes=1, type="".join(["numpy.", "ndarray"]))
    assert s.tasks["x"].type == "numpy.ndarray" and s.tasks["x"].type is s.tasks["y"].type


def test_transition_log_keeps_the_task_key_not_a_copy():
    s = new_state(A)
    s.update_graph("c", tasks={"inc-1": 1}, dependencies={}, keys=["inc-1"])
    key = s.tasks["inc-1"].key
    s.handle_task_finished("".join(["inc-", "1"]), A, nbytes=1)
    assert s.story("inc-1")[-1] == ("inc-1", "processing", "memory")
    assert all(entry[0] is key for entry in s.story("inc-1"))


def test_transition_log_keeps_the_last_transitions_only():
    s = new_state(A, transition_log_length=4)
    s.update_graph("c", tasks={"x": 1, "y": 2}, dependencies={}, keys=["x", "y"])
    finish(s, "x")
    finish(s, "y")
    log = list(s.transition_log)
    assert len(log) == len(s.transition_log) == 4
    assert log[-1] == ("y", "processing", "memory") and all(len(t) == 3 for t in log)
    assert s.story("x") == [t for t in log if t[0] == "x"]
    off = new_state(A, transition_log_length=0)
    off.update_graph("c", tasks={"x": 1}, dependencies={}, keys=["x"])
    assert list(off.transition_log) == [] and off.story("x") == []


# ----------------------------------------------------------------------
# random event sequences
# ----------------------------------------------------------------------

if hypothesis is not None:

    WORKERS = [f"tcp://127.0.0.1:{2000 + i}" for i in range(4)]
    CLIENTS = ["c1", "c2"]


    class SchedulerMachine(RuleBasedStateMachine):
        """Random events; the invariants hold after every one, and once the
        events stop, finishing whatever is processing settles every wanted key
        in memory or erred."""

        @initialize()
        def setup(self):
            self.s = SchedulerState(validate=True, allowed_failures=1)
            self.n = 0
            for c in CLIENTS:
                self.s.add_client(c)

        def _processing(self):
            return sorted((k for k, ts in self.s.tasks.items() if ts.state == "processing"), key=str)

        @rule(i=st.integers(0, len(WORKERS) - 1), nthreads=st.integers(1, 2),
              res=st.sampled_from([None, {"R": 1}]))
        def add_worker(self, i, nthreads, res):
            if WORKERS[i] not in self.s.workers:
                self.s.add_worker(WORKERS[i], nthreads=nthreads, resources=res)

        @rule(i=st.integers(0, len(WORKERS) - 1), safe=st.booleans())
        def remove_worker(self, i, safe):
            self.s.remove_worker(WORKERS[i], safe=safe)

        @rule(client=st.sampled_from(CLIENTS), n=st.integers(1, 5), data=st.data())
        def submit(self, client, n, data):
            known = sorted(self.s.tasks, key=str)
            tasks, deps = {}, {}
            for _ in range(n):
                self.n += 1
                key = f"t-{self.n}"
                pool = known + list(tasks)
                k = data.draw(st.integers(0, min(2, len(pool))))
                chosen = data.draw(st.permutations(pool)) if pool else []
                tasks[key] = "spec"
                deps[key] = list(chosen[:k])
            wanted = data.draw(st.lists(st.sampled_from(list(tasks)), min_size=1, unique=True))
            kwargs = {}
            if data.draw(st.booleans()):
                kwargs["restrictions"] = {wanted[0]: [data.draw(st.sampled_from(WORKERS))]}
                kwargs["loose_restrictions"] = [wanted[0]] if data.draw(st.booleans()) else []
            if data.draw(st.booleans()):
                kwargs["resources"] = {wanted[0]: {"R": 1}}
            if data.draw(st.booleans()):
                kwargs["retries"] = {wanted[0]: 1}
            self.s.update_graph(client, tasks, deps, wanted, priority={k: i for i, k in enumerate(tasks)},
                                **kwargs)

        @rule(client=st.sampled_from(CLIENTS), i=st.integers(0, len(WORKERS) - 1))
        def scatter(self, client, i):
            if WORKERS[i] in self.s.workers:
                self.n += 1
                self.s.update_data({f"s-{self.n}": [WORKERS[i]]}, {f"s-{self.n}": 8}, client=client)

        @precondition(lambda self: any(ts.state == "processing" for ts in self.s.tasks.values()))
        @rule(data=st.data(), ok=st.booleans(), nbytes=st.integers(0, 1000))
        def task_done(self, data, ok, nbytes):
            key = data.draw(st.sampled_from(self._processing()))
            worker = self.s.tasks[key].processing_on.address
            if ok:
                self.s.handle_task_finished(key, worker, nbytes=nbytes, duration=0.01)
            else:
                self.s.handle_task_erred(key, worker, exception=Serialize(ValueError(key)), traceback=[])

        @precondition(lambda self: any(ts.state == "memory" for ts in self.s.tasks.values()))
        @rule(data=st.data())
        def missing_data(self, data):
            key = data.draw(st.sampled_from(sorted((k for k, ts in self.s.tasks.items()
                                                   if ts.state == "memory"), key=str)))
            ws = sorted(self.s.tasks[key].who_has, key=lambda w: w.address)[0]
            self.s.handle_missing_data(key, ws.address)

        @precondition(lambda self: any(ts.state == "memory" for ts in self.s.tasks.values()))
        @rule(data=st.data(), i=st.integers(0, len(WORKERS) - 1), drop=st.booleans())
        def replica(self, data, i, drop):
            key = data.draw(st.sampled_from(sorted((k for k, ts in self.s.tasks.items()
                                                   if ts.state == "memory"), key=str)))
            if drop:
                self.s.handle_release_worker_data(key, WORKERS[i])
            else:
                self.s.handle_add_keys(WORKERS[i], [key])

        @rule(client=st.sampled_from(CLIENTS), data=st.data(), force=st.booleans())
        def cancel(self, client, data, force):
            known = sorted(self.s.tasks, key=str)
            if known:
                self.s.cancel_keys(client, [data.draw(st.sampled_from(known))], force=force)

        @precondition(lambda self: any(ts.state == "processing" for ts in self.s.tasks.values()))
        @rule(data=st.data())
        def secede(self, data):
            key = data.draw(st.sampled_from(self._processing()))
            self.s.handle_long_running(key, self.s.tasks[key].processing_on.address)

        @rule(client=st.sampled_from(CLIENTS), data=st.data())
        def release(self, client, data):
            wants = sorted((ts.key for ts in self.s.clients[client].wants_what), key=str)
            if wants:
                keys = data.draw(st.lists(st.sampled_from(wants), min_size=1, unique=True))
                self.s.client_releases_keys(client, keys)

        @rule(client=st.sampled_from(CLIENTS), data=st.data())
        def desire(self, client, data):
            known = sorted(self.s.tasks, key=str)
            if known:
                self.s.client_desires_keys(client, [data.draw(st.sampled_from(known))])

        @rule(data=st.data())
        def retry(self, data):
            erred = sorted((k for k, ts in self.s.tasks.items() if ts.state == "erred"), key=str)
            if erred:
                self.s.retry([data.draw(st.sampled_from(erred))])

        @invariant()
        def valid(self):
            self.s.validate_state()

        def teardown(self):
            s = self.s
            if not hasattr(s, "workers"):
                return
            for w in list(s.workers):  # workers that meet every restriction
                s.remove_worker(w, safe=True)
            for w in WORKERS:
                s.add_worker(w, nthreads=1, resources={"R": 1})
            s.add_worker("tcp://127.0.0.1:2999", nthreads=2, resources={"R": 1})
            for _ in range(10_000):
                processing = self._processing()
                if not processing:
                    break
                key = processing[0]
                s.handle_task_finished(key, s.tasks[key].processing_on.address, nbytes=1)
                s.validate_state()
            stuck = {k: ts.state for k, ts in s.tasks.items()
                     if ts.who_wants and ts.state not in ("memory", "erred")}
            assert not stuck, stuck
            assert not s.unrunnable


    SchedulerMachine.TestCase.settings = settings(
        max_examples=150, stateful_step_count=40, deadline=None,
        suppress_health_check=[HealthCheck.too_slow], derandomize=True)
    test_random_event_sequences_keep_invariants = SchedulerMachine.TestCase

else:

    @pytest.mark.skip(reason="needs hypothesis (a test extra)")
    def test_random_event_sequences_keep_invariants():
        pass
