"""Test certificates, generated on first use (never shipped, never copied).

``cert_path(name)`` returns the path of one PEM file in a private temporary
directory that lives as long as this process (removed at exit).  The first
call makes a CA and the leaf certificates with the ``cryptography`` package:

==========================  =================================================
``tls-ca-cert.pem``          CA certificate, CN ``our-ca-server``
``tls-ca-key.pem``           its key
``tls-cert.pem``             leaf signed by the CA, CN ``localhost``, SAN
                             ``localhost`` and ``127.0.0.1``
``tls-key.pem``              its key
``tls-key-cert.pem``         key and certificate in one file
``tls-cert-chain.pem``       leaf then CA certificate
``tls-self-signed-cert.pem`` a self-signed certificate no CA vouches for
``tls-self-signed-key.pem``  its key
==========================  =================================================

All keys are RSA-2048 (so RSA-only ciphers such as
``ECDHE-RSA-AES128-GCM-SHA256`` work).  Used by ``distributed.utils_test``.
Thread-safe: a lock guards the one-time generation.
"""

from __future__ import annotations

import atexit
import datetime
import ipaddress
import os
import shutil
import tempfile
import threading

__all__ = ["cert_path", "CERT_NAMES"]

CERT_NAMES = (
    "tls-ca-cert.pem",
    "tls-ca-key.pem",
    "tls-cert.pem",
    "tls-key.pem",
    "tls-key-cert.pem",
    "tls-cert-chain.pem",
    "tls-self-signed-cert.pem",
    "tls-self-signed-key.pem",
)

_lock = threading.Lock()
_directory: str | None = None


def cert_path(name: str) -> str:
    """Path of the generated test PEM file ``name`` (see the module docstring).

    >>> open(cert_path("tls-ca-cert.pem")).read().startswith("-----BEGIN CERTIFICATE")
    True
    """
    if name not in CERT_NAMES:
        raise ValueError(f"no test certificate {name!r}; expected one of {list(CERT_NAMES)}")
    global _directory
    with _lock:
        if _directory is None:
            directory = tempfile.mkdtemp(prefix="distributed-test-certs-")
            atexit.register(shutil.rmtree, directory, ignore_errors=True)
            _generate(directory)
            _directory = directory
    return os.path.join(_directory, name)


def _generate(directory: str) -> None:
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    except ImportError:
        raise ImportError(
            "the TLS test certificates are generated with the 'cryptography' package: "
            "pip install cryptography (it is in the test extra)"
        ) from None

    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=30)

    def new_key():
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def builder(subject, issuer, key):
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
        )

    def key_pem(key) -> bytes:
        return key.private_bytes(serialization.Encoding.PEM,
                                 serialization.PrivateFormat.TraditionalOpenSSL,
                                 serialization.NoEncryption())

    def cert_pem(cert) -> bytes:
        return cert.public_bytes(serialization.Encoding.PEM)

    ca_key = new_key()
    ca_cert = (
        builder(name("our-ca-server"), name("our-ca-server"), ca_key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    leaf_key = new_key()
    leaf_cert = (
        builder(name("localhost"), ca_cert.subject, leaf_key)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ]), critical=False)
        # One certificate serves as both a server and a client certificate.
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                              ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    self_key = new_key()
    self_cert = (
        builder(name("localhost"), name("localhost"), self_key)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(self_key, hashes.SHA256())
    )
    files = {
        "tls-ca-cert.pem": cert_pem(ca_cert),
        "tls-ca-key.pem": key_pem(ca_key),
        "tls-cert.pem": cert_pem(leaf_cert),
        "tls-key.pem": key_pem(leaf_key),
        "tls-key-cert.pem": key_pem(leaf_key) + cert_pem(leaf_cert),
        "tls-cert-chain.pem": cert_pem(leaf_cert) + cert_pem(ca_cert),
        "tls-self-signed-cert.pem": cert_pem(self_cert),
        "tls-self-signed-key.pem": key_pem(self_key),
    }
    for filename, data in files.items():
        fd = os.open(os.path.join(directory, filename), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
