"""Settings: one typed tree, read once at start-up.

Every field can be set by environment variable (``STREAMPROC_`` prefix, ``__`` between
levels, e.g. ``STREAMPROC_INFERENCE__BASE_URL``), by a YAML file named in
``STREAMPROC_CONFIG_FILE`` (or ``--config``), or by keyword in code and tests.
Precedence: keyword > environment > file > default.
"""

from __future__ import annotations

import json
import os
import socket
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from streamproc.errors import ConfigError, describe_validation_error

__all__ = [
    "CONFIG_FILE_ENV",
    "AuditSettings",
    "InferenceSettings",
    "KafkaSettings",
    "LogLevel",
    "MetricsSettings",
    "PolicySettings",
    "QualitySettings",
    "Settings",
    "TopicSettings",
    "WorkerSettings",
    "load_settings",
    "settings_reference",
]

CONFIG_FILE_ENV = "STREAMPROC_CONFIG_FILE"
#: The YAML file ``load_settings`` was given, while it builds the settings (instead of the
#: environment variable, so one call's --config never leaks into a later ``Settings()``).
_config_file: ContextVar[str | None] = ContextVar("streamproc_config_file", default=None)
LogLevel = Literal["debug", "info", "warning", "error"]
Seconds = Annotated[float, Field(gt=0)]


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class KafkaSettings(_Section):
    bootstrap_servers: str = Field(default="127.0.0.1:9092", description="Comma-separated host:port list.")
    group_id: str = Field(default="streamproc", description="Consumer group of the workers.")
    client_id: str = Field(
        default_factory=lambda: f"streamproc-{socket.gethostname()}-{os.getpid()}",
        description="Identifies this worker in broker logs and dead letters.",
        json_schema_extra={"shown_default": "streamproc-HOSTNAME-PID"},
    )
    auto_offset_reset: Literal["earliest", "latest"] = Field(
        default="earliest", description="Where a new consumer group starts."
    )
    # Short timeouts make group joins and the takeover of a dead member's partitions take
    # seconds, not the 30+ s of common client defaults.
    session_timeout_seconds: Seconds = Field(
        default=10.0, description="A worker silent this long is dropped from the group."
    )
    heartbeat_interval_seconds: Seconds = Field(default=1.0, description="Consumer heartbeat period.")
    rebalance_timeout_seconds: Seconds = Field(
        default=10.0, description="How long members get to rejoin during a rebalance."
    )


class TopicSettings(_Section):
    listings: str = Field(default="content.listings.v1", description="Listing events in.")
    videos: str = Field(default="content.videos.v1", description="Video events in.")
    verdicts: str = Field(default="moderation.verdicts.v1", description="Every verdict out.")
    review: str = Field(default="moderation.review.v1", description="Verdicts needing a human.")
    dlq: str = Field(default="moderation.dlq.v1", description="Undecodable input, with the reason.")
    audit: str = Field(default="moderation.audit.v1", description="Verdicts sampled for human QA.")
    shadow: str = Field(
        default="moderation.shadow.v1", description="Candidate (shadow) policy verdicts; never enforced."
    )
    labels: str = Field(
        default="moderation.labels.v1", description="Human labels in: QA audits, review outcomes, appeals."
    )
    appeals: str = Field(
        default="moderation.appeals.v1",
        description="Appeals of enforced verdicts in (re-evaluated by `streamproc quality`).",
    )


class InferenceSettings(_Section):
    base_url: str = Field(
        default="http://127.0.0.1:8000/v1",
        description="OpenAI-compatible API root of the vLLM server.",
    )
    model: str = Field(default="smollm2-135m-instruct", description="Served model name sent in each request.")
    api_key: SecretStr | None = Field(default=None, description="Bearer token, if the server needs one.")
    timeout_seconds: Seconds = Field(default=30.0, description="Per request, per attempt.")
    max_attempts: Annotated[int, Field(ge=1, le=20)] = Field(
        default=3, description="Attempts per request before its item is escalated to review."
    )
    max_inflight: Annotated[int, Field(ge=1, le=4096)] = Field(
        default=256, description="Most concurrent requests per worker (= HTTP connection pool size)."
    )
    min_inflight: Annotated[int, Field(ge=1, le=4096)] = Field(
        default=32, description="Fewest concurrent requests the adaptive limit goes down to."
    )
    adaptive_concurrency: bool = Field(
        default=True,
        description="Follow the server's latency between min_inflight and max_inflight; "
        "off: always max_inflight.",
    )
    breaker_failures: Annotated[int, Field(ge=1, le=1000)] = Field(
        default=5, description="Consecutive transient failures that open the circuit."
    )
    breaker_recovery_seconds: Annotated[int, Field(ge=1, le=3600)] = Field(
        default=5, description="How long an open circuit fails fast before probing the server."
    )
    on_unavailable: Literal["hold", "review"] = Field(
        default="hold",
        description="While the circuit is open: hold items (consumption pauses) until the server "
        "is back, or escalate them to review after max_attempts.",
    )

    @model_validator(mode="after")
    def _inflight_range(self) -> InferenceSettings:
        if self.min_inflight > self.max_inflight:
            raise ValueError(f"min_inflight ({self.min_inflight}) exceeds max_inflight ({self.max_inflight})")
        return self


