"""A statistical profiler: call trees sampled from running threads.

Every worker runs one ``Sampler``: a daemon thread that wakes every
``distributed.worker.profile.interval`` (10 ms), reads the current frame of
each thread running a task (``sys._current_frames()``), and adds its stack
to a call tree; it also samples the server's event-loop thread into a
separate tree (``server=True``).  Every ``distributed.worker.profile.cycle``
(1 s) the trees of the cycle are stored with their time in a bounded
history (one hour), so a query can ask for a time range.  Sampling never
runs on the event loop; queries (on the loop) merge copies.

A tree has upstream's shape: ``{"count", "children", "identifier",
"description"}``, where ``children`` maps an identifier
(``"name;filename;firstline"``) to a child tree and ``description`` is
``{"filename", "name", "line_number", "line"}``.

Thread rules: ``Sampler`` state changes under its lock, from its own thread;
``get_profile`` takes the lock to copy.

>>> import sys
>>> tree = create()
>>> process(sys._getframe(), tree)
>>> tree["count"]
1
>>> merge(tree, tree)["count"]
2
"""
from __future__ import annotations

import linecache
import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from distributed import config
from distributed.utils import key_split

__all__ = ["create", "process", "merge", "identifier", "call_stack", "Sampler", "plot_data",
           "DEFAULT_INTERVAL", "DEFAULT_CYCLE", "HISTORY_SECONDS"]

logger = logging.getLogger(__name__)

DEFAULT_INTERVAL = 0.01
DEFAULT_CYCLE = 1.0
#: How far back the history reaches (at one entry per cycle).
HISTORY_SECONDS = 3600
# Deeper stacks are cut from the bottom (the innermost frames go).
_MAX_DEPTH = 200


def create() -> dict:
    """An empty tree (the root).

    >>> create()["identifier"]
    'root'
    """
    return {"count": 0, "children": {}, "identifier": "root",
            "description": {"filename": "", "name": "", "line_number": 0, "line": ""}}


def identifier(frame: Any) -> str:
    """``"name;filename;firstline"`` of a frame's code (None -> ``"None"``).

    >>> identifier(None)
    'None'
    """
    if frame is None:
        return "None"
    co = frame.f_code
    return f"{co.co_name};{co.co_filename};{co.co_firstlineno}"


def _description(frame: Any) -> dict:
    co = frame.f_code
    line = linecache.getline(co.co_filename, frame.f_lineno, frame.f_globals).strip()
    return {"filename": co.co_filename, "name": co.co_name, "line_number": frame.f_lineno,
            "line": line}


def _stack(frame: Any, omit: Callable[[Any], bool] | None) -> list:
    """Frames from the outermost to ``frame``; frames up to the last one
    ``omit`` matches (the machinery that runs a task) are left out."""
    frames = []
    f = frame
    while f is not None:
        frames.append(f)
        f = f.f_back
    frames.reverse()
    if omit is not None:
        for i in range(len(frames) - 1, -1, -1):
            if omit(frames[i]):
                frames = frames[i + 1:]
                break
    return frames[:_MAX_DEPTH]


def process(frame: Any, tree: dict, omit: Callable[[Any], bool] | None = None) -> None:
    """Add one sample, the stack ending at ``frame``, to ``tree``.

    >>> t = create(); process(sys._getframe(), t); len(t["children"])
    1
    """
    tree["count"] += 1
    node = tree
    for f in _stack(frame, omit):
        ident = identifier(f)
        child = node["children"].get(ident)
        if child is None:
            child = node["children"][ident] = {"count": 0, "children": {}, "identifier": ident,
                                               "description": _description(f)}
        child["count"] += 1
        node = child


def merge(*trees: dict) -> dict:
    """One tree with the counts of all of ``trees`` summed (new dicts).

    >>> merge()["count"]
    0
    """
    out = create()
    for t in trees:
        _merge_into(out, t)
    return out


def _merge_into(out: dict, tree: dict) -> None:
    out["count"] += tree["count"]
    for ident, child in tree["children"].items():
        mine = out["children"].get(ident)
        if mine is None:
            mine = out["children"][ident] = {"count": 0, "children": {}, "identifier": ident,
                                             "description": dict(child["description"])}
        _merge_into(mine, child)


def call_stack(frame: Any, omit: Callable[[Any], bool] | None = None) -> list[str]:
    """The stack ending at ``frame`` as text lines, outermost first, as
    ``traceback.format_stack`` writes them.

    >>> call_stack(sys._getframe())[-1].strip().startswith('File')
    True
    """
    out = []
    for f in _stack(frame, omit):
        d = _description(f)
        out.append(f'  File "{d["filename"]}", line {d["line_number"]}, in {d["name"]}\n'
                   + (f"    {d['line']}\n" if d["line"] else ""))
    return out


def plot_data(tree: dict, max_depth: int = 50) -> list[dict]:
    """Rectangles of an icicle graph of ``tree``: ``{"x", "width", "depth",
    "name", "filename", "line_number", "count"}`` with x and width as
    fractions of the root's count; children narrower than 0.1% are dropped.

    >>> plot_data(create())
    []
    """
    total = tree["count"]
    out: list[dict] = []
    if not total:
        return out
    stack = [(tree, 0.0, 0)]
    while stack:
        node, x, depth = stack.pop()
        for child in sorted(node["children"].values(), key=lambda c: c["identifier"]):
            width = child["count"] / total
            if width >= 0.001 and depth < max_depth:
                d = child["description"]
                out.append({"x": x, "width": width, "depth": depth, "name": d["name"],
                            "filename": d["filename"], "line_number": d["line_number"],
                            "count": child["count"]})
                stack.append((child, x, depth + 1))
            x += width
    return out


