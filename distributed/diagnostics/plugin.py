"""Plugin base classes, and the built-in plugins.

Subclass one of these and register an instance with
``client.register_plugin(plugin)``:

* ``SchedulerPlugin``: runs in the scheduler; hooks on start and close,
  graphs, task transitions, workers and clients coming and going, events.
* ``WorkerPlugin``: set up on every worker, those there now and those that
  join later; hooks on set-up, teardown and the worker's task transitions.
* ``NannyPlugin``: set up on every nanny; with ``restart = True`` the nanny
  restarts its worker after set-up (e.g. to change its environment).

Every hook is optional: the servers call only the hooks a plugin overrides
(the defaults here carry a ``_default_hook`` mark).  A hook may be a plain
function or a coroutine function where the docstring says so.  A hook that
raises never stops a server: the error is logged and published on the
``"plugin-errors"`` event topic (``client.get_events("plugin-errors")``).

Built-ins: ``UploadFile`` (a file on every worker), ``Environ`` (environment
variables for the worker processes), ``PipInstall`` (pip packages on every
worker).

>>> class Counter(SchedulerPlugin):
...     def __init__(self):
...         self.finished = 0
...     def transition(self, key, start, finish, *args, **kwargs):
...         if finish == "memory":
...             self.finished += 1
>>> client.register_plugin(Counter())       # doctest: +SKIP
"""
from __future__ import annotations

import asyncio
import inspect
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import Any

__all__ = [
    "SchedulerPlugin",
    "WorkerPlugin",
    "NannyPlugin",
    "UploadFile",
    "Environ",
    "PipInstall",
    "PackageInstall",
    "InstallPlugin",
]

logger = logging.getLogger(__name__)


def _default(func: Callable) -> Callable:
    """Mark a base-class hook as a no-op the servers need not call."""
    func._default_hook = True
    return func


class SchedulerPlugin:
    """A plugin that runs inside the scheduler.

    Override the hooks you need.  ``name`` (a class or instance attribute)
    names the plugin; without one it gets ``<ClassName>-<uuid>``.  With
    ``idempotent = True`` registering another plugin of the same name is a
    no-op; otherwise it replaces the old one (with a warning).

    Hooks are called with keywords where noted, so write ``**kwargs`` into
    your signatures: later versions may pass more.

    >>> class Log(SchedulerPlugin):
    ...     name = "log"
    ...     def add_worker(self, scheduler, worker):
    ...         print("new worker", worker)
    >>> client.register_plugin(Log())               # doctest: +SKIP
    """

    idempotent: bool = False

    @_default
    async def start(self, scheduler: Any) -> None:
        """The scheduler started (or, for a plugin registered later, the
        plugin is being registered: if this raises, it is not added)."""

    @_default
    async def before_close(self) -> None:
        """The scheduler is about to close."""

    @_default
    async def close(self) -> None:
        """The scheduler closed (or the plugin was unregistered)."""

    @_default
    def update_graph(self, scheduler: Any, *, client: str, keys: set, tasks: list, annotations: dict,
                     priority: dict, stimulus_id: str, **kwargs: Any) -> None:
        """A client submitted a graph.  Called once per submission, after the
        new tasks are in ``scheduler.tasks`` (and have made their first
        transitions: unlike dask.distributed, which calls it just before)."""

    @_default
    def transition(self, key: Any, start: str, finish: str, *args: Any, stimulus_id: str = "",
                   **kwargs: Any) -> None:
        """A task moved from state ``start`` to ``finish``.  ``kwargs`` holds
        the fields of the message that caused it, if any (``worker``,
        ``nbytes``, ``exception`` ...).  During ``finish == "forgotten"`` the
        task is still readable in ``scheduler.tasks``."""

    @_default
    def add_worker(self, scheduler: Any, worker: str) -> None:
        """A worker joined (may be a coroutine function)."""

    @_default
    def remove_worker(self, scheduler: Any, worker: str, *, stimulus_id: str = "", **kwargs: Any) -> None:
        """A worker left (may be a coroutine function)."""

    @_default
    def add_client(self, scheduler: Any, client: str) -> None:
        """A client connected."""

    @_default
    def remove_client(self, scheduler: Any, client: str) -> None:
        """A client disconnected."""

    @_default
    def restart(self, scheduler: Any) -> None:
        """The cluster is being restarted (``client.restart()``)."""

    @_default
    def log_event(self, topic: Any, msg: Any) -> None:
        """An event was published on ``topic``."""

    @_default
    def valid_workers_downscaling(self, scheduler: Any, workers: list) -> list:
        """Which of ``workers`` may be retired (all of them by default)."""
        return workers


