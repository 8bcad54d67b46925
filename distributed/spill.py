"""SpillBuffer: the worker's data mapping, which moves cold values to disk.

A worker holds every task result it may still be asked for.  When those
results outgrow memory, the least recently used ones are written to files in
the worker's local directory and read back on demand, so a worker under
memory pressure slows down instead of being killed.

Theory of operation.  Every key lives in exactly one of three places:

- ``_fast``: in memory, in a plain dict whose insertion order is the LRU order
  (a hit pops and reinserts the key, so the first key is the coldest);
- ``_slow``: on disk, key -> file path;
- ``_pinned``: in memory and out of the LRU, because pickling or writing it
  failed once; it is not retried until the key is overwritten.

``memory_bytes`` and ``spilled_bytes`` are sums of the sizes given at set
time and are kept exact by every operation, so they never require reading
or measuring values again.

Files hold a small header (kind, frame count, frame lengths) followed by the
frames: the pickle stream and its out-of-band protocol-5 buffers, or the
value itself for ``bytes``.  Frames are written from memoryviews and read back
with ``readinto`` into preallocated buffers, so large arrays are not copied
more than the disk requires.

Not thread-safe: the worker uses it only from its event loop thread.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import logging
import os
import struct
import time
import types
from collections.abc import Hashable, Iterator, Mapping, MutableMapping
from typing import Any

from distributed.protocol.serialize import pickle_dumps, pickle_loads
from distributed.utils import sizeof

__all__ = ["SpillBuffer", "SpillError"]

logger = logging.getLogger(__name__)

_HEADER = struct.Struct("<BQ")  # kind, number of frames; then one <Q length per frame
_PICKLE, _BYTES = 0, 1
_missing = object()


class SpillError(Exception):
    """A spilled value could not be read back; the message names the key and file."""


def _dump(value: Any) -> list:
    # bytes would be copied into the pickle stream; write them as they are
    if type(value) is bytes:
        kind, frames = _BYTES, [value]
    else:
        kind, frames = _PICKLE, pickle_dumps(value)
    lengths = [memoryview(f).nbytes for f in frames]
    header = _HEADER.pack(kind, len(frames)) + struct.pack(f"<{len(frames)}Q", *lengths)
    return [header, *frames]


def _write(path: str, frames: list) -> None:
    # BufferedWriter hands large memoryviews straight to the OS without copying
    with open(path, "wb") as f:
        for frame in frames:
            f.write(frame)


def _read_exact(f, nbytes: int) -> bytes:
    data = f.read(nbytes)
    if len(data) != nbytes:
        raise EOFError(f"file truncated: expected {nbytes} bytes, got {len(data)}")
    return data


def _read(path: str) -> Any:
    with open(path, "rb") as f:
        kind, nframes = _HEADER.unpack(_read_exact(f, _HEADER.size))
        lengths = struct.unpack(f"<{nframes}Q", _read_exact(f, 8 * nframes))
        if kind == _BYTES:
            return _read_exact(f, lengths[0])
        # bytearrays, not bytes: numpy arrays rebuilt on them stay writable
        frames = [bytearray(n) for n in lengths]
        for frame in frames:
            if f.readinto(frame) != len(frame):
                raise EOFError(f"file truncated: expected {len(frame)} bytes")
    return pickle_loads(frames[0], frames[1:])


class SpillBuffer(MutableMapping):
    """A mapping that keeps up to ``target`` bytes in memory and spills the rest.

    ``directory`` is created if needed and belongs to this buffer; ``close()``
    removes it.  ``target <= 0`` disables automatic spilling (only ``evict()``
    spills).  ``max_spill`` caps the bytes on disk; a value that would pass it
    stays in memory.  Values that cannot be pickled or written stay in memory
    too, with one warning.  Nothing is ever dropped.

    Not thread-safe: use from one thread (the worker's event loop).  Reading a
    key reorders ``fast``, so do not iterate ``fast`` while reading values;
    iterating the buffer itself is safe.

    >>> import tempfile
    >>> buf = SpillBuffer(tempfile.mkdtemp(), target=100)
    >>> buf["x"] = b"a" * 50              # sizeof 83
    >>> buf["y"] = b"b" * 50              # over target: "x" goes to disk
    >>> list(buf.fast), list(buf.slow)
    (['y'], ['x'])
    >>> buf["x"] == b"a" * 50             # read back; now "y" is the colder one
    True
    >>> list(buf.fast), list(buf.slow)
    (['x'], ['y'])
    >>> buf.close()
    """

    def __init__(self, directory: str, target: int, max_spill: int | None = None):
        self.directory = directory
        self.target = target
        self.max_spill = max_spill
        os.makedirs(directory, exist_ok=True)
        self._fast: dict[Hashable, Any] = {}
        self._pinned: dict[Hashable, Any] = {}
        self._slow: dict[Hashable, str] = {}
        self._nbytes: dict[Hashable, int] = {}  # every key, wherever it lives
        self._names = itertools.count()
        self.memory_bytes = 0
        self.spilled_bytes = 0
        self.stats: dict[str, float] = {
            "spill_count": 0,
            "unspill_count": 0,
            "spill_bytes": 0,
            "unspill_bytes": 0,
            "spill_seconds": 0.0,
            "unspill_seconds": 0.0,
        }
        self.fast: Mapping[Hashable, Any] = types.MappingProxyType(
            collections.ChainMap(self._fast, self._pinned)
        )
        """Read-only live view of the values in memory, key -> value."""
        self.slow: Mapping[Hashable, str] = types.MappingProxyType(self._slow)
        """Read-only live view of the values on disk, key -> file path."""
        self.unspillable = self._pinned.keys()
        """Keys kept in memory because pickling or writing them failed."""

    @property
    def spilled_count(self) -> int:
        return len(self._slow)

    def __setitem__(self, key: Hashable, value: Any) -> None:
        self.set(key, value, sizeof(value))

    def set(self, key: Hashable, value: Any, nbytes: int) -> None:
        """Store ``value`` whose size ``nbytes`` the caller already knows.

        >>> import tempfile
        >>> buf = SpillBuffer(tempfile.mkdtemp(), target=100)
        >>> buf.set("x", b"a" * 200, nbytes=233)    # bigger than target: to disk
        >>> buf.spilled_bytes, buf.memory_bytes
        (233, 0)
        >>> buf.close()
        """
        if key in self._nbytes:
            del self[key]
        self._nbytes[key] = nbytes
        self._fast[key] = value
        self.memory_bytes += nbytes
        if self.target > 0:
            if nbytes > self.target and self._fits(nbytes):
                self._spill(key)
            self._spill_to_target()

    def __getitem__(self, key: Hashable) -> Any:
        value = self._fast.pop(key, _missing)
        if value is not _missing:
            self._fast[key] = value
            return value
        value = self._pinned.get(key, _missing)
        if value is not _missing:
            return value
        return self._unspill(key)

    def __delitem__(self, key: Hashable) -> None:
        nbytes = self._nbytes.pop(key)
        if self._fast.pop(key, _missing) is not _missing or self._pinned.pop(key, _missing) is not _missing:
            self.memory_bytes -= nbytes
        else:
            path = self._slow.pop(key)
            self.spilled_bytes -= nbytes
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)

    def __contains__(self, key: object) -> bool:
        return key in self._nbytes

    def __len__(self) -> int:
        return len(self._nbytes)

    def __iter__(self) -> Iterator[Hashable]:
        return iter(self._nbytes)

    def evict(self) -> int:
        """Spill the least recently used value in memory and return its size.

        Return -1 if nothing could be spilled: nothing spillable is in memory,
        or the coldest value would pass ``max_spill``.  A value that fails to
        pickle or write is set aside (see ``unspillable``) and the next one is
        tried.

        >>> import tempfile
        >>> buf = SpillBuffer(tempfile.mkdtemp(), target=0)
        >>> buf.set("x", b"a", nbytes=10)
        >>> buf.evict(), buf.evict()
        (10, -1)
        >>> buf.close()
        """
        while self._fast:
            key = next(iter(self._fast))
            nbytes = self._nbytes[key]
            if not self._fits(nbytes):
                return -1
            if self._spill(key):
                return nbytes
        return -1

    def close(self) -> None:
        """Remove every spilled file and the directory; forget all keys.  Idempotent.

        >>> import os, tempfile
        >>> buf = SpillBuffer(tempfile.mkdtemp(), target=0)
        >>> buf.close(); buf.close()
        >>> os.path.exists(buf.directory)
        False
        """
        for path in self._slow.values():
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
        for d in (self._fast, self._pinned, self._slow, self._nbytes):
            d.clear()
        self.memory_bytes = self.spilled_bytes = 0
        try:
            os.rmdir(self.directory)
        except FileNotFoundError:
            pass
        except OSError as e:  # someone else put files there; they are not ours to delete
            logger.warning("Could not remove spill directory %s: %s", self.directory, e)

    def _fits(self, nbytes: int) -> bool:
        return self.max_spill is None or self.spilled_bytes + nbytes <= self.max_spill

    def _spill_to_target(self) -> None:
        while self.memory_bytes > self.target and self.evict() >= 0:
            pass

    def _spill(self, key: Hashable) -> bool:
        """Move ``key`` from ``_fast`` to disk; on failure pin it in memory."""
        start = time.perf_counter()
        value = self._fast[key]
        path = os.path.join(self.directory, str(next(self._names)))
        try:
            _write(path, _dump(value))
        except Exception as e:  # pickling can raise anything; writing raises OSError
            with contextlib.suppress(OSError):
                os.remove(path)
            self._pinned[key] = self._fast.pop(key)
            logger.warning("Could not spill %r to disk, keeping it in memory: %r", key, e)
            return False
        del self._fast[key]
        self._slow[key] = path
        nbytes = self._nbytes[key]
        self.memory_bytes -= nbytes
        self.spilled_bytes += nbytes
        self.stats["spill_count"] += 1
        self.stats["spill_bytes"] += nbytes
        self.stats["spill_seconds"] += time.perf_counter() - start
        return True

    def _unspill(self, key: Hashable) -> Any:
        path = self._slow[key]
        start = time.perf_counter()
        try:
            value = _read(path)
        except Exception as e:
            raise SpillError(f"Could not read spilled value of {key!r} from {path}: {e!r}") from e
        nbytes = self._nbytes[key]
        self.stats["unspill_count"] += 1
        self.stats["unspill_bytes"] += nbytes
        self.stats["unspill_seconds"] += time.perf_counter() - start
        if self.target > 0 and nbytes > self.target:
            return value  # it would only be written again: leave it on disk
        try:
            os.remove(path)
        except FileNotFoundError:
            pass
        except OSError:
            return value  # the file stays ours to remove; keep it on disk
        del self._slow[key]
        self.spilled_bytes -= nbytes
        self._fast[key] = value
        self.memory_bytes += nbytes
        if self.target > 0:
            self._spill_to_target()
        return value