def _seconds(key: str, default: float) -> float:
    value = config.get(key, None)
    if value is None:
        return default
    seconds = config.parse_timedelta(value)
    if not seconds or seconds <= 0:
        raise ValueError(f"configuration {key!r} must be a positive duration, not {value!r}")
    return seconds


class Sampler:
    """The sampling thread of one server (see the module docstring).

    ``targets()`` (called on the sampling thread; must be cheap and
    thread-safe, e.g. a copy of a dict) gives ``{thread ident: key}`` of the
    threads to sample; ``loop_thread`` is the event loop's thread ident (its
    samples go to the server tree).  ``omit(frame)`` marks the machinery
    frames cut from the top of each stack.

    >>> s = Sampler(lambda: {}, interval=0.01, cycle=0.1)
    >>> s.get_profile()["count"]
    0
    """

    def __init__(self, targets: Callable[[], dict], loop_thread: int | None = None,
                 interval: float | None = None, cycle: float | None = None,
                 omit: Callable[[Any], bool] | None = None, name: str = "Dask-Profile"):
        self.targets = targets
        self.loop_thread = loop_thread
        self.interval = interval if interval is not None else _seconds(
            "distributed.worker.profile.interval", DEFAULT_INTERVAL)
        self.cycle = cycle if cycle is not None else _seconds(
            "distributed.worker.profile.cycle", DEFAULT_CYCLE)
        self.omit = omit
        self.name = name
        n = max(1, int(HISTORY_SECONDS / self.cycle))
        self._lock = threading.Lock()
        self._recent = create()
        self._recent_keys: dict[str, dict] = {}
        self._recent_server = create()
        self._cycle_start = time.time()
        self.history: deque = deque(maxlen=n)  # (time, tree, {prefix: tree})
        self.server_history: deque = deque(maxlen=n)  # (time, tree)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the sampling thread (idempotent)."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop and join the sampling thread (idempotent)."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop.set()
        thread.join(timeout)
        if thread.is_alive():
            logger.warning("profiler thread %s did not stop within %.0fs", self.name, timeout)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sample()
            except Exception:  # never let a bad frame end the profiler
                logger.debug("profile sample failed", exc_info=True)

    def sample(self, now: float | None = None) -> None:
        """Take one sample of every target (and the loop); rotate the cycle
        when it is over.  Called by the sampling thread (tests call it)."""
        targets = self.targets()
        frames = sys._current_frames()
        now = time.time() if now is None else now
        with self._lock:
            for ident, key in targets.items():
                frame = frames.get(ident)
                if frame is None:
                    continue
                process(frame, self._recent, self.omit)
                if key is not None:
                    prefix = key_split(key)
                    tree = self._recent_keys.get(prefix)
                    if tree is None:
                        tree = self._recent_keys[prefix] = create()
                    process(frame, tree, self.omit)
            if self.loop_thread is not None:
                frame = frames.get(self.loop_thread)
                if frame is not None:
                    process(frame, self._recent_server)
            if now - self._cycle_start >= self.cycle:
                self._rotate(now)
        del frames

    def _rotate(self, now: float) -> None:
        if self._recent["count"]:
            self.history.append((self._cycle_start, self._recent, self._recent_keys))
        if self._recent_server["count"]:
            self.server_history.append((self._cycle_start, self._recent_server))
        self._recent, self._recent_keys, self._recent_server = create(), {}, create()
        self._cycle_start = now

    def get_profile(self, start: float | None = None, stop: float | None = None,
                    key: Any = None, server: bool = False) -> dict:
        """The merged tree of the cycles that began in ``[start, stop]``
        (plus the current one when ``stop`` is None); ``key``: only tasks of
        that key's prefix; ``server``: the event loop's tree instead."""
        prefix = None if key is None else key_split(key)
        with self._lock:
            if server:
                entries = [(t, tree) for t, tree in self.server_history]
                current = [(self._cycle_start, self._recent_server)]
            else:
                entries = [(t, tree if prefix is None else keys.get(prefix))
                           for t, tree, keys in self.history]
                current = [(self._cycle_start,
                            self._recent if prefix is None else self._recent_keys.get(prefix))]
            if stop is None:
                entries += current
            trees = [tree for t, tree in entries if tree is not None
                     and (start is None or t + self.cycle >= start) and (stop is None or t <= stop)]
            return merge(*trees)

    def metadata(self) -> dict:
        """``{"counts": [(time, count)], "keys": {prefix: [(time, count)]}}``
        per cycle: how much was sampled when (upstream's profile_metadata)."""
        with self._lock:
            counts = [(t, tree["count"]) for t, tree, _ in self.history]
            keys: dict[str, list] = {}
            for t, _, per in self.history:
                for p, tree in per.items():
                    keys.setdefault(p, []).append((t, tree["count"]))
        return {"counts": counts, "keys": keys}


def merge_profiles(trees: Iterable[dict]) -> dict:
    """``merge`` over an iterable (the per-worker answers of a query).

    >>> merge_profiles([create(), create()])["count"]
    0
    """
    return merge(*list(trees))
