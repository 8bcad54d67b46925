"""Where the scheduler's memory per held task goes (tracemalloc), for the
shape of the yardstick's scheduler_memory section: N/2 leaves (inc, i) and
N/2 (add, leaf_i, leaf_i+1), all N keys held.

    python benchmarks/profile_scheduler_memory.py 20000

Everything runs in this process; an allocation counts for the scheduler
when its traceback goes through ``distributed/scheduler/`` and not through
``distributed/worker/`` (workers decode the same task payloads).  Prints
bytes per task, then the largest source lines.
"""
from __future__ import annotations

import asyncio
import gc
import sys
import tracemalloc

from distributed import Client, Scheduler, Worker, wait
from distributed.utils_test import add, inc


def _owner(trace) -> str | None:
    files = [frame.filename for frame in trace]
    if any("/distributed/worker/" in f for f in files):
        return None
    if not any("/distributed/scheduler/" in f for f in files):
        return None
    inner = next((f for f in reversed(list(trace)) if "/distributed/" in f.filename), trace[0])
    return f"{inner.filename.split('/distributed/')[-1]}:{inner.lineno}"


async def main(n: int) -> None:
    async with Scheduler(port=0) as s, Worker(s.address, nthreads=1), Worker(s.address, nthreads=1):
        async with Client(s.address, asynchronous=True) as c:
            await c.submit(inc, 1)
            half = n // 2
            dsk = {f"a-{i}": (inc, i) for i in range(half)}
            dsk.update({f"b-{i}": (add, f"a-{i}", f"a-{(i + 1) % half}") for i in range(half)})
            gc.collect()
            tracemalloc.start(25)
            before = tracemalloc.take_snapshot()
            futures = c.get(dsk, list(dsk), sync=False)
            await wait(futures)
            gc.collect()
            after = tracemalloc.take_snapshot()
            by_line: dict[str, int] = {}
            for stat in after.compare_to(before, "traceback"):
                owner = _owner(stat.traceback)
                if owner is not None:
                    by_line[owner] = by_line.get(owner, 0) + stat.size_diff
            print(f"scheduler: {sum(by_line.values()) / n:.0f} bytes per held task")
            for line, size in sorted(by_line.items(), key=lambda kv: -kv[1])[:20]:
                print(f"{size / n:8.1f}  {line}")
            del futures


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 20_000))
