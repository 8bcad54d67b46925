"""Progress bars (distributed/diagnostics/progressbar.py) and the watches
behind them (distributed/diagnostics/progress_watch.py): text output on and off a
TTY, errors with their key, one bar per prefix, dask collections, the HTML
display without ipywidgets, and the scheduler paying nothing when nobody
watches."""
from __future__ import annotations

import io
import subprocess
import sys

import pytest

from distributed.diagnostics.progress_watch import WATCH_PLUGIN_NAME
from distributed.diagnostics.progressbar import (
    MultiProgressWidget,
    ProgressBar,
    ProgressWidget,
    TextProgressBar,
    format_bar,
    progress,
)
from distributed.utils_test import async_poll_for, cluster, gen_cluster, inc, slowinc, throws


class FakeTTY(io.StringIO):
    """A StringIO that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def test_format_bar():
    assert format_bar(42, 100, 1.7, width=8).startswith("[###     ] | 42% Completed | 1.70 s | ETA ")
    assert format_bar(10, 10, 2.0, width=4) == "[####] | 100% Completed | 2.00 s"


@gen_cluster(client=True)
async def test_text_not_a_tty_prints_plain_lines(c, s, a, b):
    futures = c.map(slowinc, range(10), delay=0.01)
    total = c.submit(sum, futures)
    out = io.StringIO()
    await progress(total, multi=False, file=out)
    text = out.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert lines[-1].startswith("[" + "#" * 40 + "] | 100% Completed")
    assert text.endswith("\n")
    assert len(lines) == len(set(lines))  # one line per step, no repeats
    assert await total == sum(range(1, 11))


@gen_cluster(client=True)
async def test_text_tty_redraws_in_place_and_ends_with_newline(c, s, a, b):
    futures = c.map(inc, range(5))
    out = FakeTTY()
    await progress(futures, multi=False, file=out)
    text = out.getvalue()
    assert "\r" in text
    assert text.endswith("\n")
    assert "100% Completed" in text.rsplit("\r", 1)[-1]


@gen_cluster(client=True)
async def test_multi_on_a_tty_redraws_all_lines_in_place(c, s, a, b):
    total = c.submit(sum, c.map(inc, range(4)))
    out = FakeTTY()
    await progress(total, file=out)
    text = out.getvalue()
    assert text.endswith("\n")
    last = text.rsplit("\r", 1)[-1]  # the final redraw: every bar, each line cleared first
    assert [line.replace("\x1b[2K", "").split()[0] for line in last.splitlines()] == ["inc", "sum", "[" + "#" * 40 + "]"]


@gen_cluster(client=True)
async def test_errors_are_shown_with_the_key(c, s, a, b):
    bad = c.submit(throws, 1, key="bad-key")
    out = io.StringIO()
    await progress(bad, multi=False, file=out)
    text = out.getvalue()
    assert "Error: 'bad-key'" in text
    assert "RuntimeError" in text or "hello" in text


@gen_cluster(client=True)
async def test_multi_shows_one_bar_per_prefix_in_dependency_order(c, s, a, b):
    incs = c.map(inc, range(6))
    total = c.submit(sum, incs)
    out = io.StringIO()
    await progress(total, file=out)
    last = out.getvalue().splitlines()[-3:]
    assert last[0].startswith("inc ") and last[0].endswith("6 / 6")
    assert last[1].startswith("sum ") and last[1].endswith("1 / 1")
    assert "100% Completed" in last[2]


@gen_cluster(client=True)
async def test_no_observer_unless_watching(c, s, a, b):
    assert WATCH_PLUGIN_NAME not in s.plugins
    x = c.submit(slowinc, 1, delay=0.2)
    bar = TextProgressBar([x], start=False, file=io.StringIO())
    await bar._open()
    assert WATCH_PLUGIN_NAME in s.plugins
    await bar._close()
    assert WATCH_PLUGIN_NAME not in s.plugins
    await x


@gen_cluster(client=True)
async def test_dask_collection(c, s, a, b):
    da = pytest.importorskip("dask.array")
    x = c.persist(da.ones((40, 40), chunks=10) + 1)
    out = io.StringIO()
    await progress(x, file=out)
    lines = out.getvalue().splitlines()
    assert any(line.endswith("16 / 16") for line in lines)
    assert "100% Completed" in lines[-1]


@gen_cluster(client=True)
async def test_collection_without_futures_is_a_clear_error(c, s, a, b):
    da = pytest.importorskip("dask.array")
    with pytest.raises(ValueError, match="persist"):
        progress(da.ones(4, chunks=2))


@gen_cluster(client=True)
async def test_notebook_display_is_html_without_ipywidgets(c, s, a, b):
    futures = c.map(inc, range(4), key=[f"<b>x-{i}" for i in range(4)])
    w = progress(futures, notebook=True)
    assert isinstance(w, MultiProgressWidget)
    await async_poll_for(lambda: w.snapshot is not None and w.snapshot["done"], timeout=10)
    page = w._repr_html_()
    assert "<table>" in page and "4 / 4" in page
    assert "<b>" not in page  # keys from the cluster are escaped
    single = progress(futures, notebook=True, multi=False)
    assert type(single) is ProgressWidget
    await async_poll_for(lambda: single.snapshot is not None and single.snapshot["done"], timeout=10)
    assert "Total" in single._repr_html_()


@gen_cluster(client=True)
async def test_progressbar_context_manager_async(c, s, a, b):
    out = io.StringIO()
    async with ProgressBar(out=out, client=c):
        await c.gather(c.map(inc, range(8)))
    lines = out.getvalue().splitlines()
    assert "100% Completed" in lines[-1]
    assert not (len(lines) > 1 and "100%" in lines[0])  # no "100%" before anything was submitted
    assert WATCH_PLUGIN_NAME not in s.plugins


def test_blocking_client_with_real_processes():
    from distributed import Client

    with cluster() as (s, [a, b]):
        with Client(s["address"]) as client:
            futures = client.map(inc, range(10))
            out = io.StringIO()
            progress(futures, multi=False, file=out)
            assert out.getvalue().splitlines()[-1].startswith("[" + "#" * 40 + "] | 100%")

            da = pytest.importorskip("dask.array")
            out = io.StringIO()
            with ProgressBar(out=out):
                assert (da.ones((20, 20), chunks=5) + 1).sum().compute() == 800
            assert "100% Completed" in out.getvalue().splitlines()[-1]


def test_import_from_dask_distributed():
    code = ("from dask.distributed import Client, progress\n"
            "from distributed.diagnostics import ProgressBar\n"
            "from distributed.diagnostics.progressbar import TextProgressBar\n"
            "print(progress.__module__, ProgressBar.__name__, TextProgressBar.__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["distributed.diagnostics.progressbar", "ProgressBar", "TextProgressBar"]


@gen_cluster(client=True)
async def test_complete_false_counts_only_what_is_left_to_run(c, s, a, b):
    first = c.map(inc, range(3))
    await c.gather(first)
    for complete, expected in [(True, {"inc": 3}), (False, {})]:
        bar = TextProgressBar(first, start=False, complete=complete, file=io.StringIO())
        await bar._open()
        assert bar.snapshot["all"] == expected
        await bar._close()
        assert "100% Completed" in bar._out.out.getvalue()


@gen_cluster(client=True)
async def test_notebook_html_display_updates_in_place(c, s, a, b):
    from distributed.diagnostics import progressbar

    calls: list = []

    class HTML:
        def __init__(self, data):
            self.data = data

    fake = (HTML, lambda obj, **kw: calls.append(("display", obj, kw)),
            lambda obj, **kw: calls.append(("update", obj, kw)))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(progressbar, "_ipython_display", lambda: fake)
        mp.setattr(progressbar, "_ipywidgets", lambda: None)
        w = progress(c.map(inc, range(3)), notebook=True)
        await async_poll_for(lambda: w.task is not None and w.task.done(), timeout=10)
        w._ipython_display_()  # the cell's last expression: not shown a second time
    assert [kind for kind, *_ in calls].count("display") == 1
    assert len({kw["display_id"] for kind, obj, kw in calls}) == 1  # every update goes to the one display
    assert calls[-1][0] == "update" and "3 / 3" in calls[-1][1].data


@gen_cluster(client=True)
async def test_ipywidgets_used_when_installed(c, s, a, b):
    import types

    from distributed.diagnostics import progressbar

    class Widget:
        def __init__(self, **kw):
            self.__dict__.update(kw)

    fake = types.SimpleNamespace(HTML=Widget, VBox=Widget, FloatProgress=Widget)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(progressbar, "_ipywidgets", lambda: fake)
        mp.setattr(progressbar, "_ipython_display", lambda: None)
        w = progress(c.map(inc, range(4)), c.submit(throws, 1, key="oops"), notebook=True)
        await async_poll_for(lambda: w.task is not None and w.task.done(), timeout=10)
    assert "oops" in w._label.value
    bars = {b.description: b for b in w.widget.children if hasattr(b, "description")}
    assert set(bars) == {"inc", "oops"}  # one bar per prefix; the key "oops" is its own prefix
    assert bars["oops"].bar_style == "danger"  # the bar stops at the first error: incs may be unfinished
    assert 0.0 <= bars["inc"].value <= 1.0


@gen_cluster(client=True)
async def test_text_bar_refuses_a_loop_it_would_not_use(c, s, a, b):
    x = c.submit(inc, 1)
    with pytest.raises(ValueError, match="loop"):
        TextProgressBar([x], loop=object(), start=False)


@gen_cluster(client=True)
async def test_eta_from_the_remaining_graph(c, s, a, b):
    """Watches carry the scheduler's estimate (critical path / work over
    threads), and bars show the larger of it and the rate so far."""
    from distributed.diagnostics.progressbar import format_bar
    from distributed.utils_test import slowinc

    x = c.submit(slowinc, 0, delay=0.2)
    chain = [x]
    for _ in range(9):
        chain.append(c.submit(slowinc, chain[-1], delay=0.2))
    await chain[1]  # slowinc's duration is known now
    watch = await c.scheduler.progress_watch(keys=[chain[-1].key])
    snap = await c.scheduler.progress_poll(id=watch["id"])
    assert snap["eta"] is not None and snap["eta"] >= 0.2  # at least the rest of the chain
    assert "ETA" in format_bar(2, 10, 0.4, eta=snap["eta"])
    await c.gather(chain)
    await c.scheduler.progress_unwatch(id=watch["id"])
