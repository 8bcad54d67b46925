"""Actors: objects that live on one worker and are called from anywhere."""
import asyncio
import threading

import pytest

from distributed import Client, as_completed, futures_of, get_worker
from distributed.coordination.actor import Actor, ActorFuture, BaseActorFuture, EagerActorFuture
from distributed.exceptions import ActorLostError
from distributed.scheduler.state import SchedulerState
from distributed.spec import CALL, make_spec, pickled_function
from distributed.utils_test import async_wait_for, cluster, gen_cluster, wait_for
from distributed.worker.state import Execute, WorkerState


class Counter:
    """Increments are read-modify-write with a pause in between: any two
    calls running at once would lose a count."""

    def __init__(self, start=0):
        self.n = start  # set here only: no class-level declaration needed

    def increment(self, by=1):
        n = self.n
        threading.Event().wait(0.001)  # widen the window a concurrent call would need
        self.n = n + by
        return self.n

    @property
    def doubled(self):
        return 2 * self.n

    def where(self):
        return get_worker().address

    def fail(self):
        raise ZeroDivisionError("on purpose")

    def open_missing(self):
        raise FileNotFoundError("no such file, on purpose")

    async def slow_add(self, x):
        await asyncio.sleep(0.01)
        self.n += x
        return self.n


class Forwarder:
    """Calls another actor from its own methods."""

    def __init__(self, other):
        self.other = other

    def bump(self):
        # From the actor thread: a same-worker actor is called directly.
        return self.other.increment().result()

    async def bump_async(self):
        return await self.other.increment()


def _use_actor(counter, times):
    """A task that calls an actor through the handle it received."""
    return [counter.increment().result() for _ in range(times)][-1]


# ----------------------------------------------------------------------
# gen_cluster: one loop, state inspected
# ----------------------------------------------------------------------


@gen_cluster(client=True)
async def test_handle_calls_and_state(c, s, a, b):
    future = c.submit(Counter, actor=True)
    counter = await future
    assert isinstance(counter, Actor)
    assert repr(counter) == f"<Actor: Counter, key={future.key}>"
    assert {"increment", "where", "doubled", "fail", "slow_add"} <= set(dir(counter))
    assert future.key.startswith("Counter-")

    home = s.state.actor_homes[future.key]
    worker = a if home == a.address else b
    assert s.state.actors_on(home) == [future.key]
    assert isinstance(worker.state.actors[future.key], Counter)
    assert isinstance(worker.data[future.key], Actor)  # peers and clients get the handle

    call = counter.increment()
    assert isinstance(call, ActorFuture) and isinstance(call, BaseActorFuture)
    assert await call == 1
    assert call.done()
    assert await counter.n == 1  # an attribute set in __init__, read remotely
    assert await counter.doubled == 2
    assert await counter.where() == home
    with pytest.raises(AttributeError, match="no attribute 'missing'"):
        counter.missing  # neither the class nor the object has it: no round trip
    assert not hasattr(counter, "nbytes")
    with pytest.raises(ZeroDivisionError, match="on purpose"):
        await counter.fail()
    with pytest.raises(FileNotFoundError, match="on purpose"):  # an OSError of the method, not of the network
        await counter.open_missing()
    with pytest.raises(AttributeError):
        counter._private  # never forwarded


@gen_cluster(client=True)
async def test_concurrent_calls_run_one_at_a_time(c, s, a, b):
    counter = await c.submit(Counter, actor=True)
    calls = [counter.increment() for _ in range(100)]
    results = await asyncio.gather(*calls)
    assert sorted(results) == list(range(1, 101))  # each call saw the one before it
    assert await counter.n == 100


@gen_cluster(client=True)
def test_generator_style(c, s, a, b):
    counter = yield c.submit(Counter, 10, actor=True)
    result = yield counter.increment(5)
    assert result == 15
    n = yield counter.n
    assert n == 15


@gen_cluster(client=True)
async def test_async_methods_run_on_the_loop(c, s, a, b):
    counter = await c.submit(Counter, actor=True)
    results = await asyncio.gather(*(counter.slow_add(1) for _ in range(5)))
    assert sorted(results) == [1, 2, 3, 4, 5]
    assert await counter.n == 5


@gen_cluster(client=True)
async def test_actors_spread_over_workers(c, s, a, b):
    futures = c.map(Counter, range(4), actor=True)
    handles = await c.gather(futures)
    assert len({f.key for f in futures}) == 4  # never pure
    assert sorted(len(s.state.actors_on(w.address)) for w in (a, b)) == [2, 2]
    assert [await h.n for h in handles] == [0, 1, 2, 3]


