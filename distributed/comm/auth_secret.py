"""Where the cluster's authentication secret comes from, and when auth is on.

Lookup order (client and server alike), first found wins:

1. ``Security(auth_secret=...)``;
2. config ``distributed.comm.auth.secret`` (env
   ``DASK_DISTRIBUTED__COMM__AUTH__SECRET``, for containers);
3. config ``distributed.comm.auth.secret-file`` (``--auth-secret-file``):
   configured but unreadable or too open is fatal (fail closed);
4. the default file ``{DASK_CONFIG or ~/.config/dask}/distributed-auth-secret``
   if it exists, so same-user processes need no flags.

``auth_needed`` is the ``auto`` policy: on when a secret is known or a server
listens on a non-loopback ``tcp://`` address; then ``ensure_secret`` writes a
fresh secret to a 0600 file if none was found.  The secret itself is never
logged or shown: ``AuthConfig``'s repr hides it.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import secrets
import stat
from dataclasses import dataclass, field

from distributed import config

__all__ = [
    "MODES",
    "AuthConfig",
    "auth_needed",
    "dashboard_token",
    "dashboard_token_for",
    "default_secret_path",
    "ensure_secret",
    "find_secret",
    "is_loopback",
    "late_secret",
    "read_secret_file",
]

logger = logging.getLogger(__name__)

MODES = ("auto", "required", "disabled")
_DEFAULT_NAME = "distributed-auth-secret"


@dataclass(frozen=True)
class AuthConfig:
    """What a listener or connector needs: the secret (or None) and the mode.

    >>> AuthConfig("s3cret", "auto")
    AuthConfig(secret=<hidden>, mode='auto')
    """

    secret: str | bytes | None = field(default=None)
    mode: str = "auto"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"auth mode {self.mode!r} is not one of {list(MODES)}")
        if self.secret is not None and (not isinstance(self.secret, (str, bytes))
                                        or not self.secret):
            raise TypeError("the authentication secret must be a non-empty str or bytes")

    def __repr__(self) -> str:  # never the secret
        shown = "<hidden>" if self.secret is not None else "None"
        return f"AuthConfig(secret={shown}, mode={self.mode!r})"

    __str__ = __repr__


def config_dir() -> str:
    """The dask configuration directory (``DASK_CONFIG`` or ``~/.config/dask``)."""
    return os.environ.get("DASK_CONFIG") or os.path.join(os.path.expanduser("~"), ".config", "dask")


def default_secret_path() -> str:
    """Where a generated secret lives and where every process looks last.

    >>> default_secret_path().endswith("distributed-auth-secret")
    True
    """
    return os.path.join(config_dir(), _DEFAULT_NAME)


def read_secret_file(path: str) -> str:
    """The secret in ``path``; refuse a file others can read (as ssh does).

    Raises ``OSError`` if it cannot be read, ``PermissionError`` if too
    open, ``ValueError`` if empty.
    """
    path = os.path.expanduser(path)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd) as f:
        st = os.fstat(f.fileno())
        if os.name == "posix":
            mode = stat.S_IMODE(st.st_mode)
            if mode & 0o077 or st.st_uid != os.geteuid():
                raise PermissionError(
                    f"permissions {mode:04o} for {path} are too open: the authentication "
                    f"secret file must be private to its owner (chmod 600 {path})"
                )
        text = f.read().strip()
    if not text:
        raise ValueError(f"the authentication secret file {path} is empty")
    if len(text) < 32:
        logger.warning("the authentication secret in %s is short (< 32 characters)", path)
    return text


def find_secret(explicit: str | bytes | None = None) -> str | bytes | None:
    """The secret by the lookup order of the module docstring, or None.

    >>> find_secret("given")
    'given'
    """
    if explicit is not None:
        return explicit
    value = config.get("distributed.comm.auth.secret", None)
    if value:
        return str(value)
    path = config.get("distributed.comm.auth.secret-file", None)
    if path:
        return read_secret_file(str(path))  # configured: any failure is fatal
    default = default_secret_path()
    if os.path.exists(default):
        return read_secret_file(default)
    return None


def dashboard_token(secret: str | bytes) -> str:
    """The dashboard's access token: derived from the cluster secret (HMAC),
    so a browser, its history and its cookies never hold the secret itself.

    >>> len(dashboard_token("s3cret")), dashboard_token("s3cret") == dashboard_token(b"s3cret")
    (64, True)
    """
    import hashlib
    import hmac

    key = secret.encode() if isinstance(secret, str) else bytes(secret)
    return hmac.new(key, b"dask dashboard v1", hashlib.sha256).hexdigest()


def dashboard_token_for(host: str, secret: str | bytes | None) -> str | None:
    """The token a dashboard bound to (or reached at) ``host`` requires, by
    ``distributed.dashboard.require-token``: ``auto`` (default) when there is
    a secret and ``host`` is not loopback; ``true`` whenever there is a
    secret (a login node other users share, where even 127.0.0.1 is not
    private); ``false`` never.

    >>> dashboard_token_for("127.0.0.1", "s3cret") is None
    True
    >>> dashboard_token_for("10.0.0.5", "s3cret") == dashboard_token("s3cret")
    True
    """
    mode = config.get("distributed.dashboard.require-token", "auto")
    if mode not in ("auto", True, False):
        raise ValueError("distributed.dashboard.require-token must be auto, true or false, "
                         f"not {mode!r}")
    if mode is True and secret is None:
        raise ValueError("distributed.dashboard.require-token is true but the cluster has no "
                         "secret to derive the token from (distributed.comm.auth.secret)")
    if secret is None or mode is False or (mode == "auto" and is_loopback(host)):
        return None
    return dashboard_token(secret)


_late: tuple[tuple, str] | None = None  # ((path, mtime, inode), secret) last read


def late_secret() -> str | None:
    """The secret in the default file, for a connector that has none: the
    file may have appeared after this process looked (a worker that listens
    off-loopback generates it), and then its listeners require it.  One
    ``stat`` per call; the file is read again only when it changed.

    >>> late_secret() is None or isinstance(late_secret(), str)
    True
    """
    global _late
    path = default_secret_path()
    try:
        st = os.stat(path)
    except OSError:
        return None
    key = (path, st.st_mtime_ns, st.st_ino)
    if _late is None or _late[0] != key:
        _late = (key, read_secret_file(path))
    return _late[1]


def is_loopback(host: str) -> bool:
    """Whether ``host`` (from an address, no scheme) reaches this machine only.

    >>> is_loopback("127.0.0.1"), is_loopback("localhost"), is_loopback("0.0.0.0")
    (True, True, False)
    """
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # "", a LAN name: assume reachable from elsewhere


def auth_needed(mode: str, secret: str | bytes | None, listen_addresses: list[str]) -> bool:
    """The policy: does a server listening on these addresses authenticate?

    >>> auth_needed("auto", None, ["tcp://127.0.0.1:8786"])
    False
    >>> auth_needed("auto", None, ["tcp://0.0.0.0:8786"])
    True
    >>> auth_needed("auto", "s3cret", ["tcp://127.0.0.1:8786"])
    True
    """
    if mode not in MODES:
        raise ValueError(f"auth mode {mode!r} is not one of {list(MODES)}")
    if mode == "disabled":
        return False
    if mode == "required" or secret is not None:
        return True
    from distributed.comm.addressing import get_address_host, parse_address

    for address in listen_addresses:
        # tls:// with mutual certificates is authenticated by them already.
        if parse_address(address)[0] == "tcp" and not is_loopback(get_address_host(address)):
            return True
    return False


def ensure_secret(path: str | None = None) -> str:
    """Read the secret at ``path`` (default: the configured secret-file, else
    ``default_secret_path()``), generating it first if missing.

    The file is created 0600 in a 0700 directory, under a temporary name and
    linked into place, so two processes racing both end up with one secret.
    Logs the path, never the value.
    """
    path = os.path.expanduser(path or config.get("distributed.comm.auth.secret-file", None)
                              or default_secret_path())
    if os.path.exists(path):
        return read_secret_file(path)
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, mode=0o700, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
            logger.info("generated an authentication secret in %s", path)
        except FileExistsError:
            pass  # another process won the race: use theirs
    finally:
        os.unlink(tmp)
    return read_secret_file(path)
