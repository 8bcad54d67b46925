"""Nested structures of futures and the shape of raw graphs.

Pure helpers for the client: find Futures anywhere in arguments, put
results back in the shape they were asked for, flatten nested key lists,
and order a raw graph depth-first.
"""
from __future__ import annotations

from collections.abc import Iterator

from distributed.futures import Future
from distributed.spec import TaskRef

__all__ = ["replace_futures", "flatten_keys", "pack_like", "substitute_results", "graph_order"]


def replace_futures(obj, deps: dict, client):
    """Replace Futures anywhere in ``obj`` with ``TaskRef``; collect their keys."""
    typ = type(obj)
    if typ is Future or isinstance(obj, Future):
        if obj.client is not client:
            raise ValueError(f"{obj!r} belongs to another client")
        deps[obj.key] = obj
        return TaskRef(obj.key)
    if typ is tuple or typ is list or typ is set or typ is frozenset:
        if not obj:
            return obj
        new = [replace_futures(x, deps, client) for x in obj]
        if all(a is b for a, b in zip(new, obj)):
            return obj
        return typ(new)
    if typ is dict:
        changed = False
        out = {}
        for k, v in obj.items():
            nv = replace_futures(v, deps, client)
            changed = changed or nv is not v
            out[k] = nv
        return out if changed else obj
    return obj


def flatten_keys(keys) -> Iterator:
    if isinstance(keys, list):
        for k in keys:
            yield from flatten_keys(k)
    else:
        yield keys


def pack_like(keys, futures: dict):
    if isinstance(keys, list):
        return [pack_like(k, futures) for k in keys]
    return futures[keys]


def substitute_results(obj, data: dict, bad: set):
    typ = type(obj)
    if isinstance(obj, Future):
        return data[obj.key]
    if typ in (list, tuple, set, frozenset):
        out = [substitute_results(x, data, bad) for x in obj
               if not (isinstance(x, Future) and x.key in bad)]
        return typ(out)
    if typ is dict:
        return {k: substitute_results(v, data, bad) for k, v in obj.items()
                if not (isinstance(v, Future) and v.key in bad)}
    return obj


def graph_order(dependencies: dict, outputs: list) -> dict:
    """A depth-first order of the graph from its outputs: each subtree is
    finished before the next begins, so intermediate results are freed early.
    Lower numbers run first."""
    order: dict = {}
    counter = 0
    visited: set = set()
    roots = [k for k in outputs if k in dependencies]
    stack: list = [(k, False) for k in reversed(roots)]
    while stack:
        key, expanded = stack.pop()
        if expanded:
            order[key] = counter
            counter += 1
            continue
        if key in visited:
            continue
        visited.add(key)
        stack.append((key, True))
        deps = dependencies.get(key, ())
        for d in sorted((d for d in deps if d in dependencies and d not in visited),
                        key=_sort_key, reverse=True):
            stack.append((d, False))
    for k in dependencies:
        if k not in order:
            order[k] = counter
            counter += 1
    return order


def _sort_key(k):
    return (type(k).__name__, str(k))
