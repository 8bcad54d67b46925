"""SpecCluster: specs of a scheduler and workers, scale with exact counts,
ProcessInterface, groups, names, and the Cluster base (scheduler_info, logs)."""
import asyncio

import pytest

from distributed import Client, Nanny, Scheduler, Worker
from distributed.core import Status
from distributed.deploy.cluster import Cluster
from distributed.deploy.spec import ProcessInterface, SpecCluster
from distributed.utils_test import async_wait_for, gen_test, inc, wait_for

SCHED = {"cls": Scheduler, "options": {"port": 0, "host": "127.0.0.1"}}
WORKER = {"cls": Worker, "options": {"nthreads": 1}}


@gen_test()
async def test_specs_start_and_scale_exactly():
    async with SpecCluster(scheduler=SCHED, workers={"a": WORKER, "b": WORKER}, worker=WORKER,
                           asynchronous=True) as cluster:
        s = cluster.scheduler
        assert isinstance(cluster, Cluster) and cluster.status == Status.running
        assert set(cluster.workers) == {"a", "b"}
        assert {ws.name for ws in s.workers.values()} == {"a", "b"}
        await cluster.scale(5)
        assert len(cluster.workers) == 5 and len(s.workers) == 5
        assert cluster.plan == cluster.requested == cluster.observed
        await cluster.scale(1)
        assert len(cluster.workers) == 1 and len(s.workers) == 1
        await cluster.scale(0)
        assert cluster.workers == {} and s.workers == {}
        await cluster.scale(3)
        assert len(s.workers) == 3


@gen_test()
async def test_scale_down_keeps_data():
    async with SpecCluster(scheduler=SCHED, worker=WORKER, asynchronous=True) as cluster:
        await cluster.scale(3)
        async with Client(cluster, asynchronous=True) as c:
            futures = c.map(inc, range(30))
            assert await c.gather(futures) == list(range(1, 31))
            await cluster.scale(1)
            assert len(cluster.scheduler.workers) == 1
            assert await c.gather(futures) == list(range(1, 31))


@gen_test()
async def test_scale_by_cores_and_memory_and_bad_input():
    template = {"cls": Worker, "options": {"nthreads": 2, "memory_limit": "1GiB"}}
    async with SpecCluster(scheduler=SCHED, worker=template, asynchronous=True) as cluster:
        await cluster.scale(cores=5)
        assert len(cluster.workers) == 3
        await cluster.scale(memory="4GiB")
        assert len(cluster.workers) == 4
        with pytest.raises(ValueError, match="whole number"):
            cluster.scale(-1)
        assert len(cluster.worker_spec) == 4  # bad input changed nothing
    async with SpecCluster(scheduler=SCHED, asynchronous=True) as cluster:
        with pytest.raises(ValueError, match="no worker template"):
            cluster.scale(2)


def test_bad_spec_raises_before_starting():
    with pytest.raises(TypeError, match="spec must be a dict"):
        SpecCluster(scheduler=SCHED, workers={"a": Worker}, asynchronous=True)


@gen_test()
async def test_dotted_class_names_and_nanny():
    spec = {"cls": "distributed.Nanny", "options": {"nthreads": 1}}
    async with SpecCluster(scheduler={"cls": "distributed.Scheduler", "options": {"port": 0}},
                           workers={"n": spec}, asynchronous=True) as cluster:
        assert isinstance(cluster.workers["n"], Nanny)
        async with Client(cluster, asynchronous=True) as c:
            assert await c.submit(inc, 1) == 2


class NamedCluster(SpecCluster):
    def _new_worker_name(self, worker_number):
        return f"{self.name}-{worker_number}"


