"""Plumbing shared by ``dask-scheduler`` and ``dask-worker``.

- :func:`setup_logging`: INFO lines from ``distributed`` on stderr, in the
  format upstream users know (``... - distributed.scheduler - INFO - ...``).
- :class:`ShutdownSignals` and :func:`run`: run a coroutine on a fresh event
  loop and let SIGINT/SIGTERM end it cleanly instead of with a traceback.
- Small argparse helpers (durations, ``--version``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from distributed import config
from distributed._version import __version__

__all__ = [
    "ShutdownSignals",
    "close_within",
    "duration_arg",
    "parse_with_preload_argv",
    "run",
    "setup_logging",
    "version_string",
]

logger = logging.getLogger("distributed.cli")

#: The signals that ask a server to shut down cleanly.
SHUTDOWN_SIGNALS: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)


# ------------------------------------------------------------------ logging


class _UpstreamNameFormatter(logging.Formatter):
    """Print ``distributed.scheduler.server`` as ``distributed.scheduler``.

    Our servers live in ``<package>/server.py`` modules, but people (and their
    log-scraping scripts) know upstream's logger names, so we print those.
    The record itself is left alone; only its rendering changes.
    """

    def format(self, record: logging.LogRecord) -> str:
        name = record.name
        if name.endswith(".server"):
            record = logging.makeLogRecord(record.__dict__)
            record.name = name[: -len(".server")]
        return super().format(record)


def setup_logging(level: int = logging.INFO) -> None:
    """Send ``distributed`` log records at ``level`` and above to stderr.

    Other libraries keep the root logger's WARNING threshold.  Calling this
    twice (e.g. ``main()`` run in-process twice) does not duplicate lines.
    """
    root = logging.getLogger()
    if not any(getattr(h, "_distributed_cli", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler._distributed_cli = True  # type: ignore[attr-defined]
        handler.setFormatter(
            _UpstreamNameFormatter(config.get("distributed.admin.log-format"))
        )
        root.addHandler(handler)
        if root.level == logging.NOTSET or root.level > logging.WARNING:
            root.setLevel(logging.WARNING)
    logging.getLogger("distributed").setLevel(level)


# ------------------------------------------------------------------ signals


class ShutdownSignals:
    """SIGINT/SIGTERM as an awaitable event of the running event loop.

    The first signal sets the event; later ones are only logged, so that a
    second Ctrl-C (or a terminal's SIGINT reaching both a parent and its
    children) does not interrupt a clean shutdown half-way with a traceback.
    """

    def __init__(self, signals: Iterable[int] = SHUTDOWN_SIGNALS) -> None:
        self.signals = tuple(signals)
        #: The number of the first signal received, if any.
        self.received: int | None = None
        self._event = asyncio.Event()
        self._fallback: dict[int, Any] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def install(self) -> None:
        """Start catching the signals (call from the running loop)."""
        loop = self._loop = asyncio.get_running_loop()
        for sig in self.signals:
            try:
                loop.add_signal_handler(sig, self._on_signal, sig)
            except (NotImplementedError, RuntimeError, ValueError):
                # add_signal_handler is Unix-only; Windows needs signal.signal.
                self._install_fallback(loop, sig)

    def _install_fallback(self, loop: asyncio.AbstractEventLoop, sig: int) -> None:
        def handler(signum: int, frame: object) -> None:
            loop.call_soon_threadsafe(self._on_signal, signum)

        try:
            self._fallback[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread: leave the signal alone
            logger.debug("cannot catch signal %s outside the main thread", sig)

    def uninstall(self) -> None:
        """Restore the previous handlers."""
        for sig in self.signals:
            if sig in self._fallback:
                signal.signal(sig, self._fallback.pop(sig))
            elif self._loop is not None and not self._loop.is_closed():
                self._loop.remove_signal_handler(sig)

    def _on_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if self.received is None:
            self.received = signum
            logger.info("Received signal %s (%d); shutting down", name, signum)
            self._event.set()
        else:
            logger.info("Received signal %s again; already shutting down", name)

    def trigger(self, reason: str) -> None:
        """Start a shutdown without a signal (e.g. an idle timeout)."""
        if not self._event.is_set():
            logger.info("Shutting down: %s", reason)
            self._event.set()

    async def wait(self, *awaitables: Awaitable[Any]) -> int | None:
        """Wait for a signal, :meth:`trigger`, or any of ``awaitables``.

        Returns the signal number, or None if something else ended the wait.
        The awaitables still pending are cancelled.
        """
        tasks = [asyncio.ensure_future(self._event.wait())]
        tasks += [asyncio.ensure_future(a) for a in awaitables]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
        return self.received


def run(main: Callable[[ShutdownSignals], Awaitable[int]]) -> int:
    """Run ``main(shutdown)`` on a fresh event loop; return its exit code.

    Signal handlers stay installed until ``main`` returns, so the code that
    closes servers after a signal is not itself interrupted by another one.
    """

    async def runner() -> int:
        shutdown = ShutdownSignals()
        shutdown.install()
        try:
            return await main(shutdown)
        finally:
            shutdown.uninstall()

    try:
        return asyncio.run(runner())
    except KeyboardInterrupt:  # Ctrl-C before the handlers were installed
        return 1


async def close_within(awaitable: Awaitable[Any], timeout: float, what: str) -> bool:
    """Await a ``close()``, giving up after ``timeout`` seconds.

    A shutdown must finish even if some connection hangs; returns False (and
    logs) if it timed out.
    """
    try:
        await asyncio.wait_for(awaitable, timeout)
        return True
    except TimeoutError:
        logger.warning("%s did not close within %s s; exiting anyway", what, timeout)
        return False


# ------------------------------------------------------------------ argparse


def duration_arg(text: str) -> float:
    """argparse ``type=``: ``'10'``, ``'10s'``, ``'500ms'``, ``'5m'`` -> seconds."""
    try:
        seconds = config.parse_timedelta(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if seconds < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is negative")
    return seconds


def version_string(prog: str) -> str:
    """What ``--version`` prints, in upstream's form."""
    return f"{prog}, version {__version__}"


def parse_with_preload_argv(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """Parse ``argv``; options the parser does not know become
    ``args.preload_argv`` (for a preload's click ``dask_setup``) when a
    ``--preload`` was given, and are an error (exit code 2) otherwise.

    >>> p = argparse.ArgumentParser(); _ = p.add_argument("--preload", action="append")
    >>> parse_with_preload_argv(p, ["--preload", "m", "--level", "3"]).preload_argv
    ['--level', '3']
    """
    args, extra = parser.parse_known_args(argv)
    preloads = (getattr(args, "preload", None) or []) + (getattr(args, "preload_nanny", None) or [])
    if extra and not preloads:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.preload_argv = extra
    return args
