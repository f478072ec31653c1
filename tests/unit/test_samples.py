from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import orjson

from streamproc.dev.samples import iter_jsonl_records


def test_keys_restamping_and_malformed_lines(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(
        b'{"listing_id": "L-1", "created_at": "2020-01-01T00:00:00+00:00"}\n\n'
        b'{"video_id": "V-2"}\n{broken\n[1]\n'
    )
    now = datetime(2026, 5, 1, tzinfo=UTC)
    records = list(iter_jsonl_records([path], restamp=True, now=now))
    assert [key for key, _ in records] == [b"L-1", b"V-2", None, None]
    assert orjson.loads(records[0][1])["created_at"] == now.isoformat()
    assert records[2][1] == b"{broken"  # published as is, for the dead-letter path


def test_keep_timestamps(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    path.write_bytes(b'{"listing_id": "L-1", "created_at": "2020-01-01T00:00:00+00:00"}\n')
    [(_, value)] = iter_jsonl_records([path], restamp=False)
    assert value == path.read_bytes().strip()
