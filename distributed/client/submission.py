"""Client methods that turn work into tasks: submit, map, raw graphs and dask
collections.
"""
from __future__ import annotations

import logging
import uuid
from collections.abc import Callable

from distributed import dask_graphs
from distributed.client.queues import QueueFeeder, is_queue
from distributed.comm import normalize_address
from distributed.futures import Future
from distributed.spec import (
    CALL,
    WALK,
    TaskRef,
    convert_graph_value,
    make_spec,
    pickled_function,
    spec_frames,
)
from distributed.structure import flatten_keys, graph_order, pack_like, replace_futures
from distributed.threadpool import seceded
from distributed.utils import funcname, tokenize

__all__ = ["Submission"]

logger = logging.getLogger(__name__)


class Submission:
    """The submission methods of ``Client`` (``self`` is a Client)."""

    # ------------------------------------------------------------------
    # Submitting work
    # ------------------------------------------------------------------

    def submit(self, func: Callable, *args, key=None, workers=None, resources=None, retries=None,
               priority: int = 0, fifo_timeout=None, allow_other_workers: bool = False,
               actor: bool = False, actors: bool = False, pure: bool | None = None, **kwargs) -> Future:
        """Run ``func(*args, **kwargs)`` on the cluster; returns a Future.

        With ``actor=True`` (or ``actors=True``) the result stays on its
        worker as an actor and the Future's result is an ``Actor`` handle
        (``distributed.coordination.actor``); such a task is never pure.

        >>> future = client.submit(add, 1, 2)     # doctest: +SKIP
        >>> counter = client.submit(Counter, actor=True).result()   # doctest: +SKIP
        """
        if not callable(func):
            raise TypeError("First input to submit must be a callable function")
        if allow_other_workers and workers is None:
            raise ValueError("allow_other_workers=True needs workers=")
        actor = bool(actor or actors)
        pure = False if actor else (True if pure is None else pure)
        spec, deps, token = self._make_spec(func, args, kwargs)
        if key is None:
            key = f"{funcname(func)}-{token if pure else uuid.uuid4().hex}"
        with self._ref_lock:
            if key in self.futures:
                return Future(key, self, inform=False)
            future = Future(key, self, inform=False)
        msg = self._graph_message({key: spec}, {key: deps}, [key], {key: 0}, priority,
                                  workers, allow_other_workers, resources, retries,
                                  actors=[key] if actor else None)
        self._check_open()
        self._send_to_scheduler(msg)
        return future

    def _make_spec(self, func, args, kwargs) -> tuple[dict, list, str]:
        fbytes = pickled_function(func)
        deps: dict = {}
        if args:
            args = replace_futures(args, deps, self)
        if kwargs:
            kwargs = replace_futures(kwargs, deps, self)
        spec = make_spec(CALL, fbytes, (args, kwargs))
        return spec, list(deps), tokenize(*spec_frames(spec))

    def _graph_message(self, tasks, dependencies, keys, priority, user_priority, workers,
                       allow_other_workers, resources, retries, actors=None) -> dict:
        msg = {"op": "update-graph", "tasks": tasks, "dependencies": dependencies,
               "keys": list(keys), "priority": priority, "user_priority": user_priority}
        if actors:  # keys whose values stay on their workers as actors
            msg["actors"] = [k for k in actors if k in tasks]
        if workers is not None:
            if isinstance(workers, (str, tuple)) and not (isinstance(workers, tuple) and len(workers) != 2):
                workers = [workers]
            workers = [normalize_address(w) if isinstance(w, tuple) else w for w in workers]
            msg["restrictions"] = {k: list(workers) for k in tasks}
            if allow_other_workers:
                msg["loose_restrictions"] = list(tasks)
        if resources:
            msg["resources"] = {k: resources for k in tasks}
        if retries:
            msg["retries"] = {k: retries for k in tasks}
        return msg

    def map(self, func: Callable, *iterables, key=None, workers=None, retries=None, resources=None,
            priority: int = 0, allow_other_workers: bool = False, fifo_timeout=None,
            actor: bool = False, actors: bool = False, pure: bool | None = None,
            batch_size=None, **kwargs) -> list[Future]:
        """``submit`` over each set of arguments; a list of Futures.

        The iterables may be of any kind (lists, generators, ranges, sets,
        dict views...) and are read in step; the shortest ends the map.
        ``key`` is a prefix for the task names, or a list with one name per
        task.  ``batch_size`` sends the tasks to the scheduler in messages
        of at most that many tasks.

        With a ``queue.Queue`` among the iterables (the old streaming API),
        a ``queue.Queue`` of Futures comes back at once and a thread submits
        one task per item as items arrive (the other iterables are read in
        step), so a producer that never ends works; a ``StopIteration``
        item, the end of another iterable or closing the client ends it.
        ``maxsize=`` bounds that queue (0: no limit).  ``actor=True`` makes
        each result an actor, as in ``submit``.

        >>> futures = client.map(inc, range(100))    # doctest: +SKIP
        >>> out = client.map(inc, q)                 # doctest: +SKIP
        """
        if not callable(func):
            raise TypeError("First input to map must be a callable function")
        if not iterables:
            raise TypeError("map needs at least one iterable")
        if any(isinstance(it, dict) for it in iterables):
            raise TypeError("Dictionaries are not supported as map arguments")
        if batch_size is not None and (not isinstance(batch_size, int) or isinstance(batch_size, bool)
                                       or batch_size < 1):
            raise ValueError(f"batch_size must be a whole number >= 1, not {batch_size!r}")
        if any(is_queue(it) for it in iterables):
            if isinstance(key, (list, tuple)):
                raise ValueError("map over a queue.Queue takes key= as a name prefix (a str), not a list: "
                                 "the tasks are not known in advance")
            maxsize = kwargs.pop("maxsize", 0)

            def one(*args):
                return self.map(func, *[[a] for a in args], key=key, workers=workers, retries=retries,
                                resources=resources, priority=priority,
                                allow_other_workers=allow_other_workers, pure=pure,
                                actor=actor or actors, **kwargs)[0]

            self._check_open()
            return QueueFeeder(self, iterables, one, maxsize=maxsize, name="map").start()
        iterables = [list(it) for it in iterables]
        n = min(len(it) for it in iterables)
        if isinstance(key, (list, tuple)) and len(key) < n:
            raise ValueError(f"map got {len(key)} keys for {n} tasks")
        actor = bool(actor or actors)
        pure = False if actor else (True if pure is None else pure)
        prefix = key if isinstance(key, str) else funcname(func)
        tasks: dict = {}
        dependencies: dict = {}
        order: dict = {}
        futures: list[Future] = []
        fbytes = pickled_function(func)
        for i, args in enumerate(zip(*iterables)):
            deps: dict = {}
            args = replace_futures(args, deps, self)
            kw = replace_futures(kwargs, deps, self) if kwargs else kwargs
            spec = make_spec(CALL, fbytes, (args, kw))
            if isinstance(key, (list, tuple)):
                k = key[i]
            elif pure:
                k = f"{prefix}-{tokenize(*spec_frames(spec))}"
            else:
                k = f"{prefix}-{uuid.uuid4().hex}"
            with self._ref_lock:
                known = k in self.futures
                futures.append(Future(k, self, inform=False))
            if known or k in tasks:
                continue
            tasks[k] = spec
            dependencies[k] = list(deps)
            order[k] = i
            if batch_size is not None and len(tasks) >= batch_size:
                self._send_to_scheduler(self._graph_message(
                    tasks, dependencies, list(tasks), order, priority, workers,
                    allow_other_workers, resources, retries, actors=list(tasks) if actor else None))
                tasks, dependencies, order = {}, {}, {}
        if tasks:
            self._send_to_scheduler(self._graph_message(
                tasks, dependencies, list(tasks), order, priority, workers,
                allow_other_workers, resources, retries, actors=list(tasks) if actor else None))
        return futures

    def get(self, dsk: dict, keys, workers=None, allow_other_workers=None, resources=None,
            sync: bool = True, asynchronous=None, direct=None, retries=None, priority: int = 0,
            fifo_timeout=None, actors=None, **kwargs):
        """Run a dask-style graph and return the values of ``keys`` (nested
        like ``keys``).

        >>> client.get({"x": 1, "y": (inc, "x")}, "y")    # doctest: +SKIP
        2
        """
        futures = self._graph_to_futures(dsk, keys, workers, allow_other_workers, resources,
                                         retries, priority, actors=actors)
        packed = pack_like(keys, futures)
        if not sync:
            return packed
        try:
            # Inside a task (dask.compute in a task), the wait gives up the
            # thread's slot: the graph may need it to run at all.
            with seceded():
                return self.sync(self._gather, packed, asynchronous=asynchronous, direct=direct)
        finally:
            if not (asynchronous or self.asynchronous):
                for f in futures.values():
                    f.release()

    async def _get(self, dsk, keys, **kwargs):
        futures = self._graph_to_futures(dsk, keys, kwargs.get("workers"), kwargs.get("allow_other_workers"),
                                         kwargs.get("resources"), kwargs.get("retries"), kwargs.get("priority", 0))
        try:
            return await self._gather(pack_like(keys, futures))
        finally:
            for f in futures.values():
                f.release()

    def _graph_to_futures(self, dsk: dict, keys, workers=None, allow_other_workers=None,
                          resources=None, retries=None, priority: int = 0, actors=None) -> dict:
        if dask_graphs.is_dask_graph(dsk):
            graph = dask_graphs.materialize(dsk)
            return self._dask_graph_to_futures(graph, keys, workers,
                                               allow_other_workers, resources, retries, priority,
                                               annotations=dask_graphs.annotations_of(dsk, graph),
                                               actors=actors)
        dsk = dict(dsk)
        flat_keys = list(flatten_keys(keys))
        missing = [k for k in flat_keys if k not in dsk and k not in self.futures]
        if missing:
            raise KeyError(f"keys {missing!r} are not in the graph")
        graph_keys = set(dsk)
        tasks: dict = {}
        dependencies: dict = {}
        for k, value in dsk.items():
            if isinstance(value, Future):
                value = TaskRef(value.key)
                tasks_deps = {value.key}
                spec_value = value
            else:
                tasks_deps: set = set()
                holder: dict = {}
                value = replace_futures(value, holder, self)
                tasks_deps.update(holder)
                spec_value = convert_graph_value(value, graph_keys, tasks_deps)
            tasks_deps.discard(k)
            if type(spec_value).__name__ == "NestedCall":
                spec = make_spec(WALK, pickled_function(spec_value.func), (spec_value.args, {}))
            else:
                spec = make_spec(WALK, None, ((spec_value,), {}))
            tasks[k] = spec
            dependencies[k] = list(tasks_deps)
        order = graph_order(dependencies, flat_keys)
        futures = {}
        with self._ref_lock:
            for k in flat_keys:
                futures[k] = Future(k, self, inform=False)
        self._send_to_scheduler(self._graph_message(
            tasks, dependencies, flat_keys, order, priority, workers,
            bool(allow_other_workers), resources, retries, actors=_actor_keys(actors, flat_keys)))
        return futures

    def _dask_graph_to_futures(self, graph: dict, keys, workers=None, allow_other_workers=None,
                               resources=None, retries=None, priority: int = 0,
                               annotations: dict | None = None, actors=None) -> dict:
        """Submit a materialized dask graph (``{key: GraphNode}``)."""
        flat_keys = list(flatten_keys(keys))
        held = {k for k in graph if k in self.futures and self.futures[k].status != "error"}
        missing = [k for k in flat_keys if k not in graph and k not in self.futures]
        if missing:
            raise KeyError(f"keys {missing!r} are not in the graph")
        tasks, dependencies = dask_graphs.node_specs(graph, held)
        order = dask_graphs.graph_priorities(graph)
        futures = {}
        with self._ref_lock:
            for k in flat_keys:
                futures[k] = Future(k, self, inform=k not in tasks)
        msg = self._graph_message(
            tasks, dependencies, [k for k in flat_keys if k in tasks],
            {k: order.get(k, 0) for k in tasks}, priority, workers,
            bool(allow_other_workers), resources, retries, actors=_actor_keys(actors, flat_keys))
        if annotations:
            dask_graphs.apply_annotations(msg, annotations)
        self._check_open()
        self._send_to_scheduler(msg)
        return futures

    # ------------------------------------------------------------------
    # Dask collections
    # ------------------------------------------------------------------

    def compute(self, collections, sync: bool = False, optimize_graph: bool = True, workers=None,
                allow_other_workers: bool = False, resources=None, retries=None, priority: int = 0,
                fifo_timeout=None, actors=None, traverse: bool = True, **kwargs):
        """Start computing dask collections; a Future per collection (its
        final value), or the values themselves with ``sync=True``.
        ``actors=True`` makes each final value an actor (``actors=`` may also
        name keys or collections whose tasks become actors).

        >>> total = client.compute(x.sum())     # doctest: +SKIP
        >>> total.result()                      # doctest: +SKIP
        """
        from dask._expr import FinalizeCompute
        from dask.base import collections_to_expr, is_dask_collection

        dask_graphs.use_task_based_shuffles()
        if isinstance(collections, dict):
            names = list(collections)
            futures = self.compute(list(collections.values()), sync=sync, optimize_graph=optimize_graph,
                                   workers=workers, allow_other_workers=allow_other_workers,
                                   resources=resources, retries=retries, priority=priority,
                                   actors=actors)
            return dict(zip(names, futures))
        singleton = not isinstance(collections, (list, tuple, set))
        items = [collections] if singleton else list(collections)
        graph: dict = {}
        final_keys: dict = {}
        annotations: dict = {}
        for i, item in enumerate(items):
            if is_dask_collection(item):
                expr = FinalizeCompute(collections_to_expr([item], optimize_graph)).optimize()
                item_graph = dask_graphs.materialize(expr)
                graph.update(item_graph)
                dask_graphs.merge_annotations(annotations, dask_graphs.annotations_of(expr, item_graph))
                final_keys[i] = list(flatten_keys(expr.__dask_keys__()))[0]
        futures = self._dask_graph_to_futures(graph, list(final_keys.values()), workers,
                                              allow_other_workers, resources, retries, priority,
                                              annotations, actors=actors) if graph else {}
        out = [futures[final_keys[i]] if i in final_keys else item for i, item in enumerate(items)]
        if sync:
            out = self.gather(out)
        return out[0] if singleton else out

    def persist(self, collections, optimize_graph: bool = True, workers=None,
                allow_other_workers: bool = False, resources=None, retries=None, priority: int = 0,
                fifo_timeout=None, actors=None, **kwargs):
        """Start computing dask collections and keep the results on the
        cluster; returns the same collections backed by futures.
        ``actors=`` as in ``compute``.

        >>> x = client.persist(x)               # doctest: +SKIP
        """
        from dask.base import is_dask_collection

        dask_graphs.use_task_based_shuffles()
        singleton = not isinstance(collections, (list, tuple, set))
        items = [collections] if singleton else list(collections)
        colls = [c for c in items if is_dask_collection(c)]
        rebuilt = iter([])
        if colls:
            graph, annotations, keys, rebuild = dask_graphs.persist_graph(colls, optimize_graph)
            futures = self._dask_graph_to_futures(graph, keys, workers, allow_other_workers,
                                                  resources, retries, priority, annotations, actors=actors)
            rebuilt = iter(rebuild(futures))
        out = [next(rebuilt) if is_dask_collection(item) else item for item in items]
        return out[0] if singleton else out


def _actor_keys(actors, output_keys: list) -> list | None:
    """The keys ``actors=`` makes actors: none (None, False), every output
    key (True), or the keys named (keys, or collections for their keys).

    >>> _actor_keys(True, ["x", "y"]), _actor_keys(None, ["x"]), _actor_keys(["y"], ["x", "y"])
    (['x', 'y'], None, ['y'])
    """
    if actors is None or actors is False:
        return None
    if actors is True:
        return list(output_keys)
    items = actors if isinstance(actors, (list, tuple, set, frozenset)) else [actors]
    out: list = []
    for item in items:
        if hasattr(item, "__dask_keys__"):
            out.extend(flatten_keys(item.__dask_keys__()))
        else:
            out.append(item)
    return out
