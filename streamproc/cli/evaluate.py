"""`streamproc eval`: policy packs over a labeled dataset through the model server."""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Iterator
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
    from streamproc.evaluation import headlines, plan_evaluation, run_evaluation  # noqa: PLC0415

    if (vllm_python is None) != (model_dir is None):
        raise click.UsageError("--vllm-python and --model-dir go together (they start a model server)")
    if vllm_python is not None and vllm_url is not None:
        raise click.UsageError("give --vllm-url for a running server, or --vllm-python/--model-dir, not both")
    settings = load(config_file)
    model = model_name or settings.inference.model
    try:
        # Checked before a model server starts: a bad dataset must not cost a vLLM start-up.
        plan = plan_evaluation(list(policy_files), data, out, compare)
        with contextlib.ExitStack() as stack:
            base_url = stack.enter_context(
                _model_server(vllm_url or settings.inference.base_url, vllm_python, model_dir, model, out)
            )
            on_done = None
            if sys.stderr.isatty():  # a bar on a terminal; nothing in logs and pipes
                bar = stack.enter_context(
                    click.progressbar(length=plan.requests, label="evaluating", file=sys.stderr)
                )
                on_done = functools.partial(bar.update, 1)
            written = run_evaluation(
                plan,
                settings.inference.model_copy(update={"base_url": base_url, "model": model}),
                on_done=on_done,
            )
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    for report in written:
        for pack in report.report.packs:
            click.echo(
                f"{pack.version}: {pack.evaluated} items evaluated, {pack.skipped_other_content_type} of "
                f"the other content type skipped, {pack.errors} inference errors"
            )
        click.echo(f"report: {report.directory / 'report.md'}")
    for line in headlines(out, written):
        click.echo(line)


@contextlib.contextmanager
def _model_server(
    url: str, vllm_python: Path | None, model_dir: Path | None, model: str, out: Path
) -> Iterator[str]:
    """The API root to evaluate against: ``url``, or a vLLM server's started here and stopped after."""
    if vllm_python is None or model_dir is None:
        yield url
        return
    from streamproc.dev.devstack import VllmServer  # noqa: PLC0415 - only when starting one

    say = functools.partial(click.echo, err=True)
    say(f"starting vLLM for {model_dir} (a few minutes on CPU; log in {out / 'vllm.log'}) …")
    with VllmServer(vllm_python, model_dir, model, out / "vllm.log") as running:
        say(f"model server {running.base_url} serving {model}")
        yield running.base_url
