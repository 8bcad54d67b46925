"""The dashboard's PrefixTracker against the state machine, without sockets:
its incremental counts always equal a count over every task."""
from __future__ import annotations

from collections import Counter

from distributed.http.tracker import TRACKED_STATES, PrefixTracker
from distributed.scheduler.observer import StateObserver
from distributed.scheduler.state import SchedulerState
from distributed.tests.test_http_scheduler import scan

A, B = "tcp://127.0.0.1:1", "tcp://127.0.0.1:2"


def _check(tracker: PrefixTracker, state: SchedulerState) -> None:
    expected = scan(state)
    for name, p in tracker.prefixes.items():
        want = expected.get(name, Counter())
        assert p.ntasks == want["total"], name
        counts = p.counts()
        for s in (*TRACKED_STATES, "released"):
            assert counts[s] == want[s], (name, s)
    assert set(expected) <= set(tracker.prefixes)
    assert tracker.totals()["released"] == sum(c["released"] for c in expected.values())


def test_counts_follow_graphs_scatter_results_and_forgetting():
    state = SchedulerState()
    tracker = PrefixTracker(state)
    tracker.install()
    state.add_worker(A, nthreads=1)
    state.update_data({"data-1": [A], "data-2": [A]}, {"data-1": 100, "data-2": 50}, client="c")
    _check(tracker, state)
    assert tracker.prefixes["data"].nbytes == 150
    keys = [f"inc-{i}" for i in range(3)]
    state.update_graph("c", dict.fromkeys(keys, b"s"), dict.fromkeys(keys, ["data-1"]), keys)
    # A task whose dependency the scheduler never had: created and erred in one call.
    state.update_graph("c", {"bad-1": b"s"}, {"bad-1": ["gone-1"]}, ["bad-1"])
    _check(tracker, state)
    assert tracker.prefixes["bad"].counts()["erred"] == 1
    for key in keys:
        ts = state.tasks[key]
        if ts.state == "processing":
            state.handle_task_finished(key, ts.processing_on.address, nbytes=8, duration=0.5)
    _check(tracker, state)
    state.client_releases_keys("c", [*keys, "bad-1", "data-1", "data-2"])
    _check(tracker, state)
    assert tracker.forgotten_total >= 1


def test_arrivals_and_departures_counted_once():
    state = SchedulerState()
    tracker = PrefixTracker(state)
    tracker.install()
    tracker.install()  # idempotent: hooks are not added twice
    state.add_worker(A, nthreads=1)
    state.add_worker(B, nthreads=1)
    state.remove_worker(A)
    state.remove_worker(A)  # not there any more: no departure
    state.add_client("c")
    state.add_client("c")  # seen again: not a new client
    state.remove_client("c")
    assert (tracker.workers_added, tracker.workers_removed) == (2, 1)
    assert (tracker.clients_added, tracker.clients_removed) == (1, 1)
    tracker.uninstall()
    assert tracker not in state.plugins and tracker not in state.observers
    state.add_worker(A, nthreads=1)
    assert tracker.workers_added == 2


def test_an_installed_tracker_counts_what_was_there_before():
    state = SchedulerState()
    state.add_worker(A, nthreads=1)
    state.update_graph("c", {"x-1": b"s", "y-1": b"s"}, {"y-1": ["x-1"]}, ["y-1"])
    tracker = PrefixTracker(state)
    tracker.install()
    _check(tracker, state)


def test_observers_see_nothing_but_what_they_override():
    class Stored(StateObserver):
        def __init__(self):
            self.stored = []

        def task_stored(self, ts):
            self.stored.append((ts.key, ts.state, ts.nbytes))

    state = SchedulerState()
    state.observers.append(observer := Stored())
    state.add_worker(A, nthreads=1)
    state.update_data({"x": [A]}, {"x": 7})
    state.update_data({"x": [B]}, {"x": 7})  # already in memory: a new replica only
    assert observer.stored == [("x", "memory", 7)]
