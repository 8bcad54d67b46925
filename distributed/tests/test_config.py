"""Tests for :mod:`distributed.config`."""

from __future__ import annotations

import doctest
import os
import subprocess
import sys
import types
from datetime import timedelta

import pytest

from distributed import config
from distributed.config import (
    env_var,
    format_bytes,
    format_time,
    get,
    get_bytes,
    get_timedelta,
    parse_bytes,
    parse_timedelta,
    refresh,
)


@pytest.fixture(autouse=True)
def clean_config(monkeypatch):
    """Give every test an environment without DASK_DISTRIBUTED__ variables."""
    for name in list(os.environ):
        if name.upper().startswith("DASK_DISTRIBUTED__"):
            monkeypatch.delenv(name)
    monkeypatch.delitem(sys.modules, "dask", raising=False)
    layers = list(config._layers)
    refresh()
    yield
    monkeypatch.undo()
    config._layers[:] = layers
    refresh()


# ----------------------------------------------------------------- parse_timedelta


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("10s", 10.0),
        ("500ms", 0.5),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("2 days", 172800.0),
        ("1.5 s", 1.5),
        ("100us", 1e-4),
        ("100µs", 1e-4),
        ("3ns", 3e-9),
        ("10", 10.0),
        ("  7 seconds ", 7.0),
        ("5 minutes", 300.0),
        ("1 week", 604800.0),
        ("1MS", 0.001),
        (".5s", 0.5),
        ("1e3ms", 1.0),
        ("-2s", -2.0),
        (3, 3.0),
        (2.5, 2.5),
        (timedelta(minutes=2, milliseconds=5), 120.005),
    ],
)
def test_parse_timedelta(value, expected):
    result = parse_timedelta(value)
    assert isinstance(result, float)
    assert result == pytest.approx(expected)


def test_parse_timedelta_default_unit():
    assert parse_timedelta(3, default="ms") == pytest.approx(0.003)
    assert parse_timedelta("3", default="milliseconds") == pytest.approx(0.003)
    assert parse_timedelta("3s", default="ms") == 3.0
    assert parse_timedelta(2, default="minutes") == 120.0
    assert parse_timedelta(None) is None
    with pytest.raises(ValueError, match="Unknown default time unit 'fortnight'"):
        parse_timedelta(1, default="fortnight")


@pytest.mark.parametrize(
    "value", ["abc", "", "10 parsecs", "s10", "1..2s", "1 s s", True, [1], float("nan")]
)
def test_parse_timedelta_invalid(value):
    with pytest.raises(ValueError, match="valid duration") as info:
        parse_timedelta(value)
    assert repr(value) in str(info.value)


def test_parse_timedelta_unknown_unit_named():
    with pytest.raises(
        ValueError, match="'10 parsecs' is not a valid duration: unknown unit 'parsecs'"
    ):
        parse_timedelta("10 parsecs")


# ------------------------------------------------------------------- parse_bytes


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("4GB", 4_000_000_000),
        ("4 GB", 4_000_000_000),
        ("4gb", 4_000_000_000),
        ("512MiB", 512 * 2**20),
        ("512 mib", 512 * 2**20),
        ("1e9", 1_000_000_000),
        ("100", 100),
        ("100 B", 100),
        (100, 100),
        (1.5e3, 1500),
        ("10kB", 10_000),
        ("10k", 10_000),
        ("1 KiB", 1024),
        ("1.5 KiB", 1536),
        ("2 TiB", 2 * 2**40),
        ("3TB", 3 * 10**12),
        ("1 PB", 10**15),
        ("1GiB", 2**30),
        ("12345678901234567890", 12345678901234567890),
    ],
)
def test_parse_bytes(value, expected):
    result = parse_bytes(value)
    assert type(result) is int
    assert result == expected


@pytest.mark.parametrize(
    "value", ["lots", "", "5 XB", "GB", "1e", None, True, float("inf"), [1]]
)
def test_parse_bytes_invalid(value):
    with pytest.raises(ValueError, match="not a valid byte size") as info:
        parse_bytes(value)
    assert repr(value) in str(info.value)


