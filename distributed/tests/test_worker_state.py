"""WorkerState driven directly: scheduler messages and execution results in,
instructions (Execute, GatherDep) and scheduler messages out.  No network,
no threads: the test plays the thread pool and the peers."""
from __future__ import annotations

import pytest

from distributed.worker.state import PREFETCH_BELOW, PREFETCH_PER_THREAD, Execute, GatherDep, WorkerState

try:
    import hypothesis
    from hypothesis import HealthCheck, settings
    from hypothesis import strategies as st
    from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
except ImportError:  # a test extra: only the random tests need it
    hypothesis = None

ME = "tcp://127.0.0.1:3000"
P = "tcp://127.0.0.1:3001"
Q = "tcp://127.0.0.1:3002"
R = "tcp://127.0.0.1:3003"


def new_state(nthreads=1, **kwargs) -> WorkerState:
    return WorkerState(nthreads=nthreads, data={}, address=ME, validate=True, **kwargs)


def step(ws: WorkerState, instructions: list) -> list:
    ws.validate_state()
    return instructions


def compute(ws, key, priority=(0,), who_has=None, nbytes=None, resources=None,
            duration=1.0) -> list:
    """Most tests use long tasks: each waits for a free thread (no prefetch)."""
    return step(ws, ws.handle_compute_task(key, run_spec=f"spec-{key}", priority=priority,
                                           who_has=who_has, nbytes=nbytes,
                                           resource_restrictions=resources, duration=duration))


def done(ws, key, value=None) -> list:
    return step(ws, ws.handle_execute_success(key, value if value is not None else f"value-{key}",
                                              nbytes=10, type="str"))


def sent(ws: WorkerState, op: str) -> list:
    """Messages for the scheduler of type ``op``; drains the outbox."""
    out = [m for m in ws.scheduler_msgs if m["op"] == op]
    return out


def executes(instructions) -> list:
    return [i.key for i in instructions if isinstance(i, Execute)]


def gathers(instructions) -> list:
    return [i for i in instructions if isinstance(i, GatherDep)]


# ----------------------------------------------------------------------
# fetching dependencies
# ----------------------------------------------------------------------


def test_dependencies_from_the_same_peer_are_bundled_into_one_gather():
    ws = new_state()
    inst = compute(ws, "z", who_has={"a": [P], "b": [P], "c": [Q], "d": [P]},
                   nbytes={"a": 1, "b": 2, "c": 3, "d": 4})
    by_peer = {g.worker: g for g in gathers(inst)}
    assert set(by_peer) == {P, Q}
    assert sorted(by_peer[P].keys) == ["a", "b", "d"]
    assert by_peer[P].nbytes == 7
    assert by_peer[Q].keys == ["c"]
    assert not executes(inst)
    assert ws.tasks["z"].state == "waiting"
    assert {ws.tasks[k].state for k in "abcd"} == {"flight"}


def test_task_runs_once_all_dependencies_arrived():
    ws = new_state()
    compute(ws, "z", who_has={"a": [P], "c": [Q]}, nbytes={"a": 1, "c": 1})
    inst = step(ws, ws.handle_gather_dep_success(P, ["a"], {"a": 1}))
    assert not executes(inst)
    inst = step(ws, ws.handle_gather_dep_success(Q, ["c"], {"c": 2}))
    assert executes(inst) == ["z"]
    assert ws.data == {"a": 1, "c": 2}
    # the scheduler learns that this worker now holds replicas
    assert sorted(k for m in sent(ws, "add-keys") for k in m["keys"]) == ["a", "c"]
    done(ws, "z", 3)
    (msg,) = sent(ws, "task-finished")
    assert msg["key"] == "z" and msg["nbytes"] == 10


def test_keys_needed_while_a_peer_is_busy_wait_and_then_go_in_one_bundle():
    ws = new_state(nthreads=2)
    inst = compute(ws, "z1", who_has={"a": [P]}, nbytes={"a": 1})
    assert [g.keys for g in gathers(inst)] == [["a"]]
    inst = compute(ws, "z2", who_has={"b": [P], "c": [P]}, nbytes={"b": 1, "c": 1})
    assert not gathers(inst), "one transfer per peer at a time"
    assert {ws.tasks["b"].state, ws.tasks["c"].state} == {"fetch"}
    inst = step(ws, ws.handle_gather_dep_success(P, ["a"], {"a": 1}))
    assert executes(inst) == ["z1"]
    (g,) = gathers(inst)
    assert g.worker == P and sorted(g.keys) == ["b", "c"]


