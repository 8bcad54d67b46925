"""dask-jobqueue against us, without a batch system.

dask-jobqueue's own ``LocalCluster`` (``dask_jobqueue.local``) runs each job
script as a local process: the same machinery as ``SLURMCluster`` and friends
(a ``JobQueueCluster`` built on our ``SpecCluster``, ``Job`` objects built on
our ``ProcessInterface``, a generated job script that starts our worker CLI),
with ``bash`` in place of ``sbatch``.  ``test_slurm.py`` does the same through
a real SLURM.
"""
import os
import shlex
import sys

import pytest

from distributed import Client
from distributed.utils_test import async_wait_for, gen_test, inc, slowinc, still_running

dask_jobqueue = pytest.importorskip("dask_jobqueue", reason="dask-jobqueue is in the test extras")

from dask_jobqueue.local import LocalCluster as JobQueueLocalCluster  # noqa: E402

from distributed.cli import dask_worker  # noqa: E402
from distributed.deploy.spec import ProcessInterface, SpecCluster  # noqa: E402
from distributed.security import Security  # noqa: E402

# Loopback only, and a free dashboard port (dask-jobqueue asks for :8787 by default).
SCHEDULER = {"host": "127.0.0.1", "dashboard_address": ":0"}


def _cluster(tmp_path, **kwargs):
    # dask-jobqueue's LocalJob ends a job with SIGKILL, which leaves its worker's directory behind
    # (a batch system's scancel sends SIGTERM first): keep those in the test's own folder.
    options = {"cores": 1, "memory": "1GB", "processes": 1, **kwargs}
    return JobQueueLocalCluster(scheduler_options=SCHEDULER, asynchronous=True, local_directory=str(tmp_path),
                                **options)


def test_job_script_starts_our_worker_cli_with_options_it_accepts():
    cluster = JobQueueLocalCluster(cores=2, memory="2GB", processes=2, death_timeout=30,
                                   local_directory="/tmp", scheduler_options=SCHEDULER,
                                   worker_extra_args=["--lifetime", "1h", "--lifetime-stagger", "5m",
                                                      "--lifetime-restart", "--resources", "GPU=1"])
    try:
        assert isinstance(cluster, SpecCluster)
        command = cluster.job_script().strip().splitlines()[-1]
        assert command.startswith(f"{sys.executable} -m distributed.cli.dask_worker {cluster.scheduler_address} ")
        args = shlex.split(command)[3:]
        # Every option the generated script passes parses with our CLI's parser.
        parsed = dask_worker.make_parser().parse_args(args)
        assert (parsed.nthreads, parsed.nprocs, parsed.nanny) == (1, 2, True)
        assert (parsed.memory_limit, parsed.death_timeout, parsed.local_directory) == ("0.93GiB", 30, "/tmp")
        assert (parsed.lifetime, parsed.lifetime_restart, parsed.resources) == ("1h", True, {"GPU": 1})
    finally:
        cluster.close()


def test_job_objects_are_process_interfaces():
    cluster = JobQueueLocalCluster(cores=1, memory="1GB", processes=1, scheduler_options=SCHEDULER)
    try:
        assert issubclass(cluster.job_cls, ProcessInterface)
        assert cluster._new_worker_name(3) == f"{cluster._name}-3"
        assert cluster.worker_spec == {}
    finally:
        cluster.close()


@gen_test(timeout=90)
async def test_scale_compute_scale_down_adapt_close_leaves_no_process(tmp_path):
    async with _cluster(tmp_path) as cluster:
        s = cluster.scheduler
        async with Client(cluster, asynchronous=True) as c:
            cluster.scale(2)
            await c.wait_for_workers(2, timeout=60)
            # Workers are named as dask-jobqueue names its jobs, one spec entry each.
            assert set(cluster.worker_spec) == {f"{cluster._name}-0", f"{cluster._name}-1"}
            assert {ws.name for ws in s.workers.values()} == set(cluster.worker_spec)
            assert cluster.plan == set(cluster.worker_spec)
            jobs = [int(job.job_id) for job in cluster.workers.values()]
            worker_pids = list((await c.run(os.getpid)).values())

            futures = c.map(slowinc, range(40), delay=0.01)
            assert await c.gather(futures) == list(range(1, 41))

            await cluster.scale(1)
            await async_wait_for(lambda: len(s.workers) == 1, timeout=30)
            assert len(cluster.worker_spec) == 1
            # The results held by the retired worker moved first.
            assert await c.gather(futures) == list(range(1, 41))

            del futures  # nothing held: an idle cluster may shrink to nothing
            cluster.adapt(minimum=0, maximum=2, interval="100ms", wait_count=2, target_duration="100ms")
            await async_wait_for(lambda: not s.workers, timeout=30)  # idle: down to the minimum
            assert await c.submit(inc, 10) == 11  # and up again for new work
            worker_pids += list((await c.run(os.getpid)).values())
            jobs += [int(job.job_id) for job in cluster.workers.values()]
    # Every job (dask-jobqueue kills its process) and every worker process under it is gone.
    await async_wait_for(lambda: not still_running(jobs + worker_pids), timeout=30)


