"""The scheduler's HTTP routes (distributed/http): each payload checked
against the cluster's state, the per-prefix tracker against a full scan,
the event stream's single producer, Origin checks, escaping, start-up
options (no dashboard by default, a taken port, --no-dashboard) and
real processes (``cluster()`` and ``dask-scheduler``)."""
from __future__ import annotations

import asyncio
import json
import re
import socket
import time
import urllib.parse
import urllib.request
from collections import Counter

import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPRequest

from distributed import Client
from distributed.http.tracker import TRACKED_STATES
from distributed.scheduler.server import Scheduler
from distributed.utils_test import (
    async_poll_for,
    captured_logger,
    cluster,
    gen_cluster,
    gen_test,
    inc,
    poll_for,
    popen,
    slowinc,
    spin,
    throws,
)

DASH = {"dashboard_address": "127.0.0.1:0"}
XSS = "<img src=x onerror=alert(1)>"


async def fetch(s, path: str, method: str = "GET", body=None, headers=None):
    """(status, headers, text) of ``path`` on the scheduler's dashboard."""
    url = f"http://127.0.0.1:{s.http_server.port}{path}"
    req = HTTPRequest(url, method=method, body=body, headers=headers, follow_redirects=False,
                      request_timeout=10)
    resp = await AsyncHTTPClient().fetch(req, raise_error=False)
    return resp.code, resp.headers, resp.body.decode() if resp.body else ""


async def fetch_json(s, path: str):
    code, _, text = await fetch(s, path)
    assert code == 200, (path, code, text)
    return json.loads(text)


def scan(s) -> dict:
    """Per-prefix state counts by a loop over every task (what the tracker avoids)."""
    out: dict = {}
    for ts in s.tasks.values():
        c = out.setdefault(ts.prefix, Counter())
        c[ts.state] += 1
        c["total"] += 1
    return out


def check_tracker(s) -> None:
    tracker = s.http_server.tracker
    full = scan(s)
    groups = {g["name"]: g for g in tracker.groups()}
    assert set(groups) == set(full), (groups, full)
    for name, c in full.items():
        g = groups[name]
        assert g["total"] == c["total"], (name, g, c)
        for state in (*TRACKED_STATES, "released"):
            assert g[state] == c[state], (name, state, g, c)


