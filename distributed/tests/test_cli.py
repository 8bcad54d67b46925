"""End-to-end tests of ``dask-scheduler`` and ``dask-worker``.

Every program runs as a subprocess (``python -m distributed.cli...``), so the
tests do not depend on installed console scripts.  Only loopback addresses
are used.  Nothing sleeps blindly: we poll for a condition until a deadline.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
import pytest

from distributed.core import rpc

pytestmark = pytest.mark.timeout(120)

REPO_ROOT = str(Path(__file__).resolve().parents[2])
SCHEDULER = "distributed.cli.dask_scheduler"
WORKER = "distributed.cli.dask_worker"
#: Generous bound for start-up (a spawned interpreter importing everything).
START_TIMEOUT = 30.0
#: How fast a program must exit after SIGINT.
EXIT_TIMEOUT = 10.0


# ------------------------------------------------------------------ helpers


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in [REPO_ROOT, env.get("PYTHONPATH", "")] if p
    )
    env["PYTHONUNBUFFERED"] = "1"
    return env


def wait_until(
    predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05
) -> Any:
    """Poll ``predicate`` until it returns something truthy, or fail."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class Program:
    """A running CLI program whose stderr is collected by a thread (so the
    pipe never fills up and blocks it)."""

    def __init__(self, module: str, *args: str) -> None:
        self.argv = [sys.executable, "-m", module, *args]
        self.proc = subprocess.Popen(
            self.argv,
            cwd=REPO_ROOT,
            env=_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    @property
    def stderr(self) -> str:
        return "\n".join(self.lines)

    def wait_for_line(self, pattern: str, timeout: float = START_TIMEOUT) -> re.Match:
        """The first match of ``pattern`` in stderr, waiting for it."""
        regex = re.compile(pattern)

        def found() -> re.Match | None:
            for line in list(self.lines):
                m = regex.search(line)
                if m:
                    return m
            if self.proc.poll() is not None:
                self._reader.join(5)
                pytest.fail(
                    f"{self.argv} exited ({self.proc.returncode}) without "
                    f"printing {pattern!r}:\n{self.stderr}"
                )
            return None

        return wait_until(found, timeout, f"{pattern!r} from {self.argv}")

    def interrupt(self) -> None:
        self.proc.send_signal(signal.SIGINT)

    def wait(self, timeout: float = EXIT_TIMEOUT) -> int:
        """The exit code; fails the test if it takes longer than ``timeout``."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{self.argv} still running {timeout} s later:\n{self.stderr}")
        self._reader.join(5)
        return code

    def kill(self) -> None:
        """Clean-up: kill the program (and any children) if still running."""
        if self.proc.poll() is None:
            try:
                children = psutil.Process(self.proc.pid).children(recursive=True)
            except psutil.NoSuchProcess:
                children = []
            for p in [*children]:
                try:
                    p.kill()
                except psutil.NoSuchProcess:
                    pass
            self.proc.kill()
            self.proc.wait(10)
        self._reader.join(5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@contextmanager
def programs() -> Iterator[Callable[..., Program]]:
    """Start programs with the yielded function; all are killed at exit."""
    started: list[Program] = []

    def start(module: str, *args: str) -> Program:
        program = Program(module, *args)
        started.append(program)
        return program

    try:
        yield start
    finally:
        for program in started:
            program.kill()


def run_cli(
    module: str, *args: str, timeout: float = START_TIMEOUT
) -> subprocess.CompletedProcess:
    """Run a program to completion."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO_ROOT,
        env=_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_scheduler(start: Callable[..., Program], *args: str) -> tuple[Program, str]:
    """A scheduler on a free loopback port, and its address."""
    scheduler = start(SCHEDULER, "--port", "0", *args)
    address = scheduler.wait_for_line(r"Scheduler at: (tcp://\S+)").group(1)
    return scheduler, address


def scheduler_identity(address: str) -> dict:
    """``identity()`` of the scheduler, through a raw rpc."""

    async def ask() -> dict:
        remote = rpc(address, timeout=5)
        try:
            return await remote.identity()
        finally:
            await remote.close_rpc()

    return asyncio.run(ask())


def wait_for_workers(address: str, n: int, timeout: float = START_TIMEOUT) -> dict:
    """The scheduler's workers, once exactly ``n`` are registered."""

    def registered() -> dict | None:
        workers = scheduler_identity(address)["workers"]
        return workers if len(workers) == n else None

    return wait_until(registered, timeout, f"{n} workers at {address}", interval=0.1)


def refused_address() -> tuple[str, socket.socket]:
    """A loopback address where connections are refused: the port is bound
    (so nobody else gets it) but not listening.  Keep the socket open."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return f"tcp://127.0.0.1:{sock.getsockname()[1]}", sock


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if "error:" in line]


def process_gone(pid: int) -> bool:
    """Whether ``pid`` has exited (a zombie waiting to be reaped counts)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_until_gone(pids: set[int], timeout: float = EXIT_TIMEOUT) -> None:
    wait_until(
        lambda: all(process_gone(pid) for pid in pids),
        timeout,
        f"processes {sorted(pids)} to exit",
    )


def stop_scheduler_once_workers_left(scheduler, address: str) -> None:
    """Wait until no worker is registered, then SIGINT the scheduler, which
    must exit cleanly."""
    wait_until(
        lambda: not scheduler_identity(address)["workers"],
        EXIT_TIMEOUT,
        "the workers to unregister",
    )
    scheduler.interrupt()
    assert scheduler.wait() == 0


# ------------------------------------------------------------------ tests


def test_scheduler_and_two_workers_then_sigint() -> None:
    with programs() as start:
        scheduler, address = start_scheduler(start)
        assert address.startswith("tcp://127.0.0.1:")
        workers = [
            start(WORKER, address, "--nthreads", "2", "--name", name, "--no-nanny")
            for name in ("alice", "bob")
        ]
        for worker in workers:
            worker.wait_for_line(r"Start worker at: tcp://127\.0\.0\.1:\d+")
            worker.wait_for_line(r"Registered to: " + re.escape(address))

        info = wait_for_workers(address, 2)
        assert sorted(w["name"] for w in info.values()) == ["alice", "bob"]
        assert all(w["nthreads"] == 2 for w in info.values())

        for program in [*workers, scheduler]:
            program.interrupt()
        for program in [*workers, scheduler]:
            assert program.wait(EXIT_TIMEOUT) == 0, program.stderr
        assert "Traceback" not in scheduler.stderr
        assert not any("Traceback" in w.stderr for w in workers)


def test_worker_options_reach_the_scheduler() -> None:
    with programs() as start:
        scheduler, address = start_scheduler(start)
        worker = start(
            WORKER,
            address,
            "--ncores",  # the legacy spelling of --nthreads
            "3",
            "--memory-limit",
            "100MB",
            "--resources",
            "GPU=2 MEM=10e9",
            "--nanny",
        )
        (info,) = wait_for_workers(address, 1).values()
        assert info["nthreads"] == 3
        assert info["memory_limit"] == 100_000_000
        assert info["resources"] == {"GPU": 2.0, "MEM": 10e9}
        assert info["nanny"] is not None
        worker.interrupt()
        assert worker.wait() == 0
        scheduler.interrupt()
        assert scheduler.wait() == 0


def test_sigterm_closes_scheduler_cleanly() -> None:
    with programs() as start:
        scheduler, _ = start_scheduler(start)
        scheduler.proc.terminate()
        assert scheduler.wait() == 0
        assert "SIGTERM" in scheduler.stderr


@pytest.mark.parametrize("module", [SCHEDULER, WORKER])
def test_help(module: str) -> None:
    result = run_cli(module, "--help")
    assert result.returncode == 0
    assert result.stdout.startswith("usage: dask-")
    assert "--scheduler-file" in result.stdout


@pytest.mark.parametrize("module", [SCHEDULER, WORKER])
def test_version(module: str) -> None:
    result = run_cli(module, "--version")
    assert result.returncode == 0
    assert "version" in result.stdout


@pytest.mark.parametrize(
    "module, args, mentions",
    [
        (SCHEDULER, ["--bogus"], "--bogus"),
        (SCHEDULER, ["--port", "eighty"], "--port"),
        (WORKER, ["tcp://127.0.0.1:1", "--nthreads", "x"], "--nthreads"),
        (WORKER, [], "SCHEDULER_ADDRESS"),
        (
            WORKER,
            ["tcp://127.0.0.1:1", "--nprocs", "2", "--worker-port", "1234"],
            "--worker-port",
        ),
        (
            WORKER,
            ["tcp://127.0.0.1:1", "--nprocs", "2", "--nanny-port", "1234"],
            "--nanny-port",
        ),
        (WORKER, ["tcp://127.0.0.1:1", "--memory-limit", "lots"], "--memory-limit"),
    ],
)
def test_bad_argument(module: str, args: list[str], mentions: str) -> None:
    result = run_cli(module, *args)
    assert result.returncode == 2, result.stderr
    (line,) = error_lines(result.stderr)
    assert mentions in line
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("resources", ["GPU", "GPU=two", "=2", "GPU=2 MEM"])
def test_bad_resources(resources: str) -> None:
    result = run_cli(WORKER, "tcp://127.0.0.1:1", "--resources", resources)
    assert result.returncode == 2, result.stderr
    (line,) = error_lines(result.stderr)
    assert "--resources" in line
    assert "Traceback" not in result.stderr


def test_worker_without_scheduler_times_out() -> None:
    address, sock = refused_address()
    with sock:
        start = time.monotonic()
        result = run_cli(WORKER, address, "--death-timeout", "1", "--no-nanny")
        elapsed = time.monotonic() - start
    assert result.returncode == 1, result.stderr
    assert f"Timed out connecting to scheduler at {address}" in result.stderr
    assert "Traceback" not in result.stderr
    assert elapsed < START_TIMEOUT


def test_worker_waits_for_late_scheduler() -> None:
    """The worker starts first and keeps retrying until the scheduler is up."""
    address, sock = refused_address()
    port = address.rsplit(":", 1)[1]
    with programs() as start:
        worker = start(WORKER, address, "--death-timeout", "30", "--no-nanny")
        worker.wait_for_line(r"Waiting to connect to: " + re.escape(address))
        sock.close()
        scheduler = start(SCHEDULER, "--port", port)
        scheduler.wait_for_line(r"Scheduler at: ")
        worker.wait_for_line(r"Registered to: " + re.escape(address))
        wait_for_workers(address, 1)
        for program in (worker, scheduler):
            program.interrupt()
            assert program.wait() == 0


@pytest.mark.parametrize("nanny", ["--no-nanny", "--nanny"])
def test_scheduler_file_roundtrip(tmp_path: Path, nanny: str) -> None:
    path = tmp_path / "scheduler.json"
    with programs() as start:
        # The worker is started first: it must wait for the file to appear.
        worker = start(WORKER, "--scheduler-file", str(path), nanny)
        worker.wait_for_line(r"Waiting for scheduler file")
        scheduler, address = start_scheduler(start, "--scheduler-file", str(path))
        assert json.loads(path.read_text())["address"] == address
        worker.wait_for_line(r"Registered to: " + re.escape(address))
        assert len(wait_for_workers(address, 1)) == 1
        worker.interrupt()
        assert worker.wait() == 0
        scheduler.interrupt()
        assert scheduler.wait() == 0
        assert not path.exists()  # the scheduler removes its file on close


def test_nprocs_registers_two_workers() -> None:
    with programs() as start:
        scheduler, address = start_scheduler(start)
        worker = start(
            WORKER,
            address,
            "--nprocs",
            "2",
            "--nthreads",
            "1",
            "--name",
            "w",
            "--no-nanny",
        )
        info = wait_for_workers(address, 2)
        assert sorted(w["name"] for w in info.values()) == ["w-0", "w-1"]
        child_pids = {w["pid"] for w in info.values()}
        assert worker.proc.pid not in child_pids and len(child_pids) == 2

        worker.interrupt()
        assert worker.wait() == 0, worker.stderr
        assert not any(psutil.pid_exists(pid) for pid in child_pids)
        stop_scheduler_once_workers_left(scheduler, address)


def test_nprocs_children_fail_together() -> None:
    address, sock = refused_address()
    with sock:
        result = run_cli(
            WORKER, address, "--nworkers", "2", "--death-timeout", "1", "--no-nanny"
        )
    assert result.returncode == 1, result.stderr
    assert result.stderr.count(f"Timed out connecting to scheduler at {address}") == 2


def test_idle_timeout() -> None:
    with programs() as start:
        scheduler, _ = start_scheduler(start, "--idle-timeout", "1")
        assert scheduler.wait(START_TIMEOUT) == 0
        assert "idle for" in scheduler.stderr


def test_scheduler_port_in_use() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = run_cli(SCHEDULER, "--port", str(port))
    assert result.returncode == 1
    assert f"Could not start the scheduler at 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


def test_unwritable_scheduler_file(tmp_path: Path) -> None:
    path = tmp_path / "no-such-dir" / "scheduler.json"
    result = run_cli(SCHEDULER, "--port", "0", "--scheduler-file", str(path))
    assert result.returncode == 1
    assert "Could not start the scheduler" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "module, args, variable",
    [
        (SCHEDULER, ["--port", "0"], "DASK_DISTRIBUTED__SCHEDULER__WORKER_TTL"),
        (WORKER, ["tcp://127.0.0.1:1"], "DASK_DISTRIBUTED__WORKER__HEARTBEAT_INTERVAL"),
    ],
)
def test_malformed_config_variable(
    module: str, args: list[str], variable: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(variable, "not-a-duration")
    result = run_cli(
        module, *args, "--no-nanny" if module == WORKER else "--no-dashboard"
    )
    assert result.returncode == 1, result.stderr
    assert variable in result.stderr
    assert "Traceback" not in result.stderr


def test_sigint_while_waiting_for_scheduler() -> None:
    """Ctrl-C stops a worker still retrying to reach its scheduler."""
    address, sock = refused_address()
    with sock, programs() as start:
        worker = start(WORKER, address, "--death-timeout", "60", "--no-nanny")
        worker.wait_for_line(r"Waiting to connect to: " + re.escape(address))
        worker.interrupt()
        assert worker.wait() == 0, worker.stderr
        assert "Traceback" not in worker.stderr


@pytest.mark.parametrize(
    "nanny, port_option",
    [
        ("--no-nanny", "--worker-port"),
        ("--nanny", "--worker-port"),
        ("--nanny", "--nanny-port"),
    ],
)
def test_port_in_use(nanny: str, port_option: str) -> None:
    with socket.socket() as sock, programs() as start:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        scheduler, address = start_scheduler(start)
        result = run_cli(
            WORKER, address, "--host", "127.0.0.1", port_option, str(port), nanny
        )
        assert result.returncode == 1, result.stderr
        assert f"Could not listen on 127.0.0.1:{port}" in result.stderr
        assert "Traceback" not in result.stderr
        scheduler.interrupt()
        assert scheduler.wait() == 0


# ------------------------------------------------------------------ nannies


def test_default_worker_runs_under_a_nanny() -> None:
    with programs() as start:
        scheduler, address = start_scheduler(start)
        worker = start(WORKER, address, "--nthreads", "1")
        worker.wait_for_line(r"Start Nanny at: tcp://127\.0\.0\.1:\d+")
        worker.wait_for_line(r"Registered to: " + re.escape(address))
        (info,) = wait_for_workers(address, 1).values()
        assert info["nanny"] is not None
        assert info["nthreads"] == 1
        assert info["pid"] != worker.proc.pid
        # The nanny runs in the dask-worker process; the worker in its child.
        assert psutil.Process(info["pid"]).ppid() == worker.proc.pid

        worker.interrupt()
        assert worker.wait() == 0, worker.stderr
        wait_until_gone({info["pid"]})
        assert "Traceback" not in worker.stderr
        scheduler.interrupt()
        assert scheduler.wait() == 0


def test_nanny_restarts_a_killed_worker(tmp_path: Path) -> None:
    with programs() as start:
        scheduler, address = start_scheduler(start)
        # A killed worker cannot remove its scratch directory: keep it in tmp_path.
        worker = start(
            WORKER,
            address,
            "--nthreads",
            "1",
            "--name",
            "phoenix",
            "--local-directory",
            str(tmp_path),
        )
        (old,) = wait_for_workers(address, 1).values()
        os.kill(old["pid"], signal.SIGKILL)

        def restarted() -> dict | None:
            workers = list(scheduler_identity(address)["workers"].values())
            if len(workers) == 1 and workers[0]["pid"] != old["pid"]:
                return workers[0]
            return None

        new = wait_until(restarted, START_TIMEOUT, "the worker to be restarted")
        assert new["name"] == "phoenix"
        assert new["nanny"] == old["nanny"]
        assert psutil.Process(new["pid"]).ppid() == worker.proc.pid

        worker.interrupt()
        assert worker.wait() == 0, worker.stderr
        wait_until_gone({new["pid"]})
        scheduler.interrupt()
        assert scheduler.wait() == 0


def test_nprocs_with_nannies() -> None:
    with programs() as start:
        scheduler, address = start_scheduler(start)
        worker = start(
            WORKER, address, "--nprocs", "2", "--nthreads", "1", "--name", "w"
        )
        info = wait_for_workers(address, 2)
        assert sorted(w["name"] for w in info.values()) == ["w-0", "w-1"]
        nannies = {w["nanny"] for w in info.values()}
        assert None not in nannies and len(nannies) == 2
        pids = {w["pid"] for w in info.values()}
        assert worker.proc.pid not in pids and len(pids) == 2

        worker.interrupt()
        assert worker.wait() == 0, worker.stderr
        wait_until_gone(pids)
        stop_scheduler_once_workers_left(scheduler, address)


def test_sigterm_stops_nanny_and_worker() -> None:
    with programs() as start:
        scheduler, address = start_scheduler(start)
        worker = start(WORKER, address, "--nthreads", "1")
        (info,) = wait_for_workers(address, 1).values()

        worker.proc.terminate()
        assert worker.wait() == 0, worker.stderr
        assert "SIGTERM" in worker.stderr
        assert "Traceback" not in worker.stderr
        wait_until_gone({info["pid"]})
        scheduler.interrupt()
        assert scheduler.wait() == 0


def test_nanny_worker_without_scheduler_times_out() -> None:
    address, sock = refused_address()
    with sock:
        result = run_cli(WORKER, address, "--death-timeout", "1")
    assert result.returncode == 1, result.stderr
    message = f"Timed out connecting to scheduler at {address} after 1 s"
    assert result.stderr.count(message) == 1, result.stderr
    assert "Traceback" not in result.stderr


def test_sigint_while_nanny_waits_for_scheduler(tmp_path: Path) -> None:
    """Ctrl-C stops a nanny whose worker still retries to reach the scheduler."""
    address, sock = refused_address()
    with sock, programs() as start:
        # The nanny may have to kill the worker: keep its directory in tmp_path.
        worker = start(
            WORKER,
            address,
            "--death-timeout",
            "60",
            "--local-directory",
            str(tmp_path),
        )
        worker.wait_for_line(r"Waiting to connect to: " + re.escape(address))
        # Wait for the worker process, so the nanny has one to stop.
        pids = wait_until(
            lambda: {p.pid for p in psutil.Process(worker.proc.pid).children()},
            START_TIMEOUT,
            "the worker process to start",
        )
        worker.interrupt()
        assert worker.wait() == 0, worker.stderr
        wait_until_gone(pids)
        assert "Traceback" not in worker.stderr


def test_nannies_exit_when_their_scheduler_is_gone() -> None:
    """Workers that lose their scheduler for good close (exit code 0), their
    nannies close with them, and so does dask-worker."""
    with programs() as start:
        scheduler, address = start_scheduler(start)
        worker = start(WORKER, address, "--nprocs", "2", "--death-timeout", "2")
        pids = {w["pid"] for w in wait_for_workers(address, 2).values()}
        scheduler.interrupt()
        assert scheduler.wait() == 0
        assert worker.wait(START_TIMEOUT) == 0, worker.stderr
        assert "Every nanny closed" in worker.stderr
        wait_until_gone(pids)


def test_nanny_that_cannot_restart_its_worker_exits_1(tmp_path: Path) -> None:
    """A worker killed while its scheduler is gone cannot be restarted: the
    nanny closes, and dask-worker exits with code 1."""
    with programs() as start:
        scheduler, address = start_scheduler(start)
        worker = start(
            WORKER,
            address,
            "--name",
            "orphan",
            "--death-timeout",
            "5",
            "--local-directory",
            str(tmp_path),
        )
        (info,) = wait_for_workers(address, 1).values()
        scheduler.interrupt()
        assert scheduler.wait() == 0
        # The worker would close on its own (code 0) once its 5 s of trying to
        # reconnect are up; killing it first makes its nanny restart it.
        os.kill(info["pid"], signal.SIGKILL)
        assert worker.wait(START_TIMEOUT) == 1, worker.stderr
        assert "Could not restart worker 'orphan'" in worker.stderr
        wait_until_gone({info["pid"]})


def test_worker_lifetime_restart_and_interface() -> None:
    """The options dask-jobqueue's job scripts pass: a worker on interface
    ``lo`` whose lifetime ends is replaced by a fresh process under the same
    nanny; without --lifetime-restart the nanny and the command end."""
    with programs() as start:
        scheduler, address = start_scheduler(start)
        worker = start(WORKER, address, "--nthreads", "1", "--interface", "lo",
                       "--lifetime", "2s", "--lifetime-restart")
        (old,) = wait_for_workers(address, 1).values()
        assert old["host"] == "127.0.0.1" or old["id"].startswith("tcp://127.0.0.1")

        def restarted() -> dict | None:
            workers = list(scheduler_identity(address)["workers"].values())
            if len(workers) == 1 and workers[0]["pid"] != old["pid"]:
                return workers[0]
            return None

        new = wait_until(restarted, START_TIMEOUT, "the worker to come back after its lifetime")
        assert new["nanny"] == old["nanny"]
        worker.interrupt()
        assert worker.wait() == 0, worker.stderr

        once = start(WORKER, address, "--nthreads", "1", "--lifetime", "1s")
        assert once.wait(START_TIMEOUT) == 0, once.stderr  # retired, then ended
        scheduler.interrupt()
        assert scheduler.wait() == 0


@pytest.mark.parametrize("text, expected", [("3", 3), ("auto", os.cpu_count() or 1),
                                            ("-1", os.cpu_count() or 1)])
def test_nworkers_forms(text: str, expected: int) -> None:
    from distributed.cli.dask_worker import make_parser

    args = make_parser().parse_args(["tcp://127.0.0.1:1", "--nworkers", text])
    assert args.nprocs == expected
