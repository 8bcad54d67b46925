"""Address parsing: every address is normalized to ``'tcp://host:port'``
(or ``'tls://host:port'``; an address without a scheme is ``tcp://``)."""

from __future__ import annotations

__all__ = [
    "normalize_address",
    "parse_address",
    "unparse_address",
    "get_address_host",
    "get_address_host_port",
]


def parse_address(address: str) -> tuple[str, str]:
    """Split an address into scheme and location.

    >>> parse_address("tcp://127.0.0.1:8786")
    ('tcp', '127.0.0.1:8786')
    >>> parse_address("127.0.0.1:8786")
    ('tcp', '127.0.0.1:8786')
    """
    if not isinstance(address, str):
        raise TypeError(f"expected an address string, got {address!r}")
    scheme, sep, loc = address.rpartition("://")
    return (scheme or "tcp"), loc


def unparse_address(scheme: str, loc: str) -> str:
    """The address string for a scheme and location.

    >>> unparse_address("tcp", "127.0.0.1:1")
    'tcp://127.0.0.1:1'
    """
    return f"{scheme}://{loc}"


def normalize_address(address) -> str:
    """The ``'tcp://host:port'`` form of any address users may give.

    Accepts ``'tcp://host:port'``, ``'host:port'``, ``('host', port)`` and an
    object with a ``scheduler_address`` attribute (a cluster).

    >>> normalize_address(("127.0.0.1", 8786))
    'tcp://127.0.0.1:8786'
    >>> normalize_address("localhost:8786")
    'tcp://localhost:8786'
    """
    if hasattr(address, "scheduler_address"):
        address = address.scheduler_address
    if isinstance(address, (tuple, list)) and len(address) == 2:
        host, port = address
        address = f"{host}:{int(port)}"
    scheme, loc = parse_address(address)
    if scheme not in ("tcp", "tls"):
        raise ValueError(
            f"unsupported transport {scheme!r} in address {address!r}: use tcp:// or tls://"
        )
    host, port = _split_host_port(loc, address)
    return unparse_address(scheme, f"{host}:{port}")


def get_address_host_port(address: str) -> tuple[str, int]:
    """Host and port of an address.

    >>> get_address_host_port("tcp://127.0.0.1:8786")
    ('127.0.0.1', 8786)
    """
    scheme, loc = parse_address(address)
    return _split_host_port(loc, address)


def get_address_host(address: str) -> str:
    """Host of an address.

    >>> get_address_host("tcp://127.0.0.1:8786")
    '127.0.0.1'
    """
    return get_address_host_port(address)[0]


def _split_host_port(loc: str, original) -> tuple[str, int]:
    if loc.startswith("["):  # [ipv6]:port
        host, _, port = loc[1:].partition("]:")
    else:
        host, sep, port = loc.rpartition(":")
        if not sep:
            raise ValueError(f"address {original!r} has no port")
    try:
        return host, int(port)
    except ValueError:
        raise ValueError(f"address {original!r} has an invalid port {port!r}") from None
