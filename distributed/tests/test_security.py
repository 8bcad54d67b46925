"""The Security object: fields, configuration, errors, contexts, repr, coercion."""

from __future__ import annotations

import pickle
import ssl

import pytest

from distributed import config
from distributed.security import Security, coerce_security
from distributed.utils_test import get_cert

FORCED_CIPHER = "ECDHE-RSA-AES128-GCM-SHA256"  # RSA: our generated certificates are RSA


@pytest.fixture
def certs():
    return {
        "ca": get_cert("tls-ca-cert.pem"),
        "cert": get_cert("tls-cert.pem"),
        "key": get_cert("tls-key.pem"),
        "keycert": get_cert("tls-key-cert.pem"),
    }


def test_defaults():
    sec = Security()
    assert sec.require_encryption is False
    for field in ("tls_ca_file", "tls_ciphers", "tls_client_key", "tls_client_cert",
                  "tls_scheduler_key", "tls_scheduler_cert", "tls_worker_key", "tls_worker_cert",
                  "tls_max_version"):
        assert getattr(sec, field) is None, field
    assert sec.tls_min_version is ssl.TLSVersion.TLSv1_2
    assert sec.extra_conn_args == {}


def test_constructor_errors():
    with pytest.raises(TypeError, match=r"Unknown parameters: \['unknown_keyword'\]"):
        Security(unknown_keyword="bar")
    with pytest.raises(TypeError, match="extra_conn_args"):
        Security(extra_conn_args=["x"])


def test_attribute_error():
    sec = Security()
    assert hasattr(sec, "tls_ca_file")
    with pytest.raises(AttributeError):
        sec.tls_foobar  # noqa: B018
    with pytest.raises(AttributeError):
        sec.tls_foobar = ""


def test_from_config():
    with config.set({
        "distributed.comm.tls.ca-file": "ca.pem",
        "distributed.comm.tls.scheduler.key": "skey.pem",
        "distributed.comm.tls.scheduler.cert": "scert.pem",
        "distributed.comm.tls.worker.cert": "wcert.pem",
        "distributed.comm.tls.ciphers": FORCED_CIPHER,
        "distributed.comm.require-encryption": True,
    }):
        sec = Security()
    assert sec.require_encryption is True
    assert sec.tls_ca_file == "ca.pem"
    assert sec.tls_ciphers == FORCED_CIPHER
    assert sec.tls_client_key is None and sec.tls_client_cert is None
    assert (sec.tls_scheduler_key, sec.tls_scheduler_cert) == ("skey.pem", "scert.pem")
    assert (sec.tls_worker_key, sec.tls_worker_cert) == (None, "wcert.pem")


def test_min_max_version_from_config():
    with config.set({"distributed.comm.tls.min-version": 1.3,
                     "distributed.comm.tls.max-version": 1.3}):
        sec = Security()
    assert sec.tls_min_version is ssl.TLSVersion.TLSv1_3
    assert sec.tls_max_version is ssl.TLSVersion.TLSv1_3
    with config.set({"distributed.comm.tls.min-version": None}):
        assert Security().tls_min_version is ssl.TLSVersion.TLSv1_2


@pytest.mark.parametrize("field", ["min-version", "max-version"])
def test_min_max_version_config_errors(field):
    with config.set({f"distributed.comm.tls.{field}": "bad"}):
        with pytest.raises(ValueError, match="'bad' is not supported, expected one of"):
            Security()


def test_invalid_min_version_from_config_errors():
    with config.set({"distributed.comm.tls.min-version": 1.1}):
        with pytest.raises(ValueError, match="1.1 is not supported"):
            Security()


def test_kwargs():
    with config.set({
        "distributed.comm.tls.ca-file": "ca.pem",
        "distributed.comm.tls.scheduler.key": "skey.pem",
        "distributed.comm.tls.scheduler.cert": "scert.pem",
    }):
        sec = Security(tls_scheduler_cert="newcert.pem", require_encryption=True,
                       tls_ca_file=None, extra_conn_args={"headers": {"Auth": "Token abc"}})
    assert sec.require_encryption is True
    assert sec.tls_ca_file is None  # an explicit None wins over the configuration
    assert sec.tls_scheduler_key == "skey.pem"
    assert sec.tls_scheduler_cert == "newcert.pem"
    assert sec.extra_conn_args == {"headers": {"Auth": "Token abc"}}


def test_require_encryption_default_follows_tls_kwargs():
    assert Security(tls_ca_file="ca.pem").require_encryption is True
    assert Security(extra_conn_args={"a": 1}).require_encryption is False
    assert Security(tls_ca_file="ca.pem", require_encryption=False).require_encryption is False


@pytest.mark.parametrize("field", ["tls_min_version", "tls_max_version"])
def test_min_max_version_kwarg_errors(field):
    for bad in ["bad", ssl.TLSVersion.TLSv1_1, 1.2, True]:
        with pytest.raises(ValueError, match="is not supported, expected one of"):
            Security(**{field: bad})


def test_repr_temp_keys():
    pytest.importorskip("cryptography")
    sec = Security.temporary()
    text = repr(sec)
    assert "Temporary (In-memory)" in text
    assert "<hidden>" in text
    for field in ("tls_ca_file", "tls_client_key", "tls_client_cert", "tls_worker_key"):
        assert getattr(sec, field) not in text
    assert "PRIVATE KEY" not in text and "PRIVATE KEY" not in sec._repr_html_()


def test_repr_local_keys():
    sec = Security(tls_ca_file="ca.pem", tls_scheduler_cert="scert.pem")
    text = repr(sec)
    assert "Local (" in text and "ca.pem" in text and "scert.pem" in text
    assert "require_encryption: True" in text
    assert "<table>" in sec._repr_html_()
    assert repr(Security()) == "Security(\n  require_encryption: False\n)"


