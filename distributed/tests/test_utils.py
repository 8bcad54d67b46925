"""Helpers in ``distributed.utils``: tokens and key names."""
from __future__ import annotations

import pytest

from distributed import utils
from distributed.utils import key_split, tokenize


def test_tokenize_is_deterministic_and_tells_contents_apart():
    assert tokenize(b"abc") == tokenize(bytearray(b"abc")) == tokenize("abc")
    assert tokenize(b"abc") != tokenize(b"abd")


@pytest.mark.parametrize("size", [utils._PARALLEL_HASH_MIN - 1, utils._PARALLEL_HASH_MIN + 5])
def test_tokenize_of_large_inputs_is_deterministic_and_tells_contents_apart(size):
    data = bytearray(size)
    data[-1] = 1
    token = tokenize(bytes(data))
    assert token == tokenize(memoryview(data)) == tokenize(bytes(data))
    data[size // 2] = 1
    assert tokenize(data) != token


def test_tokenize_of_large_inputs_does_not_depend_on_the_number_of_threads(monkeypatch):
    data = bytes(range(256)) * (utils._PARALLEL_HASH_MIN // 256 + 3)
    token = tokenize(data, b"tail")
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as one:
        monkeypatch.setattr(utils, "_hash_pool", one)
        assert tokenize(data, b"tail") == token
        assert tokenize(data[:-1], data[-1:] + b"tail") != token, "where the parts split counts"


def test_tokenize_accepts_multidimensional_buffers():
    np = pytest.importorskip("numpy")
    a = np.arange(12.0).reshape(3, 4)
    assert tokenize(a.data) == tokenize(a.tobytes())


@pytest.mark.parametrize(
    "key, name",
    [("inc-a8f3e6c1d2b44f5a9e0b", "inc"), (("x-1b2c3d4e", 0, 1), "x"),
     ("finalize-sum-aggregate", "finalize-sum-aggregate"), (b"bytes-key-1", "bytes-key"),
     (42, "Other"), ("0123456789abcdef0123456789abcdef", "data")],
)
def test_key_split(key, name):
    assert key_split(key) == name
