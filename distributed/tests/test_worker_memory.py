"""Worker memory management: spilling results to disk, the memory monitor, pausing.

Most tests run the scheduler and workers in this process (``gen_cluster``).
The memory monitor is driven by replacing ``worker.process_memory`` on the
worker instance with a ``FakeRSS``, so no test depends on how large this
process really is; workers whose monitor is not under test get limits and
fractions that keep it quiet.  Conditions are waited for, never slept on.
"""

from __future__ import annotations

import math
import os
import tempfile
import threading
import uuid
from collections.abc import MutableMapping

import pytest

from distributed import Client, config, wait
from distributed.core import Status
from distributed.spill import SpillBuffer
from distributed.utils import sizeof
from distributed.utils_test import async_wait_for, cluster, gen_cluster, inc
from distributed.worker.server import Worker

VALUE_SIZE = 200_000
NBYTES = sizeof(b"x" * VALUE_SIZE)  # what the worker records for one value

#: Only the target applies: a 1 MB limit keeps 600 kB (3 values) in memory,
#: and neither the real size of the process nor the monitor gets involved.
TARGET_ONLY = {
    "memory_limit": "1 MB",
    "memory_spill_fraction": False,
    "memory_pause_fraction": False,
}

#: A limit the values never reach (target 6 MB), a monitor that checks often.
MONITORED = {
    "memory_limit": "10 MB",
    "memory_target_fraction": 0.6,
    "memory_spill_fraction": 0.7,
    "memory_pause_fraction": False,
    "memory_monitor_interval": "10ms",
}

#: A monitor that can pause; the fake RSS decides when.
PAUSABLE = {
    "memory_limit": "2 GB",
    "memory_monitor_interval": "10ms",
}


# ----------------------------------------------------------------------
# Helpers run as tasks (workers are in this process, except in cluster())
# ----------------------------------------------------------------------


def make_bytes(i, size=VALUE_SIZE):
    """A distinct value per ``i``: ``size`` copies of one byte."""
    return bytes([i % 256]) * size


def is_value(value, i):
    return value == make_bytes(i)


def total_size(*values):
    return sum(len(v) for v in values)


_events: dict[str, threading.Event] = {}


def new_event() -> str:
    name = uuid.uuid4().hex
    _events[name] = threading.Event()
    return name


def block_on(name, x=None):
    """Wait (bounded) until the test sets event ``name``; returns ``x``."""
    _events[name].wait(10)
    return x


def spill_info(dask_worker):
    """Run on a worker: (spilled count, storage directory, files in it)."""
    data = dask_worker.data
    return data.spilled_count, data.directory, sorted(os.listdir(data.directory))


class FakeRSS:
    """Stands in for ``Worker.process_memory``: returns ``rss`` (after the
    readings in ``once``, each returned once) and counts its calls."""

    def __init__(self, rss: int = 0):
        self.rss = rss
        self.once: list[int] = []
        self.calls = 0

    def __call__(self) -> int:
        self.calls += 1
        return self.once.pop(0) if self.once else self.rss


def dask_worker_dirs() -> set[str]:
    tmp = tempfile.gettempdir()
    return {d for d in os.listdir(tmp) if d.startswith("dask-worker-space-")}


async def wait_for_monitor_runs(fake: FakeRSS, n: int = 3) -> None:
    """Return once the memory monitor has read the fake RSS ``n`` more times."""
    target = fake.calls + n
    await async_wait_for(lambda: fake.calls >= target, timeout=10)


# ----------------------------------------------------------------------
# Spilling past the target
# ----------------------------------------------------------------------


@gen_cluster(client=True, nthreads=[("127.0.0.1", 1)], worker_kwargs=TARGET_ONLY)
async def test_results_past_target_spill_to_disk_and_gather_exactly(c, s, a):
    assert isinstance(a.data, SpillBuffer)
    assert a.data.target == 600_000
    assert "memory" not in a.periodic_callbacks  # neither spill nor pause fraction
    storage = os.path.join(a.local_directory, "storage")
    assert a.data.directory == storage

    futures = c.map(make_bytes, range(10))
    assert await c.gather(futures) == [make_bytes(i) for i in range(10)]

    assert a.data.spilled_count > 0
    assert a.data.memory_bytes <= a.data.target
    assert a.data.spilled_bytes == a.data.spilled_count * NBYTES
    paths = list(a.data.slow.values())
    assert sorted(os.listdir(storage)) == sorted(os.path.basename(p) for p in paths)

    await a.close()
    assert not os.path.exists(storage)
    assert not any(os.path.exists(p) for p in paths)


