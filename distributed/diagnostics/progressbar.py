"""Progress bars for futures and dask collections: text in a terminal, an
HTML display in Jupyter.

The counts come from a watch opened on the scheduler
(``distributed.diagnostics.progress_watch``): the bar polls it every ``interval``
and draws ``[####    ] | 42% Completed | 1.7s | ETA 3s``.  On a TTY the line
is redrawn in place and ends with a newline; otherwise one plain line is
printed per 10% step (or every 30 s), never a ``\\r``.  Keys that erred are
listed with their exception at the end.

>>> from distributed import Client, progress               # doctest: +SKIP
>>> x = client.persist(df)                                 # doctest: +SKIP
>>> progress(x)                                            # doctest: +SKIP
[########################################] | 100% Completed | 1.2s
"""
from __future__ import annotations

import asyncio
import html
import logging
import sys
import time
from typing import Any, TextIO

from distributed.config import format_time, parse_timedelta

__all__ = ["progress", "ProgressBar", "TextProgressBar", "MultiProgressBar", "ProgressWidget",
           "MultiProgressWidget", "format_bar"]

logger = logging.getLogger(__name__)

# A scheduler that does not answer a poll within this long is reported, not waited on forever.
_RPC_TIMEOUT = 30.0
# Without a TTY: one line per this fraction of progress, or at least every _PLAIN_PERIOD seconds.
_PLAIN_STEP = 0.1
_PLAIN_PERIOD = 30.0


def format_bar(done: int, total: int, elapsed: float, width: int = 40,
               eta: float | None = None) -> str:
    """One text bar with percentage, elapsed time and ETA (when known).

    The ETA is the larger of the rate so far and ``eta``, the scheduler's
    estimate from the remaining graph (its critical path, and the work left
    over the threads there are): both are cheap guesses, and the larger is
    the one less often wrong when a slow prefix comes last.

    >>> format_bar(42, 100, 1.7, width=8)
    '[###     ] | 42% Completed | 1.70 s | ETA 2.35 s'
    >>> format_bar(42, 100, 1.7, width=8, eta=10.0)
    '[###     ] | 42% Completed | 1.70 s | ETA 10.00 s'
    >>> format_bar(0, 0, 0.5, width=4)
    '[####] | 100% Completed | 500.00 ms'
    """
    frac = 1.0 if total <= 0 else min(1.0, done / total)
    n = int(width * frac)
    line = f"[{'#' * n}{' ' * (width - n)}] | {int(100 * frac)}% Completed | {format_time(elapsed)}"
    if done < total:
        rate = elapsed * (total - done) / done if done > 0 else None
        guesses = [g for g in (rate, eta) if g is not None]
        if guesses:
            line += f" | ETA {format_time(max(guesses))}"
    return line


def _totals(snap: dict) -> tuple[int, int]:
    """(done, total) summed over prefixes of a watch snapshot."""
    total = sum(snap["all"].values())
    return total - sum(snap["remaining"].values()), total


def _errors_text(snap: dict) -> str:
    """The erred keys of a snapshot, one line each."""
    lines = [f"Error: {k!r}: {text}" for k, text in snap.get("erred", ())]
    extra = snap.get("n_erred", 0) - len(lines)
    if extra > 0:
        lines.append(f"... and {extra} more erred keys")
    return "\n".join(lines)


def _futures_of(futures: tuple) -> tuple[Any, list]:
    """The client and the futures behind ``futures`` (futures or collections)."""
    from distributed.futures import futures_of

    fs = futures_of(list(futures))
    if not fs:
        raise ValueError("progress() follows futures: pass futures, or collections made by "
                         "client.persist(...)/client.compute(...); found none in the arguments")
    clients = {id(f.client) for f in fs}
    if len(clients) > 1:
        raise ValueError("progress() got futures of more than one client")
    return fs[0].client, fs


