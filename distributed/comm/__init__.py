"""Transports: a Comm is one connection that reads and writes whole messages.

``connect`` and ``listen`` pick the transport from the address scheme:
``tcp://`` (``distributed.comm.tcp``) or ``tls://`` (``distributed.comm.tls``,
which needs ``ssl_context=``).  Their keyword arguments are what
``Security.get_connection_args(role)`` / ``get_listen_args(role)`` return,
so ``connect(addr, **security.get_connection_args("client"))`` works.
Their ``auth=AuthConfig`` runs the shared-secret handshake
(``distributed.comm.auth_io``) on each new connection when it holds a secret.
"""

from __future__ import annotations

import asyncio
import random
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
from distributed.comm.auth_io import handshake_timeout
from distributed.comm.auth_secret import AuthConfig, late_secret
from distributed.comm.errors import (
    AuthenticationError,
    CommClosedError,
    FatalCommClosedError,
    ServerBusyError,
)
from distributed.comm.tcp import Comm, Listener

__all__ = [
    "AuthenticationError",
    "Comm",
    "CommClosedError",
    "FatalCommClosedError",
    "Listener",
    "ServerBusyError",
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
    auth=None,
) -> Comm:
    """Open a ``Comm`` to ``address`` (``tcp://`` or ``tls://``).

    See ``distributed.comm.tcp.connect`` for ``timeout`` and
    ``retry_refused``.  ``tls://`` needs ``ssl_context``; ``server_hostname``
    sets the TLS SNI name.  ``require_encryption`` refuses ``tcp://``.
    ``auth`` (an ``AuthConfig`` with a secret) authenticates both ends before
    the comm is returned; a refusal raises ``AuthenticationError``.  A
    server that answers BUSY (``distributed.comm.limits``) is tried again
    with jittered backoff until ``timeout``; a client without a secret only
    learns it is BUSY from its first read (``ServerBusyError``).

    >>> comm = await connect("tls://127.0.0.1:8786", **sec.get_connection_args("client"))  # doctest: +SKIP
    """
    address = normalize_address(address)
    _check_extra(extra_conn_args)
    if not address.startswith("tls://"):
        _refuse_plaintext(address, require_encryption, "connecting to")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    delay = 0.01
    while True:
        try:
            return await _connect_once(address, max(deadline - loop.time(), 0.001), deserialize,
                                       max_message_size, retry_refused, ssl_context,
                                       server_hostname, auth)
        except ServerBusyError as e:
            # Too many connections there right now: back off (jittered, so
            # a crowd of clients does not come back in step) and try again.
            pause = delay * random.uniform(0.5, 1.5)
            if loop.time() + pause >= deadline:
                raise ServerBusyError(f"{e} (gave up after {timeout} s)") from None
            await asyncio.sleep(pause)
            delay = min(delay * 2, 1.0)


async def _connect_once(address: str, timeout: float, deserialize: bool,
                        max_message_size: int | None, retry_refused: bool,
                        ssl_context: ssl.SSLContext | None, server_hostname: str | None,
                        auth) -> Comm:
    if address.startswith("tls://"):
        from distributed.comm.tls import connect_tls

        comm = await connect_tls(
            address, ssl_context, timeout=timeout, deserialize=deserialize,
            max_message_size=max_message_size, retry_refused=retry_refused,
            server_hostname=server_hostname,
        )
    else:
        comm = await tcp.connect(
            address, timeout=timeout, deserialize=deserialize,
            max_message_size=max_message_size, retry_refused=retry_refused,
        )
    if auth is not None and auth.secret is None and auth.mode != "disabled":
        secret = late_secret()
        if secret is not None:
            auth = AuthConfig(secret, auth.mode)
    if auth is not None and auth.secret is not None:
        from distributed.comm.auth_io import authenticate_client

        await authenticate_client(comm, auth, timeout=min(timeout, handshake_timeout()))
    return comm


def listen(
    address,
    handler: Callable[[Comm], Awaitable[None]],
    deserialize: bool = True,
    max_message_size: int | None = None,
    *,
    ssl_context: ssl.SSLContext | None = None,
    require_encryption: bool = False,
    auth=None,
    limits=None,
) -> Listener:
    """Start listening on ``address`` (``tcp://`` or ``tls://``; port 0 picks a
    free port).  The listener's ``.address`` is the address actually bound.
    With ``auth`` (an ``AuthConfig``) each connection is authenticated before
    ``handler`` sees it (see ``distributed.comm.auth_io``).

    >>> listener = listen("tls://127.0.0.1:0", handler, **sec.get_listen_args("scheduler"))  # doctest: +SKIP
    """
    address = normalize_address(address)
    if address.startswith("tls://"):
        from distributed.comm.tls import listen_tls

        listener = listen_tls(address, handler, ssl_context, deserialize=deserialize,
                              max_message_size=max_message_size, auth=auth, limits=limits)
    else:
        _refuse_plaintext(address, require_encryption, "listening on")
        listener = tcp.listen(address, handler, deserialize=deserialize,
                              max_message_size=max_message_size, auth=auth, limits=limits)
    return listener
