"""Schemas, topics and publishing: `streamproc schemas`, `topics`, `publish` and `smoke`."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from streamproc.cli.common import BadConfiguration, BootstrapServers, config_option, load, quiet_kafka_client
from streamproc.errors import ConfigError

__all__ = ["publish", "schemas", "smoke", "topics"]


@click.group()
def schemas() -> None:
    """JSON Schemas of the wire formats."""


@schemas.command("export")
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("topics/schemas"),
    show_default=True,
)
@click.option("--check", is_flag=True, help="Write nothing; fail if the files differ from the models.")
def schemas_export(out: Path, check: bool) -> None:
    """Generate the JSON Schemas from the pydantic models."""
    from streamproc.schemas.export import check_schemas, write_schemas  # noqa: PLC0415

    if check:
        stale = check_schemas(out)
        if stale:
            raise click.ClickException(
                f"schemas out of date in {out}: {', '.join(stale)}; run `streamproc schemas export`"
            )
        click.echo(f"schemas in {out} match the models")
        return
    for path in write_schemas(out):
        click.echo(f"wrote {path}")


@click.group()
def topics() -> None:
    """Topics as code (topics/*.yaml)."""


@topics.command("apply")
@click.option(
    "--bootstrap",
    required=True,
    type=BootstrapServers(),
    help="Kafka bootstrap servers, HOST:PORT[,HOST:PORT].",
)
@click.option(
    "--dir",
    "directory",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("topics"),
    show_default=True,
)
@click.option(
    "--replication-factor",
    type=click.IntRange(min=1),
    default=None,
    help="Override the specs' (1 for a single broker).",
)
@config_option
def topics_apply(
    bootstrap: str, directory: Path, replication_factor: int | None, config_file: Path | None
) -> None:
    """Create missing topics and report drift; safe to run again. Exit 1 on drift.

    TLS and SASL come from the STREAMPROC_KAFKA__ settings (environment or --config).
    """
    from streamproc.topics import apply_topics, load_topic_specs  # noqa: PLC0415

    try:
        specs = load_topic_specs(directory)
    except ConfigError as exc:
        raise BadConfiguration(str(exc)) from exc
    quiet_kafka_client()
    try:
        kafka = load(config_file).kafka
        report = asyncio.run(
            apply_topics(bootstrap, specs, replication_factor=replication_factor, kafka=kafka)
        )
    except ConfigError as exc:  # the broker is out of reach
        raise click.ClickException(str(exc)) from exc
    for line in report.lines():
        click.echo(line)
    if report.drift:
        raise click.ClickException("some topics differ from their specs; fix them by hand or update the spec")


@click.command()
@click.option(
    "--bootstrap",
    required=True,
    type=BootstrapServers(),
    help="Kafka bootstrap servers, HOST:PORT[,HOST:PORT].",
)
@click.option("--topic", required=True, help="Topic to publish to.")
@click.option("--restamp/--keep-timestamps", default=True, show_default=True, help="Set created_at to now.")
@click.argument(
    "files", nargs=-1, required=True, type=click.Path(path_type=Path, exists=True, dir_okay=False)
)
@config_option
def publish(
    bootstrap: str, topic: str, restamp: bool, files: tuple[Path, ...], config_file: Path | None
) -> None:
    """Publish JSONL events (one per line) as they are, keyed by listing_id or video_id.

    TLS and SASL come from the STREAMPROC_KAFKA__ settings (environment or --config).
    """
    from streamproc.dev.samples import publish_jsonl  # noqa: PLC0415

    kafka = load(config_file).kafka
    quiet_kafka_client()
    try:
        count = asyncio.run(publish_jsonl(bootstrap, topic, files, restamp=restamp, kafka=kafka))
    except ConfigError as exc:  # the broker is out of reach
        raise click.ClickException(str(exc)) from exc
    click.echo(f"published {count} records to {topic}")


@click.command()
@click.option(
    "--timeout",
    "within",
    type=click.FloatRange(min=1),
    default=300.0,
    show_default=True,
    help="Seconds to wait for the verdict (a cold model server needs minutes).",
)
@config_option
def smoke(within: float, config_file: Path | None) -> None:
    """Check a running deployment end to end: publish one harmless listing, wait for its verdict.

    Kafka (STREAMPROC_KAFKA__) and topics (STREAMPROC_TOPICS__) come from the workers' settings.
    The listing's seller_id is streamproc-smoke; its id is new on each run. Exits non-zero when
    no verdict comes, when it is dead-lettered, or when the model server could not score it.
    """
    from streamproc.stream.smoke import smoke_test  # noqa: PLC0415

    settings = load(config_file)
    quiet_kafka_client()
    try:
        result = asyncio.run(smoke_test(settings.kafka, settings.topics, within=within))
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    record = result.record or {}
    if result.outcome == "timeout":
        raise click.ClickException(
            f"no verdict for {result.listing_id} on {settings.topics.verdicts} within {within:.0f} s; "
            f"check that workers consume {settings.topics.listings} (their /readyz and logs) "
            "and that the model server answers"
        )
    if result.outcome == "dead_letter":
        raise click.ClickException(f"{result.listing_id} was dead-lettered: {record.get('reason')}")
    decided_by = record.get("decided_by") or {}
    if decided_by.get("kind") == "error":
        raise click.ClickException(
            f"{result.listing_id} got {record.get('decision')} through the fallback: the model "
            f"server could not score it ({decided_by.get('id')})"
        )
    who = " ".join(str(part) for part in (decided_by.get("kind"), decided_by.get("id")) if part)
    click.echo(
        f"{result.listing_id}: {record.get('decision')} after {result.seconds:.1f} s, decided by {who} "
        f"(pack {record.get('policy_version')}, model {record.get('model')})"
    )
