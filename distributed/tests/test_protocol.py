"""The wire format without sockets: framing, msgpack messages, pickled
payloads, out-of-band buffers and the errors malformed input raises."""
from __future__ import annotations

import pickle
import struct
import threading

import msgpack
import pytest

from distributed.protocol import (
    ProtocolError,
    Serialize,
    Serialized,
    SharedBytes,
    buffers,
    decode_message,
    dumps_function,
    encode_message,
    loads_function,
    pack_frames_prelude,
    pickle_dumps,
    pickle_loads,
    serialize,
    unpack_frames,
)
from distributed.protocol.frames import MAX_FRAMES
from distributed.protocol.message import INLINE_LIMIT

np = pytest.importorskip("numpy")


def wire(frames) -> bytes:
    """The bytes of one message as a Comm writes them."""
    return pack_frames_prelude(frames) + b"".join(bytes(f) for f in frames)


def roundtrip(msg, deserialize=True):
    frames = encode_message(msg)
    return decode_message(unpack_frames(wire(frames)), deserialize)


# ----------------------------------------------------------------------
# framing
# ----------------------------------------------------------------------


@pytest.mark.parametrize("frames", [[b""], [b"abc"], [b"a", b"", b"bc" * 1000], [bytearray(b"x")]])
def test_frames_roundtrip(frames):
    out = unpack_frames(wire(frames))
    assert [bytes(f) for f in out] == [bytes(f) for f in frames]


def test_unpacked_frames_are_views_not_copies():
    data = bytearray(wire([b"abc", b"defg"]))
    frames = unpack_frames(data)
    assert all(isinstance(f, memoryview) for f in frames)
    data[-1:] = b"Z"
    assert bytes(frames[1]) == b"defZ"


def test_prelude_counts_bytes_of_multidimensional_buffers():
    arr = np.zeros((3, 4), dtype="f8")
    prelude = pack_frames_prelude([memoryview(arr)])
    assert struct.unpack("<QQ", prelude) == (1, 96)


@pytest.mark.parametrize("count", [0, MAX_FRAMES + 1, 2**63])
def test_absurd_frame_count_is_a_protocol_error(count):
    data = struct.pack("<Q", count) + b"\0" * 64
    with pytest.raises(ProtocolError, match="frames announced"):
        unpack_frames(data)


def test_truncated_message_is_a_protocol_error():
    data = wire([b"hello", b"world"])
    for cut in (0, 4, 12, 20, len(data) - 1):
        with pytest.raises(ProtocolError, match="truncated"):
            unpack_frames(data[:cut])


def test_trailing_bytes_are_a_protocol_error():
    with pytest.raises(ProtocolError, match="trailing"):
        unpack_frames(wire([b"abc"]) + b"junk")


def test_message_over_the_size_limit_is_a_protocol_error():
    data = wire([b"x" * 2000])
    with pytest.raises(ProtocolError, match="max-message-size"):
        unpack_frames(data, max_size=1000)
    # the limit is checked on the announced lengths, before any payload
    lie = struct.pack("<QQ", 1, 2**60)
    with pytest.raises(ProtocolError, match="exceeds"):
        unpack_frames(lie, max_size=1000)


# ----------------------------------------------------------------------
# messages
# ----------------------------------------------------------------------


def test_message_roundtrip_of_plain_data():
    msg = {"op": "update-graph", "keys": ["a", ("b", 1)], "n": 3, "x": 1.5, "none": None,
           "nested": {"deep": [1, {"k": b"raw"}]}, 7: "int key"}
    out = roundtrip(msg)
    # lists come back as tuples, so that keys like ('b', 1) stay hashable
    assert out == {"op": "update-graph", "keys": ("a", ("b", 1)), "n": 3, "x": 1.5, "none": None,
                   "nested": {"deep": (1, {"k": b"raw"})}, 7: "int key"}
    assert roundtrip({"s": {1, 2}})["s"] in ((1, 2), (2, 1))


def test_small_pickle_travels_inline_in_one_frame():
    frames = encode_message({"op": "x", "data": Serialize([1, 2, 3])})
    assert len(frames) == 1
    assert roundtrip({"op": "x", "data": Serialize([1, 2, 3])}) == {"op": "x", "data": [1, 2, 3]}


def test_large_pickle_gets_its_own_frame():
    value = list(range(INLINE_LIMIT))
    frames = encode_message({"data": Serialize(value)})
    assert len(frames) == 2
    assert roundtrip({"data": Serialize(value)})["data"] == value


def test_numpy_array_goes_out_of_band_uncopied():
    arr = np.arange(200_000, dtype="i8")
    frames = encode_message({"op": "x", "data": Serialize(arr)})
    assert len(frames) == 3, "msgpack header, pickle stream, the array's buffer"
    buf = frames[2]
    assert isinstance(buf, memoryview)
    assert buf.nbytes == arr.nbytes
    assert np.shares_memory(np.asarray(buf), arr), "encoding copied the array"
    assert len(frames[1]) < 1000, "the pickle stream holds no data"
    out = roundtrip({"op": "x", "data": Serialize(arr)})["data"]
    assert out.dtype == arr.dtype and (out == arr).all()


