"""Shared-secret authentication wired into connect/listen and the servers
(issue 14, point 2): with the secret everything works; a wrong or missing
secret is refused with ``AuthenticationError`` and changes nothing on the
server, which keeps serving; the secret shows in no repr and no log."""

from __future__ import annotations

import os
import stat

import pytest

from distributed import Client, Scheduler, config
from distributed.comm import connect, listen
from distributed.comm import limits as comm_limits
from distributed.comm.auth import AuthenticationError
from distributed.comm.auth_secret import (
    AuthConfig,
    auth_needed,
    default_secret_path,
    ensure_secret,
    find_secret,
    read_secret_file,
)
from distributed.security import Security
from distributed.utils_test import captured_logger, gen_cluster, gen_test, inc

SECRET = "correct-horse-battery-staple-0123456789"
OTHER = "a-different-secret-abcdefghijklmnopqrstuvwxyz"


@pytest.fixture(autouse=True)
def _private_config_dir(tmp_path, monkeypatch):
    """Never read or write the real ~/.config/dask."""
    monkeypatch.setenv("DASK_CONFIG", str(tmp_path / "dask"))
    monkeypatch.delenv("DASK_DISTRIBUTED__COMM__AUTH__SECRET", raising=False)


# -- Security / configuration ------------------------------------------------


def test_security_auth_fields_and_hidden_repr():
    sec = Security(auth_secret=SECRET)
    assert sec.auth_secret == SECRET and sec.auth_mode == "auto"
    assert sec.require_encryption is False  # auth kwargs are not TLS kwargs
    for text in (repr(sec), sec._repr_html_(), repr(sec.get_connection_args("client")),
                 repr(sec.get_listen_args("scheduler"))):
        assert SECRET not in text
    assert "<hidden>" in repr(sec)
    assert Security().auth_secret is None


def test_security_bad_auth_input():
    with pytest.raises(ValueError, match="auth_mode"):
        Security(auth_mode="sometimes")
    with pytest.raises(TypeError, match="auth_secret"):
        Security(auth_secret="")


def test_secret_from_config_and_env(monkeypatch):
    with config.set({"distributed.comm.auth.secret": SECRET}):
        assert Security().auth_secret == SECRET
        assert Security(auth_secret=OTHER).auth_secret == OTHER
        assert Security(auth_mode="disabled").auth_secret is None
    monkeypatch.setenv("DASK_DISTRIBUTED__COMM__AUTH__SECRET", SECRET)
    config.refresh()
    try:
        assert Security().auth_secret == SECRET
    finally:
        monkeypatch.delenv("DASK_DISTRIBUTED__COMM__AUTH__SECRET")
        config.refresh()


def test_secret_file(tmp_path):
    path = tmp_path / "secret"
    path.write_text(SECRET + "\n")
    path.chmod(0o600)
    with config.set({"distributed.comm.auth.secret-file": str(path)}):
        assert Security().auth_secret == SECRET
    path.chmod(0o644)
    with config.set({"distributed.comm.auth.secret-file": str(path)}):
        with pytest.raises(PermissionError, match="too open"):
            Security()
    with config.set({"distributed.comm.auth.secret-file": str(tmp_path / "missing")}):
        with pytest.raises(OSError):  # configured but unreadable: fail closed
            Security()


def test_auto_policy_decision():
    assert not auth_needed("auto", None, ["tcp://127.0.0.1:0", "tcp://[::1]:0"])
    assert not auth_needed("auto", None, ["tcp://localhost:8786"])
    assert auth_needed("auto", None, ["tcp://0.0.0.0:8786"])
    assert auth_needed("auto", None, ["tcp://192.168.1.5:8786"])
    assert auth_needed("auto", None, ["tcp://:8786"])
    assert not auth_needed("auto", None, ["tls://0.0.0.0:8786"])  # certificates authenticate
    assert auth_needed("auto", SECRET, ["tcp://127.0.0.1:0"])
    assert auth_needed("required", None, ["tcp://127.0.0.1:0"])
    assert not auth_needed("disabled", SECRET, ["tcp://0.0.0.0:0"])
    with pytest.raises(ValueError):
        auth_needed("maybe", None, [])


