"""The Kafka section of the settings: brokers, consumer group, TLS and SASL."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Annotated, Final, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, model_validator

from streamproc.config.checks import valid_bootstrap_servers
from streamproc.config.servers import existing_file

__all__ = ["KafkaSettings"]

#: The section's environment variables (model.py's ENV_PREFIX; that module imports this one).
_ENV: Final = "STREAMPROC_KAFKA__"
_Seconds = Annotated[float, Field(gt=0)]


class KafkaSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    bootstrap_servers: Annotated[str, AfterValidator(valid_bootstrap_servers)] = Field(
        default="127.0.0.1:9092", description="Comma-separated host:port list."
    )
    group_id: str = Field(default="streamproc", description="Consumer group of the workers.")
    client_id: str = Field(
        default_factory=lambda: f"streamproc-{socket.gethostname()}-{os.getpid()}",
        description="Identifies this worker in broker logs and dead letters.",
        json_schema_extra={"shown_default": "streamproc-HOSTNAME-PID"},
    )
    auto_offset_reset: Literal["earliest", "latest"] = Field(
        default="earliest", description="Where a new consumer group starts."
    )
    # Static membership (KIP-345, Kafka >= 2.3): a member that comes back with the same id
    # within the session timeout gets its partitions back without a rebalance.
    group_instance_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,249}$")] | None = Field(
        default=None,
        description="Static group membership: a name unique to this worker replica and stable "
        "across its restarts (the pod name); a restarted worker takes its partitions back at once.",
    )
    # Short timeouts make group joins and the takeover of a dead member's partitions take
    # seconds, not the 30+ s of common client defaults.
    session_timeout_seconds: _Seconds = Field(
        default=10.0, description="A worker silent this long is dropped from the group."
    )
    heartbeat_interval_seconds: _Seconds = Field(default=1.0, description="Consumer heartbeat period.")
    rebalance_timeout_seconds: _Seconds = Field(
        default=10.0, description="How long members get to rejoin during a rebalance."
    )
    # Security (streamproc.kafka_security builds every Kafka client's options from these).
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT", description="PLAINTEXT, SSL (TLS), SASL_PLAINTEXT or SASL_SSL (SASL over TLS)."
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        default=None, description="SASL mechanism, needed by the SASL_* protocols."
    )
    sasl_username: str | None = Field(default=None, description="SASL user name.")
    sasl_password: SecretStr | None = Field(default=None, description="SASL password (masked in output).")
    ssl_ca_file: Annotated[Path, AfterValidator(existing_file)] | None = Field(
        default=None,
        description="PEM file of the CAs that sign the brokers' certificates; default: the system's CAs.",
    )
    ssl_cert_file: Annotated[Path, AfterValidator(existing_file)] | None = Field(
        default=None, description="PEM client certificate (chain), for brokers that require mutual TLS."
    )
    ssl_key_file: Annotated[Path, AfterValidator(existing_file)] | None = Field(
        default=None, description="PEM private key of the client certificate, if not in SSL_CERT_FILE."
    )
    ssl_key_password: SecretStr | None = Field(
        default=None, description="Password of an encrypted client key (masked in output)."
    )
    ssl_check_hostname: bool = Field(
        default=True, description="Check that a broker's certificate names the host connected to."
    )
    allow_plaintext_password: bool = Field(
        default=False,
        description="Accept SASL PLAIN over SASL_PLAINTEXT, which sends the password unencrypted (a "
        "trusted network only); refused otherwise.",
    )

    @model_validator(mode="after")
    def _security_complete(self) -> KafkaSettings:
        protocol = self.security_protocol
        if protocol.startswith("SASL_"):
            missing = [
                f"{_ENV}{name.upper()}"
                for name in ("sasl_mechanism", "sasl_username", "sasl_password")
                if getattr(self, name) is None
            ]
            if missing:
                raise ValueError(f"security protocol {protocol} needs {', '.join(missing)}")
            _password_protected(self)
        elif self.sasl_mechanism is not None:
            raise ValueError(f"{_ENV}SASL_MECHANISM is set but the protocol is {protocol}; use SASL_SSL")
        tls_files = [name for name in ("ssl_ca_file", "ssl_cert_file", "ssl_key_file") if getattr(self, name)]
        if tls_files and not protocol.endswith("SSL"):
            raise ValueError(
                f"{_ENV}{tls_files[0].upper()} is set but the protocol is {protocol}; use SSL or SASL_SSL"
            )
        if self.ssl_key_file is not None and self.ssl_cert_file is None:
            raise ValueError(f"{_ENV}SSL_KEY_FILE needs {_ENV}SSL_CERT_FILE (the client certificate)")
        return self


def _password_protected(kafka: KafkaSettings) -> None:
    """SASL PLAIN sends the password as is; over SASL_PLAINTEXT anyone on the path reads it.
    SCRAM proves the password without sending it, so only PLAIN is refused."""
    plain_text = kafka.security_protocol == "SASL_PLAINTEXT" and kafka.sasl_mechanism == "PLAIN"
    if plain_text and not kafka.allow_plaintext_password:
        raise ValueError(
            f"{_ENV}SECURITY_PROTOCOL=SASL_PLAINTEXT with {_ENV}SASL_MECHANISM=PLAIN sends the password "
            f"unencrypted; use SASL_SSL (or a SCRAM mechanism), or set {_ENV}ALLOW_PLAINTEXT_PASSWORD=true "
            "on a trusted network"
        )