class _Bar:
    """Shared machinery: open a watch, poll it, draw, end it."""

    def __init__(self, keys: Any = None, scheduler: Any = None, interval: str | float = "100ms",
                 complete: bool = True, client: Any = None, follow: bool = False, **kwargs: Any):
        if scheduler is not None:
            raise ValueError("progress bars here talk to the scheduler through their client; "
                             "pass client= (or futures), not scheduler=")
        if kwargs:
            raise TypeError(f"unexpected keyword arguments {sorted(kwargs)}")
        # Futures are kept while the bar lives: their keys must not be released under it.
        self._futures: list = []
        if keys is not None and client is None:
            client, self._futures = _futures_of((keys,))
            keys = [f.key for f in self._futures]
        elif keys is not None:
            self._futures = [k for k in keys if hasattr(k, "key")]
            keys = [getattr(k, "key", k) for k in keys]
        if client is None:
            from distributed.client import get_client

            client = get_client()
        self.client = client
        self.keys = keys or []
        self.follow = follow
        self.interval = parse_timedelta(interval, default="s")
        self.complete = complete
        self.snapshot: dict | None = None
        self._id: str | None = None
        self._stop = False

    async def _call(self, op: str, **kwargs: Any) -> Any:
        try:
            return await asyncio.wait_for(getattr(self.client.scheduler, op)(**kwargs), _RPC_TIMEOUT)
        except asyncio.TimeoutError:
            raise TimeoutError(f"progress: the scheduler did not answer {op} within {_RPC_TIMEOUT:.0f}s") from None

    async def _open(self) -> None:
        reply = await self._call("progress_watch", keys=self.keys, client=self.client.id, follow=self.follow,
                                 complete=self.complete)
        self._id = reply.pop("id")
        self.snapshot = reply
        self._draw(reply)

    async def _close(self) -> None:
        if self._id is not None:
            last = await self._call("progress_unwatch", id=self._id)
            self._id = None
            if last is not None:
                self.snapshot = last
        if self.snapshot is not None:
            self._draw(self.snapshot, final=True)

    async def _run(self) -> Any:
        """Open, poll until done (or stopped), close; returns self."""
        await self._open()
        try:
            while not self._stop and not self.snapshot["done"]:
                await asyncio.sleep(self.interval)
                self.snapshot = await self._call("progress_poll", id=self._id)
                self._draw(self.snapshot)
        finally:
            await self._close()
        return self

    def _draw(self, snap: dict, final: bool = False) -> None:
        raise NotImplementedError


class _TextOut:
    """Writes bar lines: in place on a TTY, plain lines per step otherwise."""

    def __init__(self, file: TextIO | None):
        self.file = file
        self.last_step = -1
        self.last_time = 0.0
        self.lines_drawn = 0

    @property
    def out(self) -> TextIO:
        return self.file if self.file is not None else sys.stdout

    def tty(self) -> bool:
        isatty = getattr(self.out, "isatty", None)
        return bool(isatty and isatty())

    def write(self, lines: list[str], frac: float, final: bool, errors: str) -> None:
        out = self.out
        if self.tty():
            up = f"\x1b[{self.lines_drawn - 1}A" if self.lines_drawn > 1 else ""
            out.write(up + "\r" + "\n".join("\x1b[2K" + line for line in lines))
            self.lines_drawn = len(lines)
            if final:
                out.write("\n" + (errors + "\n" if errors else ""))
        else:
            step = int(frac / _PLAIN_STEP)
            now = time.monotonic()
            if final or step != self.last_step or now - self.last_time >= _PLAIN_PERIOD:
                if not (final and step == self.last_step and self.last_step == 10):
                    out.write("\n".join(lines) + "\n")
                self.last_step, self.last_time = step, now
            if final and errors:
                out.write(errors + "\n")
        out.flush()


class TextProgressBar(_Bar):
    """One text bar over all the keys.

    >>> TextProgressBar(futures)                   # doctest: +SKIP
    [########################################] | 100% Completed | 1.02 s
    """

    def __init__(self, keys: Any = None, scheduler: Any = None, interval: str | float = "100ms",
                 width: int = 40, loop: Any = None, complete: bool = True, start: bool = True,
                 file: TextIO | None = None, **kwargs: Any):
        super().__init__(keys, scheduler, interval, complete, **kwargs)
        if loop is not None and loop is not self.client.loop:
            raise ValueError("TextProgressBar(loop=...): the bar runs on its client's event loop; "
                             "leave loop out or pass client.loop")
        self.width = width
        self._out = _TextOut(file)
        if start:
            self.client.sync(self._run)

    def _draw(self, snap: dict, final: bool = False) -> None:
        done, total = _totals(snap)
        if total == 0 and not final:
            return  # a ProgressBar block that has submitted nothing yet: no "100%" at the start
        line = format_bar(done, total, snap["elapsed"], self.width, snap.get("eta"))
        self._out.write([line], 1.0 if total == 0 else done / total, final, _errors_text(snap) if final else "")


