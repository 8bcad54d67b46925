"""Configuration for :mod:`distributed`.

Values are looked up with dotted keys such as
``"distributed.scheduler.allowed-failures"``.  Sources, highest priority first:

1. an explicit ``override_with`` argument to :func:`get` (keyword argument wins),
2. values set with :func:`set` (usable as a context manager),
3. values set with ``dask.config.set`` -- only if ``dask`` is already imported,
4. environment variables ``DASK_DISTRIBUTED__SECTION__KEY``,
5. the built-in :data:`defaults`.

Environment variables are read once and cached; call :func:`refresh` to
re-read them (servers do this when they start).  Dashes and underscores are
equivalent in keys, and key matching is case-insensitive.  Only the standard
library is used.
"""

from __future__ import annotations

import ast
import copy
import math
import numbers
import os
import re
import sys
import threading
from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any, overload

if TYPE_CHECKING:
    from typing import Self

__all__ = [
    "defaults",
    "env_var",
    "format_bytes",
    "format_time",
    "get",
    "get_bytes",
    "get_timedelta",
    "parse_bytes",
    "parse_timedelta",
    "refresh",
    "set",
]

_INF = float("inf")

#: Built-in default configuration, using upstream dask.distributed's names.
defaults: dict[str, Any] = {
    "distributed": {
        "version": 2,
        "scheduler": {
            "allowed-failures": 3,
            "bandwidth": 100_000_000,
            "blocked-handlers": [],
            "default-data-size": "1kiB",
            "events-cleanup-delay": "1h",
            "idle-timeout": None,
            "no-workers-timeout": None,
            "transition-log-length": 100_000,
            "work-stealing": True,
            "work-stealing-interval": "100ms",
            "worker-saturation": 1.1,
            "worker-ttl": "5 minutes",
            "unknown-task-duration": "500ms",
            "default-task-durations": {"rechunk-split": "1us", "split-shuffle": "1us"},
            "validate": False,
            "pickle": True,
            "locks": {"lease-validation-interval": "10s", "lease-timeout": "30s"},
            # The task stream the scheduler always records (diagnostics/task_stream.py).
            "dashboard": {"tasks": {"task-stream-length": 100_000}},
        },
        "worker": {
            "blocked-handlers": [],
            "multiprocessing-method": "spawn",
            "use-file-locking": True,
            "transfer": {"message-bytes-limit": "50MB"},
            "connections": {"outgoing": 50, "incoming": 10},
            "http": {"enabled": False},  # serve /health, /metrics, /status without dashboard_address
            "heartbeat-interval": "1s",
            "preload": [],
            "preload-argv": [],
            "daemon": True,
            "validate": False,
            "resources": {},
            "lifetime": {"duration": None, "stagger": "0 seconds", "restart": False},
            "profile": {"enabled": True, "interval": "10ms", "cycle": "1000ms"},
            "memory": {
                "recent-to-old-time": "30s",
                "transfer": 0.1,
                "target": 0.6,
                "spill": 0.7,
                "pause": 0.8,
                "terminate": 0.95,
                "max-spill": False,
                "monitor-interval": "100ms",
            },
        },
        "nanny": {
            "preload": [],
            "preload-argv": [],
            "environ": {},
            "pre-spawn-environ": {
                "MALLOC_TRIM_THRESHOLD_": 65536,
                "OMP_NUM_THREADS": 1,
                "MKL_NUM_THREADS": 1,
                "OPENBLAS_NUM_THREADS": 1,
            },
        },
        "client": {
            "heartbeat": "5s",
            "scheduler-info-interval": "2s",
            "preload": [],
            "preload-argv": [],
            # import path of f({"address": ...}) -> Security | None (security.py)
            "security-loader": None,
        },
        "deploy": {"lost-worker-timeout": "15s", "cluster-repr-interval": "500ms"},
        "adaptive": {
            "interval": "1s",
            "target-duration": "5s",
            "minimum": 0,
            "maximum": _INF,
            "wait-count": 3,
        },
        "comm": {
            "retry": {"count": 0, "delay": {"min": "1s", "max": "20s"}},
            "compression": False,
            "shard": "64MiB",
            "offload": "10MiB",
            "max-message-size": "auto",  # half the memory; see comm/tcp.py
            "max-frames": 1_000_000,  # frames per message, checked before reading lengths
            # Caps per listener (comm/limits.py): over them a connection is
            # told BUSY and closed.  auto = 90% of the open-file soft limit.
            "max-connections": "auto",
            "max-pending-handshakes": 1024,
            "max-pending-handshakes-per-peer": 256,
            "default-scheme": "tcp",
            "socket-backlog": 2048,
            # Same-host transfers (comm/shm.py): tcp:// frames of at least
            # `threshold` bytes are copied straight from the sender's memory
            # when the peer is a process of the same user on this machine.
            "shm": {"enabled": True, "threshold": "1MiB"},
            "recent-messages-log-length": 0,
            "timeouts": {"connect": "30s", "tcp": "30s", "handshake": "10s"},
            "require-encryption": None,
            # Shared-secret authentication (comm/auth_secret.py): mode auto turns
            # it on when a secret is found or a server listens off-loopback.
            "auth": {"mode": "auto", "secret": None, "secret-file": None},
            # TLS (security.py): files, or PEM text when the value has a newline.
            "tls": {
                "ciphers": None,
                "min-version": 1.2,
                "max-version": None,
                "ca-file": None,
                "scheduler": {"cert": None, "key": None},
                "worker": {"cert": None, "key": None},
                "client": {"cert": None, "key": None},
            },
        },
        # client.why (diagnostics/why.py): when running work counts as stalled.
        "diagnostics": {"why": {"outlier-factor": 40, "outlier-min-duration": "5s",
                                "stale-after": "30s"}},
        "dashboard": {
            "link": "{scheme}://{host}:{port}/status",
            # auto: a token (derived from the cluster secret) is needed off-loopback;
            # true: whenever the cluster has a secret; false: never (http/base.py).
            "require-token": "auto",
            # The event stream's tick (only while a tab listens) and the task-stream ring.
            "interval": "500ms",
            "task-stream-length": 20000,
        },
        "admin": {
            "large-graph-warning-threshold": "10MB",
            "tick": {"interval": "20ms", "limit": "3s", "cycle": "1s"},
            "max-error-length": 10000,
            "log-length": 10000,
            "low-level-log-length": 1000,
            "log-format": "%(asctime)s - %(name)s - %(levelname)s - %(message)s",
            "pdb-on-err": False,
            "system-monitor": {"interval": "500ms", "log-length": 7200},
        },
    }
}

