"""A verdict and its explanation as plain text for people (``streamproc explain``), beside
the item it decided when that is at hand. Pure: lines in, nothing printed here."""

from __future__ import annotations

from typing import Final

from streamproc.errors import safe_text
from streamproc.policy.rule_context import item_text
from streamproc.schemas import ContentEvent, Explanation, ListingEvent, RuleMatch, Verdict

__all__ = ["describe", "summary"]

#: Characters of item text shown on each side of a rule's match, and of each item field.
_AROUND: Final = 40
_FIELD_CHARS: Final = 200


def describe(verdict: Verdict, event: ContentEvent | None = None) -> list[str]:
    """The verdict as lines: decision, what decided it, scores against thresholds with
    margins, the rule's match (within the item's text when ``event`` is given), the deciding
    window, clipped fields and the pack version; then the item."""
    explanation = verdict.explanation
    lines = [
        f"{verdict.content_type} {verdict.content_id} revision {verdict.revision}: "
        f"{verdict.decision.upper()} ({verdict.kind}, {verdict.mode})",
        f"  decided by   {_decided_by(verdict)}",
        f"  reason       {verdict.reason_code}"
        + (f"; flagged: {', '.join(verdict.flagged_categories)}" if verdict.flagged_categories else ""),
        f"  policy       {verdict.policy_version}",
        f"  model        {verdict.model}",
    ]
    if explanation is not None:
        lines += [f"  {name} sha256 {digest}" for name, digest in sorted(explanation.artefacts.items())]
    lines.append(f"  clipped      {_clipped(verdict)}")
    if verdict.seller_message:
        lines.append(f"  message      {safe_text(verdict.seller_message)}")
    if explanation is None:
        lines.append("no explanation: the verdict was written without one (before verdicts carried it)")
        lines += [f"  {c:<20} {s:.4f}" for c, s in sorted(verdict.scores.items())]
    else:
        lines += _explained(explanation, event)
    if event is not None:
        lines += ["item", *_item_lines(event)]
    return lines


def _clipped(verdict: Verdict) -> str:
    if verdict.clipped_fields:
        return f"{', '.join(verdict.clipped_fields)} (not read in full by the model)"
    if verdict.scores:
        return "nothing: the model read the whole item"
    return "none named: no model scores decided (a rule before the model, or an error)"


def summary(verdict: Verdict) -> str:
    """What decided the verdict in one line: the deciding (or closest) category against its
    threshold, the rule and what it matched, or the error; and any clipped fields."""
    explanation, parts = verdict.explanation, []
    if explanation is not None and explanation.rule is not None:
        rule = explanation.rule
        matched = rule.entry or rule.text
        where = f' ("{safe_text(matched, 40)}" in {rule.field})' if matched and rule.field else ""
        parts.append(f"rule {rule.rule_id}{where}")
    elif explanation is not None and explanation.error_kind is not None:
        parts.append(f"error {explanation.error_kind}")
    if explanation is not None and explanation.categories:
        m = explanation.categories[0]
        relation = ">=" if m.margin >= 0 else "<"
        window = f", window {m.window}" if m.window else ""
        parts.append(f"{m.category} {m.score:.2f} {relation} {m.threshold} {m.threshold_value:.2f}{window}")
    if verdict.clipped_fields:
        parts.append(f"clipped {', '.join(verdict.clipped_fields)}")
    return "; ".join(parts) or _decided_by(verdict)


def _decided_by(verdict: Verdict) -> str:
    by = verdict.decided_by
    if by.kind == "none":
        return "no category reached a threshold"
    if by.kind == "error" and verdict.explanation is not None and verdict.explanation.error_kind:
        return f"error ({verdict.explanation.error_kind}): {by.id}"
    return f"{by.kind} {by.id}" if by.id else by.kind


def _explained(explanation: Explanation, event: ContentEvent | None) -> list[str]:
    lines = []
    if explanation.categories:
        lines.append("scores vs thresholds")
    for m in explanation.categories:
        relation = "reached" if m.margin >= 0 else "below"
        where = f"  window {m.window}" if m.window is not None else ""
        lines.append(
            f"  {m.category:<20} {m.score:.4f}  {relation} {m.threshold} {m.threshold_value:.4f}  "
            f"margin {m.margin:+.4f}{where}"
        )
    if explanation.omitted_categories:
        lines.append(f"  ({explanation.omitted_categories} more categories reached a threshold)")
    if explanation.window is not None:
        w = explanation.window
        reads = (
            f"{w.field} characters {w.start}-{w.end}"
            if w.field is not None
            else "the head of every field (and the images)"
        )
        lines.append(f"deciding window {w.index} of {w.windows}: {reads}")
    if explanation.rule is not None:
        lines += ["rule", *_rule_lines(explanation.rule, event)]
    return lines


def _rule_lines(rule: RuleMatch, event: ContentEvent | None) -> list[str]:
    head = f"  {rule.rule_id} ({rule.stage} rule)"
    if rule.field is None or rule.text is None or rule.start is None or rule.end is None:
        return [f"{head}: its form names no matched text"]
    what = (
        f'entry "{safe_text(rule.entry or "")}" of list {rule.list_name}'
        if rule.list_name is not None
        else f'"{safe_text(rule.text)}"'
    )
    lines = [f"{head}: {what} in {rule.field} [{rule.start}, {rule.end})"]
    value = item_text(event, rule.field) if event is not None else None
    if value is None:
        return lines
    if not value[rule.start : rule.end].startswith(rule.text):
        return [*lines, "    (the item given is not the text the rule read: another revision?)"]
    before = value[max(0, rule.start - _AROUND) : rule.start]
    after = value[rule.end : rule.end + _AROUND]
    lines.append(
        f"    {'…' if rule.start > _AROUND else ''}{safe_text(before, None)}»"
        f"{safe_text(value[rule.start : rule.end], _FIELD_CHARS)}«{safe_text(after, None)}"
        f"{'…' if rule.end + _AROUND < len(value) else ''}"
    )
    return lines


def _item_lines(event: ContentEvent) -> list[str]:
    if isinstance(event, ListingEvent):
        fields = [
            ("title", event.title),
            ("category", " > ".join(event.category_path)),
            ("price", f"{event.price.amount} {event.price.currency}"),
            ("description", event.description),
        ]
    else:
        fields = [("caption", event.caption), ("transcript", event.transcript), ("ocr_text", event.ocr_text)]
    return [f"  {name:<12} {safe_text(value, _FIELD_CHARS)}" for name, value in fields if value]