class PolicySettings(_Section):
    paths: list[Path] = Field(
        default_factory=lambda: [Path("policies")],
        description="Policy pack files or folders of them (*.yaml).",
        json_schema_extra={"shown_default": '["policies"]'},
    )
    watch: bool = Field(default=True, description="Reload changed packs without a restart.")


class WorkerSettings(_Section):
    max_inflight_items: Annotated[int, Field(ge=1, le=100_000)] = Field(
        default=1024,
        description="Records taken and not yet committed (in-flight window); at this many, consumption "
        "pauses. A crash repeats at most this many.",
    )
    fetch_max_records: Annotated[int, Field(ge=1, le=100_000)] = Field(
        default=500, description="Most records taken from the consumer per poll."
    )
    commit_interval_seconds: Seconds = Field(
        default=1.0, description="How often finished offsets are committed."
    )
    drain_timeout_seconds: Seconds = Field(
        default=5.0,
        description="On shutdown or partition revocation, how long in-flight items get to finish; "
        "the rest are left for the next owner.",
    )
    linger_ms: Annotated[int, Field(ge=0, le=1000)] = Field(
        default=5, description="How long the producer waits to fill a batch of outputs."
    )
    log_level: LogLevel = Field(default="info", description="debug, info, warning or error.")
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="Log lines of both services: text (one line per record) or json (one JSON object "
        "per line: time, level, logger, message and the record's extra fields).",
    )


class MetricsSettings(_Section):
    enabled: bool = Field(default=True, description="Serve Prometheus metrics.")
    host: str = Field(
        default="0.0.0.0",  # noqa: S104 - scraped from other hosts by design
        description="Address /metrics listens on.",
    )
    port: Annotated[int, Field(ge=0, le=65535)] = Field(
        default=9108, description="Port of /metrics (0 picks a free one)."
    )


class QualitySettings(_Section):
    group_id: str | None = Field(
        default=None,
        description="Consumer group of `streamproc quality`; default: the workers' group id + `-quality`.",
        json_schema_extra={"shown_default": "KAFKA__GROUP_ID-quality"},
    )
    data_dir: Path = Field(
        default=Path(".streamproc-quality"),
        description="Folder of the quality service's SQLite join store (keep it across restarts).",
    )
    retention_days: Annotated[float, Field(gt=0)] = Field(
        default=30.0,
        description="Content revisions whose newest verdict or label is older than this are pruned.",
    )
    max_items: Annotated[int, Field(ge=1)] = Field(
        default=100_000, description="Most content revisions kept in the store; the oldest are pruned first."
    )
    metrics_port: Annotated[int, Field(ge=0, le=65535)] = Field(
        default=9109, description="Port of the quality service's /metrics (0 picks a free one)."
    )
    refresh_seconds: Seconds = Field(
        default=10.0,
        description="How often the exported accuracy figures are recomputed from the store, if it changed.",
    )
    appeal_review_threshold: Annotated[float, Field(ge=0.0, le=1.0)] = Field(
        default=0.3,
        description="Appeal policy: every category's review threshold is lowered to at most this "
        "(reject thresholds unchanged), so a re-evaluation confirms a decision only when it is clear.",
    )
    appeal_model: str | None = Field(
        default=None,
        description="Served model name for appeal re-evaluations (on the same server); default: "
        "INFERENCE__MODEL.",
        json_schema_extra={"shown_default": "INFERENCE__MODEL"},
    )
    appeal_fetch_timeout_seconds: Seconds = Field(
        default=10.0,
        description="How long fetching an appealed item's original record from Kafka may take before "
        "the appeal goes to a human as APPEAL_CONTENT_UNAVAILABLE.",
    )


