import errno
import logging
import os
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distributed import spill
from distributed.spill import SpillBuffer, SpillError
from distributed.utils import sizeof


def files_in(buf):
    return sorted(os.listdir(buf.directory))


def test_least_recently_used_values_spill_first(tmp_path):
    buf = SpillBuffer(str(tmp_path / "spill"), target=300)
    for key in "abc":
        buf.set(key, key, nbytes=100)
    buf["a"]  # now "b" is the coldest
    buf.set("d", "d", nbytes=100)
    assert list(buf.slow) == ["b"]
    buf.set("e", "e", nbytes=100)
    assert list(buf.slow) == ["b", "c"]
    assert set(buf.fast) == {"a", "d", "e"}
    assert buf.memory_bytes == 300
    assert buf.spilled_bytes == 200
    assert buf.spilled_count == 2
    assert len(files_in(buf)) == 2


def test_read_back_restores_values_exactly(tmp_path):
    np = pytest.importorskip("numpy")
    offset = 3

    def add_offset(x):  # a closure: plain pickle fails, cloudpickle works
        return x + offset

    values = {
        "bytes": b"\x00abc" * 1000,
        "bytearray": bytearray(b"xyz" * 100),
        "array": np.arange(10_000, dtype="f8").reshape(100, 100),
        "strided": np.arange(100)[::3],
        "dict": {"a": [1, 2.5, None], ("t", 1): {"nested": b"x"}},
        "lambda": lambda x: x * 2,
        "closure": add_offset,
    }
    buf = SpillBuffer(str(tmp_path), target=0)
    for key, value in values.items():
        buf[key] = value
    while buf.evict() >= 0:
        pass
    assert set(buf.slow) == set(values)
    assert not buf.fast and buf.memory_bytes == 0

    assert buf["bytes"] == values["bytes"] and type(buf["bytes"]) is bytes
    assert buf["bytearray"] == values["bytearray"]
    array = buf["array"]
    np.testing.assert_array_equal(array, values["array"])
    assert array.dtype == values["array"].dtype and array.flags.writeable
    np.testing.assert_array_equal(buf["strided"], values["strided"])
    assert buf["dict"] == values["dict"]
    assert buf["lambda"](4) == 8
    assert buf["closure"](4) == 7
    assert not buf.slow and files_in(buf) == []
    assert buf.stats["spill_count"] == buf.stats["unspill_count"] == len(values)
    assert buf.stats["spill_bytes"] == buf.stats["unspill_bytes"] == sum(map(sizeof, values.values()))


def test_value_bigger_than_target_goes_straight_to_disk(tmp_path):
    buf = SpillBuffer(str(tmp_path), target=100)
    buf.set("small", b"s", nbytes=50)
    buf.set("big", b"b" * 1000, nbytes=1000)
    assert list(buf.fast) == ["small"]
    assert list(buf.slow) == ["big"]
    # reading it does not move it back: it would only be written again
    assert buf["big"] == b"b" * 1000
    assert list(buf.slow) == ["big"] and list(buf.fast) == ["small"]
    assert buf.stats["unspill_count"] == 1


def test_evict_returns_minus_one_when_nothing_is_in_memory(tmp_path):
    buf = SpillBuffer(str(tmp_path), target=0)
    assert buf.evict() == -1
    buf.set("x", 1, nbytes=10)
    buf.set("y", 2, nbytes=20)
    assert buf.evict() == 10
    assert buf.evict() == 20
    assert buf.evict() == -1
    assert buf.spilled_bytes == 30 and buf.memory_bytes == 0


def test_target_zero_never_spills_automatically(tmp_path):
    buf = SpillBuffer(str(tmp_path), target=0)
    buf.set("x", b"x" * 10_000, nbytes=10_000)
    assert list(buf.fast) == ["x"] and files_in(buf) == []


