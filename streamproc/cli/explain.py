"""`streamproc explain`: one verdict, what decided it, beside its item."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click
import orjson

from streamproc.errors import StreamprocError

if TYPE_CHECKING:
    from streamproc.schemas import ContentEvent, Verdict

__all__ = ["explain"]


@click.command()
@click.argument("verdict_file", type=click.Path(path_type=Path, exists=True, dir_okay=False, allow_dash=True))
@click.option(
    "--content-id",
    default=None,
    help="Explain the last verdict in the file for this content id (default: the file's first line).",
)
@click.option(
    "--line", "line_number", type=click.IntRange(min=1), default=None, help="Explain this line of the file."
)
@click.option(
    "--item",
    "item_file",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    default=None,
    help="JSONL file of content events: the verdict's item (its content id, that revision if "
    "present) is shown beside it, with the rule's match highlighted in its text.",
)
def explain(
    verdict_file: Path, content_id: str | None, line_number: int | None, item_file: Path | None
) -> None:
    """Print a verdict (a JSON line of moderation.verdicts.v1; VERDICT_FILE - reads stdin) and
    what decided it: scores against thresholds with margins, the deciding rule and where it
    matched, the deciding text window, clipped fields and the policy version."""
    from streamproc.decision.explain_report import describe  # noqa: PLC0415 - keep --help fast

    verdict = _verdict(verdict_file, content_id, line_number)
    event = _item(item_file, verdict) if item_file is not None else None
    for line in describe(verdict, event):
        click.echo(line)


def _lines(path: Path) -> list[tuple[int, bytes]]:
    """(line number, line) of each non-blank line."""
    try:
        raw = sys.stdin.buffer.read() if str(path) == "-" else path.read_bytes()
    except OSError as exc:
        raise click.ClickException(f"cannot read {path}: {exc.strerror or exc}") from exc
    return [(n, line) for n, line in enumerate(raw.splitlines(), start=1) if line.strip()]


def _verdict(path: Path, content_id: str | None, line_number: int | None) -> Verdict:
    from streamproc.schemas import Verdict, decode_record  # noqa: PLC0415

    lines = _lines(path)
    if line_number is not None:
        lines = [(n, line) for n, line in lines if n == line_number]
    elif content_id is not None:
        lines = [(n, line) for n, line in lines if _field(line, "content_id") == content_id][-1:]
    if not lines:
        if line_number is not None:
            raise click.ClickException(f"{path} has no line {line_number}")
        wanted = f" for content id {content_id}" if content_id is not None else ""
        raise click.ClickException(f"{path} has no verdict{wanted}")
    number, line = lines[0]
    try:
        return decode_record(Verdict, line, "verdict")
    except StreamprocError as exc:
        raise click.ClickException(f"{path}:{number}: {exc}") from exc


def _item(path: Path, verdict: Verdict) -> ContentEvent:
    """The item's event in ``path``: the verdict's revision if there, else its latest."""
    from streamproc.schemas import decode_event  # noqa: PLC0415

    key = f"{verdict.content_type}_id"  # listing_id, video_id
    found = [(n, line) for n, line in _lines(path) if _field(line, key) == verdict.content_id]
    if not found:
        raise click.ClickException(f"{path} has no event with content id {verdict.content_id}")
    same = [(n, line) for n, line in found if _field(line, "revision") == verdict.revision]
    number, line = (same or found)[-1]
    try:
        return decode_event(verdict.content_type, line)
    except StreamprocError as exc:
        raise click.ClickException(f"{path}:{number}: {exc}") from exc


def _field(line: bytes, name: str) -> object:
    # Only to pick a line: decoding it reports what is wrong with it.
    try:
        data = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    return data.get(name) if isinstance(data, dict) else None
