"""A worker's own HTTP server (distributed/http/worker.py): off unless asked,
``/health``, ``/metrics`` with upstream's ``dask_worker_*`` names and the
worker's values, an escaped ``/status`` page, and its port in the
scheduler's identity."""
from __future__ import annotations

from tornado.httpclient import AsyncHTTPClient

from distributed.tests.test_http_scheduler import parse_metrics
from distributed.utils_test import gen_cluster, inc
from distributed.worker.server import Worker

WDASH = {"dashboard_address": "127.0.0.1:0"}


async def fetch(w, path: str):
    resp = await AsyncHTTPClient().fetch(f"http://127.0.0.1:{w.http_server.port}{path}", raise_error=False,
                                         request_timeout=10)
    return resp.code, resp.headers, resp.body.decode()


@gen_cluster(client=True)
async def test_no_worker_server_unless_asked(c, s, a, b):
    assert a.http_server is None and a.services == {}
    assert s.identity()["workers"][a.address]["services"] == {}


@gen_cluster(client=True, config={"distributed.worker.http.enabled": True})
async def test_config_enables_the_worker_server(c, s, a, b):
    assert a.http_server is not None
    assert (await fetch(a, "/health"))[2] == "ok"


@gen_cluster(client=True, worker_kwargs=WDASH)
async def test_worker_routes_report_the_worker(c, s, a, b):
    port = a.http_server.port
    assert a.services == {"dashboard": port}
    assert s.identity()["workers"][a.address]["services"] == {"dashboard": port}
    assert a.identity()["services"] == {"dashboard": port}
    futures = c.map(inc, range(12), workers=[a.address])
    await c.gather(futures)
    code, headers, text = await fetch(a, "/health")
    assert (code, text) == (200, "ok")
    code, headers, text = await fetch(a, "/metrics")
    assert code == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    m = parse_metrics(text)
    samples, types = m["samples"], m["types"]
    for name, kind in {
        "dask_worker_tasks": "gauge", "dask_worker_threads": "gauge", "dask_worker_latency_seconds": "gauge",
        "dask_worker_memory_bytes": "gauge", "dask_worker_transfer_incoming_bytes": "gauge",
        "dask_worker_transfer_incoming_count": "gauge", "dask_worker_transfer_outgoing_bytes": "gauge",
        "dask_worker_transfer_outgoing_count": "gauge",
        "dask_worker_transfer_incoming_count_total": "counter",
        "dask_worker_transfer_outgoing_bytes_total": "counter",
        "dask_worker_transfer_outgoing_count_total": "counter",
        "dask_worker_gc_collection_seconds_total": "counter",
        "dask_worker_tick_duration_maximum_seconds": "gauge", "dask_worker_tick_count_total": "counter",
        "dask_worker_spill_bytes_total": "counter", "dask_worker_spill_count_total": "counter",
        "dask_worker_spill_time_seconds_total": "counter", "process_resident_memory_bytes": "gauge",
    }.items():
        assert types.get(name) == kind, name
    assert samples[("dask_worker_threads", frozenset())] == a.nthreads
    in_memory = sum(1 for ts in a.state.tasks.values() if ts.state == "memory")
    assert in_memory == 12
    assert samples[("dask_worker_tasks", frozenset({("state", "memory")}))] == in_memory
    assert {lbl for (n, lbls) in samples if n == "dask_worker_memory_bytes" for _, lbl in lbls} == {
        "managed", "unmanaged", "spilled"}
    assert ("dask_worker_memory_bytes", frozenset({("type", "managed")})) in samples
    assert "dask_scheduler_" not in text


@gen_cluster(client=True, nthreads=[])
async def test_worker_status_page_escapes_its_name(c, s):
    async with Worker(s.address, name="<script>alert(1)</script>", **WDASH) as w:
        code, headers, text = await fetch(w, "/status")
        assert code == 200 and headers["Content-Type"].startswith("text/html")
        assert "<script>" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
        assert "/status" in (await fetch(w, "/sitemap.json"))[2]
