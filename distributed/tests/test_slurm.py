"""dask-jobqueue's SLURMCluster against us, through a real single-node SLURM.

The ``slurm`` fixture (``distributed/tests/slurm.py``) runs munged,
slurmctld and slurmd as root for this module only, and skips it with the
reason where that cannot run.  Each test submits worker jobs with
``sbatch``, as a user on an HPC cluster would: one core and 1 GB per job, the
job's python being this one, the scheduler on loopback.
"""
import asyncio
import os

import pytest

from distributed import Client
from distributed.tests.slurm import slurm  # noqa: F401  (the module-scoped fixture)
from distributed.utils_test import async_wait_for, gen_test, slowinc, still_running

pytest.importorskip("dask_jobqueue", reason="dask-jobqueue is in the test extras")

from dask_jobqueue import SLURMCluster  # noqa: E402


def _slurm_cluster(directory) -> SLURMCluster:
    return SLURMCluster(cores=1, memory="1GB", processes=1, walltime="00:10:00", asynchronous=True,
                        scheduler_options={"host": "127.0.0.1", "dashboard_address": ":0"},
                        # Job output and worker folders in the test's folder, not the working directory.
                        log_directory=str(directory / "logs"), local_directory=str(directory))


async def _jobs(node) -> dict:
    return await asyncio.to_thread(node.jobs)


async def _wait_for_jobs(node, predicate, what: str, timeout: float = 30) -> dict:
    """Poll squeue (off the event loop) until ``predicate(jobs)``; AssertionError naming ``what`` after ``timeout``."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        jobs = await _jobs(node)
        if predicate(jobs):
            return jobs
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}; squeue shows {jobs}")
        await asyncio.sleep(0.1)


def test_fixture_node_is_idle_with_two_cores(slurm):  # noqa: F811
    assert slurm.node_state() == "idle"
    assert slurm.run("sinfo", "-h", "-o", "%c").split() == [str(os.cpu_count())]


@gen_test(timeout=120)
async def test_scale_through_sbatch_compute_scale_down_close(slurm, tmp_path):  # noqa: F811
    async with _slurm_cluster(tmp_path) as cluster:
        assert "#SBATCH --cpus-per-task=1" in cluster.job_script()
        s = cluster.scheduler
        async with Client(cluster, asynchronous=True) as c:
            cluster.scale(2)
            await c.wait_for_workers(2, timeout=60)
            job_ids = {job.job_id for job in cluster.workers.values()}
            assert len(job_ids) == 2
            # Both 1-core jobs run at once on the 2-core node.
            assert await _jobs(slurm) == dict.fromkeys(job_ids, "RUNNING")
            pids = list((await c.run(os.getpid)).values())

            futures = c.map(slowinc, range(50), delay=0.01)
            assert await c.gather(futures) == list(range(1, 51))

            await cluster.scale(1)
            await async_wait_for(lambda: len(s.workers) == 1, timeout=30)
            (kept,) = {job.job_id for job in cluster.workers.values()}
            await _wait_for_jobs(slurm, lambda jobs: set(jobs) == {kept}, f"only job {kept} left")
            assert await c.gather(futures) == list(range(1, 51))  # the retired worker's results moved first
    await _wait_for_jobs(slurm, lambda jobs: not jobs, "no job left after close")
    await async_wait_for(lambda: not still_running(pids), timeout=30)


@gen_test(timeout=120)
async def test_scancel_a_worker_job_mid_computation_keeps_the_result_exact(slurm, tmp_path):  # noqa: F811
    async with _slurm_cluster(tmp_path) as cluster:
        s = cluster.scheduler
        async with Client(cluster, asynchronous=True) as c:
            await cluster.scale(2)
            await c.wait_for_workers(2, timeout=60)
            futures = c.map(slowinc, range(60), delay=0.1)

            def both_hold_results():
                return len(s.workers) == 2 and all(ws.has_what for ws in s.workers.values())

            await async_wait_for(both_hold_results, timeout=30)
            victim = next(iter(s.workers.values()))
            job_id = cluster.workers[victim.name].job_id
            assert sum(1 for f in futures if f.done()) < len(futures)  # mid-computation
            await asyncio.to_thread(slurm.run, "scancel", job_id)

            assert await c.gather(futures) == list(range(1, 61))
            await async_wait_for(lambda: len(s.workers) == 1, timeout=30)
            assert victim.address not in s.workers
            await _wait_for_jobs(slurm, lambda jobs: job_id not in jobs, f"cancelled job {job_id} to leave squeue")
    await _wait_for_jobs(slurm, lambda jobs: not jobs, "no job left after close")
