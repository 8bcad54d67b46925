"""Dask collections on our cluster: same results as dask's sync scheduler."""
import pytest

dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")
np = pytest.importorskip("numpy")

from distributed import Client, futures_of, wait  # noqa: E402
from distributed.utils_test import cluster, gen_cluster, inc  # noqa: E402


def _sync(x):
    return dask.compute(x, scheduler="sync")[0]


@gen_cluster(client=True)
async def test_array_reduction_4000_square_in_250_chunks(c, s, a, b):
    x = da.random.RandomState(0).random((4000, 4000), chunks=250)
    expected = _sync(x.sum())
    assert np.isclose(await c.compute(x.sum()), expected)


@gen_cluster(client=True)
async def test_x_plus_transpose_mean_and_rechunk(c, s, a, b):
    x = da.random.RandomState(1).random((600, 600), chunks=150)
    y = (x + x.T).mean(axis=0)
    assert np.allclose(await c.compute(y), _sync(y))
    r = x.rechunk((600, 50))
    assert np.allclose(await c.compute(r), _sync(r))


@gen_cluster(client=True)
async def test_persist_then_compute_array(c, s, a, b):
    x = da.arange(1000, chunks=100) * 2
    xp = c.persist(x)
    await wait(xp)
    assert len(futures_of(xp)) == 10
    assert all(f.key in s.tasks and s.tasks[f.key].state == "memory" for f in futures_of(xp))
    assert await c.compute(xp.sum()) == _sync(x.sum())


@gen_cluster(client=True)
async def test_compute_list_and_non_collections(c, s, a, b):
    x = da.ones(10, chunks=5)
    f1, f2, plain = c.compute([x.sum(), (x + 1).sum(), 7])
    assert await f1 == 10 and await f2 == 20 and plain == 7


@gen_cluster(client=True)
async def test_delayed_mixed_with_futures(c, s, a, b):
    f = c.submit(inc, 10)
    d = dask.delayed(lambda u, v: u * v)(f, dask.delayed(inc)(1))
    assert await c.compute(d) == 22
    assert await c.compute(dask.delayed(sum)([f, f, 1])) == 23


# Full state validation after every change is quadratic on 4,000 tasks; the
# invariants are checked by the other tests, this one watches memory.
@gen_cluster(client=True, nthreads=[("127.0.0.1", 1)] * 3,
             scheduler_kwargs={"validate": False}, worker_kwargs={"validate": False})
async def test_wide_tree_reduction_keeps_few_results_in_memory(c, s, *workers):
    held = {"now": 0, "max": 0}

    class CountMemory:
        def transition(self, key, start, finish, **kwargs):
            if finish == "memory":
                held["now"] += 1
            if start == "memory":
                held["now"] -= 1
            held["max"] = max(held["max"], held["now"])

    s.state.plugins.append(CountMemory())
    x = da.ones(2000, chunks=1)
    result = await c.compute(x.sum(split_every=2))
    assert result == 2000
    # 2,000 leaves and 1,999 partial sums; ordering keeps only a few at once.
    assert held["max"] < 400, held


def test_dask_compute_uses_active_client_then_stops(loop):
    x = da.arange(100, chunks=10).sum()
    with cluster() as (s, [a, b]):
        with Client(s["address"], loop=loop) as c:
            assert x.compute() == 4950
            assert dask.compute(x)[0] == 4950
            assert dask.compute(x, scheduler=c)[0] == 4950
            assert dask.compute(x, scheduler=c.get)[0] == 4950
            assert c.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks)) >= 0
            xp = dask.persist(da.arange(10, chunks=5))[0]
            assert len(futures_of(xp)) == 2
            assert c.compute(xp.sum(), sync=True) == 45
        from distributed.client import default_client

        with pytest.raises(ValueError):
            default_client()
        # with no client left, dask falls back to its own scheduler
        assert x.compute() == 4950


def test_client_get_accepts_expressions_and_highlevelgraphs(loop):
    with cluster() as (s, [a, b]):
        with Client(s["address"], loop=loop) as c:
            x = (da.ones(20, chunks=5) + 1).sum()
            keys = x.__dask_keys__()
            hlg = x.__dask_graph__()
            assert c.get(hlg, keys) == [40]
            assert c.get(dict(hlg), keys) == [40]


