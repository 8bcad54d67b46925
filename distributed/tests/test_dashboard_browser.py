"""The dashboard in headless Chromium (driven over the DevTools protocol by
distributed/http/_cdp.py): every page loads with no console error and no
request to another host, the progress twin equals ``/api/v1/groups`` after a
500-task run, and keys that look like markup show literally and run nothing.

Skipped, with the reason, only where no Chromium binary exists (``.ci/run``
installs Debian's ``chromium`` when it is missing)."""
from __future__ import annotations

import json
import re
import time
import urllib.parse

import pytest
from tornado.httpclient import AsyncHTTPClient

from distributed.http._cdp import Browser, find_chromium
from distributed.utils_test import gen_cluster, inc, slowinc, spin

pytestmark = [
    pytest.mark.skipif(find_chromium() is None, reason="no chromium binary (apt-get install chromium)"),
    pytest.mark.slow,
]

DASH = {"dashboard_address": "127.0.0.1:0"}
XSS_KEYS = ["<img src=x onerror=alert(1)>", '"><script>window.__x=2</script>']
PAGES = ["/status", "/workers", "/tasks", "/system", "/profile", "/groups"]


async def api(s, path: str):
    resp = await AsyncHTTPClient().fetch(f"http://127.0.0.1:{s.http_server.port}{path}", request_timeout=10)
    return json.loads(resp.body)


def only_this_host(browser: Browser, port: int) -> list[str]:
    """Requested URLs that leave this dashboard (none is allowed)."""
    ok = (f"http://127.0.0.1:{port}/", "data:", "about:")
    return [u for u in browser.requests if not u.startswith(ok)]


TABLE_JS = """JSON.stringify(Array.from(document.querySelectorAll('#%s tbody tr'))
  .map(tr => Array.from(tr.children).map(td => td.textContent)))"""


@gen_cluster(client=True, scheduler_kwargs=DASH, timeout=110)
async def test_every_page_loads_clean_and_offline(c, s, a, b):
    futures = c.map(inc, range(20))
    await c.gather(futures)
    port = s.http_server.port
    plots = await api(s, "/individual-plots.json")
    async with Browser() as br:
        for path in [*PAGES, *plots.values()]:
            await br.goto(f"http://127.0.0.1:{port}{path}")
            await br.wait_for("document.body.dataset.updated", what=f"{path} drawn from the stream")
        for path in ["/info/main/workers.html", "/info/task/" + urllib.parse.quote(futures[0].key, safe="") + ".html",
                     "/info/worker/" + urllib.parse.quote(a.address, safe="") + ".html"]:
            await br.goto(f"http://127.0.0.1:{port}{path}")
            assert await br.evaluate("document.querySelectorAll('table').length") >= 1, path
        assert br.console_errors == [] and br.exceptions == [] and br.failed == []
        assert only_this_host(br, port) == []


@gen_cluster(client=True, scheduler_kwargs=DASH, timeout=110,
             config={"distributed.dashboard.interval": "100ms"})
async def test_progress_twin_equals_api_after_500_tasks(c, s, a, b):
    port = s.http_server.port
    async with Browser() as br:
        await br.goto(f"http://127.0.0.1:{port}/status")
        await br.wait_for("document.body.dataset.updated")
        x = c.map(inc, range(500))
        y = c.submit(sum, x)
        await y
        groups = await api(s, "/api/v1/groups")
        expected = [[g["name"], str(g["total"]), str(g["memory"]), str(g["processing"]),
                     str(g["waiting"] + g["queued"] + g["no-worker"]), str(g["erred"]), str(g["released"])]
                    for g in groups]
        assert {row[0]: row[2] for row in expected} == {"inc": "500", "sum": "1"}

        want = json.dumps(expected, separators=(",", ":"))
        try:
            await br.wait_for(f"({TABLE_JS % 'progress-table'}) === {json.dumps(want)}", timeout=10,
                              what="the progress table equal to /api/v1/groups")
        except AssertionError:
            assert json.loads(await br.evaluate(TABLE_JS % "progress-table")) == expected
        # The task-stream twin counts the 500 inc tasks too.
        stream = dict(json.loads(await br.evaluate(TABLE_JS % "task-stream-table")))
        assert stream["inc"] == "500"
        workers = json.loads(await br.evaluate(TABLE_JS % "nprocessing-table"))
        assert sorted(r[0] for r in workers) == sorted(str(ws.name) for ws in s.workers.values())
        assert br.console_errors == [] and br.exceptions == []
        assert only_this_host(br, port) == []


