"""Where the scheduler's memory per held task goes (tracemalloc), for the
shape of the yardstick's scheduler_memory section: N/2 leaves (inc, i) and
N/2 (add, leaf_i, leaf_i+1), all N keys held.

    python benchmarks/profile_scheduler_memory.py 20000

Prints bytes per task allocated under the scheduler, by source line.
Everything runs in this process, so only allocations made by scheduler
code (or by decoding messages for it) are counted.
"""
import asyncio, tracemalloc, gc, sys
from distributed import Scheduler, Worker, Client, wait
from distributed.utils_test import inc, add

N = int(sys.argv[1]) if len(sys.argv) > 1 else 20000

async def main():
    async with Scheduler(port=0) as s, Worker(s.address, nthreads=1) as a, Worker(s.address, nthreads=1) as b:
        async with Client(s.address, asynchronous=True) as c:
            await c.submit(inc, 1)
            half = N // 2
            dsk = {}
            for i in range(half):
                dsk[f"a-{i}"] = (inc, i)
            for i in range(half):
                dsk[f"b-{i}"] = (add, f"a-{i}", f"a-{(i + 1) % half}")
            gc.collect()
            tracemalloc.start(25)
            snap0 = tracemalloc.take_snapshot()
            futs = c.get(dsk, list(dsk), sync=False)
            await wait(futs)
            gc.collect()
            snap1 = tracemalloc.take_snapshot()
            stats = snap1.compare_to(snap0, "traceback")
            sched = 0; byfile = {}
            for st in stats:
                frames = [f.filename for f in st.traceback]
                where = None
                for f in st.traceback:
                    if "/distributed/scheduler/" in f.filename or "/distributed/core.py" in f.filename and "scheduler" in str(st.traceback):
                        where = f"{f.filename.split('/distributed/')[-1]}:{f.lineno}"
                        break
                if where is None:
                    continue
                sched += st.size_diff
                # innermost distributed frame
                inner = next((f for f in reversed(list(st.traceback)) if "/distributed/" in f.filename), st.traceback[0])
                k = f"{inner.filename.split('/')[-1]}:{inner.lineno}"
                byfile[k] = byfile.get(k, 0) + st.size_diff
            print("scheduler bytes/task", sched / N)
            for k, v in sorted(byfile.items(), key=lambda kv: -kv[1])[:25]:
                print(f"{v/N:8.1f} {k}")
            del futs

asyncio.run(main())