def test_dependency_already_in_memory_is_not_fetched():
    ws = new_state()
    compute(ws, "x")
    done(ws, "x")
    inst = compute(ws, "y", who_has={"x": [ME]})
    assert executes(inst) == ["y"]
    assert not gathers(inst)


def test_gather_failure_tries_another_holder_then_reports_missing():
    ws = new_state()
    inst = compute(ws, "z", who_has={"a": [P, Q]}, nbytes={"a": 1})
    (g,) = gathers(inst)
    first = g.worker
    other = Q if first == P else P
    inst = step(ws, ws.handle_gather_dep_failure(first, ["a"]))
    assert {"op": "missing-data", "key": "a", "errant_worker": first} in ws.scheduler_msgs
    (g,) = gathers(inst)
    assert g.worker == other and g.keys == ["a"]
    inst = step(ws, ws.handle_gather_dep_failure(other, ["a"]))
    assert {"op": "missing-data", "key": "a", "errant_worker": other} in ws.scheduler_msgs
    assert not gathers(inst)
    assert ws.tasks["a"].state == "missing"
    assert {"op": "request-who-has", "keys": ["a"]} in ws.scheduler_msgs
    # the scheduler tells us of a new holder
    (g,) = gathers(step(ws, ws.handle_new_holders({"a": [R]})))
    assert g.worker == R
    inst = step(ws, ws.handle_gather_dep_success(R, ["a"], {"a": 1}))
    assert executes(inst) == ["z"]


def test_failed_peer_is_forgotten_as_holder_of_every_key():
    ws = new_state(nthreads=2)
    compute(ws, "z1", who_has={"a": [P]}, nbytes={"a": 1})
    compute(ws, "z2", who_has={"b": [P, Q]}, nbytes={"b": 1})
    # b waits for P (busy with a) or goes to Q, either way P is dead now
    inst = step(ws, ws.handle_gather_dep_failure(P, ["a"]))
    assert P not in ws.tasks["b"].who_has
    assert ws.tasks["a"].state == "missing"
    assert all(g.worker != P for g in gathers(inst))


def test_peer_without_the_key_is_reported_and_the_next_holder_asked():
    ws = new_state()
    (g,) = gathers(compute(ws, "z", who_has={"a": [P, Q]}, nbytes={"a": 1}))
    inst = step(ws, ws.handle_gather_dep_success(g.worker, ["a"], {}))
    assert sent(ws, "missing-data") == [{"op": "missing-data", "key": "a", "errant_worker": g.worker}]
    (g2,) = gathers(inst)
    assert g2.worker != g.worker


# ----------------------------------------------------------------------
# executing
# ----------------------------------------------------------------------


def test_ready_tasks_run_by_priority_at_most_nthreads_at_a_time():
    ws = new_state(nthreads=2)
    assert executes(compute(ws, "block1", priority=(0,))) == ["block1"]
    assert executes(compute(ws, "block2", priority=(0,))) == ["block2"]
    for key, prio in [("c", (3,)), ("a", (1,)), ("b", (2,)), ("d", (4,))]:
        assert executes(compute(ws, key, priority=prio)) == []
    assert len(ws.executing) == 2
    order = []
    running = ["block1", "block2"]
    while running:
        key = running.pop(0)
        started = executes(done(ws, key))
        assert len(ws.executing) <= 2
        order.extend(started)
        running.extend(started)
    assert order == ["a", "b", "c", "d"]
    assert [m["key"] for m in sent(ws, "task-finished")] == ["block1", "block2", "a", "b", "c", "d"]


def test_short_tasks_wait_in_the_pool_queue_by_priority_up_to_the_prefetch_limit():
    ws = new_state(nthreads=2)
    short = PREFETCH_BELOW / 2
    limit = 2 * (1 + PREFETCH_PER_THREAD)
    blockers = [f"block{i}" for i in range(limit)]
    for key in blockers:
        assert executes(compute(ws, key, duration=short)) == [key]
    for key, prio in [("c", (3,)), ("a", (1,)), ("b", (2,)), ("d", (4,))]:
        assert executes(compute(ws, key, priority=prio, duration=short)) == []
    assert len(ws.executing) == limit
    order = []
    running = list(blockers)
    while running:
        key = running.pop(0)
        started = executes(done(ws, key))
        assert len(ws.executing) <= limit
        order.extend(started)
        running.extend(started)
    assert order == ["a", "b", "c", "d"]


