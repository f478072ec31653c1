"""Kafka security: every Kafka client's TLS and SASL options, built from one settings section.

Every client the project creates (worker and quality pipelines, appeal content fetches,
`topics apply`, `publish`, the start-up topic check) passes ``client_options(kafka)`` to
aiokafka, so one set of ``STREAMPROC_KAFKA__*`` variables secures them all.

aiokafka reports a failed bootstrap as "Unable to bootstrap from [...]" and only logs the
cause; ``explain_failure`` connects once more with the same options to name it (certificate
not trusted, client certificate required, login refused) in one line.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import Any, Final

from aiokafka.conn import create_conn
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)

from streamproc.config import KafkaSettings
from streamproc.errors import ConfigError

__all__ = ["CONNECT_ERRORS", "client_options", "explain_failure", "ssl_context", "start_client"]

_ENV: Final = "STREAMPROC_KAFKA__"
#: What starting an aiokafka client raises when it cannot connect or log in. aiokafka's SCRAM
#: code raises KeyError or ValueError when the broker answers the login with an error.
CONNECT_ERRORS: Final = (KafkaError, OSError, KeyError, ValueError)
_PROBE_TIMEOUT_SECONDS: Final = 10.0
#: How long the probe waits after a TLS 1.3 handshake for the broker to reject the client's
#: certificate (that alert comes after the handshake).
_ALERT_WAIT_SECONDS: Final = 0.5


def ssl_context(kafka: KafkaSettings) -> ssl.SSLContext:
    """Verifying context: the CA file (else the system's CAs), hostname check, client cert."""
    try:
        context = ssl.create_default_context(cafile=str(kafka.ssl_ca_file) if kafka.ssl_ca_file else None)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"{_ENV}SSL_CA_FILE {kafka.ssl_ca_file} is not a PEM CA file: {exc}") from exc
    context.check_hostname = kafka.ssl_check_hostname
    if kafka.ssl_cert_file is not None:
        password = kafka.ssl_key_password.get_secret_value() if kafka.ssl_key_password else None
        try:
            context.load_cert_chain(kafka.ssl_cert_file, kafka.ssl_key_file, password)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(
                f"{_ENV}SSL_CERT_FILE {kafka.ssl_cert_file} (key: {kafka.ssl_key_file or 'in that file'}) "
                f"cannot be loaded: {exc}; check the files and {_ENV}SSL_KEY_PASSWORD"
            ) from exc
    return context


def client_options(kafka: KafkaSettings) -> dict[str, Any]:
    """Keyword arguments for AIOKafkaConsumer, AIOKafkaProducer and AIOKafkaAdminClient."""
    options: dict[str, Any] = {"security_protocol": kafka.security_protocol}
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = ssl_context(kafka)
    if kafka.security_protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
        options["sasl_mechanism"] = kafka.sasl_mechanism
        options["sasl_plain_username"] = kafka.sasl_username
        options["sasl_plain_password"] = (
            kafka.sasl_password.get_secret_value() if kafka.sasl_password is not None else None
        )
    return options


async def start_client(
    start: Callable[[], Awaitable[object]],
    close: Callable[[], Awaitable[object]],
    kafka: KafkaSettings | None,
    bootstrap_servers: str,
    *,
    check: str,
) -> None:
    """Start a Kafka client; if no broker answers, close it and raise one ConfigError saying why.

    ``check`` names what the user should check first (a flag or a setting).
    """
    try:
        await start()
    except CONNECT_ERRORS as exc:
        await close()
        why = await explain_failure(kafka, bootstrap_servers) if kafka is not None else ""
        raise ConfigError(
            f"cannot reach Kafka at {bootstrap_servers} ({why or type(exc).__name__}); check {check}, "
            "that the broker is up and the STREAMPROC_KAFKA__ security settings"
        ) from exc


async def explain_failure(kafka: KafkaSettings, bootstrap_servers: str | None = None) -> str:
    """Why connecting to the first bootstrap server fails, as one line; "" if it now works."""
    first = (bootstrap_servers or kafka.bootstrap_servers).split(",")[0].strip()
    host, _, port = first.rpartition(":")
    where = f"{host}:{port}"
    options = client_options(kafka)
    try:
        async with asyncio.timeout(_PROBE_TIMEOUT_SECONDS):
            if "ssl_context" in options:
                refused = await asyncio.to_thread(_tls_probe, host, int(port), kafka, options["ssl_context"])
                if refused:
                    return refused
            conn = await create_conn(host, int(port), client_id="streamproc-probe", **options)
    except CONNECT_ERRORS as exc:  # TimeoutError and ssl.SSLError are OSErrors
        if isinstance(exc, KafkaConnectionError) and kafka.security_protocol.startswith("SASL_"):
            return await _closed_during_login(host, int(port), where, kafka)
        return _describe(exc, where, kafka)
    conn.close()
    return ""