def test_generated_secret_file_is_private():
    path = default_secret_path()
    assert not os.path.exists(path)
    secret = ensure_secret()
    assert len(secret) == 64
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
    assert ensure_secret() == secret  # found, not regenerated
    assert find_secret() == secret  # same-user processes find it with no flags
    assert Security().auth_secret == secret
    assert read_secret_file(path) == secret


# -- the comm layer ----------------------------------------------------------


async def _echo_listener(auth):
    served = []

    async def handler(comm):
        served.append(comm)
        msg = await comm.read()
        await comm.write(msg)
        await comm.close()

    return listen("tcp://127.0.0.1:0", handler, auth=auth), served


@pytest.mark.parametrize("client_secret", [SECRET, None])
@gen_test()
async def test_comm_matching_or_no_secret_anywhere(client_secret):
    server_secret = client_secret
    listener, served = await _echo_listener(AuthConfig(server_secret))
    async with listener:
        comm = await connect(listener.address, auth=AuthConfig(client_secret))
        await comm.write({"x": 1})
        assert await comm.read() == {"x": 1}
        await comm.close()


@gen_test()
async def test_comm_client_secret_meets_server_without_one():
    listener, served = await _echo_listener(AuthConfig(None))
    async with listener:
        comm = await connect(listener.address, auth=AuthConfig(SECRET))
        await comm.write("hi")
        assert await comm.read() == "hi"
        await comm.close()


@gen_test()
async def test_comm_wrong_or_missing_secret_refused():
    listener, served = await _echo_listener(AuthConfig(SECRET))
    async with listener:
        comm_limits._last_warning.clear()  # one warning per host per 10 s: start afresh
        with captured_logger("distributed.comm.limits") as log:
            with pytest.raises(AuthenticationError, match="did not accept|could not prove"):
                await connect(listener.address, auth=AuthConfig(OTHER))
            # No secret at all: the first read names the fix.
            comm = await connect(listener.address, auth=AuthConfig(None))
            await comm.write({"op": "anything"})
            with pytest.raises(AuthenticationError, match="DASK_DISTRIBUTED__COMM__AUTH__SECRET"):
                await comm.read()
            # A raw client (no auth= at all) is refused the same way.
            comm = await connect(listener.address)
            await comm.write({"op": "anything"})
            with pytest.raises(AuthenticationError):
                await comm.read()
        assert served == []  # the handler never saw them
        assert SECRET not in log.getvalue() and OTHER not in log.getvalue()
        assert "rejected" in log.getvalue()
        # ... and the listener keeps serving a good client.
        comm = await connect(listener.address, auth=AuthConfig(SECRET))
        await comm.write(123)
        assert await comm.read() == 123
        await comm.close()


# -- servers -----------------------------------------------------------------


@gen_cluster(client=True, security=Security(auth_secret=SECRET))
async def test_cluster_with_secret(c, s, a, b):
    assert await c.submit(inc, 1) == 2
    assert await c.gather(c.map(inc, range(20))) == list(range(1, 21))
    assert SECRET not in repr(s.identity()) and SECRET not in repr(await c.scheduler_info())


@gen_cluster(client=False, security=Security(auth_secret=SECRET))
async def test_cluster_refuses_wrong_or_missing_secret(s, a, b):
    clients_before = set(s.clients)
    for bad in (Security(auth_secret=OTHER), Security()):
        with pytest.raises(AuthenticationError):
            await Client(s.address, asynchronous=True, security=bad, timeout=5)
    assert set(s.clients) == clients_before
    assert len(s.workers) == 2
    async with Client(s.address, asynchronous=True, security=Security(auth_secret=SECRET)) as c:
        assert await c.submit(inc, 1) == 2


@gen_cluster(client=True, nthreads=[])
async def test_loopback_without_secret_unchanged(c, s):
    assert s.security.auth_secret is None
    assert Scheduler is not None