@gen_cluster(client=True, scheduler_kwargs=DASH, timeout=110)
async def test_markup_in_keys_shows_literally_and_runs_nothing(c, s, a, b):
    futures = [c.submit(inc, i, key=k) for i, k in enumerate(XSS_KEYS)]
    slow = c.submit(slowinc, 1, delay=0.01, key="<b>bold</b>-1")
    await c.gather([*futures, slow])
    port = s.http_server.port
    async with Browser() as br:
        pages = [*PAGES, *("/info/task/" + urllib.parse.quote(k, safe="") + ".html" for k in XSS_KEYS),
                 "/info/worker/" + urllib.parse.quote(a.address, safe="") + ".html"]
        for path in pages:
            await br.goto(f"http://127.0.0.1:{port}{path}")
            if not path.startswith("/info"):
                await br.wait_for("document.body.dataset.updated")
            assert await br.evaluate("typeof window.__x") == "undefined", path
            assert await br.evaluate("document.querySelectorAll('img, main script, b').length") == 0, path
        await br.goto(f"http://127.0.0.1:{port}/tasks")
        await br.wait_for("document.body.dataset.updated")
        text = await br.wait_for(
            "document.getElementById('task-stream-recent') && document.getElementById('task-stream-recent').textContent",
            what="the recent-tasks table")
        for k in XSS_KEYS:
            assert k in text
        assert "<b>bold</b>-1" in text
        for k in XSS_KEYS:
            await br.goto(f"http://127.0.0.1:{port}/info/task/" + urllib.parse.quote(k, safe="") + ".html")
            assert k in await br.evaluate("document.body.textContent")
        assert br.dialogs == []
        assert br.exceptions == []
        assert only_this_host(br, port) == []


SPIN_TITLES = """Array.from(document.querySelectorAll('#flame svg g:not(.flame-root) rect > title'))
  .filter(t => t.textContent.startsWith('spin ('))"""
ROOT_LABEL = "document.querySelector('#flame svg g.flame-root text').textContent"


@gen_cluster(client=True, scheduler_kwargs=DASH, timeout=110)
async def test_profile_page_draws_a_flame_graph_that_zooms(c, s, a, b):
    future = c.submit(spin, 0.5, pure=False)  # held: the page's prefixes are the live groups
    await future
    deadline = time.monotonic() + 30
    while "spin" not in {n["description"]["name"] for n in (await c.profile())["children"].values()}:
        # Sampled every 10 ms: on a busy machine a short task may go unseen.
        assert time.monotonic() < deadline, "no sample of spin in 30 s"
        await c.submit(spin, 0.2, pure=False)
    port = s.http_server.port
    async with Browser() as br:
        await br.goto(f"http://127.0.0.1:{port}/profile")
        await br.wait_for(f"({SPIN_TITLES}).length", what="a frame of spin in the flame graph")
        tip = await br.evaluate(f"({SPIN_TITLES})[0].textContent")
        assert re.fullmatch(r"spin \(.+utils_test\.py:\d+\) \d+ samples, [\d.]+%", tip), tip
        assert (await br.evaluate(ROOT_LABEL)).startswith("all (")
        # The compute-time panel is still there, under the flame graph.
        assert await br.evaluate("!!document.getElementById('profile-table')")

        # Click spin's frame: it becomes the root bar; clicking the root zooms out.
        await br.evaluate(f"({SPIN_TITLES})[0].parentNode.dispatchEvent(new MouseEvent('click', {{bubbles: true}}))")
        assert (await br.evaluate(ROOT_LABEL)).startswith("\u2190 spin (")
        assert await br.evaluate("document.querySelectorAll('#flame svg g').length") >= 1
        await br.evaluate("document.querySelector('#flame svg g.flame-root')"
                          ".dispatchEvent(new MouseEvent('click', {bubbles: true}))")
        assert (await br.evaluate(ROOT_LABEL)).startswith("all (")

        # The table twin lists spin with its samples; the prefix selector offers it.
        rows = json.loads(await br.evaluate(TABLE_JS % "flame-table"))
        spin_rows = [r for r in rows if r[0] == "spin"]
        assert spin_rows and int(spin_rows[0][2]) > 0
        assert re.fullmatch(r".+utils_test\.py:\d+", spin_rows[0][1]), spin_rows
        await br.wait_for("Array.from(document.querySelectorAll('#flame-prefix option'))"
                          ".some(o => o.value === 'spin')", what="spin in the prefix selector")
        # Choosing it (and a window) asks the JSON route for that prefix only.
        await br.evaluate("(() => { const p = document.getElementById('flame-prefix'); p.value = 'spin';"
                          " document.getElementById('flame-window').value = '60s';"
                          " p.dispatchEvent(new Event('change')); })()")
        await br.wait_for("document.getElementById('flame').dataset.query === "
                          "'/json/profile.json?start=60s&key=spin'", what="the flame graph of the spin prefix")
        assert await br.evaluate(f"({SPIN_TITLES}).length") >= 1
        assert br.console_errors == [] and br.exceptions == []
        assert only_this_host(br, port) == []