def test_decoded_array_is_a_view_of_the_received_frame():
    arr = np.arange(100_000, dtype="f8")
    data = bytearray(wire(encode_message({"data": Serialize(arr)})))
    out = decode_message(unpack_frames(data))["data"]
    assert (out == arr).all()
    assert np.shares_memory(out, np.frombuffer(data, dtype="u1")), "decoding copied the array"


def test_large_bytes_go_out_of_band_uncopied():
    for payload in (b"x" * 10_000_000, bytearray(b"y" * 1_000_000), memoryview(b"z" * 1_000_000)):
        frames = encode_message({"op": "x", "data": Serialize(payload)})
        assert len(frames) == 2
        assert frames[1] is payload, "the payload is the frame itself"
        out = roundtrip({"data": Serialize(payload)})["data"]
        assert type(out) is type(payload)
        assert bytes(out) == bytes(payload)


def test_several_payloads_in_one_message():
    a, b = np.ones(50_000), b"b" * 100_000
    msg = {"data": {"a": Serialize(a), "b": Serialize(b), "c": Serialize("small")}}
    frames = encode_message(msg)
    assert len(frames) == 4
    out = roundtrip(msg)["data"]
    assert (out["a"] == a).all() and out["b"] == b and out["c"] == "small"


def test_payloads_can_stay_serialized_and_be_forwarded():
    arr = np.arange(100_000)
    out = roundtrip({"data": Serialize(arr), "small": Serialize({"k": 1})}, deserialize=False)
    assert isinstance(out["data"], Serialized) and isinstance(out["small"], Serialized)
    # the forwarder re-sends them untouched; the final receiver gets objects
    again = roundtrip(out)
    assert (again["data"] == arr).all() and again["small"] == {"k": 1}


def test_shared_bytes_travel_once_per_message_and_decode_as_one_object():
    f = b"f" * 500
    msg = [(i, SharedBytes(f)) for i in range(100)]
    frames = encode_message(msg)
    assert len(frames) == 1 and len(frames[0]) < 2000, "the 500 bytes are encoded once, not 100 times"
    out = decode_message(frames)
    assert all(item[1] is out[0][1] for item in out) and out[0][1].data == f
    assert [i for i, _ in out] == list(range(100))
    # forwarded (scheduler -> worker), it is still sent once
    assert len(encode_message(out)[0]) == len(frames[0])


def test_equal_but_distinct_shared_bytes_are_each_sent():
    out = decode_message(encode_message([SharedBytes(b"ab"), SharedBytes(bytes(bytearray(b"ab")))]))
    assert out[0] == out[1] and out[0] is not out[1]


def test_shared_bytes_holds_only_bytes():
    with pytest.raises(TypeError, match="bytearray"):
        SharedBytes(bytearray(b"x"))


def test_serialize_of_serialized_is_identity():
    s = serialize([1, 2])
    assert serialize(s) is s
    assert s.deserialize() == [1, 2]


# ----------------------------------------------------------------------
# pickling
# ----------------------------------------------------------------------


def test_lambda_falls_back_to_cloudpickle():
    frames = pickle_dumps(lambda x: x + 41)
    assert pickle_loads(frames[0], frames[1:])(1) == 42


def test_function_from_main_is_pickled_by_value():
    namespace = {"__name__": "__main__"}
    exec("def script_func(x):\n    return x * 3\n", namespace)
    func = namespace["script_func"]
    assert func.__module__ == "__main__"
    with pytest.raises((pickle.PicklingError, AttributeError)):
        pickle.dumps(func)  # plain pickle would refer to __main__.script_func
    frames = pickle_dumps(func)
    assert pickle_loads(frames[0], frames[1:])(5) == 15
    assert loads_function(dumps_function(func))(2) == 6


def test_dumps_function_caches_and_keeps_importable_functions_small():
    assert dumps_function(len) is dumps_function(len)
    assert loads_function(dumps_function(len)) is len
    assert len(dumps_function(len)) < 100


class Unpicklable:
    def __reduce__(self):
        raise RuntimeError("no pickling for you")


@pytest.mark.parametrize("obj, name", [(threading.Lock(), "lock"), (Unpicklable(), "Unpicklable")])
def test_unpicklable_object_raises_type_error_naming_its_type(obj, name):
    with pytest.raises(TypeError, match=f"type {name}"):
        pickle_dumps(obj)
    with pytest.raises(TypeError, match=f"type {name}"):
        encode_message({"op": "x", "data": Serialize(obj)})


def test_unwrapped_object_in_message_raises_type_error_naming_its_type():
    with pytest.raises(TypeError, match="Unpicklable.*Serialize"):
        encode_message({"op": "x", "data": Unpicklable()})


