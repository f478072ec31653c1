"""`streamproc eval`: policy packs over a labeled dataset through the model server."""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click
from pydantic import ValidationError

from streamproc.cli.common import config_option, load
from streamproc.config import CascadeSettings, InferenceSettings, Settings
from streamproc.errors import ConfigError

if TYPE_CHECKING:
    from streamproc.evaluation import WrittenReport

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
    "--cascade-model",
    default=None,
    help="Second model for packs with a cascade block: their uncertain items go to it, and the report "
    "shows the cascade's cost and effect (default: the settings' cascade.model).",
)
@click.option(
    "--cascade-url",
    default=None,
    help="API root of the second model's server (default: the settings' cascade.base_url, else the "
    "model server's).",
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
    cascade_model: str | None,
    cascade_url: str | None,
    vllm_python: Path | None,
    model_dir: Path | None,
) -> None:
    """Run policy packs over a labeled dataset through the model server; write a report."""
    from streamproc.evaluation import plan_evaluation, run_evaluation  # noqa: PLC0415
    from streamproc.evaluation.command import check_cascade  # noqa: PLC0415

    if (vllm_python is None) != (model_dir is None):
        raise click.UsageError("--vllm-python and --model-dir go together (they start a model server)")
    if vllm_python is not None and vllm_url is not None:
        raise click.UsageError("give --vllm-url for a running server, or --vllm-python/--model-dir, not both")
    settings = load(config_file)
    model = model_name or settings.inference.model
    cascade_model = cascade_model or settings.cascade.model
    try:
        # Checked before a model server starts: a bad dataset must not cost a vLLM start-up.
        plan = plan_evaluation(list(policy_files), data, out, compare)
        if cascade_model is not None:
            _cascade(settings, settings.inference, cascade_model, cascade_url)  # a bad URL: now
            check_cascade(plan)
        with contextlib.ExitStack() as stack:
            base_url = stack.enter_context(
                _model_server(
                    vllm_url or settings.inference.base_url,
                    vllm_python,
                    model_dir,
                    model,
                    out,
                    other_names=[cascade_model] if cascade_model and not cascade_url else [],
                )
            )
            on_done = None
            if sys.stderr.isatty():  # a bar on a terminal; nothing in logs and pipes
                bar = stack.enter_context(
                    click.progressbar(length=plan.requests, label="evaluating", file=sys.stderr)
                )
                on_done = functools.partial(bar.update, 1)
            inference = settings.inference.model_copy(update={"base_url": base_url, "model": model})
            written = run_evaluation(
                plan,
                inference,
                on_done=on_done,
                cascade=_cascade(settings, inference, cascade_model, cascade_url),
            )
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    _echo_results(out, written)


def _echo_results(out: Path, written: Sequence[WrittenReport]) -> None:
    from streamproc.evaluation import headlines  # noqa: PLC0415
    from streamproc.evaluation.report import cascade_headline  # noqa: PLC0415

    for report in written:
        for pack in report.report.packs:
            click.echo(
                f"{pack.version}: {pack.evaluated} items evaluated, {pack.skipped_other_content_type} of "
                f"the other content type skipped, {pack.errors} inference errors"
            )
            if pack.cascade is not None:
                click.echo(cascade_headline(pack.label, pack.cascade))
        click.echo(f"report: {report.directory / 'report.md'}")
    for line in headlines(out, written):
        click.echo(line)


def _cascade(
    settings: Settings, inference: InferenceSettings, model: str | None, url: str | None
) -> InferenceSettings | None:
    """The second model's settings: the cascade section's, with the options in place."""
    if model is None:
        return None
    update = {"model": model, **({"base_url": url} if url else {})}
    try:
        cascade = CascadeSettings.model_validate({**settings.cascade.model_dump(), **update})
    except ValidationError as exc:
        raise click.BadParameter(str(exc.errors()[0]["msg"]), param_hint="--cascade-url") from exc
    # the main server's token and CA only when the second model is on it, as in the worker
    return cascade.inference(inference)


@contextlib.contextmanager
def _model_server(
    url: str,
    vllm_python: Path | None,
    model_dir: Path | None,
    model: str,
    out: Path,
    *,
    other_names: Sequence[str] = (),
) -> Iterator[str]:
    """The API root to evaluate against: ``url``, or a vLLM server's started here and stopped after."""
    if vllm_python is None or model_dir is None:
        yield url
        return
    from streamproc.dev.devstack import VllmServer  # noqa: PLC0415 - only when starting one

    say = functools.partial(click.echo, err=True)
    say(f"starting vLLM for {model_dir} (a few minutes on CPU; log in {out / 'vllm.log'}) …")
    with VllmServer(vllm_python, model_dir, model, out / "vllm.log", other_names=other_names) as running:
        say(f"model server {running.base_url} serving {' and '.join([model, *other_names])}")
        yield running.base_url