class MultiProgressBar(_Bar):
    """One text bar per task prefix, in dependency order.

    >>> MultiProgressBar(futures)                  # doctest: +SKIP
    inc [########################################] | 100% Completed | 10 / 10
    add [########################################] | 100% Completed | 5 / 5
    """

    def __init__(self, keys: Any = None, scheduler: Any = None, *, group_by: str = "prefix",
                 interval: str | float = "100ms", complete: bool = False, width: int = 40,
                 start: bool = True, file: TextIO | None = None, **kwargs: Any):
        if group_by != "prefix":
            raise ValueError(f"group_by={group_by!r} is not supported here; only 'prefix'")
        super().__init__(keys, scheduler, interval, complete, **kwargs)
        self.width = width
        self._out = _TextOut(file)
        if start:
            self.client.sync(self._run)

    def _draw(self, snap: dict, final: bool = False) -> None:
        names = [n for n in snap["order"] if n in snap["all"]]
        pad = max((len(n) for n in names), default=0)
        lines = []
        for name in names:
            total = snap["all"][name]
            done = total - snap["remaining"][name]
            frac = 1.0 if total == 0 else done / total
            n = int(self.width * frac)
            lines.append(f"{name:<{pad}} [{'#' * n}{' ' * (self.width - n)}] | {int(100 * frac)}% "
                         f"Completed | {done} / {total}")
        done, total = _totals(snap)
        lines.append(format_bar(done, total, snap["elapsed"], self.width, snap.get("eta")))
        self._out.write(lines, 1.0 if total == 0 else done / total, final, _errors_text(snap) if final else "")


def _ipywidgets() -> Any:
    """The ipywidgets module, or None when it is not installed."""
    try:
        import ipywidgets
    except ImportError:
        return None
    return ipywidgets


def _ipython_display() -> tuple | None:
    """``(HTML, display, update_display)`` from IPython, or None without it."""
    try:
        from IPython.display import HTML, display, update_display
    except ImportError:
        return None
    return HTML, display, update_display


def _log_failure(task: Any) -> None:
    """A background bar's error goes to the log (nobody awaits the task)."""
    if not task.cancelled() and task.exception() is not None:
        logger.warning("progress display stopped: %r", task.exception())


class ProgressWidget(_Bar):
    """A progress display for Jupyter.  With ipywidgets installed it is a
    column of ``FloatProgress`` bars; without, an HTML table updated in place
    through ``IPython.display``'s ``display_id`` (works in JupyterLab, VS Code
    and Colab with no widget extension).  It shows itself when created (in
    the cell that made it) and polls in the background.

    >>> ProgressWidget(futures)                    # doctest: +SKIP
    """

    multi = False

    def __init__(self, keys: Any = None, scheduler: Any = None, interval: str | float = "100ms",
                 complete: bool = False, start: bool = True, **kwargs: Any):
        super().__init__(keys, scheduler, interval, complete, **kwargs)
        self._display_id = f"distributed-progress-{id(self)}"
        self._shown = False
        self.widget: Any = None  # the ipywidgets VBox, when ipywidgets is installed
        self._bars: dict[str, Any] = {}
        self._label: Any = None
        self.task: Any = None
        ipywidgets = _ipywidgets()
        if ipywidgets is not None:
            self._label = ipywidgets.HTML(value="")
            self.widget = ipywidgets.VBox(children=[self._label])
            self._ipywidgets = ipywidgets
        if start:
            self.show()
            self.start()

    def start(self) -> None:
        """Start polling on the client's event loop (returns at once)."""
        def go():
            self.task = asyncio.ensure_future(self._run())
            self.task.add_done_callback(_log_failure)
        self.client.loop.add_callback(go)

    def show(self) -> None:
        """Display it now (once), in the current cell's output."""
        ipython = _ipython_display()
        if self._shown or ipython is None:  # no IPython: nothing to show on; _repr_html_ stays
            return
        HTML, display, _ = ipython
        self._shown = True
        if self.widget is not None:
            display(self.widget)
        else:
            display(HTML(self._repr_html_()), display_id=self._display_id)

    def _ipython_display_(self) -> None:
        # Shown when created; being the cell's last expression must not show it twice.
        self.show()

    def _rows(self, snap: dict) -> list[tuple[str, int, int]]:
        if not self.multi:
            done, total = _totals(snap)
            return [("Total", done, total)]
        return [(n, snap["all"][n] - snap["remaining"][n], snap["all"][n])
                for n in snap["order"] if n in snap["all"]]

    def _repr_html_(self) -> str:
        snap = self.snapshot
        if snap is None:
            return "<div>progress: waiting for the scheduler</div>"
        rows = []
        for name, done, total in self._rows(snap):
            pct = 100 if total == 0 else int(100 * done / total)
            rows.append(f"<tr><td>{html.escape(str(name))}</td><td style='width:20em'>"
                        f"<div style='background:#eee;width:100%'><div style='background:#4a90d9;"
                        f"width:{pct}%;height:1em'></div></div></td><td>{done} / {total}</td></tr>")
        return (f"<div class='distributed-progress'><table>{''.join(rows)}</table>"
                f"{self._status_html(snap)}</div>")

    def _status_html(self, snap: dict) -> str:
        errors = "".join(f"<div style='color:#b00'>{html.escape(line)}</div>"
                         for line in _errors_text(snap).splitlines())
        return f"<div>{html.escape(format_time(snap['elapsed']))}</div>{errors}"

    def _draw(self, snap: dict, final: bool = False) -> None:
        if self.widget is not None:
            self._draw_widgets(snap)
            return
        ipython = _ipython_display()
        if not self._shown or ipython is None:
            return
        HTML, _, update_display = ipython
        update_display(HTML(self._repr_html_()), display_id=self._display_id)

    def _draw_widgets(self, snap: dict) -> None:
        ipywidgets = self._ipywidgets
        for name, done, total in self._rows(snap):
            bar = self._bars.get(name)
            if bar is None:
                bar = self._bars[name] = ipywidgets.FloatProgress(min=0.0, max=1.0, description=str(name))
                self.widget.children = (*self.widget.children[:-1], bar, self._label)
            bar.value = 1.0 if total == 0 else done / total
            bar.bar_style = "danger" if snap["n_erred"] else ("success" if done == total else "")
        self._label.value = self._status_html(snap)


