"""Fresh memory to receive into: ``bytes`` without copying, and buffers
that are quick to fill.

Huge pages
----------
Filling newly allocated memory costs a page fault per 4 KiB page; for a
100 MB message on a small VM that takes longer than reading the socket
(about 1.4-2.2 GB/s, against 6.5 GB/s with 2 MiB pages).  So buffers of
``HUGE_PAGE_MIN`` bytes or more are private anonymous memory marked
``MADV_HUGEPAGE``, which Linux backs with transparent huge pages when they
are enabled in "madvise" mode (a common default).  Elsewhere the advice is
skipped and nothing else changes.

Such a buffer is also touched once per 2 MiB before it is handed out, so
its pages exist before the socket fills it.  Faulting them in from inside
``recv`` (while the kernel holds the socket) made loopback transfers stall
for 100-250 ms now and then on a 2-core VM: TCP saw the receiver fall
behind, reordered and retransmitted.  Touched first, 100 MB arrives in
30-50 ms every time, and the touching costs a few milliseconds.

Bytes
-----

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

import mmap
import sys

__all__ = ["SUPPORTED", "new_bytes", "new_buffer", "HUGE_PAGE_MIN"]

SUPPORTED = sys.implementation.name == "cpython"

#: Buffers at least this large get huge pages (see above).
HUGE_PAGE_MIN = 4 << 20
_HUGE_PAGE = 2 << 20
_MADV_HUGEPAGE = getattr(mmap, "MADV_HUGEPAGE", None)
_madvise = None  # libc's madvise, loaded on first use


def new_buffer(n: int, touch: bool = True) -> memoryview:
    """A writable buffer of ``n`` bytes, not zero-filled first.
    ``touch=False`` skips touching its huge pages (see above): for a
    buffer the kernel fills in one call (``process_vm_readv``), which
    faults them in as it goes at no extra cost.

    ``bytearray(n)`` writes every byte, which for a 100 MB message costs as
    much as receiving it; an anonymous mmap gets its pages from the kernel
    as the socket fills them (huge pages where offered).

    >>> len(new_buffer(10))
    10
    """
    if n < HUGE_PAGE_MIN:
        return memoryview(bytearray(n))
    if not hasattr(mmap, "MAP_PRIVATE"):  # Windows: no flags, no huge pages
        return memoryview(mmap.mmap(-1, n))
    m = mmap.mmap(-1, n, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if _MADV_HUGEPAGE is not None:
        try:
            m.madvise(_MADV_HUGEPAGE)
        except OSError:  # kernel without transparent huge pages
            pass
    view = memoryview(m)
    if touch:
        _touch_huge_pages(view)
    return view


def _touch_huge_pages(view: memoryview) -> None:
    """Write a zero every 2 MiB of fresh memory (see "Huge pages" above)."""
    for i in range(0, len(view), _HUGE_PAGE):
        view[i] = 0
    view[-1] = 0


def _advise_huge_pages(address: int, length: int) -> None:
    """Ask for huge pages on the whole 2 MiB pages inside a malloc'd range
    (private anonymous memory, like an mmap)."""
    global _madvise
    if _MADV_HUGEPAGE is None or not sys.platform.startswith("linux"):
        return
    if _madvise is None:
        import ctypes

        func = ctypes.CDLL(None, use_errno=True).madvise
        func.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        func.restype = ctypes.c_int
        _madvise = func
    start = -(-address // _HUGE_PAGE) * _HUGE_PAGE
    end = (address + length) // _HUGE_PAGE * _HUGE_PAGE
    if end > start:
        _madvise(start, end - start, _MADV_HUGEPAGE)  # advice only: failure is harmless

_from_string_and_size = None
#: Where the characters start inside a CPython bytes object.
_DATA_OFFSET = sys.getsizeof(b"") - 1


def _cpython_bytes(n: int, touch: bool = True):
    global _from_string_and_size
    import ctypes

    if _from_string_and_size is None:
        func = ctypes.pythonapi.PyBytes_FromStringAndSize
        func.restype = ctypes.py_object
        func.argtypes = [ctypes.c_void_p, ctypes.c_ssize_t]
        _from_string_and_size = func
    obj = _from_string_and_size(None, n)  # NULL: allocated, not initialised
    address = id(obj) + _DATA_OFFSET
    view = memoryview((ctypes.c_char * n).from_address(address)).cast("B")
    if n >= HUGE_PAGE_MIN:
        _advise_huge_pages(address, n)
        if touch:
            _touch_huge_pages(view)
    return obj, view


def new_bytes(n: int, touch: bool = True) -> tuple[bytes, memoryview]:
    """A new ``bytes`` object of length ``n`` and a writable view of its
    contents, to be filled completely before the object is used
    (``touch`` as for ``new_buffer``).

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
    return _cpython_bytes(n, touch)
