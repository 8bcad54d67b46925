"""Our Prometheus text writer (distributed/http/prometheus.py) and the
dashboard address parser: the format's escaping and naming rules, and bad
input refused with a clear error."""
from __future__ import annotations

import math

import pytest

from distributed.http.prometheus import MetricFamily, render
from distributed.http.server import parse_address


def test_counter_gets_total_suffix_and_gauge_does_not():
    c = MetricFamily("dask_scheduler_tick_count", "counter", "Ticks")
    c.add(3)
    g = MetricFamily("dask_scheduler_clients", "gauge", "Clients")
    g.add(1)
    text = render([c, g])
    assert "# TYPE dask_scheduler_tick_count_total counter\ndask_scheduler_tick_count_total 3.0\n" in text
    assert "# TYPE dask_scheduler_clients gauge\ndask_scheduler_clients 1.0\n" in text


def test_label_values_and_help_are_escaped():
    f = MetricFamily("m", "gauge", "help with \\ and\nnewline", labels=("name",))
    f.add(1, name='a"b\\c\nd')
    text = render([f])
    assert "# HELP m help with \\\\ and\\nnewline\n" in text
    assert 'm{name="a\\"b\\\\c\\nd"} 1.0\n' in text


def test_special_values():
    f = MetricFamily("m", "gauge", "h", labels=("k",))
    f.add(math.inf, k="a")
    f.add(math.nan, k="b")
    text = render([f])
    assert 'm{k="a"} +Inf' in text and 'm{k="b"} NaN' in text


def test_bad_families_are_refused():
    with pytest.raises(ValueError, match="without '_total'"):
        MetricFamily("x_total", "counter", "h")
    with pytest.raises(ValueError, match="gauge' or 'counter"):
        MetricFamily("x", "histogram", "h")
    f = MetricFamily("x", "gauge", "h", labels=("state",))
    with pytest.raises(ValueError, match="labels"):
        f.add(1, other="y")
    assert f.samples == []


def test_parse_address():
    assert parse_address(":8787", "127.0.0.1", 0) == ("127.0.0.1", 8787)
    assert parse_address("0.0.0.0:0", "127.0.0.1", 8787) == ("0.0.0.0", 0)
    assert parse_address("8788", "10.1.1.1", 8787) == ("10.1.1.1", 8788)
    assert parse_address(9000, "h", 1) == ("h", 9000)
    assert parse_address("[::1]:8787", "127.0.0.1", 0) == ("::1", 8787)
    assert parse_address("tcp://127.0.0.1:5", "x", 0) == ("127.0.0.1", 5)
    with pytest.raises(ValueError, match="not a port number"):
        parse_address(":http", "127.0.0.1", 0)
    with pytest.raises(ValueError, match="not in 0..65535"):
        parse_address(":70000", "127.0.0.1", 0)
