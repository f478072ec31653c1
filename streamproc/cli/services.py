"""`streamproc worker`, `streamproc quality`, `streamproc export-labels` and `streamproc check-config`."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from streamproc.cli.common import BadConfiguration, config_option, load, quiet_kafka_client
from streamproc.config import Settings, settings_reference
from streamproc.errors import ConfigError, StreamprocError

if TYPE_CHECKING:
    from streamproc.policy import PolicySet
    from streamproc.quality.export import ExportReport

__all__ = ["check_config", "export_labels", "quality", "worker"]


@click.command()
@config_option
@click.option(
    "--processes",
    type=click.IntRange(1, 256),
    default=None,
    help="Worker processes in this container, one metrics port for all "
    "(default: STREAMPROC_WORKER__PROCESSES, 1).",
)
def worker(config_file: Path | None, processes: int | None) -> None:
    """Consume content topics and publish verdicts until stopped (SIGTERM or Ctrl-C)."""
    from streamproc.stream import PipelineFailed  # noqa: PLC0415 - keep --help fast
    from streamproc.stream.supervisor import ChildFailed  # noqa: PLC0415
    from streamproc.topics import require_topics  # noqa: PLC0415
    from streamproc.worker import run_worker, worker_topics  # noqa: PLC0415

    settings = load(config_file)
    if processes is not None:
        worker_section = settings.worker.model_copy(update={"processes": processes})
        settings = settings.model_copy(update={"worker": worker_section})
    policies = _policies(settings)
    quiet_kafka_client()
    try:
        asyncio.run(
            require_topics(
                settings.kafka.bootstrap_servers, worker_topics(settings, policies), kafka=settings.kafka
            )
        )
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        run_worker(settings, policies)
    except ConfigError as exc:  # what start-up found wrong (the metrics port is taken)
        raise BadConfiguration(str(exc)) from exc
    except (StreamprocError, PipelineFailed, ChildFailed) as exc:
        raise click.ClickException(f"worker stopped: {exc}") from exc


@click.command()
@config_option
def quality(config_file: Path | None) -> None:
    """Join labels with verdicts: accuracy metrics, final verdicts from review outcomes, appeals."""
    from streamproc.quality.service import consumed_topics, open_store, run_quality  # noqa: PLC0415
    from streamproc.stream import PipelineFailed  # noqa: PLC0415
    from streamproc.topics import require_topics  # noqa: PLC0415

    settings = load(config_file)
    policies = _policies(settings)  # appeals are re-evaluated with them
    quiet_kafka_client()
    try:
        topics = settings.topics
        needed = [*consumed_topics(settings), topics.review, topics.dlq]
        asyncio.run(require_topics(settings.kafka.bootstrap_servers, needed, kafka=settings.kafka))
        store = open_store(settings)
    except StreamprocError as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        run_quality(settings, store, policies)
    except ConfigError as exc:
        raise BadConfiguration(str(exc)) from exc
    except (StreamprocError, PipelineFailed) as exc:
        raise click.ClickException(f"quality service stopped: {exc}") from exc


def _policies(settings: Settings) -> PolicySet:
    """The packs of the settings; the audit rates may name only their categories."""
    from streamproc.policy import load_policy_set  # noqa: PLC0415
    from streamproc.policy.tokenizer_tokens import register_tokenizers  # noqa: PLC0415

    try:
        policies = load_policy_set(settings.policy.paths)
        register_tokenizers(settings.policy.tokenizer_dirs)  # before any prompt is built
    except ConfigError as exc:
        raise BadConfiguration(str(exc)) from exc
    unknown = sorted(set(settings.audit.category_rates) - set(policies.category_ids))
    if unknown:
        raise BadConfiguration(
            f"STREAMPROC_AUDIT__CATEGORY_RATES (audit.category_rates) names unknown category ids "
            f"{', '.join(unknown)}; the packs in STREAMPROC_POLICY__PATHS define "
            f"{', '.join(policies.category_ids)}"
        )
    return policies


@click.command("check-config")
@config_option
@click.option("--reference", is_flag=True, help="Print the table of every setting instead (markdown).")
def check_config(config_file: Path | None, reference: bool) -> None:
    """Validate the settings and print them as JSON, secrets masked."""
    if reference:
        click.echo(settings_reference())
        return
    settings = load(config_file)
    policies = _policies(settings)
    shown = json.loads(settings.model_dump_json())
    shown["policy_versions"] = policies.versions
    shown["shadow_policy_versions"] = {
        p.name: {"version": p.version, "shadow_sample": p.shadow_sample} for p in policies.shadow_policies
    }
    click.echo(json.dumps(shown, indent=2))


@click.command("export-labels")
@config_option
@click.option(
    "--out",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="Labeled dataset to write (JSONL, as `streamproc train` and `eval` read).",
)
def export_labels(config_file: Path | None, out: Path) -> None:
    """Export the labels the quality service has joined (review outcomes, audit labels, appeal
    outcomes), with each item's content read back from its topic, as a training dataset."""
    from streamproc.kafka_security import client_options  # noqa: PLC0415
    from streamproc.quality.content_fetch import KafkaContentFetcher  # noqa: PLC0415
    from streamproc.quality.export import export_labels as export  # noqa: PLC0415
    from streamproc.quality.service import open_store  # noqa: PLC0415

    settings = load(config_file)
    quiet_kafka_client()
    fetcher = KafkaContentFetcher(
        settings.kafka.bootstrap_servers,
        settings.kafka.client_id,
        timeout_seconds=settings.quality.appeal_fetch_timeout_seconds,
        security=client_options(settings.kafka),
    )

    async def run() -> tuple[bytes, ExportReport]:
        try:
            with open_store(settings) as store:
                return await export(store, fetcher)
        finally:
            await fetcher.close()

    try:
        content, report = asyncio.run(run())
    except StreamprocError as exc:
        raise click.ClickException(str(exc)) from exc
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(content)
    sources = ", ".join(f"{n} {s}" for s, n in sorted(report.sources.items())) or "none"
    click.echo(f"{out}: {report.written} labeled items ({sources})")
    for reason, count in sorted(report.skipped.items()):
        click.echo(f"  left out: {count} ({reason})")
