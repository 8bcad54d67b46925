"""Small helpers that cluster managers use to start processes elsewhere.

dask-cloudprovider and dask-kubernetes import these from
``distributed.utils`` (their upstream home; the import map points there):
``format_dashboard_link``, ``warn_on_duration``, ``serialize_for_cli`` /
``deserialize_for_cli`` and ``cli_keywords``.  Pure functions, no I/O.
"""
from __future__ import annotations

import base64
import contextlib
import json
import os
import time
import warnings
from collections.abc import Iterator
from typing import Any

from distributed import config
from distributed.utils import has_arg

__all__ = ["format_dashboard_link", "warn_on_duration", "serialize_for_cli", "deserialize_for_cli",
           "cli_keywords"]


def format_dashboard_link(host: str, port: int | str) -> str:
    """The dashboard address from ``distributed.dashboard.link`` (a template
    with ``{scheme}``, ``{host}``, ``{port}`` and environment variables).

    >>> format_dashboard_link("127.0.0.1", 8787)
    'http://127.0.0.1:8787/status'
    """
    template = config.get("distributed.dashboard.link")
    if ":" in str(host) and not str(host).startswith("["):
        host = f"[{host}]"  # an IPv6 address in a URL
    return template.format_map({**os.environ, "scheme": "http", "host": host, "port": port})


@contextlib.contextmanager
def warn_on_duration(duration: str | float, msg: str) -> Iterator[None]:
    """Warn with ``msg`` (a ``UserWarning``) if the block took longer than ``duration``.

    >>> with warn_on_duration("10s", "slow"):
    ...     pass
    """
    limit = config.parse_timedelta(duration)
    start = time.monotonic()
    yield
    if time.monotonic() - start > limit:
        warnings.warn(msg, stacklevel=3)


def serialize_for_cli(data: Any) -> str:
    """JSON data as one shell-safe word (URL-safe base64 of its JSON), to
    pass on a command line or in an environment variable.

    >>> deserialize_for_cli(serialize_for_cli({"a": [1, 2]}))
    {'a': [1, 2]}
    """
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode()


def deserialize_for_cli(data: str) -> Any:
    """The inverse of ``serialize_for_cli``."""
    return json.loads(base64.urlsafe_b64decode(data.encode()).decode())


def cli_keywords(d: dict, cls: type | None = None, cmd: Any = None) -> list[str]:
    """Command-line arguments from keyword options: ``{"nthreads": 2,
    "nanny": False}`` -> ``["--nthreads", "2", "--no-nanny"]``.  With
    ``cls``, a key that ``cls`` does not accept raises ``ValueError`` (a
    typo would otherwise fail on the remote host).

    >>> cli_keywords({"nthreads": 2, "nanny": False, "memory_limit": "4GB"})
    ['--nthreads', '2', '--no-nanny', '--memory-limit', '4GB']
    """
    if cls is not None:
        unknown = [k for k in d if not has_arg(cls, k) and not has_arg(getattr(cls, "__init__", cls), k)]
        if unknown:
            raise ValueError(f"{getattr(cls, '__name__', cls)} does not take {', '.join(map(repr, unknown))}")
    out: list[str] = []
    for key, value in d.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            out.append(flag)
        elif value is False:
            out.append("--no-" + key.replace("_", "-"))
        elif value is not None:
            out.extend([flag, str(value)])
    return out
