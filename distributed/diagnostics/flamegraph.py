"""Flame graphs (icicles) of the profiler's call trees.

Three pure functions over a tree of ``distributed.diagnostics.profile``
(``{"count", "children", "identifier", "description"}``):

* ``trim``: a smaller copy for a browser (subtrees under a share of the
  samples and frames deeper than a limit left out), with what was left out;
* ``top_functions``: the table twin of a flame graph, functions by samples
  (inclusive and self);
* ``svg``: a static icicle as inline SVG text (root on top, one rectangle
  per node, width proportional to its samples, a ``<title>`` tooltip on
  each) for the self-contained performance report.  Every string from the
  tree is escaped.

The dashboard's ``/json/profile.json`` sends ``trim``'s tree and
``top_functions``; its JavaScript draws the same icicle with zoom.

No I/O, no clock, no global state: safe on any thread.

>>> from distributed.diagnostics.profile import create, process
>>> import sys
>>> tree = create(); process(sys._getframe(), tree)
>>> small, dropped = trim(tree)
>>> small["count"], dropped["samples"]
(1, 0)
>>> "<svg" in svg(tree)
True
"""
from __future__ import annotations

import html
import zlib
from typing import Any

from distributed.diagnostics.profile import plot_data

__all__ = ["MIN_SHARE", "MAX_DEPTH", "trim", "top_functions", "svg", "color"]

#: Subtrees with fewer than this share of the root's samples are left out.
MIN_SHARE = 0.001
#: Frames deeper than this (below the root) are left out.
MAX_DEPTH = 60


def _node(src: dict) -> dict:
    return {"count": src["count"], "children": {}, "identifier": src.get("identifier", "root"),
            "description": dict(src.get("description") or {})}


def _size(tree: dict) -> int:
    """How many nodes a subtree has (itself included)."""
    n, stack = 0, [tree]
    while stack:
        node = stack.pop()
        n += 1
        stack.extend(node.get("children", {}).values())
    return n


def trim(tree: dict, min_share: float = MIN_SHARE, max_depth: int = MAX_DEPTH) -> tuple[dict, dict]:
    """A copy of ``tree`` without the subtrees that hold less than
    ``min_share`` of the root's samples or lie deeper than ``max_depth``
    frames, and ``{"samples", "nodes"}``: how many samples passed through a
    subtree left out (each counted once, at the top of its subtree) and how
    many nodes went.

    >>> leaf = {"count": 1, "children": {}, "identifier": "f;a.py;1",
    ...         "description": {"name": "f", "filename": "a.py", "line_number": 1, "line": ""}}
    >>> big = dict(leaf, count=9999, identifier="g;a.py;5")
    >>> root = {"count": 10000, "children": {"f;a.py;1": leaf, "g;a.py;5": big}, "identifier": "root",
    ...         "description": {}}
    >>> small, dropped = trim(root)
    >>> sorted(small["children"]), dropped
    (['g;a.py;5'], {'samples': 1, 'nodes': 1})
    """
    if not 0 <= min_share < 1:
        raise ValueError(f"min_share must be in [0, 1), not {min_share!r}")
    if max_depth < 0:
        raise ValueError(f"max_depth must be >= 0, not {max_depth!r}")
    total = tree.get("count", 0) or 0
    floor = min_share * total
    out = _node(tree)
    dropped = {"samples": 0, "nodes": 0}
    stack = [(tree, out, 0)]
    while stack:
        src, dst, depth = stack.pop()
        for ident, child in src.get("children", {}).items():
            if depth >= max_depth or child["count"] < floor or child["count"] <= 0:
                dropped["samples"] += max(child["count"], 0)
                dropped["nodes"] += _size(child)
                continue
            copy = dst["children"][ident] = _node(child)
            stack.append((child, copy, depth + 1))
    return out, dropped


