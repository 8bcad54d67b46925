"""Run specs: what the client builds and the worker opens."""
from __future__ import annotations

import pytest

from distributed.protocol import Serialized, SharedBytes, decode_message, encode_message
from distributed.protocol.message import INLINE_LIMIT
from distributed.spec import CALL, NODE, WALK, TaskRef, make_spec, open_spec, pickled_function, run_spec_call


def test_a_spec_survives_a_message_and_calls_its_function():
    spec = make_spec(WALK, pickled_function(max), ((TaskRef("x"), 2), {}))
    received = decode_message(encode_message({"run_spec": spec}), False)["run_spec"]
    how, func, (args, kwargs) = open_spec(received)
    assert how == WALK and func is max
    assert run_spec_call(func, args, kwargs, {"x": 5}) == 5


def test_small_payloads_are_bytes_and_large_ones_travel_out_of_band():
    assert type(make_spec(CALL, None, ((1,), {}))[2]) is bytes
    big = make_spec(CALL, None, ((b"x" * INLINE_LIMIT,), {}))
    assert isinstance(big[2], Serialized)
    assert open_spec(big)[2] == ((b"x" * INLINE_LIMIT,), {})


@pytest.mark.parametrize(
    "spec, match",
    [
        ({"func": None}, "dict"),
        ((CALL, None), "tuple of 2"),
        ((7, None, b""), "tuple of 3"),
        ((CALL, b"not shared", b""), "function of type bytes"),
        ((NODE, None, 3), "payload of type int"),
    ],
)
def test_a_malformed_spec_is_a_clear_type_error(spec, match):
    with pytest.raises(TypeError, match=f"malformed task specification.*{match}"):
        open_spec(spec)


def test_shared_function_payload_is_one_object_per_message():
    f = pickled_function(max)
    specs = [make_spec(CALL, f, ((i, 0), {})) for i in range(3)]
    out = decode_message(encode_message(specs), False)
    assert type(out[0][1]) is SharedBytes and out[0][1] is out[1][1] is out[2][1]