@gen_cluster(client=True, nthreads=[])
async def test_close_removes_storage_but_keeps_given_local_directory(c, s, tmp_path):
    local = str(tmp_path / "worker")
    async with Worker(s.address, nthreads=1, local_directory=local, validate=True, **TARGET_ONLY) as w:
        futures = c.map(make_bytes, range(10))
        assert await c.gather(futures) == [make_bytes(i) for i in range(10)]
        storage = os.path.join(local, "storage")
        assert w.data.spilled_count > 0
        assert len(os.listdir(storage)) == w.data.spilled_count
    assert not os.path.exists(storage)
    assert os.path.isdir(local)  # the caller's directory stays


@gen_cluster(client=True, nthreads=[("127.0.0.1", 1)], worker_kwargs=TARGET_ONLY)
async def test_dependent_tasks_read_spilled_inputs_back(c, s, a):
    futures = c.map(make_bytes, range(10))
    await wait(futures)
    spilled = set(a.data.slow)
    assert len(spilled) >= 7  # 10 values, at most 3 fit under the target
    unspilled_before = a.data.stats["unspill_count"]

    lengths = c.map(len, futures)
    checks = c.map(is_value, futures, range(10))
    total = c.submit(total_size, *futures)  # every input at once, most from disk

    assert await c.gather(lengths) == [VALUE_SIZE] * 10
    assert await c.gather(checks) == [True] * 10
    assert await total == 10 * VALUE_SIZE
    assert a.data.stats["unspill_count"] > unspilled_before
    assert a.data.memory_bytes <= a.data.target


@gen_cluster(client=True, nthreads=[("127.0.0.1", 1, TARGET_ONLY), ("127.0.0.1", 1, {"memory_limit": 0})])
async def test_peer_fetches_spilled_values(c, s, a, b):
    futures = c.map(make_bytes, range(10), workers=[a.address])
    await wait(futures)
    assert a.data.spilled_count > 0
    checks = c.map(is_value, futures, range(10), workers=[b.address])
    assert await c.gather(checks) == [True] * 10


@gen_cluster(client=True, nthreads=[("127.0.0.1", 1)], worker_kwargs=TARGET_ONLY)
async def test_worker_data_is_a_mutable_mapping_over_memory_and_disk(c, s, a):
    futures = c.map(make_bytes, range(10))
    await wait(futures)
    index = {f.key: i for i, f in enumerate(futures)}

    assert isinstance(a.data, MutableMapping)
    assert len(a.data) == 10
    assert set(a.data) == set(index)
    assert set(a.data.keys()) == set(a.keys())

    key = next(iter(a.data.slow))
    assert key in a.data
    assert a.data[key] == make_bytes(index[key])  # read back from disk
    assert key in a.data.fast
    assert a.data.get("no-such-key") is None
    assert "no-such-key" not in a.data
    for k, i in index.items():
        assert a.data[k] == make_bytes(i)
    assert a.data.memory_bytes <= a.data.target


@gen_cluster(client=True, nthreads=[("127.0.0.1", 1)], worker_kwargs=TARGET_ONLY)
async def test_releasing_spilled_keys_removes_files_without_reading_them(c, s, a):
    futures = c.map(make_bytes, range(10))
    await wait(futures)
    assert a.data.spilled_count > 0
    storage = a.data.directory
    unspilled_before = a.data.stats["unspill_count"]

    keys = [f.key for f in futures]
    del futures
    await async_wait_for(lambda: not any(k in a.data for k in keys), timeout=10)

    assert os.listdir(storage) == []
    assert a.data.spilled_bytes == a.data.memory_bytes == 0
    # Forgetting a value must not read it from disk first.
    assert a.data.stats["unspill_count"] == unspilled_before


