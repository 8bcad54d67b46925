"""What authentication and TLS cost (issue 14).

1. The shared benchmark's ``latency``, ``map_throughput`` and ``chain`` rows
   with shared-secret authentication off and on (on: the secret in
   ``DASK_DISTRIBUTED__COMM__AUTH__SECRET``, which every process of the
   cluster inherits), alternated ``--rounds`` times so that drift on the
   machine hits both alike; the median of the rounds is reported.
2. The 100 MB peer transfer (scatter to worker A, a task on worker B takes
   it, gather back) over ``tcp://`` and over ``tls://`` with
   ``Security.temporary()`` certificates.

Run it with the interpreter of the environment under test, from any folder:

    python benchmarks/security.py [--quick] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: The shared benchmark, beside the repository (``--bench`` to point elsewhere).
BENCH = Path(__file__).resolve().parents[2] / "shared" / "bench" / "bench_distributed.py"
ROWS = {"latency": "us per round trip", "map_throughput": "tasks/s", "chain": "tasks/s"}
MB = 1_000_000


def _bench_once(secret: str | None, quick: bool) -> dict[str, float]:
    if not BENCH.exists():
        raise SystemExit(f"no shared benchmark at {BENCH}: pass --bench PATH/bench_distributed.py")
    env = dict(os.environ)
    env.pop("DASK_DISTRIBUTED__COMM__AUTH__SECRET", None)
    if secret is not None:
        env["DASK_DISTRIBUTED__COMM__AUTH__SECRET"] = secret
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "report.json"
        cmd = [sys.executable, str(BENCH), "--only", ",".join(ROWS), "--json", str(out)]
        if quick:
            cmd.append("--quick")
        subprocess.run(cmd, env=env, cwd=tmp, check=True, capture_output=True, timeout=1800)
        report = json.loads(out.read_text())
    return {name: _headline(report, name) for name in ROWS}


def _headline(report: dict, name: str) -> float:
    """The section's first (main) metric, its median, from the shared bench's JSON."""
    section = report["sections"][name]
    if section.get("status") != "ok":
        raise RuntimeError(f"{name}: {section.get('status')} {section.get('message') or ''}")
    first = next(iter(section["metrics"].values()))
    return float(first["median"])


def auth_rows(rounds: int, quick: bool) -> None:
    secret = "benchmark-secret-" + os.urandom(16).hex()
    runs: dict[str, list[dict[str, float]]] = {"off": [], "on": []}
    for _ in range(rounds):
        for side, value in (("off", None), ("on", secret)):
            runs[side].append(_bench_once(value, quick))
    print(f"auth off vs on, median of {rounds} alternated rounds:")
    print(f"  {'row':<16}{'off':>12}{'on':>12}{'on/off':>9}")
    for name, unit in ROWS.items():
        off = statistics.median(r[name] for r in runs["off"])
        on = statistics.median(r[name] for r in runs["on"])
        print(f"  {name:<16}{off:>12.3f}{on:>12.3f}{on / off:>9.3f}  ({unit})")


def _peer_transfer(protocol: str, nbytes: int, repeats: int) -> list[float]:
    from distributed import Client, LocalCluster, Security

    security = Security.temporary() if protocol == "tls" else None
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, protocol=protocol,
                      security=security, dashboard_address=None) as cluster, \
            Client(cluster, security=security) as client:
        a, b = sorted(client.scheduler_info()["workers"])
        rates = []
        for _ in range(repeats):
            data = client.scatter(b"x" * nbytes, workers=[a])
            start = time.perf_counter()
            taken = client.submit(len, data, workers=[b], pure=False)
            assert taken.result() == nbytes
            rates.append(nbytes / MB / (time.perf_counter() - start))
            del data, taken
        return rates


def transfer_rows(quick: bool) -> None:
    nbytes = 100 * MB
    repeats = 3 if quick else 7
    print(f"peer transfer of {nbytes // MB} MB, median of {repeats} (MB/s):")
    for protocol in ("tcp", "tls"):
        rates = _peer_transfer(protocol, nbytes, repeats)
        print(f"  {protocol}://  {statistics.median(rates):8.0f}   "
              f"(min {min(rates):.0f}, max {max(rates):.0f})")


def main() -> None:
    global BENCH
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="the shared bench's quick sizes")
    ap.add_argument("--rounds", type=int, default=3, help="alternated off/on rounds")
    ap.add_argument("--only", choices=["auth", "transfer"], help="run one part")
    ap.add_argument("--bench", type=Path, default=BENCH, help="path of bench_distributed.py")
    args = ap.parse_args()
    BENCH = args.bench
    if args.only in (None, "auth"):
        auth_rows(args.rounds, args.quick)
    if args.only in (None, "transfer"):
        transfer_rows(args.quick)


if __name__ == "__main__":
    main()