def _tls_probe(host: str, port: int, kafka: KafkaSettings, context: ssl.SSLContext) -> str:
    """Handshake, then wait briefly: a TLS 1.3 server that requires a client certificate
    rejects it only after the handshake (with an alert, or by just closing), and aiokafka
    then sees only a closed connection. A blocking socket shows the alert; asyncio's hides it."""
    where = f"{host}:{port}"
    with (
        socket.create_connection((host, port), timeout=_PROBE_TIMEOUT_SECONDS) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        tls.settimeout(_ALERT_WAIT_SECONDS)
        try:
            closed = tls.recv(1) == b""
        except TimeoutError:
            return ""  # still open and waiting for a request: TLS is fine
    if not closed:
        return ""
    if kafka.ssl_cert_file is None:
        return (
            f"{where} closed the connection right after the TLS handshake: it requires a client "
            f"certificate (mutual TLS); set {_ENV}SSL_CERT_FILE and {_ENV}SSL_KEY_FILE"
        )
    return f"{where} closed the connection right after the TLS handshake: is the client certificate accepted?"


async def _closed_during_login(host: str, port: int, where: str, kafka: KafkaSettings) -> str:
    """The connection closed: if it stays open without SASL, the login is what the broker ended."""
    protocol = "SSL" if kafka.security_protocol == "SASL_SSL" else "PLAINTEXT"
    plain = kafka.model_copy(update={"security_protocol": protocol, "sasl_mechanism": None})
    try:
        async with asyncio.timeout(_PROBE_TIMEOUT_SECONDS):
            conn = await create_conn(host, port, client_id="streamproc-probe", **client_options(plain))
    except CONNECT_ERRORS as exc:
        return _describe(exc, where, kafka)
    conn.close()
    return (
        f"{where} closed the connection during the SASL {kafka.sasl_mechanism} login of "
        f"{kafka.sasl_username!r} (mechanism not offered, or login refused); check {_ENV}SASL_MECHANISM, "
        f"{_ENV}SASL_USERNAME and {_ENV}SASL_PASSWORD"
    )


def _describe(exc: BaseException, where: str, kafka: KafkaSettings) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        message = _untrusted(where, exc)
    elif isinstance(exc, ssl.SSLError):
        message = _tls_refused(where, exc)
    elif isinstance(exc, UnsupportedSaslMechanismError):
        message = f"{where} does not offer SASL mechanism {kafka.sasl_mechanism}: {exc}"
        message += f"; set {_ENV}SASL_MECHANISM"
    elif isinstance(exc, SaslAuthenticationFailed | KeyError | ValueError):
        message = (
            f"{where} refused the SASL login of {kafka.sasl_username!r} ({kafka.sasl_mechanism}): "
            f"{type(exc).__name__}; check {_ENV}SASL_USERNAME and {_ENV}SASL_PASSWORD"
        )
    elif isinstance(exc, TimeoutError):
        tls = " (is it a TLS listener? check the port)" if "SSL" in kafka.security_protocol else ""
        message = f"no answer from {where} within {_PROBE_TIMEOUT_SECONDS:.0f} s{tls}"
    else:
        message = f"cannot connect to {where} with {kafka.security_protocol}: {exc}"
    return message


def _untrusted(where: str, exc: ssl.SSLCertVerificationError) -> str:
    reason = exc.verify_message or exc.reason or str(exc)
    if "hostname" in str(reason).lower() or "ip address mismatch" in str(reason).lower():
        return (
            f"the TLS certificate of {where} does not name that host ({reason}); connect by a name it "
            f"holds, or set {_ENV}SSL_CHECK_HOSTNAME=false"
        )
    return (
        f"the TLS certificate of {where} is not trusted ({reason}); set {_ENV}SSL_CA_FILE to the PEM "
        "file of the CA that signed it"
    )


def _tls_refused(where: str, exc: ssl.SSLError) -> str:
    reason = exc.reason or str(exc)
    if "CERTIFICATE_REQUIRED" in str(reason).upper():
        return (
            f"{where} requires a client certificate (mutual TLS); set {_ENV}SSL_CERT_FILE and "
            f"{_ENV}SSL_KEY_FILE"
        )
    if "WRONG_VERSION_NUMBER" in str(reason).upper() or "RECORD_LAYER" in str(reason).upper():
        return f"{where} does not speak TLS ({reason}); use the broker's TLS port or {_ENV}SECURITY_PROTOCOL"
    return f"TLS with {where} failed: {reason}"
