"""``/json/profile.json``: the statistical profile, trimmed for a browser.

Query parameters (all optional):

* ``key``: a task key or prefix; only tasks of that prefix;
* ``start``/``stop``: seconds since the epoch, or a duration meaning that
  long ago (``30s``, ``10m``);
* ``server=1``: the workers' event loops instead of their tasks;
* ``scheduler=1``: the scheduler's event loop;
* ``workers``: comma-separated worker addresses (or names); default all.

The tree comes from the scheduler's ``"diagnostics"`` extension, the code
that answers ``client.profile()``; this module only parses the query and
trims the reply (``flamegraph.trim``: subtrees under 0.1% of the samples,
frames deeper than 60).  The reply is ``{"tree", "count", "dropped":
{"samples", "nodes"}, "min_share", "max_depth", "functions", "start",
"stop", "source"}``, where ``functions`` is ``flamegraph.top_functions``
of the whole tree (the flame graph's table twin).  A bad parameter gets a
400 with ``{"error": message}`` naming it, and changes nothing.

Runs on the scheduler's event loop.
"""
from __future__ import annotations

import math
import time

from tornado import web

from distributed import config
from distributed.diagnostics import flamegraph
from distributed.http.base import BaseHandler

__all__ = ["ProfileHandler", "parse_query"]

_FLAGS = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False, "": False}
_KNOWN = {"key", "start", "stop", "server", "scheduler", "workers", "token"}


def _when(name: str, value: str, now: float) -> float:
    """``start``/``stop``: epoch seconds, or a duration ago."""
    try:
        t = float(value)
    except ValueError:
        try:
            ago = config.parse_timedelta(value)
        except ValueError:
            raise ValueError(f"{name}={value!r} is neither seconds since the epoch nor a duration "
                             "such as '30s' or '10m'") from None
        if ago < 0:
            raise ValueError(f"{name}={value!r}: a duration ago cannot be negative")
        return now - ago
    if not math.isfinite(t) or t < 0:
        raise ValueError(f"{name}={value!r} is not a time (seconds since the epoch)")
    return t


def parse_query(args: dict[str, str], now: float) -> dict:
    """The extension's ``profile`` keywords from the query ``args``
    (one string per name); ValueError names a bad one.

    >>> parse_query({"start": "30s", "server": "1"}, now=100.0)["start"]
    70.0
    >>> parse_query({"start": "soon"}, now=0.0)
    Traceback (most recent call last):
    ...
    ValueError: start='soon' is neither seconds since the epoch nor a duration such as '30s' or '10m'
    """
    unknown = sorted(set(args) - _KNOWN)
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown}; known: {sorted(_KNOWN - {'token'})}")
    out: dict = {"key": None, "start": None, "stop": None, "server": False, "scheduler": False,
                 "workers": None}
    key = args.get("key")
    if key is not None:
        if not key:
            raise ValueError("key= is empty: give a task key or prefix, or leave it out")
        out["key"] = key
    for name in ("start", "stop"):
        if args.get(name):
            out[name] = _when(name, args[name], now)
    if out["start"] is not None and out["stop"] is not None and out["start"] > out["stop"]:
        raise ValueError(f"start ({out['start']}) is after stop ({out['stop']})")
    for name in ("server", "scheduler"):
        value = args.get(name)
        if value is not None:
            flag = _FLAGS.get(value.strip().lower())
            if flag is None:
                raise ValueError(f"{name}={value!r}: use 1 or 0")
            out[name] = flag
    if out["server"] and out["scheduler"]:
        raise ValueError("server=1 and scheduler=1 ask for two different trees; choose one")
    if out["scheduler"] and out["key"] is not None:
        raise ValueError("key= selects tasks, which the scheduler's event loop does not run")
    workers = args.get("workers")
    if workers is not None:
        names = [w.strip() for w in workers.split(",") if w.strip()]
        if not names:
            raise ValueError("workers= is empty: give comma-separated worker addresses, or leave it out")
        out["workers"] = names
    return out


class ProfileHandler(BaseHandler):
    """``GET /json/profile.json`` (see the module docstring)."""

    async def get(self):
        args = {name: self.get_query_argument(name) for name in self.request.query_arguments}
        try:
            query = parse_query(args, time.time())
        except ValueError as e:
            # The message goes in the body (JSON-encoded), never in a header.
            self.write_json({"error": str(e)}, status=400)
            return
        ext = self.server.scheduler.extensions.get("diagnostics")
        if ext is None:
            raise web.HTTPError(503, "the scheduler has no diagnostics extension, hence no profile")
        try:
            tree = await ext.profile(**query)
        except ValueError as e:  # an unknown worker: the extension names it
            self.write_json({"error": str(e)}, status=400)
            return
        small, dropped = flamegraph.trim(tree)
        source = "scheduler" if query["scheduler"] else "server" if query["server"] else "tasks"
        self.write_json({"tree": small, "count": tree["count"], "dropped": dropped,
                         "min_share": flamegraph.MIN_SHARE, "max_depth": flamegraph.MAX_DEPTH,
                         "functions": flamegraph.top_functions(tree), "start": query["start"],
                         "stop": query["stop"], "source": source})