@gen_test()
async def test_required_mode_generates_a_secret_others_find():
    """What a server listening off-loopback does in ``auto`` mode, shown on
    loopback with ``required`` (tests bind loopback only)."""
    path = default_secret_path()
    async with Scheduler(security=Security(auth_mode="required"), dashboard_address=None) as s:
        assert os.path.exists(path)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        secret = read_secret_file(path)
        assert s.security.auth_secret == secret
        # A same-user process finds the file with no flags ...
        async with Client(s.address, asynchronous=True, security=Security()) as c:
            assert c.security.auth_secret == secret
        # ... one without it is refused.
        with pytest.raises(AuthenticationError):
            await Client(s.address, asynchronous=True, timeout=5,
                         security=Security(auth_mode="disabled"))


@gen_test()
async def test_disabled_mode_off_loopback_warns_and_stays_off():
    s = Scheduler(security=Security(auth_mode="disabled"), dashboard_address=None)
    with captured_logger("distributed.core") as log:
        s._apply_auth_policy("tcp://0.0.0.0:0")  # the decision only: nothing is bound
    assert "anyone who can reach" in log.getvalue()
    assert s.security.auth_secret is None
    assert not os.path.exists(default_secret_path())


@gen_test()
async def test_scheduler_file_is_private_and_carries_the_secret(tmp_path):
    import json

    from distributed import Worker

    sched_file = str(tmp_path / "scheduler.json")
    with open(sched_file, "w") as f:  # an old, world-readable file is tightened
        f.write("{}")
    os.chmod(sched_file, 0o644)
    async with Scheduler(security=Security(auth_secret=SECRET), scheduler_file=sched_file,
                         dashboard_address=None) as s:
        assert stat.S_IMODE(os.stat(sched_file).st_mode) == 0o600
        with open(sched_file) as f:
            assert json.load(f)["auth-secret"] == SECRET
        assert SECRET not in repr(s.identity())
        # No secret configured anywhere but the scheduler file: enough to join.
        async with Worker(scheduler_file=sched_file, nthreads=1) as w:
            assert w.security.auth_secret == SECRET
            async with Client(scheduler_file=sched_file, asynchronous=True) as c:
                assert await c.submit(inc, 1) == 2
                assert SECRET not in repr(await c.scheduler_info())


# -- real processes: the command line ----------------------------------------


def _cli_cluster_works(start, scheduler_args, worker_args, client_security):
    from distributed.tests.test_cli import WORKER, start_scheduler, wait_until

    scheduler, address = start_scheduler(start, "--host", "127.0.0.1", "--no-dashboard",
                                         *scheduler_args)
    worker = start(WORKER, address, "--nthreads", "1", "--no-nanny", *worker_args)
    with Client(address, security=client_security, timeout=30) as c:
        wait_until(lambda: len(c.scheduler_info()["workers"]) == 1, 30, "a worker")
        assert c.submit(inc, 1).result(timeout=30) == 2
    return scheduler, worker


@pytest.mark.timeout(120)
def test_cli_auth_secret_file(tmp_path):
    from distributed.tests.test_cli import programs

    path = tmp_path / "cluster-secret"
    path.write_text(SECRET)
    path.chmod(0o600)
    sched_file = tmp_path / "scheduler.json"
    with programs() as start:
        scheduler, worker = _cli_cluster_works(
            start, ["--auth-secret-file", str(path), "--scheduler-file", str(sched_file)],
            ["--auth-secret-file", str(path)], Security(auth_secret=SECRET))
        assert stat.S_IMODE(os.stat(sched_file).st_mode) == 0o600
        assert all(SECRET not in arg for arg in worker.argv)
        address = json_address(sched_file)
        with pytest.raises(AuthenticationError):
            Client(address, security=Security(auth_mode="disabled"), timeout=5)
        assert SECRET not in scheduler.stderr and SECRET not in worker.stderr


def json_address(path) -> str:
    import json

    with open(path) as f:
        return json.load(f)["address"]


