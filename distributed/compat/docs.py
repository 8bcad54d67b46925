"""Write ``docs/import-map.rst`` from the import map (``table.py``).

Run after changing the table::

    python -m distributed.compat.docs           # rewrite docs/import-map.rst
    python -m distributed.compat.docs --check   # exit 1 if it is out of date

``tests/test_import_map.py`` fails when the committed page differs from
``render()``.
"""
from __future__ import annotations

import argparse
import os
import sys
import textwrap

from distributed.compat.hook import is_pending
from distributed.compat.table import ALIASES, ISSUES, NOTES, PENDING_PREFIX, TABLE

__all__ = ["render", "default_path", "main"]

_INTRO = """\
Import map
==========

.. This page is generated from distributed/compat/table.py by
   ``python -m distributed.compat.docs``; edit the table, not this page.

Code written for dask.distributed imports names from where it kept them,
in the 1.15-1.21 releases of 2016-2018 and in the releases of 2024-2026:
``from distributed.client import wait``, ``from distributed.metrics import
time``, ``from distributed.lock import Lock``.  Our modules are laid out
differently, so one table maps every such module path and name to its home
here.  Those imports keep working: a path that does not exist here is made
from the table, and a real module of ours also answers the old names it
lacks.  Nothing is copied: each name below is the very object at its home.

``{aliases}`` is the same as ``distributed``: dask's ``dask.distributed``
re-exports our top level, and ``dask.distributed.<path>`` is
``distributed.<path>``.

A name marked *not built yet* raises ``ImportError`` naming the issue that
brings it, for example::

    >>> from distributed import progress
    ImportError: cannot import name 'progress' from 'distributed': it is not
    built yet here; issue 13 (diagnostics: ...) brings it

A module path whose names are all not built yet cannot be imported either,
with the same message.  Such names are left out of ``__all__`` and ``dir()``,
so ``from distributed import *`` (what ``dask.distributed`` does) works.

Not built yet
-------------

{issues}
"""


def _literal(text: str) -> str:
    return f"``{text}``"


def _home(target: str) -> str:
    if is_pending(target):
        number, _, _title = target[len(PENDING_PREFIX):].partition(", ")
        return f"not built yet ({number})"
    home, _, attr = target.partition(":")
    return _literal(f"{home}.{attr}" if attr else home) + ("" if attr else " (module)")


def _module_order(path: str) -> tuple:
    return (path != "distributed", path)


def render() -> str:
    """The text of ``docs/import-map.rst``.

    >>> render().startswith("Import map")
    True
    """
    issues = "\n".join(f"- issue {n}: {title}" for n, title in sorted(ISSUES.items()))
    parts = [_INTRO.format(aliases=", ".join(sorted(ALIASES)), issues=issues)]
    for path in sorted(TABLE, key=_module_order):
        entries = TABLE[path]
        title = _literal(path)
        parts.append(f"{title}\n{'-' * len(title)}\n")
        if path in NOTES:
            parts.append(textwrap.fill(NOTES[path], width=78) + "\n")
        if not entries:
            parts.append("A package here only for the submodules below.\n")
            continue
        rows = [".. list-table::", "   :header-rows: 1", "   :widths: 35 65", "",
                "   * - Name", "     - Here"]
        for name in sorted(entries, key=str.lower):
            rows.append(f"   * - {_literal(name)}")
            rows.append(f"     - {_home(entries[name])}")
        parts.append("\n".join(rows) + "\n")
    return "\n".join(parts)


def default_path() -> str:
    """``docs/import-map.rst`` of the source tree this package is in."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return os.path.join(os.path.dirname(package), "docs", "import-map.rst")


def main(argv: list[str] | None = None) -> int:
    """Write (or with ``--check`` compare) the page; the exit status."""
    parser = argparse.ArgumentParser(prog="python -m distributed.compat.docs", description=__doc__.split("\n")[0])
    parser.add_argument("path", nargs="?", default=default_path(), help="where the page goes")
    parser.add_argument("--check", action="store_true", help="exit 1 if the page is out of date")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        try:
            with open(args.path, encoding="utf-8") as f:
                current = f.read()
        except FileNotFoundError:
            current = None
        if current != text:
            sys.stderr.write(f"{args.path} is out of date: run python -m distributed.compat.docs\n")
            return 1
        return 0
    with open(args.path, "w", encoding="utf-8") as f:
        f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
