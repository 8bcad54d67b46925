"""Work stealing and placement benchmark, ours against upstream in one run.

Workloads (each on a fresh ``LocalCluster(n_workers=2, threads_per_worker=1,
processes=True)``):

* ``small-input``: the issue's case, 40 tasks of 0.25 s that need a small
  value held by worker A.  Wall time, ratio to the ideal 5 s, tasks per
  worker.
* ``pinned-loose``: the same tasks submitted with ``workers=[A],
  allow_other_workers=True``: placement puts them all on A, only stealing
  can move them.
* ``skewed-2000``: 2,000 tasks, each needing one of 20 inputs held by A,
  with skewed durations (one in twenty takes 20 ms, the rest 0.5 ms).
  Wall time and ratio to the ideal (total work / 2 threads).

Plus, for ours only, the cost of one ``WorkStealing.balance()`` call on a
200-worker state, balanced and not (the work-stealing interval rests on it).

Usage::

    python benchmarks/stealing.py                 # ours (this interpreter) and upstream
    python benchmarks/stealing.py --side ours     # one side, JSON on stdout
    python benchmarks/stealing.py --upstream-python ~/venvs/upstream/bin/python

The same file runs under either implementation (same import name
``distributed``); the parent runs each side in its own subprocess.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

UPSTREAM_PYTHON = Path.home() / "venvs" / "upstream" / "bin" / "python"


def _where(x, i, delay):
    """Sleep ``delay``; return the address of the worker that ran it."""
    from distributed import get_worker

    time.sleep(delay)
    return get_worker().address


def _cluster():
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    client = Client(cluster)
    client.wait_for_workers(2, timeout=60)
    client.submit(sum, [1]).result()  # warm up
    return cluster, client


def _counts(addresses: list[str], workers: list[str]) -> list[int]:
    return [addresses.count(w) for w in workers]


def small_input(pinned: bool) -> dict:
    cluster, client = _cluster()
    try:
        workers = sorted(client.scheduler_info()["workers"])
        a = workers[0]
        x = client.scatter(1, workers=[a])
        kw = {"workers": [a], "allow_other_workers": True} if pinned else {}
        t0 = time.perf_counter()
        futures = client.map(_where, [x] * 40, range(40), [0.25] * 40, **kw)
        ran = client.gather(futures)
        wall = time.perf_counter() - t0
        return {"wall_s": wall, "ratio_to_ideal": wall / 5.0, "tasks_per_worker": _counts(ran, workers)}
    finally:
        client.close()
        cluster.close()


def skewed(n: int = 2000, inputs: int = 20) -> dict:
    durations = [0.02 if i % 20 == 0 else 0.0005 for i in range(n)]
    ideal = sum(durations) / 2
    cluster, client = _cluster()
    try:
        workers = sorted(client.scheduler_info()["workers"])
        xs = client.scatter(list(range(inputs)), workers=[workers[0]])
        t0 = time.perf_counter()
        futures = [client.submit(_where, xs[i % inputs], i, durations[i], pure=False) for i in range(n)]
        ran = client.gather(futures)
        wall = time.perf_counter() - t0
        return {"wall_s": wall, "ideal_s": ideal, "ratio_to_ideal": wall / ideal,
                "tasks_per_worker": _counts(ran, workers)}
    finally:
        client.close()
        cluster.close()


def balance_cost() -> dict:
    """Seconds per ``balance()`` call on 200 workers: nothing to do, and
    one worker holding 10,000 tasks that others could take."""
    try:
        from distributed.scheduler.state import SchedulerState
        from distributed.scheduler.stealing import WorkStealing
    except ImportError:
        return {}
    out = {}
    state = SchedulerState()
    for i in range(200):
        state.add_worker(f"tcp://10.1.{i // 250}.{i % 250}:1", nthreads=2)
    stealing = WorkStealing(state)
    reps = 2000
    t0 = time.perf_counter()
    for _ in range(reps):
        stealing.balance()
    out["balanced_us"] = (time.perf_counter() - t0) / reps * 1e6
    busy = "tcp://10.9.9.9:1"
    state.add_worker(busy, nthreads=2)
    state.update_data({"x": [busy]}, {"x": 100}, client="c")
    keys = [f"f-{i}" for i in range(10_000)]
    state.update_graph("c", dict.fromkeys(keys, b"s"), dict.fromkeys(keys, ["x"]), keys,
                       restrictions=dict.fromkeys(keys, [busy]), loose_restrictions=keys)
    t0 = time.perf_counter()
    decisions = stealing.balance()
    out["imbalanced_first_call_us"] = (time.perf_counter() - t0) * 1e6
    out["imbalanced_first_call_steals"] = len(decisions)
    return out


def run_side() -> dict:
    import distributed

    result = {"version": distributed.__version__, "python": sys.executable}
    result["small-input"] = small_input(pinned=False)
    result["pinned-loose"] = small_input(pinned=True)
    result["skewed-2000"] = skewed()
    result["balance"] = balance_cost()
    return result


def _child(python: str, side: str) -> dict:
    env = dict(os.environ)
    if side == "upstream":
        # Our checkout must not shadow upstream's package.
        env.pop("PYTHONPATH", None)
    done = subprocess.run([python, os.path.abspath(__file__), "--side", side], capture_output=True,
                          text=True, timeout=900, env=env, cwd="/" if side == "upstream" else None)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-5:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _table(results: dict) -> str:
    rows = [("workload", "metric", *results)]
    for workload in ("small-input", "pinned-loose", "skewed-2000"):
        for metric in ("wall_s", "ratio_to_ideal", "tasks_per_worker"):
            cells = []
            for side in results:
                value = results[side].get(workload, {}).get(metric, results[side].get("error", "-"))
                cells.append(f"{value:.2f}" if isinstance(value, float) else str(value))
            rows.append((workload, metric, *cells))
    ours = results.get("ours", {}).get("balance", {})
    for metric, value in ours.items():
        rows.append(("balance (200 workers)", metric, f"{value:.1f}" if isinstance(value, float) else str(value),
                     *["-"] * (len(results) - 1)))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths)) for r in rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--side", choices=["ours", "upstream"], help="run one side here, print JSON")
    ap.add_argument("--upstream-python", default=str(UPSTREAM_PYTHON))
    ap.add_argument("--json", type=Path, help="also write both sides' results here")
    args = ap.parse_args(argv)
    if args.side:
        print(json.dumps(run_side()))
        return 0
    results = {"ours": _child(sys.executable, "ours")}
    if Path(args.upstream_python).exists():
        results["upstream"] = _child(args.upstream_python, "upstream")
    else:
        print(f"(no upstream interpreter at {args.upstream_python}: ours only)")
    print(_table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
