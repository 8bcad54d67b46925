"""``performance_report``: one self-contained HTML file about a block of work.

>>> from distributed import performance_report                 # doctest: +SKIP
>>> with performance_report(filename="dask-report.html"):      # doctest: +SKIP
...     x.compute()

On entering, the block remembers the time and where the scheduler's task
stream is; on leaving, it asks the scheduler for what happened since
(``performance_report_data``: task-stream records, per-prefix summary,
workers' merged profile, the scheduler's event-loop profile, its recent
logs) and writes one HTML file: a summary (duration, tasks, compute time,
efficiency = compute / (threads x wall)), the task stream as an SVG chart,
a per-prefix table, the workers' profile and the scheduler's profile (each
a flame graph drawn as inline SVG by ``flamegraph.svg``, with its table of
top functions as the twin), its logs, and the code that ran (the caller's
source, ``stacklevel`` frames up).

The file opens offline: CSS, SVG and the tab switching (CSS only, no
script) are inline; nothing is fetched from anywhere.  Every string that
comes from the cluster (keys, worker names, log lines, code) is escaped.

``render`` is a pure function from that data to the HTML text.
"""
from __future__ import annotations

import hashlib
import html
import inspect
import logging
import time
from typing import Any

from distributed.diagnostics import flamegraph
from distributed.diagnostics.task_stream import efficiency, rectangles

__all__ = ["performance_report", "render", "MAX_RECTS"]

logger = logging.getLogger(__name__)

#: The chart draws at most this many rectangles (the latest ones).
MAX_RECTS = 20_000
_MAX_CODE = 50_000
_EMPTY = {"count": 0, "children": {}}
_CHART_WIDTH = 1000
_LANE_HEIGHT = 14


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _color(prefix: str) -> str:
    """A stable colour per prefix (same prefix, same colour, every report)."""
    h = int(hashlib.md5(prefix.encode("utf-8", "replace")).hexdigest()[:6], 16)
    return f"hsl({h % 360},{55 + h % 25}%,{45 + (h >> 8) % 15}%)"


def _fmt_seconds(s: float) -> str:
    if s < 1e-3:
        return f"{s * 1e6:.0f} us"
    if s < 1:
        return f"{s * 1e3:.1f} ms"
    if s < 120:
        return f"{s:.2f} s"
    return f"{s / 60:.1f} min"


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "kiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n} B"


def _task_stream_svg(records: list, start: float, stop: float) -> str:
    rects = rectangles(records)
    shown = rects[-MAX_RECTS:]
    lanes = sorted({r["lane"] for r in shown})
    index = {lane: i for i, lane in enumerate(lanes)}
    t0 = min([start] + [r["start"] for r in shown]) if shown else start
    t1 = max([stop] + [r["start"] + r["duration"] for r in shown]) if shown else stop
    span = max(t1 - t0, 1e-9)
    label_w = 220
    width = label_w + _CHART_WIDTH
    height = max(len(lanes), 1) * _LANE_HEIGHT + 20
    parts = [f'<svg class="stream" width="{width}" '
             f'height="{height}" role="img" aria-label="task stream">']
    for lane, i in index.items():
        y = i * _LANE_HEIGHT
        parts.append(f'<text x="2" y="{y + _LANE_HEIGHT - 3}" class="lane">{_e(lane)}</text>')
    for r in shown:
        x = label_w + (r["start"] - t0) / span * _CHART_WIDTH
        w = max(r["duration"] / span * _CHART_WIDTH, 0.5)
        y = index[r["lane"]] * _LANE_HEIGHT + 1
        if r["action"] == "transfer":
            fill = "#d62728" if r["status"] == "error" else "#999"
        else:
            fill = "#000" if r["status"] == "error" else _color(r["prefix"])
        parts.append(f'<rect x="{x:.2f}" y="{y}" width="{w:.2f}" height="{_LANE_HEIGHT - 2}" '
                     f'fill="{fill}"><title>{_e(r["key"])} ({_e(r["action"])}, '
                     f'{_e(_fmt_seconds(r["duration"]))}, {_e(r["worker"])})</title></rect>')
    parts.append(f'<text x="{label_w}" y="{height - 4}" class="axis">0 s</text>')
    parts.append(f'<text x="{width - 60}" y="{height - 4}" class="axis">{_e(_fmt_seconds(span))}</text>')
    parts.append("</svg>")
    note = ""
    if len(rects) > len(shown):
        note = f"<p>Showing the latest {len(shown):,} of {len(rects):,} rectangles.</p>"
    return note + "".join(parts)


