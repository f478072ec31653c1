"""`streamproc eval`: policy packs over a labeled dataset through the model server."""

from __future__ import annotations

import contextlib
import functools
import sys
from pathlib import Path

import click

from streamproc.cli.common import config_option, load
from streamproc.errors import ConfigError

__all__ = ["eval_"]


@click.command("eval")
@config_option
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
    settings = load(config_file)
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
