"""Receiving into ``bytes`` without copying.

A ``bytes`` value sent to another process must arrive as ``bytes`` (user
code calls ``.decode()`` on it, compares types...).  Reading it into a
buffer and then calling ``bytes(buffer)`` costs a second pass over memory:
for 100 MB about 70 ms on a small machine, as long as the socket read
itself.  ``new_bytes(n)`` instead makes a ``bytes`` object whose contents
are not yet written, plus a writable view of them, so the socket reads
straight into the object that is handed to the user.

Writing into a ``bytes`` object is only sound before anyone else sees it:
its hash is not computed yet and no other reference exists.  That is the
case here; the view is dropped once the read completes.  Other
interpreters (``SUPPORTED`` is False) read into a buffer and copy.
"""
from __future__ import annotations

import sys

__all__ = ["SUPPORTED", "new_bytes"]

SUPPORTED = sys.implementation.name == "cpython"

_from_string_and_size = None
#: Where the characters start inside a CPython bytes object.
_DATA_OFFSET = sys.getsizeof(b"") - 1


def _cpython_bytes(n: int):
    global _from_string_and_size
    import ctypes

    if _from_string_and_size is None:
        func = ctypes.pythonapi.PyBytes_FromStringAndSize
        func.restype = ctypes.py_object
        func.argtypes = [ctypes.c_void_p, ctypes.c_ssize_t]
        _from_string_and_size = func
    obj = _from_string_and_size(None, n)  # NULL: allocated, not initialised
    view = memoryview((ctypes.c_char * n).from_address(id(obj) + _DATA_OFFSET)).cast("B")
    return obj, view


def new_bytes(n: int) -> tuple[bytes, memoryview]:
    """A new ``bytes`` object of length ``n`` and a writable view of its
    contents, to be filled completely before the object is used.

    >>> obj, view = new_bytes(3)
    >>> view[:] = b"abc"
    >>> del view
    >>> obj
    b'abc'
    """
    if n <= 0:
        return b"", memoryview(bytearray(0))
    if not SUPPORTED:
        raise NotImplementedError("new_bytes needs CPython")
    return _cpython_bytes(n)
