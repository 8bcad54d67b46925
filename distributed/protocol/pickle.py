"""Pickle to and from one ``bytes`` object, as ``distributed.protocol.pickle``
always did: plain pickle where it works, cloudpickle where it does not.

The messages themselves use ``serialize.pickle_dumps`` (out-of-band buffers
as separate frames); these two are for callers that want a single
bytestring, such as plugins and dask's own code (``dumps(obj)``), and may
collect buffers themselves with ``buffer_callback``.  Pure functions.

>>> loads(dumps({"a": 1}))
{'a': 1}
"""
from __future__ import annotations

import pickle
from collections.abc import Callable, Iterable
from typing import Any

import cloudpickle

__all__ = ["dumps", "loads", "HIGHEST_PROTOCOL"]

HIGHEST_PROTOCOL = pickle.HIGHEST_PROTOCOL


def dumps(x: Any, *, buffer_callback: Callable | None = None, protocol: int = HIGHEST_PROTOCOL) -> bytes:
    """Pickle ``x`` into bytes.

    Plain pickle is tried first; cloudpickle takes over when that fails or
    when the result refers to ``__main__`` (which another process cannot
    import).  With ``buffer_callback`` (protocol 5), out-of-band buffers go
    to the callback; it is called only for the pickle that is returned.

    >>> dumps(lambda: 1)[:1] == b"\\x80"
    True
    """
    buffers: list = []
    collect = buffers.append if buffer_callback is not None else None
    try:
        result = pickle.dumps(x, protocol=protocol, buffer_callback=collect)
        if b"__main__" in result:  # a by-reference pickle of something in a script
            raise pickle.PicklingError("refers to __main__")
    except Exception:
        buffers.clear()
        try:
            result = cloudpickle.dumps(x, protocol=protocol, buffer_callback=collect)
        except Exception as e:
            raise pickle.PicklingError(f"Could not pickle object of type {type(x).__name__}: {e}") from e
    if buffer_callback is not None:
        for buffer in buffers:
            buffer_callback(buffer)
    return result


def loads(x: bytes | bytearray | memoryview, *, buffers: Iterable = ()) -> Any:
    """Unpickle bytes made by ``dumps`` (its out-of-band ``buffers`` in order).

    >>> frames = []
    >>> data = dumps(pickle.PickleBuffer(bytearray(b"ab")), protocol=5, buffer_callback=frames.append)
    >>> len(frames), bytes(loads(data, buffers=frames))
    (1, b'ab')
    """
    return pickle.loads(x, buffers=buffers)