# -------------------------------------------------------------------- formatting


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (1_000_000, "1.00 MB"),
        (1_234_567_890, "1.23 GB"),
        (2 * 10**12, "2.00 TB"),
        (5 * 10**15, "5.00 PB"),
        (12_345, "12.35 kB"),
        (950, "0.95 kB"),
        (100, "100 B"),
        (0, "0 B"),
    ],
)
def test_format_bytes(n, expected):
    assert format_bytes(n) == expected


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (0.00123, "1.23 ms"),
        (4.56, "4.56 s"),
        (0.0000042, "4.20 us"),
        (1, "1.00 s"),
        (700, "11m 40s"),
        (3 * 3600 + 120, "3hr 2m"),
        (3 * 86400 + 3600, "3d 1hr"),
        (-4.56, "-4.56 s"),
    ],
)
def test_format_time(seconds, expected):
    assert format_time(seconds) == expected


# ------------------------------------------------------------------ defaults/get


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("distributed.scheduler.allowed-failures", 3),
        ("distributed.scheduler.worker-ttl", "5 minutes"),
        ("distributed.scheduler.work-stealing", True),
        ("distributed.scheduler.validate", False),
        ("distributed.scheduler.bandwidth", 100_000_000),
        ("distributed.scheduler.default-data-size", "1kiB"),
        ("distributed.worker.memory.target", 0.6),
        ("distributed.worker.memory.spill", 0.7),
        ("distributed.worker.memory.pause", 0.8),
        ("distributed.worker.memory.terminate", 0.95),
        ("distributed.worker.connections.outgoing", 50),
        ("distributed.worker.connections.incoming", 10),
        ("distributed.comm.timeouts.connect", "30s"),
        ("distributed.comm.timeouts.tcp", "30s"),
        ("distributed.comm.retry.count", 0),
        ("distributed.comm.offload", "10MiB"),
        ("distributed.comm.compression", False),
        ("distributed.client.heartbeat", "5s"),
        ("distributed.admin.tick.interval", "20ms"),
        ("distributed.admin.tick.limit", "3s"),
        ("distributed.admin.pdb-on-err", False),
    ],
)
def test_defaults(key, expected):
    assert get(key) == expected


def test_default_durations_and_sizes_parse():
    def walk(d, prefix):
        for k, v in d.items():
            if isinstance(v, dict):
                yield from walk(v, f"{prefix}.{k}")
            else:
                yield f"{prefix}.{k}", v

    for key, value in walk(config.defaults["distributed"], "distributed"):
        if isinstance(value, str) and value[:1].isdigit():
            if value[-1].upper() == "B":
                assert parse_bytes(value) > 0, key
            else:
                assert parse_timedelta(value) >= 0, key
    assert get_timedelta("distributed.worker.heartbeat-interval") > 0
    assert isinstance(get("distributed.nanny.pre-spawn-environ"), dict)
    assert get_timedelta("distributed.deploy.lost-worker-timeout") > 0


def test_get_key_forms():
    assert get("distributed.scheduler.allowed_failures") == 3
    assert get("Distributed.Scheduler.Allowed-Failures") == 3
    assert get("distributed.worker.memory")["target"] == 0.6
    assert get("distributed.nanny.pre-spawn-environ.OMP_NUM_THREADS") == 1
    assert get("distributed.nanny.pre_spawn_environ.omp-num-threads") == 1


def test_get_override_and_default():
    key = "distributed.scheduler.allowed-failures"
    assert get(key, override_with=7) == 7
    assert get(key, override_with=0) == 0
    assert get(key, override_with=False) is False
    assert get(key, override_with=None) == 3
    assert get("distributed.nope", default=None) is None
    assert get("distributed.nope", 5) == 5
    assert get("distributed.scheduler.allowed-failures.deeper", "x") == "x"


def test_get_missing_key_error():
    with pytest.raises(KeyError, match="distributed.scheduler.nope") as info:
        get("distributed.scheduler.nope")
    assert "DASK_DISTRIBUTED__SCHEDULER__NOPE" in str(info.value)


def test_env_var():
    assert env_var("distributed.comm.timeouts.connect") == (
        "DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT"
    )
    assert env_var("distributed.scheduler.worker-ttl") == (
        "DASK_DISTRIBUTED__SCHEDULER__WORKER_TTL"
    )


# ----------------------------------------------------------- environment variables