# --------------------------------------------------------------------- parsing

_DURATION_HINT = "expected a number with an optional unit, e.g. '10s', '500ms', '5m', '1h' or '2 days'"
_BYTES_HINT = "expected e.g. '4GB', '512MiB', '10 kB' or '100'"
_NUMBER_RE = re.compile(
    r"^\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*([a-zA-Zµ]*)\s*$"
)
_TIME_UNITS: dict[str, float] = {
    name: mult
    for names, mult in [
        ("ns nanosecond nanoseconds", 1e-9),
        ("us µs microsecond microseconds", 1e-6),
        ("ms millisecond milliseconds", 1e-3),
        ("s sec secs second seconds", 1.0),
        ("m min mins minute minutes", 60.0),
        ("h hr hrs hour hours", 3600.0),
        ("d day days", 86400.0),
        ("w wk week weeks", 604800.0),
    ]
    for name in names.split()
}
_BYTE_UNITS: dict[str, int] = {"": 1, "b": 1}
for _i, _p in enumerate("kmgtp", start=1):
    _BYTE_UNITS.update({_p: 1000**_i, _p + "b": 1000**_i})
    _BYTE_UNITS.update({_p + "i": 1024**_i, _p + "ib": 1024**_i})


def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


@overload
def parse_timedelta(value: None, default: str = ...) -> None: ...
@overload
def parse_timedelta(value: str | float | timedelta, default: str = ...) -> float: ...
def parse_timedelta(value: Any, default: str = "seconds") -> float | None:
    """Convert a duration to seconds (as a float).

    Numbers and unit-less strings are interpreted in the ``default`` unit.

    >>> parse_timedelta("500ms")
    0.5
    >>> parse_timedelta("2 days")
    172800.0
    >>> parse_timedelta(3, default="ms")
    0.003
    >>> parse_timedelta(timedelta(minutes=1))
    60.0
    >>> parse_timedelta("abc")
    Traceback (most recent call last):
    ...
    ValueError: 'abc' is not a valid duration; expected a number with an optional unit, e.g. '10s', '500ms', '5m', '1h' or '2 days'
    """
    if value is None:
        return None
    if isinstance(value, timedelta):
        return value.total_seconds()
    unit = _TIME_UNITS.get(str(default).strip().lower())
    if unit is None:
        raise ValueError(f"Unknown default time unit {default!r}")
    hint = _DURATION_HINT
    if isinstance(value, str):
        match = _NUMBER_RE.match(value)
        if match is None:
            raise ValueError(f"{value!r} is not a valid duration; {hint}")
        number, suffix = match.groups()
        if suffix:
            unit = _TIME_UNITS.get(suffix.lower())
            if unit is None:
                raise ValueError(
                    f"{value!r} is not a valid duration: unknown unit {suffix!r}; {hint}"
                )
        value = float(number)
    elif not _is_number(value):
        raise ValueError(f"{value!r} is not a valid duration; {hint}")
    # divide for sub-second units so that e.g. "100us" gives exactly 1e-4
    result = float(value) / round(1 / unit) if unit < 1 else float(value) * unit
    if math.isnan(result):
        raise ValueError(f"{value!r} is not a valid duration; {hint}")
    return result


