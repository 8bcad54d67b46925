"""A network partition with real hosts: a scheduler and two workers in
three network namespaces joined by a bridge, started through the CLIs; one
worker's host is cut off mid-graph and the graph still finishes with the
exact result, within seconds of the configured timeouts.

Run as root (``ip netns``); skipped otherwise.  The namespaces, the bridge
and the addresses (10.x, inside the namespaces only) are made by the test
and removed after it.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import textwrap
import time

import pytest

from distributed.scheduler.state import SchedulerState
from distributed.worker.state import GatherDep, WorkerState

pytestmark = pytest.mark.timeout(240)

#: What the processes are told (short, so that the test is short): a peer
#: silent this long is dead (``timeouts.tcp``), a connect gives up after
#: ``timeouts.connect``.
TCP_TIMEOUT = 5
CONNECT_TIMEOUT = 5


def _why_no_namespaces() -> str | None:
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    probe = f"dskprobe{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _ip(*args: str, ns: str | None = None) -> None:
    cmd = ["ip", *(["-n", ns] if ns else []), *args]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {done.stderr.strip()}")


@pytest.fixture
def hosts():
    """Three "hosts" (namespaces s, a, b) on one bridge (in a fourth
    namespace, so the machine's own network is untouched).  Yields
    ``{name: (namespace, address, bridge-side link)}`` and the bridge's
    namespace."""
    reason = _why_no_namespaces()
    if reason:
        pytest.skip(reason)
    tag = f"{os.getpid() % 100000}"
    net = f"10.{100 + os.getpid() % 100}.{os.getpid() % 250}"
    bridge_ns = f"dsk{tag}-br"
    spaces = {name: f"dsk{tag}-{name}" for name in "sab"}
    made = []
    try:
        _ip("netns", "add", bridge_ns)
        made.append(bridge_ns)
        _ip("link", "add", "br0", "type", "bridge", ns=bridge_ns)
        _ip("link", "set", "br0", "up", ns=bridge_ns)
        out = {}
        for i, (name, ns) in enumerate(spaces.items(), start=1):
            _ip("netns", "add", ns)
            made.append(ns)
            host_end, bridge_end = f"d{tag}{name}0", f"d{tag}{name}1"
            _ip("link", "add", host_end, "type", "veth", "peer", "name", bridge_end)
            _ip("link", "set", host_end, "netns", ns)
            _ip("link", "set", bridge_end, "netns", bridge_ns)
            _ip("link", "set", bridge_end, "master", "br0", ns=bridge_ns)
            _ip("link", "set", bridge_end, "up", ns=bridge_ns)
            _ip("addr", "add", f"{net}.{i}/24", "dev", host_end, ns=ns)
            _ip("link", "set", host_end, "up", ns=ns)
            _ip("link", "set", "lo", "up", ns=ns)
            out[name] = (ns, f"{net}.{i}", bridge_end)
        yield out, bridge_ns
    finally:
        for ns in reversed(made):  # deleting a namespace deletes its links
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


CLIENT = textwrap.dedent("""
    import json, sys, time
    from distributed import Client

    scheduler, a, b, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])

    def leaf(i):
        time.sleep(0.2)
        return bytes(1_000_000) + bytes([i % 256])

    def size(x):
        return len(x) + x[-1]

    def total(*sizes):
        return sum(sizes)

    with Client(scheduler, timeout=60) as c:
        c.wait_for_workers(2, timeout=60)
        workers = sorted(c.scheduler_info()["workers"])
        wa = [w for w in workers if "//" + a + ":" in w][0]
        wb = [w for w in workers if "//" + b + ":" in w][0]
        # Made on b (it may move: allow_other_workers), used on a: a fetches from b.
        leaves = [c.submit(leaf, i, workers=[wb], allow_other_workers=True, pure=False) for i in range(n)]
        sizes = [c.submit(size, x, workers=[wa]) for x in leaves]
        result = c.submit(total, *sizes, workers=[wa])
        deadline = time.monotonic() + 60
        while sum(f.done() for f in sizes) < 3:
            if time.monotonic() > deadline:
                raise TimeoutError("three results did not arrive within 60 s before the cut")
            time.sleep(0.05)
        print("CUT", flush=True)
        value = result.result(timeout=120)
        print(json.dumps({"result": value}), flush=True)