class WorkerPlugin:
    """A plugin set up on every worker (those running and those to come).

    ``setup`` and ``teardown`` may be coroutine functions.  ``name`` and
    ``idempotent`` work as for ``SchedulerPlugin``; registering a plugin
    under a name a worker has already tears the old one down first.

    >>> class Warm(WorkerPlugin):
    ...     def setup(self, worker):
    ...         worker.cache = {}
    >>> client.register_plugin(Warm())              # doctest: +SKIP
    """

    idempotent: bool = False

    @_default
    def setup(self, worker: Any) -> None:
        """Run when the plugin is added to ``worker`` (or the worker starts)."""

    @_default
    def teardown(self, worker: Any) -> None:
        """Run when the plugin is removed or the worker closes."""

    @_default
    def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
        """A task on this worker moved from ``start`` to ``finish``: one
        task computed here goes released, waiting, ready, executing, memory,
        released, forgotten."""


class NannyPlugin:
    """A plugin set up on every nanny (those running and those to come).

    With ``restart = True`` the nanny restarts its worker after ``setup``,
    so that the worker process sees what the plugin changed (environment
    variables, installed packages).  ``setup`` and ``teardown`` may be
    coroutine functions.

    >>> class Marker(NannyPlugin):
    ...     restart = True
    ...     def setup(self, nanny):
    ...         nanny.environ["MARKER"] = "1"
    >>> client.register_plugin(Marker())            # doctest: +SKIP
    """

    idempotent: bool = False
    restart: bool = False

    @_default
    def setup(self, nanny: Any) -> None:
        """Run when the plugin is added to ``nanny`` (or the nanny starts)."""

    @_default
    def teardown(self, nanny: Any) -> None:
        """Run when the plugin is removed or the nanny closes."""


# ----------------------------------------------------------------------
# Built-in plugins
# ----------------------------------------------------------------------


class UploadFile(WorkerPlugin):
    """Put a file in every worker's directory (on ``sys.path``) and, for
    ``.py``, ``.egg`` and ``.zip`` files with ``load=True``, import it.
    Workers that join later get it too.

    Named ``upload-file-<file name>``, so several files can be uploaded
    (dask.distributed names every one ``upload_file``, so a second upload
    replaces the first for workers that join later).

    >>> client.register_plugin(UploadFile("mymodule.py"))   # doctest: +SKIP
    """

    def __init__(self, filepath: str, load: bool = True):
        self.filename = os.path.basename(filepath)
        self.load = load
        with open(filepath, "rb") as f:
            self.data = f.read()
        self.name = f"upload-file-{self.filename}"

    async def setup(self, worker: Any) -> None:
        result = worker.upload_file(filename=self.filename, data=self.data, load=self.load)
        if inspect.isawaitable(result):
            result = await result
        if isinstance(result, dict) and result.get("status") == "error":
            exc = result.get("exception")
            exc = getattr(exc, "data", exc)  # the worker's error_message wraps it in Serialize
            if isinstance(exc, BaseException):
                raise exc  # e.g. the SyntaxError of an uploaded module, as before
            raise RuntimeError(f"uploading {self.filename} to {worker.address} failed: "
                               f"{result.get('exception_text') or result.get('text')}")


