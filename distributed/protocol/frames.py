"""The frame layout of one message on the wire.

A message is a list of frames.  On the wire it is written as::

    <frame count: u64 little endian> <length of each frame: u64 ...> <frames>

The prelude (count and lengths) is small and built here; the frames
themselves are written as they are, without being joined, so large buffers
go to the socket uncopied.

The top bit of a length marks a frame that was a ``bytes`` object of at
least ``AS_BYTES_MIN`` bytes: the receiver reads it straight into a new
``bytes`` object, rather than into a buffer it would then copy from.  The
next two bits belong to the same-host fast path (``distributed.comm.shm``):
``SHM_FRAME`` marks a small descriptor standing for a frame the receiver
copies straight from the sender's memory, ``CONTROL_FRAME`` a frame meant
for the transport itself, which is never handed up.  ``parse_frame_table`` returns all three.

Every length is 64 bits, so one frame may be larger than 2 or 4 GiB.  The
only limit is the maximum message size, the sum of the frame lengths, which
both ends check: the sender before it writes a byte, the receiver as soon
as it has the prelude (``MessageTooLargeError``).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

__all__ = [
    "AS_BYTES",
    "CONTROL_FRAME",
    "MAX_FRAMES",
    "SHM_FRAME",
    "MessageTooLargeError",
    "ProtocolError",
    "check_message_size",
    "pack_frames_prelude",
    "unpack_frames",
]

#: A message with more frames than this is refused as malformed.
MAX_FRAMES = 1_000_000

_U64 = struct.Struct("<Q")
_AS_BYTES = AS_BYTES = 1 << 63
#: Flags the same-host transport sets in the table (see the module docstring).
SHM_FRAME = 1 << 62
CONTROL_FRAME = 1 << 61
_FLAGS = _AS_BYTES | SHM_FRAME | CONTROL_FRAME
#: ``bytes`` frames from this size on are flagged to arrive as ``bytes``.
AS_BYTES_MIN = 2**16


class ProtocolError(ValueError):
    """Bytes from the network that do not form a valid message."""


#: The setting that sets the limit, and its environment variable; every
#: "too large" error names both, since that is what the user can change.
MAX_MESSAGE_SIZE_SETTING = "distributed.comm.max-message-size"
MAX_MESSAGE_SIZE_ENV = "DASK_DISTRIBUTED__COMM__MAX_MESSAGE_SIZE"


class MessageTooLargeError(ProtocolError):
    """A message larger than the maximum message size.

    Raised by a sender before it writes any byte, so the connection stays
    usable (``direction="send"``), and by a receiver that reads a prelude
    announcing more, which then closes the connection without reading the
    payload (``direction="receive"``).  It pickles, so it can travel back to
    whoever asked for the data in an error reply.

    >>> e = MessageTooLargeError(3_000, 1_000, "send", "tcp://127.0.0.1:8786")
    >>> e.size, e.limit
    (3000, 1000)
    >>> print(e)  # doctest: +NORMALIZE_WHITESPACE
    cannot send a message of 3,000 bytes (2.9 KiB) to tcp://127.0.0.1:8786:
    it exceeds the maximum message size of 1,000 bytes. Raise
    distributed.comm.max-message-size (environment variable
    DASK_DISTRIBUTED__COMM__MAX_MESSAGE_SIZE) in every process of the
    cluster, or move less data in one message.
    """

    def __init__(self, size: int, limit: int, direction: str = "receive", peer: str = "",
                 local: str = ""):
        if direction not in ("send", "receive"):
            raise ValueError(f"direction must be 'send' or 'receive', not {direction!r}")
        self.size = size
        self.limit = limit
        self.direction = direction
        self.peer = peer
        self.local = local
        if direction == "send":
            what = (f"cannot send a message of {_describe_size(size)}"
                    + (f" from {local}" if local else "") + (f" to {peer}" if peer else ""))
        else:
            what = (f"refused a message of {_describe_size(size)}"
                    + (f" from {peer}" if peer else "") + (f" at {local}" if local else ""))
        super().__init__(
            f"{what}: it exceeds the maximum message size of {_describe_size(limit)}. "
            f"Raise {MAX_MESSAGE_SIZE_SETTING} (environment variable {MAX_MESSAGE_SIZE_ENV}) "
            "in every process of the cluster, or move less data in one message."
        )

    def __reduce__(self):
        # The default would call the class with the message text alone.
        return type(self), (self.size, self.limit, self.direction, self.peer, self.local)


def _describe_size(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n:,} bytes ({n / scale:.1f} {unit})"
    return f"{n:,} bytes"


def check_message_size(size: int, limit: int, direction: str = "send", peer: str = "",
                       local: str = "") -> None:
    """Raise ``MessageTooLargeError`` if ``size`` bytes exceed ``limit``.

    >>> check_message_size(10, 100)
    >>> try:
    ...     check_message_size(200, 100)
    ... except MessageTooLargeError as e:
    ...     print(e.size, e.limit, e.direction)
    200 100 send
    """
    if size > limit:
        raise MessageTooLargeError(size, limit, direction, peer, local)


def pack_frames_prelude(frames: Sequence, flags: Sequence[int] | None = None) -> bytes:
    """The count-and-lengths prelude that precedes ``frames`` on the wire;
    ``flags`` (one int per frame) are or-ed into the lengths.

    >>> pack_frames_prelude([b"ab", b"c"])[:8]
    b'\\x02\\x00\\x00\\x00\\x00\\x00\\x00\\x00'
    """
    lengths = [_nbytes(f) | (_AS_BYTES if type(f) is bytes and len(f) >= AS_BYTES_MIN else 0)
               for f in frames]
    if flags is not None:
        lengths = [n | flag for n, flag in zip(lengths, flags, strict=True)]
    return struct.pack(f"<{len(lengths) + 1}Q", len(lengths), *lengths)


def parse_frame_count(header: bytes, max_frames: int = MAX_FRAMES) -> int:
    """Read the frame count from the first 8 bytes of a message."""
    (n,) = _U64.unpack(header)
    if n == 0 or n > max_frames:
        raise ProtocolError(f"malformed message: {n} frames announced")
    return n


def parse_frame_lengths(
    data: bytes, n: int, max_size: int, peer: str = "", local: str = ""
) -> tuple[list[int], list[bool]]:
    """Read ``n`` frame lengths, and which frames are to arrive as
    ``bytes``; a total over ``max_size`` bytes is a ``MessageTooLargeError``
    (from ``peer``), before any of the payload is read.

    >>> parse_frame_lengths(pack_frames_prelude([b"ab", b"c"])[8:], 2, 10)
    ([2, 1], [False, False])
    """
    lengths, flags = parse_frame_table(data, n, max_size, peer, local)
    return lengths, [bool(x & _AS_BYTES) for x in flags]


def parse_frame_table(
    data: bytes, n: int, max_size: int, peer: str = "", local: str = ""
) -> tuple[list[int], list[int]]:
    """``parse_frame_lengths`` with each frame's flag bits (``AS_BYTES``,
    ``SHM_FRAME``, ``CONTROL_FRAME``) as an int instead of a bool.

    >>> parse_frame_table(pack_frames_prelude([b"ab"], [SHM_FRAME])[8:], 1, 10)
    ([2], [4611686018427387904])
    """
    raw = struct.unpack(f"<{n}Q", data)
    lengths = [x & ~_FLAGS for x in raw]
    check_message_size(sum(lengths), max_size, "receive", peer, local)
    return lengths, [x & _FLAGS for x in raw]


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
