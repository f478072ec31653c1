"""The ``streamproc`` command line."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import sys
from pathlib import Path

import click

from streamproc.config import Settings, load_settings, settings_reference
from streamproc.errors import ConfigError, StreamprocError

__all__ = ["main"]

_config_option = click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="YAML settings file (environment variables override it).",
)


def _settings(config_file: Path | None) -> Settings:
    try:
        return load_settings(config_file)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="streamproc")
def cli() -> None:
    """Streaming content moderation: Kafka in, vLLM-scored verdicts out."""


@cli.command()
@_config_option
def worker(config_file: Path | None) -> None:
    """Consume content topics and publish verdicts until stopped (SIGTERM or Ctrl-C)."""
    from streamproc.policy import load_policy_set  # noqa: PLC0415 - keep --help fast
    from streamproc.topics import require_topics  # noqa: PLC0415
    from streamproc.worker import run_worker, worker_topics  # noqa: PLC0415

    settings = _settings(config_file)
    try:
        policies = load_policy_set(settings.policy.paths)
        topics = worker_topics(settings, policies)
        asyncio.run(require_topics(settings.kafka.bootstrap_servers, topics))
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    # faust parses sys.argv itself; hand it only the program name.
    sys.argv = sys.argv[:1]
    run_worker(settings, policies)


@cli.command()
@_config_option
def quality(config_file: Path | None) -> None:
    """Join labels with verdicts: accuracy metrics, final verdicts from review outcomes, appeals."""
    from streamproc.policy import load_policy_set  # noqa: PLC0415
    from streamproc.quality.service import consumed_topics, open_store, run_quality  # noqa: PLC0415
    from streamproc.stream.pipeline import PipelineFailed  # noqa: PLC0415
    from streamproc.topics import require_topics  # noqa: PLC0415

    settings = _settings(config_file)
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


@cli.command("check-config")
@_config_option
@click.option("--reference", is_flag=True, help="Print the table of every setting instead (markdown).")
def check_config(config_file: Path | None, reference: bool) -> None:
    """Validate the settings and print them as JSON, secrets masked."""
    from streamproc.policy import load_policy_set  # noqa: PLC0415

    if reference:
        click.echo(settings_reference())
        return
    settings = _settings(config_file)
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


@cli.group()
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


@cli.group()
def policy() -> None:
    """Policy packs (policies/*.yaml)."""


@policy.command("check")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
def policy_check(files: tuple[Path, ...]) -> None:
    """Validate packs; errors name the file and line. Exit 1 if any is invalid."""
    from streamproc.policy import PolicySet, load_pack  # noqa: PLC0415
    from streamproc.policy.packs import pack_files  # noqa: PLC0415

    failed = False
    loaded = []
    try:
        paths = pack_files(files)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    for path in paths:
        try:
            pack = load_pack(path)
        except ConfigError as exc:
            failed = True
            click.echo(str(exc), err=True)
            continue
        loaded.append(pack)
        mode = f"shadow on {pack.shadow_sample:.0%} of its items, " if pack.mode == "shadow" else ""
        click.echo(
            f"ok  {path}: {pack.version} ({mode}{pack.content_type}, {len(pack.categories)} categories, "
            f"{len(pack.rules)} rules, scorer {pack.scorer})"
        )
    if failed:
        raise click.ClickException("some packs are invalid; the lines above say where")
    if any(path.is_dir() for path in files):
        try:
            PolicySet(loaded)
        except ConfigError as exc:
            raise click.ClickException(str(exc)) from exc


@policy.command("show")
@click.argument("pack_file", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option(
    "--example", type=click.Path(path_type=Path, exists=True, dir_okay=False), help="JSONL file of events."
)
@click.option("--line", "line_number", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--model-name", default="MODEL", show_default=True, help="Model name to put in the bodies.")
def policy_show(pack_file: Path, example: Path | None, line_number: int, model_name: str) -> None:
    """Print the exact model requests the pack builds for an example item."""
    from streamproc.policy import SCORERS, item_content, load_pack  # noqa: PLC0415
    from streamproc.schemas import decode_event  # noqa: PLC0415

    try:
        pack = load_pack(pack_file)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    example = example or Path("samples") / f"{pack.content_type}s.jsonl"
    lines = [line for line in example.read_bytes().splitlines() if line.strip()] if example.is_file() else []
    if not lines or line_number > len(lines):
        raise click.ClickException(f"{example} has no line {line_number}; pass --example FILE.jsonl")
    try:
        event = decode_event(pack.content_type, lines[line_number - 1])
    except StreamprocError as exc:
        raise click.ClickException(f"{example}:{line_number}: {exc}") from exc
    for request in SCORERS[pack.scorer].requests(pack, item_content(pack, event)):
        click.echo(f"POST /v1/{request.endpoint}")
        click.echo(json.dumps({"model": model_name, **request.body}, indent=2, ensure_ascii=False))


@cli.group()
def topics() -> None:
    """Topics as code (topics/*.yaml)."""


@topics.command("apply")
@click.option("--bootstrap", required=True, help="Kafka bootstrap servers, HOST:PORT[,HOST:PORT].")
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
def topics_apply(bootstrap: str, directory: Path, replication_factor: int | None) -> None:
    """Create missing topics and report drift; safe to run again. Exit 1 on drift."""
    from streamproc.topics import apply_topics, load_topic_specs  # noqa: PLC0415

    try:
        specs = load_topic_specs(directory)
        report = asyncio.run(apply_topics(bootstrap, specs, replication_factor=replication_factor))
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    for line in report.lines():
        click.echo(line)
    if report.drift:
        raise click.ClickException("some topics differ from their specs; fix them by hand or update the spec")


@cli.command()
@click.option("--bootstrap", required=True, help="Kafka bootstrap servers, HOST:PORT.")
@click.option("--topic", required=True, help="Topic to publish to.")
@click.option("--restamp/--keep-timestamps", default=True, show_default=True, help="Set created_at to now.")
@click.argument(
    "files", nargs=-1, required=True, type=click.Path(path_type=Path, exists=True, dir_okay=False)
)
def publish(bootstrap: str, topic: str, restamp: bool, files: tuple[Path, ...]) -> None:
    """Publish JSONL events (one per line) as they are, keyed by listing_id or video_id."""
    from streamproc.dev.samples import publish_jsonl  # noqa: PLC0415

    count = asyncio.run(publish_jsonl(bootstrap, topic, files, restamp=restamp))
    click.echo(f"published {count} records to {topic}")


@cli.command()
@click.option(
    "--vllm-python", type=click.Path(path_type=Path, dir_okay=False), help="python of the vLLM virtualenv."
)
@click.option(
    "--model-dir", type=click.Path(path_type=Path, file_okay=False), help="Model directory to serve."
)
@click.option(
    "--vllm-url", default=None, help="Use this running OpenAI-compatible server instead of starting one."
)
@click.option(
    "--model-name", default=None, help="Served model name (default: the settings' inference.model)."
)
@click.option(
    "--duration",
    type=click.FloatRange(min=0),
    default=None,
    help="Stop after this many seconds (default: wait for Ctrl-C).",
)
@click.option(
    "--samples",
    "samples_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("samples"),
    show_default=True,
)
@click.option(
    "--topics-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("topics"),
    show_default=True,
)
@click.option(
    "--policies-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("policies"),
    show_default=True,
)
@click.option("--metrics-port", type=int, default=9108, show_default=True)
@click.option(
    "--run-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path(".demo"),
    show_default=True,
    help="Logs of the started processes.",
)
def demo(
    vllm_python: Path | None,
    model_dir: Path | None,
    vllm_url: str | None,
    model_name: str | None,
    duration: float | None,
    samples_dir: Path,
    topics_dir: Path,
    policies_dir: Path,
    metrics_port: int,
    run_dir: Path,
) -> None:
    """Start a broker, a model server and a worker; moderate the shipped samples."""
    from streamproc.dev.demo import DemoOptions, run_demo  # noqa: PLC0415

    if vllm_url is None and (vllm_python is None or model_dir is None):
        raise click.UsageError(
            "give --vllm-python and --model-dir to start a model server (make demo does), "
            "or --vllm-url for a running one"
        )
    options = DemoOptions(
        vllm_python=vllm_python,
        model_dir=model_dir,
        vllm_url=vllm_url,
        model_name=model_name or Settings().inference.model,
        duration=duration,
        samples_dir=samples_dir,
        topics_dir=topics_dir,
        policies_dir=policies_dir,
        metrics_port=metrics_port,
        run_dir=run_dir,
    )
    try:
        run_demo(options)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc


@cli.command("eval")
@_config_option
@click.option(
    "--policy",
    "policy_files",
    multiple=True,
    required=True,
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="Pack to evaluate (repeat for several: one report each, in DIR/<pack name>/).",
)
@click.option(
    "--data",
    required=True,
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="Labeled JSONL: {content_type, event, true_categories} per line.",
)
@click.option(
    "--compare",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    default=None,
    help="A second pack to run over the same items, side by side in one report.",
)
@click.option("--out", required=True, type=click.Path(path_type=Path, file_okay=False), help="Report folder.")
@click.option(
    "--vllm-url", default=None, help="Model server API root (default: the settings' inference.base_url)."
)
@click.option(
    "--model-name", default=None, help="Served model name (default: the settings' inference.model)."
)
@click.option(
    "--vllm-python",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Start a vLLM server with this python (with --model-dir) instead of using a running one.",
)
@click.option(
    "--model-dir", type=click.Path(path_type=Path, file_okay=False), help="Model directory to serve."
)
def eval_(
    config_file: Path | None,
    policy_files: tuple[Path, ...],
    data: Path,
    compare: Path | None,
    out: Path,
    vllm_url: str | None,
    model_name: str | None,
    vllm_python: Path | None,
    model_dir: Path | None,
) -> None:
    """Run policy packs over a labeled dataset through the model server; write a report."""
    from streamproc.evaluation import ModelServer, plan_evaluation, run_evaluation  # noqa: PLC0415

    if (vllm_python is None) != (model_dir is None):
        raise click.UsageError("--vllm-python and --model-dir go together (they start a model server)")
    if vllm_python is not None and vllm_url is not None:
        raise click.UsageError("give --vllm-url for a running server, or --vllm-python/--model-dir, not both")
    settings = _settings(config_file)
    server = ModelServer(
        base_url=None if vllm_python is not None else (vllm_url or settings.inference.base_url),
        model=model_name or settings.inference.model,
        vllm_python=vllm_python,
        model_dir=model_dir,
    )
    try:
        plan = plan_evaluation(list(policy_files), data, out, compare)
        with contextlib.ExitStack() as stack:
            on_done = None
            if sys.stderr.isatty():  # a bar on a terminal; nothing in logs and pipes
                bar = stack.enter_context(
                    click.progressbar(length=plan.requests, label="evaluating", file=sys.stderr)
                )
                on_done = functools.partial(bar.update, 1)
            reports = run_evaluation(
                plan,
                server,
                settings.inference,
                on_done=on_done,
                say=functools.partial(click.echo, err=True),
            )
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    for report in reports:
        for run in report.runs:
            click.echo(
                f"{run.policy.version}: {len(run.evaluated)} items evaluated, {run.skipped} of the other "
                f"content type skipped, {len(run.errors)} inference errors"
            )
        click.echo(f"report: {report.directory / 'report.md'}")


def main() -> None:
    cli()
