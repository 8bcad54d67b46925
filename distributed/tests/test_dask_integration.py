"""dask (2026.8) on our client the way it runs on dask.distributed.

Which scheduler dask picks inside tasks, futures inside dask graphs,
``dask.annotate`` on materialized graphs, dataframes made from futures, our
Lock as dask's scheduler lock, and the one clear error for p2p shuffles.
"""
import os
import time

import pytest

dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")
db = pytest.importorskip("dask.bag")
dd = pytest.importorskip("dask.dataframe")
np = pytest.importorskip("numpy")
pd = pytest.importorskip("pandas")

from dask import delayed  # noqa: E402
from dask.utils import get_scheduler_lock  # noqa: E402

from distributed import Client, futures_of, get_client, wait  # noqa: E402
from distributed.coordination.lock import Lock  # noqa: E402
from distributed.shuffle import MESSAGE, P2PUnavailableError  # noqa: E402
from distributed.utils_test import cluster, gen_cluster, inc  # noqa: E402


class _Transitions:
    """Scheduler plugin: what each task looked like when it started."""

    def __init__(self, scheduler):
        self.scheduler = scheduler
        self.started: dict = {}
        self.in_memory: set = set()

    def transition(self, key, start, finish, **kwargs):
        if finish == "processing":
            ts = self.scheduler.tasks[key]
            self.started[key] = (ts.retries, ts.priority[0], ts.worker_restrictions, ts.loose_restrictions,
                                 ts.resource_restrictions)
        elif finish == "memory":
            self.in_memory.add(key)


def _watch(s) -> _Transitions:
    plugin = _Transitions(s)
    s.state.plugins.append(plugin)
    return plugin


# ----------------------------------------------------------------------
# 1. dask.compute / persist inside tasks use the worker's client
# ----------------------------------------------------------------------


