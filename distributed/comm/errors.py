"""The errors a connection raises, shared by every transport and the handshake.

``CommClosedError`` is retryable by callers that know their request was not
processed; ``FatalCommClosedError`` and its ``AuthenticationError`` say that
retrying cannot help; ``ServerBusyError`` says the server refused us only
for now (too many connections or handshakes) and ``connect`` retries it.
"""

from __future__ import annotations

__all__ = ["AuthenticationError", "CommClosedError", "FatalCommClosedError", "ServerBusyError"]


class CommClosedError(IOError):
    """The connection is closed; the message could not be read or written."""


class FatalCommClosedError(CommClosedError):
    """The connection failed in a way retrying cannot fix (a certificate
    refused, the wrong transport for the peer): callers must not retry."""


class AuthenticationError(FatalCommClosedError):
    """The peer refused us, or we refused it; retrying will not help.

    ``status`` is the ``distributed.comm.auth.Status`` that ended the handshake.
    """

    def __init__(self, message: str, status: int = 2):
        super().__init__(message)
        self.status = status


class ServerBusyError(CommClosedError):
    """The server has too many connections or pending handshakes right now
    (``distributed.comm.max-connections``, ``max-pending-handshakes``); a
    later attempt may succeed, and ``connect`` retries with backoff."""