def _profile_table(tree: dict, limit: int = 30) -> str:
    rows = flamegraph.top_functions(tree, limit)
    if not rows:
        return "<p>No samples (the work was too short to be sampled, or profiling is off).</p>"
    body = "".join(f"<tr><td>{r['count']}</td><td>{r['self']}</td><td>{100 * r['share']:.1f}%</td>"
                   f"<td>{_e(r['name'])}</td><td>{_e(r['filename'])}:{_e(r['line_number'])}</td></tr>"
                   for r in rows)
    return (f"<p>{tree.get('count', 0):,} samples.</p><table><thead><tr><th>samples</th><th>self</th>"
            f"<th>share</th><th>function</th><th>where</th></tr></thead><tbody>{body}</tbody></table>")


def _profile_section(tree: dict, label: str) -> str:
    """The flame graph of ``tree`` (hover a frame for its samples) over its table twin."""
    if not tree.get("count"):
        return _profile_table(tree)
    return ("<p>Root on top, each frame under its caller, width proportional to its samples; "
            "hover a frame for its file, line and share.</p>"
            f'<div class="flamebox">{flamegraph.svg(tree, width=_CHART_WIDTH + 220, label=label)}</div>'
            f"<h3>Top functions</h3>{_profile_table(tree)}")


_CSS = """
body{font-family:system-ui,sans-serif;margin:1em 2em;color:#222}
h1{font-size:1.4em}table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #ccc;padding:2px 8px;text-align:left;font-size:.9em}
pre{background:#f6f6f6;padding:.5em;overflow:auto;max-height:40em}
.tabs>input{display:none}.tabs>label{display:inline-block;padding:4px 12px;border:1px solid #ccc;
border-bottom:none;cursor:pointer;background:#eee;margin-right:2px}
.tabs>input:checked+label{background:#fff;font-weight:bold}
.tab{display:none;border-top:1px solid #ccc;padding-top:.5em}
svg.stream text{font-size:10px;font-family:monospace}
svg.flame{max-width:100%;height:auto}svg.flame text{font-size:10px;font-family:monospace;pointer-events:none;fill:#222}
.flamebox{overflow-x:auto}
"""


def _tabs(tabs: list[tuple[str, str]]) -> str:
    inputs, panels, rules = [], [], []
    for i, (title, body) in enumerate(tabs):
        checked = " checked" if i == 0 else ""
        inputs.append(f'<input type="radio" name="tab" id="tab{i}"{checked}>'
                      f'<label for="tab{i}">{_e(title)}</label>')
        panels.append(f'<section class="tab" id="panel{i}"><h2>{_e(title)}</h2>{body}</section>')
        rules.append(f"#tab{i}:checked~#panel{i}{{display:block}}")
    return f'<style>{"".join(rules)}</style><div class="tabs">{"".join(inputs)}{"".join(panels)}</div>'


def render(data: dict, code: str = "", title: str = "Dask Performance Report") -> str:
    """The report's HTML from ``performance_report_data``'s reply.

    >>> page = render({"start": 0.0, "stop": 2.0, "records": [], "summary": [],
    ...                "workers": [], "nthreads": 0, "profile": {"count": 0, "children": {}},
    ...                "scheduler_profile": {"count": 0, "children": {}}, "logs": [],
    ...                "scheduler": "tcp://<x>"}, code="print(1)")
    >>> "tcp://&lt;x&gt;" in page and "<script" not in page
    True
    """
    records = data.get("records") or []
    start, stop = data.get("start") or time.time(), data.get("stop") or time.time()
    wall = max(stop - start, 0.0)
    nthreads = data.get("nthreads") or 0
    compute = sum(r["compute"] for r in data.get("summary") or [])
    transfer = sum(r["transfer"] for r in data.get("summary") or [])
    eff = efficiency(records, nthreads, start, stop)
    summary_rows = [
        ("Duration", _fmt_seconds(wall)),
        ("Tasks", f"{len(records):,}"),
        ("Erred tasks", f"{sum(1 for r in records if r.get('status') == 'error'):,}"),
        ("Compute time", _fmt_seconds(compute)),
        ("Transfer time", _fmt_seconds(transfer)),
        ("Workers / threads", f"{len(data.get('workers') or [])} / {nthreads}"),
        ("Efficiency (compute / (threads x wall))", "n/a" if eff is None else f"{100 * eff:.1f}%"),
        ("Scheduler", data.get("scheduler", "")),
        ("Started", time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(start))),
    ]
    summary = "<table>" + "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>"
                                  for k, v in summary_rows) + "</table>"
    prefix_rows = "".join(
        f"<tr><td>{_e(r['prefix'])}</td><td>{r['count']:,}</td><td>{r['erred']:,}</td>"
        f"<td>{_e(_fmt_seconds(r['compute']))}</td><td>{_e(_fmt_seconds(r['mean']))}</td>"
        f"<td>{_e(_fmt_seconds(r['transfer']))}</td><td>{_e(_fmt_bytes(r['nbytes']))}</td>"
        f"<td>{_e(_fmt_bytes(r.get('transfer_bytes', 0)))}</td></tr>"
        for r in data.get("summary") or [])
    prefixes = ("<table><thead><tr><th>prefix</th><th>tasks</th><th>erred</th><th>compute</th>"
                "<th>mean</th><th>transfer</th><th>output bytes</th><th>bytes transferred</th>"
                f"</tr></thead><tbody>{prefix_rows}</tbody></table>")
    workers = "".join(f"<tr><td>{_e(w['name'])}</td><td>{_e(w['address'])}</td><td>{w['nthreads']}</td>"
                      f"<td>{_e(_fmt_bytes(w.get('memory_limit') or 0))}</td><td>{_e(w['status'])}</td></tr>"
                      for w in data.get("workers") or [])
    summary += ("<h3>Workers</h3><table><thead><tr><th>name</th><th>address</th><th>threads</th>"
                f"<th>memory limit</th><th>status</th></tr></thead><tbody>{workers}</tbody></table>")
    logs = "".join(f"<tr><td>{_e(level)}</td><td><pre>{_e(msg)}</pre></td></tr>"
                   for level, msg in data.get("logs") or [])
    code = code[:_MAX_CODE]
    tabs = [
        ("Summary", summary + "<h3>Code</h3>" + f"<pre>{_e(code) or '(source not available)'}</pre>"),
        ("Task Stream", _task_stream_svg(records, start, stop)),
        ("Task Prefixes", prefixes),
        ("Worker Profile (compute)", _profile_section(data.get("profile") or _EMPTY, "all tasks")),
        ("Scheduler Profile", _profile_section(data.get("scheduler_profile") or _EMPTY,
                                               "scheduler's event loop")),
        ("Scheduler Logs", f"<table><tbody>{logs}</tbody></table>"),
    ]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
            "style-src 'unsafe-inline'; img-src data:\">"
            f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
            f"<h1>{_e(title)}</h1>{_tabs(tabs)}</body></html>\n")