# ----------------------------------------------------------------------
# malformed messages
# ----------------------------------------------------------------------


def ext(code: int, data: bytes) -> bytes:
    return msgpack.packb({"op": "x", "data": msgpack.ExtType(code, data)})


@pytest.mark.parametrize(
    "frames",
    [
        pytest.param([], id="no-frames"),
        pytest.param([b"\xc1"], id="invalid-msgpack-byte"),
        pytest.param([b""], id="empty-frame"),
        pytest.param([msgpack.packb({"op": "x"}) + b"\x01"], id="extra-data"),
        pytest.param([b"\x92\x01"], id="truncated-msgpack"),
        pytest.param([ext(2, msgpack.packb((0, 5, 1)))], id="ext-refers-past-last-frame"),
        pytest.param([ext(2, msgpack.packb((0, 0, 1))), b"x"], id="ext-refers-to-header-frame"),
        pytest.param([ext(2, msgpack.packb((9, 1, 1))), b"x"], id="ext-unknown-kind"),
        pytest.param([ext(2, msgpack.packb((0, 1, -1))), b"x"], id="ext-negative-count"),
        pytest.param([ext(2, msgpack.packb((0, 1, 0))), b"x"], id="ext-zero-frames"),
        pytest.param([ext(2, msgpack.packb((1, 1, 2))), b"x", b"y"], id="ext-raw-bytes-two-frames"),
        pytest.param([ext(2, msgpack.packb(("a", 1, 1))), b"x"], id="ext-non-int-fields"),
        pytest.param([ext(2, msgpack.packb(7)), b"x"], id="ext-header-not-a-tuple"),
        pytest.param([ext(2, b"\xc1")], id="ext-header-garbage"),
        pytest.param([ext(99, b"")], id="ext-unknown-code"),
        pytest.param([ext(4, msgpack.packb(0))], id="shared-ref-before-any-shared"),
        pytest.param([msgpack.packb([msgpack.ExtType(3, b"f"), msgpack.ExtType(4, msgpack.packb(1))])],
                     id="shared-ref-out-of-range"),
        pytest.param([ext(4, msgpack.packb("0"))], id="shared-ref-not-an-int"),
        pytest.param([ext(1, b"not a pickle")], id="inline-garbage-pickle"),
        pytest.param([ext(1, pickle.dumps([1, 2])[:-3])], id="inline-truncated-pickle"),
    ],
)
def test_malformed_message_is_a_protocol_error(frames):
    with pytest.raises(ProtocolError, match="malformed"):
        decode_message(frames)


def test_bad_frame_reference_is_caught_even_without_deserializing():
    with pytest.raises(ProtocolError, match="frame reference"):
        decode_message([ext(2, msgpack.packb((0, 5, 1)))], False)


@pytest.mark.parametrize("n", [0, 10, buffers.HUGE_PAGE_MIN + 12345])
def test_new_bytes_is_filled_through_its_view(n):
    if not buffers.SUPPORTED:
        pytest.skip("new_bytes needs CPython")
    obj, view = buffers.new_bytes(n)
    pattern = bytes(range(256)) * (n // 256 + 1)
    view[:] = pattern[:n]
    del view
    assert type(obj) is bytes and obj == pattern[:n]


@pytest.mark.parametrize("n", [10, buffers.HUGE_PAGE_MIN + 12345])
def test_new_buffer_is_a_writable_buffer_of_the_size_asked(n):
    buf = buffers.new_buffer(n)
    assert len(buf) == n and not buf.readonly
    buf[-3:] = b"end"
    assert bytes(buf[-3:]) == b"end"


def test_serialize_in_dask_distributed_shape():
    """Old code unpacks ``header, frames = serialize(x)``."""
    import numpy as np

    from distributed.protocol import deserialize, serialize

    header, frames = serialize(np.arange(10))
    assert header["serializer"] == "pickle"
    assert (deserialize(header, frames) == np.arange(10)).all()
    header, frames = serialize(b"abc", serializers=["dask", "pickle"])
    assert deserialize(header, frames, deserializers=["dask", "pickle"]) == b"abc"


def test_serialize_on_error_message_and_raise():
    import threading

    from distributed.protocol import deserialize, serialize

    header, frames = serialize(threading.Lock(), on_error="message")
    with pytest.raises(TypeError, match="lock"):
        deserialize(header, frames)
    with pytest.raises(TypeError, match="lock"):
        serialize(threading.Lock(), on_error="raise")


def test_serialize_keywords_it_cannot_honour_raise():
    from distributed.protocol import serialize

    with pytest.raises(TypeError, match="pickle"):
        serialize(1, serializers=["msgpack"])
    with pytest.raises(TypeError, match="context"):
        serialize(1, context={"recipient": "x"})
    with pytest.raises(ValueError, match="on_error"):
        serialize(1, on_error="ignore")
