"""Time from ``cluster.scale(2)`` to two registered workers through SLURM (issue 16).

dask-jobqueue's ``SLURMCluster(cores=1, memory="1GB", processes=1)`` with the
scheduler on loopback; the clock starts at ``cluster.scale(2)`` and stops when
``client.wait_for_workers(2)`` returns: two ``sbatch`` calls, SLURM starting
both jobs, each job's Python starting our (or upstream's) worker CLI and the
workers registering.

The script starts the tests' private single-node SLURM once
(``distributed/tests/slurm.py``: munged, slurmctld and slurmd as root in a
temporary folder), then runs itself with ``--measure`` under each interpreter,
alternating the sides for ``--rounds`` rounds so that drift on the machine hits
both alike, and prints the median, min and max per side.  Each interpreter
needs dask-jobqueue (``pip install --no-deps dask-jobqueue`` beside upstream).

Run it as root with this project's venv, from the repository root:

    python benchmarks/slurm_scale.py [--rounds 5] [--upstream ~/venvs/upstream/bin/python]
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

REPO = Path(__file__).resolve().parents[1]


def measure() -> dict:
    """One cluster, one ``scale(2)``; the seconds until two workers are registered."""
    from dask_jobqueue import SLURMCluster

    import distributed
    from distributed import Client

    with tempfile.TemporaryDirectory() as tmp:
        with SLURMCluster(cores=1, memory="1GB", processes=1, walltime="00:10:00",
                          scheduler_options={"host": "127.0.0.1", "dashboard_address": ":0"},
                          log_directory=tmp, local_directory=tmp) as cluster, Client(cluster) as client:
            start = time.perf_counter()
            cluster.scale(2)
            client.wait_for_workers(2, timeout=120)
            seconds = time.perf_counter() - start
            assert client.submit(sum, [1, 2]).result() == 3
    return {"seconds": seconds, "distributed": distributed.__version__, "from": os.path.dirname(distributed.__file__)}


def _run_side(python: str, env: dict) -> dict:
    with tempfile.TemporaryDirectory() as cwd:  # not the repository: the interpreter's own distributed
        out = subprocess.run([python, str(Path(__file__).resolve()), "--measure"], env=env, cwd=cwd,
                             capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        raise RuntimeError(f"{python} --measure failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--measure", action="store_true", help="(internal) one measurement, JSON on stdout")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--ours", default=sys.executable, help="interpreter with this project")
    parser.add_argument("--upstream", default=os.path.expanduser("~/venvs/upstream/bin/python"),
                        help="interpreter with upstream dask.distributed ('' to skip)")
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure()))
        return

    sys.path.insert(0, str(REPO))
    from distributed.tests.slurm import slurm_unavailable, start_slurm

    reason = slurm_unavailable()
    if reason:
        sys.exit(f"cannot start SLURM here: {reason}")
    sides = {"ours": args.ours}
    if args.upstream:
        sides["upstream"] = args.upstream
    times: dict[str, list[float]] = {side: [] for side in sides}
    versions = {}
    with start_slurm() as node:
        for _ in range(args.rounds):
            for side, python in sides.items():
                env = dict(os.environ)  # SLURM_CONF of the private SLURM; the jobs inherit it
                if side == "upstream":
                    env.pop("PYTHONPATH", None)
                result = _run_side(python, env)
                node.wait_for(lambda: not node.job_ids(), "the round's jobs to leave squeue")
                times[side].append(result["seconds"])
                versions[side] = f"{result['distributed']} ({result['from']})"
                print(f"{side:9s} {result['seconds']:.2f} s", flush=True)
    print(f"\nscale(2) -> 2 registered workers through SLURM, {args.rounds} rounds:")
    for side, values in times.items():
        print(f"  {side:9s} median {statistics.median(values):.2f} s  min {min(values):.2f}  "
              f"max {max(values):.2f}  distributed {versions[side]}")


if __name__ == "__main__":
    main()