@gen_test()
async def test_new_worker_name_and_scale_down_by_name():
    async with NamedCluster(scheduler=SCHED, worker=WORKER, name="job", asynchronous=True) as cluster:
        await cluster.scale(3)
        assert set(cluster.workers) == {"job-0", "job-1", "job-2"}
        assert cluster.new_worker_spec() == {"job-3": WORKER}
        await cluster.scale_down(["job-1"])
        assert set(cluster.workers) == {"job-0", "job-2"}
        assert {ws.name for ws in cluster.scheduler.workers.values()} == {"job-0", "job-2"}


class MultiWorker(ProcessInterface):
    """One 'job' running two workers, like dask-jobqueue with processes=2."""

    def __init__(self, scheduler, name=None, nthreads=1, **kwargs):
        super().__init__(scheduler, name)
        self.scheduler = scheduler
        self.workers = [Worker(scheduler, name=f"{name}-{i}", nthreads=nthreads) for i in range(2)]

    async def start(self):
        await asyncio.gather(*self.workers)
        self.address = self.workers[0].address
        await super().start()

    async def close(self):
        await asyncio.gather(*(w.close() for w in self.workers))
        await super().close()


@gen_test()
async def test_process_interface_with_group():
    spec = {"cls": MultiWorker, "options": {"nthreads": 1}, "group": ["-0", "-1"]}
    async with SpecCluster(scheduler=SCHED, worker=spec, asynchronous=True) as cluster:
        await cluster.scale(2)
        assert cluster.plan == {"0-0", "0-1", "1-0", "1-1"}
        assert cluster.observed == cluster.plan == cluster.requested
        job = cluster.workers[0]
        assert job.status == Status.running and job.address
        await cluster.scale_down(["1-0"])  # a group member names its whole job
        assert set(cluster.workers) == {0}
        assert cluster.observed == {"0-0", "0-1"}
        await job.close()
        await asyncio.wait_for(job.finished(), 5)


@gen_test()
async def test_process_interface_start_must_call_super():
    class Broken(ProcessInterface):
        async def start(self):
            pass

    with pytest.raises(RuntimeError, match="super"):
        await Broken()


def test_sync_speccluster_scheduler_info_and_logs(loop):
    with SpecCluster(scheduler=SCHED, workers={0: WORKER}, worker=WORKER) as cluster:
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        cluster.scale(2)
        wait_for(lambda: len(cluster.scheduler_info["workers"]) == 2)
        with Client(cluster) as c:
            assert c.submit(inc, 1).result() == 2
        logs = cluster.get_logs()
        assert "started workers" in logs["Cluster"]
        assert "Register worker" in logs["Scheduler"]
        assert set(logs) == {"Cluster", "Scheduler", *cluster.scheduler_info["workers"]}
        assert set(cluster.get_logs(cluster=False, scheduler=False)) == set(cluster.scheduler_info["workers"])
        assert "Workers" in cluster._repr_html_() and "SpecCluster" in repr(cluster)
        assert cluster.dashboard_link is None  # the scheduler serves no dashboard here
    assert cluster.status == Status.closed


@gen_test()
async def test_remote_scheduler_info_is_synced():
    """A scheduler reached over the network (a ProcessInterface, as SSHCluster
    has): scheduler_info comes from the periodic sync."""

    class RemoteScheduler(ProcessInterface):
        async def start(self):
            self.s = await Scheduler(port=0)
            self.address = self.s.address
            await super().start()

        async def close(self):
            await self.s.close()
            await super().close()

    async with SpecCluster(scheduler={"cls": RemoteScheduler, "options": {}}, worker=WORKER,
                           scheduler_sync_interval=0.05, asynchronous=True) as cluster:
        assert cluster._local_scheduler() is None and cluster.scheduler_comm is not None
        await cluster.scale(2)
        await async_wait_for(lambda: len(cluster.scheduler_info["workers"]) == 2, timeout=10)
        await cluster.scale(1)
        await async_wait_for(lambda: len(cluster.scheduler_info["workers"]) == 1, timeout=10)
        logs = await cluster.get_logs()  # over the network
        assert "Register worker" in logs["Scheduler"] and len(logs) == 3


