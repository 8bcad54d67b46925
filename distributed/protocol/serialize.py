"""Turning Python objects into frames and back.

Objects travel as pickle protocol 5.  Buffers that pickle hands out of band
(numpy arrays, bytearray, PickleBuffer) become frames of their own, and a
top-level ``bytes``/``bytearray``/``memoryview`` value is sent as a raw frame,
so large payloads are never copied into one big bytes object.  Plain pickle
is tried first because it is fast; cloudpickle takes over when plain pickle
fails or when the result refers to ``__main__`` (lambdas, functions defined
in a script or notebook), which another process could not import.

``Serialize(obj)`` marks a value inside a control message that must be
pickled; ``Serialized`` is the already-encoded form.  A server that only
forwards payloads (the scheduler) keeps them as ``Serialized`` and never
unpickles user objects.
"""

from __future__ import annotations

import pickle
from collections import OrderedDict
from typing import Any

import cloudpickle

__all__ = [
    "Serialize",
    "Serialized",
    "serialize",
    "deserialize",
    "to_serialized",
    "pickle_dumps",
    "pickle_loads",
    "dumps_function",
    "loads_function",
]

_RAW_KINDS = {"bytes": bytes, "bytearray": bytearray, "memoryview": memoryview}


class Serialize:
    """Mark ``data`` to be pickled when the enclosing message is encoded.

    >>> msg = {"op": "update-data", "data": {"x": Serialize([1, 2, 3])}}
    """

    __slots__ = ("data",)

    def __init__(self, data: Any):
        self.data = data

    def __repr__(self) -> str:
        return f"<Serialize: {type(self.data).__name__}>"

    def __eq__(self, other) -> bool:
        return isinstance(other, Serialize) and other.data == self.data

    __hash__ = None  # type: ignore[assignment]


class Serialized:
    """An object already turned into frames; opaque until deserialized.

    ``kind`` is ``'pickle'`` (frames[0] is the pickle stream and the other
    frames its out-of-band buffers) or one of ``'bytes'``, ``'bytearray'``,
    ``'memoryview'`` (a single raw frame).
    """

    __slots__ = ("kind", "frames")

    def __init__(self, kind: str, frames: list):
        self.kind = kind
        self.frames = frames

    @property
    def nbytes(self) -> int:
        return sum(memoryview(f).nbytes for f in self.frames)

    def deserialize(self) -> Any:
        return deserialize(self.kind, self.frames)

    @property
    def header(self) -> dict:
        """The header of dask.distributed's ``(header, frames)`` pair."""
        return {"serializer": self.kind}

    def __iter__(self):
        # Code written for dask.distributed unpacks ``header, frames =
        # serialize(x)`` and hands both to ``deserialize``.
        return iter((self.header, self.frames))

    def __repr__(self) -> str:
        return f"<Serialized {self.kind}: {self.nbytes} bytes>"

    def __eq__(self, other) -> bool:
        return (
            isinstance(other, Serialized)
            and other.kind == self.kind
            and [bytes(f) for f in other.frames] == [bytes(f) for f in self.frames]
        )

    __hash__ = None  # type: ignore[assignment]


def serialize(obj: Any, serializers=None, on_error: str = "message", context=None) -> Serialized:
    """Frames for ``obj``; also unpacks as dask.distributed's ``(header,
    frames)`` pair, which ``deserialize`` takes back.

    Everything is pickled here (protocol 5, buffers out of band), so
    ``serializers`` must allow pickling (``"pickle"``, ``"dask"`` or
    ``"cloudpickle"``); with ``on_error="message"`` an object that cannot be
    pickled gives frames that raise its error when deserialized,
    ``on_error="raise"`` raises at once.

    >>> s = serialize(b"abc")
    >>> s.kind, deserialize(s.kind, s.frames)
    ('bytes', b'abc')
    >>> header, frames = serialize({"a": 1})
    >>> deserialize(header, frames)
    {'a': 1}
    """
    if serializers is not None and not {"pickle", "dask", "cloudpickle"} & set(serializers):
        raise TypeError(f"serializers={list(serializers)!r}: every value is pickled here, so the list must "
                        "include 'pickle' (or 'dask' / 'cloudpickle')")
    if on_error not in ("message", "raise"):
        raise ValueError(f"on_error must be 'message' or 'raise', not {on_error!r}")
    if context is not None:
        raise TypeError("serialize(context=...): no serializer here uses a context; leave it out")
    if on_error == "raise":
        return to_serialized(obj)
    try:
        return to_serialized(obj)
    except TypeError as e:
        return Serialized("error", [str(e).encode()])


