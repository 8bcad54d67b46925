"""Preload scripts: dask_setup / dask_teardown on the scheduler, workers and
nannies, from modules, files and source text, and on the command line."""
from __future__ import annotations

import os
import sys

import pytest

from distributed import Nanny, Scheduler, Worker
from distributed.preloading import import_preload, process_preloads
from distributed.utils_test import gen_cluster, gen_test, popen

SOURCE = """
def dask_setup(server):
    server.preloaded = getattr(server, "preloaded", 0) + 1

def dask_teardown(server):
    server.torn_down = True
"""


def test_import_preload_kinds(tmp_path):
    module = import_preload(SOURCE)
    assert callable(module.dask_setup)
    path = tmp_path / "g_preload_file.py"
    path.write_text(SOURCE)
    assert callable(import_preload(str(path)).dask_teardown)
    assert import_preload("json").dumps  # a module name
    with pytest.raises(ValueError, match="downloading"):
        import_preload("https://example.invalid/setup.py")
    with pytest.raises(FileNotFoundError):
        import_preload(str(tmp_path / "missing.py"))
    with pytest.raises(ImportError):
        import_preload("no_such_module_g_preload")


def test_preload_argv_shapes():
    class S:
        pass

    assert len(process_preloads(S(), [SOURCE, SOURCE], [["-a"], ["-b"]])) == 2
    with pytest.raises(ValueError, match="argument lists"):
        process_preloads(S(), [SOURCE], [["-a"], ["-b"]])


@gen_test()
async def test_scheduler_and_worker_preloads():
    async with Scheduler(port=0, preload=SOURCE) as s:
        assert s.preloaded == 1
        async with Worker(s.address, nthreads=1, preload=[SOURCE]) as w:
            assert w.preloaded == 1
        assert w.torn_down
    assert s.torn_down


@gen_test()
async def test_failing_preload_stops_the_worker():
    bad = "def dask_setup(worker):\n    raise RuntimeError('bad preload')\n"
    async with Scheduler(port=0) as s:
        w = Worker(s.address, nthreads=1, preload=bad)
        with pytest.raises(RuntimeError, match="bad preload"):
            await w
        assert w.status == "closed"
        assert not s.workers


@gen_test()
async def test_click_command_gets_preload_argv():
    click = pytest.importorskip("click")
    source = """
import click

@click.command()
@click.option("--level", type=int)
def dask_setup(worker, level):
    worker.level = level
"""
    async with Scheduler(port=0) as s:
        async with Worker(s.address, nthreads=1, preload=source, preload_argv=["--level", "7"]) as w:
            assert w.level == 7
    del click


@gen_cluster(client=True, nthreads=[])
async def test_nanny_preloads(c, s):
    async with Nanny(s.address, nthreads=1, preload_nanny=SOURCE) as n:
        assert n.preloaded == 1
    assert n.torn_down


@gen_test()
async def test_preload_from_config():
    from distributed import config

    with config.set({"distributed.scheduler.preload": [SOURCE]}):
        async with Scheduler(port=0) as s:
            assert s.preloaded == 1


def test_dask_scheduler_and_worker_preload_option(tmp_path):
    marker = tmp_path / "marker"
    script = tmp_path / "g_cli_preload.py"
    script.write_text(
        "import os\n"
        "def dask_setup(server):\n"
        f"    open({str(marker)!r} + '-' + type(server).__name__, 'w').close()\n"
    )
    sched_file = tmp_path / "sched.json"
    with popen(["dask-scheduler", "--port", "0", "--scheduler-file", str(sched_file),
                "--preload", str(script)]):
        with popen(["dask-worker", "--scheduler-file", str(sched_file), "--no-nanny",
                    "--preload", str(script)]):
            from distributed.utils_test import wait_for

            wait_for(lambda: os.path.exists(f"{marker}-Scheduler") and os.path.exists(f"{marker}-Worker"),
                     timeout=30)
    sys.modules.pop("g_cli_preload", None)


def test_unknown_cli_options_without_preload_are_errors():
    from distributed.cli.dask_scheduler import make_parser
    from distributed.cli.utils import parse_with_preload_argv

    with pytest.raises(SystemExit) as info:
        parse_with_preload_argv(make_parser(), ["--frobnicate"])
    assert info.value.code == 2
    args = parse_with_preload_argv(make_parser(), ["--preload", "m", "--frobnicate", "3"])
    assert args.preload == ["m"] and args.preload_argv == ["--frobnicate", "3"]
