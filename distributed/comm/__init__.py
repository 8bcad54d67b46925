"""Transports: a Comm is one connection that reads and writes whole messages.

``connect`` and ``listen`` pick the transport from the address scheme:
``tcp://`` (``distributed.comm.tcp``) or ``tls://`` (``distributed.comm.tls``,
which needs ``ssl_context=``).  Their keyword arguments are what
``Security.get_connection_args(role)`` / ``get_listen_args(role)`` return,
so ``connect(addr, **security.get_connection_args("client"))`` works.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable

from distributed.comm import tcp
from distributed.comm.addressing import (
    get_address_host,
    get_address_host_port,
    normalize_address,
    parse_address,
    unparse_address,
)
from distributed.comm.tcp import Comm, CommClosedError, FatalCommClosedError, Listener

__all__ = [
    "Comm",
    "CommClosedError",
    "FatalCommClosedError",
    "Listener",
    "connect",
    "get_address_host",
    "get_address_host_port",
    "listen",
    "normalize_address",
    "parse_address",
    "unparse_address",
]


def _refuse_plaintext(address: str, require_encryption: bool, what: str) -> None:
    if require_encryption:
        raise RuntimeError(
            f"encryption required by Dask configuration, refusing {what} {address}: use a "
            "tls:// address with a Security holding certificates, or set "
            "require_encryption=False (distributed.comm.require-encryption)"
        )


def _check_extra(extra_conn_args: dict | None) -> None:
    if extra_conn_args:
        raise ValueError(
            f"extra_conn_args {sorted(extra_conn_args)} cannot be honoured: they are for "
            "websocket transports, and only tcp:// and tls:// exist here"
        )


async def connect(
    address,
    timeout: float = 30,
    deserialize: bool = True,
    max_message_size: int | None = None,
    retry_refused: bool = True,
    *,
    ssl_context: ssl.SSLContext | None = None,
    require_encryption: bool = False,
    extra_conn_args: dict | None = None,
    server_hostname: str | None = None,
) -> Comm:
    """Open a ``Comm`` to ``address`` (``tcp://`` or ``tls://``).

    See ``distributed.comm.tcp.connect`` for ``timeout`` and
    ``retry_refused``.  ``tls://`` needs ``ssl_context``; ``server_hostname``
    sets the TLS SNI name.  ``require_encryption`` refuses ``tcp://``.

    >>> comm = await connect("tls://127.0.0.1:8786", **sec.get_connection_args("client"))  # doctest: +SKIP
    """
    address = normalize_address(address)
    _check_extra(extra_conn_args)
    if address.startswith("tls://"):
        from distributed.comm.tls import connect_tls

        return await connect_tls(
            address, ssl_context, timeout=timeout, deserialize=deserialize,
            max_message_size=max_message_size, retry_refused=retry_refused,
            server_hostname=server_hostname,
        )
    _refuse_plaintext(address, require_encryption, "connecting to")
    return await tcp.connect(
        address, timeout=timeout, deserialize=deserialize,
        max_message_size=max_message_size, retry_refused=retry_refused,
    )


def listen(
    address,
    handler: Callable[[Comm], Awaitable[None]],
    deserialize: bool = True,
    max_message_size: int | None = None,
    *,
    ssl_context: ssl.SSLContext | None = None,
    require_encryption: bool = False,
) -> Listener:
    """Start listening on ``address`` (``tcp://`` or ``tls://``; port 0 picks a
    free port).  The listener's ``.address`` is the address actually bound.

    >>> listener = listen("tls://127.0.0.1:0", handler, **sec.get_listen_args("scheduler"))  # doctest: +SKIP
    """
    address = normalize_address(address)
    if address.startswith("tls://"):
        from distributed.comm.tls import listen_tls

        return listen_tls(address, handler, ssl_context, deserialize=deserialize,
                          max_message_size=max_message_size)
    _refuse_plaintext(address, require_encryption, "listening on")
    return tcp.listen(address, handler, deserialize=deserialize,
                      max_message_size=max_message_size)