def test_long_or_resource_bound_tasks_wait_for_a_free_thread_and_keep_their_turn():
    ws = new_state(nthreads=1, resources={"GPU": 2})
    short = PREFETCH_BELOW / 2
    assert executes(compute(ws, "x", duration=short)) == ["x"]
    assert executes(compute(ws, "long", duration=PREFETCH_BELOW)) == []
    assert executes(compute(ws, "short", priority=(1,), duration=short)) == [], "no jumping the queue"
    assert executes(done(ws, "x")) == ["long", "short"]  # long on the free thread, short queued
    assert executes(compute(ws, "g", resources={"GPU": 1}, duration=short)) == []
    assert ws.tasks["g"].state == "ready" and ws.available_resources == {"GPU": 2}
    assert executes(done(ws, "long")) == []
    assert executes(done(ws, "short")) == ["g"]
    assert ws.available_resources == {"GPU": 1}


def test_resources_limit_concurrency():
    ws = new_state(nthreads=4, resources={"GPU": 1})
    assert executes(compute(ws, "g1", resources={"GPU": 1})) == ["g1"]
    assert executes(compute(ws, "g2", resources={"GPU": 1})) == []
    assert ws.tasks["g2"].state == "constrained"
    # tasks without resource needs still use the free threads
    assert executes(compute(ws, "plain")) == ["plain"]
    assert ws.available_resources == {"GPU": 0}
    assert executes(done(ws, "g1")) == ["g2"]
    assert ws.available_resources == {"GPU": 0}
    done(ws, "g2")
    assert ws.available_resources == {"GPU": 1}


def test_free_keys_while_executing_cancels_and_drops_the_result():
    ws = new_state()
    assert executes(compute(ws, "x")) == ["x"]
    step(ws, ws.handle_free_keys(["x"]))
    assert ws.tasks["x"].state == "cancelled"
    assert len(ws.executing) == 1, "the thread is still busy"
    done(ws, "x")
    assert "x" not in ws.data
    assert "x" not in ws.tasks
    assert not sent(ws, "task-finished")
    assert not ws.executing


def test_cancelled_task_failing_reports_nothing():
    ws = new_state()
    compute(ws, "x")
    ws.handle_free_keys(["x"])
    step(ws, ws.handle_execute_failure("x", {"exception": "e", "traceback": None}))
    assert not sent(ws, "task-erred")
    assert "x" not in ws.tasks


def test_compute_task_again_while_cancelled_resumes():
    ws = new_state()
    compute(ws, "x")
    ws.handle_free_keys(["x"])
    assert ws.tasks["x"].state == "cancelled"
    inst = compute(ws, "x")
    assert inst == [], "it is still running: no second execution"
    assert ws.tasks["x"].state == "executing"
    done(ws, "x", 42)
    assert ws.data["x"] == 42
    assert [m["key"] for m in sent(ws, "task-finished")] == ["x"]


def test_free_keys_of_waiting_task_releases_its_transfers():
    ws = new_state()
    compute(ws, "z", who_has={"a": [P]}, nbytes={"a": 1})
    step(ws, ws.handle_free_keys(["z"]))
    assert "z" not in ws.tasks
    assert ws.tasks["a"].state == "cancelled"
    step(ws, ws.handle_gather_dep_success(P, ["a"], {"a": 1}))
    assert "a" not in ws.data and "a" not in ws.tasks
    assert not sent(ws, "add-keys")


def test_execute_failure_reports_task_erred():
    ws = new_state()
    compute(ws, "x")
    err = {"exception": "exc", "traceback": ["tb"], "exception_text": "ZeroDivisionError()",
           "traceback_text": "Traceback..."}
    step(ws, ws.handle_execute_failure("x", err))
    assert sent(ws, "task-erred") == [{"op": "task-erred", "key": "x", **err}]
    assert ws.tasks["x"].state == "error"
    assert not ws.executing


def test_compute_task_for_key_in_memory_answers_at_once():
    ws = new_state()
    compute(ws, "x")
    done(ws, "x")
    ws.scheduler_msgs.clear()
    assert compute(ws, "x") == []
    assert [m["key"] for m in sent(ws, "task-finished")] == ["x"]


