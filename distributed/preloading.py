"""Preload scripts: user code a scheduler, worker or nanny runs as it starts.

``dask-scheduler --preload mymodule``, ``dask-worker ... --preload
setup.py``, ``Scheduler(preload=...)``, ``Worker(preload=...)``,
``Nanny(preload=...)`` or the configuration
``distributed.{scheduler,worker,nanny}.preload`` name preloads, each one of

* an importable module name (``"mypackage.setup"``);
* the path of a ``.py`` file;
* Python source text (anything with a line break in it).

Downloading a preload from a URL, which dask.distributed allows, is refused
here with a clear error: fetching and running remote code is a choice to
make outside the cluster.

A preload module may define ``dask_setup(server)`` and
``dask_teardown(server)`` (plain or coroutine functions).  The module is
imported when the server is built; ``dask_setup`` runs when the server
starts (the scheduler once it listens; the worker and the nanny before
they register with the scheduler or start a worker) and ``dask_teardown``
when it closes.  ``dask_setup`` may be a ``click`` command: it then gets
the server and the options parsed from ``preload_argv``.  An error in
``dask_setup`` stops the server from starting; one in ``dask_teardown``
is logged.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import logging
import os
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any

__all__ = ["Preload", "process_preloads", "import_preload", "start_preloads", "teardown_preloads"]

logger = logging.getLogger(__name__)


def import_preload(name: str) -> ModuleType:
    """The module a preload names (see the module docstring).

    >>> import_preload("def dask_setup(server):\\n    server.touched = True\\n").dask_setup.__name__
    'dask_setup'
    """
    if not isinstance(name, str) or not name.strip():
        raise TypeError(f"a preload must be a module name, a .py path or source text, not {name!r}")
    if "://" in name and "\n" not in name:
        raise ValueError(f"preload {name!r}: downloading preload scripts is not supported; "
                         "copy the file to each machine and give its path")
    if "\n" in name:
        module_name = "dask_preload_" + hashlib.sha1(name.encode()).hexdigest()[:12]
        module = ModuleType(module_name)
        module.__file__ = f"<preload {module_name}>"
        exec(compile(name, module.__file__, "exec"), module.__dict__)
        return module
    if name.endswith(".py") or os.sep in name:
        path = os.path.abspath(os.path.expanduser(name))
        if not os.path.isfile(path):
            raise FileNotFoundError(f"preload file {name!r} does not exist")
        module_name = os.path.splitext(os.path.basename(path))[0]
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise ImportError(f"preload file {name!r} cannot be imported")
        module = importlib.util.module_from_spec(spec)
        directory = os.path.dirname(path)
        if directory not in sys.path:  # so that it can import its neighbours
            sys.path.insert(0, directory)
        spec.loader.exec_module(module)
        sys.modules.setdefault(module_name, module)
        return module
    return importlib.import_module(name)


class Preload:
    """One preload of one server: ``await preload.start()`` runs its
    ``dask_setup``, ``await preload.teardown()`` its ``dask_teardown``.

    >>> p = Preload(server, "mypackage.setup", argv=["--flag"])     # doctest: +SKIP
    >>> await p.start()                                              # doctest: +SKIP
    """

    def __init__(self, server: Any, name: str, argv: Sequence[str] = ()):
        self.server = server
        self.name = name
        self.argv = list(argv or ())
        self.module = import_preload(name)

    def __repr__(self) -> str:
        return f"<Preload {self.name!r}>"

    async def start(self) -> None:
        setup = getattr(self.module, "dask_setup", None)
        if setup is None:
            return
        logger.info("Run preload setup: %s", self.name if "\n" not in self.name else self.module.__name__)
        if _is_click_command(setup):
            ctx = setup.make_context("dask_setup", list(self.argv))
            result = setup.callback(self.server, *ctx.args, **ctx.params)
        else:
            if self.argv:
                raise TypeError(f"preload {self.name!r}: dask_setup is not a click command, so it takes "
                                f"no arguments, but got {self.argv}")
            result = setup(self.server)
        if inspect.isawaitable(result):
            await result

    async def teardown(self) -> None:
        teardown = getattr(self.module, "dask_teardown", None)
        if teardown is None:
            return
        try:
            result = teardown(self.server)
            if inspect.isawaitable(result):
                await result
        except Exception:
            logger.exception("preload %r failed in dask_teardown", self.name)


def process_preloads(server: Any, preload: str | Sequence[str] | None, preload_argv=None,
                     kind: str | None = None) -> list[Preload]:
    """The preloads of ``server``: ``preload`` (one name or a list), else the
    configuration ``distributed.<kind>.preload``; ``preload_argv`` is one
    argument list for all of them or one list per preload.

    >>> process_preloads(object(), [])
    []
    """
    from distributed import config

    if preload is None and kind is not None:
        preload = config.get(f"distributed.{kind}.preload", default=[])
        if preload_argv is None:
            preload_argv = config.get(f"distributed.{kind}.preload-argv", default=[])
    if preload is None:
        return []
    if isinstance(preload, str):
        preload = [preload]
    preload = list(preload)
    argv = list(preload_argv or [])
    if argv and all(isinstance(a, (list, tuple)) for a in argv):
        if len(argv) != len(preload):
            raise ValueError(f"preload_argv has {len(argv)} argument lists for {len(preload)} preloads")
        per = [list(a) for a in argv]
    else:
        per = [argv] * len(preload)
    return [Preload(server, name, a) for name, a in zip(preload, per)]


def _is_click_command(obj: Any) -> bool:
    click = sys.modules.get("click")
    return click is not None and isinstance(obj, click.Command)


async def start_preloads(preloads: list[Preload]) -> None:
    """Run every preload's ``dask_setup`` in order (errors propagate)."""
    for p in preloads:
        await p.start()


async def teardown_preloads(preloads: list[Preload]) -> None:
    """Run every preload's ``dask_teardown`` (errors are logged)."""
    for p in reversed(preloads):
        await p.teardown()