@gen_test(timeout=90)
async def test_several_processes_per_job_scale_by_jobs_and_cores(tmp_path):
    async with _cluster(tmp_path, cores=2, memory="2GB", processes=2) as cluster:
        s = cluster.scheduler
        async with Client(cluster, asynchronous=True) as c:
            await cluster.scale(cores=2)  # one job of two 1-thread workers
            await c.wait_for_workers(2, timeout=60)
            (job,) = cluster.worker_spec
            assert cluster.worker_spec[job]["group"] == ["-0", "-1"]
            assert {ws.name for ws in s.workers.values()} == {f"{job}-0", f"{job}-1"}
            assert cluster.plan == {ws.name for ws in s.workers.values()}
            assert sum(await c.gather(c.map(inc, range(20)))) == sum(range(1, 21))

            # The worker count is turned into jobs; nothing starts before the awaits below.
            cluster.scale(jobs=2)
            assert len(cluster.worker_spec) == 2
            cluster.scale(5)
            assert len(cluster.worker_spec) == 3
            cluster.scale(memory="2GB")
            assert len(cluster.worker_spec) == 1
            await cluster
            await async_wait_for(lambda: {ws.name for ws in s.workers.values()} == cluster.plan, timeout=30)
            assert len(s.workers) == 2


def test_blocking_cluster_and_client():
    with JobQueueLocalCluster(cores=1, memory="1GB", processes=1, scheduler_options=SCHEDULER,
                              n_workers=1) as cluster, Client(cluster) as c:
        c.wait_for_workers(1, timeout=60)
        assert c.submit(inc, 1).result() == 2
        assert cluster.dashboard_link.startswith("http://")
        assert len(cluster.scheduler_info["workers"]) == 1


@pytest.mark.parametrize("given", ["True", "temporary"])
@gen_test(timeout=90)
async def test_tls_workers_started_from_the_job_script(tmp_path, given):
    """``security=True`` as upstream users write it: the job script carries the
    TLS options only (--protocol tls:// --tls-ca-file --tls-cert --tls-key,
    certificates written to shared_temp_directory), and mutual TLS with
    certificates made for this cluster is all the authentication needed."""
    pytest.importorskip("cryptography", reason="Security.temporary() needs cryptography")
    security = True if given == "True" else Security.temporary()
    async with _cluster(tmp_path, security=security, shared_temp_directory=str(tmp_path)) as cluster:
        assert cluster.scheduler_address.startswith("tls://")
        assert "--protocol tls://" in cluster.job_script()
        assert "secret" not in cluster.job_script()
        async with Client(cluster, security=cluster.security, asynchronous=True) as c:
            await cluster.scale(1)
            await c.wait_for_workers(1, timeout=60)
            assert all(addr.startswith("tls://") for addr in cluster.scheduler.workers)
            assert await c.submit(inc, 1) == 2
            # Retire the worker and let its processes end before the cluster closes: a worker killed
            # with its job (LocalJob sends SIGKILL) while it reconnects over TLS can leave the
            # scheduler a connection stuck in its handshake (docs/compatibility.rst, open problem).
            pids = [int(job.job_id) for job in cluster.workers.values()] + list((await c.run(os.getpid)).values())
            await cluster.scale(0)
            await async_wait_for(lambda: not cluster.scheduler.workers and not still_running(pids), timeout=30)
        # dask-jobqueue keeps the certificate files it wrote for the jobs open (its _job_<key> attributes)
        # for as long as the cluster object lives; closing them deletes them.
        for key in ("ca_file", "cert", "key"):
            getattr(cluster, f"_job_{key}").close()
