"""``dask-worker``: run one or more workers until Ctrl-C (SIGINT) or SIGTERM.

    $ dask-worker tcp://127.0.0.1:8786 --nthreads 2
    $ dask-worker --scheduler-file scheduler.json --nprocs 4 --name big
    $ dask-worker tcp://127.0.0.1:8786 --no-nanny

By default (``--nanny``) every worker is supervised by a
:class:`~distributed.nanny.Nanny`: this process runs ``--nprocs`` nannies
(one by default) on its event loop, and each nanny runs its worker in a child
process ('spawn' context), starts a new one if it dies, and kills it past
95% of its memory limit.  SIGINT/SIGTERM close the nannies, which stop their
workers.  If every nanny closes on its own the program exits too: with code
0 if their workers closed on purpose (retired, or lost their scheduler for
good), 1 if a nanny could not restart its worker.  If any nanny or worker
fails to start, all are closed and the exit code is 1.

With ``--no-nanny`` a single worker runs in this process; with ``--nprocs N``
(N > 1) each worker runs in its own child process and the parent forwards
SIGINT/SIGTERM to them and exits once they all have.

Either way a worker whose scheduler is not there yet keeps retrying for
``--death-timeout`` seconds (60 by default), then the program exits with
code 1.  Everything runs on one asyncio loop per process; nothing here is
meant to be called from other threads.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from distributed.cli.tls_options import add_tls_arguments, security_from_args
from distributed.cli.utils import (
    SHUTDOWN_SIGNALS,
    ShutdownSignals,
    close_within,
    duration_arg,
    parse_with_preload_argv,
    run,
    setup_logging,
    version_string,
)

if TYPE_CHECKING:
    from distributed.nanny import Nanny
    from distributed.worker.server import Worker

__all__ = ["main", "make_parser", "parse_resources"]

PROG = "dask-worker"

# The name upstream's worker logs under, so our lines read the same.
logger = logging.getLogger("distributed.worker")

#: Default for --death-timeout: how long to keep trying to reach the scheduler.
DEFAULT_DEATH_TIMEOUT = 60.0
#: Seconds a clean close may take before we exit anyway.
CLOSE_TIMEOUT = 20.0
#: Seconds children get to exit after a forwarded signal before being killed.
CHILD_GRACE = CLOSE_TIMEOUT + 10.0
#: How often to look for the scheduler file / check the parent is alive.
POLL_INTERVAL = 0.1


# ------------------------------------------------------------------ options


def parse_resources(text: str) -> dict[str, float]:
    """``"GPU=2 MEM=10e9"`` (spaces or commas) -> ``{"GPU": 2.0, "MEM": 1e10}``.

    >>> parse_resources("GPU=2, MEM=10e9")
    {'GPU': 2.0, 'MEM': 10000000000.0}
    """
    resources: dict[str, float] = {}
    for item in text.replace(",", " ").split():
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ValueError(f"{item!r} is not of the form NAME=NUMBER")
        try:
            resources[name] = float(value)
        except ValueError:
            raise ValueError(f"{item!r}: {value!r} is not a number") from None
    return resources


def _resources_arg(text: str) -> dict[str, float]:
    try:
        return parse_resources(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(
            f'{e} (expected e.g. "GPU=2 MEM=10e9")'
        ) from None


def _memory_limit_arg(text: str) -> str:
    """Check the value now, so a typo is a usage error rather than a crash
    in every worker process; the Worker parses it again itself."""
    from distributed.worker.server import parse_memory_limit

    if text != "auto":
        try:
            if parse_memory_limit(text, 1) < 0:
                raise ValueError("negative")
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not 'auto', a size like '4GB', a fraction "
                "like 0.5, or 0 for no limit"
            ) from None
    return text


def _nworkers_arg(text: str) -> int:
    """``N``, ``auto`` (one per CPU) or a negative ``-N`` (CPUs + 1 - N)."""
    cpus = os.cpu_count() or 1
    if text == "auto":
        return cpus
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number or 'auto'") from None
    if n < 0:
        n = cpus + 1 + n
        if n < 1:
            raise argparse.ArgumentTypeError(f"{text} leaves no worker on {cpus} CPUs")
    if n == 0:
        raise argparse.ArgumentTypeError("must not be 0")
    return n


def _duration_arg(text: str) -> str:
    """Check a duration now (a usage error, not a crash in every worker)."""
    from distributed import config

    try:
        if config.parse_timedelta(text) <= 0:
            raise ValueError("not positive")
    except (ValueError, TypeError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive duration such as "
                                         "'30 minutes'") from None
    return text


def _positive_int_arg(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {n}")
    return n


def _port_arg(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is not in 0..65535")
    return port


def make_parser() -> argparse.ArgumentParser:
    """The command-line options of ``dask-worker``."""
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Start dask.distributed worker(s) connected to a scheduler "
        "and run them until interrupted (Ctrl-C or SIGTERM).",
    )
    p.add_argument(
        "scheduler_address",
        nargs="?",
        metavar="SCHEDULER_ADDRESS",
        help="e.g. tcp://127.0.0.1:8786 (or use --scheduler-file)",
    )
    p.add_argument(
        "--nthreads",
        "--ncores",
        dest="nthreads",
        type=_positive_int_arg,
        metavar="N",
        help="threads per worker (default: CPUs / nprocs)",
    )
    p.add_argument(
        "--nprocs",
        "--nworkers",
        dest="nprocs",
        type=_nworkers_arg,
        default=1,
        metavar="N",
        help="number of worker processes: N, 'auto' (one per CPU), or a negative "
        "number (CPUs + 1 + N, so -1 is one per CPU) (default: %(default)s)",
    )
    p.add_argument(
        "--nanny",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="supervise each worker with a nanny that runs it in a child "
        "process and restarts it if it dies (default: --nanny)",
    )
    p.add_argument(
        "--memory-limit",
        type=_memory_limit_arg,
        default="auto",
        metavar="LIMIT",
        help="per-worker memory: 'auto' (system memory shared among "
        "processes), a size such as 4GB, a fraction such as 0.5, or 0 for "
        "no limit (default: %(default)s)",
    )
    p.add_argument(
        "--name",
        help="worker name; with --nprocs N the workers are NAME-0, NAME-1, ...",
    )
    p.add_argument(
        "--host",
        help="interface the worker (and its nanny) listen on (default: the "
        "one that reaches the scheduler)",
    )
    p.add_argument(
        "--interface",
        help="network interface to listen on, e.g. eth0 or ib0 (instead of --host)",
    )
    p.add_argument(
        "--lifetime",
        type=_duration_arg,
        metavar="DURATION",
        help="retire after this long (e.g. '1 hour'), moving data to other workers "
        "first; for batch jobs with a wall-time limit",
    )
    p.add_argument(
        "--lifetime-stagger",
        type=_duration_arg,
        metavar="DURATION",
        help="spread the --lifetime of workers started together by up to this much "
        "either way, so they do not leave at once",
    )
    p.add_argument(
        "--lifetime-restart",
        action="store_true",
        default=None,
        help="after --lifetime, start a fresh worker (needs --nanny)",
    )
    p.add_argument(
        "--worker-port",
        type=_port_arg,
        default=0,
        metavar="PORT",
        help="port the worker listens on (default: any free port; must be 0 "
        "with --nprocs > 1)",
    )
    p.add_argument(
        "--nanny-port",
        type=_port_arg,
        default=0,
        metavar="PORT",
        help="port the nanny listens on (default: any free port; must be 0 "
        "with --nprocs > 1)",
    )
    p.add_argument(
        "--resources",
        type=_resources_arg,
        default={},
        metavar="SPEC",
        help='abstract resources, e.g. "GPU=2 MEM=10e9"',
    )
    p.add_argument(
        "--scheduler-file",
        metavar="FILE",
        help="read the scheduler's address from FILE (written by "
        "'dask-scheduler --scheduler-file'), waiting for it to appear",
    )
    p.add_argument(
        "--local-directory",
        metavar="DIR",
        help="directory for the workers' scratch files",
    )
    p.add_argument(
        "--death-timeout",
        type=duration_arg,
        default=DEFAULT_DEATH_TIMEOUT,
        metavar="SECONDS",
        help="give up if the scheduler cannot be reached within this long "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--preload",
        action="append",
        metavar="MODULE",
        help="module name or .py file whose dask_setup(worker) runs as each worker "
        "starts (repeatable); options this program does not know go to its "
        "dask_setup if that is a click command",
    )
    p.add_argument(
        "--preload-nanny",
        action="append",
        metavar="MODULE",
        help="like --preload, for each nanny: dask_setup(nanny)",
    )
    add_tls_arguments(p, worker=True)
    p.add_argument("--version", action="version", version=version_string(PROG))
    return p


def _check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Cross-option checks argparse cannot express; errors exit with 2."""
    if args.scheduler_address is None and args.scheduler_file is None:
        parser.error("a SCHEDULER_ADDRESS or --scheduler-file is required")
    if args.scheduler_address is not None and args.scheduler_file is not None:
        parser.error("give a SCHEDULER_ADDRESS or --scheduler-file, not both")
    if args.host and args.interface:
        parser.error("give --host or --interface, not both")
    if args.lifetime_restart and not args.nanny:
        parser.error("--lifetime-restart needs --nanny (the nanny starts the fresh worker)")
    if (args.lifetime_stagger or args.lifetime_restart) and not args.lifetime:
        parser.error("--lifetime-stagger and --lifetime-restart need --lifetime")
    if args.scheduler_address is not None:
        from distributed.comm import normalize_address

        try:
            normalize_address(args.scheduler_address)
        except (TypeError, ValueError) as e:
            parser.error(str(e))
    if args.nprocs > 1 and args.worker_port != 0:
        parser.error("--worker-port must be 0 (any free port) with --nprocs > 1")
    if args.nprocs > 1 and args.nanny_port != 0:
        parser.error("--nanny-port must be 0 (any free port) with --nprocs > 1")