def parse_bytes(value: str | float) -> int:
    """Convert a byte size to an integer number of bytes.

    Decimal (kB, MB, GB, TB, PB) and binary (KiB, MiB, GiB, TiB, PiB) units
    are supported, case-insensitively.

    >>> parse_bytes("4GB")
    4000000000
    >>> parse_bytes("512MiB")
    536870912
    >>> parse_bytes("1e9")
    1000000000
    >>> parse_bytes(100)
    100
    >>> parse_bytes("lots")
    Traceback (most recent call last):
    ...
    ValueError: 'lots' is not a valid byte size; expected e.g. '4GB', '512MiB', '10 kB' or '100'
    """
    error = f"{value!r} is not a valid byte size; {_BYTES_HINT}"
    if isinstance(value, str):
        match = _NUMBER_RE.match(value)
        if match is None or match.group(2).lower() not in _BYTE_UNITS:
            raise ValueError(error)
        try:
            number: float = int(match.group(1))
        except ValueError:
            number = float(match.group(1))
        number *= _BYTE_UNITS[match.group(2).lower()]
    elif _is_number(value):
        number = value
    else:
        raise ValueError(error)
    if not math.isfinite(number):
        raise ValueError(error)
    return int(number)


def format_bytes(n: float) -> str:
    """Format a number of bytes for humans, using decimal units.

    >>> format_bytes(1_000_000)
    '1.00 MB'
    >>> format_bytes(1234567890)
    '1.23 GB'
    >>> format_bytes(100)
    '100 B'
    """
    for prefix, k in (
        ("PB", 1e15),
        ("TB", 1e12),
        ("GB", 1e9),
        ("MB", 1e6),
        ("kB", 1e3),
    ):
        if abs(n) >= k * 0.9:
            return f"{n / k:.2f} {prefix}"
    return f"{int(n)} B"


def format_time(seconds: float) -> str:
    """Format a duration given in seconds for humans.

    >>> format_time(0.00123)
    '1.23 ms'
    >>> format_time(4.56)
    '4.56 s'
    >>> format_time(3 * 3600 + 120)
    '3hr 2m'
    """
    n = seconds
    if n < 0:
        return "-" + format_time(-n)
    if n > 2 * 86400:
        return f"{int(n // 86400)}d {int(n % 86400 // 3600)}hr"
    if n > 2 * 3600:
        return f"{int(n // 3600)}hr {int(n % 3600 // 60)}m"
    if n > 10 * 60:
        return f"{int(n // 60)}m {int(n % 60)}s"
    if n >= 1:
        return f"{n:.2f} s"
    if n >= 1e-3:
        return f"{n * 1e3:.2f} ms"
    return f"{n * 1e6:.2f} us"


