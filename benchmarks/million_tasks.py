"""Submit one graph of N tasks at once (default 1,000,000) and report the
time to complete it and the scheduler's memory.

The graph has the yardstick's scheduler_memory shape: N/2 leaves
``(inc, i)`` and N/2 ``(add, leaf_i, leaf_i+1)``; all N keys are held until
they are done.  The scheduler and 2 workers (1 thread each) are started
with the ``dask-scheduler`` and ``dask-worker`` modules of the same Python,
so the scheduler's RSS is its own.

    python benchmarks/million_tasks.py            # 1,000,000 tasks
    python benchmarks/million_tasks.py 100000     # smaller
    ~/venvs/upstream/bin/python benchmarks/million_tasks.py   # upstream

Prints one JSON line.
"""
from __future__ import annotations

import json
import operator
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def _cluster(tmp: str):
    """Start a scheduler and two workers; returns (processes, address)."""
    sched_file = os.path.join(tmp, "scheduler.json")
    scheduler = subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0",
         "--scheduler-file", sched_file], cwd=tmp, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while not os.path.exists(sched_file):
        if time.time() > deadline or scheduler.poll() is not None:
            raise RuntimeError("the scheduler did not start")
        time.sleep(0.1)
    time.sleep(0.2)  # the file may still be being written
    with open(sched_file) as f:
        address = json.load(f)["address"]
    workers = subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1", "--nworkers", "2",
         "--host", "127.0.0.1", "--memory-limit", "0"], cwd=tmp, stderr=subprocess.DEVNULL)
    return [workers, scheduler], address


def main(n: int) -> dict:
    from distributed import Client

    half = n // 2
    tmp = tempfile.mkdtemp(prefix="million-")
    procs, address = _cluster(tmp)
    try:
        with Client(address) as client:
            client.wait_for_workers(2, timeout=60)
            return _run(client, n, half)
    finally:
        for p in procs:
            p.send_signal(signal.SIGINT)
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


def _run(client, n: int, half: int) -> dict:
    from distributed import wait

    client.submit(operator.add, 1, 1).result()
    base = client.run_on_scheduler(_rss)
    dsk = {}
    for i in range(half):
        dsk[f"a-{i}"] = (operator.add, i, 1)
    for i in range(half):
        dsk[f"b-{i}"] = (operator.add, f"a-{i}", f"a-{(i + 1) % half}")
    keys = list(dsk)
    t0 = time.perf_counter()
    futures = client.get(dsk, keys, sync=False)
    t1 = time.perf_counter()
    wait(futures)
    t2 = time.perf_counter()
    held = client.run_on_scheduler(_rss)
    first, last = client.gather([futures[0], futures[-1]])
    del futures
    return {
        "implementation": __import__("distributed").__version__,
        "tasks": n,
        "submit_s": round(t1 - t0, 2),
        "complete_s": round(t2 - t0, 2),
        "tasks_per_s": round(n / (t2 - t0)),
        "scheduler_rss_base_MB": round(base / 2**20, 1),
        "scheduler_rss_held_MB": round(held / 2**20, 1),
        "scheduler_bytes_per_task": round((held - base) / n),
        "results_correct": [first, last] == [1, half + 1],
        "python": sys.version.split()[0],
        "pid": os.getpid(),
    }




if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)))
