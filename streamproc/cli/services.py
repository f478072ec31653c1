"""`streamproc worker`, `streamproc quality` and `streamproc check-config`."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import click

from streamproc.cli.common import config_option, load
from streamproc.config import settings_reference
from streamproc.errors import ConfigError, StreamprocError

__all__ = ["check_config", "quality", "worker"]


@click.command()
@config_option
def worker(config_file: Path | None) -> None:
    """Consume content topics and publish verdicts until stopped (SIGTERM or Ctrl-C)."""
    from streamproc.policy import load_policy_set  # noqa: PLC0415 - keep --help fast
    from streamproc.stream import PipelineFailed  # noqa: PLC0415
    from streamproc.topics import require_topics  # noqa: PLC0415
    from streamproc.worker import run_worker, worker_topics  # noqa: PLC0415

    settings = load(config_file)
    try:
        policies = load_policy_set(settings.policy.paths)
        topics = worker_topics(settings, policies)
        asyncio.run(require_topics(settings.kafka.bootstrap_servers, topics))
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        run_worker(settings, policies)
    except (StreamprocError, PipelineFailed) as exc:
        raise click.ClickException(f"worker stopped: {exc}") from exc


@click.command()
@config_option
def quality(config_file: Path | None) -> None:
    """Join labels with verdicts: accuracy metrics, final verdicts from review outcomes, appeals."""
    from streamproc.policy import load_policy_set  # noqa: PLC0415
    from streamproc.quality.service import consumed_topics, open_store, run_quality  # noqa: PLC0415
    from streamproc.stream import PipelineFailed  # noqa: PLC0415
    from streamproc.topics import require_topics  # noqa: PLC0415

    settings = load(config_file)
    try:
        policies = load_policy_set(settings.policy.paths)  # appeals are re-evaluated with them
        topics = settings.topics
        needed = [*consumed_topics(settings), topics.review, topics.dlq]
        asyncio.run(require_topics(settings.kafka.bootstrap_servers, needed))
        store = open_store(settings)
    except StreamprocError as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        run_quality(settings, store, policies)
    except (StreamprocError, PipelineFailed) as exc:
        raise click.ClickException(f"quality service stopped: {exc}") from exc


@click.command("check-config")
@config_option
@click.option("--reference", is_flag=True, help="Print the table of every setting instead (markdown).")
def check_config(config_file: Path | None, reference: bool) -> None:
    """Validate the settings and print them as JSON, secrets masked."""
    from streamproc.policy import load_policy_set  # noqa: PLC0415

    if reference:
        click.echo(settings_reference())
        return
    settings = load(config_file)
    try:
        policies = load_policy_set(settings.policy.paths)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    shown = json.loads(settings.model_dump_json())
    shown["policy_versions"] = policies.versions
    shown["shadow_policy_versions"] = {
        p.name: {"version": p.version, "shadow_sample": p.shadow_sample} for p in policies.shadow_policies
    }
    click.echo(json.dumps(shown, indent=2))
