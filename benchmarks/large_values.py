"""MB/s for large values through the four ways data moves in a cluster.

    python benchmarks/large_values.py                         # ours
    ~/venvs/upstream/bin/python benchmarks/large_values.py    # dask.distributed
    python benchmarks/large_values.py --sizes 64MB,256MB --kinds numpy --repeat 5 --json out.json

Paths, each timed on its own (making the value is not timed):

``result``   ``future.result()`` of a task that made the value on worker A;
``scatter``  ``client.scatter(value, workers=[A])``, as users call it (the
             key is a hash of the value, so hashing is included);
``peer``     a task on worker B that takes the scattered value as its input
             and returns its length: B fetches it from A;
``gather``   ``client.gather(future)`` of the scattered value, from A.

Values are random (incompressible) ``bytes`` or uint8 NumPy arrays.  Only
the public API is used (``LocalCluster``, ``Client``, ``submit``,
``scatter``, ``gather``, ``wait``), so the same script runs against either
implementation; run each with its own Python, from the repository root or
anywhere else (the script's directory has no ``distributed`` in it).

The table shows the median MB/s (1 MB = 2**20 bytes) over ``--repeat``
rounds, and the best.  Two worker processes with one thread each and no
memory limit; the load average before and after is printed, since other
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

import numpy as np

_UNITS = {"kb": 2**10, "mb": 2**20, "gb": 2**30}
PATHS = ["result", "scatter", "peer", "gather"]
KINDS = ["bytes", "numpy"]


def parse_size(text: str) -> int:
    """'64MB' -> 67108864 (binary units, as the table prints them).

    >>> parse_size("1GB"), parse_size("512")
    (1073741824, 512)
    """
    t = text.strip().lower().removesuffix("ib").removesuffix("b")
    for unit, scale in _UNITS.items():
        if t.endswith(unit[0]):
            return int(float(t[:-1]) * scale)
    return int(t)


def make_value(kind: str, n: int, seed: int = 0):
    """``n`` random bytes, as ``bytes`` or a uint8 array (runs on workers too)."""
    arr = np.random.default_rng(seed).integers(0, 256, size=n, dtype=np.uint8)
    return arr.tobytes() if kind == "bytes" else arr


def length(value) -> int:
    return len(value)


def _timed(func) -> float:
    start = time.perf_counter()
    func()
    return time.perf_counter() - start


def measure(client, a: str, b: str, kind: str, n: int, paths: list[str]) -> dict[str, float]:
    """Seconds per path for one value of ``n`` bytes."""
    from distributed import wait

    out: dict[str, float] = {}
    if "result" in paths:
        f = client.submit(make_value, kind, n, workers=[a], pure=False)
        wait(f)
        out["result"] = _timed(f.result)
        del f
    if {"scatter", "peer", "gather"} & set(paths):
        value = make_value(kind, n, seed=1)
        holder: list = []
        seconds = _timed(lambda: holder.append(client.scatter(value, workers=[a])))
        if "scatter" in paths:
            out["scatter"] = seconds
        del value
        g = holder.pop()
        if "peer" in paths:
            peer = client.submit(length, g, workers=[b], pure=False)
            out["peer"] = _timed(peer.result)
            if peer.result() != n:
                raise AssertionError(f"peer received {peer.result()} of {n} bytes")
            del peer
        if "gather" in paths:
            got: list = []
            out["gather"] = _timed(lambda: got.append(client.gather(g)))
            if len(got[0]) != n:
                raise AssertionError(f"gather returned {len(got[0])} of {n} bytes")
            del got
        del g
    return out


def _implementation() -> str:
    import distributed

    where = os.path.dirname(distributed.__file__)
    name = "upstream" if "site-packages" in where else "ours"
    return f"{name} distributed {distributed.__version__}"


def run(sizes: list[int], kinds: list[str], paths: list[str], repeat: int) -> dict:
    from distributed import Client, LocalCluster

    report: dict = {"implementation": _implementation(), "python": platform.python_version(),
                    "cpus": os.cpu_count(), "loadavg_before": os.getloadavg(), "rows": []}
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, memory_limit=0,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        a, b = sorted(client.scheduler_info()["workers"])
        # one small round first: connections open, functions cached
        measure(client, a, b, "numpy", 2**20, paths)
        for kind in kinds:
            for n in sizes:
                seconds: dict[str, list[float]] = {p: [] for p in paths}
                for _ in range(repeat):
                    for path, s in measure(client, a, b, kind, n, paths).items():
                        seconds[path].append(s)
                for path in paths:
                    rates = [n / 2**20 / s for s in seconds[path]]
                    report["rows"].append({"kind": kind, "bytes": n, "path": path, "seconds": seconds[path],
                                           "mb_per_s_median": statistics.median(rates),
                                           "mb_per_s_best": max(rates)})
    report["loadavg_after"] = os.getloadavg()
    return report


def _size_label(n: int) -> str:
    for unit, scale in (("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if n >= scale:
            return f"{n / scale:g} {unit}"
    return f"{n} B"


def print_table(report: dict, paths: list[str]) -> None:
    print(f"{report['implementation']}, Python {report['python']}, {report['cpus']} CPUs; "
          f"load average before {report['loadavg_before'][0]:.2f}, after {report['loadavg_after'][0]:.2f}")
    print("MB/s, median (best) of the rounds")
    header = f"{'value':>16} " + "".join(f"{p:>18}" for p in paths)
    print(header)
    print("-" * len(header))
    rows = report["rows"]
    for kind in dict.fromkeys(r["kind"] for r in rows):
        for n in dict.fromkeys(r["bytes"] for r in rows if r["kind"] == kind):
            cells = {r["path"]: r for r in rows if r["kind"] == kind and r["bytes"] == n}
            line = f"{kind + ' ' + _size_label(n):>16} "
            for p in paths:
                r = cells[p]
                line += f"{r['mb_per_s_median']:>10.0f} ({r['mb_per_s_best']:>5.0f})"
            print(line)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="64MB,256MB,1GB", help="comma-separated, e.g. 64MB,1GB")
    parser.add_argument("--kinds", default=",".join(KINDS), help="bytes, numpy or both")
    parser.add_argument("--paths", default=",".join(PATHS), help=f"some of {','.join(PATHS)}")
    parser.add_argument("--repeat", type=int, default=3, help="rounds per value (default 3)")
    parser.add_argument("--json", metavar="PATH", help="also write the full report here")
    args = parser.parse_args(argv)
    sizes = [parse_size(s) for s in args.sizes.split(",") if s]
    kinds = [k for k in args.kinds.split(",") if k]
    paths = [p for p in args.paths.split(",") if p]
    for bad, allowed, what in ((set(kinds) - set(KINDS), KINDS, "kinds"),
                               (set(paths) - set(PATHS), PATHS, "paths")):
        if bad:
            parser.error(f"unknown {what} {sorted(bad)}; choose from {allowed}")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    report = run(sizes, kinds, paths, args.repeat)
    print_table(report, paths)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
