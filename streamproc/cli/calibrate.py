"""`streamproc calibrate`: fit thresholds (and a score calibration) on a labeled calibration split."""

from __future__ import annotations

import contextlib
import functools
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from streamproc.cli.common import BadConfiguration, config_option, load
from streamproc.cli.model_server import (
    CascadeOptions,
    ServerOptions,
    cascade_options,
    model_servers,
    server_options,
)
from streamproc.errors import ConfigError

if TYPE_CHECKING:
    from streamproc.config import Settings
    from streamproc.evaluation.calibrate import CategoryFit, Figures
    from streamproc.evaluation.calibration_command import CalibratedPack, CalibrationPlan, CalibrationRequest

__all__ = ["calibrate"]

_PROBABILITY = click.FloatRange(0.0, 1.0, min_open=True)


@click.command("calibrate")
@config_option
@click.option(
    "--policy",
    "policy_files",
    multiple=True,
    required=True,
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="Pack to calibrate (repeat for several).",
)
@click.option(
    "--data",
    required=True,
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="Labeled calibration split (JSONL, as for `streamproc eval`).",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(path_type=Path),
    help="Calibrated pack file (NEW.yaml, one --policy), or a folder: DIR/<pack name>.yaml each.",
)
@click.option(
    "--method",
    type=click.Choice(["none", "platt", "isotonic", "contextual"]),
    default="none",
    show_default=True,
    help="Score calibration fitted before the thresholds; none: thresholds on the raw scores.",
)
@click.option(
    "--review-recall",
    type=_PROBABILITY,
    default=0.8,
    show_default=True,
    help="Review threshold: the highest whose recall reaches this.",
)
@click.option(
    "--reject-precision",
    type=_PROBABILITY,
    default=0.95,
    show_default=True,
    help="Reject threshold: the lowest whose precision reaches this.",
)
@click.option(
    "--min-positives",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="Positives and negatives a category needs among the scored items; others are kept as they are.",
)
@click.option(
    "--category",
    "categories",
    multiple=True,
    help="Fit only this category (repeat); refused if it has fewer than --min-positives.",
)
@server_options
@cascade_options(
    "Fit each pack's cascade calibration instead of its thresholds: its cascade scorer's scores "
    "from this second model, mapped to probabilities before the pack's thresholds."
)
def calibrate(
    config_file: Path | None,
    policy_files: tuple[Path, ...],
    data: Path,
    out: Path,
    method: str,
    review_recall: float,
    reject_precision: float,
    min_positives: int,
    categories: tuple[str, ...],
    servers: ServerOptions,
    cascade: CascadeOptions,
) -> None:
    """Fit per-category thresholds (and a score calibration) on a labeled split; write the
    calibrated packs with their provenance and print what changed. With --cascade-model, fit
    the calibration of each pack's cascade scorer instead."""
    from streamproc.evaluation.calibrate import Targets  # noqa: PLC0415
    from streamproc.evaluation.calibration_command import (  # noqa: PLC0415
        CalibrationRequest,
        TooFewPositives,
        plan_calibration,
    )

    settings = load(config_file)
    request = CalibrationRequest(
        method,  # type: ignore[arg-type]  # click.Choice checked it
        Targets(review_recall, reject_precision),
        min_positives,
        categories,
        cascade=cascade.model is not None,
    )
    try:
        # Checked before a model server starts: a bad pack or split must not cost a vLLM start-up.
        plan = plan_calibration(policy_files, data, out, request)
    except ConfigError as exc:
        raise BadConfiguration(str(exc)) from exc
    try:
        packs = _run(
            plan, settings, (servers, cascade), out, _command_line(policy_files, data, request, cascade)
        )
    except TooFewPositives as exc:
        raise BadConfiguration(str(exc)) from exc
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    for pack in packs:
        _print_pack(pack, cascade=request.cascade)