def test_env_read_on_refresh(monkeypatch):
    monkeypatch.setenv("DASK_DISTRIBUTED__SCHEDULER__WORKER_TTL", "10s")
    assert get("distributed.scheduler.worker-ttl") == "5 minutes"  # cached
    refresh()
    assert get("distributed.scheduler.worker-ttl") == "10s"
    assert get_timedelta("distributed.scheduler.worker-ttl") == 10.0
    monkeypatch.delenv("DASK_DISTRIBUTED__SCHEDULER__WORKER_TTL")
    refresh()
    assert get("distributed.scheduler.worker-ttl") == "5 minutes"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("0.5", 0.5),
        ("12", 12),
        ("1e9", 1e9),
        ("True", True),
        ("false", False),
        ("None", None),
        ("null", None),
        ("[1, 'a']", [1, "a"]),
        ("{'a': 1}", {"a": 1}),
        ("'quoted'", "quoted"),
        ("10s", "10s"),
        ("2GiB", "2GiB"),
        ("tcp://1.2.3.4:8786", "tcp://1.2.3.4:8786"),
        ("os.system('x')", "os.system('x')"),
        ("", ""),
    ],
)
def test_env_literal_parsing(monkeypatch, raw, expected):
    monkeypatch.setenv("DASK_DISTRIBUTED__WORKER__MEMORY__TARGET", raw)
    refresh()
    assert get("distributed.worker.memory.target") == expected


def test_env_names(monkeypatch):
    monkeypatch.setenv("DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT", "10s")
    monkeypatch.setenv("dask_distributed__scheduler__allowed_failures", "9")
    monkeypatch.setenv("DASK_DISTRIBUTED__NEW_SECTION__SOME_KEY", "1")
    monkeypatch.setenv("DASK_DISTRIBUTED__CLIENT__HEARTBEAT__X", "1")
    monkeypatch.setenv("DASK_DISTRIBUTED__", "ignored")
    monkeypatch.setenv("DASK_OTHER__THING", "ignored")
    refresh()
    assert get("distributed.comm.timeouts.connect") == "10s"
    assert get("distributed.comm.timeouts.tcp") == "30s"  # siblings kept
    assert get("distributed.scheduler.allowed-failures") == 9
    assert get("distributed.new-section.some_key") == 1
    assert get("distributed.client.heartbeat") == {"x": 1}
    assert get("other.thing", None) is None


def test_env_does_not_mutate_defaults(monkeypatch):
    monkeypatch.setenv("DASK_DISTRIBUTED__WORKER__MEMORY__TARGET", "0.1")
    refresh()
    assert config.defaults["distributed"]["worker"]["memory"]["target"] == 0.6


# --------------------------------------------------------------------------- set


def test_set_context_manager_restores():
    key = "distributed.scheduler.allowed-failures"
    with config.set({key: 1}):
        assert get(key) == 1
        with config.set({"distributed.scheduler.allowed_failures": 2}):
            assert get(key) == 2
        assert get(key) == 1
    assert get(key) == 3


def test_set_restores_on_error():
    with (
        pytest.raises(RuntimeError),
        config.set({"distributed.comm.compression": "lz4"}),
    ):
        assert get("distributed.comm.compression") == "lz4"
        raise RuntimeError
    assert get("distributed.comm.compression") is False


def test_set_kwargs_nested_and_new_keys():
    with config.set(distributed__scheduler__work_stealing=False):
        assert get("distributed.scheduler.work-stealing") is False
    with config.set({"distributed.worker.memory": {"target": 0.1}}):
        assert get("distributed.worker.memory") == {"target": 0.1}
        with pytest.raises(KeyError):
            get("distributed.worker.memory.spill")
    assert get("distributed.worker.memory.spill") == 0.7
    with config.set({"distributed.brand-new.key": "v"}):
        assert get("distributed.brand_new.key") == "v"
    assert get("distributed.brand-new.key", None) is None


def test_set_without_with_and_out_of_order_exit():
    a = config.set({"distributed.scheduler.allowed-failures": 1})
    b = config.set({"distributed.scheduler.validate": True})
    assert get("distributed.scheduler.allowed-failures") == 1
    a.__exit__(None, None, None)
    assert get("distributed.scheduler.allowed-failures") == 3
    assert get("distributed.scheduler.validate") is True
    b.__exit__(None, None, None)
    b.__exit__(None, None, None)  # idempotent
    assert get("distributed.scheduler.validate") is False


def test_set_beats_env_and_survives_refresh(monkeypatch):
    monkeypatch.setenv("DASK_DISTRIBUTED__SCHEDULER__WORKER_TTL", "10s")
    with config.set({"distributed.scheduler.worker-ttl": "20s"}):
        refresh()
        assert get_timedelta("distributed.scheduler.worker-ttl") == 20.0
    assert get_timedelta("distributed.scheduler.worker-ttl") == 10.0


