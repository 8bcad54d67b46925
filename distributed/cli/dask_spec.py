"""``dask-spec`` / ``python -m distributed.cli.dask_spec``: start servers from
a JSON spec and run them until they close, a signal, or (with
``--close-on-stdin-eof``) the end of standard input.

    $ python -m distributed.cli.dask_spec --spec '{"cls": "distributed.Scheduler", "opts": {"port": 0}}'
    Scheduler at: tcp://127.0.0.1:40123
    $ python -m distributed.cli.dask_spec tcp://127.0.0.1:40123 \\
          --spec '{"cls": "distributed.Nanny", "opts": {"nthreads": 2, "name": "w0"}}'
    Worker at: tcp://127.0.0.1:40911 (name w0)

The spec is one ``{"cls": dotted class name, "opts": {...}}`` (``"options"``
is accepted too) or ``{name: spec, ...}`` for several servers; the
positional arguments (a scheduler address for workers) go to each class
before the options.  One line per server on stderr says where it listens
("Scheduler at: ADDRESS" or "Worker at: ADDRESS"): ``SSHCluster`` reads them.
``--close-on-stdin-eof`` ties the servers' lives to whoever started the
process through a pipe (an SSH session that ends closes it).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

from distributed.cli.utils import ShutdownSignals, close_within, run, setup_logging
from distributed.utils import import_term

__all__ = ["main", "make_parser", "parse_spec"]

logger = logging.getLogger("distributed.cli.dask_spec")

#: Seconds a clean close may take before we exit anyway.
CLOSE_TIMEOUT = 20.0


def make_parser() -> argparse.ArgumentParser:
    """The command-line options of ``dask-spec``."""
    p = argparse.ArgumentParser(prog="dask-spec", description="Start servers (scheduler, workers) from a JSON spec.")
    p.add_argument("args", nargs="*", help="positional arguments for each class (a scheduler address)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--spec", help="the spec as JSON")
    source.add_argument("--spec-file", help="a file holding the spec as JSON")
    p.add_argument("--close-on-stdin-eof", action="store_true",
                   help="close the servers when standard input ends (its writer went away)")
    return p


def parse_spec(text: str) -> dict[Any, tuple[type, dict]]:
    """``{name: (class, options)}`` from the JSON text of a spec.

    >>> parse_spec('{"cls": "distributed.Worker", "opts": {"nthreads": 1}}')
    {0: (<class 'distributed.worker.server.Worker'>, {'nthreads': 1})}
    """
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"--spec is not valid JSON: {e}") from None
    if not isinstance(spec, dict):
        raise ValueError(f"--spec must be a JSON object, not {type(spec).__name__}")
    if "cls" in spec:
        spec = {0: spec}
    out = {}
    for name, one in spec.items():
        if not isinstance(one, dict) or not isinstance(one.get("cls"), str):
            raise ValueError(f"--spec entry {name!r} needs a 'cls' naming a class, like 'distributed.Nanny'")
        options = one.get("opts", one.get("options")) or {}
        if not isinstance(options, dict):
            raise ValueError(f"--spec entry {name!r}: 'opts' must be an object")
        out[name] = (import_term(one["cls"]), options)
    return out


def _announce(server) -> None:
    """The line a launcher reads to learn where ``server`` listens."""
    if type(server).__name__ == "Scheduler" or hasattr(server, "state") and hasattr(server, "worker_streams"):
        print(f"Scheduler at: {server.address}", file=sys.stderr, flush=True)
    else:
        address = getattr(server, "worker_address", None) or server.address
        print(f"Worker at: {address} (name {getattr(server, 'name', None)})", file=sys.stderr, flush=True)


async def _stdin_eof() -> None:
    """Return when standard input ends."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while await reader.read(65536):
        pass


async def _serve(spec: dict, args: list, close_on_eof: bool, shutdown: ShutdownSignals) -> int:
    servers = {}
    for name, (cls, options) in spec.items():
        servers[name] = cls(*args, **options)
    try:
        await asyncio.gather(*(_start(s) for s in servers.values()))
    except BaseException:
        await asyncio.gather(*(close_within(s.close(), CLOSE_TIMEOUT, str(s)) for s in servers.values()),
                             return_exceptions=True)
        raise
    for server in servers.values():
        _announce(server)
    waits = [s.finished() for s in servers.values()]
    if close_on_eof:
        waits.append(_stdin_eof())
    await shutdown.wait(*waits)
    await asyncio.gather(*(close_within(s.close(), CLOSE_TIMEOUT, str(s)) for s in servers.values()),
                         return_exceptions=True)
    return 0


async def _start(server) -> None:
    await server


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``dask-spec``; returns the exit code."""
    parser = make_parser()
    ns = parser.parse_args(argv)
    text = ns.spec
    if ns.spec_file is not None:
        with open(ns.spec_file) as f:
            text = f.read()
    try:
        spec = parse_spec(text)
    except (ValueError, ImportError, AttributeError) as e:
        parser.error(str(e))
    setup_logging()
    return run(lambda shutdown: _serve(spec, list(ns.args), ns.close_on_stdin_eof, shutdown))


if __name__ == "__main__":
    sys.exit(main())
