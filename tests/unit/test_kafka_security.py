"""Kafka security settings: validation, masking, and the aiokafka options built from them."""

from __future__ import annotations

import json
import ssl
from pathlib import Path
from typing import Any

import pytest
import trustme
from click.testing import CliRunner
from pydantic import SecretStr

from streamproc.cli import cli
from streamproc.config import KafkaSettings, load_settings
from streamproc.errors import ConfigError
from streamproc.kafka_security import client_options, ssl_context

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def pem(tmp_path: Path, ca: trustme.CA) -> dict[str, Path]:
    client = ca.issue_cert("streamproc-client")
    files = {"ca": tmp_path / "ca.pem", "cert": tmp_path / "client.pem", "key": tmp_path / "client-key.pem"}
    ca.cert_pem.write_to_path(str(files["ca"]))
    client.cert_chain_pems[0].write_to_path(str(files["cert"]))
    client.private_key_pem.write_to_path(str(files["key"]))
    return files


def _problem(monkeypatch: pytest.MonkeyPatch, **env: str) -> str:
    for name, value in env.items():
        monkeypatch.setenv(f"STREAMPROC_KAFKA__{name.upper()}", value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_plaintext_is_the_default_and_adds_no_tls_or_sasl() -> None:
    assert client_options(KafkaSettings()) == {"security_protocol": "PLAINTEXT"}


@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
def test_sasl_needs_mechanism_user_and_password(monkeypatch: pytest.MonkeyPatch, protocol: str) -> None:
    message = _problem(monkeypatch, security_protocol=protocol, sasl_username="alice")
    assert "STREAMPROC_KAFKA__SASL_MECHANISM" in message
    assert "STREAMPROC_KAFKA__SASL_PASSWORD" in message
    assert "STREAMPROC_KAFKA__SASL_USERNAME" not in message


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256"])
def test_a_password_sent_in_clear_needs_the_opt_in(monkeypatch: pytest.MonkeyPatch, mechanism: str) -> None:
    """PLAIN over SASL_PLAINTEXT is refused (see test_bad_settings) unless allowed; SCRAM
    never sends the password, so it needs no opt-in."""
    monkeypatch.chdir(ROOT)
    env = {
        "STREAMPROC_KAFKA__SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "STREAMPROC_KAFKA__SASL_MECHANISM": mechanism,
        "STREAMPROC_KAFKA__SASL_USERNAME": "alice",
        "STREAMPROC_KAFKA__SASL_PASSWORD": "kafka-pass-123",
    }
    if mechanism == "PLAIN":
        env["STREAMPROC_KAFKA__ALLOW_PLAINTEXT_PASSWORD"] = "true"
    result = CliRunner().invoke(cli, ["check-config"], env=env)
    assert result.exit_code == 0, result.output
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert client_options(load_settings().kafka) == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": mechanism,
        "sasl_plain_username": "alice",
        "sasl_plain_password": "kafka-pass-123",
    }


def test_unknown_protocol_and_mechanism_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "security_protocol" in _problem(monkeypatch, security_protocol="TLS").lower()
    monkeypatch.delenv("STREAMPROC_KAFKA__SECURITY_PROTOCOL")
    assert (
        "sasl_mechanism"
        in _problem(
            monkeypatch,
            security_protocol="SASL_SSL",
            sasl_mechanism="GSSAPI",
            sasl_username="a",
            sasl_password="b",  # noqa: S106 - a test value
        ).lower()
    )


def test_missing_files_name_their_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    message = _problem(monkeypatch, security_protocol="SSL", ssl_ca_file=str(tmp_path / "nope.pem"))
    assert "ssl_ca_file" in message.lower() and "nope.pem is not a file" in message


def test_tls_files_need_a_tls_protocol(monkeypatch: pytest.MonkeyPatch, pem: dict[str, Path]) -> None:
    message = _problem(monkeypatch, ssl_ca_file=str(pem["ca"]))
    assert "STREAMPROC_KAFKA__SSL_CA_FILE is set but the protocol is PLAINTEXT" in message


def test_a_key_needs_its_certificate(monkeypatch: pytest.MonkeyPatch, pem: dict[str, Path]) -> None:
    message = _problem(monkeypatch, security_protocol="SSL", ssl_key_file=str(pem["key"]))
    assert "STREAMPROC_KAFKA__SSL_KEY_FILE needs STREAMPROC_KAFKA__SSL_CERT_FILE" in message


