"""`streamproc train`: fit probe heads (embedding_probe scorer) and their thresholds on a
labeled split."""

from __future__ import annotations

import contextlib
import functools
import json
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from streamproc.cli.common import BadConfiguration, config_option, load
from streamproc.cli.model_server import ServerOptions, model_servers, server_options
from streamproc.errors import ConfigError

if TYPE_CHECKING:
    from streamproc.evaluation.train_command import TrainedPack
    from streamproc.policy.heads import Backbone

__all__ = ["train"]

_PROBABILITY = click.FloatRange(0.0, 1.0, min_open=True)


@click.command("train")
@config_option
@click.option(
    "--policy",
    "policy_files",
    multiple=True,
    required=True,
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="Pack to train heads for (repeat for several); its categories are the heads'.",
)
@click.option(
    "--data",
    required=True,
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="Labeled training split (JSONL, as for `streamproc eval`).",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="Folder: DIR/<pack name>.yaml (scorer embedding_probe, fitted thresholds) and "
    "DIR/<pack name>.heads.json.",
)
@click.option(
    "--review-recall",
    type=_PROBABILITY,
    default=0.85,
    show_default=True,
    help="Review threshold, one for every category: the highest whose out-of-fold recall of any "
    "violation reaches this (0.85: the best out-of-fold F1 on the shipped data).",
)
@click.option(
    "--reject-precision",
    type=_PROBABILITY,
    default=0.95,
    show_default=True,
    help="Reject threshold: the lowest whose out-of-fold precision reaches this.",
)
@click.option(
    "--shadow",
    default=None,
    metavar="NAME",
    help="Write the one pack as a shadow candidate named NAME (mode: shadow), to run beside the live "
    "pack and compare (`streamproc eval --compare`, the quality service's per-version figures).",
)
@server_options
def train(
    config_file: Path | None,
    policy_files: tuple[Path, ...],
    data: Path,
    out: Path,
    review_recall: float,
    reject_precision: float,
    shadow: str | None,
    servers: ServerOptions,
) -> None:
    """Embed a labeled split through the embedding server, fit a linear head per category
    (and one for any violation), fit thresholds on out-of-fold scores, and write each pack
    with its heads and their provenance."""
    from streamproc.evaluation.calibrate import Targets  # noqa: PLC0415
    from streamproc.evaluation.train_command import plan_training, run_training  # noqa: PLC0415

    settings = load(config_file)
    targets = Targets(review_recall, reject_precision)
    try:
        plan = plan_training(policy_files, data, out, targets, shadow=shadow)  # before any server starts
    except ConfigError as exc:
        raise BadConfiguration(str(exc)) from exc
    command = shlex.join(
        ["streamproc", "train", *(a for p in policy_files for a in ("--policy", str(p))), "--data", str(data),
         "--review-recall", f"{review_recall:g}", "--reject-precision", f"{reject_precision:g}"]
    )  # fmt: skip
    try:
        with contextlib.ExitStack() as stack:
            running = stack.enter_context(
                model_servers(servers, settings, out, packs=[], roles=(False, True))
            )
            embedding = running.embedding or running.generative
            on_done = None
            if sys.stderr.isatty():  # a bar on a terminal; nothing in logs and pipes
                progress = click.progressbar(length=plan.requests, label="embedding", file=sys.stderr)
                on_done = functools.partial(stack.enter_context(progress).update, 1)
            backbone = _backbone(servers, embedding.model)
            trained = run_training(plan, embedding, backbone=backbone, command=command, on_done=on_done)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    for pack in trained:
        _print_pack(pack)


def _backbone(servers: ServerOptions, served: str) -> Backbone:
    """What the heads will read: recorded by `scripts/prepare_model.sh backbone` in the
    model directory's config, else only the served model's name."""
    from streamproc.policy.heads import Backbone  # noqa: PLC0415

    recorded: dict[str, object] = {}
    if servers.embedding_model_dir is not None:
        with contextlib.suppress(OSError, ValueError):
            config = json.loads((servers.embedding_model_dir / "config.json").read_text(encoding="utf-8"))
            recorded = config.get("streamproc_backbone") or {}
    return Backbone(
        source=str(recorded.get("source", served)),
        layers=recorded.get("layers"),  # type: ignore[arg-type]  # validated by Backbone
        source_layers=recorded.get("source_layers"),  # type: ignore[arg-type]
        pooling="mean",
        width=1,  # replaced by what the server returns
    )


def _print_pack(pack: TrainedPack) -> None:
    target, oof = pack.target, pack.out_of_fold
    click.echo(f"{target.policy.name}: {target.out} and {target.heads_out} ({len(target.items)} items)")
    click.echo("| head | positives | C | cross-validated AUC |")
    click.echo("|---|---:|---:|---:|")
    for name, figures in pack.heads.items():
        click.echo(f"| {name} | {figures.positives} | {figures.c:g} | {figures.cv_auc:.3f} |")
    click.echo("| category | review | reject | P/R @review (out of fold) |")
    click.echo("|---|---:|---:|---:|")
    for fit in pack.fits:
        review = f"{fit.review.precision:.2f} / {fit.review.recall:.2f}" if fit.review else "-"
        click.echo(f"| {fit.category} | {fit.new.review:.4g} | {fit.new.reject:.4g} | {review} |")
    click.echo(
        f"  out of fold, any violation: precision {oof.precision:.3f}, recall {oof.recall:.3f}, "
        f"F1 {oof.f1:.3f}; {oof.tp + oof.fp} of {oof.tp + oof.fp + oof.fn + oof.tn} items held or rejected"
    )
