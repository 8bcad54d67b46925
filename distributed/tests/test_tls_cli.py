"""dask-scheduler and dask-worker with --tls-ca-file/--tls-cert/--tls-key, in
subprocesses, and a Client connecting with the same certificates."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from distributed import Client
from distributed.cli.tls_options import security_from_args
from distributed.utils_test import get_cert, inc, popen, tls_security

pytestmark = pytest.mark.timeout(120)

START_TIMEOUT = 30


def _tls_args(cert: str = "tls-cert.pem", key: str = "tls-key.pem") -> list[str]:
    return ["--tls-ca-file", get_cert("tls-ca-cert.pem"),
            "--tls-cert", get_cert(cert), "--tls-key", get_cert(key)]


def _read_address(path: Path, proc: subprocess.Popen) -> str:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the scheduler exited: {proc.stdout.read().decode()}")
        try:
            return json.loads(path.read_text())["address"]
        except (OSError, ValueError, KeyError):
            time.sleep(0.05)
    raise AssertionError(f"timed out after {START_TIMEOUT} s waiting for {path}")


@pytest.mark.parametrize("nanny", ["--nanny", "--no-nanny"])
def test_tls_scheduler_and_worker_from_the_command_line(tmp_path, nanny):
    sfile = tmp_path / "scheduler.json"
    with popen(["dask-scheduler", "--port", "0", "--scheduler-file", str(sfile),
                *_tls_args()]) as sched:
        address = _read_address(sfile, sched)
        assert address.startswith("tls://127.0.0.1:")
        # The worker's certificate and key in one file (--tls-cert only).
        with popen(["dask-worker", address, nanny, "--nthreads", "1",
                    "--tls-ca-file", get_cert("tls-ca-cert.pem"),
                    "--tls-cert", get_cert("tls-key-cert.pem")]):
            with Client(address, security=tls_security(), timeout=START_TIMEOUT) as c:
                c.wait_for_workers(1, timeout=START_TIMEOUT)
                [worker] = c.scheduler_info()["workers"]
                assert worker.startswith("tls://")
                assert c.submit(inc, 1).result(timeout=START_TIMEOUT) == 2


def test_plain_worker_cannot_join_a_tls_scheduler(tmp_path):
    sfile = tmp_path / "scheduler.json"
    with popen(["dask-scheduler", "--port", "0", "--scheduler-file", str(sfile),
                *_tls_args()]) as sched:
        address = _read_address(sfile, sched)
        plain = address.replace("tls://", "tcp://")
        worker = subprocess.run(
            [sys.executable, "-m", "distributed.cli.dask_worker", plain, "--no-nanny",
             "--death-timeout", "20"],
            capture_output=True, text=True, timeout=90)
        assert worker.returncode != 0
        assert "only accepts TLS" in worker.stdout + worker.stderr


def test_tls_options_need_existing_files(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "distributed.cli.dask_scheduler", "--tls-cert",
         str(tmp_path / "missing.pem")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "does not exist" in result.stderr


def test_security_from_args_roles():
    import argparse

    ns = argparse.Namespace(tls_ca_file="/ca", tls_cert="/c", tls_key="/k")
    assert security_from_args(ns, "worker") == {
        "tls_ca_file": "/ca", "tls_worker_cert": "/c", "tls_worker_key": "/k"}
    with pytest.raises(ValueError, match="role"):
        security_from_args(ns, "client")


def test_worker_scheduler_sni_option(tmp_path):
    sfile = tmp_path / "scheduler.json"
    with popen(["dask-scheduler", "--port", "0", "--scheduler-file", str(sfile),
                *_tls_args()]) as sched:
        address = _read_address(sfile, sched)
        with popen(["dask-worker", address, "--no-nanny", "--scheduler-sni", "localhost",
                    *_tls_args()]):
            with Client(address, security=tls_security(), timeout=START_TIMEOUT) as c:
                c.wait_for_workers(1, timeout=START_TIMEOUT)
                assert c.run(lambda dask_worker: dask_worker.connection_args["server_hostname"]) \
                    == {w: "localhost" for w in c.scheduler_info()["workers"]}
