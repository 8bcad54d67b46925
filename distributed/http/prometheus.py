"""The Prometheus text exposition format (0.0.4), written by us.

No ``prometheus_client`` and no process-global registry: each server builds
its families from its own state at scrape time (``collect`` functions in
``metrics_scheduler``/``metrics_worker``/``metrics_process``) and this module
turns them into text.  Counters follow the client library's naming, so the
exposed names match upstream's: a counter ``x`` is written ``x_total``.

Pure functions; safe from any thread.
"""
from __future__ import annotations

import math
from collections.abc import Iterable

from distributed.http.base import BaseHandler

__all__ = ["MetricFamily", "render", "CONTENT_TYPE", "MetricsHandler"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class MetricFamily:
    """One metric family: a name, a type, help text and its samples.

    ``kind`` is ``"gauge"`` or ``"counter"``; a counter's name must not end
    in ``_total`` (the suffix is added when written, as the client library does).

    >>> f = MetricFamily("dask_scheduler_tasks", "gauge", "Tasks by state", labels=("state",))
    >>> f.add(3, state="memory")
    >>> print(render([f]), end="")
    # HELP dask_scheduler_tasks Tasks by state
    # TYPE dask_scheduler_tasks gauge
    dask_scheduler_tasks{state="memory"} 3.0
    """

    __slots__ = ("name", "kind", "help", "labels", "samples")

    def __init__(self, name: str, kind: str, help: str, labels: tuple[str, ...] = ()):
        if kind not in ("gauge", "counter"):
            raise ValueError(f"metric kind must be 'gauge' or 'counter', not {kind!r}")
        if kind == "counter" and name.endswith("_total"):
            raise ValueError(f"counter {name!r}: give the name without '_total'; it is added when written")
        self.name = name
        self.kind = kind
        self.help = help
        self.labels = tuple(labels)
        self.samples: list[tuple[tuple[str, ...], float]] = []

    def add(self, value: float, **labels: str) -> None:
        """Add one sample; ``labels`` must be exactly the family's label names."""
        if set(labels) != set(self.labels):
            raise ValueError(f"{self.name}: labels {sorted(labels)} != {sorted(self.labels)}")
        self.samples.append((tuple(str(labels[n]) for n in self.labels), value))

    @property
    def sample_name(self) -> str:
        return self.name + "_total" if self.kind == "counter" else self.name


def _escape_label(value: str) -> str:
    r"""Escape a label value as the format asks (backslash, quote, newline).

    >>> _escape_label('a"b\\c\nd')
    'a\\"b\\\\c\\nd'
    """
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    """A sample value as the format writes it.

    >>> _number(1), _number(float("inf")), _number(float("nan"))
    ('1.0', '+Inf', 'NaN')
    """
    v = float(value)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(v)


def render(families: Iterable[MetricFamily]) -> str:
    """The text format for ``families``, in the order given."""
    out: list[str] = []
    for f in families:
        # The HELP and TYPE lines name the family; counters' samples carry _total.
        out.append(f"# HELP {f.sample_name} {_escape_help(f.help)}\n")
        out.append(f"# TYPE {f.sample_name} {f.kind}\n")
        name = f.sample_name
        for values, v in f.samples:
            if values:
                labels = ",".join(f'{n}="{_escape_label(x)}"' for n, x in zip(f.labels, values))
                out.append(f"{name}{{{labels}}} {_number(v)}\n")
            else:
                out.append(f"{name} {_number(v)}\n")
    return "".join(out)


class MetricsHandler(BaseHandler):
    """``GET /metrics``: the server's families in the text format."""

    def initialize(self, server, collect):
        super().initialize(server)
        self.collect = collect

    def get(self):
        self.set_header("Content-Type", CONTENT_TYPE)
        self.write(render(self.collect(self.server)))