def test_secede_frees_a_slot():
    ws = new_state(nthreads=1)
    assert executes(compute(ws, "long")) == ["long"]
    assert executes(compute(ws, "next")) == []
    inst = step(ws, ws.handle_secede("long"))
    assert executes(inst) == ["next"]
    assert ws.tasks["long"].state == "long-running"
    assert sent(ws, "long-running") == [{"op": "long-running", "key": "long"}]
    assert executes(compute(ws, "third")) == []
    done(ws, "long")
    assert [m["key"] for m in sent(ws, "task-finished")] == ["long"]
    assert executes(done(ws, "next")) == ["third"]


def test_seceded_task_gives_its_resources_back_once():
    ws = new_state(nthreads=2, resources={"R": 1})
    assert executes(compute(ws, "long", resources={"R": 1})) == ["long"]
    assert executes(compute(ws, "other", resources={"R": 1})) == []
    assert executes(step(ws, ws.handle_secede("long"))) == ["other"]
    done(ws, "long")
    assert ws.available_resources == {"R": 0}, "'other' still holds R"
    done(ws, "other")
    assert ws.available_resources == {"R": 1}


def test_cancelled_task_that_secedes_resumes_as_long_running():
    ws = new_state(nthreads=1)
    compute(ws, "x")
    ws.handle_free_keys(["x"])
    step(ws, ws.handle_secede("x"))
    assert ws.tasks["x"].state == "cancelled"
    compute(ws, "x")
    assert ws.tasks["x"].state == "long-running"
    assert executes(compute(ws, "y")) == ["y"], "x no longer holds the thread"
    done(ws, "x")
    assert [m["key"] for m in sent(ws, "task-finished")] == ["x"]


def test_paused_worker_starts_nothing_until_resumed():
    ws = new_state()
    step(ws, ws.handle_pause(True))
    assert executes(compute(ws, "x")) == []
    assert executes(step(ws, ws.handle_pause(False))) == ["x"]


def test_reschedule_releases_the_task_and_tells_the_scheduler():
    ws = new_state()
    compute(ws, "x")
    compute(ws, "y")
    inst = step(ws, ws.handle_reschedule("x"))
    assert executes(inst) == ["y"]
    assert sent(ws, "reschedule") == [{"op": "reschedule", "key": "x"}]
    assert "x" not in ws.tasks


def test_compute_task_for_key_in_flight_computes_it_when_the_transfer_fails():
    """The peer holding ``a`` died: the scheduler asks us to compute ``a``
    while our transfer of it is still in flight.  When the transfer fails
    we must compute ``a`` rather than wait for holders that do not exist."""
    ws = new_state()
    compute(ws, "z", who_has={"a": [P]}, nbytes={"a": 1})
    assert ws.tasks["a"].state == "flight"
    inst = compute(ws, "a", who_has={"b": [Q]}, nbytes={"b": 1})
    assert not executes(inst)
    inst = step(ws, ws.handle_gather_dep_failure(P, ["a"]))
    assert ws.tasks["a"].state == "waiting"
    (g,) = gathers(inst)
    assert g.worker == Q and g.keys == ["b"]
    inst = step(ws, ws.handle_gather_dep_success(Q, ["b"], {"b": 2}))
    assert executes(inst) == ["a"]
    assert executes(done(ws, "a", 5)) == ["z"]
    assert [m["key"] for m in sent(ws, "task-finished")] == ["a"]


def test_compute_task_for_cancelled_transfer_computes_it_when_the_transfer_fails():
    ws = new_state()
    compute(ws, "z", who_has={"a": [P]}, nbytes={"a": 1})
    step(ws, ws.handle_free_keys(["z"]))
    assert ws.tasks["a"].state == "cancelled"
    compute(ws, "a")
    assert ws.tasks["a"].state == "flight"
    inst = step(ws, ws.handle_gather_dep_failure(P, ["a"]))
    assert executes(inst) == ["a"]
    done(ws, "a", 5)
    assert [m["key"] for m in sent(ws, "task-finished")] == ["a"]


def test_compute_task_for_key_in_flight_is_done_when_the_transfer_arrives():
    ws = new_state()
    compute(ws, "z", who_has={"a": [P]}, nbytes={"a": 1})
    compute(ws, "a")
    inst = step(ws, ws.handle_gather_dep_success(P, ["a"], {"a": 1}))
    assert executes(inst) == ["z"]
    assert [m["key"] for m in sent(ws, "task-finished")] == ["a"]
    assert ws.data["a"] == 1


