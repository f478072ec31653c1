"""`streamproc export-labels`: the join store's labeled revisions as a training dataset, each
with its content read back where its live verdict says, the newest label winning, and every
item left out counted with its reason."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import orjson

from streamproc.evaluation import load_dataset
from streamproc.quality.content_fetch import ContentUnavailable
from streamproc.quality.export import export_labels
from streamproc.schemas import ListingEvent, SourceRef
from tests.factories import listing_dict
from tests.unit.test_quality_join import NOW, label, verdict
from tests.unit.test_quality_store import REF, open_store


class FakeTopic:
    """Content records by offset; a missing offset is gone (retention)."""

    def __init__(self, records: dict[int, bytes | None]) -> None:
        self.records = records

    async def fetch(self, source: SourceRef) -> bytes | None:
        if source.offset not in self.records:
            raise ContentUnavailable(f"the record at {source.offset} is gone (retention)")
        return self.records[source.offset]


def live(content_id: str, offset: int) -> object:
    return verdict(
        content_id=content_id,
        idempotency_key=f"listing:{content_id}:0:listings@1",
        source=SourceRef(topic="content.listings.v1", partition=0, offset=offset),
    )


def test_export_writes_labeled_items_with_their_content(tmp_path: Path) -> None:
    topic = FakeTopic(
        {
            1: orjson.dumps(listing_dict(listing_id="L-1", title="Replica watch")),
            2: orjson.dumps(listing_dict(listing_id="L-2", title="Desk")),
            4: None,  # deleted (a tombstone)
            5: orjson.dumps(listing_dict(listing_id="L-9")),  # another item at that offset
        }
    )
    with open_store(tmp_path) as store:
        for content_id, offset in (("L-1", 1), ("L-2", 2), ("L-3", 3), ("L-4", 4), ("L-5", 5)):
            store.add_verdict(live(content_id, offset))  # type: ignore[arg-type]
            store.add_label(label(label_id=f"qa-{content_id}", content_id=content_id), REF)
        # a later review outcome replaces the QA label of L-1
        later = label(label_id="rev-L-1", content_id="L-1", true_categories=["counterfeit"], source="review",
                      decision="reject", created_at=NOW + timedelta(hours=1))  # fmt: skip
        store.add_label(later, REF)
        store.add_label(label(label_id="qa-L-7", content_id="L-7"), REF)  # no verdict: no content to read
        content, report = asyncio.run(export_labels(store, topic))
    out = tmp_path / "labels.jsonl"
    out.write_bytes(content)
    items = load_dataset(out)
    assert [(i.event.content_id, i.true_categories) for i in items] == [
        ("L-1", ("counterfeit",)),
        ("L-2", ()),
    ]
    assert isinstance(items[0].event, ListingEvent) and items[0].event.title == "Replica watch"
    assert report.written == 2 and report.sources == {"review": 1, "qa_audit": 1}
    assert report.skipped == {
        "content unavailable": 1,
        "content deleted (no value)": 1,
        "content at the verdict's offset is another item": 1,
    }
