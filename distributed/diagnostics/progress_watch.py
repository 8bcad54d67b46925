"""The scheduler side of progress bars: watches over sets of keys.

A progress bar asks the scheduler to *watch* some keys
(``progress_watch``): the keys, and every dependency of theirs that is not
in memory yet, are grouped by task prefix and counted.  The bar then polls
the counts (``progress_poll``) and ends the watch (``progress_unwatch``).
A watch may also follow a client (``client=...``, ``follow=True``): every
graph that client submits while the watch is open is added to it, which is
what ``distributed.diagnostics.ProgressBar()`` needs.

Cost: while no watch is open this extension is not among the scheduler's
transition observers, so tasks nobody watches cost nothing.  While watches
are open, a transition costs one dict lookup; only watched keys do more.

The scheduler loads this class by name from its extension registry
(``distributed/scheduler/extensions.py``); the scheduler never imports it.

>>> ext = ProgressExtension.__name__   # built by the scheduler: Cls(scheduler)
"""
from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

__all__ = ["ProgressExtension", "Watch", "WATCH_PLUGIN_NAME"]

logger = logging.getLogger(__name__)

#: the name under which the extension observes transitions while watches are open.
WATCH_PLUGIN_NAME = "progress-watches"

# How long a watch waits for keys the client has sent but the scheduler has
# not seen yet (the graph travels on the client's stream, the watch request
# on another connection, so the watch may arrive first).
_KEYS_ARRIVE_TIMEOUT = 10.0


#: Least seconds between two ETA estimates of one watch.
_ETA_EVERY = 2.0


def _prefix_of(ts: Any) -> str:
    """The task prefix name of a TaskState (a str, or an object with ``.name``)."""
    prefix = ts.prefix
    return prefix if isinstance(prefix, str) else getattr(prefix, "name", str(prefix))


class Watch:
    """Counts for one progress bar: per prefix, how many keys in all, how
    many still to run, and the keys that erred.

    >>> w = Watch("w1", client=None, follow=False)
    >>> w.snapshot()["done"]
    True
    """

    def __init__(self, ident: str, client: str | None, follow: bool, complete: bool = True):
        self.ident = ident
        self.complete = complete  # count keys already in memory (else only those still to run)
        self.client = client
        self.follow = follow
        self.all: dict[str, int] = {}
        self.remaining: dict[str, set] = {}
        self.erred: dict[Any, str] = {}  # key -> exception text, in the order seen
        self.prefix_of: dict[Any, str] = {}
        self.order: list[str] = []  # prefixes in dependency order (dependencies first)
        self.start = time.time()
        # The scheduler's estimate (critical path and work over threads), and when
        # it may be computed again: it costs O(remaining tasks), so at most 5% of
        # the time, and not more often than every _ETA_EVERY seconds.
        self.eta: float | None = None
        self.eta_at = 0.0
        self.eta_next = 0.0

    def add(self, ts: Any, finished: bool) -> bool:
        """Count ``ts``; ``finished`` when it is in memory already.  Returns
        whether the watch follows it."""
        if ts.key in self.prefix_of:
            return False
        if finished and not self.complete:
            return False
        name = _prefix_of(ts)
        self.prefix_of[ts.key] = name
        if name not in self.all:
            self.all[name] = 0
            self.remaining[name] = set()
        self.all[name] += 1
        if ts.state == "erred":
            self.erred.setdefault(ts.key, ts.exception_text or "erred")
        elif not finished:
            self.remaining[name].add(ts.key)
        return True

    def finish(self, key: Any, error: str | None = None, lost: bool = False) -> None:
        """``key`` reached memory (``error`` None) or failed; ``lost``: it
        was forgotten, an error only if it had not finished."""
        name = self.prefix_of.get(key)
        if name is None:
            return
        remaining = self.remaining[name]
        if lost and key not in remaining:
            return
        remaining.discard(key)
        if error is not None:
            self.erred.setdefault(key, error)

    def snapshot(self) -> dict:
        """What a bar draws: ``{"all", "remaining", "erred", "done",
        "elapsed", "order"}``; ``erred`` is ``[[key, text], ...]``."""
        remaining = {name: len(keys) for name, keys in self.remaining.items()}
        done = not any(remaining.values()) and not self.follow
        return {
            "all": dict(self.all),
            "remaining": remaining,
            "erred": [[k, text] for k, text in list(self.erred.items())[:10]],
            "n_erred": len(self.erred),
            "done": done or bool(self.erred and not self.follow),
            "elapsed": time.time() - self.start,
            "order": list(self.order),
            # Seconds left by the scheduler's estimate, counted down since made.
            "eta": None if self.eta is None else max(0.0, self.eta - (time.time() - self.eta_at)),
        }

    def update_eta(self, state: Any) -> None:
        """Recompute ``eta`` from the remaining keys when it is due."""
        now = time.monotonic()
        if now < self.eta_next:
            return
        from distributed.diagnostics.why import eta

        remaining = [k for keys in self.remaining.values() for k in keys]
        began = time.perf_counter()
        self.eta = eta(state, remaining)["eta"] if remaining else 0.0
        cost = time.perf_counter() - began
        self.eta_at = time.time()
        self.eta_next = now + max(_ETA_EVERY, 20 * cost)