def parse_metrics(text: str) -> dict:
    """{(name, frozenset(labels)): value} and the TYPE of each family."""
    samples, types = {}, {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            types[name] = kind
        elif line and not line.startswith("#"):
            m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$', line)
            assert m, line
            labels = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
            samples[(m.group(1), labels)] = float(m.group(4))
    return {"samples": samples, "types": types}


@gen_test()
async def test_no_dashboard_unless_asked():
    async with Scheduler(port=0) as s:
        assert s.http_server is None
        assert s.identity()["services"] == {}
        assert s.dashboard_link is None


@gen_cluster(client=True, scheduler_kwargs=DASH)
async def test_health_sitemap_and_identity(c, s, a, b):
    code, headers, text = await fetch(s, "/health")
    assert (code, text) == (200, "ok")
    assert headers["Content-Type"].startswith("text/plain")
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    paths = (await fetch_json(s, "/sitemap.json"))["paths"]
    for p in ("/health", "/metrics", "/json/counts.json", "/json/identity.json", "/individual-plots.json",
              "/api/v1", "/api/v1/stream", "/status", "/workers", "/tasks", "/system", "/profile", "/groups"):
        assert p in paths
    ident = await fetch_json(s, "/json/identity.json")
    assert ident["address"] == s.address
    assert ident["services"] == {"dashboard": s.http_server.port}
    assert set(ident["workers"]) == {a.address, b.address}
    assert s.dashboard_link == f"http://127.0.0.1:{s.http_server.port}/status"
    plots = await fetch_json(s, "/individual-plots.json")
    for path in plots.values():
        code, _, _ = await fetch(s, path)
        assert code == 200, path


@gen_cluster(client=True, scheduler_kwargs=DASH)
async def test_counts_json_matches_state(c, s, a, b):
    futures = c.map(inc, range(20))
    bad = c.submit(throws, 1)
    await c.gather(futures)
    await async_poll_for(lambda: bad.status == "error", timeout=10)
    counts = await fetch_json(s, "/json/counts.json")
    states = Counter(ts.state for ts in s.tasks.values())
    assert counts["tasks"] == len(s.tasks) == 21
    assert counts["memory"] == states["memory"] == 20
    assert counts["erred"] == states["erred"] == 1
    assert counts["processing"] == 0
    assert counts["workers"] == 2
    assert counts["cores"] == a.nthreads + b.nthreads
    assert counts["clients"] == len(s.clients)
    assert counts["bytes"] == sum(ws.nbytes for ws in s.workers.values())
    assert counts["hosts"] == 1
    assert set(counts) >= {"idle", "released", "saturated", "unrunnable", "waiting", "waiting_data",
                           "desired_workers"}


@gen_cluster(client=True, scheduler_kwargs=DASH)
async def test_tracker_matches_a_full_scan(c, s, a, b):
    # Tasks reach every state through every entry point: graphs, scatter,
    # errors, cancellation, release and recomputation.
    x = c.map(inc, range(30))
    y = c.map(slowinc, x, delay=0.01)
    scattered = await c.scatter([1, 2, 3])
    bad = c.submit(throws, 1)
    check_tracker(s)
    await c.gather(y)
    await async_poll_for(lambda: bad.status == "error", timeout=10)
    check_tracker(s)
    z = c.map(inc, scattered)
    await c.gather(z)
    check_tracker(s)
    slow = c.map(slowinc, range(10), delay=0.5)
    await async_poll_for(lambda: any(ts.state == "processing" for ts in s.tasks.values()), timeout=10)
    check_tracker(s)
    await c.cancel(slow)
    x = y = z = bad = slow = None  # release them all
    await async_poll_for(lambda: not s.tasks or all(ts.prefix != "slowinc" for ts in s.tasks.values()),
                         timeout=10)
    check_tracker(s)
    scattered = None
    await async_poll_for(lambda: not s.tasks, timeout=10)
    check_tracker(s)
    assert s.http_server.tracker.totals() == dict.fromkeys((*TRACKED_STATES, "released"), 0)


@gen_cluster(client=True, scheduler_kwargs=DASH)
async def test_metrics_have_upstream_names_and_the_state_values(c, s, a, b):
    futures = c.map(inc, range(15))
    await c.gather(futures)
    bad = c.submit(throws, 1)
    await async_poll_for(lambda: bad.status == "error", timeout=10)
    code, headers, text = await fetch(s, "/metrics")
    assert code == 200
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    m = parse_metrics(text)
    samples, types = m["samples"], m["types"]
    expected = {
        "dask_scheduler_clients": "gauge",
        "dask_scheduler_client_connections_added_total": "counter",
        "dask_scheduler_client_connections_removed_total": "counter",
        "dask_scheduler_desired_workers": "gauge",
        "dask_scheduler_workers": "gauge",
        "dask_scheduler_workers_added_total": "counter",
        "dask_scheduler_workers_removed_total": "counter",
        "dask_scheduler_gc_collection_seconds_total": "counter",
        "dask_scheduler_last_time_total": "counter",
        "dask_scheduler_tasks": "gauge",
        "dask_scheduler_tasks_forgotten_total": "counter",
        "dask_scheduler_tasks_suspicious_total": "counter",
        "dask_scheduler_task_groups": "gauge",
        "dask_scheduler_tasks_compute_seconds_total": "counter",
        "dask_scheduler_tasks_transfer_seconds_total": "counter",
        "dask_scheduler_tasks_output_bytes": "gauge",
        "dask_scheduler_prefix_state_totals_total": "counter",
        "dask_scheduler_tick_duration_maximum_seconds": "gauge",
        "dask_scheduler_tick_count_total": "counter",
        "process_resident_memory_bytes": "gauge",
        "process_cpu_seconds_total": "counter",
        "python_gc_collections_total": "counter",
        "python_info": "gauge",
    }
    for name, kind in expected.items():
        assert types.get(name) == kind, name
    states = Counter(ts.state for ts in s.tasks.values())
    for state in ("released", "waiting", "no-worker", "queued", "processing", "memory", "erred"):
        assert samples[("dask_scheduler_tasks", frozenset({("state", state)}))] == states[state], state
    assert samples[("dask_scheduler_clients", frozenset())] == 1
    assert samples[("dask_scheduler_workers_added_total", frozenset())] == 2
    assert samples[("dask_scheduler_client_connections_added_total", frozenset())] == 1
    assert samples[("dask_scheduler_client_connections_removed_total", frozenset())] == 0
    worker_states = {lbl: v for (n, lbls), v in samples.items() if n == "dask_scheduler_workers"
                     for _, lbl in lbls}
    assert set(worker_states) == {"idle", "partially_saturated", "saturated", "paused", "retiring"}
    assert sum(worker_states.values()) == 2
    inc_label = frozenset({("task_prefix_name", "inc")})
    assert samples[("dask_scheduler_tasks_output_bytes", inc_label)] == sum(
        ts.nbytes for ts in s.tasks.values() if ts.prefix == "inc")
    assert samples[("dask_scheduler_tasks_compute_seconds_total", inc_label)] > 0
    assert samples[("dask_scheduler_prefix_state_totals_total",
                    frozenset({("task_prefix_name", "inc"), ("state", "memory")}))] == 15
    assert samples[("dask_scheduler_prefix_state_totals_total",
                    frozenset({("task_prefix_name", "throws"), ("state", "erred")}))] == 1


@gen_cluster(client=True, scheduler_kwargs=DASH)
async def test_metrics_label_values_are_escaped(c, s, a, b):
    held = c.submit(inc, 1, key='we"ird\\name\nx-1')
    await held
    text = (await fetch(s, "/metrics"))[2]
    assert 'task_prefix_name="we\\"ird\\\\name\\nx"' in text


@gen_cluster(client=True, scheduler_kwargs=DASH)
async def test_api_v1_routes(c, s, a, b):
    assert (await fetch(s, "/api/v1"))[2] == "API V1"
    workers = await fetch_json(s, "/api/v1/get_workers")
    assert workers["num_workers"] == 2
    assert sorted(w["address"] for w in workers["workers"]) == sorted(s.workers)
    assert (await fetch_json(s, "/api/v1/adaptive_target")) == {"workers": s.adaptive_target()}
    futures = c.map(inc, range(10))
    await c.gather(futures)
    await async_poll_for(lambda: s.http_server.tracker.idle_since is not None, timeout=5)
    idle = await fetch_json(s, "/api/v1/check_idle")
    assert idle["idle_since"] == s.http_server.tracker.idle_since
    groups = await fetch_json(s, "/api/v1/groups")
    assert [(g["name"], g["total"], g["memory"]) for g in groups] == [("inc", 10, 10)]
    stream = await fetch_json(s, "/api/v1/task_stream?after=-1&limit=100")
    assert len(stream["records"]) == 10 and stream["next"] == 10
    assert {r["key"] for r in stream["records"]} == {f.key for f in futures}
    assert {r["worker"] for r in stream["records"]} <= {a.address, b.address}
    later = await fetch_json(s, "/api/v1/task_stream?after=7")
    assert [r["index"] for r in later["records"]] == [8, 9]
    rows = await fetch_json(s, "/api/v1/workers")
    assert {r["address"]: r["in_memory"] for r in rows} == {
        addr: len(ws.has_what) for addr, ws in s.workers.items()}
    one = await fetch_json(s, "/api/v1/workers/" + urllib.request.quote(a.address, safe=""))
    assert one["nthreads"] == a.nthreads
    task = await fetch_json(s, "/api/v1/tasks/" + urllib.request.quote(futures[0].key, safe=""))
    assert task["state"] == "memory" and task["who_has"] == [ws.address for ws in s.tasks[futures[0].key].who_has]
    assert (await fetch(s, "/api/v1/tasks/nope"))[0] == 404
    cluster_info = await fetch_json(s, "/api/v1/cluster")
    assert cluster_info["threads"] == 3 and cluster_info["memory"] == 10
    assert (await fetch(s, "/api/v1/task_stream?after=x"))[0] == 400


@gen_cluster(client=True, scheduler_kwargs=DASH)
async def test_retire_workers_post_checks_origin_and_body(c, s, a, b):
    body = json.dumps({"workers": [a.address]})
    code, _, _ = await fetch(s, "/api/v1/retire_workers", "POST", body,
                             {"Content-Type": "application/json", "Origin": "http://evil.example"})
    assert code == 403
    assert a.address in s.workers  # nothing changed
    code, _, _ = await fetch(s, "/api/v1/retire_workers", "POST", body, {"Content-Type": "text/plain"})
    assert code == 415
    code, _, _ = await fetch(s, "/api/v1/retire_workers", "POST", "{}", {"Content-Type": "application/json"})
    assert code == 400
    assert len(s.workers) == 2
    origin = f"http://127.0.0.1:{s.http_server.port}"
    code, _, text = await fetch(s, "/api/v1/retire_workers", "POST", body,
                                {"Content-Type": "application/json", "Origin": origin})
    assert code == 200, text
    assert a.address in json.loads(text)
    await async_poll_for(lambda: a.address not in s.workers, timeout=10)
    samples = parse_metrics((await fetch(s, "/metrics"))[2])["samples"]
    assert samples[("dask_scheduler_workers_removed_total", frozenset())] == 1
    assert samples[("dask_scheduler_workers_added_total", frozenset())] == 2


@gen_cluster(client=True, scheduler_kwargs=DASH)
async def test_pages_and_info_escape_cluster_strings(c, s, a, b):
    held = c.submit(inc, 1, key=XSS)
    await held
    for page in ("/status", "/workers", "/tasks", "/system", "/profile", "/groups"):
        code, headers, text = await fetch(s, page)
        assert code == 200, page
        assert headers["Content-Type"].startswith("text/html")
        assert '<script src="/statics/dashboard.js"' in text and "http" not in text.split("<body")[0].replace(
            'http-equiv', '')
    code, headers, _ = await fetch(s, "/")
    assert code in (301, 302) and headers["Location"] == "/status"
    assert (await fetch(s, "/statics/dashboard.js"))[0] == 200
    code, _, text = await fetch(s, "/info/task/" + urllib.request.quote(XSS, safe="") + ".html")
    assert code == 200
    assert XSS not in text and "&lt;img src=x onerror=alert(1)&gt;" in text
    code, _, text = await fetch(s, "/info/main/workers.html")
    assert code == 200 and a.address in text
    code, _, text = await fetch(s, "/info/worker/" + urllib.request.quote(a.address, safe="") + ".html")
    assert code == 200
    code, _, text = await fetch(s, "/info/worker/" + urllib.request.quote(XSS, safe="") + ".html")
    assert code == 404 and XSS not in text


async def read_frames(port: int, n: int, origin: str | None = None):
    """The first ``n`` SSE frames of /api/v1/stream (and the stream writer, left open)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    extra = f"Origin: {origin}\r\n" if origin else ""
    writer.write(f"GET /api/v1/stream HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{extra}\r\n".encode())
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    frames = []
    buf = b""
    while len(frames) < n and head.startswith(b"HTTP/1.1 200"):
        buf += await asyncio.wait_for(reader.read(65536), 10)
        for m in re.finditer(rb"event: snapshot\r?\ndata: (.*?)\n\n", buf):
            frames.append(json.loads(m.group(1)))
        buf = buf[buf.rfind(b"\n\n") + 2:] if frames else buf
    return head, frames, writer


@gen_cluster(client=True, scheduler_kwargs=DASH, config={"distributed.dashboard.interval": "50ms"})
async def test_event_stream_has_one_producer_and_none_without_tabs(c, s, a, b):
    b_ = s.http_server.broadcaster
    futures = c.map(inc, range(5))
    await c.gather(futures)
    assert not b_.running and b_.ticks == 0  # no tab: nothing computed
    port = s.http_server.port
    head1, frames1, w1 = await read_frames(port, 1)
    assert head1.startswith(b"HTTP/1.1 200") and b"text/event-stream" in head1
    snap = frames1[0]
    assert snap["cluster"]["tasks"] == len(s.tasks)
    assert [(g["name"], g["memory"]) for g in snap["groups"]] == [("inc", 5)]
    assert len(snap["stream"]) == 5
    head2, frames2, w2 = await read_frames(port, 2)
    assert len(b_.subscribers) == 2
    # Two tabs: frames are produced once per tick, not once per tab.
    before = b_.ticks
    await async_poll_for(lambda: b_.ticks >= before + 3, timeout=10)
    assert b_.ticks - before < 3 + 3  # within the interval's jitter, not doubled per tab
    w1.close()
    w2.close()
    await async_poll_for(lambda: not b_.subscribers and not b_.running, timeout=10)
    head3, frames3, w3 = await read_frames(port, 0, origin="http://evil.example")
    assert head3.startswith(b"HTTP/1.1 403")
    w3.close()


@gen_test()
async def test_taken_port_falls_back_with_a_warning():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    taken = sock.getsockname()[1]
    try:
        with captured_logger("distributed.http.server") as log:
            async with Scheduler(port=0, dashboard_address=f"127.0.0.1:{taken}") as s:
                assert s.http_server.port not in (None, taken)
                assert s.identity()["services"]["dashboard"] == s.http_server.port
        assert f"Port {taken} is already in use" in log.getvalue()
    finally:
        sock.close()


@gen_test()
async def test_dashboard_binds_to_the_scheduler_host():
    async with Scheduler(port=0, host="127.0.0.1", dashboard_address=":0") as s:
        assert s.http_server.http.host == "127.0.0.1"
    with pytest.raises(ValueError, match="not a port number"):
        Scheduler(port=0, dashboard_address="127.0.0.1:http")


@gen_test()
async def test_no_dashboard_keeps_the_machine_readable_routes():
    async with Scheduler(port=0, dashboard_address="127.0.0.1:0", dashboard=False) as s:
        assert (await fetch(s, "/metrics"))[0] == 200
        assert (await fetch(s, "/json/counts.json"))[0] == 200
        assert (await fetch(s, "/status"))[0] == 404


@gen_test()
async def test_metrics_with_a_thousand_prefixes_name_each_once():
    async with Scheduler(port=0, dashboard_address="127.0.0.1:0") as s:
        tracker = s.http_server.tracker
        for i in range(1000):
            tracker._prefix(f"prefix{i}").ntasks = 1
        text = (await fetch(s, "/metrics"))[2]
        assert text.count('dask_scheduler_tasks_output_bytes{task_prefix_name="prefix') == 1000
        assert parse_metrics(text)["samples"][("dask_scheduler_task_groups", frozenset())] == 1000


@gen_cluster(client=True, scheduler_kwargs=DASH)
async def test_stalled_tasks_gauge_names_the_reason(c, s, a, b):
    future = c.submit(inc, 1, resources={"GPU": 1})
    await async_poll_for(lambda: future.key in s.tasks and s.tasks[future.key].state == "no-worker", timeout=10)
    samples = parse_metrics((await fetch(s, "/metrics"))[2])["samples"]
    assert samples[("dask_scheduler_stalled_tasks", frozenset({("reason", "no-worker-resource")}))] == 1
    assert samples[("dask_scheduler_stalled_tasks", frozenset({("reason", "all-workers-paused")}))] == 0


def test_real_processes_dashboard_link_and_counts(loop):
    with cluster(scheduler_kwargs=DASH) as (s, [a, b]):
        with Client(s["address"], loop=loop) as c:
            link = c.dashboard_link
            assert link is not None and link.endswith("/status")
            port = c.scheduler_info()["services"]["dashboard"]
            assert link == f"http://127.0.0.1:{port}/status"
            futures = c.map(inc, range(50))
            c.gather(futures)
            counts = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/counts.json",
                                                       timeout=10).read())
            assert counts["memory"] == 50 and counts["workers"] == 2
            assert urllib.request.urlopen(link, timeout=10).status == 200


def test_client_dashboard_link_is_none_without_a_dashboard(loop):
    with cluster() as (s, [a, b]):
        with Client(s["address"], loop=loop) as c:
            assert c.dashboard_link is None


def test_dask_scheduler_cli_serves_the_dashboard():
    with popen(["dask-scheduler", "--port", "0", "--host", "127.0.0.1",
                "--dashboard-address", "127.0.0.1:0"]) as proc:
        link = None
        lines = []

        def found() -> bool:
            nonlocal link
            line = proc.stdout.readline().decode()  # stderr is merged into it
            lines.append(line)
            m = re.search(r"dashboard at: (http://\S+)", line)
            if m:
                link = m.group(1)
            return link is not None

        poll_for(found, timeout=30, fail_func=lambda: print("".join(lines)))
        base = link.rsplit("/", 1)[0]
        assert urllib.request.urlopen(base + "/health", timeout=10).read() == b"ok"


@gen_cluster(client=True, nthreads=[("127.0.0.1", 1), ("127.0.0.1", 1)], scheduler_kwargs=DASH)
async def test_stealing_metrics_count_the_steals(c, s, a, b):
    """Upstream's dask_stealing_request_{count,cost}_total{cost_multiplier}:
    tasks all placed on ``a`` (loosely: others allowed) are stolen by ``b``."""
    import time as _time

    def slow(x, _):
        _time.sleep(0.05)
        return x

    data = await c.scatter(1, workers=[a.address])
    futures = [c.submit(slow, i, data, pure=False, workers=[a.address], allow_other_workers=True)
               for i in range(40)]
    await c.gather(futures)
    steals = s.extensions["stealing"].metrics["request_count_total"]
    assert sum(steals.values()) > 0
    samples = parse_metrics((await fetch(s, "/metrics"))[2])["samples"]
    counted = {dict(labels)["cost_multiplier"]: v for (name, labels), v in samples.items()
               if name == "dask_stealing_request_count_total"}
    assert len(counted) == 15 and sum(counted.values()) == sum(steals.values())
    assert any(name == "dask_stealing_request_cost_total" for name, _ in samples)


@gen_cluster(client=True, scheduler_kwargs=DASH)
async def test_stream_carries_the_eta_and_its_bottleneck(c, s, a, b):
    from distributed.utils_test import slowinc

    chain = [c.submit(slowinc, 0, delay=0.2)]
    for _ in range(9):
        chain.append(c.submit(slowinc, chain[-1], delay=0.2))
    await chain[1]
    snap = s.http_server._produce(0)
    assert snap["eta"]["eta"] > 0 and snap["eta"]["bottleneck"]["prefix"] == "slowinc"
    await c.gather(chain)


def churn(seconds):
    """Another prefix, busy the same way (under its own name)."""
    end = time.time() + seconds
    n = 0
    while time.time() < end:
        n += 1
    return n


def tree_names(tree) -> set:
    out, stack = set(), [tree]
    while stack:
        node = stack.pop()
        for child in node["children"].values():
            out.add(child["description"]["name"])
            stack.append(child)
    return out


async def profile_until(s, path: str, predicate, timeout: float = 10):
    """The reply of ``path`` once ``predicate(reply)`` holds (AssertionError after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        reply = await fetch_json(s, path)
        if predicate(reply):
            return reply
        assert time.monotonic() < deadline, f"{path} did not show the expected samples within {timeout} s"
        await asyncio.sleep(0.05)


async def sampled(c, s, funcs, timeout: float = 30) -> dict:
    """``/json/profile.json`` once it shows every function of ``funcs``.
    Each first runs 0.5 s; one that the profiler (every 10 ms) happened not
    to sample on a busy machine runs again, until ``timeout``."""
    await c.gather([c.submit(f, 0.5, pure=False) for f in funcs])
    deadline = time.monotonic() + timeout
    while True:
        reply = await fetch_json(s, "/json/profile.json")
        missing = [f for f in funcs if f.__name__ not in tree_names(reply["tree"])]
        if not missing:
            return reply
        assert time.monotonic() < deadline, f"no samples of {missing} in {timeout} s"
        await c.gather([c.submit(f, 0.2, pure=False) for f in missing])


@gen_cluster(client=True, scheduler_kwargs=DASH)
async def test_profile_json_has_the_task_and_filters_by_prefix(c, s, a, b):
    reply = await sampled(c, s, [spin, churn])
    assert reply["count"] > 0 and reply["tree"]["count"] == reply["count"]
    assert reply["source"] == "tasks" and reply["max_depth"] == 60
    assert reply["dropped"]["samples"] >= 0
    assert {"spin", "churn"} <= {f["name"] for f in reply["functions"]}

    only = await fetch_json(s, "/json/profile.json?key=spin&start=10m")
    assert only["count"] > 0 and "spin" in tree_names(only["tree"])
    assert "churn" not in tree_names(only["tree"])
    nothing = await fetch_json(s, "/json/profile.json?key=spin&start=" + str(time.time() + 3600))
    assert nothing["count"] == 0 and nothing["tree"]["children"] == {}
    one = await fetch_json(s, "/json/profile.json?workers=" + urllib.parse.quote(a.address, safe=""))
    assert one["tree"]["identifier"] == "root" and one["source"] == "tasks"

    # The scheduler's own event loop (the test's thread, sampled continuously).
    loop = await profile_until(s, "/json/profile.json?scheduler=1", lambda r: r["count"] > 0)
    assert loop["source"] == "scheduler" and loop["tree"]["identifier"] == "root"
    server = await profile_until(s, "/json/profile.json?server=1", lambda r: r["count"] > 0)
    assert server["source"] == "server"


@gen_cluster(client=True, scheduler_kwargs=DASH)
async def test_profile_json_refuses_bad_parameters(c, s, a, b):
    for query in ("start=yesterday", "start=-5", "stop=nan", "start=100&stop=50", "server=maybe",
                  "server=1&scheduler=1", "key=", "workers=tcp://127.0.0.1:1", "color=red",
                  "scheduler=1&key=spin"):
        code, headers, text = await fetch(s, "/json/profile.json?" + query)
        assert code == 400, (query, code, text)
        assert headers["Content-Type"].startswith("application/json")
        assert json.loads(text)["error"], query
    code, headers, text = await fetch(s, "/json/profile.json?start=" + urllib.parse.quote(XSS))
    # The value comes back as JSON data, never as markup or in a header.
    assert code == 400 and headers["Content-Type"].startswith("application/json")
    assert headers["X-Content-Type-Options"] == "nosniff" and "start=" in json.loads(text)["error"]
