"""Turning what dask hands a scheduler into our task specs.

Current dask graphs hold task-spec objects (``dask._task_spec``: ``Task``,
``Alias``, ``DataNode``, ``TaskRef``) and sometimes classic tuples in the
same graph; ``convert_legacy_graph`` makes all of them nodes, and a node
runs on the worker as ``node(values_of_its_dependencies)``.  Expressions
and HighLevelGraphs are materialized first.

Nothing here imports dask at module import time: the core works without it,
and these functions are only called with dask objects, so dask is there.
"""
from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from distributed.spec import NODE, make_spec

__all__ = [
    "is_dask_graph",
    "materialize",
    "persist_graph",
    "has_annotations",
    "node_specs",
    "graph_priorities",
    "use_task_based_shuffles",
    "annotations_of",
    "check_annotations",
    "resolve_annotations",
    "merge_annotations",
    "apply_annotations",
    "KNOWN_ANNOTATIONS",
]


def is_dask_graph(dsk: Any) -> bool:
    """Whether ``dsk`` needs dask to be understood (an expression, a
    HighLevelGraph, or a dict holding task-spec nodes)."""
    if "dask" not in sys.modules:
        return False
    if hasattr(dsk, "__dask_graph__") and not isinstance(dsk, dict):
        return True
    from dask._task_spec import GraphNode

    if isinstance(dsk, Mapping):
        return type(dsk) is not dict or any(isinstance(v, GraphNode) for v in dsk.values())
    return False


def materialize(dsk: Any) -> dict:
    """A plain ``{key: GraphNode}`` dict from an expression, a
    HighLevelGraph or a mapping mixing nodes and classic tuples.

    A graph with ``dask.annotate`` annotations is optimized without dask's
    low-level (linear) fusion, which keeps no annotations; blockwise fusion,
    which combines them, still runs (``annotations_of`` reads the result).
    """
    from dask._task_spec import convert_legacy_graph

    if hasattr(dsk, "__dask_graph__") and not isinstance(dsk, Mapping):
        if has_annotations(dsk):
            import dask

            with dask.config.set({"optimization.fuse.active": False}):
                dsk = dsk.__dask_graph__()
        else:
            dsk = dsk.__dask_graph__()
    return convert_legacy_graph(dict(dsk))


def persist_graph(collections: list, optimize_graph: bool = True) -> tuple:
    """What persisting ``collections`` submits, the way ``dask.persist``
    builds it: ``(graph, annotations, keys, rebuild)`` where ``keys`` are
    the keys to keep (all collections, in order) and ``rebuild(futures)``
    (``{key: Future}``) returns the collections backed by those futures.
    """
    from dask._expr import CompositeExpr, _ExprSequence
    from dask.base import collections_to_expr

    from distributed.structure import flatten_keys

    expr = collections_to_expr(collections, optimize_graph)
    parts = list(expr.operands) if isinstance(expr, _ExprSequence) else [expr]
    composite = any(isinstance(part, CompositeExpr) for part in parts)
    expr = expr.optimize()
    if composite:
        parts = list(expr.operands) if isinstance(expr, _ExprSequence) else [expr]
    if not composite or len(parts) != len(collections):
        parts = [None] * len(collections)
    graph = materialize(expr)
    annotations = annotations_of(expr, graph)
    per_collection = [list(flatten_keys(k)) for k in expr.__dask_keys__()]
    if len(per_collection) != len(collections):
        raise RuntimeError(f"persist: dask made {len(per_collection)} key lists for {len(collections)} collections")

    def rebuild(futures: dict) -> list:
        from dask.base import _rebuild_composite_collection

        out = []
        for coll, part, keys in zip(collections, parts, per_collection):
            if isinstance(part, CompositeExpr):
                out.append(_rebuild_composite_collection(coll, part, futures, cull_to_child_keys=True))
            else:
                func, args = coll.__dask_postpersist__()
                out.append(func({k: futures[k] for k in keys}, *args))
        return out

    return graph, annotations, [k for keys in per_collection for k in keys], rebuild


def has_annotations(obj: Any) -> bool:
    """Whether any layer of ``obj`` (an expression, collection or
    HighLevelGraph) was built under ``dask.annotate`` (nothing is expanded
    or materialized to find out)."""
    return any(getattr(layer, "annotations", None) for hlg in _layer_graphs(obj) for layer in hlg.layers.values())


def _layer_graphs(obj: Any) -> list:
    """The HighLevelGraphs inside ``obj`` as it was built (before dask's
    optimizations)."""
    from dask._expr import Expr, HLGExpr

    if _is_plain_graph(obj):
        return [obj]
    expr = obj if isinstance(obj, Expr) else getattr(obj, "expr", None)
    if isinstance(expr, Expr):
        # Only HLGExpr nodes (arrays, bags, delayed) hold layers: asking any
        # other expression for a missing attribute may compute its metadata.
        return [node.hlg for node in expr.walk() if isinstance(node, HLGExpr)]
    getter = getattr(obj, "__dask_graph__", None)
    if getter is not None and not isinstance(obj, Mapping):
        hlg = getter()
        if hasattr(hlg, "layers"):
            return [hlg]
    return []