class MultiProgressWidget(ProgressWidget):
    """``ProgressWidget`` with one bar per task prefix.

    >>> MultiProgressWidget(futures)               # doctest: +SKIP
    """

    multi = True


def progress(*futures: Any, notebook: bool | None = None, multi: bool = True, complete: bool = True,
             group_by: str = "prefix", **kwargs: Any) -> Any:
    """Show the progress of futures or persisted collections.

    In a terminal it blocks until they finish (on an asynchronous client it
    returns an awaitable that does); in a notebook it returns a display
    object that updates in the background.

    >>> progress(client.persist(x))                # doctest: +SKIP
    [########################################] | 100% Completed | 1.2s
    """
    client, fs = _futures_of(futures)
    if notebook is None:
        from distributed.utils import is_kernel

        notebook = is_kernel()
    if group_by != "prefix":
        raise ValueError(f"group_by={group_by!r} is not supported here; only 'prefix'")
    if notebook:
        cls = MultiProgressWidget if multi else ProgressWidget
        return cls(fs, client=client, complete=complete, **kwargs)
    cls = MultiProgressBar if multi else TextProgressBar
    bar = cls(fs, client=client, complete=complete, start=False, **kwargs)
    return client.sync(bar._run)


class ProgressBar:
    """Show the progress of everything the client submits inside the block,
    as ``dask.diagnostics.ProgressBar`` does for the local scheduler.

    >>> with ProgressBar():                        # doctest: +SKIP
    ...     x.compute()
    [########################################] | 100% Completed | 1.1s
    """

    def __init__(self, minimum: float = 0, width: int = 40, dt: float = 0.1, out: TextIO | None = None,
                 client: Any = None):
        if minimum:
            raise ValueError("ProgressBar(minimum=...) is not supported here; the bar always shows")
        self.width = width
        self.dt = dt
        self.out = out
        self.client = client
        self._bar: TextProgressBar | None = None
        self._task: Any = None

    def _make(self) -> TextProgressBar:
        if self.client is None:
            from distributed.client import get_client

            self.client = get_client()
        return TextProgressBar(client=self.client, interval=self.dt, width=self.width, start=False,
                               file=self.out, follow=True)

    async def _enter(self) -> None:
        self._bar = self._make()
        await self._bar._open()
        self._task = asyncio.ensure_future(self._poll())

    async def _poll(self) -> None:
        bar = self._bar
        while not bar._stop:
            await asyncio.sleep(bar.interval)
            if bar._stop:
                break
            bar.snapshot = await bar._call("progress_poll", id=bar._id)
            bar._draw(bar.snapshot)

    async def _exit(self) -> None:
        bar = self._bar
        bar._stop = True
        try:
            await asyncio.wait_for(self._task, _RPC_TIMEOUT)
        finally:
            await bar._close()

    def __enter__(self) -> ProgressBar:
        client = self.client
        if client is None:
            from distributed.client import get_client

            client = self.client = get_client()
        client.sync(self._enter, asynchronous=False)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.client.sync(self._exit, asynchronous=False)

    async def __aenter__(self) -> ProgressBar:
        await self._enter()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self._exit()