# ---------------------------------------------------------------- config state

_NO_DEFAULT: Any = object()
_MISSING: Any = object()
_ENV_PREFIX = "DASK_DISTRIBUTED__"
_LITERAL_WORDS = {"true": True, "false": False, "none": None, "null": None, "inf": _INF}

_lock = threading.RLock()
_env: dict[str, Any] | None = None  # dotted key -> value from the environment
_layers: list[dict[str, Any]] = []  # active set() calls, oldest first
_set_keys: tuple[str, ...] = ()  # canonical keys of all active set() calls
_merged: dict[str, Any] | None = None  # defaults + env + layers (the cache)


def _canon(part: str) -> str:
    return part.lower().replace("_", "-")


def _canon_key(key: str) -> str:
    return ".".join(_canon(p) for p in key.split("."))


def env_var(key: str) -> str:
    """Return the environment variable name that sets a dotted config key.

    >>> env_var("distributed.scheduler.worker-ttl")
    'DASK_DISTRIBUTED__SCHEDULER__WORKER_TTL'
    """
    return "DASK_" + "__".join(p.upper().replace("-", "_") for p in key.split("."))


def _find(d: Mapping[str, Any], part: str) -> str | None:
    if part in d:
        return part
    wanted = _canon(part)
    return next((k for k in d if isinstance(k, str) and _canon(k) == wanted), None)


def _assign(d: dict[str, Any], key: str, value: Any) -> None:
    *parents, last = key.split(".")
    for part in parents:
        k = _find(d, part)
        if k is None or not isinstance(d[k], dict):
            k = part if k is None else k
            d[k] = {}
        d = d[k]
    d[_find(d, last) or last] = value


def _lookup(cfg: Mapping[str, Any], key: str) -> Any:
    value: Any = cfg
    for part in key.split("."):
        k = _find(value, part) if isinstance(value, Mapping) else None
        if k is None:
            return _MISSING
        value = value[k]
    return value


def _parse_literal(text: str) -> Any:
    stripped = text.strip()
    if stripped.lower() in _LITERAL_WORDS:
        return _LITERAL_WORDS[stripped.lower()]
    try:
        return ast.literal_eval(stripped)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return text


def _read_env() -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name in sorted(os.environ):
        if not name.upper().startswith(_ENV_PREFIX):
            continue
        parts = name[len("DASK_") :].split("__")
        if all(parts):
            result[".".join(_canon(p) for p in parts)] = _parse_literal(
                os.environ[name]
            )
    return result


def _rebuild() -> dict[str, Any]:
    global _merged, _set_keys
    with _lock:
        merged = copy.deepcopy(defaults)
        for key, value in (_env or {}).items():
            _assign(merged, key, value)
        for layer in _layers:
            for key, value in layer.items():
                _assign(merged, key, copy.deepcopy(value))
        _set_keys = tuple(_canon_key(k) for layer in _layers for k in layer)
        _merged = merged
        return merged


def _load() -> dict[str, Any]:
    refresh()
    assert _merged is not None
    return _merged


def refresh() -> None:
    """Re-read ``DASK_DISTRIBUTED__*`` environment variables.

    Values set with :func:`set` are kept.

    >>> refresh()
    """
    global _env
    with _lock:
        _env = _read_env()
        _rebuild()


def _set_locally(key: str) -> bool:
    ck = _canon_key(key)
    return any(
        k == ck or ck.startswith(k + ".") or k.startswith(ck + ".") for k in _set_keys
    )