@gen_cluster(client=True, nthreads=[("127.0.0.1", 1)], worker_kwargs={**TARGET_ONLY, "max_spill": "500 kB"})
async def test_max_spill_caps_disk_use_and_keeps_the_rest_in_memory(c, s, a):
    assert a.data.max_spill == 500_000
    futures = c.map(make_bytes, range(10))
    assert await c.gather(futures) == [make_bytes(i) for i in range(10)]
    assert 0 < a.data.spilled_bytes <= 500_000
    assert a.data.memory_bytes > a.data.target  # nothing is dropped
    assert len(a.data) == 10


# ----------------------------------------------------------------------
# The memory monitor
# ----------------------------------------------------------------------


@gen_cluster(client=True, nthreads=[("127.0.0.1", 1)], worker_kwargs=MONITORED)
async def test_monitor_spills_while_process_memory_is_high(c, s, a):
    fake = a.process_memory = FakeRSS(0)
    assert "memory" in a.periodic_callbacks
    futures = c.map(make_bytes, range(10))
    await wait(futures)
    await wait_for_monitor_runs(fake)
    assert a.data.spilled_count == 0  # 2 MB is well under the 6 MB target

    fake.rss = int(0.75 * a.memory_limit)
    await async_wait_for(lambda: a.data.spilled_count == 10, timeout=10)
    assert a.status == Status.running  # no pause fraction

    fake.rss = 0
    assert await c.gather(futures) == [make_bytes(i) for i in range(10)]
    assert a.data.spilled_count == 0  # read back, and under the target they stay
    await wait_for_monitor_runs(fake)
    assert a.data.spilled_count == 0


@gen_cluster(client=True, nthreads=[("127.0.0.1", 1)], worker_kwargs=MONITORED)
async def test_monitor_spills_least_recently_used_until_under_target(c, s, a):
    fake = a.process_memory = FakeRSS(0)
    futures = c.map(make_bytes, range(10))
    await wait(futures)
    order = [f.key for f in reversed(futures)]
    for key in order:  # set the LRU order: futures[-1] is now the coldest
        a.data[key]
    assert a.data.spilled_count == 0

    limit = a.memory_limit
    high = int(a.memory_spill_fraction * limit) + 1
    goal = a.memory_target_fraction * limit
    expected = math.ceil((high - goal) / NBYTES)
    assert 0 < expected < 10
    fake.once = [high]  # one high reading, then low again
    await async_wait_for(lambda: not fake.once, timeout=10)
    await wait_for_monitor_runs(fake)

    assert list(a.data.slow) == order[:expected]
    assert await c.gather(futures) == [make_bytes(i) for i in range(10)]


@gen_cluster(
    client=True, nthreads=[("127.0.0.1", 1)], worker_kwargs={**MONITORED, "memory_target_fraction": False}
)
async def test_without_target_only_the_monitor_spills(c, s, a):
    fake = a.process_memory = FakeRSS(0)
    assert isinstance(a.data, SpillBuffer)
    assert a.data.target == 0  # no automatic spilling on set
    futures = c.map(make_bytes, range(10))
    await wait(futures)
    assert a.data.spilled_count == 0

    fake.once = [int(0.75 * a.memory_limit)]  # goal is then the spill fraction
    await async_wait_for(lambda: not fake.once, timeout=10)
    await wait_for_monitor_runs(fake)
    expected = math.ceil((0.75 - 0.7) * a.memory_limit / NBYTES)
    assert a.data.spilled_count == expected
    assert await c.gather(futures) == [make_bytes(i) for i in range(10)]


# ----------------------------------------------------------------------
# Pausing
# ----------------------------------------------------------------------