def test_set_copies_value():
    value = {"outgoing": 1, "incoming": 2}
    with config.set({"distributed.worker.connections": value}):
        value["outgoing"] = 100
        assert get("distributed.worker.connections.outgoing") == 1


# ------------------------------------------------------- get_timedelta/get_bytes


def test_get_timedelta_and_bytes():
    assert get_timedelta("distributed.scheduler.worker-ttl") == 300.0
    assert get_timedelta("distributed.admin.tick.interval") == pytest.approx(0.02)
    assert get_timedelta("distributed.comm.timeouts.connect", override=5) == 5.0
    assert get_timedelta("distributed.comm.timeouts.connect", "1m") == 60.0
    assert get_timedelta("distributed.scheduler.idle-timeout") is None
    assert get_bytes("distributed.comm.offload") == 10 * 2**20
    assert get("distributed.comm.max-message-size") == "auto"  # half the memory (comm/tcp.py)
    assert get_bytes("distributed.scheduler.default-data-size") == 1024
    assert get_bytes("distributed.comm.offload", override="1kB") == 1000
    with config.set({"distributed.comm.offload": None}):
        assert get_bytes("distributed.comm.offload") is None


def test_get_timedelta_error_names_key_and_env_var(monkeypatch):
    monkeypatch.setenv("DASK_DISTRIBUTED__SCHEDULER__WORKER_TTL", "abc")
    refresh()
    with pytest.raises(ValueError) as info:
        get_timedelta("distributed.scheduler.worker-ttl")
    msg = str(info.value)
    assert (
        "DASK_DISTRIBUTED__SCHEDULER__WORKER_TTL='abc' is not a valid duration" in msg
    )
    assert "'distributed.scheduler.worker-ttl'" in msg


def test_get_bytes_error_names_key_and_env_var():
    with (
        config.set({"distributed.comm.offload": "ten megs"}),
        pytest.raises(ValueError) as info,
    ):
        get_bytes("distributed.comm.offload")
    msg = str(info.value)
    assert "DASK_DISTRIBUTED__COMM__OFFLOAD='ten megs' is not a valid byte size" in msg
    assert "'distributed.comm.offload'" in msg


def test_override_errors_name_key():
    with pytest.raises(ValueError, match=r"'xyz' \(given explicitly\).*worker-ttl"):
        get_timedelta("distributed.scheduler.worker-ttl", override="xyz")
    with pytest.raises(ValueError, match=r"'xyz' \(given explicitly\).*offload"):
        get_bytes("distributed.comm.offload", override="xyz")


def test_missing_key_in_helpers():
    with pytest.raises(KeyError):
        get_timedelta("distributed.nope")
    assert get_bytes("distributed.nope", override=10) == 10


# --------------------------------------------------------------------------- dask


def fake_dask(values, monkeypatch, error=None):
    def dask_get(key, default=None):
        if error is not None:
            raise error
        return values.get(key.replace("_", "-"), default)

    module = types.ModuleType("dask")
    module.config = types.SimpleNamespace(get=dask_get)
    monkeypatch.setitem(sys.modules, "dask", module)


def test_dask_config_honoured(monkeypatch):
    fake_dask({"distributed.scheduler.allowed-failures": 11}, monkeypatch)
    assert get("distributed.scheduler.allowed-failures") == 11
    assert get("distributed.scheduler.allowed-failures", override_with=1) == 1
    assert get("distributed.scheduler.validate") is False  # not set in dask
    with config.set({"distributed.scheduler.allowed-failures": 2}):
        assert get("distributed.scheduler.allowed-failures") == 2
    monkeypatch.delitem(sys.modules, "dask")
    assert get("distributed.scheduler.allowed-failures") == 3


def test_dask_partial_dict_merged(monkeypatch):
    fake_dask({"distributed.worker.memory": {"target": 0.2}}, monkeypatch)
    memory = get("distributed.worker.memory")
    assert memory["target"] == 0.2
    assert memory["spill"] == 0.7
    assert config.defaults["distributed"]["worker"]["memory"]["target"] == 0.6


def test_dask_errors_ignored(monkeypatch):
    fake_dask({}, monkeypatch, error=TypeError("old dask"))
    assert get("distributed.scheduler.allowed-failures") == 3


def test_import_does_not_import_dask():
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('cfg', {config.__file__!r})\n"
        "mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)\n"
        "mod.get('distributed.scheduler.allowed-failures')\n"
        "assert 'dask' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_doctests():
    results = doctest.testmod(config)
    assert results.failed == 0
    assert results.attempted > 10
