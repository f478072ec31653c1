"""The settings tree: sections, fields, their checks and the reference table."""

from __future__ import annotations

import os
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    model_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from streamproc.config.cascade import CascadeSettings
from streamproc.config.checks import HttpUrlSetting, lowercase
from streamproc.config.embedding import EmbeddingSettings
from streamproc.config.kafka import KafkaSettings
from streamproc.config.servers import existing_file

__all__ = [
    "CONFIG_FILE_ENV",
    "ENV_PREFIX",
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
    "config_file_override",
]

CONFIG_FILE_ENV = "STREAMPROC_CONFIG_FILE"
#: The YAML file ``load_settings`` was given, while it builds the settings (instead of the
#: environment variable, so one call's --config never leaks into a later ``Settings()``).
config_file_override: ContextVar[str | None] = ContextVar("streamproc_config_file", default=None)
LogLevel = Literal["debug", "info", "warning", "error"]
Seconds = Annotated[float, Field(gt=0)]
ENV_PREFIX = "STREAMPROC_"


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


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

    @model_validator(mode="after")
    def _distinct_topics(self) -> TopicSettings:
        by_topic: dict[str, list[str]] = {}
        for field, topic in self.model_dump().items():
            by_topic.setdefault(topic, []).append(field.upper())
        shared = [
            f"{' and '.join(fields)} are both {topic}"
            for topic, fields in by_topic.items()
            if len(fields) > 1
        ]
        if shared:
            raise PydanticCustomError("distinct_topics", f"topics must all differ: {'; '.join(shared)}")
        return self


class InferenceSettings(_Section):
    base_url: HttpUrlSetting = Field(
        default="http://127.0.0.1:8000/v1",
        description="OpenAI-compatible API root of the vLLM server.",
    )
    model: str = Field(default="smollm2-135m-instruct", description="Served model name sent in each request.")
    api_key: SecretStr | None = Field(default=None, description="Bearer token, if the server needs one.")
    ca_file: Annotated[Path, AfterValidator(existing_file)] | None = Field(
        default=None,
        description="PEM file of the CAs that sign an https model server's certificate; default: the "
        "system's CAs.",
    )
    tls_verify: bool = Field(
        default=True, description="Verify an https model server's certificate (off only for tests)."
    )
    timeout_seconds: Seconds = Field(default=30.0, description="Per request, per attempt.")
    max_attempts: Annotated[int, Field(ge=1, le=20)] = Field(
        default=3, description="Attempts per request before its item is escalated to review."
    )
    max_inflight: Annotated[int, Field(ge=1, le=4096)] = Field(
        default=256,
        description="Most prompts in flight per worker (a request carrying several counts each); "
        "also the HTTP connection pool size.",
    )
    min_inflight: Annotated[int, Field(ge=1, le=4096)] = Field(
        default=32, description="Fewest prompts in flight the adaptive limit goes down to."
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
            raise PydanticCustomError(
                "inflight_range",
                f"MIN_INFLIGHT ({self.min_inflight}) exceeds MAX_INFLIGHT ({self.max_inflight})",
            )
        return self


class PolicySettings(_Section):
    paths: list[Path] = Field(
        default_factory=lambda: [Path("policies")],
        description="Policy pack files or folders of them (*.yaml).",
        json_schema_extra={"shown_default": '["policies"]'},
    )
    watch: bool = Field(default=True, description="Reload changed packs without a restart.")
    tokenizer_dirs: list[Path] = Field(
        default_factory=list,
        description="Directories with the served models' tokenizer files (tokenizer_config.json, "
        "tokenizer.json): their control tokens are broken in item text too, beside the shapes of "
        "the known model families. Set it for a model of another family.",
        json_schema_extra={"shown_default": "[]"},
    )


class WorkerSettings(_Section):
    processes: Annotated[int, Field(ge=1, le=256)] = Field(
        default=1,
        description="Worker processes in this container, each a member of the consumer group with its "
        "own Kafka clients and model client, behind one metrics port (`streamproc worker --processes`).",
    )
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
    log_level: Annotated[LogLevel, BeforeValidator(lowercase)] = Field(
        default="info", description="debug, info, warning or error (any case)."
    )
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="Log lines of both services: text (one line per record) or json (one JSON object "
        "per line: time, level, logger, message and the record's extra fields).",
    )


class MetricsSettings(_Section):
    enabled: bool = Field(default=True, description="Serve Prometheus metrics.")
    host: str = Field(
        default="0.0.0.0",  # noqa: S104 - scraped from other hosts by design
        description="Address /metrics, /healthz and /readyz listen on; default: every interface, as "
        "Prometheus and the kubelet connect from other hosts (127.0.0.1: this host only).",
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
        description="A score this close to a category's review or reject threshold counts as near it "
        "(a pack's audit.near_threshold_band overrides it).",
    )
    near_threshold_boost: Annotated[float, Field(ge=1.0, le=1000.0)] = Field(
        default=5.0,
        description="Factor on the probability of a verdict with a score near a threshold (a pack's "
        "audit.near_threshold_boost overrides it).",
    )


class Settings(BaseSettings):
    """Everything a worker needs to know."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        frozen=True,
        extra="forbid",
    )

    kafka: KafkaSettings = KafkaSettings()
    topics: TopicSettings = TopicSettings()
    inference: InferenceSettings = InferenceSettings()
    cascade: CascadeSettings = CascadeSettings()
    embedding: EmbeddingSettings = EmbeddingSettings()
    policy: PolicySettings = PolicySettings()
    worker: WorkerSettings = WorkerSettings()
    metrics: MetricsSettings = MetricsSettings()
    audit: AuditSettings = AuditSettings()
    quality: QualitySettings = QualitySettings()

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
        config_file = config_file_override.get() or os.environ.get(CONFIG_FILE_ENV)
        if config_file:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=config_file))
        return tuple(sources)
