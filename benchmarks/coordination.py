"""Speed of the coordination primitives: Lock round trips and Queue throughput.

    python benchmarks/coordination.py                          # ours
    ~/venvs/upstream/bin/python benchmarks/coordination.py     # dask.distributed
    python benchmarks/coordination.py --n 2000 --repeat 7 --json out.json

Metrics (medians over ``--repeat`` rounds, each of ``--n`` operations):

``lock_us``       one ``lock.acquire(); lock.release()`` from a blocking
                  client, in microseconds (lower is better);
``queue_put``     ``queue.put(i)`` of small integers, items per second;
``queue_get``     ``queue.get()`` of those items, items per second;
``queue_pair``    ``put`` then ``get`` of one item, pairs per second
                  (higher is better for the three).

Only the public API is used (``LocalCluster``, ``Client``, ``Lock``,
``Queue``), so the same script runs against either implementation; run each
with its own Python, from the repository root or anywhere else.  The
cluster is one worker process (the primitives live in the scheduler; the
worker is idle); the load average before and after is printed, since other
work on the machine changes the numbers a lot.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time


def _rounds(func, n: int, repeat: int) -> list[float]:
    """Seconds for ``n`` calls of ``func``, ``repeat`` times (one warm-up round first)."""
    out = []
    for r in range(repeat + 1):
        start = time.perf_counter()
        func(n)
        elapsed = time.perf_counter() - start
        if r:
            out.append(elapsed)
    return out


def measure(n: int, repeat: int) -> dict:
    """``{metric: {"median", "best", "unit", "better"}}``."""
    from distributed import Client, LocalCluster, Lock, Queue

    results: dict = {}
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster):
        lock = Lock("bench-lock")

        def locks(k):
            for _ in range(k):
                lock.acquire()
                lock.release()

        secs = _rounds(locks, n, repeat)
        results["lock_us"] = _summary([s / n * 1e6 for s in secs], "µs", "lower")

        queue = Queue("bench-queue")
        puts, gets = [], []
        for r in range(repeat + 1):
            start = time.perf_counter()
            for i in range(n):
                queue.put(i)
            middle = time.perf_counter()
            for _ in range(n):
                queue.get()
            end = time.perf_counter()
            if r:
                puts.append(n / (middle - start))
                gets.append(n / (end - middle))
        results["queue_put"] = _summary(puts, "items/s", "higher")
        results["queue_get"] = _summary(gets, "items/s", "higher")

        def pairs(k):
            for i in range(k):
                queue.put(i)
                queue.get()

        secs = _rounds(pairs, n, repeat)
        results["queue_pair"] = _summary([n / s for s in secs], "pairs/s", "higher")
    return results


def _summary(values: list[float], unit: str, better: str) -> dict:
    best = min(values) if better == "lower" else max(values)
    return {"median": statistics.median(values), "best": best, "unit": unit, "better": better,
            "values": values}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="operations per round (default 1000)")
    parser.add_argument("--repeat", type=int, default=5, help="timed rounds (default 5)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    if args.n < 1 or args.repeat < 1:
        parser.error("--n and --repeat must be at least 1")

    import distributed

    load_before = os.getloadavg()
    results = measure(args.n, args.repeat)
    load_after = os.getloadavg()
    print(f"distributed {distributed.__version__} ({os.path.dirname(distributed.__file__)}), "
          f"Python {platform.python_version()}, {os.cpu_count()} CPUs")
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}; "
          f"{args.n} operations x {args.repeat} rounds")
    print(f"{'metric':<12} {'median':>12} {'best':>12}  unit")
    for name, r in results.items():
        print(f"{name:<12} {r['median']:>12,.1f} {r['best']:>12,.1f}  {r['unit']} ({r['better']} is better)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"version": distributed.__version__, "python": sys.version, "n": args.n,
                       "repeat": args.repeat, "load": [load_before[0], load_after[0]], "results": results},
                      f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