def test_sasl_ssl_options(pem: dict[str, Path], ca: trustme.CA) -> None:
    kafka = KafkaSettings(
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="alice",
        sasl_password=SecretStr("s3cret"),
        ssl_ca_file=pem["ca"],
    )
    options = client_options(kafka)
    context = options.pop("ssl_context")
    assert options == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "alice",
        "sasl_plain_password": "s3cret",
    }
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    subjects = [str(cert["subject"]) for cert in context.get_ca_certs()]
    assert len(subjects) == 1 and "trustme" in subjects[0], subjects  # only the CA file, no system CAs
    assert "s3cret" not in repr(kafka)


def test_hostname_check_can_be_turned_off(pem: dict[str, Path]) -> None:
    kafka = KafkaSettings(security_protocol="SSL", ssl_ca_file=pem["ca"], ssl_check_hostname=False)
    context = ssl_context(kafka)
    assert not context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED


def test_without_a_ca_file_the_system_cas_are_used() -> None:
    context = ssl_context(KafkaSettings(security_protocol="SSL"))
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.cert_store_stats()["x509_ca"] == len(ssl.create_default_context().get_ca_certs())


def _handshake(client: ssl.SSLContext, server: ssl.SSLContext, hostname: str) -> dict[str, Any]:
    """A TLS handshake in memory; returns the client certificate the server saw."""
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    client_side = client.wrap_bio(c_in, c_out, server_hostname=hostname)
    server_side = server.wrap_bio(s_in, s_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(10):
        for name, side in (("client", client_side), ("server", server_side)):
            if not done[name]:
                try:
                    side.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            break
    # TLS 1.3: the server checks the client certificate when it reads the client's Finished.
    with pytest.raises(ssl.SSLWantReadError):
        server_side.read(1)
    peer = server_side.getpeercert()
    assert peer is not None
    return peer


def test_client_certificate_is_loaded_and_presented(pem: dict[str, Path], ca: trustme.CA) -> None:
    kafka = KafkaSettings(
        security_protocol="SSL", ssl_ca_file=pem["ca"], ssl_cert_file=pem["cert"], ssl_key_file=pem["key"]
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("kafka-0.test").configure_cert(server)
    server.verify_mode = ssl.CERT_REQUIRED
    ca.configure_trust(server)
    peer = _handshake(client_options(kafka)["ssl_context"], server, "kafka-0.test")
    assert ("DNS", "streamproc-client") in peer["subjectAltName"]


def test_an_unloadable_client_key_is_one_config_error(pem: dict[str, Path], ca: trustme.CA) -> None:
    other_key = pem["key"].with_name("other-key.pem")
    ca.issue_cert("someone-else").private_key_pem.write_to_path(str(other_key))
    kafka = KafkaSettings(
        security_protocol="SSL", ssl_ca_file=pem["ca"], ssl_cert_file=pem["cert"], ssl_key_file=other_key
    )
    with pytest.raises(ConfigError, match=r"STREAMPROC_KAFKA__SSL_CERT_FILE .* cannot be loaded"):
        client_options(kafka)


def test_check_config_masks_the_secrets(monkeypatch: pytest.MonkeyPatch, pem: dict[str, Path]) -> None:
    monkeypatch.chdir(ROOT)
    env = {
        "STREAMPROC_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
        "STREAMPROC_KAFKA__SASL_MECHANISM": "PLAIN",
        "STREAMPROC_KAFKA__SASL_USERNAME": "alice",
        "STREAMPROC_KAFKA__SASL_PASSWORD": "kafka-pass-123",
        "STREAMPROC_KAFKA__SSL_CA_FILE": str(pem["ca"]),
        "STREAMPROC_KAFKA__SSL_CERT_FILE": str(pem["cert"]),
        "STREAMPROC_KAFKA__SSL_KEY_FILE": str(pem["key"]),
        "STREAMPROC_KAFKA__SSL_KEY_PASSWORD": "key-pass-456",
        "STREAMPROC_INFERENCE__API_KEY": "api-key-789",
    }
    result = CliRunner().invoke(cli, ["check-config"], env=env)
    assert result.exit_code == 0, result.output
    for secret in ("kafka-pass-123", "key-pass-456", "api-key-789"):
        assert secret not in result.output
    shown = json.loads(result.output[result.output.index("{") :])
    assert shown["kafka"]["sasl_password"] == "**********"
    assert shown["kafka"]["sasl_username"] == "alice"