""")


def _popen(ns: str, args: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=10)


def _read_line(proc: subprocess.Popen, want: str, timeout: float, seen: list[str]) -> str:
    """The first line of ``proc``'s output starting with ``want`` (other
    lines are kept in ``seen`` for the failure message)."""
    import selectors

    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not sel.select(timeout=max(0.0, deadline - time.monotonic())):
                break
            line = proc.stdout.readline()
            if not line:
                break
            seen.append(line.rstrip())
            if line.startswith(want):
                return line
    finally:
        sel.close()
    raise AssertionError(f"no {want!r} line within {timeout} s; output:\n" + "\n".join(seen[-40:]))


@pytest.mark.slow
def test_cut_off_worker_host_mid_graph_still_gives_the_exact_result(hosts):
    spaces, bridge_ns = hosts
    (s_ns, s_ip, _), (a_ns, a_ip, _), (b_ns, b_ip, b_link) = spaces["s"], spaces["a"], spaces["b"]
    env = dict(os.environ,
               DASK_DISTRIBUTED__COMM__AUTH__SECRET=secrets.token_hex(16),
               DASK_DISTRIBUTED__COMM__TIMEOUTS__TCP=f"{TCP_TIMEOUT}s",
               DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT=f"{CONNECT_TIMEOUT}s",
               PYTHONUNBUFFERED="1")
    address = f"tcp://{s_ip}:8786"
    procs = [_popen(s_ns, ["-m", "distributed.cli.dask_scheduler", "--host", s_ip, "--port", "8786",
                           "--no-dashboard"], env)]
    try:
        for ns, ip in ((a_ns, a_ip), (b_ns, b_ip)):
            procs.append(_popen(ns, ["-m", "distributed.cli.dask_worker", address, "--host", ip,
                                     "--nthreads", "1", "--no-nanny"], env))
        n = 20
        client = _popen(s_ns, ["-c", CLIENT, address, a_ip, b_ip, str(n)], env)
        procs.append(client)
        seen: list[str] = []
        _read_line(client, "CUT", 90, seen)
        _ip("link", "set", b_link, "down", ns=bridge_ns)  # host b is cut off
        cut = time.monotonic()
        line = _read_line(client, "{", 120, seen)
        after = time.monotonic() - cut
        print(f"result {after:.1f} s after the cut")
        assert json.loads(line)["result"] == sum(1_000_001 + i % 256 for i in range(n))
        # Found dead within the tcp timeout (+ keepalive's first probe), then
        # the lost leaves are made again on a: 20 x 0.2 s at most.
        assert after < TCP_TIMEOUT + CONNECT_TIMEOUT + n * 0.2 + 10, (after, seen[-20:])
    finally:
        _stop(procs)


# ----------------------------------------------------------------------
# The pieces, without a network
# ----------------------------------------------------------------------


def test_scheduler_tells_every_worker_first_when_it_removes_one():
    state = SchedulerState()
    for w in ("tcp://a:1", "tcp://b:1", "tcp://c:1"):
        state.add_worker(w, nthreads=1)
    _, wmsgs = state.remove_worker("tcp://b:1")
    assert wmsgs["tcp://a:1"][0] == {"op": "worker-removed", "worker": "tcp://b:1"}
    assert wmsgs["tcp://c:1"][0] == {"op": "worker-removed", "worker": "tcp://b:1"}
    assert "tcp://b:1" not in wmsgs


def test_worker_abandons_a_fetch_from_a_removed_peer_and_asks_another_holder():
    ws = WorkerState(nthreads=1, data={}, address="tcp://me:1")
    first = ws.handle_compute_task("y", "spec", who_has={"x": ["tcp://gone:1", "tcp://other:1"]},
                                   nbytes={"x": 10})
    assert len(first) == 1 and isinstance(first[0], GatherDep)
    source = first[0].worker
    again = ws.handle_worker_removed(source)
    assert again == [GatherDep("tcp://other:1" if source == "tcp://gone:1" else "tcp://gone:1", ["x"], 10)]
    # The abandoned transfer's late answer (if the server had not cancelled
    # it) finds nothing of its own in flight any more.
    assert source not in ws.in_flight_workers


def test_worker_with_no_other_holder_reports_the_key_missing():
    ws = WorkerState(nthreads=1, data={}, address="tcp://me:1")
    ws.handle_compute_task("y", "spec", who_has={"x": ["tcp://gone:1"]}, nbytes={"x": 10})
    assert ws.handle_worker_removed("tcp://gone:1") == []
    assert ws.tasks["x"].state == "missing"
    ops = [m["op"] for m in ws.scheduler_msgs]
    assert "request-who-has" in ops


def test_every_tcp_socket_gets_keepalive_and_a_user_timeout():
    import socket

    from distributed import config
    from distributed.comm.tcp import set_tcp_timeouts

    with config.set({"distributed.comm.timeouts.tcp": "7s"}), socket.socket() as sock:
        set_tcp_timeouts(sock)
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        if hasattr(socket, "TCP_USER_TIMEOUT"):
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 7000
        if hasattr(socket, "TCP_KEEPIDLE"):
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 2