def test_unpicklable_value_stays_in_memory_with_one_warning(tmp_path, caplog):
    buf = SpillBuffer(str(tmp_path), target=0)
    lock = threading.Lock()
    buf["lock"] = lock
    buf.set("x", 1, nbytes=10)
    with caplog.at_level(logging.WARNING, logger="distributed.spill"):
        assert buf.evict() == 10  # the lock is set aside and the next value spills
        assert buf.evict() == -1
        assert buf.evict() == -1
    assert buf["lock"] is lock
    assert list(buf.unspillable) == ["lock"]
    assert buf.memory_bytes == sizeof(lock)
    assert files_in(buf) == [os.path.basename(buf.slow["x"])]
    [record] = caplog.records
    assert "'lock'" in record.getMessage() and "cannot pickle" in record.getMessage()

    # overwriting forgets the failure: the new value may be spilled
    buf["lock"] = "now picklable"
    assert not buf.unspillable
    assert buf.evict() == sizeof("now picklable")


def test_unpicklable_value_is_not_retried_by_automatic_spilling(tmp_path, caplog, monkeypatch):
    calls = []
    dump = spill._dump
    monkeypatch.setattr(spill, "_dump", lambda value: calls.append(value) or dump(value))
    buf = SpillBuffer(str(tmp_path), target=100)
    with caplog.at_level(logging.WARNING, logger="distributed.spill"):
        buf.set("lock", threading.Lock(), nbytes=90)
        for i in range(5):
            buf.set(i, i, nbytes=20)
    assert len(caplog.records) == 1
    assert sum(isinstance(v, type(threading.Lock())) for v in calls) == 1
    assert set(buf.slow) == set(range(5))


def test_max_spill_is_respected(tmp_path):
    buf = SpillBuffer(str(tmp_path), target=100, max_spill=250)
    for i in range(5):
        buf.set(i, i, nbytes=100)
    assert list(buf.slow) == [0, 1]
    assert list(buf.fast) == [2, 3, 4]  # over target, but nothing is dropped
    assert buf.spilled_bytes == 200 and buf.memory_bytes == 300
    assert buf.evict() == -1
    buf.set("big", "big", nbytes=1000)  # bigger than target, does not fit on disk
    assert "big" in buf.fast and len(buf) == 6
    del buf[0]
    assert buf.evict() == 100
    assert buf.spilled_bytes == 200
    assert not buf.unspillable


def test_write_failure_keeps_value_in_memory_and_removes_partial_file(tmp_path, monkeypatch, caplog):
    def fail_after_partial_write(path, frames):
        with open(path, "wb") as f:
            f.write(frames[0])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(spill, "_write", fail_after_partial_write)
    buf = SpillBuffer(str(tmp_path / "spill"), target=100)
    with caplog.at_level(logging.WARNING, logger="distributed.spill"):
        buf["x"] = b"x" * 500
        buf["y"] = b"y"  # still over target because of "x": "y" is tried and fails too
        assert buf.evict() == -1  # neither is retried
    assert buf["x"] == b"x" * 500 and buf["y"] == b"y"
    assert list(buf.unspillable) == ["x", "y"]
    assert buf.spilled_count == 0 and buf.spilled_bytes == 0
    assert buf.memory_bytes == sizeof(b"x" * 500) + sizeof(b"y")
    assert files_in(buf) == []
    assert len(caplog.records) == 2
    assert "'x'" in caplog.records[0].getMessage() and "No space left" in caplog.records[0].getMessage()


def test_delete_and_overwrite_remove_files(tmp_path):
    buf = SpillBuffer(str(tmp_path), target=0)
    buf["x"] = b"x" * 100
    buf["y"] = b"y" * 100
    buf.evict(), buf.evict()
    assert len(files_in(buf)) == 2
    del buf["x"]
    assert files_in(buf) == [os.path.basename(buf.slow["y"])]
    buf["y"] = "new"
    assert files_in(buf) == []
    assert buf["y"] == "new" and buf.spilled_bytes == 0 and buf.memory_bytes == sizeof("new")
    with pytest.raises(KeyError):
        del buf["x"]
    with pytest.raises(KeyError):
        buf["x"]


