"""How many connections a listener admits, and who is told BUSY.

Upstream dask.distributed bounds nothing here: a peer that opens sockets
faster than they close, or opens them and stays silent, makes the server
run out of file descriptors, and then every accept fails for everyone.  A
listener here keeps an ``Admission`` (a small state machine with no I/O) and
asks it before serving each accepted socket:

- **Connections**: at most ``distributed.comm.max-connections`` open at once
  (``auto``: 90% of the process's file-descriptor soft limit, leaving room
  for files, pipes and outgoing connections).
- **Pending handshakes**: sockets accepted but not yet through the TLS and
  authentication handshakes, at most ``max-pending-handshakes`` in all and
  ``max-pending-handshakes-per-peer`` from one peer host, so one slow or
  hostile host cannot starve the others.  Each handshake also has a deadline
  (``distributed.comm.timeouts.handshake``).

A socket over a cap is told BUSY (the handshake's status 5, which clients
retry with backoff) and closed; nothing it sent is read.  Refusals are
logged once per peer host per ``_WARN_INTERVAL`` seconds, with the number
suppressed since, and counted in ``COUNTERS`` for ``/metrics``.

Everything here runs on one event loop and is not thread-safe.
"""

from __future__ import annotations

import logging
import resource
import time
from collections import Counter
from dataclasses import dataclass

from distributed import config

__all__ = ["COUNTERS", "Admission", "Limits", "raise_fd_limit", "warn_refused"]

logger = logging.getLogger(__name__)

#: Process-wide refusal counts by reason ("busy", "auth-failed", ...), for
#: ``comm_auth_failures_total{reason}`` and friends.
COUNTERS: Counter[str] = Counter()

_WARN_INTERVAL = 10.0
_last_warning: dict[str, tuple[float, int]] = {}  # peer host -> (time, suppressed)


def warn_refused(local: str, peer: str, reason: str, counter: str) -> None:
    """Count a refusal under ``counter`` and log it: one WARNING per peer
    host per interval, the rest counted as suppressed.

    >>> warn_refused("tcp://127.0.0.1:8786", "tcp://10.0.0.9:4321", "busy", "busy")
    """
    COUNTERS[counter] += 1
    host = peer.rsplit(":", 1)[0]
    now = time.monotonic()
    last, suppressed = _last_warning.get(host, (-_WARN_INTERVAL, 0))
    if now - last < _WARN_INTERVAL:
        _last_warning[host] = (last, suppressed + 1)
        return
    extra = f" (+{suppressed} suppressed)" if suppressed else ""
    logger.warning("%s: rejected %s: %s%s", local, peer, reason, extra)
    _last_warning[host] = (now, 0)


def _fd_soft_limit() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def raise_fd_limit() -> int:
    """Raise this process's file-descriptor soft limit to at least half the
    hard limit (a scheduler of many workers needs many sockets); returns the
    soft limit now in force.

    >>> raise_fd_limit() > 0
    True
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        wanted = max(soft, 1 << 16) if soft != resource.RLIM_INFINITY else soft
    else:
        wanted = max(soft, hard // 2)
    if wanted != soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError) as e:  # a container may forbid it
            logger.info("could not raise the open-file limit from %d to %d: %s", soft, wanted, e)
    return _fd_soft_limit()


def _positive_int(key: str, value) -> int:
    if type(value) is not int or value <= 0:
        raise ValueError(f"{key} must be a positive integer, not {value!r}")
    return value


@dataclass(frozen=True)
class Limits:
    """The caps one listener enforces.

    >>> Limits(max_connections=10, max_pending=4, max_pending_per_peer=2).max_pending
    4
    """

    max_connections: int
    max_pending: int
    max_pending_per_peer: int

    def __post_init__(self) -> None:
        for name in ("max_connections", "max_pending", "max_pending_per_peer"):
            _positive_int(name, getattr(self, name))

    @classmethod
    def from_config(cls) -> Limits:
        """The caps in ``distributed.comm.*`` now (``auto`` resolved).

        >>> Limits.from_config().max_connections > 0
        True
        """
        conns = config.get("distributed.comm.max-connections")
        if conns == "auto":
            conns = max(int(_fd_soft_limit() * 0.9), 1)
        key = "distributed.comm.max-"
        return cls(
            max_connections=_positive_int(key + "connections", conns),
            max_pending=_positive_int(key + "pending-handshakes",
                                      config.get(key + "pending-handshakes")),
            max_pending_per_peer=_positive_int(
                key + "pending-handshakes-per-peer",
                config.get(key + "pending-handshakes-per-peer")),
        )


class Admission:
    """Counts a listener's open connections and pending handshakes, and
    says which new ones to refuse.

    Call ``open(host)`` when a socket is accepted; when it returns True,
    call ``close(host)`` exactly once when that connection ends.  Around its
    handshake call ``begin_handshake(host)`` (False: refuse it as BUSY, and
    do not call ``end_handshake``) and ``end_handshake(host)``.

    >>> a = Admission(Limits(max_connections=1, max_pending=1, max_pending_per_peer=1))
    >>> a.open("10.0.0.1"), a.open("10.0.0.2")
    (True, False)
    >>> a.begin_handshake("10.0.0.1"), a.begin_handshake("10.0.0.1")
    (True, False)
    >>> a.end_handshake("10.0.0.1"); a.close("10.0.0.1"); a.connections
    0
    """

    def __init__(self, limits: Limits | None = None):
        self.limits = limits or Limits.from_config()
        self.connections = 0
        self.pending = 0
        self._pending_by_host: Counter[str] = Counter()

    def __repr__(self) -> str:
        return (f"<Admission connections={self.connections}/{self.limits.max_connections} "
                f"pending={self.pending}/{self.limits.max_pending}>")

    def open(self, host: str) -> bool:
        """Admit a new connection from ``host`` unless at ``max_connections``."""
        if self.connections >= self.limits.max_connections:
            return False
        self.connections += 1
        return True

    def close(self, host: str) -> None:
        """A connection that ``open`` admitted has ended."""
        if self.connections <= 0:
            raise RuntimeError("Admission.close() without a matching open()")
        self.connections -= 1

    def begin_handshake(self, host: str) -> bool:
        """Start counting a handshake from ``host``, unless over a cap."""
        limits = self.limits
        if (self.pending >= limits.max_pending
                or self._pending_by_host[host] >= limits.max_pending_per_peer):
            return False
        self.pending += 1
        self._pending_by_host[host] += 1
        return True

    def end_handshake(self, host: str) -> None:
        """A handshake that ``begin_handshake`` admitted has finished (either way)."""
        if self._pending_by_host[host] <= 0:
            raise RuntimeError(f"Admission.end_handshake({host!r}) without begin_handshake()")
        self.pending -= 1
        self._pending_by_host[host] -= 1
        if not self._pending_by_host[host]:
            del self._pending_by_host[host]
