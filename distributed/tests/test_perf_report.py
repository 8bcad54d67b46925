"""performance_report: one self-contained HTML file, escaped, offline."""
from __future__ import annotations

from html.parser import HTMLParser

import pytest

from distributed import Client, performance_report
from distributed.diagnostics.perf_report import render
from distributed.utils_test import cluster, gen_cluster, inc, slowinc, throws

EVIL = "<img src=x onerror=alert(1)>"


class _Page(HTMLParser):
    """Tags, URLs in attributes and text of a page."""

    def __init__(self):
        super().__init__()
        self.tags: list[str] = []
        self.urls: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for name, value in attrs:
            if name in ("src", "href", "action", "xlink:href", "data", "poster", "srcset", "xmlns"):
                self.urls.append(value or "")

    def handle_data(self, data):
        self.text.append(data)


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
        assert page.tags.count("rect") == 8  # one per task


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
    assert page.tags.count("rect") == 20
    assert "test_blocking_api_with_real_processes" in "".join(page.text)
