"""Topics as code: specs under topics/*.yaml, applied idempotently to a cluster."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import yaml
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import TopicAlreadyExistsError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from streamproc.config import KafkaSettings
from streamproc.errors import ConfigError
from streamproc.kafka_security import client_options, start_client

__all__ = ["ApplyReport", "TopicSpec", "apply_topics", "load_topic_specs", "require_topics"]


class TopicSpec(BaseModel):
    """One topic as declared in topics/NAME.yaml."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,249}$")]
    description: str
    partitions: Annotated[int, Field(ge=1)]
    replication_factor: Annotated[int, Field(ge=1)]
    cleanup_policy: Literal["delete", "compact", "compact,delete"]
    retention_ms: Annotated[int, Field(ge=-1)]
    key: str = Field(description="What the record key holds.")
    value_schema: str = Field(description="Path of the value's JSON Schema, relative to topics/.")
    producers: list[str]
    consumers: list[str]

    def kafka_config(self) -> dict[str, str]:
        return {"cleanup.policy": self.cleanup_policy, "retention.ms": str(self.retention_ms)}


def load_topic_specs(directory: Path) -> list[TopicSpec]:
    """Every topics/*.yaml, validated; errors name the file and field."""
    paths = sorted(directory.glob("*.yaml"))
    if not paths:
        raise ConfigError(f"no topic specs (*.yaml) in {directory}; pass --dir pointing at topics/")
    specs = []
    for path in paths:
        try:
            specs.append(TopicSpec.model_validate(yaml.safe_load(path.read_text(encoding="utf-8"))))
        except (yaml.YAMLError, ValidationError) as exc:
            raise ConfigError(f"{path}: {exc}") from exc
        schema = directory / specs[-1].value_schema
        if not schema.is_file():
            raise ConfigError(
                f"{path}: value_schema {schema} does not exist; run `streamproc schemas export`"
            )
    return specs


@dataclass
class ApplyReport:
    created: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    drift: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        return (
            [f"created   {name}" for name in self.created]
            + [f"ok        {name}" for name in self.unchanged]
            + [f"DRIFT     {line}" for line in self.drift]
        )


async def _started_admin(
    bootstrap_servers: str, client_id: str, kafka: KafkaSettings | None
) -> AIOKafkaAdminClient:
    """A started admin client with ``kafka``'s security settings (none: plaintext)."""
    security = client_options(kafka) if kafka is not None else {}
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, client_id=client_id, **security)
    await start_client(admin.start, admin.close, kafka, bootstrap_servers, check="the bootstrap servers")
    return admin


async def require_topics(
    bootstrap_servers: str, names: Sequence[str], *, kafka: KafkaSettings | None = None
) -> None:
    """Fail fast, naming the fix, when Kafka is unreachable or topics are missing.

    ``kafka`` gives the security settings (TLS, SASL) to connect with.
    """
    admin = await _started_admin(bootstrap_servers, "streamproc-preflight", kafka)
    try:
        missing = sorted(set(names) - set(await admin.list_topics()))
    finally:
        await admin.close()
    if missing:
        raise ConfigError(
            f"topics {missing} do not exist on {bootstrap_servers}; create them with "
            "`streamproc topics apply --bootstrap HOST:PORT` (or set STREAMPROC_TOPICS__*)"
        )


async def apply_topics(
    bootstrap_servers: str,
    specs: Sequence[TopicSpec],
    *,
    replication_factor: int | None = None,
    client_id: str = "streamproc-topics",
    kafka: KafkaSettings | None = None,
) -> ApplyReport:
    """Create missing topics; report existing ones whose partitions or config differ.

    Existing topics are never altered: drift is for a person to look at.
    ``replication_factor`` overrides the specs' (1 for a single-broker dev cluster);
    ``kafka`` gives the security settings (TLS, SASL) to connect with.
    """
    report = ApplyReport()
    admin = await _started_admin(bootstrap_servers, client_id, kafka)
    try:
        existing = set(await admin.list_topics())
        missing = [s for s in specs if s.name not in existing]
        for spec in missing:
            try:
                await admin.create_topics(
                    [
                        NewTopic(
                            spec.name,
                            spec.partitions,
                            replication_factor or spec.replication_factor,
                            topic_configs=spec.kafka_config(),
                        )
                    ]
                )
                report.created.append(spec.name)
            except TopicAlreadyExistsError:  # created meanwhile by someone else
                existing.add(spec.name)
        present = [s for s in specs if s.name in existing]
        if present:
            await _check_drift(admin, present, report)
    finally:
        await admin.close()
    return report


async def _check_drift(admin: AIOKafkaAdminClient, specs: Sequence[TopicSpec], report: ApplyReport) -> None:
    described = await admin.describe_topics([s.name for s in specs])
    partitions = {t["topic"]: len(t["partitions"]) for t in described}
    configs: dict[str, dict[str, str]] = {}
    responses = await admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, s.name) for s in specs]
    )
    for response in responses:
        for resource in response.resources:
            _error_code, _message, _type, name, entries = resource[:5]
            configs[name] = {entry[0]: entry[1] for entry in entries}
    for spec in specs:
        problems = []
        if partitions.get(spec.name) != spec.partitions:
            problems.append(f"partitions {partitions.get(spec.name)} (spec {spec.partitions})")
        actual = configs.get(spec.name, {})
        for key, want in spec.kafka_config().items():
            if key in actual and actual[key] != want:
                problems.append(f"{key}={actual[key]} (spec {want})")
        if problems:
            report.drift.append(f"{spec.name}: " + ", ".join(problems))
        else:
            report.unchanged.append(spec.name)