def _caller_code(stacklevel: int) -> str:
    frame = inspect.currentframe()
    try:
        for _ in range(stacklevel + 1):  # past this function, then __enter__ and callers
            if frame is None:
                return ""
            frame = frame.f_back
        if frame is None:
            return ""
        try:
            return inspect.getsource(frame)
        except (OSError, TypeError):
            return ""
    finally:
        del frame


class performance_report:
    """Write a self-contained HTML report of the work done in the block.

    ``filename``: where to write it.  ``stacklevel``: which caller's source
    goes in the report (1: the code holding the ``with``).  ``mode``: only
    ``None``/``"inline"`` (everything is inline; a CDN mode would fetch
    from the network).  ``storage_options`` (fsspec) cannot be honoured:
    the file is written locally.

    >>> with performance_report(filename="report.html"):   # doctest: +SKIP
    ...     client.gather(client.map(inc, range(100)))
    """

    def __init__(self, filename: str = "dask-report.html", stacklevel: int = 1, mode: str | None = None,
                 storage_options: dict | None = None):
        if mode not in (None, "inline"):
            raise ValueError(f"performance_report(mode={mode!r}): the report is always self-contained "
                             "(everything inline); only mode=None or 'inline' is possible")
        if storage_options:
            raise ValueError("performance_report(storage_options=...): the report is written to a local "
                             "file; fsspec storage options cannot be honoured")
        if not isinstance(filename, str) or not filename:
            raise TypeError(f"filename must be a non-empty path string, not {filename!r}")
        if "://" in filename:
            raise ValueError(f"performance_report writes a local file, not {filename!r}")
        if not isinstance(stacklevel, int) or stacklevel < 0:
            raise ValueError(f"stacklevel must be a non-negative integer, not {stacklevel!r}")
        self.filename = filename
        self.stacklevel = stacklevel
        self.client: Any = None
        self._start = 0.0
        self._index: int | None = None
        self._code = ""

    def _get_client(self) -> Any:
        from distributed.context import default_client

        return default_client()

    def __enter__(self) -> performance_report:
        self._code = _caller_code(self.stacklevel)
        self.client = self._get_client()
        self._start = time.time()
        self._index = self.client.sync(self.client._task_stream_index)
        return self

    def __exit__(self, *exc: Any) -> None:
        data = self.client.sync(self._fetch)
        self._write(data)

    async def __aenter__(self) -> performance_report:
        self._code = _caller_code(self.stacklevel)
        self.client = self._get_client()
        self._start = time.time()
        self._index = await self.client._task_stream_index()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        data = await self._fetch()
        self._write(data)

    async def _fetch(self) -> dict:
        return await self.client.scheduler.performance_report_data(start=self._start, since=self._index)

    def _write(self, data: dict) -> None:
        page = render(data, self._code)
        with open(self.filename, "w", encoding="utf-8") as f:
            f.write(page)
        logger.info("performance report written to %s", self.filename)