def to_serialized(obj: Any) -> Serialized:
    """Frames for ``obj`` (what the protocol uses; ``serialize`` is the
    public form).  Raises ``TypeError`` naming the type when ``obj`` cannot
    be pickled.

    >>> to_serialized(b"abc").kind
    'bytes'
    """
    if isinstance(obj, Serialized):
        return obj
    kind = type(obj).__name__
    if kind in _RAW_KINDS and type(obj) is _RAW_KINDS[kind]:
        return Serialized(kind, [obj])
    return Serialized("pickle", pickle_dumps(obj))


def deserialize(kind: str | dict, frames: list, deserializers=None) -> Any:
    """The object that ``serialize`` turned into ``frames``; ``kind`` is the
    serializer's name or dask.distributed's header dict.

    >>> deserialize({"serializer": "bytes"}, [b"abc"])
    b'abc'
    """
    if isinstance(kind, dict):
        kind = kind.get("serializer")
    if deserializers is not None and kind == "pickle" and not {"pickle", "dask", "cloudpickle"} & set(deserializers):
        raise TypeError(f"deserializers={list(deserializers)!r} do not allow unpickling these frames")
    if kind == "pickle":
        return pickle_loads(frames[0], frames[1:])
    if kind == "bytes":
        frame = frames[0]
        return frame if type(frame) is bytes else bytes(frame)
    if kind == "bytearray":
        frame = frames[0]
        return frame if type(frame) is bytearray else bytearray(frame)
    if kind == "memoryview":
        return memoryview(frames[0])
    if kind == "error":
        raise TypeError(f"could not serialize the value: {bytes(frames[0]).decode(errors='replace')}")
    raise ValueError(f"unknown serialization kind {kind!r}")


def _astuple(s: Serialized) -> tuple:
    return s.kind, s.frames


def pickle_dumps(obj: Any) -> list:
    """Pickle ``obj`` into ``[stream, *buffers]`` with protocol 5.

    Raises ``TypeError`` naming the object's type when it cannot be pickled.

    >>> frames = pickle_dumps([1, 2])
    >>> pickle_loads(frames[0], frames[1:])
    [1, 2]
    """
    buffers: list = []
    try:
        stream = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
        if b"__main__" not in stream:
            return [stream, *(b.raw() for b in buffers)]
    except Exception:
        pass
    buffers = []
    try:
        stream = cloudpickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    except Exception as e:
        raise TypeError(
            f"Could not serialize object of type {type(obj).__name__}: {e}"
        ) from e
    return [stream, *(b.raw() for b in buffers)]


def pickle_loads(stream, buffers=()) -> Any:
    """Inverse of ``pickle_dumps``."""
    return pickle.loads(stream, buffers=buffers)


class _BoundedCache(OrderedDict):
    """A small least-recently-used cache."""

    def __init__(self, maxsize: int):
        super().__init__()
        self.maxsize = maxsize

    def put(self, key, value):
        self[key] = value
        if len(self) > self.maxsize:
            self.popitem(last=False)


_function_dumps_cache = _BoundedCache(1000)
_function_loads_cache = _BoundedCache(1000)


def dumps_function(func) -> bytes:
    """Pickle a function, remembering the result for functions seen before.

    Submitting the same function many times (``client.map``) then costs one
    pickling, even when cloudpickle is needed.

    >>> loads_function(dumps_function(len)) is len
    True
    """
    try:
        return _function_dumps_cache[func]
    except (KeyError, TypeError):
        pass
    frames = pickle_dumps(func)
    if len(frames) > 1:  # a function carrying out-of-band buffers: keep inline
        frames = [cloudpickle.dumps(func, protocol=4)]
    result = bytes(frames[0])
    try:
        _function_dumps_cache.put(func, result)
    except TypeError:  # unhashable callable
        pass
    return result


def loads_function(data: bytes):
    """Unpickle a function pickled by ``dumps_function``, with a cache."""
    data = bytes(data)
    try:
        return _function_loads_cache[data]
    except KeyError:
        func = pickle.loads(data)
        if len(data) < 100_000:
            _function_loads_cache.put(data, func)
        return func
