"""The security spec's proof figures that need a live cluster and a view of
the wire: F6 (refusals are quick and harmless while a good client works),
F7 (one warning per burst), F9 (a relay recording a whole session never sees
the secret, and replaying it fails) and F12 (the secret is not on a worker's
command line)."""

from __future__ import annotations

import asyncio
import sys
import time

import psutil
import pytest

from distributed import Client, config
from distributed.comm import AuthenticationError, connect
from distributed.comm import limits as comm_limits
from distributed.comm.auth import CLIENT_HELLO_SIZE, PROOF_SIZE, SERVER_HELLO_SIZE
from distributed.security import Security
from distributed.utils_test import captured_logger, gen_cluster, inc, popen

SECRET = "proof-test-secret-0123456789abcdef0123456789abcdef"
OTHER = "some-other-secret-0123456789abcdef0123456789abcdef"


@gen_cluster(client=True, security=Security(auth_secret=SECRET))
async def test_refusals_are_quick_while_a_good_client_computes(c, s, a, b):
    """F6: clients with no secret or the wrong one are refused within a
    second each, change nothing, and a 100-task map running meanwhile
    completes with every result."""
    clients = set(s.clients)
    futures = c.map(inc, range(100))
    for bad in [Security(auth_secret=OTHER), Security(auth_mode="disabled")] * 3:
        start = time.monotonic()
        with pytest.raises(AuthenticationError) as info:
            await Client(s.address, asynchronous=True, security=bad, timeout=5)
        assert time.monotonic() - start < 5  # refused at once, not at the connect timeout
        assert "DASK_DISTRIBUTED__COMM__AUTH__SECRET" in str(info.value) or \
            "did not accept" in str(info.value) or "could not prove" in str(info.value)
    assert await c.gather(futures) == list(range(1, 101))
    assert set(s.clients) == clients
    assert len(s.workers) == 2


@gen_cluster(client=True, security=Security(auth_secret=SECRET))
async def test_a_burst_of_refusals_logs_one_warning(c, s, a, b):
    """F7: ten wrong-secret attempts from one host: exactly one WARNING,
    and the server serves on."""
    comm_limits._last_warning.clear()
    with captured_logger("distributed.comm.limits") as log:
        for _ in range(10):
            with pytest.raises(AuthenticationError):
                await connect(s.address, timeout=5,
                              **Security(auth_secret=OTHER).get_connection_args("client"))
    lines = [line for line in log.getvalue().splitlines() if "rejected" in line]
    assert len(lines) == 1, lines
    assert SECRET not in log.getvalue() and OTHER not in log.getvalue()
    assert await c.submit(inc, 1) == 2


class _Relay:
    """A TCP relay on loopback that records everything in both directions."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.recorded: list[tuple[str, bytes]] = []
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _handle(self, reader, writer):
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)

        async def pipe(src, dst, direction):
            try:
                while data := await src.read(65536):
                    self.recorded.append((direction, data))
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer, "c->s"), pipe(up_reader, writer, "s->c"))

    def stream(self, direction: str) -> bytes:
        return b"".join(d for way, d in self.recorded if way == direction)

    async def close(self):
        self.server.close()
        await self.server.wait_closed()


@gen_cluster(client=False, security=Security(auth_secret=SECRET))
async def test_relay_never_sees_the_secret_and_cannot_replay(s, a, b):
    """F9: a relay records a whole session (handshake, graph, results); the
    secret appears in no form, and replaying the recorded client side on a
    new connection is refused."""
    relay = _Relay(int(s.address.rsplit(":", 1)[1]))
    port = await relay.start()
    sec = Security(auth_secret=SECRET)
    async with Client(f"tcp://127.0.0.1:{port}", asynchronous=True, security=sec) as c:
        assert await c.submit(inc, 1) == 2
        assert sum(await c.gather(c.map(inc, range(10)))) == 55
    wire = relay.stream("c->s") + relay.stream("s->c")
    assert wire  # the session went through the relay
    for form in (SECRET.encode(), SECRET.encode().hex().encode(), SECRET.encode("utf-16-le")):
        assert form not in wire
    await relay.close()

    # Replay the first recorded connection's ClientHello and ClientProof.
    client_side = relay.stream("c->s")
    hello, proof = client_side[:CLIENT_HELLO_SIZE], \
        client_side[CLIENT_HELLO_SIZE:CLIENT_HELLO_SIZE + PROOF_SIZE]
    reader, writer = await asyncio.open_connection("127.0.0.1", int(s.address.rsplit(":", 1)[1]))
    writer.write(hello)
    server_hello = await reader.readexactly(SERVER_HELLO_SIZE)
    assert server_hello[5] == 0  # OK so far: a fresh nonce was issued ...
    writer.write(proof)
    verdict = await asyncio.wait_for(reader.read(1), 5)
    assert verdict == b"\x02"  # ... so the old proof fails: AUTH_FAILED
    writer.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/PID/cmdline")
def test_secret_is_not_on_a_workers_command_line(tmp_path):
    """F12: workers find the secret through the scheduler file, never argv."""
    scheduler_file = tmp_path / "scheduler.json"
    env = {"DASK_DISTRIBUTED__COMM__AUTH__MODE": "required",
           "DASK_CONFIG": str(tmp_path / "config")}
    with popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                "--port", "0", "--scheduler-file", str(scheduler_file),
                "--no-dashboard"], env=env):
        deadline = time.monotonic() + 30
        while not scheduler_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        with popen([sys.executable, "-m", "distributed.cli.dask_worker", "--scheduler-file",
                    str(scheduler_file), "--nthreads", "1"], env=env) as worker:
            import json

            secret = json.loads(scheduler_file.read_text())["auth-secret"]
            with config.set({"distributed.comm.auth.mode": "required"}):
                with Client(scheduler_file=str(scheduler_file), timeout=30) as c:
                    c.wait_for_workers(1, timeout=30)
                    assert c.submit(inc, 1).result(timeout=30) == 2
                    assert secret not in repr(c.scheduler_info())
            for proc in [psutil.Process(worker.pid), *psutil.Process(worker.pid).children(True)]:
                assert secret not in " ".join(proc.cmdline())