@gen_cluster(client=True, nthreads=[("127.0.0.1", 1), ("127.0.0.1", 1)], worker_kwargs=PAUSABLE)
async def test_paused_worker_gets_no_new_tasks_until_it_resumes(c, s, a, b):
    fake = a.process_memory = FakeRSS(0)
    b.process_memory = FakeRSS(0)
    x = c.submit(inc, 1, workers=[a.address])
    assert await x == 2

    fake.rss = int(0.9 * a.memory_limit)
    await async_wait_for(lambda: a.status == Status.paused, timeout=10)
    await async_wait_for(lambda: s.workers[a.address].status == "paused", timeout=10)

    futures = c.map(inc, range(10, 20))  # not inc(1): a holds that one
    assert await c.gather(futures) == list(range(11, 21))
    assert set(map(tuple, (await c.who_has(futures)).values())) == {(b.address,)}

    restricted = c.submit(inc, 100, workers=[a.address])
    await async_wait_for(
        lambda: restricted.key in s.tasks and s.tasks[restricted.key].state == "no-worker", timeout=10
    )
    assert restricted.key not in a.tasks

    fake.rss = 0
    await async_wait_for(lambda: a.status == Status.running, timeout=10)
    await async_wait_for(lambda: s.workers[a.address].status == "running", timeout=10)
    assert await restricted == 101
    assert (await c.who_has([restricted]))[restricted.key] == [a.address]


@gen_cluster(client=True, nthreads=[("127.0.0.1", 1), ("127.0.0.1", 1)], worker_kwargs=PAUSABLE)
async def test_paused_worker_still_serves_its_data(c, s, a, b):
    fake = a.process_memory = FakeRSS(0)
    b.process_memory = FakeRSS(0)
    x = c.submit(make_bytes, 1, workers=[a.address])
    await wait(x)

    fake.rss = int(0.9 * a.memory_limit)
    await async_wait_for(lambda: s.workers[a.address].status == "paused", timeout=10)
    y = c.submit(is_value, x, 1, workers=[b.address])
    assert await y is True
    assert x.key in b.data
    assert await c.gather(x) == make_bytes(1)
    assert a.status == Status.paused


@gen_cluster(client=True, nthreads=[("127.0.0.1", 1), ("127.0.0.1", 1)], worker_kwargs=PAUSABLE)
async def test_dependents_of_data_on_a_paused_worker_run_elsewhere(c, s, a, b):
    fake = a.process_memory = FakeRSS(0)
    b.process_memory = FakeRSS(0)
    x = c.submit(make_bytes, 1, workers=[a.address])
    await wait(x)

    fake.rss = int(0.9 * a.memory_limit)
    await async_wait_for(lambda: s.workers[a.address].status == "paused", timeout=10)

    # x's only holder is paused: the dependent must go to b, which fetches x.
    y = c.submit(is_value, x, 1)
    await async_wait_for(
        lambda: y.key in s.tasks and s.tasks[y.key].state in ("processing", "memory"), timeout=10
    )
    ts = s.tasks[y.key]
    assert ts.state == "memory" or ts.processing_on is s.workers[b.address], (
        f"{y.key} was assigned to {ts.processing_on}, not to the running worker {b.address}"
    )
    await async_wait_for(lambda: y.done(), timeout=10)
    assert await y is True
    assert (await c.who_has([y]))[y.key] == [b.address]


@gen_cluster(client=True, nthreads=[("127.0.0.1", 1)], worker_kwargs=PAUSABLE)
async def test_tasks_already_on_a_paused_worker_wait_for_resume(c, s, a):
    fake = a.process_memory = FakeRSS(0)
    event = new_event()
    blocker = c.submit(block_on, event, 0, workers=[a.address])
    queued = c.map(inc, range(3), workers=[a.address])
    await async_wait_for(
        lambda: (
            blocker.key in a.tasks
            and a.tasks[blocker.key].state == "executing"
            and any(f.key in a.tasks and a.tasks[f.key].state == "ready" for f in queued)
        ),
        timeout=10,
    )

    fake.rss = int(0.9 * a.memory_limit)
    await async_wait_for(lambda: a.status == Status.paused, timeout=10)
    _events[event].set()
    assert await blocker == 0
    ready = [f.key for f in queued if f.key in a.tasks and a.tasks[f.key].state == "ready"]
    assert ready  # still waiting: a paused worker starts nothing
    assert not a.state.executing
    assert not any(f.done() for f in queued)

    fake.rss = 0
    assert await c.gather(queued) == [1, 2, 3]
    assert a.status == Status.running


# ----------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------