class Environ(NannyPlugin):
    """Set environment variables in the worker processes: the nanny adds
    them to the environment of the process it starts, then restarts its
    worker (``restart = True``).  Workers without a nanny are not changed.

    >>> client.register_plugin(Environ({"OMP_NUM_THREADS": "2"}))   # doctest: +SKIP
    """

    restart = True
    name = "environ"

    def __init__(self, environ: dict | None = None):
        environ = dict(environ or {})
        bad = [k for k in environ if not isinstance(k, str) or not k or "=" in k]
        if bad:
            raise ValueError(f"Environ: invalid environment variable names {bad!r}")
        self.environ = {k: str(v) for k, v in environ.items()}

    def setup(self, nanny: Any) -> None:
        nanny.environ.update(self.environ)


class InstallPlugin(WorkerPlugin):
    """Base class of plugins that install packages on every worker: runs
    ``install()`` once per worker process.  Idempotent by default, so
    registering the same installation again does not run it again."""

    idempotent = True
    restart_workers = False

    def install(self) -> None:  # pragma: no cover - subclasses say how
        raise NotImplementedError

    async def setup(self, worker: Any) -> None:
        # pip takes seconds or minutes: not on the worker's event loop.
        await asyncio.get_running_loop().run_in_executor(None, self.install)


class PipInstall(InstallPlugin):
    """Install pip packages on every worker (and on workers that join later).

    Runs ``python -m pip install [pip_options] packages`` with the worker's
    own interpreter; a failure raises ``RuntimeError`` with pip's output.
    Packages installed this way are importable by tasks started afterwards;
    a package that was already imported needs ``restart_workers=True``
    (this plugin is then registered on the nannies, which restart their
    workers after installing).

    Differences from dask.distributed: nothing is installed on the
    scheduler (it never runs task code), and two workers on one machine
    may run pip at the same time.

    >>> client.register_plugin(PipInstall(["tqdm"], pip_options=["--upgrade"]))   # doctest: +SKIP
    """

    def __init__(self, packages: Sequence[str], pip_options: Sequence[str] | None = None,
                 restart_workers: bool = False):
        if isinstance(packages, str):
            packages = [packages]
        packages = list(packages)
        if not packages or not all(isinstance(p, str) and p for p in packages):
            raise ValueError(f"PipInstall needs a list of package names, not {packages!r}")
        self.packages = packages
        self.pip_options = list(pip_options or [])
        self.restart_workers = bool(restart_workers)
        self.name = f"pip-install-{'-'.join(sorted(packages))}"

    def command(self) -> list[str]:
        """The command line this plugin runs.

        >>> PipInstall(["a"], pip_options=["--dry-run"]).command()[1:]
        ['-m', 'pip', 'install', '--dry-run', 'a']
        """
        return [sys.executable, "-m", "pip", "install", *self.pip_options, *self.packages]

    def install(self) -> None:
        logger.info("Pip installing %s", " ".join(self.packages))
        proc = subprocess.Popen(self.command(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        stdout, stderr = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"pip install failed with {proc.returncode}: "
                               f"{stderr.decode(errors='replace').strip() or stdout.decode(errors='replace')}")


#: dask.distributed's older name of the install plugins' base class.
PackageInstall = InstallPlugin


class _NannyInstall(NannyPlugin):
    """An install plugin on the nannies: install, then restart the worker
    (what ``PipInstall(..., restart_workers=True)`` registers)."""

    restart = True
    idempotent = True

    def __init__(self, installer: InstallPlugin):
        self.installer = installer
        self.name = installer.name

    async def setup(self, nanny: Any) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.installer.install)


class _WorkerSetupPlugin(WorkerPlugin):
    """``client.register_worker_callbacks(setup)``: run ``setup`` on every
    worker; a ``dask_worker`` parameter receives the Worker."""

    def __init__(self, setup: Callable):
        self._setup = setup
        self.name = f"worker-setup-{getattr(setup, '__name__', 'callback')}-{id(setup):x}"

    async def setup(self, worker: Any) -> None:
        try:
            wants_worker = "dask_worker" in inspect.signature(self._setup).parameters
        except (TypeError, ValueError):
            wants_worker = False
        result = self._setup(dask_worker=worker) if wants_worker else self._setup()
        if inspect.isawaitable(result):
            await result
