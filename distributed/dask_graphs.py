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
    "node_specs",
    "graph_priorities",
    "use_task_based_shuffles",
    "annotations_of",
    "merge_annotations",
    "apply_annotations",
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
    HighLevelGraph or a mapping mixing nodes and classic tuples."""
    from dask._task_spec import convert_legacy_graph

    if hasattr(dsk, "__dask_graph__") and not isinstance(dsk, Mapping):
        dsk = dsk.__dask_graph__()
    return convert_legacy_graph(dict(dsk))


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


def use_task_based_shuffles() -> None:
    """Make dask use task-based shuffles and rechunks: the peer-to-peer
    extension dask would pick for a distributed client does not exist here."""
    if "dask" not in sys.modules:
        try:
            import dask  # noqa: F401
        except ImportError:
            return
    import dask

    dask.config.set({"dataframe.shuffle.method": "tasks", "array.rechunk.method": "tasks"})


def annotations_of(obj: Any) -> dict:
    """``{annotation: {key: value}}`` set with ``dask.annotate`` on an
    expression, collection or HighLevelGraph (empty when there are none)."""
    getter = getattr(obj, "__dask_annotations__", None)
    if getter is None:
        expr = getattr(obj, "expr", None)
        getter = getattr(expr, "__dask_annotations__", None)
    if getter is None and hasattr(obj, "__dask_graph__"):
        from dask.base import collections_to_expr

        try:
            getter = collections_to_expr([obj], False).__dask_annotations__
        except Exception:
            return {}
    try:
        return dict(getter()) if getter is not None else {}
    except Exception:
        return {}


def merge_annotations(into: dict, more: dict) -> None:
    for name, per_key in more.items():
        into.setdefault(name, {}).update(per_key)


def apply_annotations(msg: dict, annotations: dict) -> None:
    """Put per-key annotations into an ``update-graph`` message (only for
    keys that message submits)."""
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
            msg["user_priority"] = {k: values.get(k, base) for k in tasks}
        elif name == "workers":
            msg.setdefault("restrictions", {}).update(
                {k: [v] if isinstance(v, str) else list(v) for k, v in values.items()})
        elif name == "allow_other_workers":
            loose = set(msg.get("loose_restrictions", ()))
            loose.update(k for k, v in values.items() if v)
            msg["loose_restrictions"] = list(loose)


def run_node(node, data: dict) -> Any:
    """Execute one task-spec node on a worker."""
    return node(data)