def _run(
    plan: CalibrationPlan,
    settings: Settings,
    options: tuple[ServerOptions, CascadeOptions],
    out: Path,
    command: str,
) -> list[CalibratedPack]:
    """Score through the model servers (started here with --vllm-python), fit, write."""
    from streamproc.evaluation.calibration_command import run_calibration  # noqa: PLC0415

    (servers, cascade), log_dir = options, out.parent if out.suffix in {".yaml", ".yml"} else out
    with contextlib.ExitStack() as stack:
        packs = [target.policy for target in plan.packs]
        # a cascade fit asks only the second model: the generative server's, unless it has its own
        roles = (cascade.url is None, False) if cascade.model else None
        running = stack.enter_context(
            model_servers(
                servers, settings, log_dir, packs=packs, other_names=cascade.other_names(cascade.model),
                roles=roles,
            )
        )  # fmt: skip
        on_done = None
        if sys.stderr.isatty():  # a bar on a terminal; nothing in logs and pipes
            progress = click.progressbar(length=plan.requests, label="scoring", file=sys.stderr)
            bar = stack.enter_context(progress)
            on_done = functools.partial(bar.update, 1)
        inference = cascade.settings(settings, running.generative, cascade.model) or running.generative
        return run_calibration(plan, inference, command=command, on_done=on_done, embedding=running.embedding)


def _command_line(
    policy_files: tuple[Path, ...], data: Path, request: CalibrationRequest, cascade: CascadeOptions
) -> str:
    """The command as the provenance records it: what was fitted, without server options."""
    targets = request.targets
    return shlex.join(
        ["streamproc", "calibrate", *(a for p in policy_files for a in ("--policy", str(p))), "--data",
         str(data), "--method", request.method, "--review-recall", f"{targets.review_recall:g}",
         "--reject-precision", f"{targets.reject_precision:g}", "--min-positives",
         str(request.min_positives), *(a for c in request.categories for a in ("--category", c)),
         *(("--cascade-model", cascade.model) if cascade.model else ())]
    )  # fmt: skip


def _print_pack(pack: CalibratedPack, *, cascade: bool) -> None:
    provenance = pack.provenance
    fitted = f"cascade scorer {provenance.scorer}, " if cascade else ""
    click.echo(
        f"{pack.target.policy.name}: {pack.target.out} ({fitted}method {provenance.method}, "
        f"model {provenance.model}; {provenance.items} items, {provenance.scored_items} scored and fitted "
        f"on, {pack.pre_rule_decided} decided by a pre-rule and {pack.errors} inference errors left out)"
    )
    header = ("category", "pos", "neg", "review", "reject", "calibration", "P/R @review", "P/R @reject")
    rows = [header] + [_row(fit) for fit in pack.fits]
    if cascade:  # only the calibration is written: the pack's thresholds stay
        rows = [row[:3] + row[5:6] for row in rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for number, row in enumerate(rows):
        click.echo("| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) + " |")
        if number == 0:
            click.echo("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for fit in pack.fits:
        # a cascade fit writes no thresholds: only why a category was kept applies
        if fit.note and not (cascade and fit.fitted):
            click.echo(f"  {fit.category}: {fit.note}")
    if pack.reformatted_lines:
        click.echo(f"  note: the rewrite changed the layout of {pack.reformatted_lines} other lines")


def _row(fit: CategoryFit) -> tuple[str, ...]:
    from streamproc.policy.calibration import describe_calibration  # noqa: PLC0415

    return (
        fit.category,
        str(fit.positives),
        str(fit.negatives),
        f"{fit.old.review:g} → {fit.new.review:.4g}",
        f"{fit.old.reject:g} → {fit.new.reject:.4g}",
        describe_calibration(fit.calibration) if fit.fitted else "(kept)",
        _pr(fit.review),
        _pr(fit.reject),
    )


def _pr(figures: Figures | None) -> str:
    return "-" if figures is None else f"{figures.precision:.2f} / {figures.recall:.2f}"
