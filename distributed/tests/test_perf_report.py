"""performance_report: one self-contained HTML file, escaped, offline, with flame graphs."""
from __future__ import annotations

import re
import time
from html.parser import HTMLParser

import pytest

from distributed import Client, performance_report
from distributed.diagnostics import flamegraph
from distributed.diagnostics.perf_report import render
from distributed.utils_test import cluster, gen_cluster, inc, slowinc, spin, throws

EVIL = "<img src=x onerror=alert(1)>"


class _Page(HTMLParser):
    """Tags, URLs in attributes and text of a page; ``rects[cls]``: how
    many rectangles the ``<svg class=cls>`` charts hold."""

    def __init__(self):
        super().__init__()
        self.tags: list[str] = []
        self.urls: list[str] = []
        self.text: list[str] = []
        self.rects: dict[str, int] = {}
        self.titles: dict[str, list[str]] = {}
        self._svg: str | None = None
        self._in_title = False

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for name, value in attrs:
            if name in ("src", "href", "action", "xlink:href", "data", "poster", "srcset", "xmlns"):
                self.urls.append(value or "")
        if tag == "svg":
            self._svg = dict(attrs).get("class") or ""
            self.rects.setdefault(self._svg, 0)
            self.titles.setdefault(self._svg, [])
        elif tag == "rect" and self._svg is not None:
            self.rects[self._svg] += 1
        elif tag == "title" and self._svg is not None:
            self._in_title = True

    def handle_endtag(self, tag):
        if tag == "svg":
            self._svg = None
        elif tag == "title":
            self._in_title = False

    def handle_data(self, data):
        self.text.append(data)
        if self._in_title and self._svg is not None:
            self.titles[self._svg].append(data)


def _parse(path) -> _Page:
    page = _Page()
    with open(path, encoding="utf-8") as f:
        page.feed(f.read())
    return page


def _no_external(page: _Page) -> None:
    assert "script" not in page.tags and "link" not in page.tags and "img" not in page.tags
    assert all(not u.startswith(("http:", "https:", "//")) for u in page.urls), page.urls
    assert "iframe" not in page.tags


@gen_cluster(client=True)
async def test_report_has_the_work_and_escapes_keys(c, s, a, b, tmp_path=None):
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = f"{d}/report.html"
        async with performance_report(filename=path):
            futures = c.map(slowinc, range(6), delay=0.01)
            evil = c.submit(inc, 1, key=EVIL)
            bad = c.submit(throws, 1, key="fails-1")
            await c.gather(futures + [evil])
            with pytest.raises(RuntimeError):
                await bad
        page = _parse(path)
        _no_external(page)
        text = "".join(page.text)
        assert EVIL in text  # shown literally, as text
        assert "slowinc" in text and "Efficiency" in text
        assert "async with performance_report" in text  # the calling code
        assert page.rects["stream"] == 8  # one per task


SCRIPT_KEY = "<script>alert(1)</script>"


@gen_cluster(client=True)
async def test_report_has_flame_graphs_and_no_script_from_a_key(c, s, a, b, tmp_path=None):
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = f"{d}/report.html"
        deadline = time.monotonic() + 30
        # The profiler samples every 10 ms: on a busy machine half a second of
        # spinning may go unsampled, so spin again until the workers saw it.
        async with performance_report(filename=path):
            await c.submit(spin, 0.5, key=SCRIPT_KEY)
            while not any(n["description"]["name"] == "spin"
                          for n in (await c.profile(start=time.time() - 60))["children"].values()):
                assert time.monotonic() < deadline, "no sample of spin in 30 s"
                await c.submit(spin, 0.2, pure=False)
        with open(path, encoding="utf-8") as f:
            raw = f.read()
        page = _parse(path)
    _no_external(page)
    assert "<script" not in raw.lower()  # the key is text, never markup
    assert SCRIPT_KEY in "".join(page.text)
    assert page.rects["flame"] >= 2  # the root bar and spin's frame, at least
    tips = page.titles["flame"]
    assert any(re.fullmatch(r"spin \(.+utils_test\.py:\d+\) [\d,]+ samples, [\d.]+%", t) for t in tips), tips
    assert "spin" in "".join(page.text)  # in the top-functions table too


