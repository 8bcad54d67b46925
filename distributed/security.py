"""``Security``: the TLS settings of a cluster, and the SSL contexts made from them.

A ``Security`` holds a CA, a certificate and key for each role (``client``,
``scheduler``, ``worker``), the ciphers and TLS versions allowed, and whether
plain ``tcp://`` is refused (``require_encryption``).  Each field is a kwarg
or, when not given, the configuration key ``distributed.comm.tls.*``.  A field
holding a string with a newline is PEM text kept in memory; any other string
is a file path.

Servers and clients accept ``security=`` in every form upstream accepted
(``coerce_security``): ``None``/``False`` (from the configuration), a dict of
kwargs, ``True`` (``Security.temporary()``) or a ``Security``.

TLS is always mutual here: each side must show a certificate signed by the
cluster CA (``CERT_REQUIRED`` at both ends, which cannot be turned off), and
host names are not checked because the CA is dedicated to the cluster and
peers are addressed by IP.

Two fields upstream lacks: ``auth_secret`` (the cluster's shared secret,
found as ``distributed.comm.auth_secret`` says when not given) and
``auth_mode`` (``auto``, ``required`` or ``disabled``; config
``distributed.comm.auth.mode``).  Connection and listen arguments carry them
as ``auth=AuthConfig(...)``; the servers decide when auth is on.

Unlike upstream, the repr of a ``Security`` never shows key material: a file
path is shown as ``Local (path)`` and in-memory PEM as ``Temporary
(In-memory)`` for certificates, but a key field only as ``<hidden>``.

Nothing here touches the event loop; a ``Security`` is immutable in spirit
(fields may be set, but contexts are made afresh on every call) and may be
pickled (the Nanny hands it to its worker process).
"""

from __future__ import annotations

import datetime
import os
import ssl
import tempfile
from typing import Any

from distributed import config
from distributed.comm.auth_secret import MODES, AuthConfig, find_secret

__all__ = ["Security", "coerce_security", "security_from_loader", "with_scheduler_file_secret"]

_FIELDS = {
    # slot -> configuration key under distributed.comm
    "tls_ca_file": "tls.ca-file",
    "tls_ciphers": "tls.ciphers",
    "tls_client_key": "tls.client.key",
    "tls_client_cert": "tls.client.cert",
    "tls_scheduler_key": "tls.scheduler.key",
    "tls_scheduler_cert": "tls.scheduler.cert",
    "tls_worker_key": "tls.worker.key",
    "tls_worker_cert": "tls.worker.cert",
}
_ROLES = ("client", "scheduler", "worker")
_VERSIONS = {
    None: None,
    ssl.TLSVersion.TLSv1_2: ssl.TLSVersion.TLSv1_2,
    ssl.TLSVersion.TLSv1_3: ssl.TLSVersion.TLSv1_3,
}
_CONFIG_VERSIONS = {None: None, 1.2: ssl.TLSVersion.TLSv1_2, 1.3: ssl.TLSVersion.TLSv1_3}


def _is_pem(value: Any) -> bool:
    """PEM text in memory rather than a path (upstream's convention)."""
    return isinstance(value, str) and "\n" in value