class TestDataFrame:
    pd = pytest.importorskip("pandas")
    dd = pytest.importorskip("dask.dataframe")

    def frame(self):
        pdf = self.pd.DataFrame({"k": np.arange(2000) % 7, "v": np.arange(2000.0), "w": np.arange(2000) % 13})
        return pdf, self.dd.from_pandas(pdf, npartitions=4)

    def test_groupby_merge_set_index_shuffle(self, loop):
        pdf, df = self.frame()
        other = self.dd.from_pandas(self.pd.DataFrame({"k": range(7), "name": list("abcdefg")}), npartitions=2)
        with Client(n_workers=2, threads_per_worker=1, processes=False, loop=loop) as c:
            g = c.compute(df.groupby("k").v.mean()).result()
            assert g.sort_index().equals(_sync(df.groupby("k").v.mean()).sort_index())
            m = df.merge(other, on="k").compute()
            assert len(m) == 2000 and set(m.name) == set("abcdefg")
            si = df.set_index("w").compute()
            assert si.index.is_monotonic_increasing and len(si) == 2000
            sh = df.shuffle("k").compute()
            assert sorted(sh.v) == sorted(pdf.v)
            so = df.groupby("k").v.sum(split_out=2).compute()
            assert so.sort_index().equals(pdf.groupby("k").v.sum().sort_index())
            p = c.persist(df)
            wait(p)
            assert p.v.sum().compute() == pdf.v.sum()


def test_bag_word_count_with_foldby(loop):
    db = pytest.importorskip("dask.bag")
    words = "a b a c b a d".split() * 10
    b = db.from_sequence(words, npartitions=4)
    counts = b.foldby(lambda w: w, lambda acc, w: acc + 1, 0, lambda x, y: x + y, 0)
    with Client(n_workers=2, threads_per_worker=1, processes=False, loop=loop):
        assert dict(counts.compute()) == dict(_sync(counts))
        assert dict(b.persist().foldby(lambda w: w, lambda acc, w: acc + 1, 0,
                                       lambda x, y: x + y, 0).compute()) == {"a": 30, "b": 20, "c": 10, "d": 10}


_CALLS: list = []


def fails_twice():
    """Raises on its first two calls in this process (workers are in-process)."""
    _CALLS.append(1)
    if len(_CALLS) <= 2:
        raise ValueError(f"failure {len(_CALLS)}")
    return 42


@gen_cluster(client=True, nthreads=[("127.0.0.1", 1), ("127.0.0.1", 1, {"resources": {"GPU": 1}})])
async def test_annotations_are_honoured(c, s, a, b):
    _CALLS.clear()
    with dask.annotate(retries=2):
        d = dask.delayed(fails_twice, pure=False)()
    assert await c.compute(d) == 42

    with dask.annotate(resources={"GPU": 1}):
        g = dask.delayed(inc, pure=False)(1)
    f = c.compute(g)
    assert await f == 2
    gpu_key = [k for k in b.data if "inc" in str(k)]
    assert gpu_key, "the GPU-annotated task ran on the worker with the GPU"

    with dask.annotate(workers=[a.address]):
        w = dask.delayed(inc, pure=False)(10)
    f2 = c.compute(w)
    assert await f2 == 11
    assert f2.key in a.data


@gen_cluster(client=True)
async def test_persisted_keys_are_reused_not_recomputed(c, s, a, b):
    x = da.arange(100, chunks=10) + 1
    xp = c.persist(x)
    await wait(xp)
    chunk = futures_of(xp)[0].key
    runs_before = sum(1 for _, start, finish in s.story(chunk) if finish == "processing")
    assert await c.compute(xp.sum()) == sum(range(1, 101))
    assert await c.compute((xp * 2).sum()) == 2 * sum(range(1, 101))
    runs_after = sum(1 for _, start, finish in s.story(chunk) if finish == "processing")
    assert runs_before == runs_after == 1


@gen_cluster(client=True)
async def test_compute_dict_and_persist_delayed(c, s, a, b):
    d = dask.delayed(inc)(dask.delayed(inc)(1))
    dp = c.persist(d)
    assert len(futures_of(dp)) == 1
    out = c.compute({"x": dp, "y": da.ones(4, chunks=2).sum()})
    assert set(out) == {"x", "y"}
    assert await out["x"] == 3 and await out["y"] == 4
