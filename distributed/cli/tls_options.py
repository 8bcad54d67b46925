"""The TLS and authentication options shared by ``dask-scheduler`` and ``dask-worker``.

``--tls-ca-file``, ``--tls-cert`` and ``--tls-key`` (existing files, made
absolute) become a ``security=`` dict for the program's role, as upstream
dask.distributed does; ``--protocol tcp|tls`` picks the transport (with
certificates and no ``--protocol``, the server listens on ``tls://``).
Without any of them the servers fall back on the configuration
(``distributed.comm.tls.*``).

``--auth-secret-file PATH`` names a file (mode 0600) holding the cluster's
shared secret; the secret is read from it, never given on the command line
(``/proc/PID/cmdline`` is world-readable).

>>> import argparse
>>> p = argparse.ArgumentParser(); add_tls_arguments(p)
>>> security_from_args(p.parse_args([]), "worker") is None
True
"""

from __future__ import annotations

import argparse
import os

__all__ = ["add_tls_arguments", "security_from_args"]


def _existing_file(text: str) -> str:
    """argparse ``type=``: a file that exists, as an absolute path."""
    path = os.path.abspath(os.path.expanduser(text))
    if not os.path.isfile(path):
        raise argparse.ArgumentTypeError(f"file {text!r} does not exist")
    return path


def _secret_file(text: str) -> str:
    """argparse ``type=``: a readable, private secret file, as an absolute path."""
    from distributed.comm.auth_secret import read_secret_file

    path = os.path.abspath(os.path.expanduser(text))
    try:
        read_secret_file(path)
    except (OSError, ValueError) as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return path


def _protocol(text: str) -> str:
    """argparse ``type=``: ``tls`` or ``tls://`` (dask-jobqueue's job scripts pass the latter), as ``tls``.

    >>> _protocol("tls://"), _protocol("tcp")
    ('tls', 'tcp')
    """
    return text[: -len("://")] if text.endswith("://") else text


def add_tls_arguments(parser: argparse.ArgumentParser, worker: bool = False) -> None:
    """Add ``--protocol``, ``--tls-ca-file``, ``--tls-cert`` and ``--tls-key``
    (and for a ``worker``, ``--scheduler-sni``)."""
    group = parser.add_argument_group("TLS")
    if worker:
        group.add_argument(
            "--scheduler-sni",
            metavar="NAME",
            help="TLS server name (SNI) to send when connecting, e.g. for a proxy "
            "that routes on it",
        )
    group.add_argument(
        "--protocol",
        type=_protocol,
        choices=["tcp", "tls"],
        help="transport to listen with (default: tls when --tls-cert is given, else tcp)",
    )
    group.add_argument(
        "--tls-ca-file",
        type=_existing_file,
        metavar="FILE",
        help="CA certificate(s) that sign every certificate of the cluster (PEM)",
    )
    group.add_argument(
        "--tls-cert",
        type=_existing_file,
        metavar="FILE",
        help="this process's certificate (PEM); may also hold the key",
    )
    group.add_argument(
        "--tls-key",
        type=_existing_file,
        metavar="FILE",
        help="this process's private key (PEM), if not in --tls-cert",
    )
    auth = parser.add_argument_group("Authentication")
    auth.add_argument(
        "--auth-secret-file",
        type=_secret_file,
        metavar="PATH",
        help="file (mode 0600) holding the cluster's shared secret; default: "
        "distributed.comm.auth.*, else $DASK_CONFIG/distributed-auth-secret",
    )


def security_from_args(args: argparse.Namespace, role: str) -> dict | None:
    """The ``security=`` dict for ``role`` (``"scheduler"`` or ``"worker"``)
    from the parsed options, or None when no TLS option was given.

    >>> ns = argparse.Namespace(tls_ca_file="/ca.pem", tls_cert="/c.pem", tls_key=None)
    >>> security_from_args(ns, "scheduler")
    {'tls_ca_file': '/ca.pem', 'tls_scheduler_cert': '/c.pem'}
    """
    if role not in ("scheduler", "worker"):
        raise ValueError(f"role must be 'scheduler' or 'worker', not {role!r}")
    given = {
        "tls_ca_file": args.tls_ca_file,
        f"tls_{role}_cert": args.tls_cert,
        f"tls_{role}_key": args.tls_key,
    }
    security = {k: v for k, v in given.items() if v is not None}
    secret_file = getattr(args, "auth_secret_file", None)
    if secret_file is not None:
        from distributed.comm.auth_secret import read_secret_file

        security["auth_secret"] = read_secret_file(secret_file)
    return security or None