def top_functions(tree: dict, limit: int = 30) -> list[dict]:
    """Functions by samples, most first: ``{"name", "filename",
    "line_number", "identifier", "count", "self", "share"}``.  ``count``
    (inclusive) counts a sample once per function even when the function
    recurses; ``self`` counts the samples taken in the function itself;
    ``share`` is ``count`` over the root's samples.

    >>> top_functions({"count": 0, "children": {}})
    []
    """
    total = tree.get("count", 0) or 0
    rows: dict[str, dict] = {}

    def row(ident: str, node: dict) -> dict:
        r = rows.get(ident)
        if r is None:
            d = node.get("description") or {}
            r = rows[ident] = {"name": d.get("name", ""), "filename": d.get("filename", ""),
                               "line_number": d.get("line_number", 0), "identifier": ident,
                               "count": 0, "self": 0, "share": 0.0}
        return r

    # Iterative walk: call stacks may be hundreds of frames deep.
    stack: list[tuple[dict, frozenset]] = [(tree, frozenset())]
    while stack:
        node, on_path = stack.pop()
        for ident, child in node.get("children", {}).items():
            r = row(ident, child)
            if ident not in on_path:  # a recursive call is the same sample
                r["count"] += child["count"]
            below = sum(c["count"] for c in child.get("children", {}).values())
            r["self"] += max(child["count"] - below, 0)
            stack.append((child, on_path | {ident}))
    out = sorted(rows.values(), key=lambda r: (-r["count"], -r["self"], r["name"], r["identifier"]))[:limit]
    for r in out:
        r["share"] = r["count"] / total if total else 0.0
    return out


def color(name: str) -> str:
    """A warm colour, the same for the same function name every time.

    >>> color("f") == color("f")
    True
    """
    h = zlib.crc32(name.encode("utf-8", "replace"))
    return f"hsl({10 + h % 45},{65 + (h >> 8) % 25}%,{58 + (h >> 16) % 14}%)"


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _label(text: str, width: float, char: float = 6.2) -> str:
    """``text`` cut to fit ``width`` pixels ('' when nothing fits)."""
    room = int((width - 6) / char)
    if room < 3:
        return ""
    return text if len(text) <= room else text[:room - 1] + "\u2026"


def svg(tree: dict, width: int = 1000, row: int = 16, max_depth: int = MAX_DEPTH,
        label: str = "all") -> str:
    """A static icicle of ``tree`` as ``<svg class="flame">`` text: the root
    bar (``label``) on top, each frame under its caller, rectangles under
    ``MIN_SHARE`` of the samples (``profile.plot_data``'s rule) or deeper
    than ``max_depth`` left out.
    Each rectangle's ``<title>`` reads ``name (file:line) N samples, P%``.

    >>> from distributed.diagnostics.profile import create
    >>> svg(create())
    '<p>No samples.</p>'
    """
    total = tree.get("count", 0) or 0
    if not total:
        return "<p>No samples.</p>"
    boxes = plot_data(tree, max_depth=max_depth)
    depth = max([b["depth"] for b in boxes], default=-1) + 2
    height = depth * row
    parts = [f'<svg class="flame" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="flame graph, {total:,} samples">',
             f'<g class="flame-root"><rect x="0" y="0" width="{width}" height="{row - 1}" fill="#c9c9c9">'
             f"<title>{_e(label)}: {total:,} samples, 100%</title></rect>"
             f'<text x="3" y="{row - 4}">{_e(_label(f"{label} ({total:,} samples)", width))}</text></g>']
    for b in sorted(boxes, key=lambda b: (b["depth"], b["x"])):
        x, w, y = b["x"] * width, b["width"] * width, (b["depth"] + 1) * row
        if w < 0.3:  # thinner than a hairline: nothing to see or hover
            continue
        name = str(b["name"])
        where = f'{b["filename"]}:{b["line_number"]}'
        tip = f'{name} ({where}) {b["count"]:,} samples, {100 * b["count"] / total:.1f}%'
        text = _label(name, w)
        parts.append(f'<g><rect x="{x:.2f}" y="{y}" width="{max(w - 0.5, 0.3):.2f}" height="{row - 1}" '
                     f'fill="{color(name)}"><title>{_e(tip)}</title></rect>'
                     + (f'<text x="{x + 3:.2f}" y="{y + row - 4}">{_e(text)}</text>' if text else "")
                     + "</g>")
    parts.append("</svg>")
    return "".join(parts)