def test_flame_graph_svg_escapes_and_trims():
    evil = {"count": 10000, "identifier": "root", "description": {}, "children": {
        "f;x.py;1": {"count": 9995, "identifier": "f;x.py;1", "children": {}, "description": {
            "name": SCRIPT_KEY, "filename": EVIL, "line_number": 1, "line": ""}},
        "g;x.py;9": {"count": 5, "identifier": "g;x.py;9", "children": {}, "description": {
            "name": "tiny", "filename": "x.py", "line_number": 9, "line": ""}}}}
    svg = flamegraph.svg(evil)
    assert "<script" not in svg and "<img" not in svg and "&lt;script&gt;" in svg
    assert "tiny" not in svg  # under 0.1% of the samples
    small, dropped = flamegraph.trim(evil)
    assert list(small["children"]) == ["f;x.py;1"] and dropped == {"samples": 5, "nodes": 1}
    deep = {"count": 1, "identifier": "root", "description": {}, "children": {}}
    node = deep
    for i in range(100):
        child = {"count": 1, "identifier": f"f{i};x.py;1", "children": {},
                 "description": {"name": f"f{i}", "filename": "x.py", "line_number": 1, "line": ""}}
        node["children"][child["identifier"]] = child
        node = child
    small, dropped = flamegraph.trim(deep, max_depth=60)
    assert dropped == {"samples": 1, "nodes": 40}
    [top] = flamegraph.top_functions(deep, limit=1)  # ties on samples: most self first
    assert (top["name"], top["count"], top["self"], top["share"]) == ("f99", 1, 1, 1.0)


def test_render_is_pure_and_escapes_everything():
    data = {"start": 10.0, "stop": 12.0, "nthreads": 2, "scheduler": f"tcp://{EVIL}",
            "records": [{"key": EVIL, "status": "OK", "nbytes": 8, "worker": EVIL, "thread": 1,
                         "startstops": [{"action": "compute", "start": 10.0, "stop": 11.0}]}],
            "summary": [{"prefix": EVIL, "count": 1, "erred": 0, "compute": 1.0, "mean": 1.0,
                         "transfer": 0.0, "nbytes": 8, "transfer_bytes": 0}],
            "workers": [{"name": EVIL, "address": "tcp://w", "nthreads": 2, "memory_limit": 0,
                         "status": "running"}],
            "profile": {"count": 1, "identifier": "root", "children": {"f;x.py;1": {
                "count": 1, "identifier": "f;x.py;1", "children": {},
                "description": {"name": EVIL, "filename": "x.py", "line_number": 1, "line": ""}}}},
            "scheduler_profile": {"count": 0, "children": {}}, "logs": [("INFO", EVIL)]}
    html = render(data, code=EVIL)
    assert "<img" not in html and html.count("&lt;img src=x onerror=alert(1)&gt;") >= 6
    assert "25.0%" in html  # efficiency: 1 s of compute over 2 threads x 2 s


def test_keywords_it_cannot_honour_raise():
    with pytest.raises(ValueError, match="inline"):
        performance_report(mode="cdn")
    with pytest.raises(ValueError, match="local"):
        performance_report(storage_options={"anon": True})
    with pytest.raises(ValueError, match="local"):
        performance_report(filename="s3://bucket/report.html")


def test_blocking_api_with_real_processes(tmp_path):
    path = tmp_path / "report.html"
    with cluster() as (s, [a, b]):
        with Client(s["address"]):
            with performance_report(filename=str(path)):
                from distributed import get_client

                get_client().gather(get_client().map(inc, range(20)))
    page = _parse(path)
    _no_external(page)
    assert page.rects["stream"] == 20
    assert "test_blocking_api_with_real_processes" in "".join(page.text)
