"""`streamproc eval`: policy packs over a labeled dataset through the model server."""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click

from streamproc.cli.common import config_option, load
from streamproc.cli.model_server import (
    CascadeOptions,
    ServerOptions,
    cascade_options,
    model_servers,
    server_options,
)
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
@server_options
@cascade_options(
    "Second model for packs with a cascade block: their uncertain items go to it, and the report "
    "shows the cascade's cost and effect (default: the settings' cascade.model)."
)
@click.option(
    "--max-error-rate",
    type=click.FloatRange(0.0, 1.0),
    default=0.0,
    show_default=True,
    help="Share of items the model may fail to score before the command exits with status 1; "
    "the figures leave such items out, so a high share makes them meaningless.",
)
def eval_(
    config_file: Path | None,
    policy_files: tuple[Path, ...],
    data: Path,
    compare: Path | None,
    out: Path,
    servers: ServerOptions,
    cascade: CascadeOptions,
    max_error_rate: float,
) -> None:
    """Run policy packs over a labeled dataset through the model server; write a report."""
    from streamproc.evaluation import plan_evaluation, run_evaluation  # noqa: PLC0415
    from streamproc.evaluation.command import check_cascade  # noqa: PLC0415

    settings = load(config_file)
    cascade_model = cascade.model or settings.cascade.model
    try:
        # Checked before a model server starts: a bad dataset must not cost a vLLM start-up.
        plan = plan_evaluation(list(policy_files), data, out, compare)
        if cascade_model is not None:
            cascade.settings(settings, settings.inference, cascade_model)  # a bad URL: now
            check_cascade(plan)
        with contextlib.ExitStack() as stack:
            running = stack.enter_context(
                model_servers(
                    servers,
                    settings,
                    out,
                    packs=[p for group in plan.groups for p in group],
                    other_names=cascade.other_names(cascade_model),
                )
            )
            on_done = None
            if sys.stderr.isatty():  # a bar on a terminal; nothing in logs and pipes
                bar = stack.enter_context(
                    click.progressbar(length=plan.requests, label="evaluating", file=sys.stderr)
                )
                on_done = functools.partial(bar.update, 1)
            inference = running.generative
            written = run_evaluation(
                plan,
                inference,
                on_done=on_done,
                cascade=cascade.settings(settings, inference, cascade_model),
                embedding=running.embedding,
            )
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    _echo_results(out, written, max_error_rate)


def _echo_results(out: Path, written: Sequence[WrittenReport], max_error_rate: float) -> None:
    """The error share first (figures leave failed items out), then each pack, the headlines;
    exit status 1 when more items failed than ``max_error_rate`` allows."""
    from streamproc.evaluation import headlines  # noqa: PLC0415
    from streamproc.evaluation.report import cascade_headline  # noqa: PLC0415

    packs = [pack for report in written for pack in report.report.packs]
    errors = sum(p.errors for p in packs)
    items = sum(p.evaluated + p.errors for p in packs)
    share = errors / items if items else 0.0
    if errors:
        click.echo(
            f"{errors} of {items} items ({share:.1%}) could not be scored (inference errors): every figure "
            "below leaves them out; in production they would go to review"
        )
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
    if share > max_error_rate:
        raise click.ClickException(
            f"{share:.1%} of the items could not be scored, more than --max-error-rate {max_error_rate:g}: "
            "check the model server (its log) and run again"
        )