def test_tls_config_for_role():
    with config.set({
        "distributed.comm.tls.ca-file": "ca.pem",
        "distributed.comm.tls.scheduler.key": "skey.pem",
        "distributed.comm.tls.scheduler.cert": "scert.pem",
        "distributed.comm.tls.worker.cert": "wcert.pem",
        "distributed.comm.tls.ciphers": FORCED_CIPHER,
    }):
        sec = Security()
    assert sec.get_tls_config_for_role("scheduler") == {
        "ca_file": "ca.pem", "key": "skey.pem", "cert": "scert.pem", "ciphers": FORCED_CIPHER}
    assert sec.get_tls_config_for_role("worker") == {
        "ca_file": "ca.pem", "key": None, "cert": "wcert.pem", "ciphers": FORCED_CIPHER}
    assert sec.get_tls_config_for_role("client") == {
        "ca_file": "ca.pem", "key": None, "cert": None, "ciphers": FORCED_CIPHER}
    with pytest.raises(ValueError, match="supervisor"):
        sec.get_tls_config_for_role("supervisor")


def _check_context(ctx):
    assert isinstance(ctx, ssl.SSLContext)
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.check_hostname is False
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2


def test_connection_args(certs):
    with config.set({
        "distributed.comm.tls.ca-file": certs["ca"],
        "distributed.comm.tls.scheduler.key": certs["key"],
        "distributed.comm.tls.scheduler.cert": certs["cert"],
        "distributed.comm.tls.worker.cert": certs["keycert"],
    }):
        sec = Security()
    d = sec.get_connection_args("scheduler")
    assert d["require_encryption"] is False
    _check_context(d["ssl_context"])
    assert len(d["ssl_context"].get_ciphers()) > 2
    _check_context(sec.get_connection_args("worker")["ssl_context"])
    assert sec.get_connection_args("client")["ssl_context"] is None  # no certificate: no TLS

    with config.set({
        "distributed.comm.tls.ca-file": certs["ca"],
        "distributed.comm.tls.scheduler.key": certs["key"],
        "distributed.comm.tls.scheduler.cert": certs["cert"],
        "distributed.comm.tls.ciphers": FORCED_CIPHER,
        "distributed.comm.require-encryption": True,
    }):
        sec = Security()
    d = sec.get_connection_args("scheduler")
    assert d["require_encryption"] is True
    tls12 = [c for c in d["ssl_context"].get_ciphers() if "TLSv1.2" in c["description"]]
    assert [c["name"] for c in tls12] == [FORCED_CIPHER]


def test_extra_conn_args_connection_args(certs):
    sec = Security(tls_ca_file=certs["ca"], tls_worker_cert=certs["keycert"],
                   extra_conn_args={"headers": {"Authorization": "Token abcd"}})
    for role in ("worker", "client"):
        assert sec.get_connection_args(role)["extra_conn_args"] == {
            "headers": {"Authorization": "Token abcd"}}
    assert "extra_conn_args" not in sec.get_listen_args("worker")


def test_listen_args(certs):
    sec = Security(tls_ca_file=certs["ca"], tls_scheduler_cert=certs["cert"],
                   tls_scheduler_key=certs["key"], require_encryption=False)
    d = sec.get_listen_args("scheduler")
    assert d["require_encryption"] is False
    _check_context(d["ssl_context"])
    assert sec.get_listen_args("worker")["ssl_context"] is None


def test_in_memory_pem_strings(certs):
    with open(certs["ca"]) as f:
        ca = f.read()
    with open(certs["cert"]) as f:
        cert = f.read()
    with open(certs["key"]) as f:
        key = f.read()
    sec = Security(tls_ca_file=ca, tls_client_cert=cert, tls_client_key=key)
    _check_context(sec.get_connection_args("client")["ssl_context"])
    assert key not in repr(sec)


def test_temporary_credentials():
    pytest.importorskip("cryptography")
    sec = Security.temporary()
    assert sec.require_encryption is True
    text = repr(sec)
    for role in ("client", "scheduler", "worker"):
        for kind in ("key", "cert"):
            value = getattr(sec, f"tls_{role}_{kind}")
            assert "\n" in value and value not in text
        _check_context(sec.get_connection_args(role)["ssl_context"])
        _check_context(sec.get_listen_args(role)["ssl_context"])


def test_extra_conn_args_in_temporary_credentials():
    pytest.importorskip("cryptography")
    sec = Security.temporary(extra_conn_args={"headers": {"X-Request-ID": "abcd"}})
    assert sec.extra_conn_args == {"headers": {"X-Request-ID": "abcd"}}


def test_pickle_roundtrip():
    pytest.importorskip("cryptography")
    sec = Security.temporary()
    sec2 = pickle.loads(pickle.dumps(sec))
    assert sec2.tls_worker_key == sec.tls_worker_key
    assert sec2.require_encryption is True
    assert sec2.tls_min_version is ssl.TLSVersion.TLSv1_2


def test_coerce_security():
    pytest.importorskip("cryptography")
    assert coerce_security(None).require_encryption is False
    assert coerce_security(False).tls_ca_file is None
    assert coerce_security({}).require_encryption is False
    assert coerce_security({"tls_ca_file": "ca.pem"}).tls_ca_file == "ca.pem"
    assert coerce_security(True).require_encryption is True
    sec = Security()
    assert coerce_security(sec) is sec
    with pytest.raises(TypeError, match="security="):
        coerce_security("yes")
    with pytest.raises(TypeError, match="Unknown parameters"):
        coerce_security({"nope": 1})