def test_close_removes_files_and_directory_and_is_idempotent(tmp_path):
    directory = tmp_path / "spill"
    buf = SpillBuffer(str(directory), target=0)
    buf["x"] = b"x"
    buf["y"] = b"y"
    buf.evict()
    assert directory.exists()
    buf.close()
    assert not directory.exists()
    assert len(buf) == 0 and buf.memory_bytes == buf.spilled_bytes == 0
    buf.close()


def test_len_iter_contains_never_read_files(tmp_path, monkeypatch):
    buf = SpillBuffer(str(tmp_path), target=0)
    buf["x"] = 1
    buf["y"] = 2
    buf.evict()
    monkeypatch.setattr(spill, "_read", lambda path: pytest.fail("read a file"))
    assert len(buf) == 2
    assert list(buf) == ["x", "y"]
    assert "x" in buf and "y" in buf and "z" not in buf
    assert buf.spilled_count == 1


def test_iterating_items_while_reading_is_safe(tmp_path):
    buf = SpillBuffer(str(tmp_path), target=100)
    for i in range(10):
        buf.set(i, i, nbytes=30)
    assert dict(buf.items()) == {i: i for i in range(10)}


def test_unreadable_file_raises_naming_key_and_file(tmp_path):
    buf = SpillBuffer(str(tmp_path), target=0)
    buf["x"] = {"a": 1}
    buf.evict()
    path = buf.slow["x"]
    with open(path, "r+b") as f:
        f.truncate(5)
    with pytest.raises(SpillError, match=f"'x'.*{path}"):
        buf["x"]
    with pytest.raises(SpillError):
        buf.get("x", "default")  # not a KeyError: never a silent default
    assert os.path.exists(path) and "x" in buf.slow


keys = st.sampled_from(["a", "b", "c", ("t", 1), 2, 3.5, b"k"])
operations = st.lists(
    st.tuples(
        st.sampled_from(["set", "set", "set_unpicklable", "get", "delete", "evict"]),
        keys,
        st.binary(max_size=150),
    ),
    max_size=40,
)


class Unpicklable:
    def __reduce__(self):
        raise TypeError("not today")

    def __eq__(self, other):
        return isinstance(other, Unpicklable)


@settings(max_examples=300, deadline=None)
@given(
    target=st.integers(min_value=0, max_value=400),
    max_spill=st.one_of(st.none(), st.integers(min_value=0, max_value=500)),
    ops=operations,
)
def test_behaves_like_a_dict_with_exact_bookkeeping(tmp_path_factory, target, max_spill, ops):
    buf = SpillBuffer(str(tmp_path_factory.mktemp("spill")), target=target, max_spill=max_spill)
    model = {}
    logging.getLogger("distributed.spill").disabled = True
    try:
        for op, key, value in ops:
            if op == "set":
                buf[key] = model[key] = value
            elif op == "set_unpicklable":
                buf[key] = model[key] = Unpicklable()
            elif op == "get":
                assert buf.get(key, "missing") == model.get(key, "missing")
            elif op == "delete":
                assert (key in buf) == (key in model)
                if key in model:
                    del buf[key], model[key]
            else:
                nbytes = buf.evict()
                assert nbytes == -1 or nbytes > 0

            assert set(buf) == set(model) and len(buf) == len(model)
            assert not set(buf.fast) & set(buf.slow)
            assert set(buf.fast) | set(buf.slow) == set(model)
            assert buf.memory_bytes == sum(sizeof(model[k]) for k in buf.fast)
            assert buf.spilled_bytes == sum(sizeof(model[k]) for k in buf.slow)
            assert buf.spilled_count == len(buf.slow)
            assert files_in(buf) == sorted(os.path.basename(p) for p in buf.slow.values())
            assert set(buf.unspillable) <= {k for k, v in model.items() if isinstance(v, Unpicklable)}
            if max_spill is not None:
                assert buf.spilled_bytes <= max_spill
            elif target > 0:
                spillable = set(buf.fast) - set(buf.unspillable)
                assert buf.memory_bytes <= target or not spillable
        assert dict(buf.items()) == model
    finally:
        logging.getLogger("distributed.spill").disabled = False
        buf.close()
    assert not os.path.exists(buf.directory)