def _worker_options(args: argparse.Namespace, index: int | None) -> dict[str, Any]:
    """Plain (picklable) settings for one worker; ``index`` numbers it
    among ``--nprocs`` workers."""
    nthreads = args.nthreads or max(1, (os.cpu_count() or 1) // args.nprocs)
    name = args.name
    if name is not None and index is not None:
        name = f"{name}-{index}"
    return {
        "scheduler_address": args.scheduler_address,
        "scheduler_file": args.scheduler_file,
        "death_timeout": args.death_timeout,
        "nanny_port": args.nanny_port,
        "worker": {
            "nthreads": nthreads,
            "name": name,
            "memory_limit": args.memory_limit,
            "resources": args.resources,
            "host": args.host,
            "interface": args.interface,
            "lifetime": args.lifetime,
            "lifetime_stagger": args.lifetime_stagger,
            "lifetime_restart": args.lifetime_restart,
            "port": args.worker_port,
            "local_directory": args.local_directory,
            "security": security_from_args(args, "worker"),
            "protocol": args.protocol,
            "scheduler_sni": args.scheduler_sni,
            "preload": args.preload,
            "preload_argv": getattr(args, "preload_argv", None) or None,
        },
        "preload_nanny": args.preload_nanny,
        "preload_nanny_argv": getattr(args, "preload_argv", None) or None,
    }


# ------------------------------------------------------------------ one worker


class _StartError(Exception):
    """The worker could not start; the message says why, for the user."""


async def _read_scheduler_file(path: str, deadline: float) -> str:
    """The address in ``path``, waiting (until ``deadline``) for it to exist.

    The scheduler may still be writing the file, so unreadable JSON is
    retried rather than reported.
    """
    logged = False
    while True:
        try:
            with open(path) as f:
                return json.load(f)["address"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            if time.monotonic() >= deadline:
                raise _StartError(
                    f"Timed out waiting for scheduler file {path!r} ({e})"
                ) from None
            if not logged:
                logger.info("Waiting for scheduler file %s", path)
                logged = True
        await asyncio.sleep(POLL_INTERVAL)


async def _scheduler_address(options: dict[str, Any], deadline: float) -> str:
    """The address given on the command line, or read from the scheduler file."""
    if options["scheduler_address"] is not None:
        return options["scheduler_address"]
    return await _read_scheduler_file(options["scheduler_file"], deadline)


def _remaining(deadline: float) -> float:
    """The death timeout left once the scheduler's address is known (finding
    the scheduler file takes some of it)."""
    return max(deadline - time.monotonic(), 0.5)


async def _parent_gone(parent_pid: int) -> None:
    """Return once the parent process has died (we were re-parented)."""
    while os.getppid() == parent_pid:
        await asyncio.sleep(1)
    logger.warning("Parent process %d is gone; closing", parent_pid)


async def _start_worker(options: dict[str, Any], deadline: float) -> Worker:
    """Create and start a Worker; raise ``_StartError`` if it cannot listen
    or cannot reach the scheduler before ``deadline``."""
    from distributed.worker.server import Worker

    address = await _scheduler_address(options, deadline)
    worker = Worker(address, death_timeout=_remaining(deadline), **options["worker"])
    logger.info("Waiting to connect to: %s", worker.scheduler_address)
    try:
        await worker.start()
    except OSError as e:
        if worker.listener is None:  # failed before listening, e.g. port in use
            opts = options["worker"]
            raise _StartError(
                f"Could not listen on {opts['host'] or 'default host'}:"
                f"{opts['port']}: {e}"
            ) from e
        from distributed.comm import FatalCommClosedError

        if isinstance(e, FatalCommClosedError):  # e.g. TLS on one side only: its own words
            raise _StartError(str(e)) from e
        # The core's message nests the socket error; users get one plain
        # sentence, the details stay available at DEBUG level.
        logger.debug("connecting to the scheduler failed: %s", e)
        raise _StartError(
            f"Timed out connecting to scheduler at {worker.scheduler_address} "
            f"after {options['death_timeout']:g} s"
        ) from e
    return worker


async def _start_unless_signalled(coro, shutdown: ShutdownSignals) -> asyncio.Task | None:
    """Run the start-up ``coro``; the finished task, or None if a signal
    came first (the start-up is then cancelled)."""
    starting = asyncio.ensure_future(coro)
    await shutdown.wait(asyncio.shield(starting))
    if not starting.done():
        starting.cancel()
        await asyncio.gather(starting, return_exceptions=True)
        return None
    return starting


async def _serve_worker(
    options: dict[str, Any], shutdown: ShutdownSignals, parent_pid: int | None = None
) -> int:
    """Run one worker until a signal, its own close, or the parent's death."""
    deadline = time.monotonic() + options["death_timeout"]
    starting = await _start_unless_signalled(_start_worker(options, deadline), shutdown)
    if starting is None:
        return 0
    try:
        worker = starting.result()
    except (_StartError, ValueError) as e:
        logger.error("%s", e)
        return 1
    logger.info("Start worker at: %s", worker.address)
    logger.info("Registered to: %s", worker.scheduler_address)
    watchers = [worker.finished()]
    if parent_pid is not None:
        watchers.append(_parent_gone(parent_pid))
    await shutdown.wait(*watchers)
    logger.info("Stopping worker at %s", worker.address)
    await close_within(worker.close(), CLOSE_TIMEOUT, f"Worker {worker.address}")
    return 0


def _child_main(options: dict[str, Any], parent_pid: int) -> None:
    """Body of each ``--nprocs`` child process (a fresh 'spawn' interpreter)."""
    setup_logging()
    sys.exit(run(lambda shutdown: _serve_worker(options, shutdown, parent_pid)))


# ------------------------------------------------------------------ many workers


def _run_children(args: argparse.Namespace) -> int:
    """Run ``--nprocs`` workers in child processes and wait for them.

    SIGINT/SIGTERM are forwarded to the children; children still running
    ``CHILD_GRACE`` seconds after that are killed.
    """
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(
            target=_child_main,
            args=(_worker_options(args, i), os.getpid()),
            name=f"dask-worker-{i}",
            daemon=True,  # killed at our exit should we ever leave early
        )
        for i in range(args.nprocs)
    ]
    kill_at: list[float] = []

    def forward(signum: int, frame: object) -> None:
        logger.info("Received signal %s; stopping workers", signal.Signals(signum).name)
        if not kill_at:
            kill_at.append(time.monotonic() + CHILD_GRACE)
        for proc in procs:
            if proc.pid is not None and proc.exitcode is None:
                try:
                    os.kill(proc.pid, signum)
                except ProcessLookupError:  # exited meanwhile
                    pass

    previous = {sig: signal.signal(sig, forward) for sig in SHUTDOWN_SIGNALS}
    try:
        for proc in procs:
            if kill_at:  # a signal came while starting: start no more
                break
            proc.start()
        _wait_for_children([p for p in procs if p.pid is not None], kill_at)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0 if all(proc.exitcode in (0, None) for proc in procs) else 1


def _wait_for_children(procs: list, kill_at: list[float]) -> None:
    """Block until every child has exited, killing stragglers after a signal."""
    while True:
        alive = [p for p in procs if p.exitcode is None]
        if not alive:
            return
        if kill_at and time.monotonic() > kill_at[0]:
            for proc in alive:
                logger.warning("Worker process %d did not stop; killing it", proc.pid)
                proc.kill()
            for proc in alive:
                proc.join()
            return
        # Signal handlers run while waiting here (PEP 475 retries the wait).
        multiprocessing.connection.wait([p.sentinel for p in alive], timeout=1)


# ------------------------------------------------------------------ nannies

#: What a worker's start error says when it could not reach the scheduler
#: (``Worker._register_with_scheduler``).  A Nanny passes its worker's start
#: error on only as text, so this is how we tell that case apart.
_UNREACHABLE = "could not reach the scheduler"


def _nanny_start_error(
    error: Exception, nanny: Nanny, options: dict[str, Any]
) -> _StartError:
    """One sentence for the user on why ``nanny`` or its worker did not start;
    the full text stays available at DEBUG level."""
    opts = options["worker"]
    host = opts["host"] or "default host"
    if nanny.listener is None:  # the nanny itself could not listen
        return _StartError(
            f"Could not listen on {host}:{options['nanny_port']}: {error}"
        )
    text = str(error)
    logger.debug("the worker of nanny %s did not start: %s", nanny.address, text)
    if isinstance(error, TimeoutError) or _UNREACHABLE in text:
        return _StartError(
            f"Timed out connecting to scheduler at {nanny.scheduler_address} "
            f"after {options['death_timeout']:g} s"
        )
    if opts["port"] and "OSError" in text:  # e.g. the worker's port is taken
        return _StartError(f"Could not listen on {host}:{opts['port']}: {text}")
    return _StartError(f"Could not start a worker: {text}")


async def _start_nanny(nanny: Nanny, options: dict[str, Any]) -> None:
    """Start ``nanny`` (and so its worker); ``_StartError`` if it cannot."""
    try:
        await nanny.start()
    except (OSError, RuntimeError) as e:  # TimeoutError is an OSError
        raise _nanny_start_error(e, nanny, options) from e


async def _start_nannies(
    all_options: list[dict[str, Any]], nannies: list[Nanny]
) -> list[str]:
    """Create one Nanny per entry of ``all_options`` (appended to
    ``nannies``, so the caller can close them whatever happens) and start
    them together.  Returns why those that failed did not start."""
    from distributed.nanny import Nanny

    first = all_options[0]
    deadline = time.monotonic() + first["death_timeout"]
    address = await _scheduler_address(first, deadline)
    death_timeout = _remaining(deadline)
    for options in all_options:
        kwargs = dict(options["worker"])
        kwargs["worker_port"] = kwargs.pop("port")
        nannies.append(
            Nanny(
                address,
                port=options["nanny_port"],
                death_timeout=death_timeout,
                preload_nanny=options.get("preload_nanny"),
                preload_nanny_argv=options.get("preload_nanny_argv"),
                **kwargs,
            )
        )
    logger.info("Waiting to connect to: %s", nannies[0].scheduler_address)
    results = await asyncio.gather(
        *(_start_nanny(n, o) for n, o in zip(nannies, all_options)),
        return_exceptions=True,
    )
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, _StartError):
            raise result
    return [str(result) for result in results if isinstance(result, _StartError)]