@gen_cluster(client=True)
async def test_actor_in_tasks(c, s, a, b):
    future = c.submit(Counter, actor=True, workers=[a.address])
    counter = await future
    # As a dependency (the worker hands the task the handle) and as a plain argument.
    r1 = await c.submit(_use_actor, future, 3, workers=[b.address])
    r2 = await c.submit(_use_actor, counter, 2, workers=[a.address], pure=False)
    assert {r1, r2} == {3, 5}
    assert await counter.n == 5


@gen_cluster(client=True, nthreads=[("127.0.0.1", 1)])
async def test_actor_calling_actor_on_the_same_worker(c, s, a):
    counter = await c.submit(Counter, actor=True)
    forwarder = await c.submit(Forwarder, counter, actor=True)
    assert await forwarder.bump() == 1  # would deadlock through the worker
    assert await forwarder.bump_async() == 2
    assert await counter.n == 2


@gen_cluster(client=True)
async def test_as_completed_over_actor_futures(c, s, a, b):
    counter = await c.submit(Counter, actor=True)
    calls = [counter.increment() for _ in range(5)]
    seen = []
    async for call in as_completed(calls):
        seen.append(await call)
    assert sorted(seen) == [1, 2, 3, 4, 5]
    with_results = as_completed([counter.increment(), counter.fail()], with_results=True,
                                raise_errors=False)
    out = [r async for _, r in with_results]
    assert 6 in out and any(isinstance(r, ZeroDivisionError) for r in out)


@gen_cluster(client=True)
async def test_lost_worker_fails_the_actor(c, s, a, b):
    future = c.submit(Counter, actor=True, workers=[a.address])
    counter = await future
    assert await counter.increment() == 1
    await a.close()
    await async_wait_for(lambda: future.status == "error", timeout=10)
    assert s.tasks[future.key].state == "erred"  # never recomputed
    with pytest.raises(RuntimeError, match="Worker holding Actor was lost"):
        counter.increment()
    with pytest.raises(ValueError, match="Worker holding Actor was lost"):  # upstream's type too
        counter.n
    with pytest.raises(ActorLostError, match=a.address):
        await future
    assert not s.state.actors_on(a.address)


@gen_cluster(client=True)
async def test_retiring_a_worker_with_actors_is_refused(c, s, a, b):
    future = c.submit(Counter, actor=True, workers=[a.address])
    counter = await future
    with pytest.raises(ValueError, match="actors"):
        await c.retire_workers([a.address])
    assert a.address in s.workers
    assert await counter.increment() == 1  # nothing changed


@gen_cluster(client=True)
async def test_released_actor_leaves_the_worker(c, s, a, b):
    future = c.submit(Counter, actor=True, workers=[a.address])
    counter = await future
    assert future.key in a.state.actors
    del future, counter
    await async_wait_for(lambda: not a.state.actors and not s.state.actor_homes, timeout=10)


@gen_cluster(client=True)
async def test_persist_and_compute_with_actors(c, s, a, b):
    dask = pytest.importorskip("dask")
    obj = dask.delayed(Counter)(7)
    (persisted,) = c.persist([obj], actors=True)
    (future,) = futures_of(persisted)
    handle = await future
    assert isinstance(handle, Actor)
    assert await handle.increment() == 8
    assert future.key in s.state.actor_homes
    computed = await c.compute(dask.delayed(Counter)(1), actors=True)
    assert isinstance(computed, Actor)
    assert await computed.increment() == 2


def test_eager_actor_future():
    ok = EagerActorFuture(3)
    assert ok.done() and ok.result() == 3 and ok.exception() is None
    bad = EagerActorFuture(error=KeyError("x"))
    with pytest.raises(KeyError):
        bad.result()


# ----------------------------------------------------------------------
# the scheduler's bookkeeping, fed by hand
# ----------------------------------------------------------------------


def _spec():
    return make_spec(CALL, pickled_function(Counter), ((), {}))


