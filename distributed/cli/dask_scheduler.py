"""``dask-scheduler``: run a scheduler until Ctrl-C (SIGINT) or SIGTERM.

    $ dask-scheduler --port 8786 --scheduler-file scheduler.json
    ... - distributed.scheduler - INFO - Scheduler at: tcp://127.0.0.1:8786

Listens on 127.0.0.1 unless ``--host`` says otherwise (e.g. ``0.0.0.0``),
so a scheduler is never exposed to the network by accident.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from collections.abc import Sequence

from distributed.cli.tls_options import add_tls_arguments, security_from_args
from distributed.cli.utils import (
    ShutdownSignals,
    close_within,
    duration_arg,
    parse_with_preload_argv,
    run,
    setup_logging,
    version_string,
)

__all__ = ["main", "make_parser"]

PROG = "dask-scheduler"

# The name upstream's scheduler logs under, so our lines read the same.
logger = logging.getLogger("distributed.scheduler")

#: Seconds a clean close may take before we exit anyway.
CLOSE_TIMEOUT = 20.0


def make_parser() -> argparse.ArgumentParser:
    """The command-line options of ``dask-scheduler``."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Start a dask.distributed scheduler and run it until "
        "interrupted (Ctrl-C or SIGTERM).",
    )
    parser.add_argument(
        "--host",
        help="address to listen on (default: 127.0.0.1; use 0.0.0.0 "
        "to accept connections from other machines)",
    )
    parser.add_argument(
        "--interface",
        help="network interface to listen on, e.g. eth0 or ib0 (instead of --host)",
    )
    parser.add_argument(
        "--port",
        type=_port_arg,
        default=8786,
        help="port to listen on; 0 picks a free one (default: %(default)s)",
    )
    parser.add_argument(
        "--dashboard-address",
        default=":8787",
        metavar="ADDRESS",
        help="address of the dashboard's HTTP server; a missing host is --host's, a taken "
        "port falls back to a free one (default: %(default)s)",
    )
    parser.add_argument(
        "--dashboard",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="serve the dashboard pages; --no-dashboard keeps only /health, /metrics and "
        "the JSON routes on --dashboard-address (default: serve)",
    )
    parser.add_argument(
        "--scheduler-file",
        metavar="FILE",
        help="write the scheduler's address (as JSON) to FILE, for "
        "'dask-worker --scheduler-file FILE'; removed on exit",
    )
    parser.add_argument(
        "--idle-timeout",
        type=duration_arg,
        metavar="DURATION",
        help="exit after this long (e.g. '60', '10m') with no clients and no tasks",
    )
    parser.add_argument(
        "--preload",
        action="append",
        metavar="MODULE",
        help="module name or .py file whose dask_setup(scheduler) runs once the "
        "scheduler listens (repeatable); options this program does not know go "
        "to its dask_setup if that is a click command",
    )
    add_tls_arguments(parser)
    parser.add_argument("--version", action="version", version=version_string(PROG))
    return parser


def _port_arg(text: str) -> int:
    """argparse ``type=`` for a TCP port (0 means any free port)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is not in 0..65535")
    return port


def _note_dashboard(scheduler: object, args: argparse.Namespace) -> None:
    """Log where the dashboard is (upstream prints the same line)."""
    link = getattr(scheduler, "dashboard_link", None)
    if link:
        logger.info("  dashboard at: %s", link)


def _is_idle(scheduler) -> bool:
    """No clients are connected and the scheduler holds no tasks."""
    return not scheduler.clients and not scheduler.tasks


async def _idle_watch(
    scheduler, idle_timeout: float, shutdown: ShutdownSignals
) -> None:
    """Trigger a shutdown once the scheduler has been idle ``idle_timeout`` s."""
    interval = min(max(idle_timeout / 10, 0.05), 1.0)
    idle_since = time.monotonic()
    while True:
        await asyncio.sleep(interval)
        if not _is_idle(scheduler):
            idle_since = time.monotonic()
        elif time.monotonic() - idle_since >= idle_timeout:
            shutdown.trigger(f"idle for {idle_timeout} s (--idle-timeout)")
            return


async def _serve(args: argparse.Namespace, shutdown: ShutdownSignals) -> int:
    """Start the scheduler, wait for a signal (or its own close), close it."""
    from distributed.scheduler.server import Scheduler

    try:
        scheduler = Scheduler(
            host=args.host,
            interface=args.interface,
            port=args.port,
            scheduler_file=args.scheduler_file,
            dashboard_address=args.dashboard_address,
            dashboard=args.dashboard,
            security=security_from_args(args, "scheduler"),
            protocol=args.protocol,
            preload=args.preload,
            preload_argv=args.preload_argv or None,
        )
    except (ValueError, ImportError, OSError) as e:  # a malformed DASK_DISTRIBUTED__* variable, a bad preload
        logger.error("%s", e)
        return 1
    try:
        await scheduler.start()
    except Exception as e:  # port in use, an unwritable --scheduler-file, a failing preload
        logger.error(
            "Could not start the scheduler at %s:%s: %s", args.host or args.interface or "127.0.0.1",
            args.port, e
        )
        # start() may have got as far as listening before failing.
        await close_within(scheduler.close(), CLOSE_TIMEOUT, "The scheduler")
        return 1
    logger.info("Scheduler at: %s", scheduler.address)
    _note_dashboard(scheduler, args)
    watchers = []
    if args.idle_timeout is not None:
        watchers.append(_idle_watch(scheduler, args.idle_timeout, shutdown))
    await shutdown.wait(scheduler.finished(), *watchers)
    logger.info("End scheduler at %s", scheduler.address)
    await close_within(scheduler.close(), CLOSE_TIMEOUT, "The scheduler")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``dask-scheduler``; returns the exit code."""
    args = parse_with_preload_argv(make_parser(), argv)
    setup_logging()
    return run(lambda shutdown: _serve(args, shutdown))


if __name__ == "__main__":
    sys.exit(main())