def _could_not_restart(nanny: Nanny) -> bool:
    """Whether ``nanny`` closed because its last worker process never
    registered (the nanny failed to restart it, e.g. the scheduler is gone)."""
    return nanny.process is not None and nanny.process.worker_address is None


async def _all_finished(nannies: list[Nanny]) -> None:
    """Return once every nanny has closed."""
    for nanny in nannies:
        await nanny.finished()


async def _close_nannies(nannies: list[Nanny]) -> None:
    """Close every nanny that got as far as listening (each stops its
    worker), each within CLOSE_TIMEOUT."""
    await asyncio.gather(
        *(
            close_within(nanny.close(), CLOSE_TIMEOUT, f"Nanny {nanny.address}")
            for nanny in nannies
            if nanny.listener is not None
        )
    )


async def _run_nannies(
    all_options: list[dict[str, Any]], shutdown: ShutdownSignals, nannies: list[Nanny]
) -> int:
    """Start the nannies; then wait for a signal or for all of them to close."""
    starting = await _start_unless_signalled(_start_nannies(all_options, nannies), shutdown)
    if starting is None:
        return 0
    try:
        errors = starting.result()
    except (_StartError, ValueError) as e:
        errors = [str(e)]
    if errors:
        for error in errors:
            logger.error("%s", error)
        return 1
    for nanny in nannies:
        logger.info("Start Nanny at: %s", nanny.address)
        logger.info("Start worker at: %s", nanny.worker_address)
    logger.info("Registered to: %s", nannies[0].scheduler_address)
    signum = await shutdown.wait(_all_finished(nannies))
    if signum is not None:
        logger.info("Stopping nannies and their workers")
        return 0
    failed = [nanny for nanny in nannies if _could_not_restart(nanny)]
    for nanny in failed:
        name = "" if nanny.name is None else f" {nanny.name!r}"
        logger.error(
            "Could not restart worker%s after it died; its nanny %s closed",
            name,
            nanny.address,
        )
    if not failed:
        logger.info("Every nanny closed with its worker; exiting")
    return 1 if failed else 0


async def _serve_nannies(
    all_options: list[dict[str, Any]], shutdown: ShutdownSignals
) -> int:
    """Run one Nanny per worker on this loop until a signal or until they all
    closed; the nannies are closed (stopping their workers) whatever happens."""
    nannies: list[Nanny] = []
    try:
        return await _run_nannies(all_options, shutdown, nannies)
    finally:
        await _close_nannies(nannies)


# ------------------------------------------------------------------ entry point


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``dask-worker``; returns the exit code."""
    parser = make_parser()
    args = parse_with_preload_argv(parser, argv)
    _check_args(parser, args)
    setup_logging()
    if args.nanny:
        all_options = [
            _worker_options(args, i if args.nprocs > 1 else None)
            for i in range(args.nprocs)
        ]
        return run(lambda shutdown: _serve_nannies(all_options, shutdown))
    if args.nprocs > 1:
        return _run_children(args)
    options = _worker_options(args, None)
    return run(lambda shutdown: _serve_worker(options, shutdown))


if __name__ == "__main__":
    sys.exit(main())
