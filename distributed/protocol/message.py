"""Control messages: msgpack with pickled payloads as extension types.

``encode_message(msg)`` returns a list of frames: frame 0 is msgpack; every
``Serialize``/``Serialized`` value inside ``msg`` is encoded as a msgpack
extension.  A small pickle without buffers is carried inline in the
extension (one write, no extra frame); anything else puts its frames after
frame 0 and the extension records where they are.

``decode_message(frames, deserialize=True)`` reverses it.  With
``deserialize=False`` payloads come back as ``Serialized`` and can be
forwarded untouched, which is what the scheduler does with task payloads.

Lists come back as tuples (``use_list=False``): it is faster and keeps task
keys such as ``('x', 0)`` hashable.
"""

from __future__ import annotations

import pickle
from typing import Any

import msgpack

from distributed.protocol.frames import ProtocolError
from distributed.protocol.serialize import Serialize, Serialized, deserialize, serialize

__all__ = ["encode_message", "decode_message", "INLINE_LIMIT"]

#: Pickles smaller than this travel inside frame 0.
INLINE_LIMIT = 2**16

_EXT_INLINE_PICKLE = 1
_EXT_FRAMES = 2
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

    def default(obj):
        if isinstance(obj, Serialize):
            obj = serialize(obj.data)
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

    def ext_hook(code, data):
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
