"""``SpecCluster``: a cluster described by specs of its scheduler and workers.

A spec is a dict ``{"cls": class_or_dotted_name, "options": {...}}``; a
worker spec may add ``"group": [suffix, ...]`` when one object starts several
workers (named ``f"{name}{suffix}"``: a batch job running ``--nworkers 4``).
The cluster keeps ``worker_spec`` (name -> spec: what should run) and
``workers`` (name -> started object: what runs), and ``_correct_state()``
makes the second match the first: it retires the workers no longer in the
spec (their data moves first) and starts the new ones.  ``scale(n)`` adds
copies of the template ``worker`` spec (``new_worker_spec``, named by
``_new_worker_name(i)``) or drops the newest specs.

Worker and scheduler classes are anything started by ``await obj`` and
stopped by ``await obj.close()``: ``Scheduler``, ``Worker``, ``Nanny``, or a
``ProcessInterface`` subclass that starts a process elsewhere (a batch job, a
pod, a process over SSH) and sets ``address``.  This is the contract of
dask-jobqueue, dask-kubernetes (classic) and dask-cloudprovider.

Runs on the cluster's event loop; see ``cluster.py`` for the loop rules.
"""
from __future__ import annotations

import asyncio
import copy
import logging
import math
import weakref
from typing import Any

from distributed import config
from distributed.core import Status
from distributed.deploy.cluster import Cluster
from distributed.utils import import_term, in_thread_of, silence_logging, sync

__all__ = ["ProcessInterface", "SpecCluster", "NoOpAwaitable"]

logger = logging.getLogger(__name__)


class NoOpAwaitable:
    """An awaitable that does nothing: what a call returns in asynchronous
    mode when its work is already scheduled."""

    def __await__(self):
        async def _():
            return None
        return _().__await__()


class ProcessInterface:
    """One scheduler or worker process that a ``SpecCluster`` starts and
    stops: subclass it and override ``start`` (set ``self.address``, then
    ``await super().start()``) and ``close`` (stop it, then
    ``await super().close()``).

    >>> class MyWorker(ProcessInterface):          # doctest: +SKIP
    ...     def __init__(self, scheduler, name=None, **options):
    ...         super().__init__(scheduler, name)
    ...         self.scheduler = scheduler
    ...     async def start(self):
    ...         self.proc = await launch_somewhere(self.scheduler)
    ...         self.address = self.proc.address
    ...         await super().start()
    ...     async def close(self):
    ...         await self.proc.kill()
    ...         await super().close()
    """

    def __init__(self, scheduler: str | None = None, name: Any = None):
        self.address: str | None = None
        self.external_address: str | None = None
        self.name = name
        self.lock = asyncio.Lock()
        self.status = Status.created
        self._event_finished = asyncio.Event()

    def __await__(self):
        async def _():
            async with self.lock:
                if self.status == Status.created:
                    await self.start()
                    if self.status != Status.running:
                        raise RuntimeError(f"{type(self).__name__}.start() did not reach 'running' "
                                           f"(status {self.status!r}): call super().start() at its end")
            return self
        return _().__await__()

    async def start(self, **kwargs) -> None:
        """Start the process; subclasses end with ``await super().start()``."""
        self.status = Status.running

    async def close(self, **kwargs) -> None:
        """Stop the process; subclasses end with ``await super().close()``."""
        self.status = Status.closed
        self._event_finished.set()

    async def finished(self) -> None:
        """Wait until the process has ended."""
        await self._event_finished.wait()

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: name={self.name!r} address={self.address!r} status={self.status}>"

    async def __aenter__(self):
        await self
        return self

    async def __aexit__(self, *exc):
        await self.close()


def _resolve(spec: dict, what: str) -> tuple[type, dict]:
    if not isinstance(spec, dict) or "cls" not in spec:
        raise TypeError(f"{what} spec must be a dict like {{'cls': Worker, 'options': {{...}}}}, not {spec!r}")
    cls = spec["cls"]
    if isinstance(cls, str):
        cls = import_term(cls)
    return cls, dict(spec.get("options") or {})