class Security:
    """TLS settings for the connections of a cluster.

    >>> sec = Security()                        # everything from the configuration
    >>> sec.require_encryption
    False
    >>> sec = Security(tls_ca_file="ca.pem", tls_client_cert="me.pem")
    >>> sec.require_encryption                  # any TLS kwarg turns it on
    True
    >>> Security(tls_certs="x")
    Traceback (most recent call last):
    ...
    TypeError: Unknown parameters: ['tls_certs']

    ``tls_min_version`` and ``tls_max_version`` take ``None``,
    ``ssl.TLSVersion.TLSv1_2`` or ``ssl.TLSVersion.TLSv1_3`` (configuration:
    ``null``, ``1.2`` or ``1.3``); the minimum defaults to TLS 1.2.
    ``extra_conn_args`` is a dict passed through ``get_connection_args``.
    ``auth_secret`` and ``auth_mode`` configure shared-secret authentication
    and do not count as TLS kwargs; the secret is never shown:

    >>> Security(auth_secret="s3cret")
    Security(
      require_encryption: False
      auth_secret: <hidden>
      auth_mode: auto
    )
    """

    __slots__ = (
        "require_encryption",
        "tls_ca_file",
        "tls_ciphers",
        "tls_min_version",
        "tls_max_version",
        "tls_client_key",
        "tls_client_cert",
        "tls_scheduler_key",
        "tls_scheduler_cert",
        "tls_worker_key",
        "tls_worker_cert",
        "extra_conn_args",
        "auth_secret",
        "auth_mode",
    )

    def __init__(self, require_encryption: bool | None = None, **kwargs: Any):
        extra_conn_args = kwargs.pop("extra_conn_args", None)
        # Not TLS settings: kept out of the bool(kwargs) below.
        auth_secret = kwargs.pop("auth_secret", None)
        auth_mode = kwargs.pop("auth_mode", None)
        known = set(_FIELDS) | {"tls_min_version", "tls_max_version"}
        unknown = sorted(k for k in kwargs if k not in known)
        if unknown:
            raise TypeError(f"Unknown parameters: {unknown}")
        if extra_conn_args is not None and not isinstance(extra_conn_args, dict):
            raise TypeError(f"extra_conn_args must be a dict, not {type(extra_conn_args).__name__}")
        # Validate everything before assigning anything: bad input changes no state.
        if auth_mode is None:
            auth_mode = config.get("distributed.comm.auth.mode", "auto")
        if auth_mode not in MODES:
            raise ValueError(f"auth_mode={auth_mode!r} is not supported, expected one of "
                             f"{list(MODES)}")
        if auth_secret is not None and (not isinstance(auth_secret, (str, bytes))
                                        or not auth_secret):
            raise TypeError("auth_secret must be a non-empty str or bytes")
        auth_secret = find_secret(auth_secret) if auth_mode != "disabled" else None
        min_version = self._version(kwargs, "tls_min_version", "tls.min-version")
        max_version = self._version(kwargs, "tls_max_version", "tls.max-version")
        if require_encryption is None:
            require_encryption = config.get("distributed.comm.require-encryption", None)
        if require_encryption is None:
            # Upstream: asking for any TLS setting means wanting encryption.
            require_encryption = bool(kwargs)
        self.require_encryption = bool(require_encryption)
        self.tls_min_version = min_version if min_version is not None else ssl.TLSVersion.TLSv1_2
        self.tls_max_version = max_version
        for field, key in _FIELDS.items():
            # A kwarg wins even when it is None.
            value = kwargs[field] if field in kwargs else config.get(f"distributed.comm.{key}", None)
            setattr(self, field, value)
        self.extra_conn_args = dict(extra_conn_args or {})
        self.auth_secret = auth_secret
        self.auth_mode = auth_mode

    @staticmethod
    def _version(kwargs: dict, field: str, key: str) -> ssl.TLSVersion | None:
        if field in kwargs:
            value = kwargs[field]
            if value not in _VERSIONS or isinstance(value, bool):
                raise ValueError(
                    f"{field}={value!r} is not supported, expected one of "
                    "[None, ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3]"
                )
            return value
        value = config.get(f"distributed.comm.{key}", None)
        if isinstance(value, bool) or value not in _CONFIG_VERSIONS:
            raise ValueError(
                f"distributed.comm.{key}={value!r} is not supported, expected one of "
                "[null, 1.2, 1.3]"
            )
        return _CONFIG_VERSIONS[value]

    # -- constructors ----------------------------------------------------

    @classmethod
    def temporary(cls, **kwargs: Any) -> Security:
        """A ``Security`` with a fresh self-signed certificate for every role.

        One RSA-2048 key and a certificate for ``dask-internal`` valid for a
        year, kept in memory (never written to disk except briefly, 0600, to
        load it).  Needs the ``cryptography`` package
        (``pip install distributed[tls]``).

        Mutual TLS with a certificate made for this cluster alone already
        proves that a peer belongs to it, so no shared secret is added (pass
        ``auth_secret=`` for one on top).  This is what lets dask-jobqueue's
        ``security=True`` work: it hands its jobs the certificates, as files,
        and nothing else.

        >>> sec = Security.temporary()              # doctest: +SKIP
        >>> sec.require_encryption                  # doctest: +SKIP
        True
        """
        try:
            from cryptography import x509
            from cryptography.hazmat.primitives import hashes, serialization
            from cryptography.hazmat.primitives.asymmetric import rsa
            from cryptography.x509.oid import NameOID
        except ImportError:
            raise ImportError(
                "Security.temporary() needs the 'cryptography' package: "
                "pip install cryptography (or distributed[tls])"
            ) from None
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dask-internal")])
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("dask-internal")]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
        fields = {"tls_ca_file": cert_pem}
        for role in _ROLES:
            fields[f"tls_{role}_cert"] = cert_pem
            fields[f"tls_{role}_key"] = key_pem
        return cls(require_encryption=True, **fields, **kwargs)

    # -- queries ---------------------------------------------------------

    def get_tls_config_for_role(self, role: str) -> dict[str, Any]:
        """The CA, ciphers, certificate and key for ``role``.

        >>> Security(tls_ca_file="ca.pem", tls_worker_cert="w.pem").get_tls_config_for_role("worker")
        {'ca_file': 'ca.pem', 'ciphers': None, 'cert': 'w.pem', 'key': None}
        """
        if role not in _ROLES:
            raise ValueError(f"unknown role {role!r}, expected one of {list(_ROLES)}")
        return {
            "ca_file": self.tls_ca_file,
            "ciphers": self.tls_ciphers,
            "cert": getattr(self, f"tls_{role}_cert"),
            "key": getattr(self, f"tls_{role}_key"),
        }

    def get_connection_args(self, role: str) -> dict[str, Any]:
        """Keyword arguments for ``distributed.comm.connect`` as ``role``.

        >>> sorted(Security().get_connection_args("client"))
        ['auth', 'extra_conn_args', 'require_encryption', 'ssl_context']
        """
        tls = self.get_tls_config_for_role(role)
        return {
            "ssl_context": self._context(tls, ssl.Purpose.SERVER_AUTH),
            "require_encryption": self.require_encryption,
            "extra_conn_args": self.extra_conn_args,
            "auth": self.auth_config(),
        }

    def get_listen_args(self, role: str) -> dict[str, Any]:
        """Keyword arguments for ``distributed.comm.listen`` as ``role``.

        >>> sorted(Security().get_listen_args("scheduler"))
        ['auth', 'require_encryption', 'ssl_context']
        """
        tls = self.get_tls_config_for_role(role)
        return {
            "ssl_context": self._context(tls, ssl.Purpose.CLIENT_AUTH),
            "require_encryption": self.require_encryption,
            "auth": self.auth_config(),
        }

    def auth_config(self) -> AuthConfig:
        """The secret and mode for ``connect``/``listen`` (``auth=``).

        >>> Security(auth_secret="s3cret").auth_config()
        AuthConfig(secret=<hidden>, mode='auto')
        """
        return AuthConfig(self.auth_secret, self.auth_mode)

    def _context(self, tls: dict[str, Any], purpose: ssl.Purpose) -> ssl.SSLContext | None:
        """An SSLContext for one role, or None when it has no CA or no certificate."""
        ca, cert, key = tls["ca_file"], tls["cert"], tls["key"]
        if not ca or not cert:
            return None
        if _is_pem(ca):
            ctx = ssl.create_default_context(purpose=purpose, cadata=ca)
        else:
            ctx = ssl.create_default_context(purpose=purpose, cafile=ca)
        if self.tls_min_version is not None:
            ctx.minimum_version = self.tls_min_version
        if self.tls_max_version is not None:
            ctx.maximum_version = self.tls_max_version
        if _is_pem(cert) or _is_pem(key):
            # ssl loads chains only from files: write them to a private temporary
            # directory for as long as loading takes.
            with tempfile.TemporaryDirectory() as tmp:
                cert_path = _write_private(tmp, "cert.pem", cert) if _is_pem(cert) else cert
                key_path = (_write_private(tmp, "key.pem", key) if _is_pem(key) else key)
                ctx.load_cert_chain(cert_path, key_path)
        else:
            ctx.load_cert_chain(cert, key)
        # Mutual TLS, always: both ends show a certificate of the cluster CA.
        ctx.verify_mode = ssl.CERT_REQUIRED
        # Peers are reached by IP and the CA is the cluster's own: names mean nothing.
        ctx.check_hostname = False
        # Strict X.509 checks (Python 3.13+) reject many self-made CA certificates.
        ctx.verify_flags &= ~getattr(ssl, "VERIFY_X509_STRICT", 0)
        if tls["ciphers"]:
            ctx.set_ciphers(tls["ciphers"])
        return ctx

    # -- display ---------------------------------------------------------

    def _fields_for_display(self) -> dict[str, str]:
        shown = {}
        for field in _FIELDS:
            value = getattr(self, field)
            if value is None:
                continue
            if field.endswith("_key"):
                shown[field] = "<hidden>" if _is_pem(value) else f"Local ({os.path.abspath(value)})"
            elif _is_pem(value):
                shown[field] = "Temporary (In-memory)"
            elif field == "tls_ciphers":
                shown[field] = value
            else:
                shown[field] = f"Local ({os.path.abspath(value)})"
        shown["require_encryption"] = repr(self.require_encryption)
        if self.auth_secret is not None:
            shown["auth_secret"] = "<hidden>"
        if self.auth_mode != "auto" or self.auth_secret is not None:
            shown["auth_mode"] = self.auth_mode
        return shown

    def __repr__(self) -> str:
        items = "".join(f"\n  {k}: {v}" for k, v in self._fields_for_display().items())
        return f"Security({items}\n)" if items else "Security()"

    def _repr_html_(self) -> str:
        import html

        rows = "".join(
            f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
            for k, v in self._fields_for_display().items()
        )
        return f"<table><caption>Security</caption>{rows}</table>"

    # -- pickling (slots and no __dict__) ----------------------------------

    def __getstate__(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for k, v in state.items():
            setattr(self, k, v)


def _write_private(directory: str, name: str, text: str) -> str:
    path = os.path.join(directory, name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


def coerce_security(security: Any) -> Security:
    """The ``Security`` meant by any accepted ``security=`` argument.

    ``None``/``False`` -> ``Security()`` (configuration), a dict ->
    ``Security(**d)``, ``True`` -> ``Security.temporary()``.

    >>> coerce_security(None).require_encryption
    False
    >>> coerce_security({"require_encryption": True}).require_encryption
    True
    >>> coerce_security("yes")
    Traceback (most recent call last):
    ...
    TypeError: security= takes a Security, a dict of its arguments, True, False or None, not 'yes'
    """
    if isinstance(security, Security):
        return security
    if security is None or security is False:
        return Security()
    if security is True:
        return Security.temporary()
    if isinstance(security, dict):
        return Security(**security)
    raise TypeError(
        "security= takes a Security, a dict of its arguments, True, False or None, "
        f"not {security!r}"
    )


def security_from_loader(address: str) -> Security | None:
    """The ``Security`` that ``distributed.client.security-loader`` gives for
    ``address``, or None when no loader is configured (or it has none).

    The setting is the import path of a callable, e.g.
    ``"mypkg.creds.load"``, called as ``load({"address": address})``; a
    ``Client`` given no ``security=`` uses it, as upstream does.

    >>> security_from_loader("tcp://127.0.0.1:8786") is None
    True
    """
    import importlib

    term = config.get("distributed.client.security-loader", None)
    if not term:
        return None
    module_name, _, attr = term.rpartition(".")
    try:
        loader = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as e:
        raise ImportError(
            f"could not import {term!r}, configured at distributed.client.security-loader: "
            "is that module installed?"
        ) from e
    security = loader({"address": address})
    if security is not None and not isinstance(security, Security):
        raise TypeError(
            f"the security loader {term!r} returned {security!r}, expected a Security or None"
        )
    return security


def with_scheduler_file_secret(security: Any, scheduler_file: str | None) -> Security:
    """``security`` with the ``auth-secret`` of a scheduler file, when it has
    no secret of its own (step 4 of the lookup order); a copy, the caller's
    object is left alone.

    >>> with_scheduler_file_secret(Security(auth_secret="mine"), None).auth_secret
    'mine'
    """
    import copy
    import json

    security = coerce_security(security)
    if scheduler_file is None or security.auth_secret is not None \
            or security.auth_mode == "disabled":
        return security
    with open(scheduler_file) as f:
        secret = json.load(f).get("auth-secret")
    if not secret:
        return security
    security = copy.copy(security)
    security.auth_secret = secret
    return security