def node_specs(graph: dict, held: set) -> tuple[dict, dict]:
    """Run specs and dependencies for every node of ``graph`` except keys
    in ``held`` (already on the cluster: futures this client holds)."""
    from dask._task_spec import Alias

    tasks: dict = {}
    dependencies: dict = {}
    for key, node in graph.items():
        if key in held:
            continue
        deps = set(node.dependencies)
        if isinstance(node, Alias) and node.target == key:
            continue  # a future referring to itself: nothing to run
        deps.discard(key)
        tasks[key] = make_spec(NODE, None, node)
        dependencies[key] = list(deps)
    return tasks, dependencies


def graph_priorities(graph: dict) -> dict:
    """Dask's static ordering: a wide reduction runs depth-first and frees
    its inputs early.  Lower numbers run first."""
    from dask.order import order

    try:
        return {k: v.priority if hasattr(v, "priority") else v for k, v in order(graph).items()}
    except Exception:  # an unusual graph: fall back to submission order
        return {k: i for i, k in enumerate(graph)}


_SHUFFLE_SETTINGS = ("dataframe.shuffle.method", "array.rechunk.method")


def use_task_based_shuffles() -> None:
    """Make dask use task-based shuffles and rechunks where the user chose
    no method: the peer-to-peer method dask would pick for a distributed
    client does not exist here (``distributed.shuffle`` says so when it is
    asked for).  A method the user set is left alone."""
    if "dask" not in sys.modules:
        try:
            import dask  # noqa: F401
        except ImportError:
            return
    import dask

    unset = {key: "tasks" for key in _SHUFFLE_SETTINGS if dask.config.get(key, None) is None}
    if unset:
        dask.config.set(unset)


#: The ``dask.annotate`` names the scheduler honours; any other raises.
KNOWN_ANNOTATIONS = ("retries", "priority", "workers", "allow_other_workers", "resources")


def annotations_of(obj: Any, graph: dict | None = None) -> dict:
    """``{annotation: {key: value}}`` set with ``dask.annotate`` on a
    collection, expression or HighLevelGraph, for the tasks of its
    materialized graph (empty when there are none).

    Annotations are read from the graph's layers *before* optimization
    (dask's low-level fusion keeps none) and expanded per key; a task that
    fusion made of several annotated tasks gets their annotations combined
    (``resolve_annotations``).  ``graph`` is the materialized graph of
    ``obj``; without it an expression or collection is materialized again
    (only when it has annotations; cheap for array, bag and delayed graphs,
    whose optimized graph dask caches).  Unknown names or malformed values
    raise here, before anything is submitted.
    """
    raw = _raw_annotations(obj)
    if not raw:
        return {}
    check_annotations(raw)
    if graph is None and not _is_plain_graph(obj):
        graph = materialize(obj)
    if graph is not None:
        raw = resolve_annotations(raw, graph)
    return raw


def _is_plain_graph(obj: Any) -> bool:
    return hasattr(obj, "layers") and not hasattr(obj, "__dask_graph__")


def _raw_annotations(obj: Any) -> dict:
    """Per-key annotations of ``obj``: from its layers as built, then from
    the layers dask's optimization made of them (blockwise fusion gives the
    fused layer the annotations of its parts)."""
    from dask._expr import Expr

    out: dict = {}
    for hlg in _layer_graphs(obj):
        _add_layer_annotations(out, hlg)
    expr = obj if isinstance(obj, Expr) else getattr(obj, "expr", None)
    if out and isinstance(expr, Expr):
        for node in expr.walk():
            if type(node).__dask_annotations__ is not Expr.__dask_annotations__:
                merge_annotations(out, node.__dask_annotations__())
    return out


def _add_layer_annotations(out: dict, hlg: Any) -> None:
    for layer in hlg.layers.values():
        annotations = getattr(layer, "annotations", None)
        if not annotations:
            continue
        keys = layer.get_output_keys() if hasattr(layer, "get_output_keys") else layer.keys()
        for name, value in annotations.items():
            per_key = out.setdefault(name, {})
            if callable(value):
                per_key.update((k, value(k)) for k in keys)
            else:
                per_key.update(dict.fromkeys(keys, value))


def check_annotations(annotations: dict) -> None:
    """Raise for an annotation the scheduler cannot honour or a malformed
    value; it is never dropped silently.

    >>> check_annotations({"retries": {"x": 2}})
    >>> check_annotations({"colour": {"x": "red"}})
    Traceback (most recent call last):
    ...
    ValueError: dask.annotate(colour=...) cannot be honoured here: ...
    """
    for name, per_key in annotations.items():
        if name not in KNOWN_ANNOTATIONS:
            raise ValueError(
                f"dask.annotate({name}=...) cannot be honoured here: the scheduler understands only "
                f"{', '.join(KNOWN_ANNOTATIONS)}. Remove it (it is set on {len(per_key)} tasks, "
                f"e.g. {next(iter(per_key), None)!r})")
        check = _CHECKS[name]
        for key, value in per_key.items():
            problem = check(value)
            if problem:
                raise TypeError(f"dask.annotate({name}={value!r}) on task {key!r}: {problem}")


