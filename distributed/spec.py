"""How a task travels: the run spec and references to other keys.

A run spec is a tuple ``(how, func, payload)``, built by ``make_spec``:

* ``how`` is ``CALL`` (call ``func(*args, **kwargs)``), ``WALK`` (the same
  after replacing references inside the arguments) or ``NODE`` (``payload``
  is a dask task-spec node, called with the values of its dependencies);
* ``func`` is the function pickled by ``dumps_function`` as ``SharedBytes``
  (``pickled_function``), so that a message carries it once however many of
  its tasks call it, or ``None`` (a literal: the value is the first
  argument, or a ``NODE``);
* ``payload`` is ``(args, kwargs)`` (or the node) pickled: a ``bytes``
  object when that is one small pickle, which is nearly always, else a
  ``Serialized`` whose frames travel outside the message.

A tuple of plain bytes is the cheapest form to encode, decode and hold: the
scheduler keeps every spec of a graph until its task is done.  Inside the
arguments, ``TaskRef(key)`` stands for the value of another key and
``NestedCall(func, args)`` for a call evaluated on the worker (tasks nested
inside tasks in dask graphs).  The client builds specs; the scheduler never
opens them; the worker replaces references with data and calls.
"""
from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import Any

from distributed.protocol.message import INLINE_LIMIT, SharedBytes
from distributed.protocol.serialize import (
    Serialized,
    dumps_function,
    loads_function,
    pickle_loads,
    to_serialized,
)

__all__ = ["TaskRef", "NestedCall", "CALL", "WALK", "NODE", "make_spec", "pickled_function", "open_spec",
           "spec_frames", "substitute", "convert_graph_value", "run_spec_call"]

#: What a run spec's first element says to do with it (see above).
CALL, WALK, NODE = 0, 1, 2


def pickled_function(func: Callable) -> SharedBytes:
    """``func`` pickled for a run spec (cached: see ``dumps_function``)."""
    return SharedBytes(dumps_function(func))


def make_spec(how: int, func: SharedBytes | None, obj: Any) -> tuple:
    """A run spec for ``obj`` (``(args, kwargs)``, or a node for ``NODE``).

    >>> open_spec(make_spec(CALL, pickled_function(len), (("abc",), {})))
    (0, <built-in function len>, (('abc',), {}))
    """
    payload = to_serialized(obj)
    frames = payload.frames
    if payload.kind == "pickle" and len(frames) == 1 and len(frames[0]) < INLINE_LIMIT:
        return (how, func, bytes(frames[0]))
    return (how, func, payload)


def open_spec(spec: Any) -> tuple:
    """``(how, function, obj)`` of a run spec: the function unpickled (or
    ``None``) and the payload's object.  Raises ``TypeError`` for anything
    that is not a run spec."""
    if type(spec) is not tuple or len(spec) != 3 or spec[0] not in (CALL, WALK, NODE):
        raise TypeError(f"malformed task specification: {_describe(spec)}")
    how, fbytes, payload = spec
    if fbytes is None:
        func = None
    elif type(fbytes) is SharedBytes:
        func = loads_function(fbytes.data)
    else:
        raise TypeError(f"malformed task specification: function of type {type(fbytes).__name__}")
    if type(payload) is bytes:
        obj = pickle_loads(payload)
    elif isinstance(payload, Serialized):
        obj = payload.deserialize()
    else:
        raise TypeError(f"malformed task specification: payload of type {type(payload).__name__}")
    return how, func, obj


def spec_frames(spec: tuple) -> list:
    """The bytes that identify a run spec (for naming its key by content)."""
    _, fbytes, payload = spec
    frames = [b"" if fbytes is None else fbytes.data]
    frames.extend([payload] if type(payload) is bytes else payload.frames)
    return frames


def _describe(spec: Any) -> str:
    if type(spec) is tuple:
        return f"a tuple of {len(spec)} starting with {spec[:1]!r}"[:200]
    return type(spec).__name__


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