def test_state_places_actors_where_fewest_live_and_fails_them_with_their_worker():
    state = SchedulerState(validate=True)
    for port in (1, 2):
        state.add_worker(f"tcp://127.0.0.1:{port}", nthreads=4)
    state.add_client("c")
    keys = [f"Counter-{i}" for i in range(4)]
    _, wmsgs = state.update_graph("c", {k: _spec() for k in keys}, {}, keys, actors=keys)
    assert sorted(len(v) for v in wmsgs.values()) == [2, 2]
    assert all(m["actor"] for msgs in wmsgs.values() for m in msgs)
    for worker, msgs in wmsgs.items():
        for m in msgs:
            state.handle_task_finished(m["key"], worker, nbytes=10, type="Counter")
    assert sorted(state.actors_on("tcp://127.0.0.1:1") + state.actors_on("tcp://127.0.0.1:2")) == keys
    gone = state.actors_on("tcp://127.0.0.1:1")
    cmsgs, _ = state.remove_worker("tcp://127.0.0.1:1", reason="killed")
    for key in gone:
        assert state.tasks[key].state == "erred"
        assert "Worker holding Actor was lost" in state.tasks[key].exception_text
    assert {m["key"] for m in cmsgs["c"] if m["op"] == "task-erred"} == set(gone)
    state.client_releases_keys("c", keys)
    assert not state.tasks and not state.actor_homes


def test_state_actor_still_being_made_is_run_again_elsewhere():
    state = SchedulerState(validate=True)
    state.add_worker("tcp://127.0.0.1:1", nthreads=1)
    state.add_worker("tcp://127.0.0.1:2", nthreads=1)
    state.add_client("c")
    _, wmsgs = state.update_graph("c", {"A": _spec()}, {}, ["A"], actors=["A"])
    (first,) = wmsgs
    _, wmsgs = state.remove_worker(first)
    assert state.tasks["A"].state == "processing"
    assert list(wmsgs) != [first] and state.actor_homes["A"] != first


def test_worker_state_keeps_the_object_and_gives_out_its_handle():
    handles = []

    def make_handle(key, obj):
        handles.append((key, obj))
        return ("handle", key)

    ws = WorkerState(nthreads=1, data={}, address="tcp://127.0.0.1:2", validate=True,
                     make_actor_handle=make_handle)
    assert ws.handle_compute_task("A", run_spec="spec", priority=(0,), actor=True) == [Execute("A")]
    obj = Counter()
    ws.handle_execute_success("A", obj, nbytes=100, type="Counter")
    ws.validate_state()
    assert ws.actors == {"A": obj} and ws.data["A"] == ("handle", "A") and handles == [("A", obj)]
    assert ws.scheduler_msgs[-1] == {"op": "task-finished", "key": "A", "nbytes": 100, "type": "Counter"}
    ws.handle_free_keys(["A"])
    assert not ws.actors and "A" not in ws.data
    plain = WorkerState(nthreads=1, data={})
    with pytest.raises(RuntimeError, match="make_actor_handle"):
        plain.handle_compute_task("A", run_spec="spec", actor=True)
    assert not plain.tasks  # refused before any change


# ----------------------------------------------------------------------
# cluster(): real processes, the blocking API
# ----------------------------------------------------------------------


def test_blocking_api_across_processes(loop):
    with cluster() as (s, [a, b]):
        with Client(s["address"], loop=loop) as c:
            future = c.submit(Counter, actor=True, workers=[a["address"]])
            counter = future.result()
            calls = [counter.increment() for _ in range(50)]
            assert sorted(call.result(timeout=30) for call in calls) == list(range(1, 51))
            assert counter.n == 50 and counter.doubled == 100
            # From tasks on both workers, through their own clients.
            tasks = [c.submit(_use_actor, future, 5, workers=[w["address"]], pure=False) for w in (a, b)]
            c.gather(tasks)
            assert counter.n == 60
            done = [call.result() for call in as_completed([counter.increment() for _ in range(3)])]
            assert sorted(done) == [61, 62, 63]
            with pytest.raises(ZeroDivisionError):
                counter.fail().result()


def test_killed_worker_process_fails_calls_clearly(loop):
    with cluster() as (s, [a, b]):
        with Client(s["address"], loop=loop) as c:
            future = c.submit(Counter, actor=True, workers=[a["address"]])
            counter = future.result()
            assert counter.increment().result() == 1
            a["proc"].terminate()
            wait_for(lambda: not a["proc"].is_alive(), timeout=30)  # gone, not just closing
            with pytest.raises(RuntimeError, match="Worker holding Actor was lost"):
                # Either the call finds the worker gone, or the client already knows.
                counter.increment().result(timeout=60)
            wait_for(lambda: future.status == "error", timeout=30)
            with pytest.raises(RuntimeError, match="Worker holding Actor was lost"):
                future.result()


def test_unpickled_handle_without_a_client_binds_on_first_use():
    import pickle

    handle = Actor(Counter, "tcp://127.0.0.1:1", "Counter-1", attributes=["n"])
    copy = pickle.loads(pickle.dumps(handle))  # no client here: bound on first use
    assert copy.key == "Counter-1" and copy._future is None
    assert "n" in dir(copy)
    with pytest.raises(RuntimeError, match="no client"):
        copy.n