def _compute_inside(n):
    client = get_client()
    schedule = dask.base.get_scheduler()
    assert getattr(schedule, "__self__", None) is client, schedule
    x = da.arange(n, chunks=5).sum()
    (persisted,) = dask.persist(da.arange(n, chunks=5))
    assert len(futures_of(persisted)) == -(-n // 5)  # on the cluster, not in this thread
    return int(x.compute()), int(dask.compute(x)[0]), int(persisted.sum().compute())


@gen_cluster(client=True, nthreads=[("127.0.0.1", 1)])
async def test_dask_compute_inside_a_task_uses_the_workers_client(c, s, a):
    watch = _watch(s)
    # One worker with one thread: the task gives its slot up while it waits.
    assert await c.submit(_compute_inside, 20) == (190, 190, 190)
    assert any("arange" in str(k) for k in watch.in_memory)


def _total(x):
    return int(x.sum().compute())


@gen_cluster(client=True, nthreads=[("127.0.0.1", 1)])
async def test_persisted_collection_passed_into_a_task_computes_there(c, s, a):
    x = c.persist(da.arange(100, chunks=10))
    await wait(x)
    watch = _watch(s)
    # its futures arrive bound to the worker's client, which finds them held
    assert await c.submit(_total, x) == 4950
    assert not {f.key for f in futures_of(x)} & set(watch.started)
    assert await c.submit(_total, da.arange(10, chunks=5)) == 45


def test_dask_compute_and_persist_inside_tasks_in_worker_processes(loop):
    with cluster(nworkers=1) as (s, [a]):
        with Client(s["address"], loop=loop) as c:
            assert c.submit(_compute_inside, 20).result() == (190, 190, 190)
            # several at once, each waiting on the single worker thread's work
            assert c.gather(c.map(_compute_inside, [10, 15, 20])) == [(45,) * 3, (105,) * 3, (190,) * 3]


def test_named_schedulers_and_the_client_with_dask(loop):
    x = da.arange(100, chunks=10).sum()
    with cluster(nworkers=1) as (s, [a]):
        with Client(s["address"], loop=loop) as c:
            assert Client.current() is c
            # a named local scheduler still runs locally (dask asks Client.current first)
            assert x.compute(scheduler="sync") == 4950
            assert x.compute(scheduler="threads") == 4950
            assert dask.base.get_scheduler(scheduler="distributed") == c.get
            assert dask.compute(x, scheduler="distributed")[0] == 4950
    with pytest.raises(ValueError):
        Client.current(allow_global=False)


# ----------------------------------------------------------------------
# 2. futures inside dask graphs
# ----------------------------------------------------------------------


@gen_cluster(client=True)
async def test_futures_inside_delayed_and_nested_arguments(c, s, a, b):
    watch = _watch(s)
    f = c.submit(inc, 1)
    assert await c.compute(delayed(inc)(f)) == 3
    assert await c.compute(delayed(sum)([f, f, 1])) == 5
    assert await c.compute(delayed(lambda d: d["a"] + d["b"][0][1])({"a": f, "b": [(0, f)]})) == 4
    assert await c.compute(delayed(lambda *xs: sum(xs))(*[f] * 3)) == 6
    # the future's task ran once; the graphs used its result
    assert list(watch.started).count(f.key) == 1


@gen_cluster(client=True)
async def test_arrays_from_futures_and_delayed_futures(c, s, a, b):
    f = c.submit(np.arange, 10)
    x = da.from_delayed(delayed(f), shape=(10,), dtype=int)
    assert await c.compute(x.sum()) == 45
    y = da.from_delayed(f, shape=(10,), dtype=int)
    assert (await c.compute(y * 2)).tolist() == list(range(0, 20, 2))
    parts = [da.from_delayed(c.submit(np.full, 5, i), shape=(5,), dtype=int) for i in range(3)]
    assert (await c.compute(da.concatenate(parts))).tolist() == [0] * 5 + [1] * 5 + [2] * 5


@gen_cluster(client=True)
async def test_persisted_collection_feeds_new_graphs(c, s, a, b):
    x = c.persist(da.arange(100, chunks=10))
    await wait(x)
    held = {f.key for f in futures_of(x)}
    watch = _watch(s)
    y = (x + 1) * 2
    assert await c.compute(y.sum()) == 2 * sum(range(1, 101))
    z = c.persist(y)
    await wait(z)
    assert await c.compute(z.mean()) == np.mean((np.arange(100) + 1) * 2)
    assert await c.compute(delayed(sum)(futures_of(z)[:2])) is not None
    assert not held & set(watch.started), "persisted chunks were computed again"
    assert all(s.tasks[k].state == "memory" for k in held)


@gen_cluster(client=True)
async def test_raw_graph_with_futures_as_values(c, s, a, b):
    f = c.submit(inc, 1)
    dsk = {"a": (inc, f), "b": (sum, [f, "a", 10]), "c": f, "d": (lambda d: d["x"] * 2, {"x": f})}
    assert await c.get(dsk, ["a", "b", "c", "d"]) == [3, 15, 2, 4]


def test_persist_method_then_more_operations(loop):
    with cluster() as (s, [a, b]):
        with Client(s["address"], loop=loop):
            x = da.arange(100, chunks=10).persist()
            assert len(futures_of(x)) == 10
            assert (x + 1).sum().compute() == 5050
            assert dask.compute(x.max(), (x * 2).sum()) == (99, 9900)
            (y,) = dask.persist(x[::2] + 1)
            assert len(futures_of(y)) == 10
            assert y.sum().compute() == sum(range(1, 100, 2))


# ----------------------------------------------------------------------
# 3. dask.annotate per task, after the graph is materialized
# ----------------------------------------------------------------------


@gen_cluster(client=True, nthreads=[("127.0.0.1", 1, {"resources": {"A": 2}}), ("127.0.0.1", 1)])
async def test_annotations_apply_to_every_task_of_blockwise_arrays(c, s, a, b):
    with dask.annotate(retries=2, priority=5, workers=[a.address], allow_other_workers=True, resources={"A": 1}):
        x = da.ones((20, 20), chunks=5) + 1
    y = c.persist(x * 2)  # the unannotated multiply is fused with them, blockwise
    await wait(y)
    keys = [f.key for f in futures_of(y)]
    assert len(keys) == 16
    for k in keys:
        ts = s.tasks[k]
        assert ts.retries == 2 and ts.priority[0] == -5
        assert ts.worker_restrictions == {a.address} and ts.loose_restrictions
        assert ts.resource_restrictions == {"A": 1}
        assert k in a.data  # only a has resource A
    # the same through compute and through dask.compute(scheduler=client.get)
    watch = _watch(s)
    assert await c.compute((x * 3).sum()) == 20 * 20 * 6
    annotated = [v for v in watch.started.values() if v[0] == 2]
    assert len(annotated) == 16
    assert all(v[1:] == (-5, {a.address}, True, {"A": 1}) for v in annotated)


@gen_cluster(client=True)
async def test_annotations_on_bags_delayed_and_callables(c, s, a, b):
    watch = _watch(s)
    with dask.annotate(retries=1, priority=3):
        bag = db.from_sequence(range(8), npartitions=4).map(inc)
        d = delayed(inc, pure=False)(1)
    assert await c.compute(bag.sum()) == sum(range(1, 9))
    # bag tasks are fused; the fused task carries the annotations of its parts
    assert len([v for v in watch.started.values() if v[:2] == (1, -3)]) == 4
    f = c.compute(d)
    assert await f == 2
    assert watch.started[d.key][:2] == (1, -3)

    with dask.annotate(priority=lambda key: key[1]):
        ones = da.ones(20, chunks=5)
    p = c.persist(ones)
    await wait(p)
    assert sorted(-s.tasks[f.key].priority[0] for f in futures_of(p)) == [0, 1, 2, 3]


_CALLS: list = []


def _flaky_double(x):
    _CALLS.append(1)
    if len(_CALLS) <= 2:
        raise ZeroDivisionError(f"failure {len(_CALLS)}")
    return 2 * x


@gen_cluster(client=True, nthreads=[("127.0.0.1", 1)])
async def test_retries_annotation_is_honoured_on_fused_layers(c, s, a):
    _CALLS.clear()
    x = da.ones(10, chunks=10)
    with dask.annotate(retries=2):
        y = x.map_blocks(_flaky_double, meta=np.array((), dtype=float))
    with dask.annotate(retries=0):  # fused with the layer above: the higher count wins
        z = y.map_blocks(lambda v: 2 * v, meta=np.array((), dtype=float))
    assert (await c.compute(z)).tolist() == [4.0] * 10


@gen_cluster(client=True)
async def test_annotation_we_cannot_honour_raises_and_submits_nothing(c, s, a, b):
    with dask.annotate(colour="red"):
        x = da.ones(10, chunks=5) + 1
    with pytest.raises(ValueError, match="colour=.*cannot be honoured"):
        c.compute(x)
    with pytest.raises(ValueError, match="colour"):
        c.persist(x)
    with pytest.raises(ValueError, match="colour"):
        c.get(x.__dask_graph__(), x.__dask_keys__())
    with dask.annotate(retries=1.5):
        y = da.ones(10, chunks=5) + 2
    with pytest.raises(TypeError, match="retries"):
        c.compute(y)
    with dask.annotate(resources={"GPU": "one"}):
        z = delayed(inc)(3)
    with pytest.raises(TypeError, match="resources"):
        c.compute(z)
    f = c.submit(inc, 1)
    assert await f == 2  # the stream is in order: whatever was sent before has arrived
    assert set(s.tasks) == {f.key}
    assert set(c.futures) == {f.key}


# ----------------------------------------------------------------------
# 4. dataframes made from futures
# ----------------------------------------------------------------------


def _frame(i):
    return pd.DataFrame({"x": np.arange(5) + 5 * i, "y": np.arange(5.0)})


@gen_cluster(client=True)
async def test_dataframes_from_futures(c, s, a, b):
    futures = c.map(_frame, range(4))
    df = dd.from_delayed(futures, meta=_frame(0))
    assert df.npartitions == 4
    assert await c.compute(df.x.sum()) == sum(range(20))
    df2 = dd.from_delayed([delayed(f) for f in futures], meta=_frame(0))
    assert (await c.compute(df2)).x.tolist() == list(range(20))
    parts = c.compute(df.to_delayed())
    assert [len(p) for p in await c.gather(parts)] == [5] * 4
    p = c.persist(df.assign(z=df.x * 2))
    await wait(p)
    held = futures_of(p)
    assert len(held) == 4 and all(s.tasks[f.key].state == "memory" for f in held)
    assert await c.compute(p.z.sum()) == 2 * sum(range(20))


def test_dataframe_persist_and_from_delayed_without_meta(loop):
    with cluster() as (s, [a, b]):
        with Client(s["address"], loop=loop) as c:
            futures = c.map(_frame, range(3))
            df = dd.from_delayed(futures)  # dask computes the meta on our client
            assert df.x.sum().compute() == sum(range(15))
            p = df.persist()
            assert len(futures_of(p)) == 3
            assert p.y.max().compute() == 4.0
            assert len(c.compute(p.to_delayed(), sync=True)) == 3


# ----------------------------------------------------------------------
# 5. our Lock as dask's scheduler lock
# ----------------------------------------------------------------------


class _SingleWriterTarget:
    """A ``da.store`` target in a .npy file that fails if two tasks write at
    once (across processes): each write holds a marker file meanwhile."""

    def __init__(self, path):
        self.path = path

    def __setitem__(self, index, value):
        marker = self.path + ".writing"
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        os.close(fd)
        try:
            out = np.lib.format.open_memmap(self.path, mode="r+")
            out[index] = value
            out.flush()
            del out
            time.sleep(0.01)  # the write's own duration, while the lock is held
        finally:
            os.remove(marker)


def test_store_with_lock_true_uses_our_lock_across_workers(loop, tmp_path):
    path = str(tmp_path / "out.npy")
    with cluster() as (s, [a, b]):
        with Client(s["address"], loop=loop) as c:
            x = da.arange(200, chunks=10)
            assert isinstance(get_scheduler_lock(x, scheduler=c.get), Lock)
            assert isinstance(get_scheduler_lock(x), Lock)  # the default client
            np.lib.format.open_memmap(path, mode="w+", dtype=x.dtype, shape=x.shape).flush()
            da.store(x, _SingleWriterTarget(path), lock=True)
            assert np.load(path).tolist() == list(range(200))
            stored = da.store(x + 1, _SingleWriterTarget(path), lock=True, compute=False)
            c.compute(stored, sync=True)
            assert np.load(path).tolist() == list(range(1, 201))
            assert not c.run_on_scheduler(lambda dask_scheduler: dask_scheduler.extensions["locks"].ids)
    # without a client dask keeps its own lock
    assert not isinstance(get_scheduler_lock(x, scheduler="sync"), Lock)


# ----------------------------------------------------------------------
# 6. p2p shuffles: one clear error; task-based shuffles keep working
# ----------------------------------------------------------------------


def _frames():
    df = dd.from_pandas(pd.DataFrame({"k": np.arange(200) % 7, "v": np.arange(200.0)}), npartitions=4)
    other = dd.from_pandas(pd.DataFrame({"k": range(7), "name": list("abcdefg")}), npartitions=2)
    return df, other


@gen_cluster(client=True)
async def test_p2p_shuffles_and_rechunks_say_they_are_not_available(c, s, a, b):
    df, other = _frames()
    x = da.ones((40, 40), chunks=10)
    with pytest.raises(P2PUnavailableError) as info:
        df.shuffle("k", shuffle_method="p2p")
    assert str(info.value) == MESSAGE and "'tasks'" in MESSAGE
    with pytest.raises(P2PUnavailableError):
        c.compute(x.rechunk((40, 1), method="p2p"))
    with dask.config.set({"dataframe.shuffle.method": "p2p"}):
        with pytest.raises(NotImplementedError, match="p2p"):
            c.compute(df.merge(other, on="k"))
        with pytest.raises(P2PUnavailableError):
            c.compute(df.shuffle("k"))
    with dask.config.set({"array.rechunk.method": "p2p"}):
        with pytest.raises(P2PUnavailableError):
            c.compute(x.rechunk((40, 1)))
    assert not c.futures and not s.tasks

    # task-based: the default with our client
    assert dask.config.get("dataframe.shuffle.method") == "tasks"
    shuffled = await c.compute(df.shuffle("k"))
    assert sorted(shuffled.v) == list(np.arange(200.0))
    merged = await c.compute(df.merge(other, on="k"))
    assert len(merged) == 200 and set(merged.name) == set("abcdefg")
    assert (await c.compute(x.rechunk((40, 1)))).shape == (40, 40)
    with dask.config.set({"dataframe.shuffle.method": "p2p"}):
        assert len(await c.compute(df.shuffle("k", shuffle_method="tasks"))) == 200


def test_p2p_imports_fail_clearly_and_probes_fall_back():
    import importlib

    import distributed.shuffle

    with pytest.raises(P2PUnavailableError, match="task-based"):
        from distributed.shuffle import rechunk_p2p  # noqa: F401
    for module in ("distributed.shuffle._core", "distributed.shuffle._merge", "distributed.shuffle._arrow"):
        with pytest.raises(ModuleNotFoundError, match="not available"):
            importlib.import_module(module)
    # tools probing the module for other names see an ordinary module
    assert not hasattr(distributed.shuffle, "setup_module")
    assert issubclass(P2PUnavailableError, (ImportError, NotImplementedError))

