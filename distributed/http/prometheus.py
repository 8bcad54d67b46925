"""The Prometheus text exposition format (0.0.4), written by us.

No ``prometheus_client`` and no process-global registry: each server builds
its families from its own state at scrape time (``collect`` functions in
``metrics_scheduler``/``metrics_worker``/``metrics_process``) and this module
turns them into text.  Counters follow the client library's naming, so the
exposed names match upstream's: a counter ``x`` is written ``x_total``.

Pure functions; safe from any thread.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Iterable

from distributed.http.base import BaseHandler

__all__ = ["MetricFamily", "render", "label_set", "CONTENT_TYPE", "MetricsHandler"]

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
        self.samples: list[tuple[str, float]] = []  # (rendered label set, value)

    def add(self, value: float, **labels: str) -> None:
        """Add one sample; ``labels`` must be exactly the family's label names.

        The label set is written out here (escaped once), so that rendering
        a scrape with thousands of series is a join of ready strings.
        """
        names = self.labels
        if len(labels) != len(names):
            raise ValueError(f"{self.name}: labels {sorted(labels)} != {sorted(names)}")
        if names:
            try:
                text = ",".join([f'{n}="{_escape_label(str(labels[n]))}"' for n in names])
            except KeyError:
                raise ValueError(f"{self.name}: labels {sorted(labels)} != {sorted(names)}") from None
            self.samples.append(("{" + text + "}", value))
        else:
            self.samples.append(("", value))

    def add_labelled(self, labels: str, value: float) -> None:
        """Add a sample whose label set ``labels`` comes from ``label_set`` (the
        fast path for one label set reused across families)."""
        self.samples.append((labels, value))

    @property
    def sample_name(self) -> str:
        return self.name + "_total" if self.kind == "counter" else self.name


@functools.lru_cache(maxsize=4096)
def _escape_label(value: str) -> str:
    r"""Escape a label value as the format asks (backslash, quote, newline).

    Cached: the same prefix names come back in several families and scrapes.

    >>> _escape_label('a"b\\c\nd')
    'a\\"b\\\\c\\nd'
    """
    if "\\" not in value and '"' not in value and "\n" not in value:
        return value
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def label_set(**labels: str) -> str:
    """A rendered label set, for ``MetricFamily.add_labelled``.

    >>> label_set(task_prefix_name="inc", state="memory")
    '{task_prefix_name="inc",state="memory"}'
    """
    return "{" + ",".join(f'{n}="{_escape_label(str(v))}"' for n, v in labels.items()) + "}"


def _escape_help(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    """A sample value as the format writes it.

    >>> _number(1), _number(float("inf")), _number(float("nan"))
    ('1.0', '+Inf', 'NaN')
    """
    v = float(value)
    if v != v:
        return "NaN"
    if v in (math.inf, -math.inf):
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
        for labels, v in f.samples:
            v = float(v)
            # repr of a finite float is the format's number; the rest is rare.
            out.append(f"{name}{labels} {repr(v) if v - v == 0 else _number(v)}\n")
    return "".join(out)


class MetricsHandler(BaseHandler):
    """``GET /metrics``: the server's families in the text format."""

    def initialize(self, server, collect):
        super().initialize(server)
        self.collect = collect

    def get(self):
        self.set_header("Content-Type", CONTENT_TYPE)
        self.write(render(self.collect(self.server)))