class SpecCluster(Cluster):
    """A cluster made from specs of its scheduler and workers.

    ``scheduler`` is a spec (default: a ``Scheduler`` on 127.0.0.1, random
    port), ``workers`` a dict of name -> spec started at once, ``worker`` the
    template that ``scale(n)`` copies.

    >>> from distributed import Scheduler, Worker
    >>> cluster = SpecCluster(                                         # doctest: +SKIP
    ...     scheduler={"cls": Scheduler, "options": {"port": 0}},
    ...     workers={"a": {"cls": Worker, "options": {"nthreads": 1}}},
    ...     worker={"cls": Worker, "options": {"nthreads": 2}})
    >>> cluster.scale(3)                                               # doctest: +SKIP
    >>> sorted(cluster.workers, key=str)                               # doctest: +SKIP
    [0, 1, 'a']
    """

    def __init__(self, workers: dict | None = None, scheduler: dict | None = None, worker: dict | None = None,
                 asynchronous: bool = False, loop=None, security=None, silence_logs=False,
                 name: str | None = None, shutdown_on_close: bool = True,
                 scheduler_sync_interval: float | str = 1, shutdown_scheduler: bool = True):
        if scheduler is None:
            from distributed.scheduler.server import Scheduler
            scheduler = {"cls": Scheduler, "options": {"host": "127.0.0.1", "port": 0}}
        _resolve(scheduler, "scheduler")  # bad input raises here, before anything starts
        for wname, spec in (workers or {}).items():
            _resolve(spec, f"worker {wname!r}")
        if worker is not None:
            _resolve(worker, "worker template")
        self.security = security
        self.scheduler_spec = copy.copy(scheduler)
        self.worker_spec: dict[Any, dict] = copy.copy(workers or {})
        self.new_spec = copy.copy(worker)
        self.workers: dict[Any, Any] = {}
        self.scheduler = None
        self._i = 0
        self._created: weakref.WeakSet = weakref.WeakSet()
        self._lock: asyncio.Lock | None = None
        self._correct_state_waiting: asyncio.Future | None = None
        self._futures: set = set()
        # Specs with a "group" dropped from worker_spec while their workers
        # still run: the group says which scheduler-side names to retire.
        self._dropped_specs: dict[Any, dict] = {}
        self._shutdown_on_close = shutdown_on_close
        self._shutdown_scheduler = shutdown_scheduler
        self._silence_logs = silence_logs
        if silence_logs:
            silence_logging(silence_logs.upper() if isinstance(silence_logs, str) else silence_logs)
        super().__init__(asynchronous=asynchronous, loop=loop, name=name,
                         scheduler_sync_interval=scheduler_sync_interval)
        if not self._asynchronous:
            self._loop_runner.start()
            try:
                self.sync(self._start)
            except BaseException:
                self.close(timeout=10)
                raise

    # -- starting ------------------------------------------------------------

    async def _start(self) -> None:
        if self.status == Status.running:
            return
        if self.status in (Status.closing, Status.closed):
            raise RuntimeError(f"{type(self).__name__} is {self.status}; it cannot start again")
        self.status = Status.starting
        self._lock = asyncio.Lock()
        cls, options = _resolve(self.scheduler_spec, "scheduler")
        self.scheduler = cls(**options)
        self.scheduler = await self.scheduler
        await super()._start()
        self._log(f"scheduler started at {self.scheduler_address}")
        await self._correct_state()

    def __await__(self):
        async def _():
            if self.status == Status.created:
                await self._start()
            await self._correct_state()
            return self
        return _().__await__()

    # -- making the workers match the spec -------------------------------------

    def _correct_state(self) -> asyncio.Future:
        """Start the workers in the spec that do not run, retire and close the
        running ones no longer in it.  Calls made while one runs share the
        next round."""
        if self._correct_state_waiting is not None:
            return self._correct_state_waiting
        task = asyncio.ensure_future(self._correct_state_internal())
        self._correct_state_waiting = task
        return task

    async def _correct_state_internal(self) -> None:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            self._correct_state_waiting = None
            to_close = [name for name in self.workers if name not in self.worker_spec]
            if to_close:
                await self._retire_and_close(to_close)
            to_open = [name for name in self.worker_spec if name not in self.workers]
            if to_open and self.status not in (Status.closing, Status.closed):
                await self._open(to_open)

    async def _retire_and_close(self, names: list) -> None:
        if self.status not in (Status.closing, Status.closed) and self.scheduler is not None:
            # Move their data away first (the scheduler knows worker names too).
            known = {w.get("name") for w in self.scheduler_info.get("workers", {}).values()}
            retiring = [n for spec_name in names for n in self._names_of(spec_name) if n in known]
            if retiring and len(retiring) < len(known):
                try:
                    await self._scheduler_call("retire_workers", workers=retiring, close_workers=True,
                                               remove=True)
                except Exception as e:
                    self._log(f"could not move the data of {retiring} before closing them: {e}")
        objs = [self.workers.pop(name) for name in names]
        results = await asyncio.gather(*(w.close() for w in objs), return_exceptions=True)
        for name, r in zip(names, results):
            if isinstance(r, BaseException):
                self._log(f"worker {name!r} did not close cleanly: {r!r}")
        for name in names:
            self._dropped_specs.pop(name, None)
        self._log(f"closed workers {names}")

    def _names_of(self, spec_name) -> list:
        """The worker names one spec entry starts (several with a "group")."""
        spec = self.worker_spec.get(spec_name) or self._dropped_specs.get(spec_name)
        if spec is not None and "group" in spec:
            return [f"{spec_name}{suffix}" for suffix in spec["group"]]
        return [spec_name]

    async def _open(self, names: list) -> None:
        new = {}
        for name in names:
            cls, options = _resolve(self.worker_spec[name], f"worker {name!r}")
            options.setdefault("name", name)
            worker = cls(self.scheduler_address, **options)
            self._created.add(worker)
            new[name] = worker
        results = await asyncio.gather(*(_start(w) for w in new.values()), return_exceptions=True)
        errors = []
        for (name, worker), r in zip(new.items(), results):
            if isinstance(r, BaseException):
                errors.append(r)
                self.worker_spec.pop(name, None)  # what failed is not asked for any more
                await asyncio.gather(_close(worker), return_exceptions=True)
            else:
                worker._cluster = weakref.ref(self)
                self.workers[name] = worker
        self._log(f"started workers {[n for n in names if n in self.workers]}")
        if errors:
            raise errors[0]

    # -- scaling ---------------------------------------------------------------

    def _new_worker_name(self, worker_number: int):
        """The name of the ``worker_number``-th worker ``scale`` adds
        (subclasses: dask-jobqueue names them ``f"{cluster}-{n}"``)."""
        return worker_number

    def new_worker_spec(self) -> dict:
        """``{name: spec}`` of one more worker from the template ``worker``.

        >>> cluster.new_worker_spec()  # doctest: +SKIP
        {3: {'cls': <class 'distributed.Nanny'>, 'options': {'nthreads': 2}}}
        """
        if self.new_spec is None:
            raise ValueError(f"{type(self).__name__} has no worker template (worker=...), so it cannot scale up")
        name = self._new_worker_name(self._i)
        while name in self.worker_spec:
            self._i += 1
            name = self._new_worker_name(self._i)
        return {name: self.new_spec}

    def _threads_per_worker(self) -> int:
        options = (self.new_spec or {}).get("options") or {}
        if options.get("cores"):  # dask-jobqueue's template: cores per job, i.e. per spec (its group shares them)
            return int(options["cores"])
        n = options.get("nthreads") or options.get("ncores") or options.get("threads_per_worker")
        if not n:
            raise ValueError("scale(cores=) needs the worker template's 'nthreads' option")
        return int(n) * max(1, len((self.new_spec or {}).get("group", ())) or 1)

    def _memory_per_worker(self) -> int:
        options = (self.new_spec or {}).get("options") or {}
        if options.get("memory"):  # dask-jobqueue's template: memory per job, i.e. per spec
            return config.parse_bytes(options["memory"])
        limit = options.get("memory_limit")
        if not limit or limit == "auto":
            raise ValueError("scale(memory=) needs the worker template's 'memory_limit' (or per-job 'memory') option")
        return config.parse_bytes(limit) * max(1, len((self.new_spec or {}).get("group", ())) or 1)

    def _specs_for(self, n: int | None, memory=None, cores=None) -> int:
        if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 0):
            raise ValueError(f"scale needs a whole number of workers >= 0, not {n!r}")
        n = n or 0
        if memory is not None:
            n = max(n, math.ceil(config.parse_bytes(memory) / self._memory_per_worker()))
        if cores is not None:
            n = max(n, math.ceil(cores / self._threads_per_worker()))
        return n

    def scale(self, n: int | None = 0, memory=None, cores=None):
        """Ask for ``n`` workers (or enough for ``memory`` bytes / ``cores``
        threads): new ones copy the template spec; when shrinking, workers
        not yet started go first, then the newest.  Retired workers move
        their data first.  Blocks until done, except in asynchronous mode
        (await the result) or on the cluster's loop (it goes on in the
        background; await the result to wait).

        >>> cluster.scale(4)           # doctest: +SKIP
        >>> cluster.scale(cores=16)    # doctest: +SKIP
        """
        n = self._specs_for(n, memory, cores)
        if n > len(self.worker_spec) and self.new_spec is None:
            raise ValueError(f"{type(self).__name__} has no worker template (worker=...), so it cannot "
                             f"scale up to {n}")
        if len(self.worker_spec) > n:
            running = {w.get("name") for w in self.scheduler_info.get("workers", {}).values()}
            not_yet = [name for name in self.worker_spec if not set(self._names_of(name)) & running]
            while len(self.worker_spec) > n and not_yet:
                self._drop_spec(not_yet.pop())
            while len(self.worker_spec) > n:
                self._drop_spec(next(reversed(self.worker_spec)))
        if self.status not in (Status.closing, Status.closed):
            while len(self.worker_spec) < n:
                self.worker_spec.update(self.new_worker_spec())
        return self._apply()

    def _drop_spec(self, name) -> None:
        spec = self.worker_spec.pop(name)
        if "group" in spec:
            self._dropped_specs[name] = spec

    def _apply(self):
        """Run ``_correct_state`` as ``scale`` promises (see its docstring)."""
        if self.status == Status.created:  # not started: the start will do it
            return NoOpAwaitable()
        if in_thread_of(self.loop):
            return self._correct_state()
        return sync(self.loop, self._correct_state)

    scale_up = scale

    def scale_down(self, workers) -> Any:
        """Retire and close the workers named (names as the scheduler knows
        them, group members included); an awaitable in asynchronous mode.

        >>> cluster.scale_down([2, 3])  # doctest: +SKIP
        """
        for w in set(workers):
            if w in self.worker_spec:
                self._drop_spec(w)
                continue
            for name, spec in list(self.worker_spec.items()):
                if "group" in spec and any(f"{name}{suffix}" == str(w) for suffix in spec["group"]):
                    self._drop_spec(name)
                    break
        return self._apply()

    # -- what Adaptive reads -----------------------------------------------------

    @property
    def plan(self) -> set:
        """Names of the workers the spec asks for."""
        out = set()
        for name, spec in self.worker_spec.items():
            out.update(f"{name}{suffix}" for suffix in spec["group"]) if "group" in spec else out.add(name)
        return out

    @property
    def requested(self) -> set:
        """Names of the workers started (or starting) by this object."""
        out = set()
        for name in self.workers:
            spec = self.worker_spec.get(name) or self._dropped_specs.get(name)
            if spec is not None and "group" in spec:
                out.update(f"{name}{suffix}" for suffix in spec["group"])
            else:
                out.add(name)
        return out

    @property
    def observed(self) -> set:
        """Names of the workers the scheduler sees."""
        return {w.get("name") for w in self.scheduler_info.get("workers", {}).values()}

    def adapt(self, Adaptive: type | None = None, minimum: float = 0, maximum: float = math.inf,
              minimum_cores: int | None = None, maximum_cores: int | None = None,
              minimum_memory: str | int | None = None, maximum_memory: str | int | None = None, **kwargs):
        """``Cluster.adapt`` with bounds also in cores and memory (turned into
        worker counts with the template spec).

        >>> cluster.adapt(minimum_cores=2, maximum_memory="8GiB")  # doctest: +SKIP
        """
        if minimum_cores is not None:
            minimum = max(minimum or 0, math.ceil(minimum_cores / self._threads_per_worker()))
        if minimum_memory is not None:
            minimum = max(minimum or 0, math.ceil(config.parse_bytes(minimum_memory) / self._memory_per_worker()))
        if maximum_cores is not None:
            maximum = min(maximum, math.floor(maximum_cores / self._threads_per_worker()))
        if maximum_memory is not None:
            maximum = min(maximum, math.floor(config.parse_bytes(maximum_memory) / self._memory_per_worker()))
        return super().adapt(Adaptive=Adaptive, minimum=minimum, maximum=maximum, **kwargs)

    # -- closing -----------------------------------------------------------------

    async def _close(self) -> None:
        if self.status == Status.closed:
            return
        if self.status == Status.closing:
            while self.status != Status.closed:  # another close runs; wait for it
                await asyncio.sleep(0.01)
            return
        self.status = Status.closing
        await self._stop_adaptive()
        self.worker_spec.clear()
        await self._correct_state()
        for future in list(self._futures):
            await asyncio.gather(future, return_exceptions=True)
        if self.scheduler is not None and self._shutdown_scheduler:
            try:
                if self._local_scheduler() is None and self.scheduler_comm is not None:
                    try:
                        await asyncio.wait_for(self.scheduler_comm.terminate(close_workers=True), 5)
                    except Exception as e:
                        logger.debug("scheduler did not answer terminate: %s", e)
                await self.scheduler.close()
            except Exception as e:
                self._log(f"scheduler did not close cleanly: {e!r}")
        self._log("closed")
        await super()._close()

    def __del__(self):
        try:
            if (getattr(self, "_shutdown_on_close", False) and self.status == Status.running
                    and not self._asynchronous):
                self.close(timeout=5)
        except Exception:
            pass


async def _start(worker) -> Any:
    """Start a worker-like object: ``await obj`` (Worker, Nanny, ProcessInterface)."""
    return await worker


async def _close(worker) -> None:
    close = getattr(worker, "close", None)
    if close is not None:
        result = close()
        if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
            await result
