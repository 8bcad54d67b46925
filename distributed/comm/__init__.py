"""Transports: a Comm is one connection that reads and writes whole messages."""

from distributed.comm.addressing import (
    get_address_host,
    get_address_host_port,
    normalize_address,
    parse_address,
    unparse_address,
)
from distributed.comm.tcp import Comm, CommClosedError, Listener, connect, listen

__all__ = [
    "Comm",
    "CommClosedError",
    "Listener",
    "connect",
    "get_address_host",
    "get_address_host_port",
    "listen",
    "normalize_address",
    "parse_address",
    "unparse_address",
]
