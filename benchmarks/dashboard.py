"""What the dashboard costs the scheduler.

    python benchmarks/dashboard.py                   # 20k tasks, 3 rounds per setting
    python benchmarks/dashboard.py --n 5000 --repeat 1 --json out.json

Settings (each a fresh ``LocalCluster``: the scheduler in this process, as
in a notebook, and two single-threaded worker processes):

``none``      no HTTP server at all;
``idle``      the dashboard served, no tab open (the tracker's transition hook only);
``1 tab``     one server-sent-event stream read by another process;
``10 tabs``   ten streams read by another process.

For each: wall time of ``client.map(inc, range(n))`` to the last result
(tasks per second; higher is better), the CPU the stream's producer used
(snapshots and their JSON, measured inside the scheduler: the figure that
does not drown in the machine's noise) and the scheduler process's CPU
seconds over that run (this process: scheduler and client; lower is
better), medians over ``--repeat`` rounds.
Then ``/metrics`` with ``--prefixes`` task prefixes (one task each, held in
memory): render time in milliseconds, median of 50, in-process and over HTTP.

The machine is shared: the load average before and after is printed.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import socket
import statistics
import sys
import threading
import time
import urllib.request

import psutil

from distributed import Client, LocalCluster
from distributed.utils_test import inc


def _read_streams(port: int, tabs: int, ready, stop) -> None:
    """Child process: ``tabs`` threads, each reading the SSE stream."""
    def reader():
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(f"GET /api/v1/stream HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        s.settimeout(0.5)
        first = True
        while not stop.is_set():
            try:
                data = s.recv(1 << 16)
            except TimeoutError:
                continue
            if not data:
                break
            if first and b"event: snapshot" in data:
                first = False
                ready.release()
        s.close()

    threads = [threading.Thread(target=reader, daemon=True) for _ in range(tabs)]
    for t in threads:
        t.start()
    stop.wait()
    for t in threads:
        t.join(timeout=2)


def _scheduler_pid(client: Client) -> int:
    return client.run_on_scheduler(os.getpid)


def one_setting(n: int, repeat: int, tabs: int | None) -> dict:
    """``tabs`` None: no dashboard; 0: dashboard, no tab; k: k streams."""
    skw = {} if tabs is None else {"dashboard_address": "127.0.0.1:0"}
    rates, cpus = [], []
    with LocalCluster(n_workers=2, threads_per_worker=1, scheduler_kwargs=skw) as lc:
        with Client(lc) as c:
            proc = psutil.Process(_scheduler_pid(c))
            streams = None
            if tabs:
                port = c.scheduler_info()["services"]["dashboard"]
                ctx = multiprocessing.get_context("spawn")
                ready, stop = ctx.Semaphore(0), ctx.Event()
                streams = ctx.Process(target=_read_streams, args=(port, tabs, ready, stop), daemon=True)
                streams.start()
                for _ in range(tabs):
                    if not ready.acquire(timeout=30):
                        raise RuntimeError("a dashboard stream sent no snapshot within 30 s")
            http = lc.scheduler.http_server
            produced = []
            try:
                c.gather(c.map(inc, range(100)))  # warm up: functions pickled, connections open
                for r in range(repeat):
                    cpu0 = sum(proc.cpu_times()[:2])
                    p0 = http.broadcaster.cpu_seconds if http is not None else 0.0
                    t0 = time.perf_counter()
                    futures = c.map(inc, range(n), key=[f"inc-{r}-{i}" for i in range(n)])
                    c.gather(futures)
                    rates.append(n / (time.perf_counter() - t0))
                    cpus.append(sum(proc.cpu_times()[:2]) - cpu0)
                    produced.append((http.broadcaster.cpu_seconds if http is not None else 0.0) - p0)
                    del futures
            finally:
                if streams is not None:
                    stop.set()
                    streams.join(timeout=10)
    return {"tasks_per_s": statistics.median(rates), "scheduler_cpu_s": statistics.median(cpus),
            "stream_cpu_s": statistics.median(produced)}


def metrics_render(prefixes: int) -> dict:
    """Median milliseconds to build and render ``/metrics`` with ``prefixes`` prefixes."""
    from distributed.http.metrics_scheduler import collect
    from distributed.http.prometheus import render
    from distributed.scheduler.server import Scheduler
    from distributed.worker.server import Worker

    async def main():
        async with Scheduler(port=0, dashboard_address="127.0.0.1:0") as s, Worker(s.address, nthreads=2):
            async with Client(s.address, asynchronous=True) as c:
                futures = [c.submit(inc, i, key=f"prefix{i}-1") for i in range(prefixes)]
                await c.gather(futures)
                http = s.http_server
                times = []
                for _ in range(50):
                    t0 = time.perf_counter()
                    text = render(collect(http))
                    times.append((time.perf_counter() - t0) * 1000)
                url = f"http://127.0.0.1:{http.port}/metrics"
                loop = asyncio.get_running_loop()
                http_times = []
                for _ in range(20):
                    t0 = time.perf_counter()
                    await loop.run_in_executor(None, lambda: urllib.request.urlopen(url, timeout=10).read())
                    http_times.append((time.perf_counter() - t0) * 1000)
                return {"render_ms": statistics.median(times), "http_ms": statistics.median(http_times),
                        "bytes": len(text), "lines": text.count("\n")}

    return asyncio.run(main())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=20000, help="tasks in the map (default: %(default)s)")
    p.add_argument("--repeat", type=int, default=3, help="rounds per setting (default: %(default)s)")
    p.add_argument("--prefixes", type=int, default=1000, help="prefixes for /metrics (default: %(default)s)")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    print(f"load average before: {os.getloadavg()}", flush=True)
    results = {}
    for name, tabs in (("none", None), ("idle", 0), ("1 tab", 1), ("10 tabs", 10)):
        results[name] = one_setting(args.n, args.repeat, tabs)
        print(f"  {name}: {results[name]}", file=sys.stderr, flush=True)
    base = results["none"]
    print(f"\nscheduler throughput, map(inc, range({args.n})), median of {args.repeat}")
    print(f"{'setting':<10} {'tasks/s':>10} {'vs none':>9} {'sched CPU s':>12} {'vs none':>9} "
          f"{'stream CPU s':>13} {'of sched':>9}")
    for name, r in results.items():
        print(f"{name:<10} {r['tasks_per_s']:>10.0f} {r['tasks_per_s'] / base['tasks_per_s'] - 1:>+9.1%} "
              f"{r['scheduler_cpu_s']:>12.2f} {r['scheduler_cpu_s'] / base['scheduler_cpu_s'] - 1:>+9.1%} "
              f"{r['stream_cpu_s']:>13.3f} {r['stream_cpu_s'] / r['scheduler_cpu_s']:>9.1%}")
    m = metrics_render(args.prefixes)
    results["metrics"] = m
    print(f"\n/metrics with {args.prefixes} task prefixes: render {m['render_ms']:.1f} ms (median of 50), "
          f"over HTTP {m['http_ms']:.1f} ms; {m['lines']} lines, {m['bytes']} bytes")
    print(f"load average after: {os.getloadavg()}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