Rate = Annotated[float, Field(ge=0.0, le=1.0)]
_DEFAULT_DECISION_RATES: dict[Literal["approve", "review", "reject"], float] = {
    "review": 0.05,
    "reject": 0.05,
}


class AuditSettings(_Section):
    """Which live verdicts go to the audit topic for human QA (see streamproc.decision.sampling)."""

    enabled: bool = Field(default=True, description="Send a sample of live verdicts to the audit topic.")
    base_rate: Rate = Field(default=0.01, description="Share of every verdict sampled.")
    decision_rates: dict[Literal["approve", "review", "reject"], Rate] = Field(
        default_factory=_DEFAULT_DECISION_RATES.copy,
        description="Sampling rate per decision (JSON), where higher than the base rate.",
    )
    category_rates: dict[str, Rate] = Field(
        default_factory=dict,
        description="Sampling rate per flagged or deciding category id (JSON), where higher than the "
        "base rate.",
    )
    category_default_rate: Rate = Field(
        default=0.0, description="Rate for flagged categories not in category_rates."
    )
    near_threshold_band: Annotated[float, Field(ge=0.0, le=1.0)] = Field(
        default=0.05,
        description="A score this close to a category's review or reject threshold counts as near it.",
    )
    near_threshold_boost: Annotated[float, Field(ge=1.0, le=1000.0)] = Field(
        default=5.0, description="Factor on the probability of a verdict with a score near a threshold."
    )


class Settings(BaseSettings):
    """Everything a worker needs to know."""

    model_config = SettingsConfigDict(
        env_prefix="STREAMPROC_",
        env_nested_delimiter="__",
        frozen=True,
        extra="forbid",
    )

    kafka: KafkaSettings = KafkaSettings()
    topics: TopicSettings = TopicSettings()
    inference: InferenceSettings = InferenceSettings()
    policy: PolicySettings = PolicySettings()
    worker: WorkerSettings = WorkerSettings()
    metrics: MetricsSettings = MetricsSettings()
    audit: AuditSettings = AuditSettings()
    quality: QualitySettings = QualitySettings()

    @model_validator(mode="after")
    def _distinct_topics(self) -> Settings:
        names = list(self.topics.model_dump().values())
        if len(set(names)) != len(names):
            raise ValueError(f"topics must all differ, got {names}")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = _config_file.get() or os.environ.get(CONFIG_FILE_ENV)
        if config_file:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=config_file))
        return tuple(sources)


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings, turning validation errors into one readable ConfigError.

    ``config_file`` (``--config``) takes the place of ``STREAMPROC_CONFIG_FILE`` for this
    call only; the environment is left as it is.
    """
    if config_file is not None and not config_file.is_file():
        raise ConfigError(f"config file {config_file} does not exist; pass an existing YAML file")
    named = os.environ.get(CONFIG_FILE_ENV)
    if config_file is None and named and not Path(named).is_file():
        raise ConfigError(f"{CONFIG_FILE_ENV} names {named}, which does not exist; unset it or fix the path")
    token = _config_file.set(str(config_file) if config_file is not None else None)
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = describe_validation_error(exc, whole="settings")
        raise ConfigError(
            f"invalid settings: {problems}. Set them with STREAMPROC_<SECTION>__<FIELD> "
            f"environment variables or the YAML file in {CONFIG_FILE_ENV}."
        ) from exc
    finally:
        _config_file.reset(token)


def settings_reference() -> str:
    """The configuration reference as a markdown table (kept in docs/operations.md by a test)."""
    rows = ["| environment variable | default | description |", "|---|---|---|"]
    for section_name, section_field in Settings.model_fields.items():
        section = section_field.annotation
        assert isinstance(section, type) and issubclass(section, BaseModel)  # noqa: S101
        for name, field in section.model_fields.items():
            extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
            if "shown_default" in extra:
                default = str(extra["shown_default"])
            elif field.default_factory is not None:
                default = json.dumps(field.get_default(call_default_factory=True))
            else:
                default = "(none)" if field.default is None else str(field.default)
            env = f"STREAMPROC_{section_name.upper()}__{name.upper()}"
            description = (field.description or "").replace("|", "\\|")
            rows.append(f"| `{env}` | `{default}` | {description} |")
    return "\n".join(rows)
