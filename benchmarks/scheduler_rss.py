"""Scheduler RSS per held task, without sockets: the yardstick's
scheduler_memory shape in one fresh process, in a minute instead of three.

    python benchmarks/scheduler_rss.py [ntasks]

A child process builds the ``update-graph`` message the client would send
(N/2 leaves ``(inc, i)``, N/2 ``(add, leaf_i, leaf_i+1)``, every key held),
encodes it, then does what the scheduler does with it: decode, the
``SchedulerState.update_graph``, every ``compute-task`` message encoded
(and dropped) and answered with ``handle_task_finished`` as two workers
would.  It prints the RSS growth per task after decoding and once every task
is in memory, which is the yardstick's ``sched_bytes_per_task_held`` minus
the sockets, and what stays after all keys are released and
``malloc_trim``.  The encoded message itself is freed before the
measurement, as it is in the scheduler.
"""
from __future__ import annotations

import ctypes
import gc
import os
import subprocess
import sys
from collections import deque

import psutil

from distributed.protocol import decode_message, encode_message
from distributed.scheduler.state import SchedulerState
from distributed.spec import WALK, TaskRef, make_spec, pickled_function
from distributed.utils_test import add, inc

WORKERS = ("tcp://127.0.0.1:1", "tcp://127.0.0.1:2")
CLIENT = "client-1"


def graph_message(n: int) -> list:
    """The encoded ``update-graph`` frames for the yardstick's graph, built
    as ``Client.get`` builds them for a raw graph."""
    half = n // 2
    finc, fadd = pickled_function(inc), pickled_function(add)
    prefix = "mem-0123456789abcdef"
    tasks: dict = {}
    deps: dict = {}
    for i in range(half):
        tasks[f"{prefix}-a-{i}"] = make_spec(WALK, finc, ((i,), {}))
        deps[f"{prefix}-a-{i}"] = []
    for i in range(half):
        a, b = f"{prefix}-a-{i}", f"{prefix}-a-{(i + 1) % half}"
        tasks[f"{prefix}-b-{i}"] = make_spec(WALK, fadd, ((TaskRef(a), TaskRef(b)), {}))
        deps[f"{prefix}-b-{i}"] = [a, b]
    keys = list(tasks)
    msg = {"op": "update-graph", "tasks": tasks, "dependencies": deps, "keys": keys,
           "priority": {k: i for i, k in enumerate(keys)}, "user_priority": 0}
    return encode_message(msg)


def rss() -> int:
    gc.collect()
    return psutil.Process().memory_info().rss


def child(n: int) -> None:
    frames = [bytes(f) for f in graph_message(n)]
    s = SchedulerState()
    for addr in WORKERS:
        s.add_worker(addr, nthreads=1)
    s.add_client(CLIENT)
    base = rss() - sum(len(f) for f in frames)  # the frames go away below
    msg = decode_message(frames, deserialize_payloads=False)
    del frames
    decoded = rss()
    _, wmsgs = s.update_graph(CLIENT, msg["tasks"], msg["dependencies"], msg["keys"],
                              priority=msg["priority"], user_priority=msg["user_priority"])
    keys = msg["keys"]
    del msg
    pending: deque = deque()

    def enqueue(wmsgs: dict) -> None:
        for addr, msgs in wmsgs.items():
            encode_message(msgs)  # the scheduler encodes them to send
            pending.extend((m["key"], addr) for m in msgs if m["op"] == "compute-task")

    enqueue(wmsgs)
    del wmsgs
    while pending:
        key, addr = pending.popleft()
        enqueue(s.handle_task_finished(key, addr, nbytes=28, type="int", duration=0.001)[1])
    assert all(ts.state == "memory" for ts in s.tasks.values())
    held = rss()
    s.client_releases_keys(CLIENT, keys)
    del keys
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    after = rss()
    print(f"{n} tasks: decoded message {(decoded - base) / n:.0f} B/task, "
          f"held {(held - base) / n:.0f} B/task, "
          f"retained after release {(after - base) / 1e6:.0f} MB")


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        child(int(sys.argv[2]))
        return
    n = sys.argv[1] if len(sys.argv) > 1 else "200000"
    subprocess.run([sys.executable, os.path.abspath(__file__), "--child", n], check=True)


if __name__ == "__main__":
    main()
