"""Estimate pi on a local cluster: a first real job with ``distributed``.

Run it with::

    python examples/quickstart.py

``Client()`` with no address starts a local cluster (a scheduler in this
process and worker processes bound to 127.0.0.1) and closes it again when
the ``with`` block ends.  The job throws random darts at the unit square in
many independent chunks (``client.map``), then adds up the hits in one more
task that depends on all of them (``client.submit`` with futures as its
arguments).  Only the result of that last task travels back here.

Worker processes are started with the "spawn" method, so they import this
file afresh: everything that starts the cluster must stay under
``if __name__ == "__main__":``.  The task functions live in ``__main__``;
they are pickled by value (cloudpickle) and need not be importable on the
workers.
"""

from __future__ import annotations

import math
import random
import time

from distributed import Client

CHUNKS = 40
SAMPLES_PER_CHUNK = 200_000
SEED = 2024


def count_hits(seed: int, samples: int = SAMPLES_PER_CHUNK) -> int:
    """How many of ``samples`` random points of the unit square fall inside
    the quarter circle of radius 1.

    Each chunk has its own seed, so the chunks draw different points and a
    rerun (or a recomputation after a worker is lost) gives the same answer.
    """
    rng = random.Random(seed)
    rand = rng.random
    hits = 0
    for _ in range(samples):
        x = rand()
        y = rand()
        if x * x + y * y <= 1.0:
            hits += 1
    return hits


def estimate_pi(hits: list[int], samples_per_chunk: int) -> float:
    """Four times the fraction of points that landed inside."""
    return 4.0 * sum(hits) / (len(hits) * samples_per_chunk)


def main() -> None:
    with Client() as client:
        info = client.scheduler_info()
        workers = info["workers"]
        nthreads = sum(w["nthreads"] for w in workers.values())
        print(f"Cluster: scheduler at {info['address']}, "
              f"{len(workers)} workers, {nthreads} threads")

        start = time.perf_counter()
        seeds = [SEED * 1_000 + i for i in range(CHUNKS)]
        hits = client.map(count_hits, seeds)               # one task per chunk
        total = client.submit(estimate_pi, hits, SAMPLES_PER_CHUNK)  # depends on all
        pi = total.result()
        elapsed = time.perf_counter() - start

        samples = CHUNKS * SAMPLES_PER_CHUNK
        print(f"pi ~= {pi:.6f} (error {abs(pi - math.pi):.1e}) "
              f"from {samples:,} samples in {CHUNKS} tasks")
        print(f"Wall time of the job: {elapsed:.2f} s "
              f"({samples / elapsed / 1e6:.1f} M samples/s)")


if __name__ == "__main__":
    main()