@pytest.mark.timeout(120)
def test_cli_no_flags_with_generated_secret(monkeypatch):
    """What ``--host 0.0.0.0`` triggers (mode required stands in for the
    non-loopback bind): the scheduler generates the default secret file and
    a worker and a client of the same user find it with no flags."""
    from distributed.tests.test_cli import programs

    monkeypatch.setenv("DASK_DISTRIBUTED__COMM__AUTH__MODE", "required")
    with programs() as start:
        scheduler, worker = _cli_cluster_works(start, [], [], None)
    assert os.path.exists(default_secret_path())


def test_cli_secret_file_too_open(tmp_path):
    from distributed.tests.test_cli import SCHEDULER, run_cli

    path = tmp_path / "cluster-secret"
    path.write_text(SECRET)
    path.chmod(0o644)
    result = run_cli(SCHEDULER, "--auth-secret-file", str(path))
    assert result.returncode != 0
    assert "too open" in result.stderr and SECRET not in result.stderr


class _LeavesAMark:
    """Unpickling it creates a file: proof that a payload was (not) unpickled."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@gen_test()
async def test_unauthenticated_pickle_is_never_unpickled(tmp_path):
    from distributed.protocol import to_serialize

    marker = str(tmp_path / "unpickled")
    listener, served = await _echo_listener(AuthConfig(SECRET))
    async with listener:
        comm = await connect(listener.address)  # no secret, no handshake
        await comm.write({"op": "echo", "x": to_serialize(_LeavesAMark(marker))})
        with pytest.raises(AuthenticationError):
            await comm.read()
    assert served == []
    assert not os.path.exists(marker)


@gen_cluster(client=True, security=Security(auth_secret=SECRET))
async def test_worker_with_wrong_secret_cannot_join(c, s, a, b):
    from distributed import Worker

    with captured_logger("distributed") as log:
        with pytest.raises(AuthenticationError, match="could not prove"):
            async with Worker(s.address, nthreads=1, security=Security(auth_secret=OTHER),
                              death_timeout=5):
                pass
    assert len(s.workers) == 2
    assert SECRET not in log.getvalue() and OTHER not in log.getvalue()
    assert await c.submit(inc, 1) == 2


# Certificates made for this cluster, and a secret on top (temporary() adds none by itself).
_TLS = Security.temporary(auth_secret="a secret inside TLS " + "7" * 20)


@gen_cluster(client=True, scheduler="tls://127.0.0.1", security=_TLS,
             nthreads=[("tls://127.0.0.1", 1)])
async def test_secret_inside_tls(c, s, a):
    import copy

    assert _TLS.auth_secret is not None and _TLS.auth_secret not in repr(_TLS)
    assert await c.submit(inc, 1) == 2
    wrong = copy.copy(_TLS)
    wrong.auth_secret = OTHER  # the right certificates, the wrong secret
    with pytest.raises(AuthenticationError):
        await Client(s.address, asynchronous=True, security=wrong, timeout=5)
    assert await c.submit(inc, 2) == 3


@gen_test()
async def test_worker_that_generates_a_secret_is_still_reached():
    """A worker listening off-loopback in ``auto`` mode generates the secret
    file while its scheduler, a peer and a client, already running, have
    none: they find the new file when they next connect, so the worker is
    reachable.  (Tests bind loopback only: the file is made here as the
    worker's policy would, then the worker starts and finds it.)"""
    from distributed import Worker

    async with Scheduler(port=0, dashboard_address=None) as s, \
            Worker(s.address, nthreads=1) as b, \
            Client(s.address, asynchronous=True) as c:
        assert s.security.auth_secret is None and b.security.auth_secret is None
        secret = ensure_secret()
        async with Worker(s.address, nthreads=1) as a:
            assert a.security.auth_secret == secret  # its listener requires it
            x = c.submit(inc, 1, workers=[a.address])
            y = c.submit(inc, x, workers=[b.address])  # b fetches from a
            assert await y == 3
            assert await x == 2  # the client gathers from a
            assert await c.run(lambda: 1, workers=[a.address]) == {a.address: 1}
