"""Control messages: msgpack with pickled payloads as extension types.

``encode_message(msg)`` returns a list of frames: frame 0 is msgpack; every
``Serialize``/``Serialized`` value inside ``msg`` is encoded as a msgpack
extension.  A small pickle without buffers is carried inline in the
extension (one write, no extra frame); anything else puts its frames after
frame 0 and the extension records where they are.

``decode_message(frames, deserialize=True)`` reverses it.  With
``deserialize=False`` payloads come back as ``Serialized`` and can be
forwarded untouched, which is what the scheduler does with task payloads.

``SharedBytes`` marks bytes that many parts of one message share, such as
the pickled function of every task in a graph: the first occurrence is
encoded in full, later ones as a reference to it, and the decoded message
shares one ``SharedBytes`` object among them.  A function pickled by value
(defined in a script or notebook) is some 500 bytes; a 200,000-task graph
would otherwise carry and decode it 200,000 times.

Lists come back as tuples (``use_list=False``): it is faster and keeps task
keys such as ``('x', 0)`` hashable.
"""

from __future__ import annotations

import pickle
from typing import Any

import msgpack

from distributed.protocol.frames import ProtocolError
from distributed.protocol.serialize import Serialize, Serialized, deserialize, to_serialized

__all__ = ["encode_message", "decode_message", "SharedBytes", "INLINE_LIMIT"]

#: Pickles smaller than this travel inside frame 0.
INLINE_LIMIT = 2**16

_EXT_INLINE_PICKLE = 1
_EXT_FRAMES = 2
_EXT_SHARED = 3  # the first occurrence of a SharedBytes value
_EXT_SHARED_REF = 4  # a later one: the index of its first occurrence


class SharedBytes:
    """Bytes that travel once per message however often they occur in it.

    Two occurrences are the same when they hold the same ``bytes`` object
    (not merely equal bytes), so wrapping one cached ``bytes`` per task is
    enough.

    >>> f = b"pickled function"
    >>> msg = decode_message(encode_message([SharedBytes(f), SharedBytes(f)]))
    >>> msg[0] is msg[1], msg[0].data
    (True, b'pickled function')
    """

    __slots__ = ("data",)

    def __init__(self, data: bytes):
        if type(data) is not bytes:
            raise TypeError(f"SharedBytes holds bytes, not {type(data).__name__}")
        self.data = data

    def __eq__(self, other) -> bool:
        return isinstance(other, SharedBytes) and other.data == self.data

    def __hash__(self) -> int:
        return hash(self.data)

    def __repr__(self) -> str:
        return f"<SharedBytes: {len(self.data)} bytes>"

_KINDS = ("pickle", "bytes", "bytearray", "memoryview")
_KIND_CODES = {k: i for i, k in enumerate(_KINDS)}
_PICKLE = _KIND_CODES["pickle"]


def encode_message(msg: Any) -> list:
    """Frames for one message.

    >>> frames = encode_message({"op": "x", "data": Serialize(b"abc")})
    >>> decode_message(frames)
    {'op': 'x', 'data': b'abc'}
    """
    frames: list = [b""]
    shared: dict[int, int] = {}  # id(SharedBytes.data) -> its index in this message

    def default(obj):
        if type(obj) is SharedBytes:
            index = shared.get(id(obj.data))
            if index is not None:
                return msgpack.ExtType(_EXT_SHARED_REF, msgpack.packb(index))
            shared[id(obj.data)] = len(shared)  # obj.data lives as long as msg
            return msgpack.ExtType(_EXT_SHARED, obj.data)
        if isinstance(obj, Serialize):
            obj = to_serialized(obj.data)
        elif not isinstance(obj, Serialized):
            if isinstance(obj, (set, frozenset)):
                return list(obj)
            raise TypeError(
                f"cannot send object of type {type(obj).__name__} in a message;"
                " wrap it in Serialize"
            )
        sub = obj.frames
        if obj.kind == "pickle" and len(sub) == 1 and len(sub[0]) < INLINE_LIMIT:
            return msgpack.ExtType(_EXT_INLINE_PICKLE, bytes(sub[0]))
        start = len(frames)
        frames.extend(sub)
        header = msgpack.packb((_KIND_CODES[obj.kind], start, len(sub)))
        return msgpack.ExtType(_EXT_FRAMES, header)

    frames[0] = msgpack.packb(msg, default=default, use_bin_type=True)
    return frames


def decode_message(frames: list, deserialize_payloads: bool = True) -> Any:
    """The message that ``encode_message`` turned into ``frames``.

    Raises ``ProtocolError`` when the frames are not a valid message,
    including a payload that is not a pickle at all.  A valid pickle that
    fails to load here (a module missing on this machine) raises its own
    error: the message was well formed.
    """
    if not frames:
        raise ProtocolError("malformed message: no frames")

    shared: list[SharedBytes] = []

    def ext_hook(code, data):
        if code == _EXT_SHARED:
            s = SharedBytes(data)
            shared.append(s)
            return s
        if code == _EXT_SHARED_REF:
            index = msgpack.unpackb(data)
            if type(index) is not int or not 0 <= index < len(shared):
                raise ProtocolError("malformed message: bad shared-bytes reference")
            return shared[index]
        if code == _EXT_INLINE_PICKLE:
            s = Serialized("pickle", [data])
        elif code == _EXT_FRAMES:
            header = msgpack.unpackb(data)
            if not (isinstance(header, (tuple, list)) and len(header) == 3
                    and all(type(x) is int for x in header)):
                raise ProtocolError("malformed message: bad frame reference")
            kind_code, start, count = header
            if (
                not (0 <= kind_code < len(_KINDS))
                or start < 1
                or count < 1
                or (kind_code != _PICKLE and count != 1)
                or start + count > len(frames)
            ):
                raise ProtocolError("malformed message: bad frame reference")
            s = Serialized(_KINDS[kind_code], list(frames[start : start + count]))
        else:
            raise ProtocolError(f"malformed message: unknown extension {code}")
        if deserialize_payloads:
            try:
                return deserialize(s.kind, s.frames)
            except (pickle.UnpicklingError, EOFError) as e:
                raise ProtocolError(f"malformed message: bad pickle payload: {e}") from e
        return s

    try:
        return msgpack.unpackb(
            frames[0],
            ext_hook=ext_hook,
            raw=False,
            use_list=False,
            strict_map_key=False,
        )
    except ProtocolError:
        raise
    except (ValueError, TypeError, msgpack.UnpackException, msgpack.ExtraData) as e:
        raise ProtocolError(f"malformed message: {e}") from e