def test_cancelled_transfer_needed_again_by_a_new_task_is_kept():
    """z's input ``a`` is in flight when z is released; a new task needing
    ``a`` arrives before the transfer ends: the transfer must count."""
    ws = new_state()
    compute(ws, "z", who_has={"a": [P]}, nbytes={"a": 1})
    step(ws, ws.handle_free_keys(["z"]))
    assert ws.tasks["a"].state == "cancelled"
    inst = compute(ws, "y", who_has={"a": [P, Q]}, nbytes={"a": 1})
    assert not gathers(inst), "the transfer from P is still running"
    assert ws.tasks["a"].state == "flight"
    inst = step(ws, ws.handle_gather_dep_success(P, ["a"], {"a": 1}))
    assert executes(inst) == ["y"]


def test_cancelled_transfer_that_fails_is_fetched_again_for_a_new_task():
    ws = new_state()
    compute(ws, "z", who_has={"a": [P]}, nbytes={"a": 1})
    step(ws, ws.handle_free_keys(["z"]))
    compute(ws, "y", who_has={"a": [Q]}, nbytes={"a": 1})
    (g,) = gathers(step(ws, ws.handle_gather_dep_failure(P, ["a"])))
    assert g.worker == Q
    inst = step(ws, ws.handle_gather_dep_success(Q, ["a"], {"a": 1}))
    assert executes(inst) == ["y"]


def test_cancelled_execution_needed_again_as_an_input_resumes():
    ws = new_state(nthreads=2)
    compute(ws, "x")
    step(ws, ws.handle_free_keys(["x"]))
    assert ws.tasks["x"].state == "cancelled"
    inst = compute(ws, "y", who_has={"x": [Q]}, nbytes={"x": 1})
    assert not gathers(inst), "x is being computed here"
    assert executes(done(ws, "x", 1)) == ["y"]
    assert ws.data["x"] == 1
    assert not sent(ws, "task-finished"), "the scheduler no longer asks for x here"
    assert sent(ws, "add-keys") == [{"op": "add-keys", "keys": ["x"], "nbytes": {"x": 10}}]


def test_cancelled_execution_needed_as_input_that_fails_is_fetched_instead():
    ws = new_state(nthreads=2)
    compute(ws, "x")
    step(ws, ws.handle_free_keys(["x"]))
    compute(ws, "y", who_has={"x": [Q]}, nbytes={"x": 1})
    inst = step(ws, ws.handle_execute_failure("x", {"exception": "e", "traceback": None}))
    assert not sent(ws, "task-erred"), "the scheduler did not ask for x here"
    (g,) = gathers(inst)
    assert g.worker == Q and g.keys == ["x"]


# ----------------------------------------------------------------------
# random event sequences
# ----------------------------------------------------------------------

