"""Versions of Python and of the packages a cluster's processes must agree on.

``get_versions()`` describes this process, in dask.distributed's shape::

    {"host": {"python": "3.11.7.final.0", "OS": "Linux", ...},
     "packages": {"python": "3.11.7.final.0", "distributed": "...",
                  "dask": "...", "msgpack": "...", ..., "numpy": None}}

A package that is not installed is ``None``.  ``client.get_versions()``
gathers this from the client, the scheduler and every worker, and
``error_message`` / ``check_versions`` compare them: a difference in a
required package (those the processes exchange pickles and messages with)
is an error, a difference in another one is a warning.  The scheduler runs
no user code, so only its required packages are compared.

Versions are read without importing a package that is not imported yet
when its installed metadata names it (importing pandas to report its
version would cost a worker half a second).

>>> get_versions()["packages"]["distributed"] == __version__
True
"""
from __future__ import annotations

import importlib
import os
import platform
import struct
import sys
from collections.abc import Callable, Iterable, Mapping
from types import ModuleType
from typing import Any

from distributed._version import __version__

__all__ = [
    "get_versions",
    "get_system_info",
    "get_package_info",
    "version_of_package",
    "error_message",
    "check_versions",
    "required_packages",
    "optional_packages",
    "VersionMismatchWarning",
]

#: Packages every process of a cluster must have at the same version.
required_packages: tuple[str, ...] = ("dask", "distributed", "msgpack", "cloudpickle", "tornado", "toolz")
#: Packages reported, and compared between client and workers, but whose
#: difference is only a warning.
optional_packages: tuple[str, ...] = ("numpy", "pandas", "lz4")

#: What the scheduler must agree on (it runs no user code).
_SCHEDULER_RELEVANT = frozenset(required_packages) | {"python"}
#: Compared as errors by ``check_versions``.
_REQUIRED = frozenset(required_packages) | {"python"}

_NOTES = {"msgpack": "versions may differ as long as all are 0.6 or later"}


class VersionMismatchWarning(Warning):
    """Processes of a cluster run different versions of a package that
    need not match exactly."""


def _python_version() -> str:
    return ".".join(map(str, sys.version_info))


def get_versions(packages: Iterable[str | tuple[str, Callable[[ModuleType], str | None]]] | None = None
                 ) -> dict[str, dict[str, Any]]:
    """This process's host description and package versions: the required
    and optional packages, and ``packages`` (names, or ``(name, function
    of the module returning its version)``).

    >>> v = get_versions(["no_such_package_here"])
    >>> sorted(v)
    ['host', 'packages']
    >>> v["packages"]["no_such_package_here"] is None
    True
    """
    extra = _check_packages(packages)
    return {
        "host": get_system_info(),
        "packages": get_package_info([*required_packages, *optional_packages, *extra]),
    }


def _check_packages(packages) -> list:
    if packages is None:
        return []
    if isinstance(packages, (str, bytes)) or not isinstance(packages, Iterable):
        raise TypeError(f"packages must be a list of package names, not {packages!r}")
    packages = list(packages)
    for p in packages:
        ok = isinstance(p, str) or (isinstance(p, (tuple, list)) and len(p) == 2 and isinstance(p[0], str)
                                    and (p[1] is None or callable(p[1])))
        if not ok:
            raise TypeError(f"packages must hold package names or (name, version function) pairs, not {p!r}")
    return packages


def get_system_info() -> dict[str, Any]:
    """Python, the operating system and the locale of this process.

    >>> get_system_info()["python-bits"] in (32, 64)
    True
    """
    uname = platform.uname()
    return {
        "python": _python_version(),
        "python-bits": struct.calcsize("P") * 8,
        "OS": uname.system,
        "OS-release": uname.release,
        "machine": uname.machine,
        "processor": uname.processor,
        "byteorder": sys.byteorder,
        "LC_ALL": os.environ.get("LC_ALL", "None"),
        "LANG": os.environ.get("LANG", "None"),
    }


def version_of_package(module: ModuleType) -> str | None:
    """The version a module declares (``__version__``, ``version`` or
    ``version_info``), or None.

    >>> import tornado
    >>> version_of_package(tornado) == tornado.version
    True
    """
    for attr in ("__version__", "version", "version_info"):
        value = getattr(module, attr, None)
        if value is None or callable(value):
            continue
        if isinstance(value, (tuple, list)):
            return ".".join(map(str, value))
        return str(value)
    return None


def get_package_info(packages: Iterable[str | tuple[str, Callable[[ModuleType], str | None] | None]]
                     ) -> dict[str, str | None]:
    """``{"python": ..., name: version or None}`` for ``packages``.

    >>> info = get_package_info(["msgpack", "no_such_package_here"])
    >>> sorted(info), info["no_such_package_here"]
    (['msgpack', 'no_such_package_here', 'python'], None)
    """
    info: dict[str, str | None] = {"python": _python_version()}
    for entry in packages:
        name, how = (entry[0], entry[1]) if isinstance(entry, (tuple, list)) else (entry, None)
        info[name] = _version_of(name, how)
    return info


