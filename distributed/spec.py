"""How a task travels: the run spec and references to other keys.

A run spec is a dict ``{'func': bytes | None, 'args': (args, kwargs)}``:
``func`` is the function pickled by ``dumps_function`` (shared across tasks
that call the same function), ``None`` for a literal value.  Inside the
arguments, ``TaskRef(key)`` stands for the value of another key and
``NestedCall(func, args)`` for a call evaluated on the worker (tasks nested
inside tasks in dask graphs).  The client builds specs; the scheduler never
opens them; the worker replaces references with data and calls.
"""
from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import Any

__all__ = ["TaskRef", "NestedCall", "substitute", "convert_graph_value", "run_spec_call"]


class TaskRef:
    """A reference to the value of ``key``, replaced on the worker."""

    __slots__ = ("key",)

    def __init__(self, key: Hashable):
        self.key = key

    def __reduce__(self):
        return TaskRef, (self.key,)

    def __repr__(self) -> str:
        return f"TaskRef({self.key!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, TaskRef) and other.key == self.key

    def __hash__(self) -> int:
        return hash(("TaskRef", self.key))


class NestedCall:
    """``func(*args)`` evaluated on the worker when the task runs."""

    __slots__ = ("func", "args")

    def __init__(self, func: Callable, args: tuple):
        self.func = func
        self.args = args

    def __reduce__(self):
        return NestedCall, (self.func, self.args)

    def __repr__(self) -> str:
        return f"NestedCall({self.func!r}, {self.args!r})"


def substitute(obj: Any, data: Mapping) -> Any:
    """Replace references in ``obj`` with values from ``data`` and evaluate
    nested calls.  Containers are rebuilt only when something changes.

    >>> substitute([TaskRef("x"), 1, {"a": TaskRef("x")}], {"x": 10})
    [10, 1, {'a': 10}]
    >>> substitute(NestedCall(sum, ([TaskRef("x"), 2],)), {"x": 1})
    3
    """
    typ = type(obj)
    if typ is TaskRef:
        return data[obj.key]
    if typ is NestedCall:
        return obj.func(*substitute(obj.args, data))
    if typ is tuple or typ is list or typ is set or typ is frozenset:
        return typ(substitute(x, data) for x in obj)
    if typ is dict:
        return {k: substitute(v, data) for k, v in obj.items()}
    return obj


def convert_graph_value(value: Any, keys: Mapping | set, deps: set) -> Any:
    """Turn a value of a dask-style graph into our argument form.

    Task tuples (callable first) nested inside become ``NestedCall``; any
    hashable that is a key of the graph becomes a ``TaskRef`` and is added
    to ``deps``.

    >>> deps = set()
    >>> convert_graph_value((sum, ["x", 1]), {"x"}, deps), deps
    (NestedCall(<built-in function sum>, ([TaskRef('x'), 1],)), {'x'})
    """
    typ = type(value)
    if typ is tuple:
        if value and callable(value[0]):
            return NestedCall(value[0], tuple(convert_graph_value(a, keys, deps) for a in value[1:]))
        try:
            if value in keys:
                deps.add(value)
                return TaskRef(value)
        except TypeError:
            pass
        return tuple(convert_graph_value(a, keys, deps) for a in value)
    if typ is list:
        return [convert_graph_value(a, keys, deps) for a in value]
    if typ is dict:
        return {k: convert_graph_value(v, keys, deps) for k, v in value.items()}
    try:
        if value in keys:
            deps.add(value)
            return TaskRef(value)
    except TypeError:
        pass
    return value


def run_spec_call(func: Callable | None, args: tuple, kwargs: dict, data: Mapping,
                  walk: bool = False) -> Any:
    """Run a decoded spec with dependency values from ``data``.

    Arguments are walked only when there are dependencies or ``walk`` says
    the spec holds nested calls, so plain ``submit`` calls cost nothing extra.

    >>> run_spec_call(None, ([TaskRef("x")],), {}, {"x": 1})
    [1]
    """
    if data or walk:
        args = substitute(args, data)
        if kwargs:
            kwargs = substitute(kwargs, data)
    if func is None:
        return args[0]
    return func(*args, **kwargs)
