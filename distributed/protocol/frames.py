"""The frame layout of one message on the wire.

A message is a list of frames.  On the wire it is written as::

    <frame count: u64 little endian> <length of each frame: u64 ...> <frames>

The prelude (count and lengths) is small and built here; the frames
themselves are written as they are, without being joined, so large buffers
go to the socket uncopied.

The top bit of a length marks a frame that was a ``bytes`` object of at
least ``AS_BYTES_MIN`` bytes: the receiver reads it straight into a new
``bytes`` object, rather than into a buffer it would then copy from.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

__all__ = ["ProtocolError", "pack_frames_prelude", "unpack_frames", "MAX_FRAMES"]

#: A message with more frames than this is refused as malformed.
MAX_FRAMES = 1_000_000

_U64 = struct.Struct("<Q")
_AS_BYTES = 1 << 63
#: ``bytes`` frames from this size on are flagged to arrive as ``bytes``.
AS_BYTES_MIN = 2**16


class ProtocolError(ValueError):
    """Bytes from the network that do not form a valid message."""


def pack_frames_prelude(frames: Sequence) -> bytes:
    """The count-and-lengths prelude that precedes ``frames`` on the wire.

    >>> pack_frames_prelude([b"ab", b"c"])[:8]
    b'\\x02\\x00\\x00\\x00\\x00\\x00\\x00\\x00'
    """
    lengths = [_nbytes(f) | (_AS_BYTES if type(f) is bytes and len(f) >= AS_BYTES_MIN else 0)
               for f in frames]
    return struct.pack(f"<{len(lengths) + 1}Q", len(lengths), *lengths)


def parse_frame_count(header: bytes, max_frames: int = MAX_FRAMES) -> int:
    """Read the frame count from the first 8 bytes of a message."""
    (n,) = _U64.unpack(header)
    if n == 0 or n > max_frames:
        raise ProtocolError(f"malformed message: {n} frames announced")
    return n


def parse_frame_lengths(data: bytes, n: int, max_size: int) -> tuple[list[int], list[bool]]:
    """Read ``n`` frame lengths, and which frames are to arrive as
    ``bytes``; check the total against ``max_size`` bytes."""
    raw = struct.unpack(f"<{n}Q", data)
    lengths = [x & ~_AS_BYTES for x in raw]
    as_bytes = [bool(x & _AS_BYTES) for x in raw]
    total = sum(lengths)
    if total > max_size:
        raise ProtocolError(
            f"message of {total} bytes exceeds the maximum message size of "
            f"{max_size} bytes (setting distributed.comm.max-message-size)"
        )
    return lengths, as_bytes


def unpack_frames(data: bytes | memoryview, max_size: int = 2**62) -> list[memoryview]:
    """Split one whole message, prelude included, back into its frames.

    >>> from distributed.protocol.frames import pack_frames_prelude
    >>> frames = [b"ab", b"c"]
    >>> [bytes(f) for f in unpack_frames(pack_frames_prelude(frames) + b"abc")]
    [b'ab', b'c']
    """
    mv = memoryview(data)
    if len(mv) < 8:
        raise ProtocolError("truncated message: no frame count")
    n = parse_frame_count(mv[:8])
    end = 8 + 8 * n
    if len(mv) < end:
        raise ProtocolError("truncated message: frame lengths missing")
    lengths, as_bytes = parse_frame_lengths(mv[8:end], n, max_size)
    frames = []
    for length, whole in zip(lengths, as_bytes):
        if end + length > len(mv):
            raise ProtocolError("truncated message: frame shorter than announced")
        frame = mv[end : end + length]
        frames.append(bytes(frame) if whole else frame)
        end += length
    if end != len(mv):
        raise ProtocolError("malformed message: trailing bytes after last frame")
    return frames


def _nbytes(frame) -> int:
    if isinstance(frame, (bytes, bytearray)):
        return len(frame)
    return memoryview(frame).nbytes
