"""Bytes <-> messages: framing, msgpack control messages and pickled payloads.

Pure functions only: nothing in this package touches a socket or a loop.
"""

from distributed.protocol.frames import (
    MessageTooLargeError,
    ProtocolError,
    pack_frames_prelude,
    unpack_frames,
)
from distributed.protocol.message import SharedBytes, decode_message, encode_message
from distributed.protocol.serialize import (
    Serialize,
    Serialized,
    deserialize,
    dumps_function,
    loads_function,
    pickle_dumps,
    pickle_loads,
    serialize,
)

__all__ = [
    "MessageTooLargeError",
    "ProtocolError",
    "Serialize",
    "Serialized",
    "SharedBytes",
    "decode_message",
    "deserialize",
    "dumps_function",
    "encode_message",
    "loads_function",
    "pack_frames_prelude",
    "pickle_dumps",
    "pickle_loads",
    "serialize",
    "unpack_frames",
]