if hypothesis is not None:

    PEERS = [P, Q, R]


    class WorkerMachine(RuleBasedStateMachine):
        """The test plays scheduler, thread pool and peers.  Invariants hold
        after every event, and once events stop, finishing every execution and
        transfer leaves every task the scheduler wants in memory or error."""

        @initialize(nthreads=st.integers(1, 2))
        def setup(self, nthreads):
            self.ws = WorkerState(nthreads=nthreads, data={}, address=ME, validate=True,
                                  resources={"R": 1})
            self.running: list = []  # keys handed out by Execute, not finished
            self.transfers: list = []  # GatherDep not finished
            self.n = 0

        def _act(self, instructions):
            for inst in instructions:
                if isinstance(inst, Execute):
                    assert inst.key not in self.running
                    self.running.append(inst.key)
                else:
                    assert all(g.worker != inst.worker for g in self.transfers), "two transfers from one peer"
                    self.transfers.append(inst)

        @rule(data=st.data(), ndeps=st.integers(0, 3), res=st.booleans())
        def compute_new(self, data, ndeps, res):
            self.n += 1
            key = f"t-{self.n}"
            who_has = {}
            for _ in range(ndeps):
                remote = sorted(k for k, ts in self.ws.tasks.items() if k.startswith("r-"))
                if remote and data.draw(st.booleans()):
                    dep = data.draw(st.sampled_from(remote))
                else:
                    self.n += 1
                    dep = f"r-{self.n}"
                who_has[dep] = data.draw(st.lists(st.sampled_from(PEERS), min_size=1, max_size=2, unique=True))
            self._act(self.ws.handle_compute_task(key, "spec", priority=(self.n,), who_has=who_has,
                                                  nbytes={k: 1 for k in who_has},
                                                  resource_restrictions={"R": 1} if res else None))

        @precondition(lambda self: any(k.startswith("r-") for k in self.ws.tasks))
        @rule(data=st.data())
        def compute_remote_key(self, data):
            """The scheduler lost a dependency's holders and asks us to compute it."""
            key = data.draw(st.sampled_from(sorted(k for k in self.ws.tasks if k.startswith("r-"))))
            self._act(self.ws.handle_compute_task(key, "spec", priority=(0,)))

        @precondition(lambda self: bool(self.ws.tasks))
        @rule(data=st.data())
        def free(self, data):
            key = data.draw(st.sampled_from(sorted(self.ws.tasks)))
            self._act(self.ws.handle_free_keys([key]))

        @precondition(lambda self: bool(self.running))
        @rule(data=st.data(), ok=st.booleans())
        def finish_execution(self, data, ok):
            key = data.draw(st.sampled_from(self.running))
            self.running.remove(key)
            if ok:
                self._act(self.ws.handle_execute_success(key, key, nbytes=1))
            else:
                self._act(self.ws.handle_execute_failure(key, {"exception": "e", "traceback": None}))

        @precondition(lambda self: bool(self.running))
        @rule(data=st.data())
        def secede(self, data):
            self._act(self.ws.handle_secede(data.draw(st.sampled_from(self.running))))

        @precondition(lambda self: bool(self.transfers))
        @rule(data=st.data(), outcome=st.sampled_from(["all", "some", "fail"]))
        def finish_transfer(self, data, outcome):
            g = data.draw(st.sampled_from(self.transfers))
            self.transfers.remove(g)
            if outcome == "fail":
                self._act(self.ws.handle_gather_dep_failure(g.worker, g.keys))
            else:
                keys = g.keys if outcome == "all" else g.keys[: len(g.keys) // 2]
                self._act(self.ws.handle_gather_dep_success(g.worker, g.keys, {k: k for k in keys}))

        @rule(data=st.data())
        def new_holders(self, data):
            missing = sorted(k for k, ts in self.ws.tasks.items() if ts.state == "missing")
            if missing:
                key = data.draw(st.sampled_from(missing))
                self._act(self.ws.handle_new_holders({key: [data.draw(st.sampled_from(PEERS))]}))

        @invariant()
        def valid(self):
            self.ws.validate_state()
            assert len(self.ws.executing) <= self.ws.nthreads * (1 + PREFETCH_PER_THREAD)
            assert self.ws.available_resources["R"] >= 0

        def teardown(self):
            ws = getattr(self, "ws", None)
            if ws is None:
                return
            for _ in range(1000):
                if self.running:
                    key = self.running.pop(0)
                    self._act(ws.handle_execute_success(key, key, nbytes=1))
                elif self.transfers:
                    g = self.transfers.pop(0)
                    self._act(ws.handle_gather_dep_success(g.worker, g.keys, {k: k for k in g.keys}))
                else:
                    missing = [k for k, ts in ws.tasks.items() if ts.state == "missing"]
                    if not missing:
                        break
                    self._act(ws.handle_new_holders({k: [P] for k in missing}))
                ws.validate_state()

            def blocked_by_error(ts, seen=()):
                return any(d.state == "error" or (d not in seen and blocked_by_error(d, (*seen, d)))
                           for d in ts.dependencies)

            stuck = {k: ts.state for k, ts in ws.tasks.items()
                     if ts.wanted and ts.state not in ("memory", "error") and not blocked_by_error(ts)}
            assert not stuck, (stuck, {k: (t.state, t.previous) for k, t in ws.tasks.items()})
            assert not ws.executing and not ws.in_flight_workers
            assert ws.available_resources == {"R": 1}


    WorkerMachine.TestCase.settings = settings(
        max_examples=150, stateful_step_count=40, deadline=None,
        suppress_health_check=[HealthCheck.too_slow], derandomize=True)
    test_random_event_sequences_keep_invariants = WorkerMachine.TestCase

else:

    @pytest.mark.skip(reason="needs hypothesis (a test extra)")
    def test_random_event_sequences_keep_invariants():
        pass