# -- the contract dask-jobqueue, dask-kubernetes (classic) and dask-cloudprovider use --


def test_names_cluster_managers_import():
    from distributed.core import Status as S
    from distributed.deploy import Cluster as C  # noqa: F401
    from distributed.deploy import ProcessInterface as P  # noqa: F401
    from distributed.deploy.local import nprocesses_nthreads
    from distributed.deploy.ssh import Scheduler as SSHScheduler  # noqa: F401
    from distributed.deploy.ssh import Worker as SSHWorker  # noqa: F401
    from distributed.deploy.utils import nprocesses_nthreads as same
    from distributed.utils import (
        Log,  # noqa: F401
        Logs,  # noqa: F401
        SyncMethodMixin,  # noqa: F401
        cli_keywords,
        deserialize_for_cli,
        format_dashboard_link,
        serialize_for_cli,
        warn_on_duration,
    )

    assert S.created == "created" and same is nprocesses_nthreads
    assert nprocesses_nthreads(32) == (8, 4) and nprocesses_nthreads(4) == (4, 1)
    assert cli_keywords({"nthreads": 2, "nanny": False}, cls=Worker) == ["--nthreads", "2", "--no-nanny"]
    with pytest.raises(ValueError, match="does not take"):
        cli_keywords({"bogus": 1}, cls=Worker)
    assert deserialize_for_cli(serialize_for_cli({"a": 1})) == {"a": 1}
    assert format_dashboard_link("10.0.0.1", 8787) == "http://10.0.0.1:8787/status"
    with pytest.warns(UserWarning, match="slow"):
        with warn_on_duration(0, "slow"):
            pass


class Job(ProcessInterface):
    """Shaped like dask-jobqueue's Job: scheduler address first, name by
    keyword, ``super().__init__()`` without arguments, start(**kwargs)."""

    def __init__(self, scheduler=None, name=None, cores=1, **kwargs):
        self.scheduler = scheduler
        super().__init__()
        self.name = name
        self.cores = cores

    async def start(self, **kwargs):
        self.worker = await Worker(self.scheduler, name=self.name, nthreads=self.cores)
        await super().start(**kwargs)

    async def close(self, **kwargs):
        await self.worker.close()
        await super().close(**kwargs)


class JobQueueLikeCluster(SpecCluster):
    def __init__(self, n_workers=0, **kwargs):
        self.status = Status.created  # set before SpecCluster.__init__, as dask-jobqueue does
        super().__init__(scheduler=SCHED, worker={"cls": Job, "options": {"cores": 1}}, **kwargs)
        if n_workers:
            self.scale(n_workers)

    def _new_worker_name(self, worker_number):
        return f"{self._name}-{worker_number}"


class KubeLikeCluster(SpecCluster):
    """Sets its specs in ``_start`` (dask-kubernetes classic, dask-cloudprovider)."""

    async def _start(self):
        self.scheduler_spec = SCHED
        self.new_spec = {"cls": Job, "options": {}}
        self.worker_spec = {i: self.new_spec for i in range(2)}
        await super()._start()


def test_jobqueue_and_kube_shaped_subclasses():
    with JobQueueLikeCluster(n_workers=2, name="jq") as cluster:
        assert set(cluster.workers) == {"jq-0", "jq-1"}
        with Client(cluster) as c:
            assert c.submit(inc, 1).result() == 2
        cluster.scale(1)
        wait_for(lambda: len(cluster.scheduler_info["workers"]) == 1)
        adaptive = cluster.adapt(minimum=0, maximum=2, interval="50ms")
        assert adaptive.maximum == 2
    assert cluster.status == Status.closed
    with KubeLikeCluster() as cluster:
        wait_for(lambda: len(cluster.scheduler_info["workers"]) == 2)
        cluster.scale(3)
        assert len(cluster.workers) == 3
