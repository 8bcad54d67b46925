"""The command-line tools end to end, started with ``popen``."""
import json
import os

from distributed import Client
from distributed.utils_test import inc, popen, wait_for


def _address_from(path):
    wait_for(lambda: os.path.exists(path) and os.path.getsize(path) > 0, timeout=30)
    with open(path) as f:
        return json.load(f)["address"]


def test_scheduler_and_two_workers_from_the_command_line(loop, tmp_path):
    sfile = str(tmp_path / "scheduler.json")
    with popen(["dask-scheduler", "--port", "0", "--scheduler-file", sfile]):
        address = _address_from(sfile)
        assert address.startswith("tcp://127.0.0.1:")
        with popen(["dask-worker", address, "--nthreads", "1", "--name", "alpha"]), \
                popen(["dask-worker", "--scheduler-file", sfile, "--nthreads", "2", "--name", "beta"]):
            with Client(address, loop=loop) as c:
                c.wait_for_workers(2, timeout=30)
                names = {w["name"] for w in c.scheduler_info()["workers"].values()}
                assert names == {"alpha", "beta"}
                assert c.nthreads() and sorted(c.nthreads().values()) == [1, 2]
                assert sum(c.gather(c.map(inc, range(50)))) == sum(range(1, 51))
                assert c.submit(inc, 1, workers="beta").result() == 2
        # the workers shut down cleanly on SIGINT and the scheduler notices
        with Client(address, loop=loop) as c:
            wait_for(lambda: not c.scheduler_info()["workers"], timeout=30)


def test_scheduler_exits_cleanly_on_interrupt(tmp_path):
    sfile = str(tmp_path / "scheduler.json")
    with popen(["dask-scheduler", "--port", "0", "--scheduler-file", sfile]) as proc:
        _address_from(sfile)
    assert proc.returncode == 0


def test_client_restart_goes_through_dask_worker_nannies(loop, tmp_path):
    """``dask-worker`` runs its workers under nannies by default, so
    ``client.restart()`` gives them fresh processes with the same names."""
    sfile = str(tmp_path / "scheduler.json")
    with popen(["dask-scheduler", "--port", "0", "--scheduler-file", sfile]):
        address = _address_from(sfile)
        with popen(["dask-worker", address, "--nprocs", "2", "--nthreads", "1", "--name", "n"]):
            with Client(address, loop=loop) as c:
                c.wait_for_workers(2, timeout=30)
                before = {w["name"]: w for w in c.scheduler_info()["workers"].values()}
                assert all(w["nanny"] for w in before.values())
                x = c.submit(inc, 1)
                assert x.result() == 2
                c.restart()
                c.wait_for_workers(2, timeout=30)
                after = {w["name"]: w for w in c.scheduler_info()["workers"].values()}
                assert sorted(after) == ["n-0", "n-1"]
                assert all(after[n]["pid"] != before[n]["pid"] for n in after)
                assert c.submit(inc, 2).result() == 3