def _version_of(name: str, how: Callable[[ModuleType], str | None] | None) -> str | None:
    if name == "distributed":
        return __version__
    if how is None and name not in sys.modules:
        from importlib import metadata  # here, not at the top: it costs every worker ~15 ms at start

        try:  # installed metadata: no import needed
            return metadata.version(name)
        except (metadata.PackageNotFoundError, ValueError):
            pass  # the import name may differ from the distribution's
    try:
        module = importlib.import_module(name)
        version = (how or version_of_package)(module)
        return None if version is None else str(version)
    except Exception:  # not installed, or broken: either way no version
        return None


# -- comparing ---------------------------------------------------------------


def _packages_of(versions) -> dict | str:
    """The packages dict of a process's versions, or "UNKNOWN" when it sent
    none (a process too old, or one that did not answer)."""
    if isinstance(versions, Mapping) and isinstance(versions.get("packages"), Mapping):
        return versions["packages"]
    return "UNKNOWN"


def _version_in(packages: dict | str, name: str) -> Any:
    if not isinstance(packages, Mapping):
        return packages
    return packages.get(name, "MISSING")


def _mismatches(scheduler, workers: Mapping, client) -> list[tuple[str, Any, Any, Any]]:
    """``(package, client version, scheduler version, worker version(s))``
    for every package whose versions differ."""
    client_p = _packages_of(client)
    scheduler_p = _packages_of(scheduler)
    workers_p = {w: _packages_of(v) for w, v in (workers or {}).items()}
    names: set[str] = set()
    for p in (client_p, *workers_p.values()):
        if isinstance(p, Mapping):
            names.update(p)
    if isinstance(scheduler_p, Mapping):
        names.update(n for n in scheduler_p if n in _SCHEDULER_RELEVANT)
    rows = []
    for name in sorted(names):
        c = _version_in(client_p, name)
        s = _version_in(scheduler_p, name)
        by_version: dict[Any, list[str]] = {}
        for w, p in workers_p.items():
            by_version.setdefault(_version_in(p, name), []).append(str(w))
        seen = {c, *by_version} | ({s} if name in _SCHEDULER_RELEVANT else set())
        if len(seen) <= 1:
            continue
        rows.append((name, c, s, _describe_workers(by_version)))
    return rows


def _describe_workers(by_version: dict[Any, list[str]]) -> str | None:
    """One version: itself.  Several: each with (some of) its workers."""
    if not by_version:
        return None
    if len(by_version) == 1:
        return str(next(iter(by_version)))
    parts = []
    for version, ws in sorted(by_version.items(), key=lambda kv: str(kv[0])):
        shown = ", ".join(sorted(ws)[:3]) + (f" and {len(ws) - 3} more" if len(ws) > 3 else "")
        parts.append(f"{version} ({shown})")
    return "; ".join(parts)


def _table(header: tuple, rows: list[tuple]) -> str:
    cells = [tuple("" if v is None else str(v) for v in row) for row in [header, *rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    lines = [rule]
    for i, r in enumerate(cells):
        lines.append("| " + " | ".join(v.ljust(w) for v, w in zip(r, widths)) + " |")
        if i == 0:
            lines.append(rule)
    lines.append(rule)
    return "\n".join(lines)


def error_message(scheduler, workers: Mapping, client, client_name: str = "client") -> dict[str, str]:
    """Compare the versions of a cluster's processes (each as
    ``get_versions()`` returns it, or None when unknown).

    Returns ``{"error": text, "warning": text}``; each is empty when there
    is nothing to say.  Differences in required packages and Python are in
    ``error``, the others in ``warning``; both are tables naming each
    package and its version on the client, the scheduler and the workers.

    >>> v = get_versions()
    >>> error_message(v, {"tcp://w:1": v}, v)
    {'error': '', 'warning': ''}
    >>> old = {"host": v["host"], "packages": {**v["packages"], "tornado": "4.5"}}
    >>> "tornado" in error_message(v, {"tcp://w:1": old}, v)["error"]
    True
    """
    rows = _mismatches(scheduler, workers, client)
    header = ("Package", client_name.capitalize(), "Scheduler", "Workers")
    out = {"error": "", "warning": ""}
    for kind, chosen in (("error", [r for r in rows if r[0] in _REQUIRED]),
                         ("warning", [r for r in rows if r[0] not in _REQUIRED])):
        if not chosen:
            continue
        title = ("Mismatched versions of required packages found" if kind == "error"
                 else "Mismatched versions found")
        text = f"{title}\n\n{_table(header, chosen)}"
        notes = [f"-  {r[0]}: {_NOTES[r[0]]}" for r in chosen if r[0] in _NOTES]
        if notes:
            text += "\nNotes:\n" + "\n".join(notes)
        out[kind] = text
    return out


def check_versions(versions: Mapping) -> None:
    """Raise ``ValueError`` if the ``{"scheduler", "workers", "client"}``
    versions of a cluster differ in a required package; warn
    (``VersionMismatchWarning``) if they differ in another one.

    >>> v = get_versions()
    >>> check_versions({"scheduler": v, "workers": {}, "client": v})
    """
    if not isinstance(versions, Mapping) or not {"scheduler", "workers", "client"} <= set(versions):
        raise TypeError("check_versions takes the {'scheduler', 'workers', 'client'} dict "
                        "that client.get_versions() returns")
    msg = error_message(versions["scheduler"], versions["workers"], versions["client"])
    if msg["warning"]:
        import warnings

        warnings.warn(msg["warning"], VersionMismatchWarning, stacklevel=3)
    if msg["error"]:
        raise ValueError(msg["error"])
