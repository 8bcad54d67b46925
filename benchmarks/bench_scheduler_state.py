"""Scheduler CPU time and memory per task, driving ``SchedulerState`` directly
(no sockets, no event loop).

    python benchmarks/bench_scheduler_state.py [ntasks] [repeat]

The graph has the yardstick's shape: N/2 leaves ``(inc, i)`` and N/2
``(add, leaf_i, leaf_i+1)``, every key wanted by one client.  Each run does
``update_graph``, then answers every ``compute-task`` message with
``handle_task_finished`` as a worker would (two workers, one thread each),
then ``client_releases_keys`` for all keys.  Prints microseconds per task for
each phase (best of ``repeat`` runs: the machine is shared, so the minimum is
the least noisy figure) and the bytes per task the state holds once every
task is in memory (tracemalloc, a separate run).
"""
from __future__ import annotations

import gc
import sys
import time
import tracemalloc
from collections import deque

from distributed.scheduler.state import SchedulerState
from distributed.spec import WALK, TaskRef, make_spec, pickled_function
from distributed.utils_test import add, inc

WORKERS = ("tcp://127.0.0.1:1", "tcp://127.0.0.1:2")
CLIENT = "client-1"


def make_graph(n: int) -> tuple[dict, dict, dict]:
    """Tasks, dependencies and priorities as ``update_graph`` receives them
    from a decoded ``update-graph`` message: every task of a function shares
    its ``SharedBytes``, as a decoded message does."""
    half = n // 2
    finc, fadd = pickled_function(inc), pickled_function(add)
    tasks: dict = {}
    deps: dict = {}
    for i in range(half):
        key = f"a-{i}"
        tasks[key] = make_spec(WALK, finc, ((i,), {}))
        deps[key] = ()
    for i in range(half):
        key = f"b-{i}"
        a, b = f"a-{i}", f"a-{(i + 1) % half}"
        tasks[key] = make_spec(WALK, fadd, ((TaskRef(a), TaskRef(b)), {}))
        deps[key] = (a, b)
    priority = {key: i for i, key in enumerate(tasks)}
    return tasks, deps, priority


def new_state() -> SchedulerState:
    s = SchedulerState()
    for addr in WORKERS:
        s.add_worker(addr, nthreads=1)
    s.add_client(CLIENT)
    return s


def _enqueue(pending: deque, wmsgs: dict) -> None:
    for addr, msgs in wmsgs.items():
        for msg in msgs:
            if msg["op"] == "compute-task":
                pending.append((msg["key"], addr))


def compute_all(s: SchedulerState, wmsgs: dict) -> None:
    """Finish every task the scheduler hands out, first come first served."""
    pending: deque = deque()
    _enqueue(pending, wmsgs)
    while pending:
        key, addr = pending.popleft()
        _, wmsgs = s.handle_task_finished(key, addr, nbytes=28, type="int", duration=0.001)
        _enqueue(pending, wmsgs)


def run_once(n: int) -> dict[str, float]:
    tasks, deps, priority = make_graph(n)
    keys = list(tasks)
    s = new_state()
    gc.collect()
    t0 = time.process_time()
    _, wmsgs = s.update_graph(CLIENT, tasks, deps, keys, priority=priority)
    t1 = time.process_time()
    compute_all(s, wmsgs)
    t2 = time.process_time()
    assert all(ts.state == "memory" for ts in s.tasks.values()), "not every task finished"
    s.client_releases_keys(CLIENT, keys)
    t3 = time.process_time()
    assert not s.tasks, "tasks left after the client released them"
    us = 1e6 / n
    return {"update_graph": (t1 - t0) * us, "finished": (t2 - t1) * us,
            "releases": (t3 - t2) * us, "total": (t3 - t0) * us}


def held_bytes_per_task(n: int) -> tuple[float, list]:
    """Bytes per task kept while all keys are held: what the state allocates
    and what it keeps of the graph it was given (keys, run specs), as the
    scheduler keeps parts of a decoded ``update-graph`` message."""
    s = new_state()
    gc.collect()
    tracemalloc.start(1)
    snap0 = tracemalloc.take_snapshot()
    tasks, deps, priority = make_graph(n)
    keys = list(tasks)
    _, wmsgs = s.update_graph(CLIENT, tasks, deps, keys, priority=priority)
    compute_all(s, wmsgs)
    del wmsgs
    tasks = deps = priority = keys = None  # only the state keeps what it needs
    gc.collect()
    snap1 = tracemalloc.take_snapshot()
    tracemalloc.stop()
    total = 0
    lines = []
    for st in snap1.compare_to(snap0, "lineno"):
        frame = st.traceback[0]
        if "tracemalloc" in frame.filename:
            continue
        total += st.size_diff
        lines.append((st.size_diff / n, f"{frame.filename.split('/')[-1]}:{frame.lineno}"))
    assert s.tasks
    return total / n, sorted(lines, reverse=True)[:12]


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
    repeat = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    best: dict[str, float] = {}
    for _ in range(repeat):
        for phase, us in run_once(n).items():
            best[phase] = min(best.get(phase, float("inf")), us)
    print(f"{n} tasks, best of {repeat} runs, CPU microseconds per task:")
    for phase, us in best.items():
        print(f"  {phase:<13}{us:8.2f}")
    per_task, lines = held_bytes_per_task(n)
    print(f"held by the scheduler state with all keys in memory: {per_task:.0f} bytes/task")
    for size, where in lines:
        print(f"  {size:8.1f} {where}")


if __name__ == "__main__":
    main()