@gen_cluster(client=True, nthreads=[("127.0.0.1", 1)], worker_kwargs={"memory_limit": 0})
async def test_no_memory_limit_means_plain_dict_and_no_monitor(c, s, a):
    assert a.memory_limit == 0
    assert type(a.data) is dict
    assert "memory" not in a.periodic_callbacks
    assert not os.path.exists(os.path.join(a.local_directory, "storage"))
    assert await c.submit(make_bytes, 1) == make_bytes(1)
    assert s.workers[a.address].memory_limit == 0


@gen_cluster(
    client=True,
    nthreads=[("127.0.0.1", 1)],
    worker_kwargs={**PAUSABLE, "memory_target_fraction": False, "memory_spill_fraction": False},
)
async def test_pause_works_without_spilling_and_data_stays_a_dict(c, s, a):
    fake = a.process_memory = FakeRSS(0)
    assert type(a.data) is dict
    assert "memory" in a.periodic_callbacks
    fake.rss = int(0.9 * a.memory_limit)
    await async_wait_for(lambda: s.workers[a.address].status == "paused", timeout=10)
    fake.rss = 0
    await async_wait_for(lambda: s.workers[a.address].status == "running", timeout=10)
    assert await c.submit(inc, 1) == 2


@gen_cluster(
    client=True,
    nthreads=[("127.0.0.1", 1)],
    config={
        "distributed.worker.memory.target": 0.5,
        "distributed.worker.memory.spill": False,
        "distributed.worker.memory.pause": False,
    },
    worker_kwargs={"memory_limit": "1 MB"},
)
async def test_fractions_default_to_configuration(c, s, a):
    assert a.memory_target_fraction == 0.5
    assert a.memory_spill_fraction == a.memory_pause_fraction == 0
    assert a.data.target == 500_000
    assert "memory" not in a.periodic_callbacks


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"memory_pause_fraction": 2}, "pause fraction must be between 0 and 1"),
        ({"memory_spill_fraction": -0.1}, "spill fraction must be between 0 and 1"),
        ({"memory_target_fraction": "abc"}, "target fraction must be a number or False"),
        ({"max_spill": "abc"}, "not a valid byte size"),
    ],
)
def test_bad_memory_settings_raise_before_anything_starts(kwargs, match):
    dirs_before = dask_worker_dirs()
    threads_before = set(threading.enumerate())
    instances_before = len(Worker._instances)
    with pytest.raises(ValueError, match=match):
        Worker("tcp://127.0.0.1:1", nthreads=1, memory_limit="1 GB", **kwargs)
    assert len(Worker._instances) == instances_before
    assert set(threading.enumerate()) == threads_before
    assert dask_worker_dirs() == dirs_before  # no temporary local directory left behind


def test_bad_fraction_in_configuration_names_the_setting():
    with config.set({"distributed.worker.memory.pause": "abc"}):
        with pytest.raises(ValueError, match="pause fraction") as info:
            Worker(
                "tcp://127.0.0.1:1", nthreads=1, memory_limit="1 GB", local_directory=tempfile.gettempdir()
            )
    assert config.env_var("distributed.worker.memory.pause") in str(info.value)


# ----------------------------------------------------------------------
# A worker process
# ----------------------------------------------------------------------


def test_worker_process_spills_and_removes_storage_on_close(loop, tmp_path):
    local = str(tmp_path / "worker")
    kwargs = {
        "memory_limit": "10 MB",  # the real process is far larger: no monitor
        "memory_target_fraction": 0.1,
        "memory_spill_fraction": False,
        "memory_pause_fraction": False,
        "local_directory": local,
    }
    with cluster(nworkers=1, worker_kwargs=kwargs) as (s, [a]):
        with Client(s["address"], loop=loop) as c:
            futures = c.map(make_bytes, range(10))
            assert c.gather(futures) == [make_bytes(i) for i in range(10)]
            count, storage, files = c.run(spill_info)[a["address"]]
            assert count >= 5  # 1 MB in memory: 4 values
            assert storage == os.path.join(local, "storage")
            assert len(files) == count

            a["proc"].terminate()  # SIGTERM: the worker closes cleanly
            a["proc"].join(10)
            assert a["proc"].exitcode is not None
            assert not os.path.exists(storage)
            assert os.path.isdir(local)  # the caller's directory stays