def _deep_update(base: dict[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    for k, v in new.items():
        old = base.get(_find(base, k) or k)
        if isinstance(v, Mapping) and isinstance(old, dict):
            _deep_update(old, v)
        else:
            base[_find(base, k) or k] = v
    return base


def _from_dask(key: str) -> Any:
    try:
        return sys.modules["dask"].config.get(key, default=_MISSING)
    except (AttributeError, KeyError, TypeError, ValueError):
        return _MISSING


def get(key: str, default: Any = _NO_DEFAULT, override_with: Any = None) -> Any:
    """Look up a dotted configuration key.

    If ``override_with`` is not None it is returned directly, so that explicit
    keyword arguments win over configuration.

    >>> get("distributed.scheduler.allowed-failures")
    3
    >>> get("distributed.scheduler.allowed_failures", override_with=10)
    10
    >>> get("distributed.no-such-key", default="fallback")
    'fallback'
    """
    if override_with is not None:
        return override_with
    cfg = _merged if _merged is not None else _load()
    value = _lookup(cfg, key)
    if "dask" in sys.modules and not _set_locally(key):
        dask_value = _from_dask(key)
        if dask_value is not _MISSING:
            if isinstance(dask_value, Mapping) and isinstance(value, dict):
                return _deep_update(copy.deepcopy(value), dask_value)
            return dask_value
    if value is not _MISSING:
        return value
    if default is not _NO_DEFAULT:
        return default
    raise KeyError(
        f"Configuration key {key!r} not found (environment variable {env_var(key)})"
    )


class _SetConfig:
    """Handle returned by :func:`set`; on context exit the values are reverted."""

    def __init__(self, layer: dict[str, Any]) -> None:
        self._layer = layer

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        with _lock:
            for i, layer in enumerate(_layers):
                if layer is self._layer:
                    del _layers[i]
                    _rebuild()
                    break


def set(arg: Mapping[str, Any] | None = None, /, **kwargs: Any) -> _SetConfig:
    """Set configuration values, reverted when used as a context manager exits.

    Keys are dotted; in keyword arguments a double underscore stands for a dot.

    >>> with set({"distributed.scheduler.allowed-failures": 1}):
    ...     get("distributed.scheduler.allowed-failures")
    1
    >>> with set(distributed__scheduler__work_stealing=False):
    ...     get("distributed.scheduler.work-stealing")
    False
    >>> get("distributed.scheduler.allowed-failures")
    3
    """
    layer = {k: copy.deepcopy(v) for k, v in (arg or {}).items()}
    layer.update({k.replace("__", "."): copy.deepcopy(v) for k, v in kwargs.items()})
    with _lock:
        if _env is None:
            refresh()
        _layers.append(layer)
        _rebuild()
    return _SetConfig(layer)


def _bad_value(key: str, value: Any, what: str, hint: str, overridden: bool) -> str:
    source = (
        f"{value!r} (given explicitly)" if overridden else f"{env_var(key)}={value!r}"
    )
    return f"{source} is not a valid {what} for config key {key!r}; {hint}"


def get_timedelta(key: str, override: Any = None) -> float | None:
    """Read a duration from configuration (or ``override``) as seconds.

    Returns None if the value is None (e.g. "no timeout").

    >>> get_timedelta("distributed.scheduler.worker-ttl")
    300.0
    >>> get_timedelta("distributed.scheduler.worker-ttl", override="10s")
    10.0
    """
    value = get(key) if override is None else override
    try:
        return parse_timedelta(value)
    except ValueError as e:
        raise ValueError(
            _bad_value(key, value, "duration", _DURATION_HINT, override is not None)
        ) from e


def get_bytes(key: str, override: Any = None) -> int | None:
    """Read a byte size from configuration (or ``override``) as an int.

    Returns None if the value is None.

    >>> get_bytes("distributed.comm.offload")
    10485760
    >>> get_bytes("distributed.comm.offload", override="1kB")
    1000
    """
    value = get(key) if override is None else override
    if value is None:
        return None
    try:
        return parse_bytes(value)
    except ValueError as e:
        raise ValueError(
            _bad_value(key, value, "byte size", _BYTES_HINT, override is not None)
        ) from e
