"""Reviewers' judgements as training data: every labeled revision the quality service has
joined, with its content read back from the content topic (as appeals read it), written as
a labeled dataset (the format of ``streamproc eval``, ``calibrate`` and ``train``)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import orjson

from streamproc.errors import DecodeError
from streamproc.quality.content_fetch import ContentFetcher, ContentUnavailable
from streamproc.quality.store import QualityStore
from streamproc.schemas import decode_event

__all__ = ["ExportReport", "export_labels"]


@dataclass
class ExportReport:
    written: int = 0
    #: Labeled revisions left out, by reason (content gone from the topic, undecodable).
    skipped: Counter[str] = field(default_factory=Counter)
    #: Written items per label source (review, audit, appeal).
    sources: Counter[str] = field(default_factory=Counter)


async def export_labels(store: QualityStore, fetcher: ContentFetcher) -> tuple[bytes, ExportReport]:
    """The dataset (JSONL, one labeled item per line, in store order); what was left out
    and why is in the report, never silently dropped."""
    report = ExportReport()
    lines = []
    for label in store.training_labels():
        try:
            value = await fetcher.fetch(label.content)
            if value is None:
                report.skipped["content deleted (no value)"] += 1
                continue
            event = decode_event(label.content_type, value)
        except ContentUnavailable:
            report.skipped["content unavailable"] += 1
            continue
        except DecodeError:
            report.skipped["content no longer decodes"] += 1
            continue
        if (event.content_id, event.revision) != (label.content_id, label.revision):
            report.skipped["content at the verdict's offset is another item"] += 1
            continue
        lines.append(
            orjson.dumps(
                {
                    "content_type": label.content_type,
                    "event": event.model_dump(mode="json"),
                    "true_categories": list(label.true_categories),
                }
            )
        )
        report.written += 1
        report.sources[label.label_source] += 1
    return b"".join(line + b"\n" for line in lines), report
