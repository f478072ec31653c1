"""`streamproc policy check` and `streamproc policy show`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from streamproc.cli.common import BadConfiguration
from streamproc.errors import ConfigError, StreamprocError

if TYPE_CHECKING:
    from streamproc.policy import Policy

__all__ = ["policy"]


@click.group()
def policy() -> None:
    """Policy packs (policies/*.yaml)."""


@policy.command("check")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
def policy_check(files: tuple[Path, ...]) -> None:
    """Validate packs; errors name the file and line. Exit 1 if any is invalid, 2 if a path
    names no packs. Missing translations of seller messages are warnings."""
    from streamproc.policy import PolicySet, load_pack  # noqa: PLC0415
    from streamproc.policy.calibration import describe_calibrated  # noqa: PLC0415
    from streamproc.policy.heads import describe_heads  # noqa: PLC0415
    from streamproc.policy.packs import pack_files  # noqa: PLC0415

    failed = False
    loaded = []
    for given in files:  # the paths are arguments here, not STREAMPROC_POLICY__PATHS
        if not given.exists():
            raise BadConfiguration(f"{given} does not exist; pass policy pack files or folders of them")
        if given.is_dir() and not pack_files([given]):
            raise BadConfiguration(f"{given} has no *.yaml policy packs")
    for path in pack_files(files):
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
        for line in describe_calibrated(pack):  # calibrated thresholds and where they came from
            click.echo(f"    {line}")
        for line in describe_heads(pack.probe) if pack.probe is not None else []:
            click.echo(f"    {line}")
        for line in _translation_warnings(pack):
            click.echo(f"    warning: {line}")
    if failed:
        raise click.ClickException("some packs are invalid; the lines above say where")
    if any(path.is_dir() for path in files):
        try:
            PolicySet(loaded)
        except ConfigError as exc:
            raise click.ClickException(str(exc)) from exc


def _translation_warnings(pack: Policy) -> list[str]:
    """The pack's seller messages (and the built-in error message) lacking a locale that some
    of its messages are translated into: readers there get the default text."""
    from streamproc.decision import INFERENCE_ERROR_MESSAGES  # noqa: PLC0415
    from streamproc.policy.messages import missing_translations  # noqa: PLC0415

    messages = pack.localized_messages()
    fixed = {"the built-in error message": INFERENCE_ERROR_MESSAGES}
    default = {what: text.locale for what, text in {**messages, **fixed}.items()}
    return [
        f"{what} has no seller message in {', '.join(locales)} (readers there get the {default[what]} text)"
        for what, locales in missing_translations(messages, fixed).items()
    ]


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