def _check_retries(v) -> str | None:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        return "retries must be a whole number >= 0"
    return None


def _check_priority(v) -> str | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return "priority must be a number (higher runs first)"
    return None


def _check_workers(v) -> str | None:
    items = [v] if isinstance(v, str) else v
    if not isinstance(items, (list, tuple, set, frozenset)) or not all(
            isinstance(w, (str, int, tuple)) for w in items):
        return "workers must be an address or name, or a list of them"
    return None


def _check_allow_other_workers(v) -> str | None:
    return None if isinstance(v, bool) else "allow_other_workers must be True or False"


def _check_resources(v) -> str | None:
    if not isinstance(v, Mapping) or not all(
            isinstance(r, str) and isinstance(n, (int, float)) and not isinstance(n, bool) and n >= 0
            for r, n in v.items()):
        return "resources must be a dict of resource name -> amount, e.g. {'GPU': 1}"
    return None


_CHECKS = {
    "retries": _check_retries,
    "priority": _check_priority,
    "workers": _check_workers,
    "allow_other_workers": _check_allow_other_workers,
    "resources": _check_resources,
}


def resolve_annotations(annotations: dict, graph: dict) -> dict:
    """Annotations for the keys of ``graph``: a task carries those of its
    own key and of every task fused into it (``Task.fuse``), combined.

    >>> resolve_annotations({"retries": {"a": 1, "b": 3}}, {"a": None, "c": None})
    {'retries': {'a': 1}}
    """
    out: dict = {name: {} for name in annotations}
    for key, node in graph.items():
        inner = _fused_keys(node)
        for name, per_key in annotations.items():
            if inner is None:
                if key in per_key:
                    out[name][key] = per_key[key]
                continue
            values = [per_key[k] for k in (key, *inner) if k in per_key]
            if values:
                out[name][key] = _combine(name, values, key)
    return {name: per_key for name, per_key in out.items() if per_key}


def _fused_keys(node: Any) -> list | None:
    """Keys of the tasks fused into ``node`` (recursively); None if it is
    not a fused task."""
    from dask._task_spec import Task, _execute_subgraph

    if not isinstance(node, Task) or node.func is not _execute_subgraph or not node.args:
        return None
    inner = node.args[0]
    if not isinstance(inner, Mapping):
        return None
    keys = []
    for k, sub in inner.items():
        keys.append(k)
        keys.extend(_fused_keys(sub) or ())
    return keys


def _combine(name: str, values: list, key: Any) -> Any:
    """One value for a task fused from tasks annotated ``values``."""
    first = values[0]
    if all(v == first for v in values[1:]):
        return first
    if name in ("retries", "priority"):
        return max(values)
    if name == "allow_other_workers":
        return all(values)
    if name == "resources":
        merged: dict = {}
        for v in values:
            for r, n in v.items():
                merged[r] = max(n, merged.get(r, n))
        return merged
    # workers: the fused task must run where every part may run
    allowed = None
    for v in values:
        ws = {v} if isinstance(v, str) else set(v)
        allowed = ws if allowed is None else allowed & ws
    if not allowed:
        raise ValueError(f"task {key!r} was fused from tasks annotated with disjoint workers {values!r}; "
                         "annotate them alike or compute with optimize_graph=False")
    return sorted(allowed, key=str)


def merge_annotations(into: dict, more: dict) -> None:
    """Add ``more`` (``{annotation: {key: value}}``) into ``into``."""
    for name, per_key in more.items():
        into.setdefault(name, {}).update(per_key)


def apply_annotations(msg: dict, annotations: dict) -> None:
    """Put per-key annotations into an ``update-graph`` message (only for
    keys that message submits); raises for one it cannot honour."""
    check_annotations(annotations)
    tasks = msg["tasks"]
    for name, per_key in annotations.items():
        values = {k: v for k, v in per_key.items() if k in tasks}
        if not values:
            continue
        if name == "retries":
            msg.setdefault("retries", {}).update(values)
        elif name == "resources":
            msg.setdefault("resources", {}).update(values)
        elif name == "priority":
            base = msg.get("user_priority", 0)
            if isinstance(base, dict):
                base = {**base, **values}
                msg["user_priority"] = base
            else:
                msg["user_priority"] = {k: values.get(k, base) for k in tasks}
        elif name == "workers":
            msg.setdefault("restrictions", {}).update(
                {k: [v] if isinstance(v, str) else list(v) for k, v in values.items()})
        elif name == "allow_other_workers":
            loose = set(msg.get("loose_restrictions", ()))
            loose.update(k for k, v in values.items() if v)
            loose.difference_update(k for k, v in values.items() if not v)
            msg["loose_restrictions"] = list(loose)


def run_node(node, data: dict) -> Any:
    """Execute one task-spec node on a worker."""
    return node(data)