class ProgressExtension:
    """Scheduler extension behind progress bars (see the module docstring).

    Handlers: ``progress_watch(keys=None, client=None, follow=False)`` ->
    ``{"id", **snapshot}``; ``progress_poll(id)`` -> snapshot;
    ``progress_unwatch(id)``.
    """

    name = WATCH_PLUGIN_NAME

    def __init__(self, scheduler: Any):
        self.scheduler = scheduler
        self.watches: dict[str, Watch] = {}
        self.index: dict[Any, set[str]] = {}  # key -> ids of the watches counting it
        scheduler.handlers.update({
            "progress_watch": self.watch,
            "progress_poll": self.poll,
            "progress_unwatch": self.unwatch,
        })

    # -- handlers --------------------------------------------------------

    async def watch(self, comm=None, keys=None, client: str | None = None, follow: bool = False,
                    complete: bool = True, **kwargs) -> dict:
        """Open a watch over ``keys`` (and their unfinished dependencies);
        ``complete=False`` leaves out the keys already in memory."""
        if kwargs:
            raise TypeError(f"progress_watch got unexpected arguments {sorted(kwargs)}")
        keys = list(keys or ())
        if not keys and not follow:
            raise ValueError("progress_watch needs keys, or follow=True with a client")
        if follow and not client:
            raise ValueError("progress_watch(follow=True) needs the client id")
        tasks = self.scheduler.tasks
        deadline = time.monotonic() + _KEYS_ARRIVE_TIMEOUT
        while True:
            missing = [k for k in keys if k not in tasks]
            if not missing:
                break
            if time.monotonic() > deadline:
                raise ValueError(f"progress: the scheduler does not know {len(missing)} key(s) after "
                                 f"{_KEYS_ARRIVE_TIMEOUT:.0f}s, e.g. {missing[:3]!r} (released or never submitted?)")
            await asyncio.sleep(0.02)
        w = Watch(uuid.uuid4().hex, client=client, follow=bool(follow), complete=bool(complete))
        self.watches[w.ident] = w
        self._add_keys(w, keys)
        self._observe()
        return {"id": w.ident, **w.snapshot()}

    def poll(self, comm=None, id: str | None = None, **kwargs) -> dict:
        """The counts of watch ``id``."""
        w = self.watches.get(id)
        if w is None:
            raise KeyError(f"no progress watch {id!r} (ended, or the scheduler restarted)")
        w.update_eta(self.scheduler.state)
        return w.snapshot()

    def unwatch(self, comm=None, id: str | None = None, **kwargs) -> dict | None:
        """End watch ``id`` (no error if it already ended); returns its last counts."""
        w = self.watches.pop(id, None)
        if w is None:
            return None
        for key in w.prefix_of:
            ids = self.index.get(key)
            if ids is not None:
                ids.discard(w.ident)
                if not ids:
                    del self.index[key]
        self._observe()
        w.follow = False
        return w.snapshot()

    # -- scheduler hooks ---------------------------------------------------

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        """Plugin hook, installed only while a watch is open."""
        ids = self.index.get(key)
        if not ids:
            return
        lost = False
        if finish == "memory":
            error = None
        elif finish == "erred":
            ts = self.scheduler.tasks.get(key)
            error = (ts.exception_text if ts is not None else "") or "erred"
        elif finish == "forgotten":
            # After memory this is the normal end of an intermediate result;
            # before it, nobody wanted the key any more (cancelled).
            error, lost = "released before it finished (cancelled?)", True
        else:
            return
        for ident in ids:
            w = self.watches.get(ident)
            if w is not None:
                w.finish(key, error, lost=lost)

    def update_graph(self, scheduler: Any, *, client: str, keys: set, **kwargs: Any) -> None:
        """Plugin hook: add a following watch's client's new graph."""
        for w in self.watches.values():
            if w.follow and w.client == client:
                self._add_keys(w, keys)

    def remove_client(self, *args: Any, **kwargs: Any) -> None:
        """A client went away; end its watches.  Called as an extension hook
        ``remove_client(client)`` and, while observing, as the plugin hook
        ``remove_client(scheduler=, client=)``."""
        client = kwargs.get("client", args[-1] if args else None)
        for ident in [i for i, w in self.watches.items() if w.client == client]:
            self.unwatch(id=ident)

    # -- internals ---------------------------------------------------------

    def _add_keys(self, w: Watch, keys) -> None:
        """Count ``keys`` and their dependencies not yet in memory, walking
        the graph once; prefixes are ordered dependencies first."""
        tasks = self.scheduler.tasks
        seen: set = set()
        post: list = []  # tasks in post-order: dependencies before dependents
        for key in keys:
            ts = tasks.get(key)
            if ts is None or key in seen:
                continue
            stack = [(ts, False)]
            while stack:
                t, expanded = stack.pop()
                if expanded:
                    post.append(t)
                    continue
                if t.key in seen:
                    continue
                seen.add(t.key)
                stack.append((t, True))
                if t.state != "memory":
                    stack.extend((d, False) for d in t.dependencies if d.key not in seen)
        for t in post:
            if not w.add(t, finished=t.state == "memory"):
                continue
            self.index.setdefault(t.key, set()).add(w.ident)
            name = w.prefix_of[t.key]
            if name not in w.order:
                w.order.append(name)

    def _observe(self) -> None:
        """Be a transition observer exactly while some watch is open."""
        plugins = self.scheduler.plugins
        there = dict.__contains__(plugins, WATCH_PLUGIN_NAME)
        if self.watches and not there:
            self.scheduler.add_plugin(self, name=WATCH_PLUGIN_NAME)
        elif not self.watches and there:
            self.scheduler.remove_plugin(name=WATCH_PLUGIN_NAME)
